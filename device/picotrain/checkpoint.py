"""Checkpoints: training that survives a reset or a power cut.

    import picotrain as pt
    from picotrain.checkpoint import Checkpoint

    ck = Checkpoint("run", every=256)            # every 256 samples, and every epoch
    t = ck.resume() or pt.PRIOT(pt.load("model.pt8"))
    t.fit(ds, epochs=30, checkpoint=ck)          # after a reset, the same lines continue

A checkpoint is an ordinary model file (docs/MODELFILE.md) whose META holds
the trainer's progress under the key "ckpt": the epoch and the sample index
reached, the method and its options, the state of the method's PRNG, and a
sequence number. With a checkpoint, `fit`'s `epochs` is the run's total: a
resumed run trains the epochs (and the part of an epoch) still missing, and a
run that had finished trains nothing.

Two generations are kept, `run.0.pt8` and `run.1.pt8`, written alternately,
each with modelfile.save (PATH.tmp, then rename), so the newest complete
checkpoint survives a cut at any moment, even on a filesystem whose rename is
not atomic. resume() checks both (CRC-32 over the whole file, streamed in
small chunks), skips any that fails with a warning, and loads the newer good
one. Leftover .tmp files are removed.

With fit(..., guard=picotrain.Guard()), the guard judges the state before
every save and a state that fails is not written: the newest checkpoint is
then always a good one, and a collapse rolls back to it (picotrain/guard.py).

Progress is saved only at mini-batch boundaries, where a trainer has no
half-accumulated gradient, so a resumed run computes exactly the bits the
uninterrupted run would have (tests/device/test_checkpoint.py kills the
MicroPython process at random points of checkpoint writes and checks this).

A method defined elsewhere can add to what is saved: `checkpoint_options()`
-> dict of constructor keywords (default: the known option attributes), and
`checkpoint_state()` -> JSON-able / `restore_state(s)` for state that is
neither in the model nor in `rng`.
"""
import binascii
import os
import struct

from . import modelfile
from .train import method_state, restore_method_state

# Constructor keywords of the methods, read back from the trainer's attributes:
# NITI (mu), PRIOT/PRIOTS (threshold ... select), TinTin (m, n), FQT/PartialFQT (lr, budget).
OPTION_NAMES = ("batch", "mu", "threshold", "score_bits", "rate", "init_span", "mask_backward",
                "p", "select", "m", "n", "lr", "budget")
_CHUNK = 256


