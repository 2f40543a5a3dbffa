"""Realistic kernel calls: the tiny CNN trained on the host mirror, every kernel call of one
training step recorded with its inputs and the mirror's outputs.

    model = reference_model()                  # pretrained on MNIST, int8, calibrated
    calls = record_step(model, "PRIOT", data)  # [Call, ...] of one step after a warm-up

A Call holds the kernel's API name, deep copies of its arguments as the step passed them
(buffers before the call), the buffers after the call and the return value: enough to run
the same call on the emulated RP2040 and compare every output bit for bit (emu.py). The
warm-up (a pass over adaptation samples) gives the scores, activations and errors the
distribution they have in training: pruned edges, sparse errors after max-pool and ReLU.
"""

import copy
import hashlib
from array import array
from pathlib import Path

import picotrain as pt  # kbench/__init__.py put this checkout's device/ first on sys.path
from picotrain import kernels as K

ROOT = Path(__file__).resolve().parents[2]

CACHE = ROOT / "out" / "bench"

# The methods benchmarked and their settings (examples/demo.py and examples/priot_table.py
# defaults: NITI mu = 3; PRIOT threshold 0, init_span 32, rate 7, int8 scores).
PRIOT_KW = dict(threshold=0, init_span=32, rate=7, score_bits=8)
METHODS = {
    "NITI": ("NITI", dict(mu=3)),
    "StaticNITI": ("StaticNITI", dict(mu=3)),
    "PRIOT": ("PRIOT", dict(PRIOT_KW)),
    "PRIOT-S p=0.9": ("PRIOTS", dict(PRIOT_KW, p=0.9, select="random")),
    "PRIOT-S p=0.5": ("PRIOTS", dict(PRIOT_KW, p=0.5, select="random")),
}


class Call:
    __slots__ = ("name", "args", "after", "ret", "layer")

    def __init__(self, name, args, after, ret, layer=None):
        self.name, self.args, self.after, self.ret, self.layer = name, args, after, ret, layer

    def __repr__(self):
        return "Call(%s, layer %s)" % (self.name, self.layer)


def _is_buf(v):
    return isinstance(v, (array, bytearray))


class Recorder:
    """Context manager: while active, every picotrain.kernels call is recorded."""

    def __init__(self, model=None, trainer=None):
        self.calls = []
        self._saved = {}
        self._patched = []
        self.where = "step"  # phase label of the calls being recorded
        self.model, self.trainer = model, trainer

    def __enter__(self):
        for name in K.NAMES:
            f = getattr(K, name)
            self._saved[name] = f
            setattr(K, name, self._wrap(name, f))
        if self.model is not None:
            for i, layer in enumerate(self.model.layers):
                kind = type(layer).__name__
                for meth, phase in (("forward", "forward"), ("backward_input", "error"),
                                    ("score_step", "score"), ("grad", "gradient")):
                    if hasattr(layer, meth):
                        self._label(layer, meth, "L%d %s %s" % (i, kind, phase))
        if self.trainer is not None:
            self._label(self.trainer, "_apply", "update")
            # a method's own work on layer i (NITI's fused Linear update); the layer's
            # gradient or score step inside it keeps its own label
            self._label(self.trainer, "_grad", lambda i, layer, *_: "L%d %s update" % (i, type(layer).__name__))
        return self

    def _label(self, obj, meth, label):
        """Calls inside obj.meth get `label` (or label(*args), when it is a function)."""
        f = getattr(obj, meth)
        rec = self

        def labelled(*args, **kw):
            outer, rec.where = rec.where, label(*args) if callable(label) else label
            try:
                return f(*args, **kw)
            finally:
                rec.where = outer
        setattr(obj, meth, labelled)
        self._patched.append((obj, meth))

    def _wrap(self, name, f):
        calls = self.calls

        def rec(*args):
            before = [copy.deepcopy(a) for a in args]
            ret = f(*args)
            after = {i: bytes(a) for i, a in enumerate(args) if _is_buf(a)}
            calls.append(Call(name, before, after, ret, self.where))
            return ret
        return rec

    def __exit__(self, *exc):
        for name, f in self._saved.items():
            setattr(K, name, f)
        for obj, meth in self._patched:
            delattr(obj, meth)  # the instance attribute: the class's method shows again
        return False


# ------------------------------------------------------------------ model --

def mnist_available():
    from host_tools import datasets
    try:
        datasets.load_mnist()
        return True
    except Exception:
        return False


