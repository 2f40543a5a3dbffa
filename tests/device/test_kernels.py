"""Every kernel: numpy backend vs pure-Python backend, bit for bit (hypothesis),
plus the rounding rules of docs/NUMERICS.md checked against exact fractions."""
import copy
from array import array
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings, strategies as st

from picotrain import kernels, kernels_np as NP, kernels_py as PY

I32_MIN, I32_MAX = -0x7FFFFFFF, 0x7FFFFFFF
i8 = st.integers(-127, 127)
i8_full = st.integers(-128, 127)  # inputs may hold -128; outputs never do
i32 = st.integers(I32_MIN, I32_MAX)
shifts = st.integers(0, 31)


def a8(v):
    return array("b", v)


def a32(v):
    return array("i", v)


def fresh(args):
    """Copies of a call's arguments (its buffers written by the kernel)."""
    return [copy.deepcopy(a) for a in args]


def both(name, *bufs_and_args, outs=()):
    """Run kernel `name` on copies for each backend; compare outputs and results."""
    res = []
    for mod in (PY, NP):
        args = fresh(bufs_and_args)
        r = getattr(mod, name)(*args)
        res.append((r, [bytes(args[k]) for k in outs]))
    assert res[0] == res[1], name
    return res[0]


# ------------------------------------------------------------------ rules --

@given(st.integers(-2**40, 2**40), st.integers(0, 40))
def test_rshift_round_is_round_half_away_from_zero(v, s):
    exact = Fraction(v, 2 ** s)
    r = PY.rshift_round(v, s)
    assert abs(r - exact) <= Fraction(1, 2)
    if abs(r - exact) == Fraction(1, 2):  # a tie goes away from zero
        assert abs(r) > abs(exact)


@given(st.integers(-2**31, 2**31), st.integers(1, 31))
def test_pseudo_rounding_is_floor_or_ceil_of_magnitude(v, s):
    m = abs(v)
    r = PY.rshift_pseudo(v, s)
    assert abs(r) in (m >> s, (m >> s) + 1)
    assert (r < 0) == (v < 0 and r != 0)


def test_pseudo_rounding_examples():
    # s = 4: |v| = 0b1011_0110 -> discard 0110: prob = 01, rand = 10 -> keep floor
    assert PY.rshift_pseudo(0b10110110, 4) == 0b1011
    # discard 1001: prob 10 > rand 01 -> round up, sign kept
    assert PY.rshift_pseudo(-0b10111001, 4) == -0b1100
    # s = 1: any discarded bit rounds away from zero
    assert PY.rshift_pseudo(3, 1) == 2 and PY.rshift_pseudo(-3, 1) == -2
    # s = 3 (odd): prob = top 2 bits, rand = low bit doubled
    assert PY.rshift_pseudo(0b110, 3) == 1   # prob 11 > rand 0
    assert PY.rshift_pseudo(0b011, 3) == 0   # prob 01 <= rand 10


def test_bit_length_matches_python():
    for v in [0, 1, 2, 127, 128, 255, 256, 2**31 - 1, 2**31]:
        assert PY.bit_length(v) == v.bit_length()


# ------------------------------------------------------------- elementwise --

@given(st.lists(i32, min_size=1, max_size=40), shifts)
def test_requant(vals, s):
    n = len(vals)
    r, (out,) = both("requant_s32_s8", a32(vals), a8([0] * n), n, s, outs=(1,))
    got = array("b", out)
    sat = 0
    for v, o in zip(vals, got):
        q = PY.rshift_round(v, s)
        sat += abs(q) > 127
        assert o == max(-127, min(127, q))
    assert r == sat


def test_requant_saturates_both_ends_and_counts():
    vals = [I32_MAX, I32_MIN, 127, -127, 128, -128, 0]
    out = a8([0] * 7)
    for mod in (PY, NP):
        assert mod.requant_s32_s8(a32(vals), out, 7, 0) == 4
        assert list(out) == [127, -127, 127, -127, 127, -127, 0]
        assert mod.requant_s32_s8(a32(vals), out, 7, 31) == 0
        assert list(out) == [1, -1, 0, 0, 0, 0, 0]


@given(st.lists(i32, max_size=50))
def test_bitlen(vals):
    r, _ = both("bitlen_s32", a32(vals), len(vals))
    assert r == max([abs(v) for v in vals] + [0]).bit_length()


@given(st.data())
def test_bias_add_and_acc_add(data):
    c = data.draw(st.integers(1, 4))
    plane = data.draw(st.integers(1, 6))
    acc = data.draw(st.lists(i32, min_size=c * plane, max_size=c * plane))
    bias = data.draw(st.lists(st.integers(-2**20, 2**20), min_size=c, max_size=c))
    d = data.draw(st.integers(-31, 12))
    both("bias_add_s32", a32(acc), a32(bias), c, plane, d, outs=(0,))
    g = data.draw(st.lists(i32, min_size=c * plane, max_size=c * plane))
    both("acc_add_s32", a32(acc), a32(g), c * plane, data.draw(shifts), data.draw(shifts), outs=(0,))


@given(st.lists(i8_full, min_size=1, max_size=60))
def test_relu_and_backward(vals):
    n = len(vals)
    _, (y,) = both("relu_s8", a8(vals), n, outs=(0,))
    assert list(array("b", y)) == [max(v, 0) for v in vals]
    e = list(reversed(vals))
    _, (eb,) = both("relu_bwd_s8", a8(vals), a8(e), n, outs=(1,))
    assert list(array("b", eb)) == [ev if v > 0 else 0 for v, ev in zip(vals, e)]


