"""Fully quantized training with dynamic partial gradient updates
(Deutel, Hannig, Mutschler, Teich: "On-Device Training of Fully Quantized Deep
Neural Networks on Cortex-M Microcontrollers", arXiv 2407.10734, IEEE TCAD).

FQT: weights, activations, errors and weight gradients are int8 with one scale
per tensor, computed without floating point. The paper's per-tensor scales
map onto our per-tensor power-of-two exponents: forward and backward passes
are NITI's dynamic ones, the weight gradient is quantized to int8 with the
same rule (bit length of its largest value), and the update is plain SGD with
a learning rate 2**-lr in real units: w -= lr * g, i.e. the int8 gradient
shifted by w_exp + lr - g_exp bits, rounded pseudo-stochastically (NITI's
deterministic rule), saturated (and counted).

Dynamic partial updates: each step, in every trainable layer, only the `k`
output channels (neurons of a Linear layer, filters of a Conv2d layer) whose
gradient is largest are updated, k = budget * channels (at least 1). The
ranking is cheap, from the error at the layer's output: the L1 norm of each
output channel's error (for a Linear layer |e[o]|, which orders the rows of
the gradient e x^T exactly). Gradients of the other channels are not computed
at all: that is the speed-up. docs/NUMERICS.md ("Partial-update FQT") has
every rule and where we depart from the paper.

    t = PartialFQT(model, budget=0.25, lr=6)   # 25 % of the channels per step
    t = FQT(model, lr=6)                       # every channel (the reference)
"""
from array import array

from . import kernels as K
from .train import NITI, Trainer

BITS = 7


def _dyn(bits):
    s = bits - BITS
    return s if s > 0 else 0


def _rows(buf, n_rows, row):
    """Views of the rows of buf, made once (a step then slices nothing)."""
    mv = memoryview(buf)
    return [mv[r * row:(r + 1) * row] for r in range(n_rows)]


class FQT(NITI):
    """Fully quantized training, every weight updated every step (the
    reference for PartialFQT): dynamic per-tensor exponents, int8 weight
    gradient, SGD with learning rate 2**-lr."""
    name = "FQT"
    dynamic = True
    fuse_linear = False  # an int32 gradient per layer: FQT's shift needs its exponent

    def __init__(self, model, lr=6, **kw):
        if not (-8 <= lr <= 24):
            raise ValueError("lr (learning rate 2**-lr) must be in -8..24, got %r" % (lr,))
        for i, l in enumerate(model.layers):
            if l.has_params and l.scores is not None:
                raise ValueError("layer %d has edge-popup scores: bake() the model first" % i)
        self.lr = lr
        # NITI's gradient buffers and accumulation, FQT's own update rule
        # (_apply): NITI.__init__ is skipped, FQT has a learning rate, not mu.
        Trainer.__init__(self, model, **kw)

    def _shift(self, layer, g, n, gexp):
        """Total shift from the int32 gradient to the step: s to int8 (the
        FQT gradient), then w_exp + lr - g8_exp for the learning rate (never
        negative: a step is at most the int8 gradient)."""
        s = _dyn(K.bitlen_s32(g, n))
        r = layer.weight.exp + self.lr - (gexp + s)
        return s + (r if r > 0 else 0)

    def _apply(self):
        layers = self.model.layers
        for i in self.train_idx:
            if self.gexp[i] is None:
                continue
            l = layers[i]
            g = self.grads[i]
            n = len(g)
            l.sat_upd += K.update_s8(l.weight.data, g, n, self._shift(l, g, n, self.gexp[i]))
            self.gexp[i] = None


