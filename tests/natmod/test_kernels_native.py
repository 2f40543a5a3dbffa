"""Tier 2 for the native kernels: natmod/kernels/ built as picotrain/_native.mpy for x64 and run
under the MicroPython unix port, bit for bit with the CPython mirror (kernels_py); every binding
rejects bad arguments with a clear error before touching memory; the backend is picked up as
'native'; a fixed-seed NITI run gives the mirror's bits, and a training step allocates nothing.
Also the armv6m build (the Pico's): its header, its size and that it links no helper at all.
"""
import binascii
import copy
import inspect
import json
import random
import shutil
from array import array
from pathlib import Path

import pytest

from picotrain import kernels, kernels_py as PY

ROOT = Path(__file__).resolve().parents[2]
NATMOD = ROOT / "natmod"
DEVICE = ROOT / "device"


# ------------------------------------------------------------- seeded cases --
# Each case is (name, args) with every buffer exactly as long as the kernel's sizes need, so a
# buffer one item shorter is always an error. CPython and the MicroPython script exchange them
# as JSON: an array as [typecode, hex], a bytearray as ["ba", hex].

I32_EDGES = [-2**31, -2**31 + 1, 2**31 - 1, 0, 1, -1, 2**24, -2**24, 2**24 - 1, 127, 128, -128]
SHIFTS = [-100, -3, 0, 1, 2, 7, 13, 20, 31, 32, 33, 40, 63, 64, 100, 1000]
THRS = [-10**6, -32768, -128, -1, 0, 1, 127, 128, 32767, 32768, 10**6]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def pick(self, seq):
        return self.r.choice(seq)

    def int(self, lo, hi):
        return self.r.randint(lo, hi)

    def s8(self, n):
        mode = self.r.random()
        if mode < 0.1:
            return array("b", [-128] * n)
        if mode < 0.2:
            return array("b", [self.pick([-128, 127]) for _ in range(n)])
        return array("b", [self.int(-128, 127) for _ in range(n)])

    def s32(self, n, lo=-2**31, hi=2**31 - 1):
        return array("i", [self.pick(I32_EDGES) if self.r.random() < 0.15 else self.int(lo, hi)
                           for _ in range(n)])

    def conv(self):
        k = self.int(1, 4)
        stride = self.int(1, 3)
        pad = self.int(0, k - 1) if self.r.random() < 0.8 else k
        h = self.int(max(0, k - 2 * pad), 8)
        wd = self.int(max(0, k - 2 * pad), 8)
        c_in, c_out = self.int(0, 3), self.int(0, 3)
        oh = (h + 2 * pad - k) // stride + 1
        ow = (wd + 2 * pad - k) // stride + 1
        return (c_in, h, wd, c_out, k, stride, pad), c_in * h * wd, c_out * c_in * k * k, c_out * oh * ow

    def scores(self, n, allow_none=True):
        """(scores, subset, thr, smax-limit): int8/int16, dense/compact/empty/None."""
        if allow_none and self.r.random() < 0.15:
            return None, None, self.pick(THRS), 127
        tc = self.pick("bh")
        lim = 127 if tc == "b" else 32767
        subset = None
        m = n
        if self.r.random() < 0.5:
            mode = self.pick(["random", "random", "none", "all"])
            bits = [mode == "all" or (mode == "random" and self.r.random() < 0.6) for _ in range(n)]
            subset = bytearray((n + 7) // 8)
            for j, b in enumerate(bits):
                if b:
                    subset[j >> 3] |= 1 << (j & 7)
            m = sum(bits)
        lo = -lim - 1
        scores = array(tc, [self.int(lo, lim) for _ in range(m)])
        thr = self.pick(THRS + [self.int(lo, lim)] * 4)
        return scores, subset, thr, lim


def _one(g, name):
    r = g
    if name == "bitlen_s32":
        n = r.int(0, 20)
        return (r.s32(n), n)
    if name == "requant_s32_s8":
        n = r.int(0, 20)
        return (r.s32(n), array("b", bytes(n)), n, r.pick(SHIFTS))
    if name == "bias_add_s32":
        c, plane = r.int(0, 4), r.int(0, 5)
        return (r.s32(c * plane), r.s32(c), c, plane, r.pick([-100, -40, -33, -32, -5, 0, 3, 31, 32, 40, 100]))
    if name == "acc_add_s32":
        n = r.int(0, 16)
        return (r.s32(n), r.s32(n), n, r.pick(SHIFTS), r.pick(SHIFTS))
    if name in ("fc_s8_s32", "fc_t_s8_s32", "outer_s8_s32"):
        n_in, n_out = r.int(0, 12), r.int(0, 8)
        if name == "fc_s8_s32":
            return (r.s8(n_in), r.s8(n_in * n_out), array("i", bytes(4 * n_out)), n_in, n_out)
        if name == "fc_t_s8_s32":
            return (r.s8(n_out), r.s8(n_in * n_out), array("i", bytes(4 * n_in)), n_in, n_out)
        return (r.s8(n_out), r.s8(n_in), array("i", bytes(4 * n_in * n_out)), n_out, n_in)
    if name in ("conv2d_s8_s32_chw", "conv2d_t_s8_s32_chw", "conv2d_grad_s8_s32_chw"):
        geom, nx, nw, no = r.conv()
        if name == "conv2d_s8_s32_chw":
            return (r.s8(nx), r.s8(nw), array("i", bytes(4 * no))) + geom
        if name == "conv2d_t_s8_s32_chw":
            return (r.s8(no), r.s8(nw), array("i", bytes(4 * nx))) + geom
        return (r.s8(no), r.s8(nx), array("i", bytes(4 * nw))) + geom
    if name == "relu_s8":
        n = r.int(0, 30)
        return (r.s8(n), n)
    if name == "relu_bwd_s8":
        n = r.int(0, 30)
        return (r.s8(n), r.s8(n), n)
    if name in ("maxpool2d_s8_chw", "maxpool2d_bwd_s8_chw"):
        c, h, wd, k = r.int(0, 3), r.int(0, 9), r.int(0, 9), r.int(1, 4)
        n = c * (h // k) * (wd // k)
        x = array("b", [r.int(-3, 3) for _ in range(c * h * wd)])
        idx = bytearray(n)
        PY.maxpool2d_s8_chw(x, array("b", bytes(n)), idx, c, h, wd, k)
        if name == "maxpool2d_s8_chw":
            return (x, array("b", bytes(n)), idx if r.r.random() < 0.7 else None, c, h, wd, k, r.int(0, 1))
        return (r.s8(n), idx, array("b", bytes(c * h * wd)), c, h, wd, k, r.s8(n) if r.r.random() < 0.5 else None)
    if name == "argmax_s8":
        n = r.int(1, 12)
        return (r.s8(n), n)
    if name == "softmax_xent_s8":
        n = r.int(1, 12)
        return (r.s8(n), n, r.pick([-100, -20, -12, -7, -3, 0, 4, 11, 12, 100] + [r.int(-15, 12)] * 5),
                r.int(0, n - 1), array("b", bytes(n)), array("i", bytes(4 * n)))
    if name == "update_s8":
        n = r.int(0, 20)
        return (r.s8(n), r.s32(n), n, r.pick(SHIFTS))
    if name == "update_outer_s8":
        n_in, n_out = r.pick([r.int(0, 12), r.int(60, 70)]), r.int(0, 8)
        e, x = r.s8(n_out), r.s8(n_in)
        for v in (e, x):  # zero errors and inputs: rows and pairs the kernel skips
            for j in range(len(v)):
                v[j] = v[j] if r.r.random() < 0.5 else 0
        return (e, x, r.s8(n_in * n_out), n_out, n_in, r.int(0, 7))
    if name == "rescale_s32_s8":
        n = r.int(0, 20)
        mul = r.pick([0, 1, 3, 0x8000, 0xFFFF, r.int(0, 0xFFFF), r.int(1, 255) << r.int(0, 8)])
        w = r.pick([8, 16, 24, 31])
        # about half the shifts put the results in int8 range (neither all 0 nor all saturated)
        shift = r.pick([0, 1, 16, 17, 23, 24, 31, 32, 47, 48, 62, r.int(0, 62)] +
                       [max(0, min(62, w + mul.bit_length() - 7 + r.int(-2, 2)))] * 10)
        return (r.s32(n, -2**w, 2**w - 1), array("b", bytes(n)), n, mul, shift)
    if name == "topk_abs_s32":
        n = r.int(0, 40)
        w = r.pick([1, 3, 8, 20, 31])
        g = r.s32(n, -2**w, min(2**w, 2**31 - 1))  # narrow ranges: many ties
        k = r.pick([0, n, min(1, n)] + [r.int(0, n)] * 5)
        return (g, n, k, array("i", bytes(4 * k)))
    if name == "mask_s8":
        n = r.int(0, 40)
        sc, sub, thr, _ = r.scores(n)
        return (r.s8(n), sc, sub, thr, array("b", bytes(n)), n)
    if name in ("fc_mask_s8_s32", "fc_t_mask_s8_s32"):
        n_in, n_out = r.int(0, 10), r.int(0, 7)
        sc, sub, thr, _ = r.scores(n_in * n_out)
        if name == "fc_mask_s8_s32":
            return (r.s8(n_in), r.s8(n_in * n_out), sc, sub, thr, array("i", bytes(4 * n_out)), n_in, n_out)
        return (r.s8(n_out), r.s8(n_in * n_out), sc, sub, thr, array("i", bytes(4 * n_in)), n_in, n_out)
    if name in ("conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw"):
        geom, nx, nw, no = r.conv()
        sc, sub, thr, _ = r.scores(nw)
        if name == "conv2d_mask_s8_s32_chw":
            return (r.s8(nx), r.s8(nw), sc, sub, thr, array("i", bytes(4 * no))) + geom
        return (r.s8(no), r.s8(nw), sc, sub, thr, array("i", bytes(4 * nx))) + geom
    if name == "fc_score_s8":
        n_in, n_out = r.int(0, 10), r.int(0, 7)
        sc, sub, _, lim = r.scores(n_in * n_out, allow_none=False)
        return (r.s8(n_out), r.s8(n_in), r.s8(n_in * n_out), sc, sub, r.pick(SHIFTS[1:]),
                r.pick([0, 1, lim, r.int(0, lim)]), n_in, n_out)
    if name == "conv2d_score_s8_chw":
        geom, nx, nw, no = r.conv()
        sc, sub, _, lim = r.scores(nw, allow_none=False)
        return (r.s8(no), r.s8(nx), r.s8(nw), sc, sub, r.pick(SHIFTS[1:]), r.pick([0, lim, r.int(0, lim)])) + geom
    if name in ("conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw"):
        geom, nx, nw, no = r.conv()
        c_in, h, wd, c_out, k, stride, pad = geom
        plane = ((h + 2 * pad - k) // stride + 1) * ((wd + 2 * pad - k) // stride + 1)
        # scratch of exactly one plane (at least one item), the least the binding accepts
        # (longer ones, more channels a pass: tests/natmod/test_kernels_host.py)
        acc = array("i", bytes(4 * max(1, plane)))
        bias = r.pick([None, r.s32(c_out)])
        c0 = r.int(0, c_out)
        tail = (r.pick(SHIFTS), bias, r.pick([-40, -3, 0, 2, 40]), c0, r.pick([None, r.int(c0, c_out)]))
        if name == "conv2d_s8_s8_chw":
            return (r.s8(nx), r.s8(nw), array("b", bytes(no)), acc) + geom + tail
        sc, sub, thr, _ = r.scores(nw)
        return (r.s8(nx), r.s8(nw), sc, sub, thr, array("b", bytes(no)), acc) + geom + tail
    if name == "score_update_s8":
        n = r.int(0, 30)
        sc, sub, _, lim = r.scores(n, allow_none=False)
        return (sc, sub, r.s32(n), r.s8(n), r.pick(SHIFTS), r.pick([0, lim, r.int(0, lim)]), n)
    raise KeyError(name)


def make_cases(seed=2024, per_kernel=10):
    """[(name, args)] for every kernel name, `per_kernel` each."""
    g = Gen(seed)
    return [(name, _one(g, name)) for name in kernels.NAMES for _ in range(per_kernel)]


def param_names(name):
    return list(inspect.signature(getattr(PY, name)).parameters)


# ------------------------------------------------------------------ the wire --

def encode(v):
    if isinstance(v, array):
        return [v.typecode, binascii.hexlify(v.tobytes()).decode()]
    if isinstance(v, bytearray):
        return ["ba", binascii.hexlify(bytes(v)).decode()]
    return v


def run_reference(name, args, mod=PY):
    """[result, [hex of every buffer argument after the call, None for the others]]."""
    a = [copy.deepcopy(v) for v in args]
    r = getattr(mod, name)(*a)
    return [r, [binascii.hexlify(bytes(v)).decode() if isinstance(v, (array, bytearray)) else None
                for v in a]]


# The MicroPython side: decode, call, print one JSON line per case (same shape as run_reference).
MP_PRELUDE = """
import json, binascii
from array import array
from picotrain import _native as N

def dec(v):
    if isinstance(v, list):
        raw = binascii.unhexlify(v[1])
        return bytearray(raw) if v[0] == 'ba' else array(v[0], raw)
    return v

def hexes(args):
    return [binascii.hexlify(bytes(v)).decode() if isinstance(v, (array, bytearray)) else None
            for v in args]
"""

# Each call runs under heap_lock: no kernel allocates (results are small ints). The call is
# spelled out per arity, as f(*args) would allocate in MicroPython itself.
MP_RUN_CASES = MP_PRELUDE + """
import micropython

def call(f, a):
    n = len(a)
    micropython.heap_lock()
    try:
""" + "".join("        %sif n == %d:\n            return f(%s)\n" % ("el" if k > 2 else "", k,
                                                                        ", ".join("a[%d]" % j for j in range(k)))
              for k in range(2, 20)) + """
    finally:
        micropython.heap_unlock()

for name, args in json.load(open(CASES)):
    args = [dec(v) for v in args]
    r = call(getattr(N, name), args)
    print(json.dumps([r, hexes(args)]))
"""

MP_RUN_ERRORS = MP_PRELUDE + """
for name, args in json.load(open(CASES)):
    args = [dec(v) for v in args]
    before = hexes(args)
    try:
        getattr(N, name)(*args)
        print(json.dumps(['no error', '', True]))
    except Exception as e:
        print(json.dumps([type(e).__name__, str(e), hexes(args) == before]))
"""


# ------------------------------------------------------------ bit for bit --

@pytest.fixture(scope="module")
def native(natmod_build, mpy_dir, tmp_path_factory):
    """(folder for MICROPYPATH holding picotrain/ with _native.mpy, Linked) for x64."""
    out = tmp_path_factory.mktemp("kernels_x64")
    path, linked = natmod_build.build_module(NATMOD / "kernels", "x64", mpy_dir, out)
    pkg = out / "path" / "picotrain"
    pkg.mkdir(parents=True)
    for src in (DEVICE / "picotrain").glob("*.py"):
        shutil.copy(src, pkg / src.name)
    shutil.copy(path, pkg / "_native.mpy")
    return out / "path", linked


def run_cases(micropython, native, cases, script, tmp_path):
    f = tmp_path / "cases.json"
    f.write_text(json.dumps([[name, [encode(v) for v in args]] for name, args in cases]))
    out = micropython("CASES = %r\n" % str(f) + script, path=(native[0],))
    lines = out.splitlines()
    assert len(lines) == len(cases), out[-2000:]
    return [json.loads(line) for line in lines]


# Scratch arguments: their contents after a call are unspecified (not compared).
SCRATCH = {"conv2d_s8_s8_chw": "acc", "conv2d_mask_s8_s8_chw": "acc"}


def test_every_kernel_bit_for_bit_and_allocation_free(micropython, native, tmp_path):
    cases = make_cases(seed=2024, per_kernel=12)
    got = run_cases(micropython, native, cases, MP_RUN_CASES, tmp_path)
    for (name, args), g in zip(cases, got):
        want = run_reference(name, args)
        if name in SCRATCH:
            k = param_names(name).index(SCRATCH[name])
            g[1][k] = want[1][k] = None
        assert g == want, "%s%r" % (name, tuple(args))
    assert {name for name, _ in cases} == set(kernels.NAMES)


def range_cases(seed, per_kernel):
    """Seeded calls of every ranged kernel on a random [c0, c1) (c1 sometimes None), the
    output buffers holding random values first (scores are random already)."""
    g = Gen(seed + 1)
    cases = []
    for name, args in make_cases(seed=seed, per_kernel=per_kernel):
        if name in kernels.RANGED:
            args = list(args)
            for k, v in enumerate(args):
                if isinstance(v, array) and v.typecode == "i":
                    args[k] = g.s32(len(v))
            count = args[kernels.RANGED[name][1]]
            c0 = g.int(0, count)
            cases.append((name, args + [c0, g.pick([g.int(c0, count), None])]))
    return cases


def test_channel_ranges_bit_for_bit(micropython, native, tmp_path):
    """The range's items as kernels_py computes them, every other item untouched."""
    cases = range_cases(seed=7, per_kernel=12)
    got = run_cases(micropython, native, cases, MP_RUN_CASES, tmp_path)
    for (name, args), res in zip(cases, got):
        assert res == run_reference(name, args), "%s%r" % (name, tuple(args))
    assert {name for name, _ in cases} == set(kernels.RANGED)


# ------------------------------------------------------------ bad arguments --

OPTIONAL = {("maxpool2d_s8_chw", "idx"), ("maxpool2d_bwd_s8_chw", "y")} | {(n, "scores") for n in (
    "mask_s8", "fc_mask_s8_s32", "fc_t_mask_s8_s32", "conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw",
    "conv2d_mask_s8_s8_chw")} | {(n, "bias") for n in ("conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw")}
SIZES = {"n", "c", "plane", "n_in", "n_out", "c_in", "h", "wd", "c_out", "k", "stride", "pad", "label", "smax",
         "c0", "c1"}
WRONG_TYPE = {"b": "i", "h": "i", "i": "b"}


def _first_with_buffers(name):
    """A valid case of `name` whose buffers all hold at least one item."""
    for seed in range(200):
        for n, args in make_cases(seed=seed, per_kernel=1):
            if n == name and all(len(v) > 0 for v in args if isinstance(v, (array, bytearray))) \
                    and not any(v is None for v, p in zip(args, param_names(name)) if p in ("scores", "subset")):
                return args
    raise AssertionError("no case with non-empty buffers for " + name)


def bad_calls():
    """[(name, args, exception type, [words the message must contain])]."""
    out = []
    for name in kernels.NAMES:
        args = _first_with_buffers(name)
        params = param_names(name)
        for k, (v, p) in enumerate(zip(args, params)):
            def variant(new, exc, *words):
                a = list(args)
                a[k] = new
                out.append((name, a, exc, [name, p, *words]))
            if isinstance(v, array):
                variant(array(WRONG_TYPE[v.typecode], bytes(4 * len(v))), "TypeError", "must be")
                variant(array(v.typecode, v[:-1]), "ValueError", "has %d items, needs %d" % (len(v) - 1, len(v)))
            elif isinstance(v, bytearray):
                variant(array("b", v), "TypeError", "bytearray")
                variant(v[:-1], "ValueError", "has %d items, needs %d" % (len(v) - 1, len(v)))
            elif isinstance(v, int):
                variant("3", "TypeError", "must be an int, got str")
                if p in SIZES:
                    variant(-1, "ValueError", "must be in [")
            if (isinstance(v, (array, bytearray)) and (name, p) not in OPTIONAL and p != "subset"):
                variant(None, "TypeError", "NoneType" if p != "scores" else "None")
    # Beyond lengths and types: values the binding must refuse.
    n_idx = _first_with_buffers("maxpool2d_bwd_s8_chw")
    bad = list(n_idx)
    bad[1] = bytearray(n_idx[1])
    bad[1][-1] = n_idx[6] * n_idx[6]  # a window offset outside the k x k window
    out.append(("maxpool2d_bwd_s8_chw", bad, "ValueError", ["idx[", "is not a window offset"]))
    out.append(("maxpool2d_s8_chw", [array("b", bytes(289)), array("b", [0]), bytearray(1), 1, 17, 17, 17],
                "ValueError", ["k <= 16"]))
    out.append(("conv2d_s8_s32_chw", [array("b", [0] * 4), array("b", [0] * 25), array("i", [0]), 1, 2, 2, 1, 5, 1, 0],
                "ValueError", ["conv2d_s8_s32_chw", "5x5 kernel does not fit a 2x2 input"]))
    out.append(("fc_s8_s32", [array("b", [0]), array("b", [0]), array("i", [0]), 131072, 1], "ValueError",
                ["fc_s8_s32", "131072 terms per int32 sum (n_in)"]))
    out.append(("outer_s8_s32", [array("b", [0]), array("b", [0]), array("i", [0]), 2**20, 2**20], "ValueError",
                ["outer_s8_s32", "n_out*n_in is too large"]))
    out.append(("update_outer_s8", [array("b", [1]), array("b", [1]), array("b", [0]), 1, 1, 8], "ValueError",
                ["update_outer_s8", "mu must be in [0, 7], got 8"]))
    sc = _first_with_buffers("fc_score_s8")
    for smax in (-1, 128 if sc[3].typecode == "b" else 32768):
        bad = list(sc)
        bad[6] = smax
        out.append(("fc_score_s8", bad, "ValueError", ["smax must be in [0, "]))
    rs = _first_with_buffers("rescale_s32_s8")
    for k, v, words in ((3, -1, "mul must be in [0, 65535], got -1"), (3, 65536, "mul must be in [0, 65535]"),
                        (4, -1, "shift must be in [0, 62], got -1"), (4, 63, "shift must be in [0, 62], got 63")):
        bad = list(rs)
        bad[k] = v
        out.append(("rescale_s32_s8", bad, "ValueError", [words]))
    # issue 8: the fused forward's channel range and scratch
    cq = list(_first_with_buffers("conv2d_s8_s8_chw"))
    c_out = cq[7]
    for k, v, words in ((14, c_out + 1, "c0 must be in [0, %d]" % c_out),
                        (15, c_out + 1, "c1 must be in [%d, %d]" % (cq[14], c_out))):
        bad = list(cq)
        bad[k] = v
        out.append(("conv2d_s8_s8_chw", bad, "ValueError", [words]))
    tk = list(_first_with_buffers("topk_abs_s32"))
    tk[2] = tk[1] + 1  # k > n
    tk[3] = array("i", bytes(4 * tk[2]))
    out.append(("topk_abs_s32", tk, "ValueError", ["k must be in [0, %d], got %d" % (tk[1], tk[2])]))
    sm = list(_first_with_buffers("softmax_xent_s8"))
    sm[3] = sm[1]  # label == n
    out.append(("softmax_xent_s8", sm, "ValueError", ["label must be in [0, %d]" % (sm[1] - 1)]))
    for name, (_, ci, _, _) in kernels.RANGED.items():  # channel ranges: 0 <= c0 <= c1 <= count
        args = list(_first_with_buffers(name))
        count = args[ci]
        for c0, c1, exc, words in ((-1, None, "ValueError", "c0 must be in [0, %d], got -1" % count),
                                   (count + 1, None, "ValueError", "c0 must be in [0, %d], got %d" % (count, count + 1)),
                                   (count, count - 1, "ValueError", "c1 must be in [%d, %d], got %d" % (count, count, count - 1)),
                                   (0, count + 1, "ValueError", "c1 must be in [0, %d], got %d" % (count, count + 1)),
                                   ("0", None, "TypeError", "c0 must be an int, got str"),
                                   (0, 1.5, "TypeError", "c1 must be an int, got float")):
            out.append((name, args + [c0, c1], exc, [name + ": " + words]))
    return out


def test_bad_arguments_raise_clear_errors_and_touch_nothing(micropython, native, tmp_path):
    calls = bad_calls()
    got = run_cases(micropython, native, [(n, a) for n, a, _, _ in calls], MP_RUN_ERRORS, tmp_path)
    for (name, args, exc, words), (typ, msg, untouched) in zip(calls, got):
        where = "%s%r -> %s: %s" % (name, tuple(args), typ, msg)
        assert typ == exc, where
        for w in words:
            assert w in msg, "%r not in the message of %s" % (w, where)
        assert untouched, "buffers changed by a rejected call: " + where
    assert len({c[0] for c in calls}) == len(kernels.NAMES)


# ---------------------------------------------------------------- backend --

def test_backend_is_native_when_the_mpy_is_there(micropython, native):
    out = micropython("import picotrain\nprint(picotrain.backend())", path=(native[0],))
    assert out.strip() == "native"
    if not (DEVICE / "picotrain" / "_native.mpy").exists():  # without it: the pure-Python kernels
        assert micropython("import picotrain\nprint(picotrain.backend())").strip() == "python"


@pytest.mark.parametrize("cores", [1, 2])  # two: the big kernels split across two threads
@pytest.mark.parametrize("method", ["NITI", "StaticNITI", "PRIOT", "PRIOTS", "PRIOTS-w",
                                    "TinTin", "TinTin-b", "FQT", "PartialFQT", "PartialFQT-b"])  # issue 5: the last five
def test_fixed_seed_run_native_matches_mirror(niti_run, native, method, cores):
    mp = niti_run.micropython(method, "native", "40", str(cores), path=(native[0],), then="\nprint(pt.backend())")
    assert mp.splitlines()[-1] == ("native" if cores == 1 else "native, 2 cores")
    assert "\n".join(mp.splitlines()[:-1]) + "\n" == niti_run.cpython(method, "numpy", "40")
    assert "crc" in mp


@pytest.mark.parametrize("cores", [1, 2])
def test_native_training_step_allocates_nothing(locked_steps, native, cores):
    cases, backend = locked_steps("native", path=(native[0],), cores=cores)
    assert backend == ("native" if cores == 1 else "native, 2 cores")
    assert cases == [(m, b) for m in ("NITI", "StaticNITI", "PRIOT", "PRIOTS", "TinTin", "FQT", "PartialFQT")
                     for b in (1, 2)]


def test_native_argument_error_keeps_its_text_under_the_step_lock(step_lock, native):
    """issue 8: the binding's messages need the heap, which Trainer.step locks; the
    step runs its pass again unlocked, without the parameter work, to raise them in full."""
    cases, backend = step_lock("native", path=(native[0],))
    assert backend == "native"
    for method, kernel in (("NITI", "fc_s8_s32"), ("PRIOTS", "fc_mask_s8_s32"), ("TinTin", "fc_s8_s32")):
        assert cases[method + "-short-weights"] == (0, "ValueError %s: w has 5 items, needs 24 (n_in*n_out)" % kernel)
        assert cases[method + "-allocates"] == (0, "MemoryError memory allocation failed, heap is locked")
        assert cases[method + "-interrupted"] == (0, "KeyboardInterrupt")
        assert cases[method + "-mended"] == (0, "-")


# ----------------------------------------------------------- the Pico's build --

def test_armv6m_build(natmod_build, mpy_dir, tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    path, linked = natmod_build.build_module(NATMOD / "kernels", "armv6m", mpy_dir, tmp_path)
    data = path.read_bytes()
    assert data[:4] == b"M\x06" + bytes([4 << 2 | 3, 31])  # mpy v6.3, arch armv6m (4)
    # No libgcc member at all: no float helper, and no division helper either.
    assert linked.libgcc_members == []
    # issue 8: the fast paths (sparse lists, register-blocked loops, Thumb-1 asm) took the code
    # from 14.8 to ~26 KB of the heap for a ~5x faster training step, then the fused conv +
    # requantize (13.8 KB less int32 scratch for every static method) and the channel ranges
    # of the two-core split to ~28.4 KB, and the word-wise dense conv forward (2.5 ms less per
    # step) to 29.0 KB (28.5 KB with one bitmap popcount instead of two), and NITI's fused
    # Linear update (68 KB of int32 gradient less on the tiny CNN, 2 ms less per step) to
    # 29.1 KB, and PRIOT-S's word-wise subset walks with the dense conv's zero-byte skips
    # (0.5-0.8 ms less per PRIOT-S step) to 29.6 KB, and the score steps that shift the
    # subset's bits out (0.8 ms less per PRIOT-S p=0.5 step, 0.6 per PRIOT step) to 29.8 KB,
    # and the sparse gathers and scatters that loop over a window's rows in one call (1.6 ms
    # less per PRIOT-S p=0.5 step, 1.5 per StaticNITI step) to 30.0 KB; the budget follows,
    # and stops it growing further.
    assert len(linked.text) < 31 * 1024, len(linked.text)
    assert not any(s.startswith(("__aeabi_f", "__aeabi_d", "__aeabi_i", "__aeabi_u", "__aeabi_l"))
                   for s in linked.symbols)


def test_wrong_arch_module_names_both_and_falls_back(micropython, natmod_build, mpy_dir, tmp_path):
    """An armv6m _native.mpy on the x64 unix port: a warning naming both arches,
    then the pure-Python kernels; asking for 'native' explicitly raises the same."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    path, _ = natmod_build.build_module(NATMOD / "kernels", "armv6m", mpy_dir, tmp_path / "arm")
    pkg = tmp_path / "path" / "picotrain"
    pkg.mkdir(parents=True)
    for src in (DEVICE / "picotrain").glob("*.py"):
        shutil.copy(src, pkg / src.name)
    shutil.copy(path, pkg / "_native.mpy")
    out = micropython("""
import picotrain as pt
print(pt.backend())
try:
    pt.use_backend('native')
except ValueError as e:
    print('raised', e)
""", path=(tmp_path / "path",))
    lines = out.splitlines()
    assert "warning: native kernels not loaded" in lines[0]
    assert "built for armv6m, mpy 6.3; this MicroPython is x64, mpy 6.3" in lines[0]
    assert "pure-Python" in lines[0]
    assert lines[1] == "python"
    assert lines[2].startswith("raised native kernels not loaded:") and "armv6m" in lines[2]
