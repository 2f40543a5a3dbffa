"""PRIOT and PRIOT-S: a step by hand, subsets, masks, save/load."""
from array import array

import pytest

import picotrain as pt
from picotrain import prune
from picotrain.rng import XorShift32


def tiny():
    lin = pt.Linear(2, 2)
    lin.weight.data = array("b", [10, -20, 30, 5])
    lin.weight.exp = -7
    lin.shift, lin.gbits = 4, 5
    return pt.Model([lin], (2,), in_exp=-7)


X = array("b", [64, -32])


@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_priot_step_by_hand(backend):
    """Scores [5, -3, 7, 0], threshold 0: edge 1 (w=-20) is pruned.
    acc = [10*64, 30*64 + 5*-32] = [640, 1760] -> >>4 -> [40, 110] (exp -10)
    t = [0, 2] -> p = [938, 1023], sum 1961 -> g = [979, 1068] - [2047, 0]
    err = round([-1068, 1068] / 16) = [-67, 67]
    shift = gbits 5 + bitlen(30) 5 - rate 2 = 8
    grad_s = (e (x) x) * w = [[-42880, -42880], [128640, -10720]]
    round(/256) = [[-168, -168], [503, -42]]
    scores = sat([5+168, -3+168, 7-503, 0+42]) = [127, 127, -127, 42], 3 saturated."""
    pt.use_backend(backend)
    try:
        m = tiny()
        lin = m.layers[0]
        lin.scores = array("b", [5, -3, 7, 0])
        lin.thr = 0
        t = pt.PRIOT(m, rate=2)
        assert t.shifts == {0: 8}
        assert list(t.step(X, 0)) == [67, 0]
        assert list(m.acts[0].data) == [40, 110]
        assert list(lin.scores) == [127, 127, -127, 42]
        assert lin.sat_upd == 3
        assert list(lin.weight.data) == [10, -20, 30, 5]  # weights never change
        # now edge 2 is pruned and edge 1 is back
        assert list(m.forward(X).data) == [round((640 + 640) / 16), round(-160 / 16)]
    finally:
        pt.use_backend("auto")


def test_scores_start_above_threshold_and_nothing_is_pruned():
    m = tiny()
    t = pt.PRIOT(m, threshold=-5, init_span=10, seed=3)
    sc = list(m.layers[0].scores)
    assert all(-5 <= s < 5 for s in sc) and pt.pruned_fraction(m) == 0.0
    assert t.nbytes() == m.nbytes(training=True) + 4


def test_priot_needs_calibration_and_checks_options():
    m = tiny()
    m.layers[0].gbits = None
    with pytest.raises(ValueError, match="calibrate"):
        pt.PRIOT(m)
    m = tiny()
    with pytest.raises(ValueError, match="score_bits"):
        pt.PRIOT(m, score_bits=4)
    with pytest.raises(ValueError, match="threshold"):
        pt.PRIOT(m, threshold=200)
    with pytest.raises(ValueError, match="unscored fraction"):
        pt.PRIOTS(m, p=1.0)
    with pytest.raises(ValueError, match="select"):
        pt.PRIOTS(m, select="biggest")


def test_select_by_weight_takes_largest_magnitudes_with_stable_ties():
    w = array("b", [3, -9, 9, 1, -128, 0, 9, 2])
    bm = prune.select_by_weight(w, 8, 3)
    chosen = [j for j in range(8) if (bm[j >> 3] >> (j & 7)) & 1]
    assert chosen == [1, 2, 4]  # -128 (as 127), then the first two 9s
    assert prune.popcount(prune.select_by_weight(w, 8, 8), 8) == 8
    assert prune.popcount(prune.select_by_weight(w, 8, 0), 8) == 0


def test_select_random_is_exact_and_seeded():
    for n, k in [(1, 1), (10, 0), (100, 37), (1000, 999)]:
        a = prune.select_random(n, k, XorShift32(9))
        assert prune.popcount(a, n) == k
        assert a == prune.select_random(n, k, XorShift32(9))


def test_unscored_edges_are_never_pruned():
    m = tiny()
    t = pt.PRIOTS(m, p=0.5, select="weight", threshold=0, init_span=1)
    lin = m.layers[0]
    assert prune.popcount(lin.subset, 4) == 2  # |30| and |-20| carry scores
    for j in range(len(lin.scores)):
        lin.scores[j] = -127  # prune every scored edge
    wm = array("b", bytes(4))
    pt.kernels.mask_s8(lin.weight.data, lin.scores, lin.subset, lin.thr, wm, 4)
    assert list(wm) == [10, 0, 0, 5]
    assert pt.pruned_fraction(m) == 0.5
    assert t.nbytes() == m.nbytes(training=True) + 2 + 1


@pytest.mark.parametrize("p,select,bits", [(0.0, "random", 8), (0.5, "random", 16), (0.97, "weight", 8)])
def test_scores_and_subsets_survive_save_load(tmp_path, p, select, bits):
    r = XorShift32(4)
    lin = pt.Linear(40, 20)
    lin.weight.data = array("b", [r.below(255) - 127 for _ in range(800)])
    m = pt.Model([lin], (40,))
    lin.shift, lin.gbits = 9, 12
    pt.PRIOTS(m, p=p, select=select, score_bits=bits, seed=11) if p else pt.PRIOT(m, score_bits=bits)
    for j in range(len(lin.scores)):
        lin.scores[j] = r.below(200) - 100
    path = str(tmp_path / "s.pt8")
    m.save(path)
    m2 = pt.load(path)
    l2 = m2.layers[0]
    assert list(l2.scores) == list(lin.scores) and l2.thr == lin.thr
    assert l2.subset == lin.subset
    x = array("b", [r.below(255) - 127 for _ in range(40)])
    assert list(m.forward(x).data) == list(m2.forward(x).data)
    if p == 0.97:  # 24 scored edges of 800: indices (48 B) beat the bitmap (100 B)
        assert len(open(path, "rb").read()) < 800 + 24 + 100 + 120
    # a PRIOT trainer on the loaded model resumes from the stored scores
    pt.PRIOTS(m2, p=p, select=select, score_bits=bits) if p else pt.PRIOT(m2, score_bits=bits)
    assert list(l2.scores) == list(lin.scores)


def test_bake_applies_masks():
    m = tiny()
    lin = m.layers[0]
    lin.scores, lin.thr = array("b", [1, -1, 1, -1]), 0
    y = list(m.forward(X).data)
    prune.bake(m)
    assert lin.scores is None and list(lin.weight.data) == [10, 0, 30, 0]
    assert list(m.forward(X).data) == y