class PartialFQT(FQT):
    """FQT where each step updates only the `budget` fraction of output
    channels with the largest error (batch 1: the other channels' gradients
    are never computed)."""
    name = "PartialFQT"

    def __init__(self, model, budget=0.25, lr=6, **kw):
        if not (0.0 < budget <= 1.0):
            raise ValueError("budget (fraction of channels updated per step) must be in (0, 1], got %r"
                             % (budget,))
        self.budget = budget
        FQT.__init__(self, model, lr=lr, **kw)

    def _geometry(self):
        """Per trainable layer (channels, error plane, gradient row, k), and
        the largest selected-gradient, ranked-matrix, channel and row sizes."""
        layers = self.model.layers
        geo = {}
        big_g = big_e = big_c = big_plane = 1
        for i in self.train_idx:
            l = layers[i]
            c = l.n_out if l.kind == 1 else l.c_out
            plane = 1 if l.kind == 1 else l.oh * l.ow
            row = l.weight.size // c
            k = int(self.budget * c + 0.5)
            k = 1 if k < 1 else (c if k > c else k)
            geo[i] = (c, plane, row, k)
            big_g = max(big_g, (k if self.batch == 1 else c) * row)
            big_e = max(big_e, c * (plane if self.batch == 1 else row))
            big_c = max(big_c, c)
            big_plane = max(big_plane, plane if self.batch == 1 else row)
        return geo, big_g, big_e, big_c, big_plane

    def _trained(self, model):
        """The weights and the per-channel update counts."""
        arrays, numbers = Trainer._trained(self, model)
        for i in self.train_idx:
            cnt = model.layers[i].upd_count
            arrays.append((cnt, 4 * len(cnt)))
        return arrays, numbers

    def _plan_nbytes(self):
        """Buffers by category (picotrain.memory). Batch 1: the selected rows'
        int32 gradient (shared by the layers), per layer the channel norms,
        the selection and the update counts, the ranking scratch. Mini-batch:
        FQT's full gradients, then the same selection at the update. (The row
        views are small Python objects, not counted.)"""
        geo, big_g, big_e, big_c, big_plane = self._geometry()
        sel = 0
        for i in self.train_idx:
            c, plane, row, k = geo[i]
            sel += 4 * (k + c + c)
        if self.batch == 1:
            g = 4 * big_g
        else:
            sizes = [self.model.layers[i].grad_size() for i in self.train_idx]
            g = 4 * sum(sizes) + 4 * max(sizes)
        return {"gradients": g, "selection": sel, "scratch": big_e + 4 * big_c + 2 * big_plane}

    def _setup(self):
        m = self.model
        layers = m.layers
        self.k = {}
        self.c = {}
        self.plane = {}
        self.row = {}
        self.idx = {}
        self.w_rows = {}
        self.e_rows = {}
        self.g_rows = {}
        self.norms = {}
        geo, big_g, big_e, big_c, big_plane = self._geometry()
        for i in self.train_idx:
            l = layers[i]
            c, plane, row, k = geo[i]
            self.c[i], self.plane[i], self.row[i], self.k[i] = c, plane, row, k
            self.idx[i] = array("i", bytes(4 * k))
            self.norms[i] = array("i", bytes(4 * c))
            self.w_rows[i] = _rows(l.weight.data, c, row)
            self.e_rows[i] = _rows(m.errs[i].data, c, plane)
            cnt = getattr(l, "upd_count", None)
            if cnt is None or len(cnt) != c:
                l.upd_count = array("I", bytes(4 * c))
        # batch 1: one shared int32 buffer for the selected rows' gradient;
        # mini-batch: a full int32 gradient per layer (FQT's), ranked at _apply
        self.grads = {}
        self.gexp = {}
        if self.batch == 1:
            self.gsel = array("i", bytes(4 * big_g))
            self.gsel_rows = {}
            for i in self.train_idx:
                self.gsel_rows[i] = _rows(self.gsel, self.k[i], self.row[i])
            self.scratch = None
        else:
            big = 1
            for i in self.train_idx:
                n = layers[i].grad_size()
                self.grads[i] = array("i", bytes(4 * n))
                self.gexp[i] = None
                self.g_rows[i] = _rows(self.grads[i], self.c[i], self.row[i])
                big = max(big, n)
            self.gsel = None
            self.scratch = array("i", bytes(4 * big))
        # ranking scratch: a copy of the error (or int8 gradient), the
        # positive parts' sums, and rows of +1 / -1 (see _rank)
        self.tmp8 = array("b", bytes(big_e))
        self.pos = array("i", bytes(4 * big_c))
        self.ones = array("b", [1] * big_plane)
        self.mones = array("b", [-1] * big_plane)

    def _rank(self, i, src, c, plane):
        """norms[i][ch] = sum_j |src[ch*plane + j]| (int8 src, c rows of
        plane), then idx[i] = the k channels of largest norm (topk_abs_s32:
        ties to the lower channel, in channel order). L1 = 2 P - S with P the
        sum of the positive parts (relu of a copy) and S the plain sum, each a
        matrix-vector product with a row of ones: existing kernels only."""
        norms = self.norms[i]
        if plane == 1:
            K.fc_s8_s32(self.ones, src, norms, 1, c)  # |norm| = |e[o]|
        else:
            tmp = self.tmp8
            K.fc_s8_s32(self.mones, src, norms, plane, c)          # -S (first: src may be tmp)
            K.maxpool2d_s8_chw(src, tmp, None, c, plane, 1, 1, 1)  # a rectified copy
            K.fc_s8_s32(self.ones, tmp, self.pos, plane, c)        # P
            K.acc_add_s32(norms, self.pos, c, 0, 0)                # P - S
            K.acc_add_s32(norms, self.pos, c, 0, 0)                # 2P - S = L1
        K.topk_abs_s32(norms, c, self.k[i], self.idx[i])

    def _grad(self, i, layer, e, x):
        if self.batch > 1:
            self._accumulate(i, layer, e, x, self.grads[i])
            return
        c, k = self.c[i], self.k[i]
        self._rank(i, e.data, c, self.plane[i])
        idx = self.idx[i]
        er = self.e_rows[i]
        gr = self.gsel_rows[i]
        # the selected channels' gradients, and only those
        if layer.kind == 1:
            for s in range(k):
                K.outer_s8_s32(er[idx[s]], x.data, gr[s], 1, layer.n_in)
        else:
            for s in range(k):
                K.conv2d_grad_s8_s32_chw(er[idx[s]], x.data, gr[s], layer.c_in, layer.h, layer.w, 1,
                                         layer.k, layer.stride, layer.pad)
        row = self.row[i]
        sh = self._shift(layer, self.gsel, k * row, e.exp + x.exp)
        self._update_rows(layer, i, gr, row, sh, False)

    def _update_rows(self, layer, i, rows, row, sh, by_channel):
        idx = self.idx[i]
        wr = self.w_rows[i]
        cnt = layer.upd_count
        for s in range(self.k[i]):
            j = idx[s]
            layer.sat_upd += K.update_s8(wr[j], rows[j] if by_channel else rows[s], row, sh)
            cnt[j] += 1

    def _apply(self):
        if self.batch == 1:
            return
        layers = self.model.layers
        for i in self.train_idx:
            if self.gexp[i] is None:
                continue
            l = layers[i]
            g = self.grads[i]
            n = len(g)
            c, row = self.c[i], self.row[i]
            s = _dyn(K.bitlen_s32(g, n))
            K.requant_s32_s8(g, self.tmp8, n, s)  # the int8 gradient ranks the rows
            self._rank(i, self.tmp8, c, row)
            self._update_rows(l, i, self.g_rows[i], row, self._shift(l, g, n, self.gexp[i]), True)
            self.gexp[i] = None


