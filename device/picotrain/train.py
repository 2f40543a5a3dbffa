"""Trainers: one shape for every method.

    t = NITI(model, mu=4)           # or StaticNITI, PRIOT, ...
    loss, ok = t.step(x, label)     # one sample; allocates nothing
    acc = t.epoch(data)             # data: iterable of (array('b'), label)
    acc = evaluate(model, data)

A Trainer owns the buffers of a method (gradients, scores...), allocated in
__init__; the model owns activations and errors. A step runs the forward
pass, the integer softmax cross-entropy error, then the backward pass from
the top down to the lowest trainable layer: for each layer the error to its
input first (with the weights as they were in the forward pass), then the
method's parameter work (`_grad`). Every `batch` samples `_apply` updates.
Subclasses override `dynamic`, `_setup`, `_grad` and `_apply`.

A method with dynamic shifts that moves the weights (NITI, TinTin, FQT)
drops the model's calibrated static shifts from its lowest trained layer up:
they describe the old weights. Run calibrate() again for static inference.

A step runs under micropython.heap_lock() once its arguments are checked.
Unlocked, MicroPython allocates and frees on the heap the frame of every
Python call with more than 11 words of locals and stack (py/objfun.c), which
is most calls of a step: under the lock they go on the C stack, and the
interpreter's share of a step halves (issue 8: 266k -> 135k x64 instructions
of the unix port for PRIOT-S). An allocation in a step raises MemoryError
instead of leaving garbage for a collection in the middle of training.
"""
from array import array
import time

from . import kernels as K
from .layers import Linear
from .memory import _free_bytes, preflight, trainer_plan

try:
    from micropython import heap_lock, heap_unlock
    LOCKS = True
except ImportError:  # CPython: nothing to lock
    def heap_lock():
        pass
    heap_unlock = heap_lock
    LOCKS = False


def _ms():
    try:
        return time.ticks_ms()
    except AttributeError:
        return int(time.time() * 1000)


