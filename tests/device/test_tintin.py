"""TinTin (Tin-Tin, arXiv 2504.09405): scale bookkeeping, binary-decomposition error, a step
by hand, overflow handling by rescaling, batching, freezing, the model file."""
import random
from array import array

import pytest

import picotrain as pt
from picotrain import kernels_py as PY, modelfile, tintin
from picotrain.tintin import DT, DSPAN, UT, Table, decomposition_bound, level, scale


from tinymodels import X, separable, tiny  # noqa: E402,F401
from tinymodels import cnn as _cnn  # noqa: E402


def cnn(seed=3):
    return _cnn(seed)


# --------------------------------------------------------- the factor table --

def test_levels_are_the_compound_factors():
    for u in range(-UT, UT + 1):
        for d in range(-DT, DT + 1):
            num, den, a = level(u, d)
            assert 1 <= num / den < 2
            assert num / den == pytest.approx((4 / 3) ** u * 0.8 ** d * 2.0 ** a, rel=1e-12)


@pytest.mark.parametrize("n", range(1, 9))
def test_binary_decomposition_error_is_bounded_for_every_n(n):
    """Every factor of the table, as mul / 2**sh with at most n terms, is within
    1/(2**(n+1) - 1) of the exact level (docs/NUMERICS.md), and uses at most n terms."""
    t = Table(n)
    worst = 0.0
    for u in range(-UT, UT + 1):
        for d in range(-DT, DT + 1):
            j = (u + UT) * DSPAN + d + DT
            num, den, _ = level(u, d)
            mul, sh = t.mul[j], t.sh[j]
            assert 0 < mul <= 0xFFFF and 0 <= sh <= 62
            assert PY.popcount(mul) <= n
            err = abs(mul / 2 ** sh / (num / den) - 1)
            assert err <= decomposition_bound(n) + 1e-15
            worst = max(worst, err)
    assert worst > 0 or n >= 8  # the bound is not vacuous for small n


def test_table_ranks_order_the_exact_levels():
    t = Table(4)
    vals = {}
    for u in range(-UT, UT + 1):
        for d in range(-DT, DT + 1):
            num, den, _ = level(u, d)
            vals[(u + UT) * DSPAN + d + DT] = num / den
    order = sorted(vals, key=vals.get)
    assert [t.rank[j] for j in order] == list(range(len(order)))


# ------------------------------------------------------- scale bookkeeping --

def _trainer(n=4):
    return pt.TinTin(tiny(), m=3, n=n)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_rescale_keeps_the_real_value(n):
    """For random accumulators and exponents: the int8 result with its tracked (S, U, D)
    is the accumulator's real value within half a unit of the result plus the decomposition
    error; the result never saturates, fills the range to within the grid's step (1.25),
    and stays in the exponent window (only0: U = D = 0)."""
    t = _trainer(n)
    rnd = random.Random(n)
    eps = decomposition_bound(n)
    for case in range(400):
        w = rnd.choice([1, 3, 7, 8, 12, 20, 30])
        acc = array("i", [rnd.randint(-2 ** w, 2 ** w) for _ in range(rnd.randint(1, 12))])
        Sa, Ua, Da = rnd.randint(-30, 10), rnd.randint(0, 4), rnd.randint(0, 2)
        only0 = rnd.random() < 0.3
        out = pt.Tensor((len(acc),))
        t._requant(acc, len(acc), out, Sa, Ua, Da, only0)
        so, sa = scale(out.exp, out.u, out.d), scale(Sa, Ua, Da)
        assert (out.u, out.d) == (0, 0) if only0 else (0 <= out.u <= 2 and 0 <= out.d <= 1)
        M = max(abs(v) for v in acc)
        mo = max(abs(v) for v in out.data)
        assert mo <= 127
        if M:
            # the factor applied is within eps of the one the exponents say
            r_exact = sa / so
            r_used = t.f_mul / 2 ** t.f_shift
            assert abs(r_used / r_exact - 1) <= eps + 1e-12
            assert mo >= (127 / 1.25 if not only0 else 127 / 2) / (1 + eps) ** 2 - 1
        for a, o in zip(acc, out.data):
            assert abs(o * so - a * sa) <= 0.5 * so + eps * abs(a * sa) + 1e-12 * abs(a * sa)


def test_exponents_track_the_float_scale_through_a_chain():
    """A sequence of multiplies and rescales: the tracked exponents give the real value of
    the chain (computed in float) within the documented error, compounded per rescale."""
    t = _trainer(3)
    eps = decomposition_bound(3)
    rnd = random.Random(7)
    for trial in range(50):
        v = array("b", [rnd.randint(-127, 127) for _ in range(8)])
        S, U, D = -7, 0, 0
        real = [x * scale(S, U, D) for x in v]
        rel = 0.0  # accumulated relative error bound
        for k in range(6):
            c, cS, cU, cD = rnd.randint(50, 127), rnd.randint(-9, -5), rnd.randint(0, 2), rnd.randint(0, 1)
            acc = array("i", [x * c for x in v])
            real = [x * c * scale(cS, cU, cD) for x in real]
            out = pt.Tensor((8,))
            t._requant(acc, 8, out, S + cS, U + cU, D + cD, k == 5)
            v, S, U, D = out.data, out.exp, out.u, out.d
            q = scale(S, U, D)
            rel = (1 + rel) * (1 + eps) - 1
            top = max(abs(x) for x in real)
            # rounding: half a unit now, and earlier half-units carried forward
            for x, want in zip(v, real):
                assert abs(x * q - want) <= rel * top + 0.5 * q * (k + 1) * 1.01
        assert (U, D) == (0, 0)


