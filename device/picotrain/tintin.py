"""Tin-Tin: integer-only training with compound exponents (Hu et al., arXiv 2504.09405).

Every tensor is int8 with three int8 exponents (S, U, D):

    real value = v * 2**S * (4/3)**U * (4/5)**D

Exponents add when values multiply (an int32 accumulator of x * w carries
(Sx+Sw, Ux+Uw, Dx+Dw)). Bringing an int32 accumulator back to int8 multiplies
it by a factor r = 2**-s * (4/3)**u * (4/5)**d chosen so that the largest
value fills the int8 range; r is applied as mul / 2**shift with mul a sum of at
most `n` powers of two (binary decomposition, kernel rescale_s32_s8), and the
output exponents are the accumulator's minus (u, d) and plus s. Where NITI's
power-of-two shifts leave the largest value anywhere in [64, 127], the six
fractional levels 1, 16/15, 4/3, 64/45, 8/5, 16/9 leave it in [102, 127]
(at most a factor 1.25 unused instead of 2).

Weight update (gradient-aligned, update factor m): the int32 gradient is
rescaled to int8 at an intermediate scale 2**m finer than the weight's, then
subtracted from the weight with NITI's pseudo-stochastic rounding of the last
m bits: the largest step is about 2**-m of the int8 range. When the largest
possible step could push a weight past +-127, the weights are first rescaled
(shrunk by a factor from the same grid, exponents adjusted): weights are never
clipped silently. At the start the trainable weights are rescaled (usually
upscaled) to fill the range (the paper's initial weight upscaling).

docs/NUMERICS.md ("Tin-Tin") has every rule and where we depart from the paper.
The (S, U, D) bookkeeping lives on the tensors as plain ints: Tensor.exp is S,
Tensor.u and Tensor.d are U and D; a step allocates nothing.
"""
from array import array

from . import kernels as K
from .kernels_py import binary_decompose, bit_length
from .train import Trainer

Q = 127
# Output exponents of activations, errors and rescaled weights stay in this
# window: U in {0, 1, 2}, D in {0, 1}. Six (U, D) targets give six fractional
# levels per octave; logits (and batch gradients) use the single target (0, 0).
U_WIN = 3
D_WIN = 2
# Table of factors (4/3)**u (4/5)**d for u in [-UT, UT], d in [-DT, DT]: it
# covers every (u, d) a rescale can need (accumulators carry U <= 4, D <= 2).
UT = 4
DT = 2
DSPAN = 2 * DT + 1
M_BITS = 13  # the fit test uses the top 13 bits of max|acc|: products stay below 2**29


def level(u, d):
    """(num, den, a): (4/3)**u (4/5)**d * 2**a = num/den, in [1, 2)."""
    num = (4 ** u if u > 0 else 3 ** -u) * (4 ** d if d > 0 else 5 ** -d)
    den = (3 ** u if u > 0 else 4 ** -u) * (5 ** d if d > 0 else 4 ** -d)
    a = 0
    while num < den:
        num <<= 1
        a += 1
    while num >= 2 * den:
        den <<= 1
        a -= 1
    return num, den, a


def scale(S, U, D):
    """The real scale 2**S (4/3)**U (4/5)**D (float; host checks only)."""
    return 2.0 ** S * (4.0 / 3.0) ** U * 0.8 ** D


def decomposition_bound(n, bits=16):
    """Relative error bound of binary_decompose with n terms on a level in
    [1, 2) (docs/NUMERICS.md): 1/(2**(n+1) - 1) for n < bits, else 1/(2**bits + 1)."""
    return 1.0 / (2 ** (n + 1) - 1) if n < bits else 1.0 / (2 ** bits + 1)