@given(st.data())
def test_update(data):
    n = data.draw(st.integers(1, 40))
    w = data.draw(st.lists(i8, min_size=n, max_size=n))
    g = data.draw(st.lists(st.integers(-2**24, 2**24), min_size=n, max_size=n))
    shift = data.draw(st.integers(-3, 24))
    r, (wo,) = both("update_s8", a8(w), a32(g), n, shift, outs=(0,))
    for wi, gi, o in zip(w, g, array("b", wo)):
        d = gi if shift <= 0 else PY.rshift_pseudo(gi, shift)
        assert o == max(-127, min(127, wi - d))


@given(st.data())
def test_update_outer_is_outer_then_update(data):
    """The fused update of a linear layer = outer_s8_s32, then update_s8 by
    bitlen_s32(g) - mu, with -128 weights (a zero step clips them) and signs."""
    n_in = data.draw(st.integers(0, 19))
    n_out = data.draw(st.integers(0, 7))
    x = data.draw(st.lists(st.one_of(st.just(0), i8_full), min_size=n_in, max_size=n_in))
    e = data.draw(st.lists(st.one_of(st.just(0), i8_full), min_size=n_out, max_size=n_out))
    w = data.draw(st.lists(st.one_of(st.just(-128), i8_full), min_size=n_in * n_out, max_size=n_in * n_out))
    mu = data.draw(st.integers(0, 7))
    g = a32([0] * (n_in * n_out))
    PY.outer_s8_s32(a8(e), a8(x), g, n_out, n_in)
    w2 = a8(w)
    sat = PY.update_s8(w2, g, len(g), PY.bitlen_s32(g, len(g)) - mu)
    r, (wo,) = both("update_outer_s8", a8(e), a8(x), a8(w), n_out, n_in, mu, outs=(2,))
    assert (r, wo) == (sat, bytes(w2))


def test_update_outer_checks_mu():
    for mod in (PY, NP):
        with pytest.raises(ValueError, match="update_outer_s8: mu must be in"):
            mod.update_outer_s8(a8([1]), a8([1]), a8([0]), 1, 1, 8)


# ------------------------------------------------------------------ matmul --

@given(st.data())
def test_fc_family(data):
    n_in = data.draw(st.integers(1, 17))
    n_out = data.draw(st.integers(1, 9))
    x = data.draw(st.lists(i8_full, min_size=n_in, max_size=n_in))
    e = data.draw(st.lists(i8_full, min_size=n_out, max_size=n_out))
    w = data.draw(st.lists(i8_full, min_size=n_in * n_out, max_size=n_in * n_out))
    _, (o,) = both("fc_s8_s32", a8(x), a8(w), a32([7] * (n_out + 3)), n_in, n_out, outs=(2,))
    o = array("i", o)
    for r in range(n_out):
        assert o[r] == sum(w[r * n_in + i] * x[i] for i in range(n_in))
    assert list(o[n_out:]) == [7, 7, 7]  # nothing past n_out is touched
    _, (t,) = both("fc_t_s8_s32", a8(e), a8(w), a32([7] * n_in), n_in, n_out, outs=(2,))
    t = array("i", t)
    for i in range(n_in):
        assert t[i] == sum(w[r * n_in + i] * e[r] for r in range(n_out))
    both("outer_s8_s32", a8(e), a8(x), a32([0] * (n_in * n_out)), n_out, n_in, outs=(2,))


def conv_ref(x, w, c_in, h, wd, c_out, k, stride, pad):
    """Independent direct convolution on dicts, for the kernels' reference."""
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = [0] * (c_out * oh * ow)
    for co in range(c_out):
        for oy in range(oh):
            for ox in range(ow):
                s = 0
                for ci in range(c_in):
                    for kh in range(k):
                        for kw in range(k):
                            iy, ix = oy * stride - pad + kh, ox * stride - pad + kw
                            if 0 <= iy < h and 0 <= ix < wd:
                                s += w[((co * c_in + ci) * k + kh) * k + kw] * x[(ci * h + iy) * wd + ix]
                out[(co * oh + oy) * ow + ox] = s
    return out, oh, ow


conv_geom = st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.integers(1, 3),
                      st.integers(1, 4), st.integers(1, 3), st.integers(0, 3))


