"""Tensors, layers and the sequential model.

A Tensor is an int8 (or int32) buffer, a shape and a power-of-two exponent:
real value = data[j] * 2**exp. Layers compute through the kernel API only.
Every buffer a forward or backward pass touches is allocated once, by
Model.build(), so inference and training steps allocate nothing.

Forward of Linear/Conv2d: int8 x int8 -> int32 accumulator (shared scratch),
optional int32 bias, then a right shift with rounding and saturation back to
int8. The shift is either dynamic (NITI: bit length of the largest |acc|
minus 7) or static (a stored, calibrated shift). With a static shift a
convolution is one fused kernel (conv2d_s8_s8_chw) that requantizes a few
output channels at a time, so the int32 scratch need not hold its output
(Model.plan(static=True)). Backward mirrors it for the error sent to the
layer input. docs/NUMERICS.md has the exact rules.

A Python call costs a Pico about 5,000 cycles (0.04 ms; issue 8, measured as
x64 instructions of the unix port): the passes a static training step runs
make their kernel calls and the requantization's bookkeeping inline rather
than through a shared helper.
"""
from array import array

from . import kernels as K

# MicroPython's array has no .typecode: there only the type can be checked.
_HAS_TYPECODE = hasattr(array("b"), "typecode")

BITS = 7  # int8 magnitude bits: dynamic shift = bitlen(max|acc|) - BITS


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Tensor:
    """int8/int32 data with a shape and a power-of-two exponent."""

    def __init__(self, shape, exp=0, typecode="b", data=None):
        self.shape = tuple(shape)
        self.size = _prod(self.shape)
        self.exp = exp
        self.data = array(typecode, bytes(self.size * (4 if typecode == "i" else 1))) if data is None else data
        if len(self.data) < self.size:
            raise ValueError("Tensor data has %d items, shape %r needs %d" % (len(self.data), self.shape, self.size))

    def to_float(self):
        """Real values as a list of floats (host convenience, not for the device hot path)."""
        s = 2.0 ** self.exp
        return [self.data[j] * s for j in range(self.size)]


def dyn_shift(acc, n):
    """NITI's dynamic shift for n accumulators: max(0, bitlen(max|acc|) - 7)."""
    s = K.bitlen_s32(acc, n) - BITS
    return s if s > 0 else 0


