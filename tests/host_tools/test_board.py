"""On the (virtual) board, end to end: deploy, train, pull, evaluate; failures; power cuts.

The virtual board is the MicroPython unix port on a folder, behind a pty and a socket
(host_tools/board/virtual.py); every test here drives it through host_tools.board.Board,
i.e. mpremote's SerialTransport in the raw REPL, as a real Pico over USB.
"""
import importlib.util
import os
import shutil
import socket
import threading
from array import array
from pathlib import Path

import pytest

import picotrain as pt
from host_tools import cli
from host_tools.board import BoardError, RemoteError, VirtualDevice, connect
from host_tools.deploy import BOARD_PKG, DeployError, deploy
from host_tools.remote import Disagreement, Feeder, ProgressBar, remote_eval, remote_train
from picotrain.data import Dataset
from picotrain.link import count_correct, train_job

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- fixtures --
@pytest.fixture(scope="session")
def native_x64(tmp_path_factory):
    """natmod/kernels built for x64 into a private folder (the tests never race another
    build of natmod/build/); None without gcc or when it does not build (boards then get
    no native module and use the pure-Python kernels)."""
    if shutil.which("gcc") is None:
        return None
    spec = importlib.util.spec_from_file_location("natmod_build_for_board", ROOT / "natmod" / "build.py")
    nb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nb)
    out = tmp_path_factory.mktemp("native")
    try:
        path, _ = nb.build_module(ROOT / "natmod" / "kernels", "x64", nb.micropython_dir(), out)
    except Exception as e:  # the kernels' own tests report a broken build; here, go without
        import warnings
        warnings.warn("native kernels did not build (%s): board tests use the pure-Python kernels" % e)
        return None
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Host files: base.pt8 (a calibrated tiny CNN for 8x8 digits with PRNG weights),
    train.pt8d and test.pt8d (64 digits each, rotated by 30 degrees)."""
    from host_tools import datasets
    from picotrain.rng import XorShift32
    d = tmp_path_factory.mktemp("assets")
    tr = datasets.load_split("digits", "transfer-train", angle=30, limit=64)
    te = datasets.load_split("digits", "transfer-test", angle=30, limit=64)
    datasets.write_pt8d(str(d / "train.pt8d"), *tr)
    datasets.write_pt8d(str(d / "test.pt8d"), *te)
    m = pt.Model([pt.Conv2d(1, 8, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Conv2d(8, 16, 3, pad=1), pt.ReLU(),
                  pt.MaxPool2d(2), pt.Flatten(), pt.Linear(64, 32), pt.ReLU(), pt.Linear(32, 10)], (1, 8, 8))
    r = XorShift32(11)
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(101) - 50 for _ in range(l.weight.size)])
        l.weight.exp = -7
    pt.calibrate(m, datasets.to_samples(*tr))
    m.meta = {"arch": "test_cnn_digits"}
    m.save(str(d / "base.pt8"))
    return d


@pytest.fixture(scope="module")
def board(tmp_path_factory, native_x64):
    """A virtual board with picotrain deployed, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("vboard")
    b = connect("virtual:%s" % folder)
    deploy(b, native=native_x64 is not None, native_file=native_x64, log=None)
    yield b
    b.close()


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