@settings(max_examples=60)
@given(conv_geom, st.data())
def test_conv_family(geom, data):
    c_in, h, wd, c_out, k, stride, pad = geom
    if pad >= k or h + 2 * pad < k or wd + 2 * pad < k:
        return
    x = data.draw(st.lists(i8_full, min_size=c_in * h * wd, max_size=c_in * h * wd))
    w = data.draw(st.lists(i8_full, min_size=c_out * c_in * k * k, max_size=c_out * c_in * k * k))
    ref, oh, ow = conv_ref(x, w, c_in, h, wd, c_out, k, stride, pad)
    g = (c_in, h, wd, c_out, k, stride, pad)
    _, (o,) = both("conv2d_s8_s32_chw", a8(x), a8(w), a32([0] * len(ref)), *g, outs=(2,))
    assert list(array("i", o)) == ref
    e = data.draw(st.lists(i8_full, min_size=len(ref), max_size=len(ref)))
    _, (t,) = both("conv2d_t_s8_s32_chw", a8(e), a8(w), a32([0] * len(x)), *g, outs=(2,))
    # Adjoint identity: <conv(x), e> == <x, conv_t(e)>
    t = array("i", t)
    assert sum(a * b for a, b in zip(ref, e)) == sum(a * b for a, b in zip(x, t))
    _, (gw,) = both("conv2d_grad_s8_s32_chw", a8(e), a8(x), a32([0] * len(w)), *g, outs=(2,))
    # d<conv(x; w), e>/dw == grad: check through linearity on the basis
    gw = array("i", gw)
    for j in range(len(w)):
        basis = [0] * len(w)
        basis[j] = 1
        r, _, _ = conv_ref(x, basis, c_in, h, wd, c_out, k, stride, pad)
        assert gw[j] == sum(a * b for a, b in zip(r, e))