class Table:
    """The rescale factors for one n: for each (u, d) the decomposition
    mul / 2**sh of the level (4/3)**u (4/5)**d 2**a, its a, and its rank
    among the exact levels (to compare factors without big integers)."""

    def __init__(self, n, bits=16):
        if not (1 <= n <= 16):
            raise ValueError("n (terms of the binary decomposition) must be in 1..16, got %r" % (n,))
        cells = (2 * UT + 1) * DSPAN
        self.n = n
        self.mul = array("i", bytes(4 * cells))
        self.sh = array("b", bytes(cells))
        self.a = array("b", bytes(cells))
        self.rank = array("h", bytes(2 * cells))
        exact = []
        for u in range(-UT, UT + 1):
            for d in range(-DT, DT + 1):
                num, den, a = level(u, d)
                j = (u + UT) * DSPAN + d + DT
                self.mul[j], self.sh[j] = binary_decompose(num, den, n, bits)
                self.a[j] = a
                exact.append((num, den, j))
        # rank by the exact level value: sort by num/den with integer cross products
        for x in exact:
            r = 0
            for y in exact:
                if y[0] * x[1] < x[0] * y[1]:
                    r += 1
            self.rank[x[2]] = r

    def nbytes(self):
        return len(self.mul) * (4 + 1 + 1 + 2)


