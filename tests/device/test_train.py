"""NITI and StaticNITI: a step checked by hand, batching, freezing, calibration."""
from array import array

import pytest

import picotrain as pt
from picotrain.rng import XorShift32

from tinymodels import X, cnn, separable, tiny


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("method", [pt.NITI, pt.StaticNITI])
def test_one_step_by_hand(backend, method):
    """Worked in docs/NUMERICS.md ("A NITI step by hand"):
    acc = [1280, 1760] -> bitlen 11 -> shift 4 -> logits [80, 110] exp -10
    t (Q4) = [1, 2] -> p = [979, 1023], sum 2002 -> g = [1001, 1046] - [2047, 0]
    err = round([-1046, 1046] / 16) = [-65, 65] (exp -7)
    grad = outer(err, x) = [[-4160, 2080], [4160, -2080]], bitlen 13, mu 4 -> shift 9
    pseudo-rounded: [[-9, 5], [9, -5]] -> w = [[19, -25], [21, 10]]"""
    pt.use_backend(backend)
    try:
        m = tiny(shift=4)
        t = method(m, mu=4)
        loss, ok = t.step(X, 0)
        assert (loss, ok) == (65, 0)
        assert m.acts[0].exp == -10 and list(m.acts[0].data) == [80, 110]
        assert list(m.errs[0].data[:2]) == [-65, 65]
        assert list(m.layers[0].weight.data) == [19, -25, 21, 10]
    finally:
        pt.use_backend("auto")


def test_static_needs_calibration():
    with pytest.raises(ValueError, match="not calibrated"):
        pt.StaticNITI(tiny())


def test_batch_accumulates_then_updates_once():
    m = tiny()
    t = pt.NITI(m, mu=4, batch=2)
    x2 = array("b", [-30, 90])
    t.step(X, 0)
    assert list(m.layers[0].weight.data) == [10, -20, 30, 5]  # no update mid-batch
    g1 = list(t.grads[0])
    t.step(x2, 1)
    # reference: a trainer whose batch never ends, applied by hand after two samples
    ref = tiny()
    r = pt.NITI(ref, mu=4, batch=1000)
    r.step(X, 0)
    assert list(r.grads[0]) == g1
    r.step(x2, 1)
    r._apply()
    assert list(m.layers[0].weight.data) == list(ref.layers[0].weight.data)
    assert list(m.layers[0].weight.data) != [10, -20, 30, 5]


def test_freeze_and_head_only():
    m = pt.Model([pt.Linear(4, 3), pt.ReLU(), pt.Linear(3, 2)], (4,))
    r = XorShift32(2)
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(61) - 30 for _ in range(l.weight.size)])
    w0 = list(m.layers[0].weight.data)
    t = pt.NITI(m, head_only=True)
    assert t.train_idx == [2] and t.lowest == 2
    for _ in range(5):
        t.step(array("b", [100, 50, -20, 7]), 1)
    assert list(m.layers[0].weight.data) == w0
    with pytest.raises(ValueError, match="not a layer with parameters"):
        pt.NITI(m, freeze=[1])
    with pytest.raises(ValueError, match="every layer with parameters is frozen"):
        pt.NITI(m, freeze=[0, 2])
    with pytest.raises(ValueError, match="label 7 out of range 0..1"):
        t.step(array("b", [1, 2, 3, 4]), 7)
    with pytest.raises(ValueError, match="mu"):
        pt.NITI(m, mu=0)


def test_calibrate_takes_most_frequent_shift():
    m = tiny()
    data = [(array("b", [64, -32]), 0), (array("b", [60, -30]), 1), (array("b", [2, 1]), 0)]
    out = pt.calibrate(m, data)
    # shifts: [1280,1760] and [1200,1650] -> 4; [0, 65] -> 0; no layer below: no bshift
    assert {i: v[:2] for i, v in out.items()} == {0: (4, None)}
    assert m.layers[0].gbits == out[0][2] > 0
    assert m.static
    pt.StaticNITI(m)  # now accepted


def test_training_learns_a_separable_task():
    """NITI on a 2-class linearly separable task reaches high accuracy."""
    m, data = separable()
    t = pt.NITI(m, mu=3)
    for _ in range(5):
        t.epoch(data)
    assert pt.evaluate(m, data) > 0.9