@settings(max_examples=60)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.booleans(), st.data())
def test_maxpool(c, h, wd, k, relu, data):
    """relu: the rectified pool (a ReLU before it, pooled) gives max(window max, 0) with the
    same idx, and sends back only the errors where that output is > 0: the bits of a ReLU
    then a pool."""
    if h < k or wd < k:
        return
    x = data.draw(st.lists(st.integers(-3, 3), min_size=c * h * wd, max_size=c * h * wd))  # many ties
    n = c * (h // k) * (wd // k)
    _, (o, idx) = both("maxpool2d_s8_chw", a8(x), a8([0] * n), bytearray(n), c, h, wd, k, int(relu), outs=(1, 2))
    e = data.draw(st.lists(i8_full, min_size=n, max_size=n))
    _, (eb,) = both("maxpool2d_bwd_s8_chw", a8(e), bytearray(idx), a8([9] * (c * h * wd)), c, h, wd, k,
                    a8(o) if relu else None, outs=(2,))
    o, eb = array("b", o), array("b", eb)
    j = 0
    for ch in range(c):
        for oy in range(h // k):
            for ox in range(wd // k):
                win = [x[(ch * h + oy * k + dy) * wd + ox * k + dx] for dy in range(k) for dx in range(k)]
                assert o[j] == (max(max(win), 0) if relu else max(win)) and idx[j] == win.index(max(win))
                j += 1
    assert sum(eb) == sum(v for v, y in zip(e, o) if not relu or y > 0)
    if relu:  # the same bits as relu_s8 before the pool and relu_bwd_s8 on its output error
        xr = a8(x)
        PY.relu_s8(xr, len(xr))
        o2, idx2 = a8([0] * n), bytearray(n)
        PY.maxpool2d_s8_chw(xr, o2, idx2, c, h, wd, k)
        assert o2 == o
        e2 = a8(e)
        PY.relu_bwd_s8(o2, e2, n)
        eb2 = a8([9] * (c * h * wd))
        PY.maxpool2d_bwd_s8_chw(e2, idx, eb2, c, h, wd, k)
        assert eb2 == eb


# -------------------------------------------------------------------- loss --

@given(st.lists(i8, min_size=2, max_size=12), st.integers(-12, 11), st.data())
def test_softmax_xent_backends_and_float_error(z, exp, data):
    n = len(z)
    label = data.draw(st.integers(0, n - 1))
    r, (err,) = both("softmax_xent_s8", a8(z), n, exp, label, a8([0] * n), a32([0] * n), outs=(4,))
    err = array("b", err)
    assert r == err[label] and err[label] <= 0
    import math
    zs = [v * 2.0 ** exp for v in z]
    mx = max(zs)
    p = [math.exp(v - mx) for v in zs]
    s = sum(p)
    for j in range(n):
        ref = (p[j] / s - (j == label)) * 128
        # documented bound (NUMERICS.md): 1/16-octave logits, 10-octave floor,
        # the -1 of 2**t - 1, integer division and the final rounding
        assert abs(err[j] - ref) <= 0.1 * 128 * max(p[j] / s, 1 / 64) + 1.5


def test_argmax_first_maximum():
    for mod in (PY, NP):
        assert mod.argmax_s8(a8([1, 5, 5, -2]), 4) == 1
        assert mod.argmax_s8(a8([-127, -127]), 2) == 0


def test_kernel_names_exist_in_every_backend():
    from picotrain import kernels
    for name in kernels.NAMES:
        assert callable(getattr(PY, name)) and callable(getattr(NP, name))


def test_backend_selection_and_report():
    from picotrain import kernels
    try:
        assert kernels.use("python") == "python" and kernels.backend() == "python"
        assert kernels.requant_s32_s8 is PY.requant_s32_s8
        assert kernels.use("numpy") == "numpy"
        assert kernels.requant_s32_s8 is NP.requant_s32_s8
        with pytest.raises(ValueError, match="unknown kernel backend"):
            kernels.use("cuda")
        assert kernels.use("auto") in ("numpy", "native")
    finally:
        kernels.use("auto")


# ---------------------------------------------------- edge-popup (PRIOT) --

def mask_case(data, n):
    """Random scores (int8 or int16, dense or compact over a random subset)."""
    tc = data.draw(st.sampled_from("bh"))
    lim = 127 if tc == "b" else 32767
    subset = None
    m = n
    if data.draw(st.booleans()):
        bits = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
        subset = bytearray((n + 7) // 8)
        for j, b in enumerate(bits):
            if b:
                subset[j >> 3] |= 1 << (j & 7)
        m = sum(bits)
    scores = array(tc, data.draw(st.lists(st.integers(-lim, lim), min_size=m, max_size=m)))
    thr = data.draw(st.sampled_from([-lim, 0, 1, lim, lim + 1]) | st.integers(-lim, lim))
    return scores, subset, thr, lim


def materialise(w, scores, subset, thr):
    out = a8([0] * len(w))
    PY.mask_s8(a8(w), scores, subset, thr, out, len(w))
    return list(out)


@settings(max_examples=80)
@given(st.data())
def test_masked_fc_and_scores(data):
    n_in = data.draw(st.integers(1, 9))
    n_out = data.draw(st.integers(1, 6))
    n = n_in * n_out
    w = data.draw(st.lists(i8_full, min_size=n, max_size=n))
    x = data.draw(st.lists(i8_full, min_size=n_in, max_size=n_in))
    e = data.draw(st.lists(i8_full, min_size=n_out, max_size=n_out))
    scores, subset, thr, lim = mask_case(data, n)
    wm = materialise(w, scores, subset, thr)
    both("mask_s8", a8(w), scores, subset, thr, a8([0] * n), n, outs=(4,))
    _, (o,) = both("fc_mask_s8_s32", a8(x), a8(w), scores, subset, thr, a32([0] * n_out), n_in, n_out,
                   outs=(5,))
    ref = a32([0] * n_out)
    PY.fc_s8_s32(a8(x), a8(wm), ref, n_in, n_out)
    assert o == bytes(ref)
    _, (t,) = both("fc_t_mask_s8_s32", a8(e), a8(w), scores, subset, thr, a32([0] * n_in), n_in, n_out,
                   outs=(5,))
    PY.fc_t_s8_s32(a8(e), a8(wm), (ref := a32([0] * n_in)), n_in, n_out)
    assert t == bytes(ref)
    shift = data.draw(st.integers(0, 20))
    sat, (sc,) = both("fc_score_s8", a8(e), a8(x), a8(w), scores, subset, shift, lim, n_in, n_out,
                      outs=(3,))
    # the fused step equals outer() followed by score_update_s8
    g = a32([0] * n)
    PY.outer_s8_s32(a8(e), a8(x), g, n_out, n_in)
    s2 = array(scores.typecode, scores)
    assert PY.score_update_s8(s2, subset, g, a8(w), shift, lim, n) == sat and bytes(s2) == sc
    both("score_update_s8", array(scores.typecode, scores), subset, g, a8(w), shift, lim, n, outs=(0,))
    # all pruned and nothing pruned
    if subset is None:
        none_kept = array(scores.typecode, [-lim] * n)
        _, (z,) = both("fc_mask_s8_s32", a8(x), a8(w), none_kept, None, -lim + 1, a32([5] * n_out),
                       n_in, n_out, outs=(5,))
        assert list(array("i", z)) == [0] * n_out


def conv_fits(geom):
    c_in, h, wd, c_out, k, stride, pad = geom
    return pad < k and h + 2 * pad >= k and wd + 2 * pad >= k


def conv_operands(geom, data):
    """(x, w, number of weights) drawn for a conv geometry."""
    c_in, h, wd, c_out, k, stride, pad = geom
    n = c_out * c_in * k * k
    x = data.draw(st.lists(i8_full, min_size=c_in * h * wd, max_size=c_in * h * wd))
    w = data.draw(st.lists(i8_full, min_size=n, max_size=n))
    return x, w, n


@settings(max_examples=50)
@given(conv_geom, st.data())
def test_masked_conv_and_scores(geom, data):
    c_in, h, wd, c_out, k, stride, pad = geom
    if not conv_fits(geom):
        return
    x, w, n = conv_operands(geom, data)
    scores, subset, thr, lim = mask_case(data, n)
    wm = materialise(w, scores, subset, thr)
    g = (c_in, h, wd, c_out, k, stride, pad)
    ref, oh, ow = conv_ref(x, wm, *g)
    _, (o,) = both("conv2d_mask_s8_s32_chw", a8(x), a8(w), scores, subset, thr, a32([0] * len(ref)), *g,
                   outs=(5,))
    assert list(array("i", o)) == ref
    e = data.draw(st.lists(i8_full, min_size=len(ref), max_size=len(ref)))
    _, (t,) = both("conv2d_t_mask_s8_s32_chw", a8(e), a8(w), scores, subset, thr, a32([0] * len(x)), *g,
                   outs=(5,))
    tr = a32([0] * len(x))
    PY.conv2d_t_s8_s32_chw(a8(e), a8(wm), tr, *g)
    assert t == bytes(tr)
    shift = data.draw(st.integers(0, 24))
    sat, (sc,) = both("conv2d_score_s8_chw", a8(e), a8(x), a8(w), scores, subset, shift, lim, *g, outs=(3,))
    gw = a32([0] * n)
    PY.conv2d_grad_s8_s32_chw(a8(e), a8(x), gw, *g)
    s2 = array(scores.typecode, scores)
    assert PY.score_update_s8(s2, subset, gw, a8(w), shift, lim, n) == sat and bytes(s2) == sc


@settings(max_examples=80)
@given(conv_geom, st.data())
def test_fused_conv_requant_is_conv_bias_requant(geom, data):
    """conv2d_(mask_)s8_s8_chw == conv2d_(mask_)s8_s32_chw + bias_add_s32 + requant_s32_s8,
    bits and saturation count, on the output channels [c0, c1) only (the rest untouched),
    with scratch of one plane or more."""
    c_in, h, wd, c_out, k, stride, pad = geom
    if not conv_fits(geom):
        return
    x, w, n = conv_operands(geom, data)
    masked = data.draw(st.booleans())
    scores, subset, thr, _ = mask_case(data, n) if masked else (None, None, 0, 0)
    bias = data.draw(st.none() | st.lists(i32 | st.integers(-300, 300), min_size=c_out, max_size=c_out))
    bias = None if bias is None else a32(bias)
    d = data.draw(st.integers(-40, 40))
    shift = data.draw(st.integers(-3, 40))
    c0 = data.draw(st.integers(0, c_out))
    c1 = data.draw(st.none() | st.integers(c0, c_out))
    g = (c_in, h, wd, c_out, k, stride, pad)
    oh, ow = PY.conv_out_size(h, k, stride, pad), PY.conv_out_size(wd, k, stride, pad)
    plane = oh * ow
    acc = a32([0] * (c_out * plane))
    PY.conv2d_mask_s8_s32_chw(a8(x), a8(w), scores, subset, thr, acc, *g)
    if bias is not None:
        PY.bias_add_s32(acc, bias, c_out, plane, d)
    full = a8([0] * (c_out * plane))
    PY.requant_s32_s8(acc, full, c_out * plane, shift)
    lo, hi = c0 * plane, (c_out if c1 is None else c1) * plane
    want = a8([99] * (c_out * plane))
    want[lo:hi] = full[lo:hi]
    want_sat = PY.requant_s32_s8(a32(acc[lo:hi]), a8([0] * (hi - lo)), hi - lo, shift)
    scratch = a32([7] * (plane * data.draw(st.integers(1, c_out + 1))))
    if masked:
        sat, (o,) = both("conv2d_mask_s8_s8_chw", a8(x), a8(w), scores, subset, thr, a8([99] * len(want)),
                         scratch, *g, shift, bias, d, c0, c1, outs=(5,))
    else:
        sat, (o,) = both("conv2d_s8_s8_chw", a8(x), a8(w), a8([99] * len(want)), scratch, *g, shift, bias, d,
                         c0, c1, outs=(2,))
    assert o == bytes(want) and sat == want_sat


# ------------------------------------- binary-decomposition rescale (Tin-Tin) --

def round_half_away(x):
    """Fraction -> int, ties away from zero (the rule of rshift_round)."""
    m = abs(x)
    q = int(m + Fraction(1, 2))  # floor for m >= 0
    return q if x >= 0 else -q


rescale_muls = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 2, 3, 0x8000, 0xFFFF, 0x5555]))
rescale_shifts = st.one_of(st.integers(0, 62), st.sampled_from([0, 1, 15, 16, 17, 23, 24, 31, 32, 47, 48, 62]))
i32_edges = st.one_of(i32, st.sampled_from([-2**31, -2**31 + 1, I32_MAX, -1, 0, 1, 2**15, 2**16 - 1]))


@settings(max_examples=300)
@given(st.lists(i32_edges, min_size=0, max_size=30), rescale_muls, rescale_shifts)
def test_rescale_exact_product_and_backends(vals, mul, shift):
    n = len(vals)
    r, (out,) = both("rescale_s32_s8", a32(vals), a8([0] * n), n, mul, shift, outs=(1,))
    got = array("b", out)
    sat = 0
    for v, o in zip(vals, got):
        q = round_half_away(Fraction(v * mul, 2 ** shift))  # the exact product, rounded once
        sat += abs(q) > 127
        assert o == max(-127, min(127, q))
    assert r == sat


def test_rescale_edges():
    vals = [-2**31, I32_MAX, -1, 1, 0, 3, -3]
    for mod in (PY, NP):
        out = a8([9] * 8)
        # mul 0: everything 0; shift 62 with the largest product: 0
        assert mod.rescale_s32_s8(a32(vals), out, 7, 0, 0) == 0 and list(out) == [0] * 7 + [9]
        assert mod.rescale_s32_s8(a32(vals), out, 7, 0xFFFF, 62) == 0 and list(out[:7]) == [0] * 7
        # 2**31 * 65535 / 2**40 = 127.998...: rounds to 128, saturates; -1 * 65535 / 2**40 -> 0
        assert mod.rescale_s32_s8(a32(vals), out, 7, 0xFFFF, 40) == 2
        assert list(out[:7]) == [-127, 127, 0, 0, 0, 0, 0]
        # shift 0, mul 1 is requant with shift 0
        assert mod.rescale_s32_s8(a32(vals), out, 7, 1, 0) == 2
        assert list(out[:7]) == [-127, 127, -1, 1, 0, 3, -3]
        # ties go away from zero: 3 * 1 / 2 = 1.5 -> 2, -1.5 -> -2
        assert mod.rescale_s32_s8(a32(vals), out, 7, 1, 1) == 2 and list(out[5:7]) == [2, -2]
        # mul = 3 * 2**14 is 0b11 << 14: two shifted adds; 3 * 49152 / 2**16 = 2.25 -> 2
        assert mod.rescale_s32_s8(a32(vals), out, 7, 3 << 14, 16) == 2 and list(out[5:7]) == [2, -2]
        for mul, shift in ((-1, 0), (0x10000, 0), (1, -1), (1, 63)):
            with pytest.raises(ValueError, match="rescale_s32_s8: (mul|shift) must be in"):
                mod.rescale_s32_s8(a32(vals), out, 7, mul, shift)


def decompose_bound(terms, b):
    """The documented bound on |mul/2**shift - r| / r (docs/NUMERICS.md)."""
    return Fraction(1, 2 ** (terms + 1) - 1) if terms < b else Fraction(1, 2 ** b + 1)


def floor_log2(r):
    p = r.numerator.bit_length() - r.denominator.bit_length()
    return p if r >= Fraction(2) ** p else p - 1


rationals = st.builds(Fraction, st.integers(1, 2**40), st.integers(1, 2**40)) | st.builds(
    lambda m, e: Fraction(m) * Fraction(2) ** e, st.integers(1, 2**16), st.integers(-70, 10))


@pytest.mark.parametrize("terms", range(1, 9))
@settings(max_examples=200)
@given(r=rationals, bits=st.integers(1, 16))
def test_binary_decompose_error_bound(terms, r, bits):
    p = floor_log2(r)
    b = min(bits, p + 63)
    try:
        mul, shift = PY.binary_decompose(r.numerator, r.denominator, terms, bits)
    except ValueError as e:
        # only below 2**-62, or when the result (within the bound of r) is 2**16 or more
        assert p < -62 or r * (1 + decompose_bound(terms, b)) >= 2 ** 16, e
        return
    assert 0 <= mul <= 0xFFFF and 0 <= shift <= 62
    assert PY.popcount(mul) <= terms and bin(mul).count("1") == PY.popcount(mul)
    assert mul & 1 or shift == 0  # canonical
    assert NP.binary_decompose is PY.binary_decompose
    a = Fraction(mul, 2 ** shift)
    assert abs(a - r) <= r * decompose_bound(terms, b)
    assert abs(a - r) / r <= Fraction(1, 2 ** terms) or terms >= b


@pytest.mark.parametrize("terms", range(1, 9))
def test_binary_decompose_bound_is_attained(terms):
    for bits in range(1, 17):
        # terms < bits: 2 - 2**-terms, the tie above terms consecutive bits;
        # terms >= bits: 1 + 2**-bits, half a unit of the last bit of the window
        r = 2 - Fraction(1, 2 ** terms) if terms < bits else 1 + Fraction(1, 2 ** bits)
        for scale in (Fraction(1, 2**20), Fraction(1), Fraction(2**5)):
            x = r * scale
            mul, shift = PY.binary_decompose(x.numerator, x.denominator, terms, bits)
            assert abs(Fraction(mul, 2 ** shift) - x) / x == decompose_bound(terms, bits)


def nearest_by_search(r, terms, low):
    """The nearest sum of at most `terms` distinct powers 2**i, i >= low (ties: the
    larger), by trying every candidate up to twice r."""
    best = None
    top = int(r / Fraction(2) ** low) * 2 + 2
    for c in range(1, top + 1):
        if bin(c).count("1") <= terms:
            d = abs(Fraction(c) * Fraction(2) ** low - r)
            if best is None or d < best[0] or (d == best[0] and c > best[1]):
                best = (d, c)
    return Fraction(best[1]) * Fraction(2) ** low


@settings(max_examples=300)
@given(st.integers(1, 600), st.integers(1, 600), st.integers(1, 4), st.integers(1, 7))
def test_binary_decompose_is_the_nearest(num, den, terms, bits):
    r = Fraction(num, den)
    mul, shift = PY.binary_decompose(num, den, terms, bits)
    assert Fraction(mul, 2 ** shift) == nearest_by_search(r, terms, floor_log2(r) - bits + 1)


def test_binary_decompose_examples_and_errors():
    bd = PY.binary_decompose
    assert bd(4, 3, 3, 16) == (21, 4)        # 1.0101b: 1 + 1/4 + 1/16
    assert bd(4, 3, 1, 16) == (1, 0)         # the nearest power of two
    assert bd(4, 5, 2, 8) == (3, 2)          # 0.110011..b -> 0.11b
    assert bd(3, 2, 1, 16) == (2, 0)         # a tie goes up
    assert bd(1000, 1, 8, 16) == (1000, 0)   # exact: 1111101000b has 6 set bits
    assert bd(1, 2**62, 1, 16) == (1, 62)    # the smallest scale
    assert bd(65535, 1, 16, 16) == (65535, 0)
    for args in ((0, 1, 1, 8), (1, 0, 1, 8), (1, 1, 0, 8), (1, 1, 1, 0), (1, 1, 1, 17),
                 (1, 2**63, 4, 8), (65535, 1, 15, 16), (2**16, 1, 1, 16)):
        with pytest.raises(ValueError, match="binary_decompose"):
            bd(*args)


@given(st.integers(-2**31, I32_MAX), st.integers(1, 2**20), st.integers(1, 2**20), st.integers(1, 8))
def test_rescale_applies_a_decomposed_scale(v, num, den, terms):
    """rescale_s32_s8 with binary_decompose's (mul, shift) is the rounded product by the
    approximated scale; its error against the exact scale follows from the bound."""
    try:
        mul, shift = PY.binary_decompose(num, den, terms, 16)
    except ValueError:
        return
    out = a8([0])
    PY.rescale_s32_s8(a32([v]), out, 1, mul, shift)
    exact = Fraction(v * num, den)
    if abs(exact) <= 100:
        assert abs(out[0] - exact) <= abs(exact) * decompose_bound(terms, 16) + Fraction(1, 2)


# ------------------------------------------------------- top-k by magnitude --

def topk_ref(g, k):
    """sorted(): the k largest |g| (ties: lower index first), then by index."""
    order = sorted(range(len(g)), key=lambda j: (-abs(g[j]), j))[:k]
    return sorted(order), (abs(g[order[-1]]) if k else 0)


topk_vals = st.one_of(st.integers(-3, 3), i32_edges, st.sampled_from([-2**31, 2**31 - 1, -2**30, 2**30]))


@settings(max_examples=300)
@given(st.lists(topk_vals, min_size=0, max_size=40), st.data())
def test_topk_abs(vals, data):
    n = len(vals)
    k = data.draw(st.one_of(st.integers(0, n), st.sampled_from([0, n])))
    g = a32(vals)
    idx = a32([-7] * (k + 2))
    r, (got, gb) = both("topk_abs_s32", g, n, k, idx, outs=(3, 0))
    assert gb == bytes(g)  # g unchanged
    got = array("i", got)
    want, kth = topk_ref(vals, k)
    assert list(got[:k]) == want and list(got[k:]) == [-7, -7] and r == kth


def test_topk_abs_ties_int32_min_and_errors():
    g = a32([3, -5, 5, 0, -2**31, 7, 5, -2**31])
    for mod in (PY, NP):
        idx = a32([0] * 8)
        assert mod.topk_abs_s32(g, 8, 1, idx) == 2**31 and idx[0] == 4  # |INT32_MIN| = 2**31
        assert mod.topk_abs_s32(g, 8, 3, idx) == 7 and list(idx[:3]) == [4, 5, 7]
        assert mod.topk_abs_s32(g, 8, 4, idx) == 5 and list(idx[:4]) == [1, 4, 5, 7]  # first tie
        assert mod.topk_abs_s32(g, 8, 5, idx) == 5 and list(idx[:5]) == [1, 2, 4, 5, 7]
        assert mod.topk_abs_s32(g, 8, 8, idx) == 0 and list(idx) == list(range(8))
        assert mod.topk_abs_s32(g, 8, 0, a32([])) == 0
        assert mod.topk_abs_s32(a32([0, 0, 0]), 3, 2, idx) == 0 and list(idx[:2]) == [0, 1]
        for k in (-1, 9):
            with pytest.raises(ValueError, match=r"topk_abs_s32: k must be in \[0, 8\]"):
                mod.topk_abs_s32(g, 8, k, idx)


@settings(max_examples=50)
@given(st.integers(1, 3000), st.integers(0, 31), st.data())
def test_topk_abs_large(n, bits, data):
    """Longer buffers, magnitudes of every width: the search's early exit and its full depth."""
    seed = data.draw(st.integers(0, 2**32 - 1))
    import random
    rng = random.Random(seed)
    vals = [rng.randint(-2**bits, min(2**bits, I32_MAX)) for _ in range(n)]
    k = data.draw(st.integers(0, n))
    r, (got,) = both("topk_abs_s32", a32(vals), n, k, a32([0] * k), outs=(3,))
    want, kth = topk_ref(vals, k)
    assert list(array("i", got)) == want and r == kth


def test_extreme_shifts_and_exponents_agree():
    """Shifts far past 31 (a model file can hold any exponent): all backends agree."""
    for s in (32, 62, 63, 100, 127):
        both("requant_s32_s8", a32([I32_MAX, I32_MIN, 5, -5]), a8([0] * 4), 4, s, outs=(1,))
    for d in (-127, -64, 31, 32, 40, 100):
        both("bias_add_s32", a32([1, -1, 0, 7]), a32([3, -2]), 2, 2, d, outs=(0,))
        # -2**31 << 32 plus a negative sum overflowed int64 in kernels_np once
        _, (o,) = both("bias_add_s32", a32([-5, 5]), a32([I32_MIN - 1, 1]), 2, 1, d, outs=(0,))
        if d >= 32:
            assert list(array("i", o)) == [I32_MIN, I32_MAX]
    both("acc_add_s32", a32([I32_MAX, I32_MIN]), a32([1, -1]), 2, 90, 70, outs=(0,))


# ------------------------------------------------------------ channel ranges --
# kernels.RANGED: an optional c0, c1 last restricts a call to channels [c0, c1);
# the result there is the whole call's, nothing else is written, and two calls
# on [0, c) and [c, count) are the whole call (cores.py splits this way).

def ranged_call(data, name):
    """(args, position of the buffer the kernel writes, span(c0, c1) -> the
    items [lo, hi) of that buffer that channels [c0, c1) own)."""
    def i8s(n):
        return a8(data.draw(st.lists(i8_full, min_size=n, max_size=n)))

    def i32s(n):
        return a32(data.draw(st.lists(i32, min_size=n, max_size=n)))

    if name == "update_s8":
        n = data.draw(st.integers(0, 30))
        return [i8s(n), i32s(n), n, data.draw(st.integers(-3, 31))], 0, lambda c0, c1: (c0, c1)
    if name in ("fc_s8_s32", "fc_mask_s8_s32", "fc_score_s8", "outer_s8_s32", "update_outer_s8"):
        n_in, n_out = data.draw(st.integers(0, 9)), data.draw(st.integers(0, 6))
        x, w, e = i8s(n_in), i8s(n_in * n_out), i8s(n_out)
        if name == "fc_s8_s32":
            return [x, w, i32s(n_out), n_in, n_out], 2, lambda c0, c1: (c0, c1)
        if name == "update_outer_s8":
            return [e, x, w, n_out, n_in, data.draw(st.integers(0, 7))], 2, lambda c0, c1: (c0 * n_in, c1 * n_in)
        if name == "outer_s8_s32":
            return [e, x, i32s(n_in * n_out), n_out, n_in], 2, lambda c0, c1: (c0 * n_in, c1 * n_in)
        scores, subset, thr, lim = mask_case(data, n_in * n_out)
        if name == "fc_mask_s8_s32":
            return [x, w, scores, subset, thr, i32s(n_out), n_in, n_out], 5, lambda c0, c1: (c0, c1)
        return ([e, x, w, scores, subset, data.draw(st.integers(0, 24)), lim, n_in, n_out], 3,
                lambda c0, c1: (PY._nscored(subset, 0, c0 * n_in), PY._nscored(subset, 0, c1 * n_in)))
    g = data.draw(conv_geom)
    c_in, h, wd, c_out, k, stride, pad = g
    assume(conv_fits(g))
    oh, ow, nco = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1, c_in * k * k
    x, w, e = i8s(c_in * h * wd), i8s(c_out * nco), i8s(c_out * oh * ow)
    fwd = lambda c0, c1: (c0 * oh * ow, c1 * oh * ow)  # noqa: E731
    if name == "conv2d_s8_s32_chw":
        return [x, w, i32s(c_out * oh * ow), *g], 2, fwd
    if name == "conv2d_t_s8_s32_chw":
        return [e, w, i32s(c_in * h * wd), *g], 2, lambda c0, c1: (c0 * h * wd, c1 * h * wd)
    if name == "conv2d_grad_s8_s32_chw":
        return [e, x, i32s(c_out * nco), *g], 2, lambda c0, c1: (c0 * nco, c1 * nco)
    scores, subset, thr, lim = mask_case(data, c_out * nco)
    if name == "conv2d_mask_s8_s32_chw":
        return [x, w, scores, subset, thr, i32s(c_out * oh * ow), *g], 5, fwd
    if name == "conv2d_t_mask_s8_s32_chw":
        return [e, w, scores, subset, thr, i32s(c_in * h * wd), *g], 5, lambda c0, c1: (c0 * h * wd, c1 * h * wd)
    return ([e, x, w, scores, subset, data.draw(st.integers(0, 24)), lim, *g], 3,
            lambda c0, c1: (PY._nscored(subset, 0, c0 * nco), PY._nscored(subset, 0, c1 * nco)))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(kernels.RANGED)), st.data())