class Checkpoint:
    """Periodic checkpoints of a trainer's progress, and resuming from them.

    path: base name of the files (PATH.0.pt8, PATH.1.pt8). every: save after
    every `every` samples (0: not within epochs). every_epochs: save after
    every `every_epochs` epochs (0: only after the last). log: where warnings
    and notes go (None: silent). options: the method's constructor keywords,
    if the trainer's attributes do not say them. state: dict or callable
    returning a JSON-able value saved with each checkpoint (info["state"]).
    """

    def __init__(self, path="ckpt", every=0, every_epochs=1, log=print, options=None, state=None):
        if every < 0 or every_epochs < 0:
            raise ValueError("every and every_epochs must be >= 0, got %r, %r" % (every, every_epochs))
        self.path = path
        self.every = every
        self.every_epochs = every_epochs
        self.log = log
        self.options = options
        self.state = state
        self.trainer = None  # the trainer being checkpointed (resume() builds one)
        self.info = None     # META "ckpt" of the checkpoint resumed from
        self.seq = 0
        self.epoch = 0       # epochs completed
        self.sample = 0      # samples done in the current epoch
        self.epochs = 0      # the run's total
        self.saved = 0       # checkpoints written in this session
        self.last = None     # file of the newest checkpoint written or loaded
        self._skip = 0
        self._since = 0

    def files(self):
        return (self.path + ".0.pt8", self.path + ".1.pt8")

    def _note(self, msg):
        if self.log:
            self.log("checkpoint: " + msg)

    # ------------------------------------------------------------ resuming --
    def resume(self):
        """Build the trainer of the newest good checkpoint; None when there is
        none. Corrupt or unreadable checkpoints are skipped with a warning."""
        found = self.newest()
        if found is None:
            return None
        model, info, path = found
        t = self._rebuild(model, info)
        self.trainer, self.info, self.last = t, info, path
        self.seq, self.epoch, self.sample = info["seq"], info["epoch"], info["sample"]
        self.epochs = info.get("epochs", 0)
        self._note("resumed %s from %s: %d of %d epochs done, +%d samples"
                   % (info["method"], path, self.epoch, self.epochs, self.sample))
        return t

    def newest(self):
        """(model, META "ckpt", path) of the newest good checkpoint, or None.
        Corrupt or unreadable checkpoints are skipped with a warning."""
        self._remove_tmp()
        cands = []
        for path in self.files():
            why, info = peek(path)
            if why == "missing":
                continue
            if why is None and (not isinstance(info, dict) or "seq" not in info):
                why = "no checkpoint state in its META"
            if why is not None:
                self._note("warning: %s skipped: %s" % (path, why))
                continue
            cands.append((info["seq"], path))
        cands.sort()
        while cands:
            seq, path = cands.pop()
            try:
                model = modelfile.load(path)
            except (OSError, ValueError) as e:  # changed since peek(): take the other
                self._note("warning: %s skipped: %s" % (path, e))
                continue
            return model, model.meta.pop("ckpt"), path
        return None

    def _rebuild(self, model, info):
        import picotrain
        cls = getattr(picotrain, info["method"], None)
        if cls is None:
            raise ValueError("checkpoint of method %r, which this picotrain does not have" % (info["method"],))
        opts = {}
        for k, v in info["options"].items():
            opts[k] = v
        if "reset" in opts:
            opts["reset"] = False  # keep the checkpoint's scores
        t = cls(model, **opts)
        restore_method_state(t, info)
        return t

    # --------------------------------------------- called by Trainer.fit --
    def start(self, t, epochs):
        """First epoch to train: the checkpoint's for the trainer resume()
        built, else 0 (a fresh run: old checkpoints of this name go)."""
        self.epochs = epochs
        self._since = 0
        if t is self.trainer:  # resumed (or continued): go on from where it stands
            self._skip = self.sample
            return self.epoch
        old = [p for p in self.files() if _exists(p)]
        if old:
            self._note("starting afresh: removing %s (resume() continues them instead)" % ", ".join(old))
            for p in old:
                os.remove(p)
        self._remove_tmp()
        self.trainer, self.info, self.last = t, None, None
        self.seq = self.epoch = self.sample = self._skip = 0
        return 0

    def data(self, data, ep, vet=None):
        """The samples of epoch ep, from where the checkpoint left off, saving
        every `every` samples. data with an iterate(epoch, start) method (such
        as picotrain.link's) is asked for exactly those; other iterables have
        their first samples passed over. vet(trainer) -> bool, if given, is
        asked before each of these saves: False ends the epoch there, unsaved
        (fit's guard= uses it, so that every checkpoint holds a vetted state)."""
        skip = self._skip if ep == self.epoch else 0
        self._skip = 0
        self.epoch, self.sample = ep, skip
        return self._walk(data, ep, skip, vet)

    def _walk(self, data, ep, skip, vet):
        t = self.trainer
        n = len(data) if hasattr(data, "__len__") else -1
        if hasattr(data, "iterate"):
            it = data.iterate(ep, skip)
        else:
            it = iter(data)
            for _ in range(skip):
                try:
                    next(it)
                except StopIteration:
                    return
        i = skip
        every = self.every
        for item in it:
            yield item
            # here the trainer has stepped on item
            i += 1
            self.sample = i
            self._since += 1
            if every and self._since >= every and t.count % t.batch == 0 and i != n:
                if vet is not None and not vet(t):
                    return
                self.save(t)

    def epoch_done(self, t, done):
        self.epoch, self.sample = done, 0
        ev = self.every_epochs
        if done >= self.epochs or (ev and done % ev == 0):
            self.save(t)

    # -------------------------------------------------------------- saving --
    def save(self, t=None):
        """Write the next generation now (fit calls this on schedule)."""
        t = t or self.trainer
        self.seq += 1
        path = self.files()[self.seq & 1]
        info = {"seq": self.seq, "epoch": self.epoch, "sample": self.sample, "epochs": self.epochs,
                "method": type(t).__name__, "options": self._options(t)}
        info.update(method_state(t))
        if self.state is not None:
            info["state"] = self.state() if callable(self.state) else self.state
        modelfile.save(t.model, path, {"ckpt": info})
        self.saved += 1
        self.last = path
        self._since = 0
        return path

    def _options(self, t):
        if self.options is not None:
            return self.options
        if hasattr(t, "checkpoint_options"):
            return t.checkpoint_options()
        out = {}
        for k in OPTION_NAMES:
            if hasattr(t, k):
                out[k] = getattr(t, k)
        return out

    def _remove_tmp(self):
        for p in self.files():
            if _exists(p + ".tmp"):
                os.remove(p + ".tmp")

    def clear(self):
        """Remove this run's checkpoint files."""
        for p in self.files():
            for q in (p, p + ".tmp"):
                if _exists(q):
                    os.remove(q)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def peek(path):
    """(problem, META "ckpt") of a checkpoint file without loading its model:
    the whole file's CRC-32 is checked in 256-byte chunks. problem is None
    for a good file, "missing", or why the file is unusable."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return "missing", None
    buf = bytearray(_CHUNK)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[:4] != modelfile.MAGIC:
            return "not a picotrain model file", None
        crc = binascii.crc32(head)
        pos = 8
        meta = None
        for _ in range(struct.unpack_from("<H", head, 6)[0]):
            sh = f.read(8)
            if len(sh) < 8:
                return "truncated (section header at offset %d)" % pos, None
            crc = binascii.crc32(sh, crc)
            pos += 8
            length = struct.unpack_from("<I", sh, 4)[0]
            if length > size - pos - 4:
                return "truncated (section %r claims %d bytes)" % (bytes(sh[:4]), length), None
            if sh[:4] == b"META":
                body = f.read(length)
                crc = binascii.crc32(body, crc)
                meta = body
            else:
                left = length
                mv = memoryview(buf)
                while left:
                    k = f.readinto(mv[:min(left, _CHUNK)])
                    if not k:
                        return "truncated", None
                    crc = binascii.crc32(mv[:k], crc)
                    left -= k
            pos += length
        tail = f.read(4)
        if len(tail) < 4:
            return "truncated (no checksum)", None
        if struct.unpack("<I", tail)[0] != crc & 0xFFFFFFFF:
            return "corrupt model file (CRC-32 mismatch)", None
        if pos + 4 != size:
            return "trailing bytes after the checksum", None
    if meta is None:
        return None, None
    import json
    try:
        return None, json.loads(bytes(meta).decode()).get("ckpt")
    except (ValueError, AttributeError):
        return "META is not a JSON object", None