class Trainer:
    name = "base"
    dynamic = True
    trains_weights = True

    def __init__(self, model, batch=1, freeze=None, head_only=False):
        if batch < 1:
            raise ValueError("batch must be >= 1, got %r" % (batch,))
        self.model = model
        self.batch = batch
        layers = model.layers
        plist = [i for i, l in enumerate(layers) if l.has_params]
        if head_only:
            for i in plist[:-1]:
                layers[i].frozen = True
        for i in freeze or ():
            if not (0 <= i < len(layers)) or not layers[i].has_params:
                raise ValueError("freeze: layer %r is not a layer with parameters (those are %r)" % (i, plist))
            layers[i].frozen = True
        self.train_idx = [i for i in plist if not layers[i].frozen]
        if not self.train_idx:
            raise ValueError("nothing to train: every layer with parameters is frozen")
        self.lowest = self.train_idx[0]
        if not self.dynamic:
            for i in plist:
                l = layers[i]
                if l.shift is None or (i > self.lowest and l.bshift is None):
                    raise ValueError("%s needs static shifts; layer %d (%r) is not calibrated: "
                                     "run picotrain.calibrate(model, data) first" % (self.name, i, l))
        if self.dynamic and self.trains_weights:
            # Moving the weights moves every scale above them: shifts calibrated
            # for the old weights would make predict() and evaluate() (which use
            # static shifts when a model has them) score a different network.
            for l in layers[self.lowest:]:
                if l.has_params:
                    l.shift = l.bshift = l.gbits = None
        preflight(self)  # issue 6: MemoryError up front if the buffers cannot fit
        model.build(training=True, static=not self.dynamic)
        self.count = 0
        self.result = [0, 0]
        self.guard = None  # the Guard of the latest fit (issue 7)
        self._setup()

    # ---------------------------------------------------------- the method --
    def _setup(self):
        pass

    def _grad(self, i, layer, e, x):
        raise NotImplementedError

    def _apply(self):
        pass

    # ------------------------------------------------------------ the loop --
    def step(self, x, label):
        """Train on one sample. Returns the reused list [loss, correct]:
        loss = -err[label] in [0, 127] (about 128 * (1 - p_label)), correct 0/1."""
        self.model.check_input(x, label)
        heap_lock()  # (module docstring)
        try:
            self._pass(x, label)
        except:  # noqa: E722 (KeyboardInterrupt too: never leave the heap locked)
            heap_unlock()
            self._explain()
            raise
        heap_unlock()
        return self.result

    def _explain(self):
        """After an exception in a step's locked pass. A kernel's argument
        error needs the heap for its text, so under the lock it came out as
        MemoryError: the same pass, unlocked and without the parameter work,
        on the step's input (with any label), raises it in full. Otherwise
        the pass runs through and the step's own exception stands (a
        MemoryError that stays is an allocation in the step). It takes no
        arguments: a call with more in step's handler, or `except ... as`,
        would make step's frame too big for the C stack (more than 11 words:
        MicroPython allocates it on the heap at every step)."""
        if LOCKS:
            self._pass(self.model._x.data, 0, False)

    def _pass(self, x, label, train=True):
        """The step's work on a checked (x, label): forward pass, loss, error
        backward; with train, the method's parameter work (_grad, _apply)."""
        m = self.model
        dyn = self.dynamic
        y = m._forward(x, dyn)
        res = self.result
        res[1] = 1 if K.argmax_s8(y.data, y.size) == label else 0
        layers, errs, acts = m.layers, m.errs, m.acts
        top = len(layers) - 1
        e = errs[top]
        res[0] = -K.softmax_xent_s8(y.data, y.size, y.exp, label, e.data, m.ws.acc)
        e.exp = -7
        ws = m.ws
        lowest = self.lowest
        # not layer.has_params: a class attribute costs a failed instance lookup
        trains = self.train_idx if train else ()
        for i in m._work_down:  # the layers with work to do, from the top (Model.build)
            if i < lowest:
                break
            layer = layers[i]
            e = errs[i]
            if i > lowest:
                layer.backward_input(e, errs[i - 1], ws, dyn)
            if i in trains:
                self._grad(i, layer, e, acts[i - 1] if i > 0 else m._x)
        if train:
            self.count += 1
            if self.count % self.batch == 0:
                self._apply()

    def epoch(self, data):
        """One pass over data (iterable of (x, label)); returns training accuracy."""
        n = ok = 0
        for x, label in data:
            ok += self.step(x, label)[1]
            n += 1
        if self.count % self.batch:
            self._apply()  # a last, partial mini-batch
            self.count = 0
        return ok / n if n else 0.0

    def fit(self, data, epochs=1, test=None, log=print, checkpoint=None, guard=None):
        """Train for some epochs, one short line each; returns the history.
        checkpoint: a picotrain.checkpoint.Checkpoint (saves progress, resumes).
        guard: a picotrain.Guard (detects a collapse, rolls back to the last
        good state; the row of that epoch gets "collapse")."""
        hist = []
        first = checkpoint.start(self, epochs) if checkpoint is not None else 0  # issue 6
        self.guard = guard
        if guard is not None:
            guard.start(self, checkpoint)  # issue 7
        for ep in range(first, epochs):
            t0 = _ms()
            src = data
            if checkpoint is not None:
                src = checkpoint.data(data, ep, None if guard is None else guard.check)
            if guard is not None:
                src = guard.watch(self, src, ep)
            acc = self.epoch(src)
            dt = _ms() - t0
            n = len(data) if hasattr(data, "__len__") else 0
            row = {"epoch": ep + 1, "train_acc": acc, "ms_per_sample": dt / n if n else 0}
            line = "epoch %d  train %.2f%%" % (ep + 1, 100 * acc)
            event = None
            if guard is not None:
                event = guard.epoch_end(self)  # rolled back already: the test below scores the good state
                row["sat"] = guard.last_sat
                line += "  sat %.2f%%" % (100 * guard.last_sat)
            if test is not None:
                row["test_acc"] = self.evaluate(test)
                line += "  test %.2f%%" % (100 * row["test_acc"])
            line += "  %.1f ms/sample" % row["ms_per_sample"]
            # after a collection: the epoch's logging garbage is not a leak
            free = _free_bytes()
            if free is not None:
                line += "  free %d B" % free
            if event is not None:
                row["collapse"] = event
                line += "  COLLAPSE: %s; rolled back to %s, %s" % (
                    event["why"], event["back_to"], "stopped" if guard.stop else "going on")
            if log:
                log(line)
            hist.append(row)
            if event is not None and guard.stop:
                break
            if checkpoint is not None:
                checkpoint.epoch_done(self, ep + 1)
        return hist

    # issue 5 (TinTin, PartialFQT): fit() scores the test set through the
    # trainer, so a method with its own forward pass (TinTin) evaluates with it
    def evaluate(self, data):
        """Accuracy on data (iterable of (x, label)) as this method predicts."""
        return evaluate(self.model, data)

    def nbytes(self):
        """Bytes of training buffers: the model's, the method's, and the copy
        a Guard keeps to roll back to (while fit uses one): memory_plan's total."""
        return trainer_plan(self)["total"]

    def _trained(self, model):
        """What training changes in `model` (this trainer's own, or one loaded
        from its checkpoint, with the same layers): ([(array, bytes)], [(object,
        attribute name)]), the arrays and the plain numbers that a Guard copies
        to roll back. The trained layers' weights and their exponents here;
        methods that change more say so."""
        arrays, numbers = [], []
        for i in self.train_idx:
            w = model.layers[i].weight
            arrays.append((w.data, w.size))
            numbers.append((w, "exp"))
        return arrays, numbers

    def _plan_nbytes(self):
        """The method's own buffers by category ({'gradients': bytes, ...}),
        from its options alone: picotrain.memory_plan states them before
        anything is allocated, and nbytes() adds them up afterwards."""
        return {}


