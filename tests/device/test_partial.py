"""FQT and PartialFQT (Deutel et al., arXiv 2407.10734): a step by hand, budget 100 % equals
full FQT bit for bit, a small budget changes only the selected channels (and computes only
their gradients), the channel ranking, batching, the model file."""
import random
from array import array

import pytest

import picotrain as pt
from picotrain import kernels as K, modelfile, partial


from tinymodels import X, tiny  # noqa: E402,F401
from tinymodels import cnn as _cnn  # noqa: E402


def cnn(seed=2024):
    return _cnn(seed)


def weights(m):
    return [bytes(l.weight.data) for l in m.param_layers()]


@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_fqt_step_by_hand(backend):
    """The NITI example's forward and error (docs/NUMERICS.md): err [-65, 65] (exp -7),
    grad [[-4160, 2080], [4160, -2080]] (exp -14). FQT: int8 gradient shift
    s = bitlen(4160) - 7 = 6 (exp -8); SGD with lr 2**-2 into weights of exp -7:
    r = w_exp + lr - g8_exp = -7 + 2 + 8 = 3; one pseudo-stochastic rounding by
    s + r = 9 bits: [[-9, 5], [9, -5]] -> w = [19, -25, 21, 10] (NITI's mu = 4 step).
    PartialFQT with budget 0.5 (k = 1 of 2 outputs): |e| ties at 65, the lower index wins:
    only row 0 changes."""
    pt.use_backend(backend)
    try:
        m = tiny()
        t = pt.FQT(m, lr=2)
        assert list(t.step(X, 0)) == [65, 0]
        assert list(m.layers[0].weight.data) == [19, -25, 21, 10]
        m = tiny()
        t = pt.PartialFQT(m, budget=0.5, lr=2)
        assert t.k == {0: 1}
        t.step(X, 0)
        assert list(t.idx[0]) == [0] and list(t.norms[0]) == [-65, 65]  # |norm| ranks
        assert list(m.layers[0].weight.data) == [19, -25, 30, 5]
        assert list(m.layers[0].upd_count) == [1, 0]
    finally:
        pt.use_backend("auto")


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_budget_100_percent_is_full_fqt_bit_for_bit(backend, batch):
    pt.use_backend(backend)
    try:
        runs = []
        for make in (lambda m: pt.FQT(m, lr=4, batch=batch),
                     lambda m: pt.PartialFQT(m, budget=1.0, lr=4, batch=batch)):
            m, data = cnn()
            t = make(m)
            losses = [t.step(x, y)[0] for x, y in data * 2]
            t.epoch(data[:4])
            runs.append((losses, weights(m), [l.sat_upd for l in m.param_layers()]))
        assert runs[0] == runs[1]
        assert runs[0][1] != weights(cnn()[0])  # it trained
    finally:
        pt.use_backend("auto")


class Recording(pt.PartialFQT):
    """PartialFQT that keeps, per step, each layer's error and weights before the update."""

    def _grad(self, i, layer, e, x):
        self.seen[i] = (array("b", e.data[:e.size]), bytes(layer.weight.data), x.exp, e.exp,
                        array("b", x.data[:x.size]))
        pt.PartialFQT._grad(self, i, layer, e, x)


def l1_rows(e, c, plane):
    return [sum(abs(e[ch * plane + j]) for j in range(plane)) for ch in range(c)]


@pytest.mark.parametrize("budget", [0.2, 0.5])
def test_small_budget_changes_only_the_top_channels(budget):
    """Each step, in each layer: the selection is the k channels of largest error L1 norm
    (ties to the lower channel), the other channels' weights are bit for bit unchanged, and
    the selected rows are what the FQT rule gives for them (gradient of the row, one int8
    scale over the selected rows, SGD shift)."""
    m, data = cnn()
    t = Recording(m, budget=budget, lr=3)
    t.seen = {}
    for x, y in data[:8]:
        t.step(x, y)
        for i in t.train_idx:
            e, w_before, x_exp, e_exp, xin = t.seen[i]
            l = m.layers[i]
            c, plane, row, k = t.c[i], t.plane[i], t.row[i], t.k[i]
            norms = l1_rows(e, c, plane)
            assert [abs(v) for v in t.norms[i]] == norms
            want = sorted(sorted(range(c), key=lambda ch: (-norms[ch], ch))[:k])
            assert list(t.idx[i]) == want
            # full gradient for reference, then the FQT rule on the selected rows
            g = array("i", bytes(4 * l.grad_size()))
            et, xt = pt.Tensor(l.out_shape, e_exp, data=e), pt.Tensor(l.in_shape, x_exp, data=xin)
            l.grad(et, xt, g)
            sel = array("i", [g[ch * row + j] for ch in want for j in range(row)])
            s = max(0, K.bitlen_s32(sel, len(sel)) - 7)
            r = l.weight.exp + t.lr - (e_exp + x_exp + s)
            w = array("b", w_before)
            K.update_s8(w, g, len(g), s + max(r, 0))
            now = l.weight.data
            for ch in range(c):
                rows_now = bytes(now[ch * row:(ch + 1) * row])
                if ch in want:
                    assert rows_now == bytes(w[ch * row:(ch + 1) * row])
                else:
                    assert rows_now == w_before[ch * row:(ch + 1) * row]