# ------------------------------------------------------------------ deploy --
def test_deploy_copies_then_copies_nothing(tmp_path, native_x64, assets):
    with connect("virtual:%s" % (tmp_path / "b")) as b:
        r = deploy(b, model=assets / "base.pt8", datasets=[assets / "train.pt8d"], native=native_x64 is not None,
                   native_file=native_x64, log=None)
        names = [p for p, _ in r["copied"]]
        assert "%s/train.mpy" % BOARD_PKG in names and "%s/data.mpy" % BOARD_PKG in names
        assert "base.pt8" in names and "train.pt8d" in names and not r["unchanged"]
        assert "%s/kernels_np.mpy" % BOARD_PKG not in names  # numpy: host only
        if native_x64 is not None:
            assert r["backend"].startswith("native") and "%s/_native.mpy" % BOARD_PKG in names
        assert (tmp_path / "b" / "base.pt8").read_bytes() == (assets / "base.pt8").read_bytes()
        # idempotent: the second run copies nothing (hashes computed on the board)
        r2 = deploy(b, model=assets / "base.pt8", datasets=[assets / "train.pt8d"], native=native_x64 is not None,
                    native_file=native_x64, log=None)
        assert r2["copied"] == [] and sorted(r2["unchanged"]) == sorted(names) and r2["removed"] == []
        # a stale file in the package folder goes; a changed file is copied again
        b.put(BOARD_PKG + "/old.py", b"raise ImportError\n")
        b.put(BOARD_PKG + "/rng.mpy", b"M\x06\x00\x1f")
        r3 = deploy(b, native=native_x64 is not None, native_file=native_x64, log=None)
        assert r3["removed"] == [BOARD_PKG + "/old.py"] and r3["copied"] == [(BOARD_PKG + "/rng.mpy", r["copied"][
            names.index(BOARD_PKG + "/rng.mpy")][1])]


def test_deploy_without_sha256_compares_size_and_crc(tmp_path, assets):
    """A board without hashlib.sha256 is compared by size + CRC-32, and two model files
    of one size are still told apart (a model file ends with its own CRC-32)."""
    folder = tmp_path / "b"
    folder.mkdir()
    # hashlib is an extensible built-in: a file of that name on the board hides it
    (folder / "hashlib.py").write_text("raise ImportError('no hashlib on this board')\n")
    a = pt.load(str(assets / "base.pt8"))
    a.layers[0].weight.data[0] ^= 1
    a.save(str(tmp_path / "base.pt8"))  # same size, different bytes, same plain CRC-32
    import binascii
    assert binascii.crc32((tmp_path / "base.pt8").read_bytes()) == binascii.crc32((assets / "base.pt8").read_bytes())
    with connect("virtual:%s" % folder) as b:
        assert b.info()["sha256"] is False
        r = deploy(b, model=assets / "base.pt8", native=False, log=None)
        assert r["backend"].startswith("python") and b.hashes(["base.pt8"])["base.pt8"].startswith("crc32:")
        assert deploy(b, model=assets / "base.pt8", native=False, log=None)["copied"] == []
        r2 = deploy(b, model=tmp_path / "base.pt8", native=False, log=None)
        assert [p for p, _ in r2["copied"]] == ["base.pt8"]


