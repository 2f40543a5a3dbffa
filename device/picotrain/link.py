"""The serial link: training on a board driven by the host, samples streamed from it.

The host tools (`picotrain train/eval`, host_tools/remote.py) run one call of
`main(args)` on the board in the raw REPL; the same `train_job` runs on
CPython as the host mirror, so both sides do exactly the same thing.

Lines the board prints for the host (space-separated, after "@pt "):

    start METHOD NBYTES N EPOCHS FIRST SKIP   the run: trainer's buffers, samples per epoch,
                                              total epochs, first epoch and samples already done
    p E I N OK MS                             progress: epoch E (0-based), I of N samples done,
                                              OK of them right, MS ms since the epoch began
    open S                                    stream S needs its header
    want S E I K                              stream S: send records I..I+K-1 of epoch E
    result JSON                               the end: history, counts, the saved file's CRC

Any other line (fit's one line per epoch, warnings) is for the user.

A stream (StreamDataset) brings samples that do not fit the board's flash or
RAM from the host, a window at a time, only when the board asks. Frames the
host sends: 0xA6 + the 21-byte .pt8d header (answering "open"), then per
requested record 0xA5 + the record exactly as in a .pt8d file (label, CRC-16,
sample). 0x5A ends a window early (the host has no more). Each record is
checked by data.decode_record, as a file's are: a bad CRC or label is skipped
and counted (`skipped`). A lost or extra byte is found by the frame byte and
costs the rest of that window; a silent host times out, and one silent for a
whole window ends the epoch (the rest is counted in `lost`). While a window is
read, Ctrl-C is data (micropython.kbd_intr(-1)); between windows it works.
"""
import json
import sys

from . import data as D
from .rng import XorShift32
from .train import _ms

FRAME_HEADER, FRAME_RECORD, FRAME_END = 0xA6, 0xA5, 0x5A
WINDOW_BYTES = 2048  # a window of records fits any link's buffers (USB CDC, UART, pty)


def emit(*words):
    print("@pt", *words)


# --------------------------------------------------------------- ordering --
def epoch_order(n, seed, epoch):
    """The sample order of an epoch: XorShift32(seed) shuffles 0..n-1 once per
    epoch, epochs in sequence (epoch 0 is the first shuffle)."""
    rng = XorShift32(seed)
    order = list(range(n))
    for _ in range(epoch + 1):
        rng.shuffle(order)
    return order


class Shuffled:
    """A dataset read in a new order each epoch (epoch_order), from any
    position: iterate(epoch, start). Keeps one order list; going to the next
    epoch costs one shuffle, jumping elsewhere recomputes from the seed."""

    def __init__(self, ds, seed):
        self.ds, self.seed = ds, seed
        self._epoch = -1
        self._rng = self._order = None
        self._next = 0

    def __len__(self):
        return len(self.ds)

    def order(self, epoch):
        if epoch != self._epoch:
            if self._order is None or epoch != self._epoch + 1:
                self._rng, self._order, self._epoch = XorShift32(self.seed), list(range(len(self.ds))), -1
            while self._epoch < epoch:
                self._rng.shuffle(self._order)
                self._epoch += 1
        return self._order

    def iterate(self, epoch, start=0):
        o = self.order(epoch)
        return self.ds.samples(o[start:] if start else o)

    def __iter__(self):
        self._next += 1
        return self.iterate(self._next - 1)


def _from(ds, epoch, start):
    """Samples of ds for epoch from position start, by the best means ds has."""
    if hasattr(ds, "iterate"):
        return ds.iterate(epoch, start)
    if start and hasattr(ds, "samples") and hasattr(ds, "__len__"):
        return ds.samples(range(start, len(ds)))
    it = iter(ds)
    for _ in range(start):
        next(it)
    return it


class Progress:
    """Wraps the training data: after each step, counts the samples and the
    trainer's correct answers and emits a "p" line every `every_ms` ms and at
    the end of each epoch. iterate(epoch, start) as Shuffled, for checkpoints."""

    def __init__(self, ds, trainer, every_ms=500, out=emit):
        self.ds, self.t, self.every_ms, self.out = ds, trainer, every_ms, out
        self._next = 0
        self.n = len(ds)

    def __len__(self):
        return self.n

    def __iter__(self):
        self._next += 1
        return self.iterate(self._next - 1)

    def iterate(self, epoch, start=0):
        self._next = epoch + 1
        res = self.t.result
        t0 = last = _ms()
        i, ok, said = start, 0, -1
        for item in _from(self.ds, epoch, start):
            yield item
            i += 1
            ok += res[1]
            if self.out is None:
                continue
            now = _ms()
            if now - last >= self.every_ms:
                self.out("p", epoch, i, self.n, ok, now - t0)
                last, said = now, i
        if self.out is not None and said != i:
            self.out("p", epoch, i, self.n, ok, _ms() - t0)


