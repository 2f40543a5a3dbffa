"""Seeded random kernel calls for the armv6m build on the emulator, checked bit for bit
against the pure-Python reference (device/picotrain/kernels_py.py).

The host sanitizer tests (tests/natmod/test_kernels_host.py) and the unix-port tests run the
C loops; the Thumb-1 inline assembly that the armv6m build uses instead (PT_ASM_M0) runs only
here, so these cases aim at it: k = 5 (the unrolled loops), four-wide output blocks and
their tails, sparse and dense operands, negative inputs, chunked nonzero lists (more than a
chunk of nonzeros), word-aligned and odd buffer addresses, int8/int16 and dense/compact
scores.
"""

import copy
import random
from array import array

from . import emu
from picotrain import kernels_py as PY
from picotrain.kernels import RANGED


def _s8(rng, n, density=0.5, lo=-128, hi=127):
    return array("b", [rng.randint(lo, hi) if rng.random() < density else 0 for _ in range(n)])


def _scores(rng, n, typecode, thr, subset_p=None):
    """(scores, subset): scores around thr (about a third pruned), optionally compact."""
    lim = 127 if typecode == "b" else 32767
    subset = None
    m = n
    if subset_p is not None:
        subset = bytearray((n + 7) // 8)
        m = 0
        for j in range(n):
            if rng.random() < subset_p:
                subset[j >> 3] |= 1 << (j & 7)
                m += 1
    vals = [max(-lim - (1 if rng.random() < 0.05 else 0), min(lim, thr + rng.randint(-20, 40))) for _ in range(m)]
    return array(typecode, vals), subset


def conv_cases(rng, n):
    """Conv geometries: mostly k = 5, stride 1, no padding (the fast paths), some others."""
    out = []
    for t in range(n):
        if t % 4 == 3:
            k = rng.choice([1, 2, 3, 5])
            stride = rng.choice([1, 2])
            pad = rng.randint(0, k - 1)
        else:
            k, stride, pad = 5, 1, 0
        c_in, c_out = rng.randint(1, 4), rng.randint(1, 5)
        h = rng.randint(max(1, k - 2 * pad), 14)
        w = rng.randint(max(1, k - 2 * pad), 14)
        if t % 2 == 0 and w >= 8:
            w &= ~3   # a multiple of 4: the word-wise dense path (block4_k5) needs one
        out.append((c_in, h, w, c_out, k, stride, pad))
    return out


def _sizes(g):
    c_in, h, w, c_out, k, stride, pad = g
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    return c_in * h * w, c_out * c_in * k * k, c_out * oh * ow


def calls(seed=1, n_conv=24, n_fc=12, n_elem=12):
    """[(name, args)] of random calls, every kernel of the training steps."""
    rng = random.Random(seed)
    out = []
    for g in conv_cases(rng, n_conv):
        nx, nw, no = _sizes(g)
        dens = rng.choice([0.05, 0.15, 0.5, 1.0])
        lo = rng.choice([-128, 0])  # inputs with and without negative values
        x = _s8(rng, nx, dens, lo)
        w = _s8(rng, nw, 0.9)
        e = _s8(rng, no, rng.choice([0.05, 0.2, 1.0]))
        out.append(("conv2d_s8_s32_chw", [x, w, array("i", [7] * no), *g]))
        out.append(("conv2d_t_s8_s32_chw", [e, w, array("i", [7] * nx), *g]))
        out.append(("conv2d_grad_s8_s32_chw", [e, x, array("i", [7] * nw), *g]))
        tc = rng.choice("bbh")
        thr = rng.randint(-5, 5)
        sc, sub = _scores(rng, nw, tc, thr, rng.choice([None, None, 0.5]))
        out.append(("conv2d_mask_s8_s32_chw", [x, w, sc, sub, thr, array("i", [7] * no), *g]))
        out.append(("conv2d_t_mask_s8_s32_chw", [e, w, sc, sub, thr, array("i", [7] * nx), *g]))
        smax = 127 if tc == "b" else 32767
        shift = rng.choice([0, 3, 9, 14])
        out.append(("conv2d_score_s8_chw", [e, x, w, array(tc, sc), sub, shift, smax, *g]))
        # issue 8: the fused forward, a channel range, a scratch of one plane or more
        c_out, plane = g[3], no // g[3]
        c0 = rng.randint(0, c_out)
        c1 = rng.choice([None, rng.randint(c0, c_out)])
        acc = array("i", [7] * (plane * rng.randint(1, c_out + 1)))
        bias = rng.choice([None, array("i", [rng.randint(-2**20, 2**20) for _ in range(c_out)])])
        fused = [array("b", [9] * no), acc, *g, rng.choice([0, 4, 9]), bias, rng.randint(-3, 3), c0, c1]
        out.append(("conv2d_mask_s8_s8_chw", [x, w, sc, sub, thr, *fused]))
        out.append(("conv2d_s8_s8_chw", [x, w, *fused]))
    for _ in range(n_fc):
        n_in, n_out = rng.randint(1, 300), rng.randint(1, 13)
        x = _s8(rng, n_in, rng.choice([0.1, 0.5, 1.0]), rng.choice([-128, 0]))
        e = _s8(rng, n_out, rng.choice([0.3, 1.0]))
        w = _s8(rng, n_in * n_out, 0.95)
        out.append(("fc_s8_s32", [x, w, array("i", [7] * n_out), n_in, n_out]))
        out.append(("fc_t_s8_s32", [e, w, array("i", [7] * n_in), n_in, n_out]))
        out.append(("outer_s8_s32", [e, x, array("i", [7] * (n_in * n_out)), n_out, n_in]))
        out.append(("update_outer_s8", [e, x, _s8(rng, n_in * n_out, 0.9, rng.choice([-128, 0])), n_out, n_in,
                                         rng.randint(0, 7)]))
        tc = rng.choice("bbh")
        thr = rng.randint(-5, 5)
        sc, sub = _scores(rng, n_in * n_out, tc, thr, rng.choice([None, None, 0.5]))
        out.append(("fc_mask_s8_s32", [x, w, sc, sub, thr, array("i", [7] * n_out), n_in, n_out]))
        out.append(("fc_t_mask_s8_s32", [e, w, sc, sub, thr, array("i", [7] * n_in), n_in, n_out]))
        smax = 127 if tc == "b" else 32767
        out.append(("fc_score_s8", [e, x, w, array(tc, sc), sub, rng.choice([0, 2, 9, 13]), smax, n_in, n_out]))
    for _ in range(n_elem):
        n = rng.randint(1, 700)
        acc = array("i", [rng.choice([0, rng.randint(-2**31, 2**31 - 1), rng.randint(-3000, 3000),
                                      rng.choice([-2**31, 2**31 - 1, 2**31 - 2**23])])
                          for _ in range(n)])
        # shifts either side of 24, where requant's Thumb-1 loop hands over to C
        out.append(("requant_s32_s8", [acc, array("b", [9] * n), n, rng.choice([0, 1, 5, 9, 24, 25, 31, 40])]))
        out.append(("bitlen_s32", [acc, n]))
        y = _s8(rng, n, 0.6)
        out.append(("relu_s8", [array("b", y), n]))
        out.append(("relu_bwd_s8", [y, _s8(rng, n, 0.8), n]))
        # runs of zero gradients (a layer with no error), extremes, every kind of shift
        zero_run = rng.randint(0, n)
        g = array("i", [0 if zero_run <= j < zero_run + 40 else
                        rng.choice([0, 0, 0, rng.randint(-2**20, 2**20), -2**31, 2**31 - 1, rng.randint(-9, 9)])
                        for j in range(n)])
        wv = _s8(rng, n, 0.9)
        out.append(("update_s8", [wv, g, n, rng.choice([-3, 0, 1, 4, 7, 12, 31])]))
        c, k = rng.randint(1, 3), rng.choice([2, 2, 3])
        hh, ww = rng.randint(k, 13), rng.randint(k, 13)
        xp = _s8(rng, c * hh * ww, 0.7)
        no = c * (hh // k) * (ww // k)
        out.append(("maxpool2d_s8_chw", [xp, array("b", [9] * no), bytearray(no), c, hh, ww, k,
                                         rng.choice([0, 1])]))
        idx = bytearray(rng.randrange(k * k) for _ in range(no))
        out.append(("maxpool2d_bwd_s8_chw", [_s8(rng, no, 0.5), idx, array("b", [9] * (c * hh * ww)),
                                             c, hh, ww, k, rng.choice([None, _s8(rng, no, 0.5)])]))
    return out


def ranged(cases, seed=1):
    """The calls of the ranged kernels (kernels.RANGED) among cases, each on a random
    channel range [c0, c1): the views of the weights, scores and outputs start mid-buffer,
    so the assembly loops see other alignments and a compact score bitmap mid-byte."""
    rng = random.Random(seed)
    out = []
    for name, args in cases:
        if name in RANGED:
            count = args[RANGED[name][1]]
            c0 = rng.randint(0, count)
            out.append((name, args + [c0, rng.randint(c0, count)]))
    return out


def check(image, cases, aligns=(4, 1)):
    """Run every case on the emulator with its buffers at 4-aligned and at odd addresses
    (align 1); returns [(name, args, align, problems)] of the cases that differ from the
    Python reference."""
    bad = []
    for name, args in cases:
        ref_args = [copy.deepcopy(a) for a in args]
        ret = getattr(PY, name)(*ref_args)
        after = {i: bytes(a) for i, a in enumerate(ref_args) if isinstance(a, (array, bytearray))}
        for align in aligns:
            res = emu.run_call(image, name, args, align=align)
            problems = emu.check_call(res, name, after, ret)
            if problems:
                bad.append((name, args, align, problems))
    return bad