def test_no_board_answers(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there
    with pytest.raises(BoardError, match=r"cannot open socket://127.0.0.1:%d" % port):
        connect("socket://127.0.0.1:%d" % port)
    # a peer that accepts the connection and says nothing (a board running something else)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    conns = []
    threading.Thread(target=lambda: conns.append(srv.accept()), daemon=True).start()
    url = "socket://127.0.0.1:%d" % srv.getsockname()[1]
    with pytest.raises(BoardError, match=r"no MicroPython board answered on %s within 1 s \(no raw REPL "
                                         r"prompt\): is MicroPython running" % url):
        connect(url, timeout=1)
    srv.close()
    # through the command line: one line on stderr, exit status 2, nothing written
    rc = cli.main(["deploy", "--port", "socket://127.0.0.1:%d" % port])
    assert rc == 2


def test_deploy_refuses_old_micropython_before_writing(tmp_path):
    with connect("virtual:%s" % (tmp_path / "b")) as b:
        info = b.info()
        info.update(version=(1, 22, 2), mpy=2822 - 1 * 256, mpy_version=(6, 2))
        with pytest.raises(DeployError, match=r"the board runs MicroPython 1\.22\.2 \(mpy 6\.2, x64\); picotrain "
                                              r"needs MicroPython >= 1\.24 \(mpy 6\.3"):
            deploy(b, log=None)
        info.update(version=(1, 24, 0), mpy_version=(6, 4))
        with pytest.raises(DeployError, match=r"newer than this picotrain's mpy-cross and native module"):
            deploy(b, log=None)
        info.update(mpy_version=(6, 3), arch="xtensawin")
        with pytest.raises(DeployError, match=r"no native kernels for arch xtensawin"):
            deploy(b, log=None)
        info.update(name="circuitpython")
        with pytest.raises(DeployError, match=r"runs circuitpython, not MicroPython"):
            deploy(b, log=None)
    assert files_under(tmp_path / "b") == []


def test_deploy_refuses_a_full_filesystem_before_writing(tmp_path, assets, native_x64):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "user_data.bin").write_bytes(os.urandom(20000))
    with connect("virtual:%s" % folder, flash=96 * 1024) as b:
        assert b.info()["statvfs"][4] == 24 - 2 - 5  # 4 KB blocks: 2 reserved, 5 used by the user's file
        with pytest.raises(DeployError, match=r"not enough room on the board: 69632 bytes free, deploying needs "
                                              r"\d+ \(\d+ files, 4096-byte blocks"):
            deploy(b, datasets=[assets / "train.pt8d"], native=native_x64 is not None, native_file=native_x64,
                   log=None)
    assert files_under(folder) == ["user_data.bin"]


def test_deploy_fits_a_filesystem_that_just_holds_it(tmp_path, native_x64):
    """The same check lets through a deploy that fits (blocks counted as statvfs counts them)."""
    with connect("virtual:%s" % (tmp_path / "b"), flash=200 * 1024) as b:
        deploy(b, native=native_x64 is not None, native_file=native_x64, log=None)
        assert b.info(refresh=True)["statvfs"][4] >= 0


# ---------------------------------------------------------------- training --
def test_train_priot_on_the_board_equals_the_mirror(board, assets, tmp_path):
    """PRIOT for 3 epochs on the virtual board: the pulled model has the host mirror's bytes
    (same method, options, seed), and the board's test count is the host's on that model."""
    r = remote_train(board, assets / "base.pt8", assets / "train.pt8d", "PRIOT", {"rate": 4, "seed": 3},
                     epochs=3, test=assets / "test.pt8d", out=tmp_path / "t.pt8", mirror=True, bar=False,
                     progress_ms=0, log=None)
    assert r["mirror_equal"] is True
    assert (r["test_ok"], r["test_n"]) == (r["host_test_ok"], r["host_test_n"])
    assert r["test_n"] == 64 and len(r["train_acc"]) == 3
    # the pulled file is what the board saved, and what the host mirror computes
    ref = tmp_path / "ref.pt8"
    res = train_job(str(assets / "base.pt8"), str(assets / "train.pt8d"), "PRIOT", {"rate": 4, "seed": 3}, 3,
                    test=str(assets / "test.pt8d"), save=str(ref), out=None, log=None)
    assert ref.read_bytes() == (tmp_path / "t.pt8").read_bytes()
    assert res["train_acc"] == r["train_acc"] and res["test_ok"] == r["test_ok"]
    # a progress line after every sample (progress_ms=0), in order, with a running count
    ev = r["progress"]
    assert len(ev) == 3 * 64
    assert [(e, i) for e, i, *_ in ev if i == 64][:3] == [(0, 64), (1, 64), (2, 64)]
    assert all(0 <= ok <= i for _, i, _, ok, _ in ev)