class TinTin(Trainer):
    """Tin-Tin: int8 tensors with (S, U, D) exponents, binary-decomposition
    rescaling with at most n terms, updates of about 2**-m of the weight range."""
    name = "TinTin"
    dynamic = True

    def __init__(self, model, m=5, n=4, **kw):
        if not (1 <= m <= 7):
            raise ValueError("m (update factor: steps of about 2**-m of the weight range) must be in 1..7, got %r"
                             % (m,))
        for i, l in enumerate(model.layers):
            if l.has_params and l.bias is not None:
                raise ValueError("TinTin trains bias-free networks; layer %d (%r) has a bias" % (i, l))
            if l.has_params and l.scores is not None:
                raise ValueError("layer %d has edge-popup scores: bake() the model before TinTin" % i)
        self.m = m
        self.table = Table(n)
        self.n = n
        # the largest step update_s8 can make from an int8 value at shift m
        self.dmax = (Q >> m) + 1
        Trainer.__init__(self, model, **kw)

    # ----------------------------------------------------------- set-up --
    def _setup(self):
        m = self.model
        layers = m.layers
        for t in [m._x] + m.acts + m.errs:
            t.u = 0
            t.d = 0
        big = 1
        fresh = []
        for i in range(len(layers)):
            l = layers[i]
            if l.has_params:
                w = l.weight
                if not hasattr(w, "u"):  # not yet trained by Tin-Tin (no TINT state)
                    w.u = 0
                    w.d = 0
                    fresh.append(i)
                if not hasattr(l, "w_rescales"):
                    l.w_rescales = 0
        for i in self.train_idx:
            big = max(big, layers[i].grad_size())
        self.grads = {}
        self.gS, self.gU, self.gD = {}, {}, {}
        self.filled = {}
        for i in self.train_idx:
            self.grads[i] = array("i", bytes(4 * layers[i].grad_size()))
            self.gS[i] = self.gU[i] = self.gD[i] = 0
            self.filled[i] = False
        self.s8 = array("b", bytes(big))       # int8 scratch: the aligned gradient
        self.scratch = array("i", bytes(4 * big)) if self.batch > 1 else None
        self.one = array("b", [1])            # fc with one input widens int8 to int32
        self.idx1 = array("i", [0])
        # result of _fit: factor mul / 2**shift and output exponents
        self.f_mul = self.f_shift = self.f_S = self.f_U = self.f_D = 0
        self.last_param = -1
        for i in range(len(layers)):
            if layers[i].has_params:
                self.last_param = i
        self.upscale([i for i in self.train_idx if i in fresh])

    def _trained(self, model):
        """The weights, and all three exponents and the rescale count of each."""
        arrays, numbers = Trainer._trained(self, model)
        for i in self.train_idx:
            l = model.layers[i]
            numbers += [(l.weight, "u"), (l.weight, "d"), (l, "w_rescales")]
        return arrays, numbers

    def upscale(self, which=None):
        """Rescale the trainable weight tensors (which: layer indices; default
        all) to fill [-(127 - dmax), 127 - dmax]: the largest step then never
        overflows; exponents follow. Done at construction for layers Tin-Tin
        has not trained before (a model loaded with TINT state resumes as is)."""
        for i in self.train_idx if which is None else which:
            self._rescale_weights(self.model.layers[i], Q - self.dmax, True, self.grads[i])

    def _plan_nbytes(self):
        """Buffers by category (picotrain.memory): an int32 gradient per
        trainable layer; an int8 scratch (the aligned gradient) of the largest
        of them, plus for mini-batches an int32 one; the rescale table."""
        sizes = [self.model.layers[i].grad_size() for i in self.train_idx]
        big = max(sizes)
        scratch = big + 1 + 4 + (4 * big if self.batch > 1 else 0)
        return {"gradients": 4 * sum(sizes), "scratch": scratch, "tables": self.table.nbytes()}

    # ------------------------------------------------------ the rescale --
    def _fit(self, M, T, Sa, Ua, Da, only0):
        """Choose the largest factor r = 2**-s (4/3)**u (4/5)**d with
        max|acc| * r <= T (M = max|acc| >= 0), the output exponents in the
        window (only0: U = D = 0). Sets f_mul, f_shift (rescale_s32_s8's
        arguments) and f_S, f_U, f_D (the output exponents). Small ints only."""
        if M == 0:
            self.f_mul, self.f_shift = 1, 0
            self.f_S, self.f_U, self.f_D = Sa, 0, 0
            return
        tb = self.table
        b = bit_length(M)
        t = b - M_BITS if b > M_BITS else 0
        Mh = (M >> t) + (1 if t else 0)   # max|acc| <= Mh * 2**t
        s = b - bit_length(T)
        nu = 1 if only0 else U_WIN
        nd = 1 if only0 else D_WIN
        for _ in range(3):
            best = -1
            for tu in range(nu):
                u = Ua - tu
                if u < -UT or u > UT:
                    continue
                for td in range(nd):
                    dd = Da - td
                    if dd < -DT or dd > DT:
                        continue
                    j = (u + UT) * DSPAN + dd + DT
                    rk = tb.rank[j]
                    if rk <= best:
                        continue
                    mul = tb.mul[j]
                    tot = tb.sh[j] + s
                    if tot >= t:
                        sh = tot - t
                        v = Mh * mul
                        if sh > 29:
                            v = 0  # v < 2**29: rounds to 0
                        elif sh:
                            v = (v + (1 << (sh - 1))) >> sh
                    elif t or tot < -16:
                        continue  # Mh >= 2**12: far above T
                    else:
                        mul <<= -tot
                        if mul > T:
                            continue
                        tot = 0
                        v = M * mul
                    if v <= T:
                        best = rk
                        self.f_mul, self.f_shift = mul, tot
                        self.f_S = Sa + s - tb.a[j]
                        self.f_U, self.f_D = tu, td
            if best >= 0:
                return
            s += 1
        raise RuntimeError("TinTin: no rescale factor fits")  # unreachable: s + 2 always fits

    def _requant(self, acc, n, out, Sa, Ua, Da, only0):
        """out = acc rescaled to fill int8; out's exponents set."""
        M = K.topk_abs_s32(acc, n, 1, self.idx1) if n else 0
        self._fit(M, Q, Sa, Ua, Da, only0)
        K.rescale_s32_s8(acc, out.data, n, self.f_mul, self.f_shift)
        out.exp, out.u, out.d = self.f_S, self.f_U, self.f_D

    def _rescale_weights(self, l, T, always, buf):
        """Rescale layer l's weights so that max|w| <= T (always: also up, to
        fill it); buf is an int32 scratch of the weight count. Returns True
        when the weights were rescaled."""
        w = l.weight
        n = w.size
        K.fc_s8_s32(self.one, w.data, buf, 1, n)  # int8 -> int32
        M = K.topk_abs_s32(buf, n, 1, self.idx1)
        if M == 0 or (not always and M <= T):
            return False
        self._fit(M, T, w.exp, w.u, w.d, False)
        K.rescale_s32_s8(buf, w.data, n, self.f_mul, self.f_shift)
        w.exp, w.u, w.d = self.f_S, self.f_U, self.f_D
        l.w_rescales += 1
        return True

    # ------------------------------------------------------------ passes --
    def _acc_fwd(self, l, x, acc):
        if l.kind == 1:
            K.fc_s8_s32(x.data, l.weight.data, acc, l.n_in, l.n_out)
        else:
            K.conv2d_s8_s32_chw(x.data, l.weight.data, acc, l.c_in, l.h, l.w, l.c_out, l.k, l.stride, l.pad)

    def _forward(self, x):
        """Tin-Tin forward pass over x; returns the logits (exponents (S, 0, 0))."""
        m = self.model
        xt = m._x
        xt.data = x
        xt.exp = m.in_exp
        xt.u = 0
        xt.d = 0
        ws = m.ws
        layers = m.layers
        acts = m.acts
        last = self.last_param
        prev = xt
        for i in m._work:  # an identity layer's output is prev (Model.build)
            l = layers[i]
            y = acts[i]
            if l.has_params:
                self._acc_fwd(l, prev, ws.acc)
                w = l.weight
                self._requant(ws.acc, y.size, y, prev.exp + w.exp, prev.u + w.u, prev.d + w.d, i == last)
            else:
                l.forward(prev, y, ws, True)
                y.exp, y.u, y.d = prev.exp, prev.u, prev.d
            prev = y
        return prev

    def _backward_input(self, l, e, e_in):
        m = self.model
        if l.has_params:
            acc = m.ws.acc
            if l.kind == 1:
                K.fc_t_s8_s32(e.data, l.weight.data, acc, l.n_in, l.n_out)
            else:
                K.conv2d_t_s8_s32_chw(e.data, l.weight.data, acc, l.c_in, l.h, l.w, l.c_out, l.k,
                                      l.stride, l.pad)
            w = l.weight
            self._requant(acc, e_in.size, e_in, e.exp + w.exp, e.u + w.u, e.d + w.d, False)
        else:
            l.backward_input(e, e_in, m.ws, True)
            e_in.exp, e_in.u, e_in.d = e.exp, e.u, e.d

    def _pass(self, x, label, train=True):
        """Trainer._pass with Tin-Tin's forward pass and error backward."""
        m = self.model
        y = self._forward(x)
        res = self.result
        res[1] = 1 if K.argmax_s8(y.data, y.size) == label else 0
        layers, errs, acts = m.layers, m.errs, m.acts
        top = len(layers) - 1
        e = errs[top]
        res[0] = -K.softmax_xent_s8(y.data, y.size, y.exp, label, e.data, m.ws.acc)
        e.exp = -7
        e.u = 0
        e.d = 0
        lowest = self.lowest
        for i in m._work_down:
            if i < lowest:
                break
            layer = layers[i]
            e = errs[i]
            xin = acts[i - 1] if i > 0 else m._x
            if i > lowest:
                self._backward_input(layer, e, errs[i - 1])
            if train and layer.has_params and not layer.frozen:
                self._grad(i, layer, e, xin)
        if train:
            self.count += 1
            if self.count % self.batch == 0:
                self._apply()

    def predict(self, x):
        """Class of x under Tin-Tin's own forward pass."""
        self.model.check_input(x)
        y = self._forward(x)
        return K.argmax_s8(y.data, y.size)

    def evaluate(self, data):
        n = ok = 0
        for x, label in data:
            ok += self.predict(x) == label
            n += 1
        return ok / n if n else 0.0

    # ------------------------------------------------------------ method --
    def _grad(self, i, layer, e, x):
        S, U, D = e.exp + x.exp, e.u + x.u, e.d + x.d
        g = self.grads[i]
        if self.batch == 1:
            layer.grad(e, x, g)
            self.gS[i], self.gU[i], self.gD[i] = S, U, D
            self.filled[i] = True
            return
        # mini-batch: each sample's gradient is brought to int8 with U = D = 0
        # (one common scale family), widened, and summed aligned by powers of two
        n = len(g)
        s = self.scratch
        layer.grad(e, x, s)
        M = K.topk_abs_s32(s, n, 1, self.idx1)
        if M == 0:
            return
        self._fit(M, Q, S, U, D, True)
        K.rescale_s32_s8(s, self.s8, n, self.f_mul, self.f_shift)
        K.fc_s8_s32(self.one, self.s8, s, 1, n)
        ge = self.f_S
        if not self.filled[i]:
            K.acc_add_s32(g, s, n, 40, 0)  # g = s: any int32 / 2**40 rounds to 0
            self.gS[i] = ge
            self.gU[i] = self.gD[i] = 0
            self.filled[i] = True
        elif ge > self.gS[i]:
            K.acc_add_s32(g, s, n, ge - self.gS[i], 0)
            self.gS[i] = ge
        else:
            K.acc_add_s32(g, s, n, 0, self.gS[i] - ge)

    def _apply(self):
        layers = self.model.layers
        for i in self.train_idx:
            if not self.filled[i]:
                continue
            self.filled[i] = False
            l = layers[i]
            g = self.grads[i]
            n = len(g)
            M = K.topk_abs_s32(g, n, 1, self.idx1)
            if M == 0:
                continue
            w = l.weight
            # 1. the gradient at the intermediate scale (2**m finer than the
            #    weight's): int8, filling the range
            self._fit(M, Q, self.gS[i], self.gU[i], self.gD[i], False)
            K.rescale_s32_s8(g, self.s8, n, self.f_mul, self.f_shift)
            # 2. headroom: a step is at most dmax; shrink the weights first if
            #    the largest could cross 127
            self._rescale_weights(l, Q - self.dmax, False, g)
            # 3. w -= round_pseudo(g8 / 2**m): the last m bits rounded as NITI does
            K.fc_s8_s32(self.one, self.s8, g, 1, n)
            l.sat_upd += K.update_s8(w.data, g, n, self.m)