def test_fit_by_hand():
    """acc max 1760 at exponents (-14, 0, 0): s = bitlen(1760) - 7 = 4 gives 110; the
    largest level that keeps 110 * level <= 127 is 9/8 (target U=2: (4/3)**-2 * 2), so
    out = round(acc * 9 / 2**7) and the exponents are (-14 + 4 - 1, 2, 0)."""
    t = _trainer(4)
    t._fit(1760, 127, -14, 0, 0, False)
    assert (t.f_mul, t.f_shift, t.f_S, t.f_U, t.f_D) == (9, 7, -11, 2, 0)
    assert 124 * scale(-11, 2, 0) == pytest.approx(1760 * 2 ** -14, rel=0.01)


@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_one_step_by_hand(backend):
    """TinTin(m=3, n=4) on the NITI example (docs/NUMERICS.md, "A Tin-Tin step by hand"):
    upscale: max|w| 30 must fit 127 - dmax = 111 (dmax = (127 >> 3) + 1 = 16): 30 * 3/2 = 90
      -> w = [30, -60, 90, 15], exponents (-7 - 1 - 1, 1, 0) = (-9, 1, 0)
    forward: acc = [3840, 5280] at (-16, 1, 0); logits need U = D = 0: factor (4/3) 2**-6,
      4/3 ~ 85/64 (4 terms) -> round(acc * 85 / 2**12) = [80, 110] at (-10, 0, 0)
    error (as NITI's example): [-65, 65]; gradient [[-4160, 2080], [4160, -2080]]
    aligned: s = 6 (65), level 15/8 (U target 1, D target 1) -> round(g * 15 / 2**9)
      = [-122, 61, 122, -61]
    update: pseudo-round by m = 3 bits: 122 -> 16 (rem 010: prob 1 > rnd 0), 61 -> 7
      (rem 101: prob 2, rnd 1 doubled = 2) -> w = [46, -67, 74, 22]"""
    pt.use_backend(backend)
    try:
        m = tiny()
        lin = m.layers[0]
        t = pt.TinTin(m, m=3, n=4)
        assert list(lin.weight.data) == [30, -60, 90, 15]
        assert (lin.weight.exp, lin.weight.u, lin.weight.d) == (-9, 1, 0)
        assert list(t.step(X, 0)) == [65, 0]
        y = m.acts[0]
        assert list(y.data) == [80, 110] and (y.exp, y.u, y.d) == (-10, 0, 0)
        assert list(m.errs[0].data[:2]) == [-65, 65]
        assert list(t.s8[:4]) == [-122, 61, 122, -61]
        assert list(lin.weight.data) == [46, -67, 74, 22]
        assert lin.sat_upd == 0 and lin.sat_fwd == 0
    finally:
        pt.use_backend("auto")


# ---------------------------------------------------------------- overflow --

def test_weights_at_the_edge_are_rescaled_not_clipped():
    """A weight driven to 127 with a gradient pushing it further (label 1: the error at
    output 0 is positive, x[1] < 0, so w[0, 1] grows): the update rescales the weights first
    (exponents follow), nothing saturates, and the weight's real value grows by the step,
    where a clip would have left it where it was."""
    m = tiny()
    lin = m.layers[0]
    t = pt.TinTin(m, m=2, n=4)
    lin.weight.data[1] = 127
    q0 = scale(lin.weight.exp, lin.weight.u, lin.weight.d)
    before = [v * q0 for v in lin.weight.data]
    r0 = lin.w_rescales
    t.step(X, 1)
    assert lin.w_rescales == r0 + 1
    assert lin.sat_upd == 0
    assert max(abs(v) for v in lin.weight.data) <= 127 - t.dmax + (127 >> t.m) + 1
    q1 = scale(lin.weight.exp, lin.weight.u, lin.weight.d)
    assert q1 > q0
    after = [v * q1 for v in lin.weight.data]
    assert after[1] > before[1] + 0.5 * q0
    # the rest of the tensor keeps its real values up to the step and rounding
    for b4, af in zip(before, after):
        assert abs(af - b4) <= (t.dmax + 1) * q1


def test_long_run_with_big_steps_never_saturates():
    m, data = cnn()
    t = pt.TinTin(m, m=1, n=3)
    for _ in range(3):
        t.epoch(data)
    assert sum(l.w_rescales for l in m.param_layers()) > len(m.param_layers())  # it happened
    assert all(l.sat_upd == 0 and l.sat_fwd == 0 and l.sat_bwd == 0 for l in m.param_layers())
    for l in m.param_layers():
        w = l.weight
        assert 0 <= w.u <= 2 and 0 <= w.d <= 1 and -128 <= w.exp <= 127