def reference_model(angle=45.0, n_calib=256, seed=0, log=print):
    """The PRIOT paper's tiny CNN (host_tools.models "tiny_cnn"), pretrained in float on
    upright MNIST, converted to int8 and calibrated on rotated adaptation images; cached in
    out/bench/. Returns (model file path, adaptation samples)."""
    from host_tools import convert, datasets, models, pretrain
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr(("tiny_cnn", "mnist", angle, n_calib, seed)).encode()).hexdigest()[:12]
    path = CACHE / ("tiny_cnn_%s.pt8" % key)
    train = datasets.to_samples(*datasets.load_split("mnist", "transfer-train", angle=angle, limit=n_calib))
    if not path.exists():
        log("pretraining tiny_cnn on MNIST (float, ~10 s) ...")
        ck = pretrain.pretrain(model_name="tiny_cnn", source="mnist", seed=seed)
        net = models.build(ck["arch"])
        net.load_state_dict(ck["state_dict"])
        model = convert.convert(net.eval(), models.input_shape(ck["arch"]))
        pt.calibrate(model, train)
        model.save(str(path))
    return path, train


# A small network with the tiny CNN's kinds of layers and the shapes that take the kernels'
# fast paths (k = 5, stride 1, no padding, four-wide output blocks), for quick runs and tests.
MINI_CNN = ((1, 16, 16), [
    ("conv2d", dict(c_in=1, c_out=4, k=5)), ("relu", {}), ("maxpool2d", dict(k=2)),
    ("conv2d", dict(c_in=4, c_out=8, k=5)), ("relu", {}), ("maxpool2d", dict(k=2)),
    ("flatten", {}), ("linear", dict(n_in=8, n_out=16)), ("relu", {}), ("linear", dict(n_in=16, n_out=10)),
])


def synthetic_model(arch="tiny_cnn", seed=1, n=64):
    """A model with random int8 weights and random image-like inputs (no torch, no MNIST),
    calibrated on its own data. arch: a host_tools.models name or (in_shape, specs) such
    as MINI_CNN. Returns (model, samples)."""
    from picotrain.rng import XorShift32
    if isinstance(arch, str):
        from host_tools import models
        in_shape, specs = models.input_shape(arch), models.layer_specs(arch)
    else:
        in_shape, specs = arch
    rng = XorShift32(seed)
    layers = []
    for kind, p in specs:
        if kind == "conv2d":
            layers.append(pt.Conv2d(p["c_in"], p["c_out"], p["k"], p.get("stride", 1), p.get("pad", 0)))
        elif kind == "linear":
            layers.append(pt.Linear(p["n_in"], p["n_out"]))
        elif kind == "relu":
            layers.append(pt.ReLU())
        elif kind == "maxpool2d":
            layers.append(pt.MaxPool2d(p["k"]))
        elif kind == "flatten":
            layers.append(pt.Flatten())
    model = pt.Model(layers, in_shape)
    for l in model.layers:
        if l.has_params:
            w = l.weight.data
            for j in range(l.weight.size):
                # roughly bell-shaped int8 weights: a sum of three uniforms
                w[j] = rng.below(43) + rng.below(43) + rng.below(43) - 63
            l.weight.exp = -7
    size = model.in_size
    samples = []
    for _ in range(n):
        x = array("b", bytes(size))
        for j in range(size):
            v = rng.below(256)
            x[j] = (v if v > 128 else 0) >> 1  # images: half background, pixel >> 1
        samples.append((x, rng.below(model.n_classes)))
    pt.calibrate(model, samples)
    return model, samples


# ------------------------------------------------------------------ steps --

def make_trainer(model, method):
    cls_name, kw = METHODS[method]
    return getattr(pt, cls_name)(model, **kw)


def _loss(t, x, label):
    """The loss a step of trainer t would see on (x, label), without training."""
    m = t.model
    y = m.forward(x, t.dynamic)
    return -K.softmax_xent_s8(y.data, y.size, y.exp, label, m.errs[-1].data, m.ws.acc)


def record_step(model, method, samples, warmup=None, log=None):
    """(trainer, calls) of one training step of `method` on `model` after training on
    `warmup` samples (default: all but the last of `samples`); the step trains on the
    next sample with a nonzero loss, the usual case while a model adapts (a sample
    it already gets right with full confidence sends no error back and skips almost
    all of the backward pass). The model is modified (copy it first to keep it)."""
    t = make_trainer(model, method)
    warm = samples[:-1] if warmup is None else samples[:warmup]
    for x, label in warm:
        t.step(x, label)
    order = samples[len(warm):] + samples[:len(warm)]
    x, label = next(((x, label) for x, label in order if _loss(t, x, label) > 0), order[0])
    with Recorder(model, t) as r:
        t.step(x, label)
    for c in r.calls:
        if c.layer == "step":
            c.layer = "loss" if c.name in ("softmax_xent_s8", "argmax_s8") else "step"
    return t, r.calls


def load_model(path):
    return pt.load(str(path))