# ------------------------------------------------------- model-file state --
# TINT: u16 layer | i8 U | i8 D | u8 n | u8 m | u32 weight rescales
# (S is the PARM section's weight exponent.)

def sections(model):
    import struct
    out = []
    for i, l in enumerate(model.layers):
        if not l.has_params or not hasattr(l.weight, "u"):
            continue
        body = struct.pack("<HbbBBI", i, l.weight.u, l.weight.d, 0, 0, getattr(l, "w_rescales", 0))
        out.append((b"TINT", [(body, len(body))]))
    return out


def attach(model, secs):
    """Restore the (U, D) weight exponents read by modelfile.load()."""
    import struct
    layers = model.layers
    for tag, b in secs:
        if tag != b"TINT":
            continue
        if len(b) != 10:
            raise ValueError("TINT section has %d bytes, expected 10" % len(b))
        i, u, d, _, _, resc = struct.unpack("<HbbBBI", b)
        if i >= len(layers) or not layers[i].has_params:
            raise ValueError("TINT section for layer %d, which has no parameters" % i)
        if not (0 <= u < U_WIN and 0 <= d < D_WIN):
            raise ValueError("TINT of layer %d: exponents U=%d, D=%d outside the window (U 0..%d, D 0..%d)"
                             % (i, u, d, U_WIN - 1, D_WIN - 1))
        layers[i].weight.u, layers[i].weight.d = u, d
        layers[i].w_rescales = resc