def test_skipped_channels_gradients_are_never_computed(monkeypatch):
    """Count the gradient rows the kernels compute: k per layer per step, not all."""
    rows = {"conv": 0, "fc": 0}
    conv, outer = K.conv2d_grad_s8_s32_chw, K.outer_s8_s32

    def conv_count(e, x, g, c_in, h, w, c_out, k, s, p):
        rows["conv"] += c_out
        return conv(e, x, g, c_in, h, w, c_out, k, s, p)

    def outer_count(e, x, g, n_out, n_in):
        rows["fc"] += n_out
        return outer(e, x, g, n_out, n_in)

    monkeypatch.setattr(K, "conv2d_grad_s8_s32_chw", conv_count)
    monkeypatch.setattr(K, "outer_s8_s32", outer_count)
    m, data = cnn()
    t = pt.PartialFQT(m, budget=0.25, lr=4)
    assert t.k == {0: 1, 3: 2, 6: 1}
    for x, y in data[:5]:
        t.step(x, y)
    assert rows == {"conv": 5 * (1 + 2), "fc": 5 * 1}
    rows.update(conv=0, fc=0)
    m, data = cnn()
    f = pt.FQT(m, lr=4)
    for x, y in data[:5]:
        f.step(x, y)
    assert rows == {"conv": 5 * (4 + 6), "fc": 5 * 5}
    counts = [sum(l.upd_count) for l in t.model.param_layers()]
    assert counts == [5 * 1, 5 * 2, 5 * 1]


@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_ranking_is_the_l1_norm_of_each_row(backend):
    """_rank's 2P - S (existing kernels only) equals sum |v| per row, -128 and ties included."""
    pt.use_backend(backend)
    try:
        m, _ = cnn()
        t = pt.PartialFQT(m, budget=0.5, lr=4)
        rnd = random.Random(1)
        for trial in range(30):
            c, plane = t.c[3], t.plane[3]
            e = array("b", [rnd.choice([-128, -127, 0, 1, 127, rnd.randint(-128, 127)]) for _ in range(c * plane)])
            t._rank(3, e, c, plane)
            norms = l1_rows(e, c, plane)
            assert list(t.norms[3]) == norms
            assert list(t.idx[3]) == sorted(sorted(range(c), key=lambda ch: (-norms[ch], ch))[:t.k[3]])
        e = array("b", [-5, 3, -1, 0] * (t.c[3] * t.plane[3] // 4 + 1))[:t.c[3] * t.plane[3]]
        e0 = bytes(e)
        t._rank(3, e, t.c[3], t.plane[3])
        assert bytes(e) == e0
    finally:
        pt.use_backend("auto")


def test_batch_ranks_the_accumulated_gradient_and_updates_once():
    m, data = cnn()
    t = pt.PartialFQT(m, budget=0.5, lr=3, batch=2)
    w0 = weights(m)
    t.step(*data[0])
    assert weights(m) == w0
    t.step(*data[1])
    changed = weights(m)
    assert changed != w0
    for i, l in zip(t.train_idx, m.param_layers()):
        row = t.row[i]
        rows_changed = [ch for ch in range(t.c[i])
                        if w0[t.train_idx.index(i)][ch * row:(ch + 1) * row] != bytes(l.weight.data[ch * row:(ch + 1) * row])]
        assert set(rows_changed) <= set(t.idx[i])
        assert sum(l.upd_count) == t.k[i]


def test_learns_and_switches_work():
    m, data = cnn()
    t = pt.PartialFQT(m, budget=0.5, lr=3)
    hist = t.fit(data, epochs=6, test=data, log=None)
    assert hist[-1]["test_acc"] >= 0.8
    m, data = cnn()
    w0 = bytes(m.layers[0].weight.data)
    t = pt.PartialFQT(m, budget=0.5, head_only=True)
    assert t.train_idx == [6]
    t.epoch(data)
    assert bytes(m.layers[0].weight.data) == w0
    with pytest.raises(ValueError, match="budget"):
        pt.PartialFQT(m, budget=0)
    with pytest.raises(ValueError, match="budget"):
        pt.PartialFQT(m, budget=1.5)
    with pytest.raises(ValueError, match="lr"):
        pt.FQT(m, lr=99)


def test_nbytes_matches_memory_plan():
    m, _ = cnn()
    for cls, kw in ((pt.FQT, {}), (pt.PartialFQT, {"budget": 0.25}), (pt.PartialFQT, {"budget": 1.0})):
        for batch in (1, 3):
            t = cls(m, batch=batch, **kw)
            assert pt.memory_plan(m, cls, batch=batch, **kw) == t.nbytes()
    # batch 1: the partial method holds one shared int32 buffer for k rows instead of a
    # full int32 gradient per layer
    full = pt.FQT(m).nbytes()
    small = pt.PartialFQT(m, budget=0.25).nbytes()
    assert small < full


def test_model_file_keeps_the_update_counts(tmp_path, monkeypatch):
    m, data = cnn()
    t = pt.PartialFQT(m, budget=0.5)
    t.epoch(data)
    p = str(tmp_path / "p.pt8")
    m.save(p)
    m2 = pt.load(p)
    for a, b in zip(m.param_layers(), m2.param_layers()):
        assert list(a.upd_count) == list(b.upd_count) and sum(b.upd_count) > 0
    pt.PartialFQT(m2, budget=0.5)  # resumes counting
    assert list(m2.layers[6].upd_count) == list(m.layers[6].upd_count)
    monkeypatch.setattr(modelfile, "METHOD_TAGS", {})  # an older reader skips PFQT
    m3 = pt.load(p)
    assert not hasattr(m3.layers[6], "upd_count") and weights(m3) == weights(m)
    with pytest.raises(ValueError, match="channels"):
        partial.attach(m, [(b"PFQT", b"\x06\x00\x04\x00" + bytes(16))])
