"""Every kernel: numpy backend vs pure-Python backend, bit for bit (hypothesis),
plus the rounding rules of docs/NUMERICS.md checked against exact fractions."""
from array import array
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from picotrain import kernels_np as NP, kernels_py as PY

I32_MIN, I32_MAX = -0x7FFFFFFF, 0x7FFFFFFF
i8 = st.integers(-127, 127)
i8_full = st.integers(-128, 127)  # inputs may hold -128; outputs never do
i32 = st.integers(I32_MIN, I32_MAX)
shifts = st.integers(0, 31)


def a8(v):
    return array("b", v)


def a32(v):
    return array("i", v)


def both(name, *bufs_and_args, outs=()):
    """Run kernel `name` on copies for each backend; compare outputs and results."""
    res = []
    for mod in (PY, NP):
        args = [type(a)(a.typecode, a) if isinstance(a, array) else
                (bytearray(a) if isinstance(a, bytearray) else a) for a in bufs_and_args]
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
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.data())
def test_maxpool(c, h, wd, k, data):
    if h < k or wd < k:
        return
    x = data.draw(st.lists(st.integers(-3, 3), min_size=c * h * wd, max_size=c * h * wd))  # many ties
    n = c * (h // k) * (wd // k)
    _, (o, idx) = both("maxpool2d_s8_chw", a8(x), a8([0] * n), bytearray(n), c, h, wd, k, outs=(1, 2))
    e = data.draw(st.lists(i8_full, min_size=n, max_size=n))
    _, (eb,) = both("maxpool2d_bwd_s8_chw", a8(e), bytearray(idx), a8([9] * (c * h * wd)), c, h, wd, k,
                    outs=(2,))
    o, eb = array("b", o), array("b", eb)
    j = 0
    for ch in range(c):
        for oy in range(h // k):
            for ox in range(wd // k):
                win = [x[(ch * h + oy * k + dy) * wd + ox * k + dx] for dy in range(k) for dx in range(k)]
                assert o[j] == max(win) and idx[j] == win.index(max(win))
                j += 1
    assert sum(eb) == sum(e)


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


@settings(max_examples=50)
@given(conv_geom, st.data())
def test_masked_conv_and_scores(geom, data):
    c_in, h, wd, c_out, k, stride, pad = geom
    if pad >= k or h + 2 * pad < k or wd + 2 * pad < k:
        return
    n = c_out * c_in * k * k
    x = data.draw(st.lists(i8_full, min_size=c_in * h * wd, max_size=c_in * h * wd))
    w = data.draw(st.lists(i8_full, min_size=n, max_size=n))
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