def test_channel_range_is_the_whole_call_restricted(name, data):
    args, pos, span = ranged_call(data, name)
    count = args[kernels.RANGED[name][1]]
    c0 = data.draw(st.integers(0, count))
    c1 = data.draw(st.integers(c0, count))
    got = []
    for mod in (PY, NP):
        f = getattr(mod, name)
        whole = fresh(args)
        r = f(*whole)
        part = fresh(args)
        rp = f(*part, c0, c1)
        lo, hi = span(c0, c1)
        want = list(args[pos])
        want[lo:hi] = list(whole[pos])[lo:hi]
        assert list(part[pos]) == want, mod.__name__
        assert [bytes(v) for v in part if isinstance(v, (array, bytearray))] == \
            [bytes(v) if k != pos else bytes(part[pos]) for k, v in enumerate(args)
             if isinstance(v, (array, bytearray))], "only the output is written"
        halves = fresh(args)
        r0 = f(*halves, 0, c0)
        r1 = f(*halves, c0, None)
        assert bytes(halves[pos]) == bytes(whole[pos])
        if r is not None:
            assert r0 + r1 == r
        got.append((rp, bytes(part[pos])))
    assert got[0] == got[1]


@pytest.mark.parametrize("mod", [PY, NP])
def test_bad_channel_ranges_are_refused(mod):
    x, w, out = a8([1, 2]), a8([1] * 6), a32([9] * 3)
    for c0, c1, words in ((-1, None, "fc_s8_s32: c0 must be in [0, 3], got -1"),
                          (4, None, "fc_s8_s32: c0 must be in [0, 3], got 4"),
                          (2, 1, "fc_s8_s32: c1 must be in [2, 3], got 1"),
                          (0, 4, "fc_s8_s32: c1 must be in [0, 3], got 4")):
        with pytest.raises(ValueError) as exc:
            mod.fc_s8_s32(x, w, out, 2, 3, c0, c1)
        assert str(exc.value) == words
        assert list(out) == [9, 9, 9]
    with pytest.raises(ValueError, match=r"conv2d_t_s8_s32_chw: c1 must be in \[0, 1\], got 2"):
        mod.conv2d_t_s8_s32_chw(a8([0] * 4), a8([0] * 2), a32([0] * 4), 1, 2, 2, 2, 1, 1, 0, 0, 2)