def evaluate(model, data, dynamic=None):
    """Accuracy of model.predict over data (iterable of (x, label))."""
    n = ok = 0
    for x, label in data:
        ok += model.predict(x, dynamic) == label
        n += 1
    return ok / n if n else 0.0


def method_state(t):
    """What a trainer keeps outside its model: its PRNG's state ("rng") and
    checkpoint_state() ("tstate"), as a dict of JSON-able values."""
    out = {}
    rng = getattr(t, "rng", None)
    if rng is not None:
        out["rng"] = rng.state
    if hasattr(t, "checkpoint_state"):
        out["tstate"] = t.checkpoint_state()
    return out


def restore_method_state(t, state):
    """Put back what method_state() took (state may hold more keys)."""
    if state.get("rng") is not None and getattr(t, "rng", None) is not None:
        t.rng.state = state["rng"]
    if state.get("tstate") is not None and hasattr(t, "restore_state"):
        t.restore_state(state["tstate"])


class NITI(Trainer):
    """NITI (Wang et al., IEEE TPDS 2022): int8 weights, dynamic shifts,
    update w -= g rounded to mu bits (pseudo-stochastic), no learning rate.

    At batch 1 a Linear layer's gradient is the outer product of its error
    and input, whose largest value is known from theirs: update_outer_s8
    updates it in the backward pass, right after the error to its input was
    computed with the old weights, with no gradient buffer (the same bits)."""
    name = "NITI"
    fuse_linear = True  # FQT: False (its own update rule)

    def __init__(self, model, mu=4, **kw):
        if not (1 <= mu <= 7):
            raise ValueError("mu (update bit width) must be in 1..7, got %r" % (mu,))
        self.mu = mu
        Trainer.__init__(self, model, **kw)

    def _setup(self):
        layers = self.model.layers
        # int32 gradient per trainable layer; with batch > 1 it accumulates
        # (aligned to a common exponent) and a scratch holds each sample's.
        # (None for a fused Linear layer, which _apply then skips)
        self.grads = {}
        self.gexp = {}
        big = 1
        for i in self.train_idx:
            self.gexp[i] = None
            self.grads[i] = None
            if not self._fused(layers[i]):
                n = layers[i].grad_size()
                self.grads[i] = array("i", bytes(4 * n))
                big = max(big, n)
        self.scratch = array("i", bytes(4 * big)) if self.batch > 1 else None

    def _fused(self, layer):
        """True when layer's update needs no gradient buffer (update_outer_s8)."""
        return self.fuse_linear and self.batch == 1 and isinstance(layer, Linear)

    def _plan_nbytes(self):
        """An int32 gradient per trainable layer (but a fused Linear layer);
        for mini-batches one per-sample scratch as large as the largest."""
        layers = self.model.layers
        sizes = [layers[i].grad_size() for i in self.train_idx if not self._fused(layers[i])]
        g = 4 * sum(sizes)
        if self.batch > 1:
            g += 4 * max(sizes)
        return {"gradients": g}

    def _grad(self, i, layer, e, x):
        g = self.grads[i]
        if g is None:
            layer.sat_upd += K.update_outer_s8(e.data, x.data, layer.weight.data, layer.n_out, layer.n_in,
                                               self.mu)
            return
        self._accumulate(i, layer, e, x, g)

    def _accumulate(self, i, layer, e, x, g):
        """Add this sample's gradient of layer i into g, aligned (see NUMERICS)."""
        ge = e.exp + x.exp
        old = self.gexp[i]
        if old is None:
            layer.grad(e, x, g)
            self.gexp[i] = ge
            return
        s = self.scratch
        layer.grad(e, x, s)
        # Align the running sum and the new gradient to the larger exponent.
        if ge > old:
            K.acc_add_s32(g, s, len(g), ge - old, 0)
            self.gexp[i] = ge
        else:
            K.acc_add_s32(g, s, len(g), 0, old - ge)

    def _apply(self):
        layers = self.model.layers
        for i in self.train_idx:
            if self.gexp[i] is None:
                continue
            g = self.grads[i]
            n = len(g)
            sh = K.bitlen_s32(g, n) - self.mu
            layers[i].sat_upd += K.update_s8(layers[i].weight.data, g, n, sh)
            self.gexp[i] = None