@pytest.mark.parametrize("method,opts,shuffle", [
    ("PRIOTS", {"p": 0.5, "select": "weight", "batch": 4, "rate": 4}, 5),
    ("StaticNITI", {"mu": 3, "batch": 2}, None),
    ("NITI", {"mu": 3}, 9),
])
def test_stream_training_equals_the_mirror(board, assets, tmp_path, method, opts, shuffle):
    """Samples streamed from the host (the board reads framed records from stdin) give
    the bits of training on the file, shuffled or not; nothing is copied but the model."""
    before = set(board.listdir(""))
    r = remote_train(board, assets / "base.pt8", assets / "train.pt8d", method, opts, epochs=2,
                     test=assets / "test.pt8d", stream=True, shuffle=shuffle, out=tmp_path / "s.pt8",
                     mirror=True, bar=False, log=None)
    assert r["mirror_equal"] and r["skipped"] == r["lost"] == r["junk"] == 0
    assert r["frames_sent"] == 2 * 64 + 64  # two epochs, one test pass
    assert set(board.listdir("")) - before <= {"base.pt8", "base-%s.pt8" % method}


class Mangling(Feeder):
    """Damages record 5 of epoch 0 and puts stray bytes before record 9."""

    def frames(self, sid, epoch, start, k):
        out = Feeder.frames(self, sid, epoch, start, k)
        if sid == 0 and epoch == 0 and start <= 9 < start + k:
            rs = self.streams[0][1].record_size + 1
            out = out[:(9 - start) * rs] + b"\x00\x13\x37" + out[(9 - start) * rs:]
        return out

    def record(self, sid, index):
        rec = Feeder.record(self, sid, index)
        if sid == 0 and index == 5 and not getattr(self, "done", False):
            self.done = True
            rec = rec[:10] + bytes([rec[10] ^ 0x40]) + rec[11:]
        return rec


class SkipFifthOnce:
    """The host mirror's view of that stream: record 5 missing from the first epoch."""

    def __init__(self, path):
        self.ds = Dataset(path)

    def __len__(self):
        return len(self.ds)

    def iterate(self, epoch, start=0):
        order = [i for i in range(start, len(self.ds)) if not (epoch == 0 and i == 5)]
        return self.ds.samples(order)


def test_a_damaged_record_is_skipped_and_stray_bytes_resynchronised(board, assets, tmp_path, monkeypatch):
    import host_tools.remote as R
    monkeypatch.setattr(R, "Feeder", Mangling)
    r = remote_train(board, assets / "base.pt8", assets / "train.pt8d", "PRIOT", {"rate": 4}, epochs=2,
                     stream=True, out=tmp_path / "m.pt8", bar=False, log=None)
    assert (r["skipped"], r["junk"], r["lost"]) == (1, 3, 0)
    ref = tmp_path / "ref.pt8"
    train_job(str(assets / "base.pt8"), SkipFifthOnce(str(assets / "train.pt8d")), "PRIOT", {"rate": 4}, 2,
              save=str(ref), out=None, log=None)
    assert ref.read_bytes() == (tmp_path / "m.pt8").read_bytes()


def test_remote_eval_and_disagreement(board, assets, monkeypatch):
    ok, n = remote_eval(board, assets / "base.pt8", assets / "test.pt8d", log=None)
    with Dataset(str(assets / "test.pt8d")) as ds:
        assert (ok, n) == count_correct(pt.load(str(assets / "base.pt8")), ds)
    assert remote_eval(board, assets / "base.pt8", assets / "test.pt8d", stream=True, log=None) == (ok, n)
    # a host that computed something else is told so
    import picotrain.link as L
    monkeypatch.setattr(L, "count_correct", lambda m, d: (ok + 1, n))
    with pytest.raises(Disagreement, match=r"the board counts %d/%d right, the host mirror %d/%d" % (ok, n, ok + 1, n)):
        remote_eval(board, assets / "base.pt8", assets / "test.pt8d", log=None)


