"""PRIOT and PRIOT-S: training by pruning frozen weights (edge-popup).

Anada et al., "PRIOT: Pruning-Based Integer-Only Transfer Learning for
Embedded Systems" (arXiv 2503.16860). The pretrained int8 weights never
change; every edge (or, for PRIOT-S, a chosen subset of edges) gets an
integer score, and the forward pass uses an edge only while its score is at
or above a fixed threshold. The mask is never stored: kernels test the score
as they read each weight. Backward is straight-through: the score gradient is
the weight gradient times the weight, grad_s = (e (x) x) * W, applied as
s -= round(grad_s / 2**shift) with saturation. All scales are static
(calibrated), which is what makes PRIOT cheap on a Pico.

Choices made here (examples/results/priot_params.md and priot_table.md):
- scores start above the threshold, so training starts from the pretrained
  network and prunes from there: init uniform in [thr, thr + init_span);
- the per-layer step shift is static: gbits (calibrated bit length of the
  weight gradient) + bitlen(max|w|) - rate, so the largest score step of a
  layer is about 2**rate; rate=7 by default: on rotated MNIST rate 2/4/6/7/8
  gave 63.3/79.0/91.4/93.2/93.3% at 45 degrees (3 seeds, 15 epochs; rate 8
  is less stable: its last epoch averages 91.6%) and 82.4/90.3/95.1/94.9/94.0%
  at 30 degrees (2 seeds, 10 epochs, a tie within one std);
- the error sent to a layer's input uses the unmasked W (the paper's reading);
  mask_backward=True uses W*M instead.
"""
import struct
from array import array

from . import kernels as K
from .rng import XorShift32
from .train import Trainer

SMAX = {8: 127, 16: 32767}
TYPECODE = {8: "b", 16: "h"}


def _bitlen(v):
    n = 0
    while v:
        v >>= 1
        n += 1
    return n


def _wbits(layer):
    w = layer.weight.data
    m = 0
    for j in range(layer.weight.size):
        a = w[j] if w[j] >= 0 else -w[j]
        if a > m:
            m = a
    return _bitlen(m)


def select_random(n, n_scored, rng):
    """Bitmap of n_scored edges out of n, uniformly (Knuth's selection
    sampling: one pass, no index list, so it fits a Pico)."""
    bm = bytearray((n + 7) >> 3)
    need = n_scored
    for j in range(n):
        if need and rng.below(n - j) < need:
            bm[j >> 3] |= 1 << (j & 7)
            need -= 1
    return bm


def select_by_weight(w, n, n_scored):
    """Bitmap of the n_scored edges with the largest |w| (ties: lower index
    first), from a 128-bin histogram: one pass to count, one to mark."""
    hist = [0] * 128
    for j in range(n):
        hist[abs(w[j]) if w[j] != -128 else 127] += 1
    cut, above = 127, 0
    while cut > 0 and above + hist[cut] < n_scored:
        above += hist[cut]
        cut -= 1
    ties = n_scored - above  # edges taken at |w| == cut
    bm = bytearray((n + 7) >> 3)
    for j in range(n):
        a = abs(w[j]) if w[j] != -128 else 127
        if a > cut or (a == cut and ties > 0):
            if a == cut:
                ties -= 1
            bm[j >> 3] |= 1 << (j & 7)
    return bm


def popcount(bm, n):
    c = 0
    for j in range(n):
        c += (bm[j >> 3] >> (j & 7)) & 1
    return c