class StaticNITI(NITI):
    """NITI with every shift fixed (calibrated): the PRIOT paper's baseline."""
    name = "StaticNITI"
    dynamic = False


def calibrate(model, data, backward=True, all_samples=False):
    """Static scales as the PRIOT paper sets them: run the dynamic passes over
    data, record every layer's shifts, keep the most frequent (ties: the
    larger, the safer against overflow). With backward=True (labels needed)
    also the error shifts and the bit length of each layer's weight gradient
    (gbits, which sets PRIOT's static score step), from the samples that send
    the layer a non-zero error; all_samples=True lets every sample vote on
    them (the rule before commit b9829ff: confident samples vote them down to
    0; examples/priot_table.py shows what that does). Returns
    {layer index: (shift, bshift, gbits)}."""
    model.build(training=backward)
    layers = model.layers
    plist = [i for i, l in enumerate(layers) if l.has_params]
    hist = {(i, k): {} for i in plist for k in range(3)}
    g = array("i", bytes(4 * max(layers[i].grad_size() for i in plist))) if backward else None

    def count(i, k, v):
        h = hist[(i, k)]
        h[v] = h.get(v, 0) + 1

    n = 0
    for x, label in data:
        model.check_input(x)
        y = model._forward(x, True)
        n += 1
        for i in plist:
            count(i, 0, layers[i].last_shift)
        if not backward:
            continue
        e = model.errs[-1]
        K.softmax_xent_s8(y.data, y.size, y.exp, label, e.data, model.ws.acc)
        e.exp = -7
        for i in range(len(layers) - 1, plist[0] - 1, -1):
            l = layers[i]
            if i > plist[0]:
                l.backward_input(model.errs[i], model.errs[i - 1], model.ws, True)
            if l.has_params:
                l.grad(model.errs[i], model.acts[i - 1] if i > 0 else model._x, g)
                gb = K.bitlen_s32(g, l.grad_size())
                # A sample that sends this layer no error (a confident, right
                # prediction) says nothing about the error's scale: counting its
                # zero shifts would let them win the vote and scale real errors away.
                if gb or all_samples:
                    count(i, 2, gb)
                    if i > plist[0]:
                        count(i, 1, l.last_bshift)
    if n == 0:
        raise ValueError("calibrate: no data")

    def mode(h):
        best = None
        for s, c in h.items():
            if best is None or c > h[best] or (c == h[best] and s > best):
                best = s
        return best

    out = {}
    for i in plist:
        l = layers[i]
        l.shift, l.bshift, l.gbits = mode(hist[(i, 0)]), mode(hist[(i, 1)]), mode(hist[(i, 2)])
        out[i] = (l.shift, l.bshift, l.gbits)
    return out