# ---------------------------------------------------------------- streams --
class StreamDataset(D._Samples):
    """Samples from the host over the link (see the module's doc): the same
    interface as data.Dataset (len, header fields, skipped, iteration) plus
    iterate(epoch, start). reader: where the frames arrive, anything with
    readinto (default sys.stdin's buffer; a machine.UART works too); out: how
    the requests are sent (default: printed); timeout_ms: how long a window may
    stall before it is given up."""

    def __init__(self, sid=0, reader=None, timeout_ms=10000, out=emit):
        self.sid, self.out, self.timeout_ms = sid, out, timeout_ms
        self._r = reader if reader is not None else getattr(sys.stdin, "buffer", sys.stdin)
        self._poll = None
        if sys.implementation.name == "micropython":
            # stdin, or another stream the host's bytes arrive on (a machine.UART, a socket)
            import select
            self._poll = select.poll()
            self._poll.register(sys.stdin if reader is None else reader, select.POLLIN)
        try:
            from micropython import kbd_intr
            self._kbd_intr = kbd_intr if reader is None else None
        except ImportError:
            self._kbd_intr = None
        self._one = bytearray(1)
        self.skipped = 0
        self.lost = 0    # records given up (the host went silent mid-window)
        self.junk = 0    # stray bytes met between frames
        self._next = 0
        self.out("open", sid)
        hb = bytearray(1 + D.HEADER_SIZE)
        if not self._read(hb) or hb[0] != FRAME_HEADER:
            raise ValueError("stream %d: no header from the host" % sid)
        h = D.parse_header(hb[1:])
        self.header = h
        self.kind, self.shape, self.exp, self.n_classes = h.kind, h.shape, h.exp, h.n_classes
        self.sample_size = h.sample_size
        self._rec = bytearray(h.record_size)
        self.window = max(1, WINDOW_BYTES // (h.record_size + 1))

    def __len__(self):
        return self.header.count

    def _read(self, buf):
        """Fill buf from the host; False when it stalls past the timeout."""
        n = len(buf)
        if not self._ready():
            return False
        got = self._r.readinto(buf) or 0  # usually all of it at once (the rp2 port waits for it)
        if got == n:
            return True
        mv = memoryview(buf)
        while got < n:
            if not self._ready():
                return False
            k = self._r.readinto(mv[got:])
            if not k:
                if self._poll is None:
                    return False  # end of a finite stream (tests, CPython)
                continue
            got += k
        return True

    def _ready(self):
        # ipoll: no list allocated per call, unlike poll
        if self._poll is None:
            return True
        for _ in self._poll.ipoll(self.timeout_ms):
            return True
        return False

    def _kbd(self, c):
        if self._kbd_intr is not None:
            self._kbd_intr(c)

    def _frame(self, x):
        """Read one frame: its label (>= 0), -1 corrupt record, -2 end of the
        window, -3 the host went silent."""
        self._kbd(-1)
        try:
            while True:
                if not self._read(self._one):
                    return -3
                b = self._one[0]
                if b == FRAME_END:
                    return -2
                if b == FRAME_RECORD:
                    break
                self.junk += 1  # a stray byte between frames: look for the next frame
            if not self._read(self._rec):
                return -3
            return D.decode_record(self._rec, x, self.header)
        finally:
            self._kbd(3)

    def iterate(self, epoch, start=0):
        n = self.header.count
        x = self.new_buffer()
        item = [x, 0]
        i = start
        while i < n:
            k = min(self.window, n - i)
            self.out("want", self.sid, epoch, i, k)
            got = 0
            while got < k:
                label = self._frame(x)
                if label == -2:
                    return  # the host has no more samples this epoch
                if label == -3:
                    self.lost += k - got
                    if got == 0:
                        # not a byte for a whole window: the host is gone, and asking on
                        # would wait out a timeout per window for the rest of the epoch
                        self.lost += n - i - k
                        return
                    break
                got += 1
                if label < 0:
                    self.skipped += 1
                    continue
                item[1] = label
                yield item
            i += k

    def __iter__(self):
        self._next += 1
        return self.iterate(self._next - 1)

    def close(self):
        pass


# -------------------------------------------------------------------- jobs --
def count_correct(model, data):
    """(right, total) of model.predict over data."""
    ok = n = 0
    for x, label in data:
        ok += model.predict(x) == label
        n += 1
    return ok, n


def _open(spec, sid, out):
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec == "@stream":
            return StreamDataset(sid, out=out)
        return D.Dataset(spec)
    return spec


def train_job(model, data, method, options=None, epochs=1, test=None, save=None, shuffle=None,
              checkpoint=None, resume=False, progress_ms=500, out=emit, log=print):
    """Train and save: the board's side of `picotrain train`, and the host mirror.

    model: a model file path or a Model; data/test: a .pt8d path, "@stream"
    (from the host), or a dataset; method: a name ("PRIOT", ...) with its
    options; shuffle: None (file order) or a seed (epoch_order); checkpoint:
    None or Checkpoint keywords (path, every, every_epochs); resume: continue
    the checkpoint if there is one; save: path for the trained model.
    Returns the result dict that is also emitted as the "result" line."""
    import picotrain
    from .modelfile import load
    ds = _open(data, 0, out)
    ts = _open(test, 1, out)
    if shuffle is not None and not isinstance(ds, StreamDataset):
        ds = Shuffled(ds, shuffle)
    ck = None
    t = None
    if checkpoint:
        from .checkpoint import Checkpoint
        kw = dict(checkpoint)
        ck = Checkpoint(kw.pop("path", "ckpt"), log=log, **kw)
        if resume:
            t = ck.resume()
    if t is None:
        m = load(model) if isinstance(model, str) else model
        cls = getattr(picotrain, method, None)
        if cls is None:
            raise ValueError("unknown method %r" % (method,))
        opts = {}
        for k, v in (options or {}).items():
            opts[k] = v
        t = cls(m, **opts)
    m = t.model
    prog = Progress(ds, t, progress_ms, out)
    first = ck.epoch if (ck is not None and ck.trainer is t) else 0
    skip = ck.sample if (ck is not None and ck.trainer is t) else 0
    if out:
        out("start", type(t).__name__, t.nbytes(), len(prog), epochs, first, skip)
    hist = t.fit(prog, epochs=epochs, log=log, checkpoint=ck)
    res = {"method": type(t).__name__, "nbytes": t.nbytes(), "epochs": epochs, "first": first,
           "train_acc": [round(r["train_acc"] * 10000) for r in hist]}
    if ts is not None:
        res["test_ok"], res["test_n"] = count_correct(m, ts)
    if isinstance(ds, StreamDataset) or hasattr(ds, "skipped"):
        res["skipped"] = ds.skipped
    if isinstance(ds, StreamDataset):
        res["lost"], res["junk"] = ds.lost, ds.junk
    if save:
        m.save(save)
        res["save"] = save
        res["size"], res["crc"], res["tail"] = file_check(save)
    if out:
        out("result", json.dumps(res))
    for d in (ds, ts):
        if d is not None and hasattr(d, "close"):
            d.close()
    return res


def eval_job(model, data, out=emit):
    """(right, total) of a model file on a .pt8d path or "@stream"; emitted as "result"."""
    from .modelfile import load
    m = load(model) if isinstance(model, str) else model
    ds = _open(data, 1, out)
    ok, n = count_correct(m, ds)
    res = {"test_ok": ok, "test_n": n, "skipped": ds.skipped}
    if out:
        out("result", json.dumps(res))
    return res


def file_check(path):
    """(size, CRC-32 of all but the last 4 bytes, the last 4 bytes as hex): a
    file's plain CRC-32 would not do, since a model file ends with its own
    CRC-32, which makes the CRC of every model file the same constant."""
    import binascii
    import os
    n = os.stat(path)[6]
    b = bytearray(256)
    mv = memoryview(b)
    c = 0
    left = max(0, n - 4)
    with open(path, "rb") as f:
        while left:
            k = f.readinto(mv[:min(left, 256)])
            if not k:
                break
            c = binascii.crc32(mv[:k], c)
            left -= k
        tail = binascii.hexlify(f.read(4)).decode()
    return n, c & 0xFFFFFFFF, tail


def main(args):
    """Entry point for the host tools: args is a dict naming the job ("train"
    or "eval") and its keywords."""
    import gc
    gc.collect()
    job = args.pop("job")
    if job == "train":
        train_job(**args)
    elif job == "eval":
        eval_job(**args)
    else:
        raise ValueError("unknown job %r" % (job,))
