"""Training and evaluating on a board from the host: `picotrain train / eval --board / pull`.

    from host_tools.board import connect
    from host_tools.remote import remote_train
    with connect() as b:
        r = remote_train(b, "out/m.pt8", "out/train.pt8d", "PRIOT", {"rate": 4}, epochs=3,
                         test="out/test.pt8d", out="out/m-priot.pt8", mirror=True)

The board runs picotrain.link.train_job (one call in the raw REPL); the host
shows its progress lines as a bar (samples/s, running accuracy), answers its
requests for samples when the data is streamed, then pulls the trained model,
evaluates it on the host mirror and checks that the board and the host agree:
the same test-set count, and with mirror=True the same model bytes as
train_job run on the host with the same arguments.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

from host_tools.board import BoardError, local_digest

FRAME_HEADER, FRAME_RECORD, FRAME_END = b"\xa6", b"\xa5", b"\x5a"


class Disagreement(BoardError):
    """The board and the host mirror computed different results."""


# ----------------------------------------------------------------- samples --
class Feeder:
    """Answers a board's stream requests ("open", "want") from .pt8d files on
    the host. streams: {stream id: (path, shuffle seed or None)}."""

    def __init__(self, streams):
        from picotrain.data import HEADER_SIZE, parse_header
        self.streams = {}
        for sid, (path, seed) in streams.items():
            raw = Path(path).read_bytes()
            h = parse_header(raw[:HEADER_SIZE])
            self.streams[sid] = (raw, h, seed, {})
        self.sent = 0

    def header(self, sid):
        raw = self.streams[sid][0]
        return FRAME_HEADER + raw[:21]

    def record(self, sid, index):
        """The bytes of record `index`, as in the file (tests override this to damage one)."""
        raw, h, _, _ = self.streams[sid]
        at = 21 + index * h.record_size
        return raw[at:at + h.record_size]

    def order(self, sid, epoch):
        raw, h, seed, cache = self.streams[sid]
        if seed is None:
            return None
        if epoch not in cache:
            from picotrain.link import epoch_order
            cache.clear()
            cache[epoch] = epoch_order(h.count, seed, epoch)
        return cache[epoch]

    def frames(self, sid, epoch, start, k):
        raw, h, _, _ = self.streams[sid]
        order = self.order(sid, epoch)
        out = bytearray()
        for i in range(start, min(start + k, h.count)):
            out += FRAME_RECORD + self.record(sid, order[i] if order else i)
            self.sent += 1
        if start + k > h.count:
            out += FRAME_END
        return bytes(out)

    def on_event(self, w):
        if w[0] == "open":
            return self.header(int(w[1]))
        if w[0] == "want":
            return self.frames(*map(int, w[1:5]))
        return None


# ---------------------------------------------------------------- progress --
class ProgressBar:
    """A tqdm bar fed by the board's "start" and "p" lines (samples/s from the
    host's clock, running accuracy of the epoch from the board's counts)."""

    def __init__(self, enabled=True, file=None):
        self.enabled = enabled
        self.file = file or sys.stderr
        self.bar = None
        self.events = []   # (epoch, i, n, ok, ms) as received
        self.start = None

    def on_event(self, w):
        if w[0] == "start":
            method, nbytes, n, epochs, first, skip = w[1], int(w[2]), int(w[3]), int(w[4]), int(w[5]), int(w[6])
            self.start = dict(method=method, nbytes=nbytes, n=n, epochs=epochs, first=first, skip=skip)
            self.done0 = first * n + skip
            if self.enabled and epochs > first:
                from tqdm import tqdm
                self.bar = tqdm(total=epochs * n, initial=self.done0, unit="sample", file=self.file, disable=None,
                                desc=method, dynamic_ncols=True, leave=True)
        elif w[0] == "p":
            e, i, n, ok, ms = map(int, w[1:6])
            self.events.append((e, i, n, ok, ms))
            if self.bar is not None:
                done = e * n + i
                self.bar.update(done - self.bar.n)
                seen = i - (self.start["skip"] if e == self.start["first"] else 0)
                acc = 100.0 * ok / seen if seen else 0.0
                self.bar.set_postfix_str("epoch %d/%d  acc %.1f%%  %.1f ms/sample on the board"
                                         % (e + 1, self.start["epochs"], acc, ms / seen if seen else 0))

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line, file=self.file)
        else:
            print(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ------------------------------------------------------------------- files --
def sync(board, files, log=None):
    """Copy {board name: bytes} to the board unless identical there; returns the names copied."""
    if not files:
        return []
    info = board.info()
    kind = "sha256" if info.get("sha256") else "crc32"
    have = board.hashes(sorted(files))
    copied = []
    for name in sorted(files):
        if have.get(name) != local_digest(files[name], kind):
            board.put(name, files[name])
            copied.append(name)
    if log and copied:
        log("copied to the board: " + ", ".join(copied))
    return copied


def pull(board, name, out):
    """Copy a file from the board to the host path out; returns its bytes."""
    data = board.get(name)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(data)
    return data


def _run_job(board, args, feeder, bar, log):
    code = "import picotrain.link as L\nL.main(%r)\n" % (args,)
    result = {}

    def on_event(w):
        if w[0] == "result":
            result.update(json.loads(" ".join(w[1:])))
            return None
        if feeder is not None and w[0] in ("open", "want"):
            return feeder.on_event(w)
        if bar is not None:
            bar.on_event(w)
        return None

    echo = bar.write if bar is not None else log
    try:
        board.run(code, on_event=on_event, echo=echo)
    except KeyboardInterrupt:
        board.interrupt()
        raise
    finally:
        if bar is not None:
            bar.close()
    if not result:
        raise BoardError("the board finished without a result line")
    return result


def check_board_ready(board):
    out = board.exec("try:\n    import picotrain\n    print(picotrain.__version__)\nexcept ImportError as e:\n"
                     "    print('missing', e)\n")
    if out.strip().startswith("missing"):
        raise BoardError("picotrain is not on the board: run `picotrain deploy` first")
    return out.strip().splitlines()[-1]


# ---------------------------------------------------------------- training --
def remote_train(board, model, data, method, options=None, epochs=1, test=None, stream=False, shuffle=None,
                 checkpoint_every=0, checkpoint_epochs=1, resume=False, out=None, save=None, mirror=False,
                 bar=True, reset=True, progress_ms=500, log=print):
    """Train `model` (a .pt8 on the host) on the board with `method`, on `data`
    (a .pt8d on the host: copied to the board unless identical there, or
    streamed with stream=True), for `epochs`. Saves the trained model on the
    board as `save` (default <model stem>-<method>.pt8), pulls it to `out`,
    and, with `test`, compares the board's test count with the host mirror's
    on the pulled model. mirror=True also trains on the host and compares the
    model bytes. Returns the board's result dict, with "host_test_ok",
    "mirror_equal" where checked."""
    if reset:
        board.soft_reset()
    check_board_ready(board)
    model, data = Path(model), Path(data)
    test = Path(test) if test else None
    save = save or "%s-%s.pt8" % (model.stem, method)
    files = {model.name: model.read_bytes()}
    if not stream:
        files[data.name] = data.read_bytes()
        if test:
            files[test.name] = test.read_bytes()
    sync(board, files, log)
    ck = None
    if checkpoint_every or resume:
        ck = {"path": save[:-4] + "-ckpt" if save.endswith(".pt8") else save + "-ckpt",
              "every": checkpoint_every, "every_epochs": checkpoint_epochs}
    args = {"job": "train", "model": model.name, "data": "@stream" if stream else data.name,
            "test": None if not test else ("@stream" if stream else test.name), "method": method,
            "options": dict(options or {}), "epochs": epochs, "save": save, "shuffle": shuffle,
            "checkpoint": ck, "resume": resume, "progress_ms": progress_ms}
    feeder = None
    if stream:
        streams = {0: (data, shuffle)}
        if test:
            streams[1] = (test, None)
        feeder = Feeder(streams)
    pbar = ProgressBar(enabled=bar)
    result = _run_job(board, args, feeder, pbar, log)
    result["progress"] = pbar.events
    if feeder is not None:
        result["frames_sent"] = feeder.sent
    # ---- bring it back and check it on the host
    out = Path(out) if out else Path("out") / save
    got = pull(board, save, out)
    import binascii
    body = max(0, len(got) - 4)
    if (len(got), binascii.crc32(got[:body]), got[body:].hex()) != (result["size"], result["crc"], result["tail"]):
        raise BoardError("the pulled %s differs from what the board saved" % save)
    result["out"] = str(out)
    import picotrain as pt
    from picotrain.data import Dataset
    from picotrain.link import count_correct, train_job
    if test:
        with Dataset(str(test)) as ts:
            ok, n = count_correct(pt.load(str(out)), ts)
        result["host_test_ok"], result["host_test_n"] = ok, n
        if (ok, n) != (result["test_ok"], result["test_n"]):
            raise Disagreement("the board counts %d/%d right on %s, the host mirror %d/%d on the pulled model"
                               % (result["test_ok"], result["test_n"], test.name, ok, n))
    if mirror:
        with tempfile.TemporaryDirectory() as tmp:
            ref = os.path.join(tmp, save)
            train_job(str(model), str(data), method, dict(options or {}), epochs, test=str(test) if test else None,
                      save=ref, shuffle=shuffle, progress_ms=progress_ms, out=None, log=None)
            result["mirror_equal"] = Path(ref).read_bytes() == got
        if not result["mirror_equal"]:
            raise Disagreement("the model trained on the board differs from the host mirror's (same "
                               "method, options, data and seed)")
    if log:
        line = "trained %s on the board: %s" % (method, save)
        if result.get("train_acc"):
            line += ", last epoch's training accuracy %.2f%%" % (result["train_acc"][-1] / 100)
        if test:
            line += "; test accuracy %.2f%% on the board = %.2f%% on the host mirror" % (
                100 * result["test_ok"] / max(1, result["test_n"]), 100 * result["host_test_ok"] / max(1, result["host_test_n"]))
        if mirror:
            line += "; model bytes equal the mirror's"
        log(line)
        log("pulled to %s" % out)
    return result


def remote_eval(board, model, data, stream=False, reset=False, log=print):
    """Accuracy of `model` (host .pt8) on `data` (host .pt8d) computed on the
    board, checked against the host mirror. Returns (right, total)."""
    if reset:
        board.soft_reset()
    check_board_ready(board)
    model, data = Path(model), Path(data)
    files = {model.name: model.read_bytes()}
    if not stream:
        files[data.name] = data.read_bytes()
    sync(board, files, log)
    args = {"job": "eval", "model": model.name, "data": "@stream" if stream else data.name}
    feeder = Feeder({1: (data, None)}) if stream else None
    result = _run_job(board, args, feeder, None, log)
    import picotrain as pt
    from picotrain.data import Dataset
    from picotrain.link import count_correct
    with Dataset(str(data)) as ds:
        host = count_correct(pt.load(str(model)), ds)
    board_counts = (result["test_ok"], result["test_n"])
    if host != board_counts:
        raise Disagreement("the board counts %d/%d right, the host mirror %d/%d" % (board_counts + host))
    return board_counts