# ------------------------------------------------------- model-file state --
# PFQT: u16 layer | u16 channels | u32 x channels: how many steps updated each
# channel (which filters adapted, and how often)

def sections(model):
    import struct
    out = []
    for i, l in enumerate(model.layers):
        cnt = getattr(l, "upd_count", None) if l.has_params else None
        if cnt is None:
            continue
        head = struct.pack("<HH", i, len(cnt))
        out.append((b"PFQT", [(head, len(head)), (cnt, 4 * len(cnt))]))
    return out


def attach(model, secs):
    """Restore the per-channel update counts read by modelfile.load()."""
    import struct
    layers = model.layers
    for tag, b in secs:
        if tag != b"PFQT":
            continue
        i, c = struct.unpack_from("<HH", b, 0)
        if i >= len(layers) or not layers[i].has_params:
            raise ValueError("PFQT section for layer %d, which has no parameters" % i)
        l = layers[i]
        want = l.n_out if l.kind == 1 else l.c_out
        if c != want or len(b) != 4 + 4 * c:
            raise ValueError("PFQT of layer %d: %d channels in %d bytes, the layer has %d channels"
                             % (i, c, len(b), want))
        cnt = array("I", bytes(4 * c))
        for j in range(c):
            cnt[j] = struct.unpack_from("<I", b, 4 + 4 * j)[0]
        l.upd_count = cnt