def test_training_needs_a_deployed_board_and_enough_heap(tmp_path, assets, native_x64):
    with connect("virtual:%s" % (tmp_path / "empty")) as b:
        with pytest.raises(BoardError, match=r"picotrain is not on the board: run `picotrain deploy` first"):
            remote_train(b, assets / "base.pt8", assets / "train.pt8d", "PRIOT", log=None, bar=False)
    # a board with a small heap refuses the trainer up front, naming bytes needed and free
    wide = pt.Model([pt.Flatten(), pt.Linear(64, 1024), pt.ReLU(), pt.Linear(1024, 10)], (1, 8, 8))
    # 75 KB of weights: 300 KB of NITI gradients in mini-batches (at batch 1 a Linear layer
    # needs none, update_outer_s8)
    wide.save(str(tmp_path / "wide.pt8"))
    need = pt.memory_plan(wide, "NITI", batch=2)
    # 288 KB: the model (64 KB of weights in one block) loads, its 300 KB of gradients do not
    with connect("virtual:%s" % (tmp_path / "small"), heap=288 * 1024) as b:
        deploy(b, native=native_x64 is not None, native_file=native_x64, log=None)
        with pytest.raises(RemoteError, match=r"MemoryError: NITI needs %d bytes of training buffers "
                                              r"\(\d+ still to allocate, and about \d+ for the objects around "
                                              r"them\) but only \d+ bytes are free" % need):
            remote_train(b, tmp_path / "wide.pt8", assets / "train.pt8d", "NITI", options={"batch": 2},
                         log=None, bar=False)


def test_power_cut_mid_training_then_resume(tmp_path, assets, native_x64, monkeypatch):
    """Checkpoints every 16 samples (streamed data); the board loses power in epoch 2; after it
    boots, `train --resume` continues from the last good checkpoint and ends with the mirror's bits."""
    vd = VirtualDevice(tmp_path / "b")
    try:
        b = connect(vd)
        deploy(b, native=native_x64 is not None, native_file=native_x64, log=None)
        seen = []

        def on_event(self, w):
            ProgressBar.on_event.__wrapped__(self, w)
            if w[0] == "p" and int(w[1]) == 1 and int(w[2]) >= 40 and not seen:
                seen.append(vd.boots)
                vd.power_cycle()

        on_event.__wrapped__ = ProgressBar.on_event
        monkeypatch.setattr(ProgressBar, "on_event", on_event)
        # streamed, so the board cannot run ahead of the host by more than a window of samples
        kw = dict(method="PRIOTS", options={"p": 0.5, "rate": 4, "batch": 2}, epochs=3, stream=True,
                  test=assets / "test.pt8d", checkpoint_every=16, bar=False, progress_ms=0, log=None)
        with pytest.raises(BoardError, match="the link to the board on socket://127.0.0.1:\\d+ was lost"):
            remote_train(b, assets / "base.pt8", assets / "train.pt8d", out=tmp_path / "x.pt8", **kw)
        monkeypatch.undo()
        from host_tools.board.virtual import wait_for
        assert seen and wait_for(lambda: vd.boots == seen[0] + 1)
        on_board = files_under(tmp_path / "b")
        assert "base-PRIOTS-ckpt.0.pt8" in on_board and "base-PRIOTS-ckpt.1.pt8" in on_board
        b = connect(vd)  # the board is back (a new USB connection)
        r = remote_train(b, assets / "base.pt8", assets / "train.pt8d", resume=True, out=tmp_path / "r.pt8",
                         mirror=True, **kw)
        assert r["mirror_equal"] and r["first"] == 1
        e, i = r["progress"][0][:2]
        assert e == 1 and (i - 1) % 16 == 0 and i > 1  # resumed at a checkpoint within epoch 2
        b.close()
    finally:
        vd.close()


