"""The collapse guard (issue 7): static NITI that really collapses is caught and rolled back
to the last good state bit for bit; healthy runs raise no alarm and train the same bits;
checkpoints as the good state; the same run under the MicroPython unix port.

The provocation: a tiny CNN pretrained with dynamic NITI on upright 8x8 digits, calibrated
on digits turned by 90 degrees, then trained on those with static NITI (mu=3). Training
accuracy climbs to 89 % in four epochs; in the fifth the weights start to outgrow the
static shifts, and from the sixth outputs saturate (1.2 % of them, then 2.7 % ...) and
accuracy falls to chance (tests/device/scripts/guard_run.py).
"""
import os
from array import array

import pytest

import picotrain as pt
from picotrain import memory
from picotrain.checkpoint import Checkpoint
from picotrain.data import Dataset
from picotrain.rng import XorShift32

from tinymodels import cnn

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "scripts", "guard_run.py")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """pre.pt8 (pretrained upright, calibrated turned) and turned.pt8d (200 turned digits)."""
    from host_tools import datasets as D
    out = tmp_path_factory.mktemp("guard")
    images, labels = D.load_digits()
    turned = D.rotate(images[300:500], 90)
    D.write_pt8d(str(out / "turned.pt8d"), turned, labels[300:500])
    m = pt.Model([pt.Conv2d(1, 6, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Conv2d(6, 12, 3), pt.ReLU(),
                  pt.Flatten(), pt.Linear(48, 10)], (1, 8, 8))
    r = XorShift32(1)
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(81) - 40 for _ in range(l.weight.size)])
        l.weight.exp = -7
    pt.NITI(m, mu=3).fit(D.to_samples(images[:300], labels[:300]), epochs=3, log=None)
    pt.calibrate(m, D.to_samples(turned, labels[300:500]))
    m.save(str(out / "pre.pt8"))
    return out


def run(folder, method=pt.StaticNITI, epochs=10, guard=None, checkpoint=None, options=None):
    """(model file bytes after training, training accuracy of the model, history, log lines)."""
    m = pt.load(str(folder / "pre.pt8"))
    with Dataset(str(folder / "turned.pt8d")) as data:
        lines = []
        t = method(m, **({"mu": 3} if options is None else options))
        hist = t.fit(data, epochs=epochs, guard=guard, checkpoint=checkpoint, log=lines.append)
        acc = pt.evaluate(m, data)
    p = str(folder / "out.pt8")
    m.save(p)
    with open(p, "rb") as f:
        return f.read(), acc, hist, lines


@pytest.mark.parametrize("guard", [pt.Guard(), pt.Guard(sat=0.01, drop=None), pt.Guard(sat=None, drop=0.2)],
                         ids=["default", "saturation", "accuracy"])
def test_collapse_rolls_back_to_the_last_good_epoch(folder, guard):
    good, good_acc, _, _ = run(folder, epochs=5)
    _, late_acc, _, _ = run(folder, epochs=8)
    assert late_acc < good_acc - 0.3  # unguarded, the run does collapse

    got, acc, hist, lines = run(folder, epochs=10, guard=guard)
    assert len(hist) == 6  # stopped at the collapse
    assert [r.get("collapse") for r in hist[:5]] == [None] * 5
    ev = hist[5]["collapse"]
    assert (ev["epoch"], ev["sample"], ev["back_to"]) == (6, 200, "the end of epoch 5")
    if guard.sat is not None:
        assert "saturated" in ev["why"] and ev["sat"] > 0.01
        assert all(r["sat"] <= 0.01 for r in hist[:5])
    else:
        assert "below the best epoch's 89.0%" in ev["why"] and ev["train_acc"] < 0.69
    assert guard.events == [ev]
    assert "COLLAPSE: " in lines[5] and lines[5].endswith("rolled back to the end of epoch 5, stopped")
    assert got == good and acc == good_acc  # the epoch-5 model, bit for bit


@pytest.mark.parametrize("method,options", [(pt.NITI, {"mu": 3}), (pt.PRIOT, {}), (pt.StaticNITI, {"mu": 3})])
def test_healthy_runs_raise_no_alarm_and_train_the_same_bits(folder, method, options):
    epochs = 4 if method is pt.StaticNITI else 6  # static NITI is healthy before it collapses
    plain = run(folder, method, epochs, options=options)
    guard = pt.Guard()
    guarded = run(folder, method, epochs, guard=guard, options=options)
    assert guard.events == [] and all("collapse" not in r for r in guarded[2])
    assert guarded[:2] == plain[:2]


def test_checks_within_epochs_and_going_on(folder):
    guard = pt.Guard(every=50, stop=False)
    _, _, hist, _ = run(folder, epochs=8, guard=guard)
    assert len(hist) == 8  # went on after the rollbacks
    ev = guard.events[0]
    assert (ev["epoch"], ev["sample"], ev["back_to"]) == (6, 100, "epoch 6, sample 50")
    assert hist[5]["collapse"] is ev
    assert all(e["epoch"] > 6 for e in guard.events[1:])