def test_learns_a_separable_task():
    m, data = separable()
    t = pt.TinTin(m, m=3)
    hist = t.fit(data, epochs=4, test=data, log=None)
    assert hist[-1]["test_acc"] == t.evaluate(data) > 0.9


def test_backends_agree_on_a_cnn():
    out = []
    for backend in ("python", "numpy"):
        pt.use_backend(backend)
        try:
            m, data = cnn()
            t = pt.TinTin(m, m=4, n=3, batch=2)
            for x, y in data[:9]:
                t.step(x, y)
            out.append([bytes(l.weight.data) for l in m.param_layers()] +
                       [(l.weight.exp, l.weight.u, l.weight.d) for l in m.param_layers()])
        finally:
            pt.use_backend("auto")
    assert out[0] == out[1]


# ------------------------------------------------------- trainer switches --

def test_batch_updates_once_per_batch():
    m, data = cnn()
    t = pt.TinTin(m, m=3, batch=3)
    w0 = [bytes(l.weight.data) for l in m.param_layers()]
    t.step(*data[0])
    t.step(*data[1])
    assert [bytes(l.weight.data) for l in m.param_layers()] == w0
    t.step(*data[2])
    assert [bytes(l.weight.data) for l in m.param_layers()] != w0


def test_freeze_and_head_only_leave_frozen_weights_alone():
    m, data = cnn()
    w0 = bytes(m.layers[0].weight.data), m.layers[0].weight.exp
    t = pt.TinTin(m, head_only=True)
    assert t.train_idx == [6]
    t.epoch(data)
    assert (bytes(m.layers[0].weight.data), m.layers[0].weight.exp) == w0
    assert bytes(m.layers[3].weight.data) != b"" and m.layers[3].w_rescales == 0


def test_options_are_checked():
    with pytest.raises(ValueError, match="m \\(update factor"):
        pt.TinTin(tiny(), m=0)
    with pytest.raises(ValueError, match="n \\(terms"):
        pt.TinTin(tiny(), n=0)
    b = pt.Model([pt.Linear(2, 2, bias=True)], (2,))
    with pytest.raises(ValueError, match="bias-free"):
        pt.TinTin(b)


def test_nbytes_matches_memory_plan_and_counts_the_buffers():
    m, _ = cnn()
    for batch in (1, 4):
        t = pt.TinTin(m, batch=batch)
        grads = sum(4 * len(g) for g in t.grads.values())
        extra = len(t.s8) + 1 + 4 + (4 * len(t.scratch) if batch > 1 else 0) + t.table.nbytes()
        assert t.nbytes() == m.nbytes(training=True) + grads + extra
        assert pt.memory_plan(m, "TinTin", batch=batch) == t.nbytes()


# --------------------------------------------------------------- model file --

def test_model_file_keeps_the_exponents(tmp_path):
    m, data = cnn()
    t = pt.TinTin(m, m=2)
    t.epoch(data)
    acc = t.evaluate(data)
    p = str(tmp_path / "tt.pt8")
    m.save(p)
    m2 = pt.load(p)
    for a, b in zip(m.param_layers(), m2.param_layers()):
        assert (a.weight.exp, a.weight.u, a.weight.d, a.w_rescales) == (b.weight.exp, b.weight.u, b.weight.d,
                                                                        b.w_rescales)
        assert bytes(a.weight.data) == bytes(b.weight.data)
    t2 = pt.TinTin(m2, m=2)  # resumes: no second upscaling, nothing changes
    assert t2.evaluate(data) == acc
    for a, b in zip(m.param_layers(), m2.param_layers()):
        assert bytes(a.weight.data) == bytes(b.weight.data) and b.w_rescales == a.w_rescales


def test_a_reader_without_tintin_skips_its_sections(tmp_path, monkeypatch):
    m, _ = cnn()
    pt.TinTin(m)
    p = str(tmp_path / "tt.pt8")
    m.save(p)
    assert b"TINT" in open(p, "rb").read()
    monkeypatch.setattr(modelfile, "METHOD_TAGS", {})  # an older reader: TINT is unknown
    m2 = pt.load(p)
    assert not hasattr(m2.layers[0].weight, "u")
    assert bytes(m2.layers[0].weight.data) == bytes(m.layers[0].weight.data)


def test_bad_tint_section_is_refused(tmp_path):
    m, _ = cnn()
    pt.TinTin(m)
    secs = tintin.sections(m)
    with pytest.raises(ValueError, match="no parameters"):
        tintin.attach(m, [(b"TINT", b"\x01\x00" + bytes(secs[0][1][0][0][2:]))])
    with pytest.raises(ValueError, match="expected 10"):
        tintin.attach(m, [(b"TINT", b"\x00\x00\x01")])
    with pytest.raises(ValueError, match="outside the window"):
        tintin.attach(m, [(b"TINT", b"\x00\x00\x05\x00\x00\x00" + bytes(4))])