def test_fit_reads_a_dataset_file(tmp_path):
    """A .pt8d file goes straight to fit() and evaluate(), a sample at a time."""
    import numpy as np
    from host_tools.datasets import write_pt8d
    from picotrain.data import Dataset
    r = np.random.default_rng(0)
    labels = r.integers(0, 2, 40)
    images = np.zeros((40, 1, 2, 2), np.uint8)
    images[:, 0, 0, 0] = np.where(labels == 1, 250, 10)
    images[:, 0, 1, 1] = np.where(labels == 1, 10, 250)
    path = str(tmp_path / "d.pt8d")
    write_pt8d(path, images, labels, n_classes=2)
    lin = pt.Linear(4, 2)
    m = pt.Model([pt.Flatten(), lin], (1, 2, 2))
    with Dataset(path) as ds:
        hist = pt.NITI(m, mu=3).fit(ds, epochs=3, test=ds, log=None)
        assert hist[-1]["test_acc"] == pt.evaluate(m, ds) == 1.0


def test_calibration_ignores_samples_without_error():
    """Confident right predictions send no error back; they must not vote the
    error shifts and gradient sizes down to 0 (found on rotated MNIST)."""
    lin1, lin2 = pt.Linear(2, 3), pt.Linear(3, 2)
    lin1.weight.data = array("b", [60, 0, 0, 60, 30, 30])
    lin2.weight.data = array("b", [127, 0, 0, 0, 127, 0])
    for l in (lin1, lin2):
        l.weight.exp = -4
    m = pt.Model([lin1, pt.ReLU(), lin2], (2,))
    right = (array("b", [127, 0]), 0)   # logits far apart: error 0
    wrong = (array("b", [0, 127]), 0)   # confidently wrong: large error
    assert m.predict(right[0], dynamic=True) == 0
    pt.calibrate(m, [right] * 5 + [wrong] * 2)
    assert lin2.gbits > 0 and lin1.gbits > 0 and lin2.bshift > 0
    shifts = (lin1.shift, lin2.shift)
    pt.calibrate(m, [right] * 5 + [wrong] * 2, all_samples=True)  # the old rule: the five vote them to 0
    assert lin2.gbits == lin1.gbits == lin2.bshift == 0
    assert (lin1.shift, lin2.shift) == shifts


@pytest.mark.parametrize("method", [pt.NITI, pt.TinTin, pt.FQT])
def test_dynamic_training_drops_stale_static_shifts(method):
    """Shifts calibrated before dynamic training describe the old weights;
    evaluate() after training must score the trained network, not a mix."""
    m, data = cnn(3)
    pt.calibrate(m, data)
    assert m.static
    before = [l.shift for l in m.param_layers()]
    t = method(m, head_only=True)
    lo = [l.shift for l in m.param_layers()]
    assert lo[:-1] == before[:-1] and lo[-1] is None  # below the trained layer they still hold
    for _ in range(3):
        t.epoch(data)
    assert not m.static
    assert pt.evaluate(m, data) == pt.evaluate(m, data, dynamic=True) == t.evaluate(data)



def _unfused(cls):
    """cls with every layer through an int32 gradient, bitlen_s32 and update_s8."""
    return type("Unfused" + cls.__name__, (cls,), {"fuse_linear": False})


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("method", [pt.NITI, pt.StaticNITI])
@pytest.mark.parametrize("model", ["cnn", "separable"])
def test_fused_linear_update_is_the_gradient_path(backend, method, model):
    """At batch 1 NITI updates Linear layers with update_outer_s8 in the backward pass:
    the same weights and saturation counts as through a gradient buffer, and that
    buffer (4 bytes an edge) is not allocated."""
    pt.use_backend(backend)
    try:
        trainers = []
        for cls in (method, _unfused(method)):
            m, data = cnn(2024) if model == "cnn" else separable()
            m.param_layers()[-1].weight.data[0] = -128  # a zero step clips it, and counts
            if not method.dynamic:
                pt.calibrate(m, data[:8])
            trainers.append(cls(m, mu=3))
        fused, plain = trainers
        linear = [i for i in fused.train_idx if isinstance(fused.model.layers[i], pt.Linear)]
        assert linear and all(fused.grads[i] is None for i in linear)
        assert plain.nbytes() - fused.nbytes() == sum(4 * fused.model.layers[i].grad_size() for i in linear)
        assert pt.memory_plan(fused.model, method, mu=3) == fused.nbytes()
        for x, y in data[:40]:
            assert fused.step(x, y) == plain.step(x, y)
        for a, b in zip(fused.model.layers, plain.model.layers):
            if a.has_params:
                assert bytes(a.weight.data) == bytes(b.weight.data)
                assert a.sat_upd == b.sat_upd
        assert fused.model.param_layers()[-1].sat_upd > 0
    finally:
        pt.use_backend("auto")