def test_with_a_checkpoint_the_newest_checkpoint_is_the_good_state(folder, tmp_path, monkeypatch):
    ram, ram_acc, _, _ = run(folder, epochs=10, guard=pt.Guard(every=50))
    monkeypatch.chdir(tmp_path)
    ck = Checkpoint("ck", every=50, log=None)
    guard = pt.Guard()
    got, acc, hist, _ = run(folder, epochs=10, guard=guard, checkpoint=ck)
    ev = hist[-1]["collapse"]
    # the save at sample 100 of epoch 6 was vetted, failed and never written
    assert (ev["epoch"], ev["sample"]) == (6, 100)
    assert ev["back_to"] == "the checkpoint ck.0.pt8 (5 epochs + 50 samples done)"
    assert got == ram and acc == ram_acc  # the same state as the RAM copy at the same point
    assert guard.nbytes() == 0
    newest = pt.load(str(tmp_path / "ck.0.pt8"))
    assert newest.meta["ckpt"]["sample"] == 50
    live = pt.load(str(folder / "out.pt8"))
    assert [bytes(l.weight.data) for l in live.param_layers()] == \
        [bytes(l.weight.data) for l in newest.param_layers()]


def test_memory_counts_the_copy(folder):
    m = pt.load(str(folder / "pre.pt8"))
    t = pt.StaticNITI(m, mu=3)
    before = t.nbytes()
    guard = pt.Guard()
    assert guard.copy_nbytes(t) == 6 * 9 + 12 * 6 * 9 + 48 * 10 == 1182  # the int8 weights
    t.fit([], epochs=1, guard=guard, log=None)
    assert guard.nbytes() == 1182 and t.nbytes() == before + 1182
    assert memory.trainer_plan(t)["rollback"] == 1182
    p = pt.PRIOT(pt.load(str(folder / "pre.pt8")), score_bits=16)
    assert guard.copy_nbytes(p) == 2 * 1182  # int16 scores


@pytest.mark.parametrize("make", [
    lambda m: pt.NITI(m, mu=3, batch=2), lambda m: pt.StaticNITI(m, mu=3),
    lambda m: pt.PRIOT(m, rate=3), lambda m: pt.PRIOTS(m, p=0.5, score_bits=16),
    lambda m: pt.TinTin(m, m=3), lambda m: pt.FQT(m, lr=5), lambda m: pt.PartialFQT(m, budget=0.5, lr=5)],
    ids=["NITI", "StaticNITI", "PRIOT", "PRIOTS", "TinTin", "FQT", "PartialFQT"])
def test_every_method_rolls_back_everything_it_trains(make, tmp_path):
    """What each method lists in _trained() is all that training changes: a
    rollback to the start gives the model file of the start, byte for byte."""
    m, data = cnn(3)
    pt.calibrate(m, data)
    t = make(m)
    guard = pt.Guard(sat=None, drop=0.01, stop=True)
    guard.start(t, None)
    start = str(tmp_path / "start.pt8")
    m.save(start)
    for x, y in guard.watch(t, data, 0):
        t.step(x, y)
    end = str(tmp_path / "end.pt8")
    m.save(end)
    guard._trip = {"why": "forced"}  # what check() records on a collapse
    assert guard.epoch_end(t)["back_to"] == "the start"
    back = str(tmp_path / "back.pt8")
    m.save(back)
    with open(start, "rb") as a, open(end, "rb") as b, open(back, "rb") as c:
        s, e, r = a.read(), b.read(), c.read()
    assert s != e and r == s


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="sat must be a fraction in"):
        pt.Guard(sat=1.5)
    with pytest.raises(ValueError, match="drop must be a fraction in"):
        pt.Guard(drop=0)
    with pytest.raises(ValueError, match="every must be an int >= 0"):
        pt.Guard(every=-1)
    with pytest.raises(ValueError, match="both None"):
        pt.Guard(sat=None, drop=None)


def _script(argv):
    with open(SCRIPT) as f:
        return "ARGV = %r\n" % (["x"] + argv) + f.read().replace("sys.argv", "ARGV")


def test_micropython_runs_the_same_rollback(micropython, folder, tmp_path):
    import shutil
    import subprocess
    import sys
    for name in ("pre.pt8", "turned.pt8d"):
        shutil.copy(str(folder / name), str(tmp_path / name))
    argv = ["0.01", "0.2", "0", "10"]
    mp = micropython(_script(argv), cwd=str(tmp_path))
    with open(tmp_path / "after.pt8", "rb") as f:
        mp_model = f.read()
    cp = subprocess.run([sys.executable, SCRIPT] + argv, cwd=str(tmp_path), capture_output=True, text=True,
                        check=True, env=dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", "..", "device"))).stdout
    assert mp == cp
    assert "rolled back to the end of epoch 5, stopped" in mp and "row 6 5800" in mp
    good, _, _, _ = run(folder, epochs=5)
    assert mp_model == good


def test_micropython_steps_between_checks_allocate_nothing(micropython):
    out = micropython("""
import micropython
from array import array
import picotrain as pt
from picotrain.rng import XorShift32
r = XorShift32(4)
m = pt.Model([pt.Conv2d(1, 3, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(48, 4)], (1, 8, 8))
for l in m.param_layers():
    l.weight.data = array('b', [r.below(81) - 40 for _ in range(l.weight.size)])
data = [(array('b', [r.below(128) for _ in range(64)]), r.below(4)) for _ in range(12)]
pt.calibrate(m, data)
t = pt.StaticNITI(m, mu=3)
g = pt.Guard(every=5)
g.start(t, None)
it = g.watch(t, data, 0)
x, y = next(it)  # starting the generator allocates
n = 0
for k in range(11):
    due = g._n + 1 >= g.every  # this step's count ends with a check, which may allocate
    if not due:
        micropython.heap_lock()
    t.step(x, y)
    x, y = next(it)
    if not due:
        micropython.heap_unlock()
        n += 1
print(n, g.events)
""")
    assert out.split() == ["9", "[]"]  # 11 steps, 2 of them before a check