class Layer:
    kind = 0          # model-file layer code (modelfile.py)
    has_params = False
    in_place = False  # output (and error) share the input's buffer

    def setup(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.out_shape = self.infer(self.in_shape)
        return self.out_shape

    def config(self):
        return ()

    def __repr__(self):
        return "%s%r" % (type(self).__name__, self.config())


class _Param(Layer):
    """Shared parts of Linear and Conv2d: int8 weight with an exponent,
    optional int32 bias with its own exponent, static shifts, counters."""
    has_params = True

    def _init_params(self, n_w, n_b, bias):
        self.weight = Tensor((n_w,), 0)
        self.bias = array("i", bytes(4 * n_b)) if bias else None
        self.b_exp = 0
        self.shift = None    # static forward shift (None: not calibrated)
        self.bshift = None   # static shift of the error to the input
        self.frozen = False
        self.last_shift = 0  # shifts chosen by the latest pass (calibration reads them)
        self.last_bshift = 0
        self.sat_fwd = 0     # saturated outputs / errors since the last reset
        self.sat_bwd = 0
        self.sat_upd = 0     # weights clipped at +-127 by updates
        self.gbits = None    # calibrated bit length of the weight gradient (PRIOT's static step)
        # Edge-popup state (prune.py): scores per edge (compact over `subset`
        # when given), an edge is used when its score >= thr.
        self.scores = None
        self.subset = None
        self.thr = 0
        self.mask_bwd = False  # send the error back through W*M instead of W

    def _finish(self, ws, y, n, plane, x_exp, dynamic):
        acc = ws.acc
        base = x_exp + self.weight.exp
        if self.bias is not None:
            K.bias_add_s32(acc, self.bias, self.out_shape[0], plane, self.b_exp - base)
        s = dyn_shift(acc, n) if dynamic else self.shift
        self.sat_fwd += K.requant_s32_s8(acc, y.data, n, s)
        self.last_shift = s
        y.exp = base + s


class Linear(_Param):
    kind = 1

    def __init__(self, n_in, n_out, bias=False):
        if n_in < 1 or n_out < 1:
            raise ValueError("Linear: need n_in, n_out >= 1; got %d, %d" % (n_in, n_out))
        self.n_in, self.n_out = n_in, n_out
        self._init_params(n_in * n_out, n_out, bias)

    def config(self):
        return (self.n_in, self.n_out, self.bias is not None)

    def infer(self, s):
        if _prod(s) != self.n_in or len(s) != 1:
            raise ValueError("Linear(%d, %d) got input shape %r; expected (%d,) (add Flatten?)"
                             % (self.n_in, self.n_out, s, self.n_in))
        return (self.n_out,)

    def acc_size(self, static=False):
        return max(self.n_in, self.n_out)

    def grad_size(self):
        return self.n_in * self.n_out

    def forward(self, x, y, ws, dynamic):
        if self.scores is None:
            K.fc_s8_s32(x.data, self.weight.data, ws.acc, self.n_in, self.n_out)
        else:
            K.fc_mask_s8_s32(x.data, self.weight.data, self.scores, self.subset, self.thr,
                             ws.acc, self.n_in, self.n_out)
        if dynamic or self.bias is not None:
            self._finish(ws, y, self.n_out, 1, x.exp, dynamic)
        else:  # the static shift, without _finish's call (module docstring)
            s = self.shift
            self.sat_fwd += K.requant_s32_s8(ws.acc, y.data, self.n_out, s)
            self.last_shift = s
            y.exp = x.exp + self.weight.exp + s

    def backward_input(self, e, e_in, ws, dynamic):
        if self.scores is None or not self.mask_bwd:
            K.fc_t_s8_s32(e.data, self.weight.data, ws.acc, self.n_in, self.n_out)
        else:
            K.fc_t_mask_s8_s32(e.data, self.weight.data, self.scores, self.subset, self.thr,
                               ws.acc, self.n_in, self.n_out)
        acc = ws.acc  # the error's requantization, inline (module docstring)
        n = self.n_in
        s = dyn_shift(acc, n) if dynamic else self.bshift
        self.sat_bwd += K.requant_s32_s8(acc, e_in.data, n, s)
        self.last_bshift = s
        e_in.exp = e.exp + self.weight.exp + s

    def score_step(self, e, x, shift, smax):
        return K.fc_score_s8(e.data, x.data, self.weight.data, self.scores, self.subset,
                             shift, smax, self.n_in, self.n_out)

    def grad(self, e, x, g):
        K.outer_s8_s32(e.data, x.data, g, self.n_out, self.n_in)


class Conv2d(_Param):
    kind = 2

    def __init__(self, c_in, c_out, k, stride=1, pad=0, bias=False):
        if c_in < 1 or c_out < 1 or k < 1 or stride < 1 or pad < 0 or pad >= k:
            raise ValueError("Conv2d: need c_in, c_out, k, stride >= 1 and 0 <= pad < k; got c_in=%d "
                             "c_out=%d k=%d stride=%d pad=%d" % (c_in, c_out, k, stride, pad))
        self.c_in, self.c_out, self.k, self.stride, self.pad = c_in, c_out, k, stride, pad
        self._init_params(c_out * c_in * k * k, c_out, bias)

    def config(self):
        return (self.c_in, self.c_out, self.k, self.stride, self.pad, self.bias is not None)

    def setup(self, in_shape):
        out = Layer.setup(self, in_shape)
        # Geometry as plain attributes: a step must not build tuples.
        self.h, self.w, self.oh, self.ow = in_shape[1], in_shape[2], out[1], out[2]
        return out

    def infer(self, s):
        if len(s) != 3 or s[0] != self.c_in:
            raise ValueError("Conv2d(%d, %d, k=%d) got input shape %r; expected (%d, H, W)"
                             % (self.c_in, self.c_out, self.k, s, self.c_in))
        oh = (s[1] + 2 * self.pad - self.k) // self.stride + 1
        ow = (s[2] + 2 * self.pad - self.k) // self.stride + 1
        if oh < 1 or ow < 1:
            raise ValueError("Conv2d k=%d does not fit input %r" % (self.k, s))
        return (self.c_out, oh, ow)

    def acc_size(self, static=False):
        """Items of int32 scratch: the error to the input, and the forward's
        output (static: one output plane, what the fused kernel needs)."""
        out = self.oh * self.ow if static else _prod(self.out_shape)
        return max(_prod(self.in_shape), out)

    def grad_size(self):
        return self.c_out * self.c_in * self.k * self.k

    def forward(self, x, y, ws, dynamic):
        if dynamic:
            self._forward_dynamic(x, y, ws)
            return
        # Static: convolution, bias and the shift in one kernel (no int32 map).
        base = x.exp + self.weight.exp
        s = self.shift
        if self.scores is None:
            sat = K.conv2d_s8_s8_chw(x.data, self.weight.data, y.data, ws.acc, self.c_in, self.h, self.w,
                                     self.c_out, self.k, self.stride, self.pad, s, self.bias, self.b_exp - base)
        else:
            sat = K.conv2d_mask_s8_s8_chw(x.data, self.weight.data, self.scores, self.subset, self.thr,
                                          y.data, ws.acc, self.c_in, self.h, self.w, self.c_out, self.k,
                                          self.stride, self.pad, s, self.bias, self.b_exp - base)
        self.sat_fwd += sat
        self.last_shift = s
        y.exp = base + s

    def _forward_dynamic(self, x, y, ws):
        if self.scores is None:
            K.conv2d_s8_s32_chw(x.data, self.weight.data, ws.acc, self.c_in, self.h, self.w,
                                self.c_out, self.k, self.stride, self.pad)
        else:
            K.conv2d_mask_s8_s32_chw(x.data, self.weight.data, self.scores, self.subset, self.thr,
                                     ws.acc, self.c_in, self.h, self.w, self.c_out, self.k,
                                     self.stride, self.pad)
        plane = self.oh * self.ow
        self._finish(ws, y, self.c_out * plane, plane, x.exp, True)

    def backward_input(self, e, e_in, ws, dynamic):
        if self.scores is None or not self.mask_bwd:
            K.conv2d_t_s8_s32_chw(e.data, self.weight.data, ws.acc, self.c_in, self.h, self.w,
                                  self.c_out, self.k, self.stride, self.pad)
        else:
            K.conv2d_t_mask_s8_s32_chw(e.data, self.weight.data, self.scores, self.subset, self.thr,
                                       ws.acc, self.c_in, self.h, self.w, self.c_out, self.k,
                                       self.stride, self.pad)
        acc = ws.acc  # the error's requantization, inline (module docstring)
        n = self.c_in * self.h * self.w
        s = dyn_shift(acc, n) if dynamic else self.bshift
        self.sat_bwd += K.requant_s32_s8(acc, e_in.data, n, s)
        self.last_bshift = s
        e_in.exp = e.exp + self.weight.exp + s

    def score_step(self, e, x, shift, smax):
        return K.conv2d_score_s8_chw(e.data, x.data, self.weight.data, self.scores, self.subset,
                                     shift, smax, self.c_in, self.h, self.w, self.c_out, self.k,
                                     self.stride, self.pad)

    def grad(self, e, x, g):
        K.conv2d_grad_s8_s32_chw(e.data, x.data, g, self.c_in, self.h, self.w,
                                 self.c_out, self.k, self.stride, self.pad)


class ReLU(Layer):
    kind = 3
    in_place = True
    # Followed by MaxPool2d (Model sets it): ReLU and max-pooling commute, so
    # the pool rectifies its four times smaller output, and sends no error
    # back from a window whose maximum is <= 0, for this layer; the same bits
    # everywhere, but this layer's own output (acts[i]) stays unrectified.
    pooled = False

    def infer(self, s):
        return s

    def forward(self, x, y, ws, dynamic):
        # In place: y takes x's buffer (a first layer's x is the caller's array,
        # new every step: a leading ReLU rectifies it) and exponent.
        y.data = x.data
        y.exp = x.exp
        if not self.pooled:
            K.relu_s8(y.data, y.size)

    def backward_input(self, e, e_in, ws, dynamic):
        if not self.pooled:
            K.relu_bwd_s8(self.y.data, e.data, e.size)  # e_in shares e's data
        e_in.exp = e.exp


class Flatten(Layer):
    kind = 5
    in_place = True

    def infer(self, s):
        return (_prod(s),)

    def forward(self, x, y, ws, dynamic):
        y.data = x.data  # a reshape: y shares x's buffer and exponent (as ReLU's)
        y.exp = x.exp

    def backward_input(self, e, e_in, ws, dynamic):
        e_in.exp = e.exp


class MaxPool2d(Layer):
    kind = 4
    relu = 0  # 1: rectify the output, the ReLU before it is pooled (ReLU.pooled)

    def __init__(self, k=2):
        if k < 1:
            raise ValueError("MaxPool2d: need k >= 1, got %d" % k)
        self.k = k
        self.idx = None  # argmax per output, allocated for training

    def config(self):
        return (self.k,)

    def infer(self, s):
        if len(s) != 3 or s[1] < self.k or s[2] < self.k:
            raise ValueError("MaxPool2d(%d) got input shape %r; expected (C, H, W) with H, W >= %d"
                             % (self.k, s, self.k))
        return (s[0], s[1] // self.k, s[2] // self.k)

    def setup(self, in_shape):
        out = Layer.setup(self, in_shape)
        self.c, self.h, self.w = in_shape
        return out

    def forward(self, x, y, ws, dynamic):
        K.maxpool2d_s8_chw(x.data, y.data, self.idx, self.c, self.h, self.w, self.k, self.relu)
        y.exp = x.exp

    def backward_input(self, e, e_in, ws, dynamic):
        # rectified: a window whose maximum was <= 0 sends nothing back (the
        # ReLU's backward, in the same kernel call)
        K.maxpool2d_bwd_s8_chw(e.data, self.idx, e_in.data, self.c, self.h, self.w, self.k,
                               self.y.data if self.relu else None)
        e_in.exp = e.exp


def _identity(layer):
    """An in-place layer with nothing to compute (a reshape, or a ReLU whose pool
    rectifies): Model.build gives it its input's tensors as its own, so a step
    skips it (issue 8: 6 Python calls, about 0.3 ms of a Pico's step)."""
    return isinstance(layer, Flatten) or (isinstance(layer, ReLU) and layer.pooled)


class Workspace:
    """Scratch shared by all layers: the int32 accumulator."""

    def __init__(self, n):
        self.acc = array("i", bytes(4 * n))


class Model:
    """A sequential int8 network with a fixed input shape and exponent."""

    def __init__(self, layers, in_shape, in_exp=-7):
        self.layers = list(layers)
        self.in_shape = tuple(in_shape)
        self.in_exp = in_exp
        self.meta = {}
        s = self.in_shape
        for i, layer in enumerate(self.layers):
            try:
                s = layer.setup(s)
            except ValueError as e:
                raise ValueError("layer %d (%r) does not chain: %s" % (i, layer, e))
        self.out_shape = s
        # ReLU.pooled and MaxPool2d.relu on every instance, True or False: a
        # step reading a class attribute pays a failed instance lookup first
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ReLU):
                layer.pooled = i + 1 < len(self.layers) and isinstance(self.layers[i + 1], MaxPool2d)
            elif isinstance(layer, MaxPool2d):
                layer.relu = 1 if i > 0 and isinstance(self.layers[i - 1], ReLU) else 0
        if len(s) != 1:
            raise ValueError("the last layer must give a vector of logits, got shape %r" % (s,))
        self.n_classes = s[0]
        self.in_size = _prod(self.in_shape)
        self._built = 0  # 0 nothing, 1 inference buffers, 2 training buffers
        self._acc_static = False  # the int32 scratch is sized for static shifts only
        self._acc2 = None  # the second core's int32 scratch (_lend_scratch)

    # -------------------------------------------------------------- buffers --
    def plan(self, training, static=False):
        """Buffers this model needs: list of (name, typecode, items). static:
        for static shifts only (a smaller int32 scratch, see acc_size)."""
        acts, acc = [], 1
        for i, layer in enumerate(self.layers):
            if layer.has_params:
                acc = max(acc, layer.acc_size(static))
            if not layer.in_place:
                acts.append(("act%d" % i, "b", _prod(layer.out_shape)))
            if training and isinstance(layer, MaxPool2d):
                acts.append(("idx%d" % i, "B", _prod(layer.out_shape)))
        acc = max(acc, self.n_classes)
        acts.append(("acc", "i", acc))
        if static and K._cores > 1:
            # the second core's own scratch for its halves of the fused convolutions
            acts.append(("acc2", "i", acc))
        if training:
            big = max([_prod(l.out_shape) for l in self.layers] + [self.in_size])
            acts.append(("err0", "b", big))
            acts.append(("err1", "b", big))
        return acts

    def build(self, training=False, static=False):
        """Allocate activation (and, for training, error) buffers once; a
        scratch planned for static shifts grows when a dynamic pass needs it."""
        want = 2 if training else 1
        if self._built >= want:
            if not static and self._acc_static:
                self.ws.acc = array("i", bytes(4 * self._acc_items(self._built == 2, False)))
                self._acc_static = False
            self._lend_scratch(static)
            return
        bufs = {}
        try:
            for name, tc, n in self.plan(training, static):
                if name != "acc2":  # _lend_scratch's
                    bufs[name] = bytearray(n) if tc == "B" else array(tc, bytes(n * (4 if tc == "i" else 1)))
        except MemoryError:
            bufs = None
            raise MemoryError("picotrain: this model needs %d bytes of %s buffers; not enough free memory"
                              % (self.nbytes(training, static), "training" if training else "inference"))
        self.ws = Workspace(1)
        self.ws.acc = bufs["acc"]
        self._acc_static = static
        self._x = Tensor(self.in_shape, self.in_exp, data=array("b", bytes(self.in_size)))
        prev = self._x
        self.acts = []
        # (loops, not a generator over ident: a variable a closure reads is a
        # cell, allocated at every call of build, also when it has nothing to do)
        ident, work = [], []
        for i, layer in enumerate(self.layers):
            ident.append(_identity(layer))
            if not ident[i]:
                work.append(i)
        self._work = tuple(work)
        self._work_down = tuple(reversed(work))
        for i, layer in enumerate(self.layers):
            if ident[i]:
                y = prev  # the same tensor: its data and exponent follow with no call
            elif layer.in_place:
                y = Tensor(layer.out_shape, prev.exp, data=prev.data)
            else:
                y = Tensor(layer.out_shape, data=bufs["act%d" % i])
            if isinstance(layer, MaxPool2d):
                layer.idx = bufs.get("idx%d" % i)
            layer.y = y
            self.acts.append(y)
            prev = y
        if training:
            # Errors ping-pong between two buffers; in-place layers keep theirs
            # (an identity layer's input error is its output error's tensor).
            n = len(self.layers)
            self.errs = [None] * n
            cur = 0
            for i in range(n - 1, -1, -1):
                if i + 1 < n and ident[i + 1]:
                    self.errs[i] = self.errs[i + 1]
                else:
                    self.errs[i] = Tensor(self.layers[i].out_shape, data=bufs["err%d" % cur])
                if not self.layers[i].in_place:
                    cur ^= 1
        self._built = want
        self._lend_scratch(static)

    def _lend_scratch(self, static):
        """With two cores (picotrain.use_cores), the worker's own int32 scratch
        for its halves of the fused static convolutions, as large as the
        model's (Model.plan's "acc2"); allocated once, when first needed."""
        if static and K._cores > 1 and (self._acc2 is None or len(self._acc2) < len(self.ws.acc)):
            from .cores import lend_scratch
            self._acc2 = array("i", bytes(4 * len(self.ws.acc)))
            lend_scratch(self._acc2)

    def nbytes(self, training=False, static=False):
        return sum(n * (4 if tc == "i" else 1) for _, tc, n in self.plan(training, static))

    def _acc_items(self, training, static):
        for name, _, n in self.plan(training, static):
            if name == "acc":
                return n

    # -------------------------------------------------------------- compute --
    @property
    def pruned(self):
        """True when some layer carries edge-popup scores."""
        for l in self.layers:
            if l.has_params and l.scores is not None:
                return True
        return False

    @property
    def static(self):
        """True when every parametrised layer has calibrated static shifts."""
        for l in self.layers:  # a loop, not all(genexpr): no allocation
            if l.has_params and l.shift is None:
                return False
        return True

    def check_input(self, x, label=None):
        """A clear error for an input x (and a label, when given) the model cannot take."""
        if not isinstance(x, array) or (_HAS_TYPECODE and x.typecode != "b"):
            raise TypeError("model input must be array('b') of %d int8 values (exponent %d), got %s"
                            % (self.in_size, self.in_exp, type(x).__name__))
        if len(x) != self.in_size:
            raise ValueError("model input has %d values; shape %r needs %d"
                             % (len(x), self.in_shape, self.in_size))
        if label is not None and not (0 <= label < self.n_classes):
            raise ValueError("label %r out of range 0..%d" % (label, self.n_classes - 1))

    def _forward(self, x, dynamic):
        """Forward pass over x (array('b'), trusted); returns the logits Tensor."""
        xt = self._x
        xt.data = x  # read the caller's buffer in place: no copy
        xt.exp = self.in_exp
        ws = self.ws
        prev = xt
        layers = self.layers
        acts = self.acts
        # In-place layers point their output at their input's buffer themselves;
        # the identity layers (_identity) are skipped: their output is prev.
        for i in self._work:
            y = acts[i]
            layers[i].forward(prev, y, ws, dynamic)
            prev = y
        return prev

    def forward(self, x, dynamic=None):
        """Logits Tensor for input x; dynamic=None uses static shifts when calibrated."""
        self.check_input(x)
        if dynamic is None:
            dynamic = not self.static
        self.build(static=not dynamic)
        return self._forward(x, dynamic)

    def predict(self, x, dynamic=None):
        """Class index predicted for input x."""
        y = self.forward(x, dynamic)
        return K.argmax_s8(y.data, y.size)

    def param_layers(self):
        return [l for l in self.layers if l.has_params]

    def summary(self):
        lines = ["input %r exp %d" % (self.in_shape, self.in_exp)]
        for i, l in enumerate(self.layers):
            extra = ""
            if l.has_params:
                extra = "  w_exp %d shift %s bshift %s%s" % (l.weight.exp, l.shift, l.bshift,
                                                           " frozen" if l.frozen else "")
            lines.append("%2d %-28r -> %r%s" % (i, l, l.out_shape, extra))
        return "\n".join(lines)

    def save(self, path, extra=None):
        from .modelfile import save
        save(self, path, extra)
