"""Layers against a float reference: the only error allowed is the final
rounding to int8 (half an output LSB) unless the value saturates."""
import re
from array import array

import numpy as np
import pytest

import picotrain as pt
from picotrain.rng import XorShift32


def rand8(r, n, lo=-127, hi=127):
    return array("b", [lo + r.below(hi - lo + 1) for _ in range(n)])


def fill(layer, r, exp=-7):
    layer.weight.data = rand8(r, layer.weight.size)
    layer.weight.exp = exp


def real(t):
    return np.array(t.data[: t.size], dtype=np.float64) * 2.0 ** t.exp


def conv_float(x, w, k, stride, pad):
    c_in, h, wd = x.shape
    c_out = w.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((c_out, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            patch = xp[:, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
            out[:, oy, ox] = np.tensordot(w, patch, axes=3)
    return out


def check_close(t, ref):
    got = real(t)
    lsb = 2.0 ** t.exp
    ref = np.asarray(ref, dtype=np.float64).ravel()
    clipped = np.clip(ref, -127 * lsb, 127 * lsb)
    assert np.all(np.abs(got - clipped) <= lsb / 2 + 1e-12)


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_linear_forward_backward_vs_float(backend, dynamic):
    pt.use_backend(backend)
    try:
        r = XorShift32(3)
        lin = pt.Linear(12, 5)
        m = pt.Model([lin], (12,), in_exp=-6)
        fill(lin, r)
        lin.shift, lin.bshift = 9, 9
        m.build(training=True)
        x = rand8(r, 12)
        y = m.forward(x, dynamic=dynamic)
        W = real(lin.weight).reshape(5, 12)
        xf = np.array(x, dtype=np.float64) * 2.0 ** -6
        check_close(y, W @ xf)
        e = m.errs[0]
        e.data[:5] = rand8(r, 5)
        e.exp = -7
        ein = pt.Tensor((12,), data=array("b", bytes(12)))
        lin.backward_input(e, ein, m.ws, dynamic)
        check_close(ein, W.T @ real(e))
        g = array("i", bytes(4 * 60))
        lin.grad(e, m._x, g)
        assert list(g) == [int(v) for v in np.outer(np.array(e.data[:5], dtype=np.int64), np.array(x, dtype=np.int64)).ravel()]
    finally:
        pt.use_backend("auto")


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("geom", [(2, 7, 6, 3, 3, 1, 1), (1, 9, 9, 4, 5, 2, 2), (3, 5, 5, 2, 1, 1, 0)])
def test_conv_forward_backward_vs_float(backend, geom):
    pt.use_backend(backend)
    try:
        c_in, h, wd, c_out, k, st, pad = geom
        r = XorShift32(11)
        conv = pt.Conv2d(c_in, c_out, k, st, pad, bias=True)
        m = pt.Model([conv, pt.Flatten()], (c_in, h, wd))
        fill(conv, r, -8)
        for c in range(c_out):
            conv.bias[c] = r.below(2001) - 1000
        conv.b_exp = -14
        x = rand8(r, c_in * h * wd, 0, 127)
        y = m.forward(x, dynamic=True)
        W = real(conv.weight).reshape(c_out, c_in, k, k)
        xf = np.array(x, dtype=np.float64).reshape(c_in, h, wd) * 2.0 ** -7
        ref = conv_float(xf, W, k, st, pad) + (np.array(conv.bias) * 2.0 ** -14)[:, None, None]
        check_close(y, ref)
        m.build(training=True)
        e = m.errs[1]
        n = y.size
        e.data[:n] = rand8(r, n)
        e.exp = -5
        ein = pt.Tensor((c_in, h, wd), data=array("b", bytes(c_in * h * wd)))
        conv.backward_input(e, ein, m.ws, True)
        # float reference of the adjoint: scatter W^T e
        ef = real(e).reshape(c_out, *y.shape[1:]) if len(y.shape) == 3 else real(e).reshape(c_out, -1)
        oh, ow = conv.out_shape[1:]
        ef = ef.reshape(c_out, oh, ow)
        back = np.zeros((c_in, h + 2 * pad, wd + 2 * pad))
        for oy in range(oh):
            for ox in range(ow):
                back[:, oy * st:oy * st + k, ox * st:ox * st + k] += np.tensordot(ef[:, oy, ox], W, axes=1)
        check_close(ein, back[:, pad:pad + h, pad:pad + wd])
    finally:
        pt.use_backend("auto")


def test_relu_maxpool_flatten_chain_and_shapes():
    m = pt.Model([pt.Conv2d(1, 2, 3), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(8, 3)], (1, 6, 6))
    assert [l.out_shape for l in m.layers] == [(2, 4, 4), (2, 4, 4), (2, 2, 2), (8,), (3,)]
    with pytest.raises(ValueError, match="layer 2 .* does not chain"):
        pt.Model([pt.Conv2d(1, 2, 3), pt.Flatten(), pt.Linear(9, 3)], (1, 6, 6))
    with pytest.raises(ValueError, match="expected \\(1, H, W\\)"):
        pt.Model([pt.Conv2d(1, 2, 3)], (2, 6, 6))
    with pytest.raises(ValueError, match="logits"):
        pt.Model([pt.Conv2d(1, 2, 3)], (1, 6, 6))


def test_bad_input_is_named():
    m = pt.Model([pt.Flatten(), pt.Linear(4, 2)], (1, 2, 2))
    with pytest.raises(ValueError, match="has 3 values; shape \\(1, 2, 2\\) needs 4"):
        m.predict(array("b", [1, 2, 3]))
    with pytest.raises(TypeError, match="array\\('b'\\)"):
        m.predict([1, 2, 3, 4])
    with pytest.raises(TypeError, match="array\\('b'\\)"):
        m.predict(array("h", [1, 2, 3, 4]))


@pytest.mark.parametrize("make, what", [
    (lambda: pt.Linear(0, 3), "n_in, n_out >= 1; got 0, 3"),
    (lambda: pt.Linear(3, 0), "n_in, n_out >= 1; got 3, 0"),
    (lambda: pt.Conv2d(0, 2, 3), "c_in=0"),
    (lambda: pt.Conv2d(1, 0, 3), "c_out=0"),
    (lambda: pt.Conv2d(1, 2, 3, pad=3), "pad=3"),
    (lambda: pt.MaxPool2d(0), "k >= 1, got 0"),
])
def test_layers_without_units_are_refused(make, what):
    """A layer with no channels or units is a mistake, not an empty tensor."""
    with pytest.raises(ValueError, match=re.escape(what)):
        make()


def test_identity_layers_are_their_inputs_tensors_and_skipped():
    """A Flatten and a ReLU whose pool rectifies have nothing to compute: Model.build gives
    them their input's activation and error tensors, and a step calls only the other layers
    (Model._work). An unpooled ReLU keeps its own tensors and its calls."""
    from tinymodels import cnn
    m, data = cnn(7)  # conv, ReLU (pooled), pool, conv, ReLU, Flatten, linear
    pt.calibrate(m, data[:4])
    t = pt.PRIOT(m)
    assert m.layers[1].pooled and not m.layers[4].pooled
    assert m._work == (0, 2, 3, 4, 6) and m._work_down == (6, 4, 3, 2, 0)
    assert m.acts[1] is m.acts[0] and m.acts[5] is m.acts[4] and m.acts[4] is not m.acts[3]
    assert m.errs[0] is m.errs[1] and m.errs[4] is m.errs[5] and m.errs[3] is not m.errs[4]
    called = []
    for i in (1, 5):
        m.layers[i].forward = m.layers[i].backward_input = lambda *a, i=i: called.append(i)
    for x, y in data[:3]:
        t.step(x, y)
    m.predict(data[0][0])
    assert called == []
    x = array("b", bytes(64))
    m.build()
    assert m.forward(x).data is m.acts[6].data


def test_leading_relu_and_flatten_work():
    lin = pt.Linear(4, 2)
    m = pt.Model([pt.Flatten(), pt.ReLU(), lin], (1, 2, 2))
    lin.weight.data = array("b", [1, 0, 0, 0, 0, 1, 0, 0])
    assert m.predict(array("b", [-5, 3, 0, 0])) == 1



@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("method", ["NITI", "StaticNITI", "PRIOT"])
def test_relu_then_maxpool_is_fused_with_the_same_bits(backend, method):
    """A ReLU followed by MaxPool2d: the pool rectifies its output and sends no error back
    from a window whose maximum is <= 0 (ReLU.pooled). Training gives the bits of the two
    layers run one after the other, windows of negative values included."""
    from tinymodels import cnn
    pt.use_backend(backend)
    try:
        runs = []
        for fused in (True, False):
            m, data = cnn(2024)
            r = XorShift32(5)
            for x, _ in data:  # some all-negative windows (the model's inputs are >= 0)
                for j in range(0, len(x), 3):
                    x[j] = -1 - r.below(100)
            relu, pool = m.layers[1], m.layers[2]
            assert relu.pooled and pool.relu
            if not fused:
                relu.pooled = pool.relu = False
            if method != "NITI":
                pt.calibrate(m, data[:8])
            t = getattr(pt, method)(m)
            steps = [tuple(t.step(x, y)) for x, y in data * 2]
            runs.append((steps, [bytes(l.weight.data) for l in m.param_layers()],
                         [bytes(l.scores) for l in m.param_layers() if l.scores is not None],
                         bytes(m.acts[2].data), bytes(m.errs[0].data)))
            # the ReLU's own output: left as it was when fused, rectified in place when not
            assert any(v < 0 for v in m.acts[1].data) == fused
        assert runs[0] == runs[1]
    finally:
        pt.use_backend("auto")