# -------------------------------------------------------------- commands --
def test_the_commands(tmp_path, assets, native_x64, capsys, monkeypatch):
    """picotrain board / deploy / train / pull / eval --board, on a virtual board folder."""
    if native_x64 is not None:  # deploy's own build would write natmod/build/: use the test's module
        import host_tools.deploy as D
        monkeypatch.setattr(D, "native_path", lambda arch: native_x64)
        monkeypatch.setattr(D, "NATMOD", tmp_path)  # no sources there: never rebuilt
    port = ["--port", "virtual:%s" % (tmp_path / "b")]
    assert cli.main(["deploy", *port, "--model", str(assets / "base.pt8"), *([] if native_x64 else ["--no-native"])]) is None
    out = capsys.readouterr().out
    assert "copied 16 file(s)" in out or "copied" in out
    assert cli.main(["board", *port]) is None
    out = capsys.readouterr().out
    assert "MicroPython 1." in out and "mpy 6.3, arch x64" in out and "picotrain: 0.1.0" in out
    assert cli.main(["train", *port, str(assets / "base.pt8"), str(assets / "train.pt8d"), "--method", "PRIOT",
                     "--set", "rate=4", "--epochs", "2", "--test", str(assets / "test.pt8d"), "--mirror",
                     "--out", str(tmp_path / "o.pt8"), "--no-bar"]) is None
    out = capsys.readouterr().out
    assert "model bytes equal the mirror's" in out and "on the board = " in out
    assert cli.main(["pull", *port, "base-PRIOT.pt8", "--out", str(tmp_path / "p.pt8")]) is None
    assert (tmp_path / "p.pt8").read_bytes() == (tmp_path / "o.pt8").read_bytes()
    assert cli.main(["eval", str(tmp_path / "p.pt8"), str(assets / "test.pt8d"), "--board", "--stream", *port]) is None
    assert "the same as the host mirror" in capsys.readouterr().out
    assert cli.main(["pull", *port, "nothing.pt8"]) == 2
    assert "nothing.pt8: no such file on the board" in capsys.readouterr().err


def test_the_example_runs_on_the_virtual_board(tmp_path, assets, native_x64, monkeypatch, capsys):
    """examples/remote_train.py (with a given model: no PyTorch): deploy, PRIOT on the board,
    pull, host check; the lead's demo can call its run(board, ...)."""
    import host_tools.deploy as D
    if native_x64 is None:
        pytest.skip("the native kernels do not build here: the example deploys them")
    monkeypatch.setattr(D, "native_path", lambda arch: native_x64)
    monkeypatch.setattr(D, "NATMOD", tmp_path)  # no sources there: never rebuilt
    spec = importlib.util.spec_from_file_location("remote_train_example", ROOT / "examples" / "remote_train.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    argv = ["--port", "virtual:%s" % (tmp_path / "b"), "--model", str(assets / "base.pt8"), "--epochs", "1",
            "--out", str(tmp_path / "out"), "--mirror"]
    assert ex.main(argv) == 0
    out = capsys.readouterr().out
    assert "model bytes equal the mirror's" in out
    assert "on rotated digits, trained on the board (PRIOT" in out
    assert (tmp_path / "out" / "trained.pt8").exists()


def test_stream_dataset_on_any_reader(assets):
    """StreamDataset reads frames from any readinto() stream (CPython here): a host that goes
    silent mid-window costs the rest of that window (`lost`), without hanging."""
    import io
    from picotrain.link import StreamDataset
    f = Feeder({0: (assets / "train.pt8d", None)})
    asked = []
    stream = io.BytesIO(f.header(0) + f.frames(0, 0, 0, 30) + f.frames(0, 0, 30, 5))  # then silence

    def out(*words):
        asked.append(words)

    ds = StreamDataset(0, reader=stream, out=out)
    assert len(ds) == 64 and ds.shape == (1, 8, 8) and ds.window == 30
    got = [label for _, label in ds.iterate(0)]
    with Dataset(str(assets / "train.pt8d")) as ref:
        want = [label for _, label in ref.samples(range(35))]
    assert got == want and ds.lost == 25 + 4 and ds.skipped == 0
    assert asked[0] == ("open", 0) and asked[1:4] == [("want", 0, 0, 0, 30), ("want", 0, 0, 30, 30),
                                                       ("want", 0, 0, 60, 4)]