class PRIOT(Trainer):
    """Edge-popup on frozen pretrained weights with static scales."""
    name = "PRIOT"
    dynamic = False
    trains_weights = False

    def __init__(self, model, threshold=0, score_bits=8, rate=7, init_span=32, seed=1,
                 mask_backward=False, reset=False, **kw):
        if score_bits not in SMAX:
            raise ValueError("score_bits must be 8 or 16, got %r" % (score_bits,))
        smax = SMAX[score_bits]
        if not (-smax <= threshold <= smax):
            raise ValueError("threshold %r outside the %d-bit score range" % (threshold, score_bits))
        if not (1 <= init_span <= smax - threshold + 1):
            raise ValueError("init_span %r: scores must start in [threshold, %d]" % (init_span, smax))
        if not (0 <= rate <= 14):
            raise ValueError("rate (bits of the largest score step) must be in 0..14, got %r" % (rate,))
        self.threshold, self.score_bits, self.smax = threshold, score_bits, smax
        self.rate, self.init_span = rate, init_span
        self.rng = XorShift32(seed)
        self.mask_backward = mask_backward
        self.reset = reset
        Trainer.__init__(self, model, **kw)

    def _subset(self, i, layer):
        """Which edges get scores: all (None) for PRIOT."""
        return None

    def _setup(self):
        layers = self.model.layers
        self.shifts = {}
        self.grads = {}
        for i in self.train_idx:
            l = layers[i]
            if l.gbits is None:
                raise ValueError("%s needs calibrated gradient sizes; layer %d (%r) has none: "
                                 "run picotrain.calibrate(model, data) first" % (self.name, i, l))
            self.shifts[i] = max(0, l.gbits + _wbits(l) - self.rate)
            l.mask_bwd = self.mask_backward
            if l.scores is None or self.reset:
                self._init_scores(i, l)
            elif (16 if _is16(l.scores) else 8) != self.score_bits:
                raise ValueError("layer %d already has %d-bit scores; score_bits=%d (reset=True starts over)"
                                 % (i, 16 if _is16(l.scores) else 8, self.score_bits))
            if self.batch > 1:
                self.grads[i] = array("i", bytes(4 * l.grad_size()))
        self.scratch = array("i", bytes(4 * max(len(g) for g in self.grads.values()))) if self.grads else None

    def _init_scores(self, i, l):
        n = l.weight.size
        l.subset = self._subset(i, l)
        m = n if l.subset is None else popcount(l.subset, n)
        sc = array(TYPECODE[self.score_bits], bytes(m * (self.score_bits // 8)))
        for j in range(m):
            sc[j] = self.threshold + self.rng.below(self.init_span)
        l.scores = sc
        l.thr = self.threshold

    def _trained(self, model):
        """The scores (the weights stay as they are)."""
        arrays = []
        for i in self.train_idx:
            sc = model.layers[i].scores
            arrays.append((sc, len(sc) * (self.score_bits // 8)))
        return arrays, []

    def _unscored(self):
        """Fraction of edges without a score (PRIOT: none)."""
        return None

    def _plan_nbytes(self):
        """Scores (kept from the model file, or the count PRIOT/PRIOT-S will
        draw), PRIOT-S subset bitmaps, and the mini-batch gradient sums."""
        layers = self.model.layers
        scores = subsets = 0
        sizes = []
        width = self.score_bits // 8
        for i in self.train_idx:
            l = layers[i]
            n = l.weight.size
            sizes.append(l.grad_size())
            if l.scores is not None and not self.reset:
                scores += len(l.scores) * width
                subsets += len(l.subset) if l.subset is not None else 0
            elif self._unscored() is not None:
                scores += (n - int(self._unscored() * n + 0.5)) * width
                subsets += (n + 7) >> 3
            else:
                scores += n * width
        g = 4 * (sum(sizes) + max(sizes)) if self.batch > 1 else 0
        return {"gradients": g, "scores": scores, "subsets": subsets}

    def _grad(self, i, layer, e, x):
        if self.batch == 1:
            layer.sat_upd += layer.score_step(e, x, self.shifts[i], self.smax)
            return
        g = self.grads[i]
        if self.count % self.batch == 0:  # first sample of a mini-batch
            layer.grad(e, x, g)
        else:
            layer.grad(e, x, self.scratch)
            K.acc_add_s32(g, self.scratch, len(g), 0, 0)  # static scales: plain sum

    def _apply(self):
        if self.batch == 1:
            return
        layers = self.model.layers
        for i in self.train_idx:
            l = layers[i]
            g = self.grads[i]
            l.sat_upd += K.score_update_s8(l.scores, l.subset, g, l.weight.data, self.shifts[i],
                                           self.smax, len(g))


class PRIOTS(PRIOT):
    """PRIOT-S: scores on a fraction 1 - p of the edges only; the unscored
    edges are never pruned. select='random' (PRNG) or 'weight' (largest |w|)."""
    name = "PRIOTS"

    def __init__(self, model, p=0.5, select="random", **kw):
        if not (0.0 <= p < 1.0):
            raise ValueError("p (unscored fraction) must be in [0, 1), got %r" % (p,))
        if select not in ("random", "weight"):
            raise ValueError("select must be 'random' or 'weight', got %r" % (select,))
        self.p, self.select = p, select
        PRIOT.__init__(self, model, **kw)

    def _unscored(self):
        return self.p

    def _subset(self, i, layer):
        n = layer.weight.size
        n_scored = n - int(self.p * n + 0.5)
        if self.select == "random":
            return select_random(n, n_scored, self.rng)
        return select_by_weight(layer.weight.data, n, n_scored)


def bake(model):
    """Apply the masks to the weights for good and drop the scores: a plain
    model that any picotrain (or other int8 runtime) can run."""
    for l in model.layers:
        if l.has_params and l.scores is not None:
            K.mask_s8(l.weight.data, l.scores, l.subset, l.thr, l.weight.data, l.weight.size)
            l.scores = l.subset = None
    return model


def pruned_fraction(model):
    """Fraction of edges currently pruned, over layers with scores."""
    tot = cut = 0
    for l in model.layers:
        if l.has_params and l.scores is not None:
            n = l.weight.size
            m = array("b", bytes(n))
            K.mask_s8(array("b", [1] * n), l.scores, l.subset, l.thr, m, n)
            tot += n
            cut += n - sum(m)
    return cut / tot if tot else 0.0


# ------------------------------------------------------- model-file state --
# SCOR: u16 layer | u8 score bits | u8 0 | i16 threshold | scores
# SUBS: u16 layer | u8 encoding (0 bitmap, 1 u16 indices, 2 u32 indices) | u8 0
#       | u32 edges | bitmap or sorted indices: whichever is smaller

def sections(model):
    out = []
    for i, l in enumerate(model.layers):
        if not l.has_params or l.scores is None:
            continue
        bits = 16 if _is16(l.scores) else 8
        head = struct.pack("<HBBh", i, bits, 0, l.thr)
        out.append((b"SCOR", [(head, len(head)), (l.scores, len(l.scores) * bits // 8)]))
        if l.subset is not None:
            n = l.weight.size
            m = popcount(l.subset, n)
            width = 2 if n <= 0x10000 else 4
            if m * width < len(l.subset):
                idx = array("H" if width == 2 else "I", [j for j in range(n) if (l.subset[j >> 3] >> (j & 7)) & 1])
                body, enc = idx, width // 2
                nbytes = m * width
            else:
                body, enc, nbytes = l.subset, 0, len(l.subset)
            head = struct.pack("<HBBI", i, enc, 0, n)
            out.append((b"SUBS", [(head, len(head)), (body, nbytes)]))
    return out


def _is16(scores):
    tc = getattr(scores, "typecode", None)
    if tc is not None:
        return tc == "h"
    # MicroPython arrays have no typecode: an int16 array holds 2 bytes per item.
    return len(bytes(scores)) == 2 * len(scores)


def attach(model, secs):
    """Restore scores and subsets read by modelfile.load()."""
    layers = model.layers
    for tag, b in secs:
        i = struct.unpack_from("<H", b, 0)[0]
        if i >= len(layers) or not layers[i].has_params:
            raise ValueError("%s section for layer %d, which has no parameters" % (tag.decode(), i))
        l = layers[i]
        n = l.weight.size
        if tag == b"SUBS":
            enc, n_file = struct.unpack_from("<BxI", b, 2)
            body = b[8:]
            if n_file != n:
                raise ValueError("SUBS of layer %d covers %d edges, the layer has %d" % (i, n_file, n))
            if enc == 0:
                if len(body) != (n + 7) >> 3:
                    raise ValueError("SUBS bitmap of layer %d has %d bytes, expected %d"
                                     % (i, len(body), (n + 7) >> 3))
                l.subset = bytearray(body)
            elif enc in (1, 2):
                w = 2 * enc
                if len(body) % w:
                    raise ValueError("SUBS indices of layer %d: %d bytes is not a whole number" % (i, len(body)))
                bm = bytearray((n + 7) >> 3)
                for k in range(len(body) // w):
                    j = struct.unpack_from("<H" if w == 2 else "<I", body, k * w)[0]
                    if j >= n:
                        raise ValueError("SUBS index %d of layer %d out of range (%d edges)" % (j, i, n))
                    bm[j >> 3] |= 1 << (j & 7)
                l.subset = bm
            else:
                raise ValueError("SUBS encoding %d of layer %d unknown" % (enc, i))
    for tag, b in secs:
        if tag != b"SCOR":
            continue
        i, bits, _, thr = struct.unpack_from("<HBBh", b, 0)
        l = layers[i]
        if bits not in TYPECODE:
            raise ValueError("SCOR of layer %d: %d-bit scores unsupported" % (i, bits))
        m = l.weight.size if l.subset is None else popcount(l.subset, l.weight.size)
        body = b[6:]
        if len(body) != m * bits // 8:
            raise ValueError("SCOR of layer %d has %d bytes, expected %d" % (i, len(body), m * bits // 8))
        sc = array(TYPECODE[bits], bytes(m * bits // 8))
        for j in range(m):
            sc[j] = struct.unpack_from("<b" if bits == 8 else "<h", body, j * bits // 8)[0]
        l.scores, l.thr = sc, thr
    for l in layers:
        if l.has_params and l.subset is not None and l.scores is None:
            raise ValueError("a layer has a SUBS section but no SCOR section")
