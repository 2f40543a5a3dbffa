"""Pure-Python kernels: the portable backend and the second reference.

Every kernel writes into buffers the caller owns and allocates nothing that
outlives the call. Buffers: int8 = array('b'), int16 = array('h'),
int32 = array('i'), uint8 = bytearray. Sizes are explicit arguments, so a
buffer may be longer than the part a call uses. The rules each kernel follows
are fixed in docs/NUMERICS.md; kernels_np.py and the C kernels must give the
same bits.
"""

Q_MAX = 127  # int8 values are saturated to [-127, 127] (symmetric, as NITI)


# ---------------------------------------------------------------- rounding --

def rshift_round(v, s):
    """v / 2**s rounded to nearest, ties away from zero (s >= 0)."""
    if s <= 0:
        return v
    h = 1 << (s - 1)
    if v >= 0:
        return (v + h) >> s
    return -((h - v) >> s)


def rshift_pseudo(v, s):
    """NITI's pseudo-stochastic rounding of v / 2**s (s >= 1).

    The s discarded bits of |v| split in two: the upper s - s//2 bits are the
    probability, the lower s//2 bits (doubled when s is odd, so both halves
    have the same width) the random number; round away from zero when
    probability > random number. Deterministic given v.
    """
    m = -v if v < 0 else v
    q = m >> s
    rem = m & ((1 << s) - 1)
    half = s >> 1
    prob = rem >> half
    rnd = rem & ((1 << half) - 1)
    if s & 1:
        rnd <<= 1
    if prob > rnd:
        q += 1
    return -q if v < 0 else q


def bit_length(m):
    """Number of bits of the non-negative integer m (0 for 0)."""
    n = 0
    while m >= 256:
        m >>= 8
        n += 8
    while m:
        m >>= 1
        n += 1
    return n


def _maxabs(v, n):
    """max |v[0:n]| (0 for n = 0)."""
    m = 0
    for j in range(n):
        a = -v[j] if v[j] < 0 else v[j]
        if a > m:
            m = a
    return m


def bitlen_s32(acc, n):
    """Bit length of max |acc[0:n]|: NITI's range estimate."""
    return bit_length(_maxabs(acc, n))


def _put8(out, j, v):
    """out[j] = v saturated to [-127, 127]; 1 if it saturated, else 0."""
    if v > Q_MAX or v < -Q_MAX:
        out[j] = Q_MAX if v > 0 else -Q_MAX
        return 1
    out[j] = v
    return 0


def requant_s32_s8(acc, out, n, shift):
    """out[j] = sat8(round(acc[j] / 2**shift)); returns the saturation count."""
    sat = 0
    for j in range(n):
        sat += _put8(out, j, rshift_round(acc[j], shift))
    return sat


# ----------------------------------------- binary-decomposition rescale --
# A scale num/den (Tin-Tin: 2**S (4/3)**U (4/5)**D) becomes mul / 2**shift with
# mul a sum of a few powers of two; applying it costs one shifted add per term.

RESCALE_MUL_MAX = 0xFFFF   # mul < 2**16
RESCALE_SHIFT_MAX = 62     # shift in [0, 62]


def popcount(m):
    """Number of set bits of the non-negative integer m."""
    c = 0
    while m:
        m &= m - 1
        c += 1
    return c


def binary_decompose(num, den, terms, bits):
    """(mul, shift): num/den ~ mul / 2**shift, mul a sum of at most `terms`
    powers of two (popcount(mul) <= terms) within `bits` significant bits.
    A helper for choosing a rescale (not a kernel).

    num, den >= 1; terms >= 1; bits in [1, 16]. With p = floor(log2(num/den))
    (p >= -62, else ValueError) the allowed powers are 2**i, i >= low =
    max(p - bits + 1, -62): a `bits`-wide window below the leading bit (the
    result is exact when num/den needs no more). The rule: truncate num/den to
    a multiple of 2**low, keep the `terms` most significant set bits (T); the
    rounding unit u is the lowest kept bit when `terms` bits were kept, else
    2**low; the result is T + u when the discarded rest (including what lies
    below 2**low) is >= u/2, else T. T and T + u are the two sums of at most
    `terms` such powers nearest below and above num/den, so this is the best
    approximation (ties: the larger). Canonical form: mul odd or shift == 0;
    ValueError when mul would not fit 16 bits (num/den rounds to >= 2**16).

    Relative error, with b = min(bits, p + 63) (b = bits for num/den >= 2**(bits - 63)):
        |mul/2**shift - num/den| <= num/den / (2**(terms+1) - 1)   if terms < b
                                 <= num/den / (2**b + 1)             if terms >= b
    (so <= 2**-terms for terms < b); both are attained (docs/NUMERICS.md).
    """
    if num < 1 or den < 1:
        raise ValueError("binary_decompose: num and den must be >= 1, got %d/%d" % (num, den))
    if terms < 1 or not 1 <= bits <= 16:
        raise ValueError("binary_decompose: terms must be >= 1 and bits in [1, 16], got %d, %d"
                         % (terms, bits))
    # p = floor(log2(num / den))
    p = bit_length(num) - bit_length(den)
    if (num << -p if p < 0 else num) < (den << p if p > 0 else den):
        p -= 1
    if p < -RESCALE_SHIFT_MAX:
        raise ValueError("binary_decompose: %d/%d is below 2**-62" % (num, den))
    low = p - bits + 1
    if low < -RESCALE_SHIFT_MAX:
        low = -RESCALE_SHIFT_MAX
    # num/den = (f + rem/d) * 2**low exactly, f an integer
    if low <= 0:
        x = num << -low
        d = den
    else:
        x = num
        d = den << low
    f = x // d
    rem = x - f * d
    t = f
    c = popcount(f)
    while c > terms:
        t &= t - 1  # drop the lowest set bit
        c -= 1
    u = (t & -t) if c == terms else 1
    mul = t + u if 2 * ((f - t) * d + rem) >= u * d else t
    shift = -low
    while shift > 0 and not mul & 1:
        mul >>= 1
        shift -= 1
    if shift < 0:
        mul <<= -shift
        shift = 0
    if mul > RESCALE_MUL_MAX:
        raise ValueError("binary_decompose: %d/%d needs mul = %d, beyond 16 bits" % (num, den, mul))
    return mul, shift


def _check_rescale(mul, shift):
    if not 0 <= mul <= RESCALE_MUL_MAX:
        raise ValueError("rescale_s32_s8: mul must be in [0, %d], got %d" % (RESCALE_MUL_MAX, mul))
    if not 0 <= shift <= RESCALE_SHIFT_MAX:
        raise ValueError("rescale_s32_s8: shift must be in [0, %d], got %d" % (RESCALE_SHIFT_MAX, shift))


def rescale_s32_s8(acc, out, n, mul, shift):
    """out[j] = sat8(round(acc[j] * mul / 2**shift)), the product exact (up to
    47 bits); returns the saturation count. mul in [0, 65535] (see
    binary_decompose), shift in [0, 62]; ValueError outside them."""
    _check_rescale(mul, shift)
    sat = 0
    for j in range(n):
        sat += _put8(out, j, rshift_round(acc[j] * mul, shift))
    return sat


def _sat32(v):
    if v > 0x7FFFFFFF:
        return 0x7FFFFFFF
    if v < -0x7FFFFFFF:
        return -0x7FFFFFFF
    return v


def _bias_term(b, d):
    """b * 2**d, for d < 0 a rounded shift."""
    return b << d if d >= 0 else rshift_round(b, -d)


def bias_add_s32(acc, bias, c, plane, d):
    """acc[ch*plane + j] += bias[ch] * 2**d (d < 0: rounded shift), saturated."""
    for ch in range(c):
        b = _bias_term(bias[ch], d)
        base = ch * plane
        for j in range(base, base + plane):
            acc[j] = _sat32(acc[j] + b)


def acc_add_s32(acc, g, n, sa, sg):
    """acc[j] = sat32(round(acc[j] / 2**sa) + round(g[j] / 2**sg)): aligned sum."""
    for j in range(n):
        acc[j] = _sat32(rshift_round(acc[j], sa) + rshift_round(g[j], sg))


# ------------------------------------------------------- top-k by magnitude --

def _count_ge(g, n, t):
    c = 0
    for j in range(n):
        if abs(g[j]) >= t:
            c += 1
    return c


def topk_abs_s32(g, n, k, idx):
    """The k entries of g[0:n] with the largest |g[j]| (|-2**31| = 2**31),
    ties broken by the lower index: their indices go to idx[0:k] in increasing
    order. Returns the k-th largest magnitude (0 when k == 0). 0 <= k <= n
    (ValueError otherwise); g is not changed, nothing is allocated.

    Selection without scratch: t = the k-th largest magnitude is the largest
    t with #{|g| >= t} >= k, found bit by bit from the top bit of max |g|
    (one counting pass per bit; stop early when a count is exactly k). Then
    one pass emits every j with |g[j]| > t and the first k - #{|g| > t} with
    |g[j]| == t.
    """
    if not 0 <= k <= n:
        raise ValueError("topk_abs_s32: k must be in [0, %d], got %d" % (n, k))
    if k == 0:
        return 0
    mx = 0
    for j in range(n):
        m = abs(g[j])
        if m > mx:
            mx = m
    t = 0
    gt = 0  # #{|g| > t}: the count of the last candidate that failed (it is t + 1)
    exact = False
    if k == 1:
        t = mx
    elif mx:
        bit = 1 << (bit_length(mx) - 1)
        while bit:
            c = _count_ge(g, n, t | bit)
            if c >= k:
                t |= bit
                if c == k:  # {|g| >= t} is the answer; its minimum is the k-th
                    exact = True
                    break
            else:
                gt = c
            bit >>= 1
    o = 0
    if exact:
        lo = t
        t = mx
        for j in range(n):
            m = abs(g[j])
            if m >= lo:
                idx[o] = j
                o += 1
                if m < t:
                    t = m
        return t
    need = k - gt  # ties to take, lowest index first
    j = 0
    while o < k:
        m = abs(g[j])
        if m > t or (m == t and need > 0):
            if m == t:
                need -= 1
            idx[o] = j
            o += 1
        j += 1
    return t


# ---------------------------------------------------------- channel ranges --
# The big kernels take optional trailing c0, c1: compute only channels
# [c0, c1) of the output (rows of a linear layer, output channels of a conv
# and of a weight gradient, input channels for a conv's error to the input,
# items for the update); buffers stay whole-tensor sized. Two cores split a
# call into two ranges (cores.py); every item is computed as in the whole call.

def check_range(fn, c0, c1, count):
    """c1 (None: count), once 0 <= c0 <= c1 <= count holds; else ValueError
    naming the kernel fn and the argument."""
    if c1 is None:
        c1 = count
    if not 0 <= c0 <= count:
        raise ValueError("%s: c0 must be in [0, %d], got %d" % (fn, count, c0))
    if not c0 <= c1 <= count:
        raise ValueError("%s: c1 must be in [%d, %d], got %d" % (fn, c0, count, c1))
    return c1


def _nscored(subset, j0, j1):
    """How many of the edges [j0, j1) carry a score (all of them without a subset)."""
    if subset is None:
        return j1 - j0
    c = 0
    for j in range(j0, j1):
        c += (subset[j >> 3] >> (j & 7)) & 1
    return c


# ------------------------------------------------------------ linear layer --

def fc_s8_s32(x, w, out, n_in, n_out, c0=0, c1=None):
    """out[o] = sum_i w[o, i] * x[i]   (w row-major, n_out x n_in), c0 <= o < c1."""
    c1 = check_range("fc_s8_s32", c0, c1, n_out)
    fc_mask_s8_s32(x, w, None, None, 0, out, n_in, n_out, c0, c1)


def fc_t_s8_s32(e, w, out, n_in, n_out):
    """out[i] = sum_o w[o, i] * e[o]   (error to the input)."""
    fc_t_mask_s8_s32(e, w, None, None, 0, out, n_in, n_out)


def outer_s8_s32(e, x, out, n_out, n_in, c0=0, c1=None):
    """out[o, i] = e[o] * x[i]   (weight gradient of a linear layer), c0 <= o < c1."""
    for o in range(c0, check_range("outer_s8_s32", c0, c1, n_out)):
        eo = e[o]
        b = o * n_in
        for i in range(n_in):
            out[b + i] = eo * x[i]


# -------------------------------------------------------------- conv layer --

# Output positions o with 0 <= o*stride - pad + kk < size are lo <= o < hi.
# Two functions, not one returning a tuple: a tuple would allocate.
def _lo(kk, pad, stride):
    lo = -((kk - pad) // stride)  # ceil((pad - kk) / stride)
    return lo if lo > 0 else 0


def _hi(kk, pad, stride, size, osize):
    hi = (size - 1 + pad - kk) // stride + 1
    return hi if hi < osize else osize


def conv_out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _kept(scores, subset, thr, j, si):
    """For edge j whose score (if any) is scores[si]: 1 kept, 0 pruned, +2 when
    it has a score (the caller advances si). One int back: no tuple."""
    if scores is None:
        return 1
    if subset is not None and not (subset[j >> 3] >> (j & 7)) & 1:
        return 1
    return 3 if scores[si] >= thr else 2


def _conv_walk(src, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, transpose, c0, c1,
               first=0):
    """The direct convolution loop shared by forward and error-to-input:
    weights visited in edge order (co, ci, kh, kw), each applied to every
    output position it touches. transpose=False: out (c_out, oh, ow) +=
    w * src (input), output channels [c0, c1), out holding the channels
    from `first` on (the fused kernels walk one channel into a one-plane
    scratch); True: out (c_in, h, wd) += w * src (output error), input
    channels [c0, c1)."""
    oh = conv_out_size(h, k, stride, pad)
    ow = conv_out_size(wd, k, stride, pad)
    size = h * wd if transpose else oh * ow
    first = 0 if transpose else first
    for j in range((c0 - first) * size, (c1 - first) * size):
        out[j] = 0
    kk = k * k
    j = 0 if transpose else c0 * c_in * kk
    si = _nscored(subset, 0, j) if scores is not None else 0
    co0 = 0 if transpose else c0  # the range is of input channels when transposed
    co1 = c_out if transpose else c1
    for co in range(co0, co1):
        obase = (co - first) * oh * ow
        for ci in range(c_in):
            if transpose and not c0 <= ci < c1:
                if scores is not None:
                    si += _nscored(subset, j, j + kk)
                j += kk
                continue
            for kh in range(k):
                y0 = _lo(kh, pad, stride)
                y1 = _hi(kh, pad, stride, h, oh)
                for kw in range(k):
                    kept = _kept(scores, subset, thr, j, si)
                    si += kept >> 1
                    wv = w[j] if kept & 1 else 0
                    j += 1
                    if wv == 0:
                        continue
                    x0 = _lo(kw, pad, stride)
                    x1 = _hi(kw, pad, stride, wd, ow)
                    for oy in range(y0, y1):
                        xrow = (ci * h + oy * stride - pad + kh) * wd - pad + kw
                        orow = obase + oy * ow
                        if transpose:
                            for ox in range(x0, x1):
                                out[xrow + ox * stride] += wv * src[orow + ox]
                        else:
                            for ox in range(x0, x1):
                                out[orow + ox] += wv * src[xrow + ox * stride]


def conv2d_mask_s8_s32_chw(x, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    """Direct convolution, CHW; w is (c_out, c_in, k, k); out is (c_out, oh, ow).
    scores/subset/thr: the edge-popup mask (scores None: no mask)."""
    c1 = check_range("conv2d_mask_s8_s32_chw", c0, c1, c_out)
    _conv_walk(x, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, False, c0, c1)


def conv2d_s8_s32_chw(x, w, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_s8_s32_chw", c0, c1, c_out)
    _conv_walk(x, w, None, None, 0, out, c_in, h, wd, c_out, k, stride, pad, False, c0, c1)


def conv2d_mask_s8_s8_chw(x, w, scores, subset, thr, out, acc, c_in, h, wd, c_out, k, stride, pad,
                          shift, bias, d, c0=0, c1=None):
    """Convolution fused with the static requantization, for the output
    channels [c0, c1) (c1 None: c_out): out (c_out, oh, ow) int8 gets, bit for
    bit, conv2d_mask_s8_s32_chw, then bias_add_s32 (bias None: none), then
    requant_s32_s8 by shift, one channel at a time through the int32 scratch
    acc (>= oh*ow items; its contents afterwards are unspecified). Returns
    the saturation count of the channels computed."""
    c1 = check_range("conv2d_mask_s8_s8_chw", c0, c1, c_out)
    plane = conv_out_size(h, k, stride, pad) * conv_out_size(wd, k, stride, pad)
    sat = 0
    for co in range(c0, c1):
        _conv_walk(x, w, scores, subset, thr, acc, c_in, h, wd, c_out, k, stride, pad, False, co, co + 1, co)
        b = 0 if bias is None else _bias_term(bias[co], d)
        base = co * plane
        for j in range(plane):
            v = acc[j] if bias is None else _sat32(acc[j] + b)
            sat += _put8(out, base + j, rshift_round(v, shift))
    return sat


def conv2d_s8_s8_chw(x, w, out, acc, c_in, h, wd, c_out, k, stride, pad, shift, bias, d, c0=0, c1=None):
    return conv2d_mask_s8_s8_chw(x, w, None, None, 0, out, acc, c_in, h, wd, c_out, k, stride, pad,
                                 shift, bias, d, c0, c1)


def conv2d_t_mask_s8_s32_chw(e, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    """Error to the input of a (masked) convolution: out is (c_in, h, wd);
    its input channels [c0, c1)."""
    c1 = check_range("conv2d_t_mask_s8_s32_chw", c0, c1, c_in)
    _conv_walk(e, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, True, c0, c1)


def conv2d_t_s8_s32_chw(e, w, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_t_s8_s32_chw", c0, c1, c_in)
    _conv_walk(e, w, None, None, 0, out, c_in, h, wd, c_out, k, stride, pad, True, c0, c1)


def _conv_tap(e, x, co, ci, kh, kw, c_in, h, wd, oh, ow, stride, pad):
    """Gradient of one weight: sum over output positions of e * x."""
    y0 = _lo(kh, pad, stride)
    y1 = _hi(kh, pad, stride, h, oh)
    x0 = _lo(kw, pad, stride)
    x1 = _hi(kw, pad, stride, wd, ow)
    s = 0
    ebase = co * oh * ow
    for oy in range(y0, y1):
        xrow = (ci * h + oy * stride - pad + kh) * wd - pad + kw
        erow = ebase + oy * ow
        for ox in range(x0, x1):
            s += e[erow + ox] * x[xrow + ox * stride]
    return s


def conv2d_grad_s8_s32_chw(e, x, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    """Weight gradient of a convolution: out is (c_out, c_in, k, k); the rows
    of output channels [c0, c1)."""
    c1 = check_range("conv2d_grad_s8_s32_chw", c0, c1, c_out)
    oh = conv_out_size(h, k, stride, pad)
    ow = conv_out_size(wd, k, stride, pad)
    j = c0 * c_in * k * k
    for co in range(c0, c1):
        for ci in range(c_in):
            for kh in range(k):
                for kw in range(k):
                    out[j] = _conv_tap(e, x, co, ci, kh, kw, c_in, h, wd, oh, ow, stride, pad)
                    j += 1


def conv2d_score_s8_chw(e, x, w, scores, subset, shift, smax, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    """Fused PRIOT score step of a convolution (see fc_score_s8): each scored
    edge's gradient is summed over positions and applied at once, so no
    int32 gradient buffer exists. Output channels [c0, c1) of the weight.
    Returns the saturation count."""
    c1 = check_range("conv2d_score_s8_chw", c0, c1, c_out)
    oh = conv_out_size(h, k, stride, pad)
    ow = conv_out_size(wd, k, stride, pad)
    sat = 0
    j = c0 * c_in * k * k
    si = _nscored(subset, 0, j)
    for co in range(c0, c1):
        for ci in range(c_in):
            for kh in range(k):
                for kw in range(k):
                    if subset is None or (subset[j >> 3] >> (j & 7)) & 1:
                        g = _conv_tap(e, x, co, ci, kh, kw, c_in, h, wd, oh, ow, stride, pad)
                        sat += _score_step(scores, si, g * w[j], shift, smax)
                        si += 1
                    j += 1
    return sat


# ------------------------------------------------- edge-popup (PRIOT) masks --
# An edge j is kept when it has no score (subset given and bit j clear) or
# its score is >= thr. scores hold one value per scored edge, in edge order:
# dense when subset is None, compact (one per set bit) otherwise. subset is
# a bitmap, bit j = byte j >> 3, bit j & 7. The compute kernels below visit
# the weights in edge order, so the mask costs one test per weight, not per
# MAC, and no mask buffer exists.

def mask_s8(w, scores, subset, thr, out, n):
    """out[j] = w[j] if edge j is kept else 0 (materialises a masked model)."""
    si = 0
    for j in range(n):
        kept = _kept(scores, subset, thr, j, si)
        si += kept >> 1
        out[j] = w[j] if kept & 1 else 0


def fc_mask_s8_s32(x, w, scores, subset, thr, out, n_in, n_out, c0=0, c1=None):
    """fc_s8_s32 with the masked weights (scores None: no mask), rows [c0, c1)."""
    c1 = check_range("fc_mask_s8_s32", c0, c1, n_out)
    j = c0 * n_in
    si = _nscored(subset, 0, j) if scores is not None else 0
    for o in range(c0, c1):
        s = 0
        for i in range(n_in):
            kept = _kept(scores, subset, thr, j, si)
            si += kept >> 1
            if kept & 1:
                s += w[j] * x[i]
            j += 1
        out[o] = s


def fc_t_mask_s8_s32(e, w, scores, subset, thr, out, n_in, n_out):
    """fc_t_s8_s32 with the masked weights (scores None: no mask)."""
    for i in range(n_in):
        out[i] = 0
    si = 0
    j = 0
    for o in range(n_out):
        eo = e[o]
        for i in range(n_in):
            kept = _kept(scores, subset, thr, j, si)
            si += kept >> 1
            if kept & 1:
                out[i] += w[j] * eo
            j += 1


def _score_step(scores, si, gw, shift, smax):
    """scores[si] -= round(gw / 2**shift), saturated to +-smax; 1 if it saturated."""
    v = scores[si] - rshift_round(gw, shift)
    if v > smax or v < -smax:
        scores[si] = smax if v > 0 else -smax
        return 1
    scores[si] = v
    return 0


def fc_score_s8(e, x, w, scores, subset, shift, smax, n_in, n_out, c0=0, c1=None):
    """Fused PRIOT score step of a linear layer, no gradient buffer:
    for each scored edge s = sat(s - round(e[o] * x[i] * w[o, i] / 2**shift)),
    sat to [-smax, smax], rows c0 <= o < c1. Returns the saturation count."""
    c1 = check_range("fc_score_s8", c0, c1, n_out)
    sat = 0
    si = _nscored(subset, 0, c0 * n_in)
    for o in range(c0, c1):
        eo = e[o]
        b = o * n_in
        for i in range(n_in):
            j = b + i
            if subset is not None and not (subset[j >> 3] >> (j & 7)) & 1:
                continue
            sat += _score_step(scores, si, eo * x[i] * w[j], shift, smax)
            si += 1
    return sat


def score_update_s8(scores, subset, g, w, shift, smax, n):
    """PRIOT score step from an int32 weight gradient g (mini-batch path):
    s = sat(s - round(g[j] * w[j] / 2**shift)) for each scored edge."""
    sat = 0
    si = 0
    for j in range(n):
        if subset is not None and not (subset[j >> 3] >> (j & 7)) & 1:
            continue
        sat += _score_step(scores, si, g[j] * w[j], shift, smax)
        si += 1
    return sat


# ------------------------------------------------------ activation, pooling --

def relu_s8(x, n):
    """In place: x[j] = max(x[j], 0)."""
    for j in range(n):
        if x[j] < 0:
            x[j] = 0


def relu_bwd_s8(y, e, n):
    """In place: e[j] = 0 where the ReLU output y[j] is 0."""
    for j in range(n):
        if y[j] <= 0:
            e[j] = 0


def maxpool2d_s8_chw(x, out, idx, c, h, wd, k, relu=0):
    """k x k max pooling with stride k (floor). idx (bytearray or None) gets
    the window offset dy*k + dx of each maximum; the first maximum wins.
    relu=1: out = max(maximum, 0), a ReLU before the pool done after it (they
    commute; idx is the same)."""
    lo = 0 if relu else -128
    oh = h // k
    ow = wd // k
    o = 0
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                base = (ch * h + oy * k) * wd + ox * k
                best = x[base]
                bi = 0
                for dy in range(k):
                    row = base + dy * wd
                    for dx in range(k):
                        v = x[row + dx]
                        if v > best:
                            best = v
                            bi = dy * k + dx
                out[o] = best if best > lo else lo
                if idx is not None:
                    idx[o] = bi
                o += 1


def maxpool2d_bwd_s8_chw(e, idx, out, c, h, wd, k, y=None):
    """Route each pooled error to its window's maximum; out is (c, h, wd).
    With y (a rectified pool's output) only the errors where y > 0."""
    for j in range(c * h * wd):
        out[j] = 0
    oh = h // k
    ow = wd // k
    o = 0
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                if y is None or y[o] > 0:
                    bi = idx[o]
                    out[(ch * h + oy * k + bi // k) * wd + ox * k + bi % k] = e[o]
                o += 1


# -------------------------------------------------------------------- loss --

# round(2**(k/16) * 2**15), k = 0..15: the fractional part of 2**t in Q15.
EXP2_Q15 = (32768, 34219, 35734, 37316, 38968, 40693, 42495, 44376,
            46341, 48393, 50535, 52773, 55109, 57549, 60097, 62757)
LOG2E_Q15 = 47274  # round(log2(e) * 2**15), NITI's constant
SPAN_Q4 = 160      # keep 10 octaves below the largest logit (NITI's "max - 10")


def argmax_s8(x, n):
    """Index of the first maximum of x[0:n]."""
    best = x[0]
    bi = 0
    for j in range(1, n):
        if x[j] > best:
            best = x[j]
            bi = j
    return bi


def softmax_xent_s8(z, n, exp, label, err, p):
    """Integer softmax cross-entropy error (after NITI's ti_loss.py).

    z: int8 logits with exponent exp; p: int32 scratch of n. Writes
    err = round((softmax(z) - onehot(label)) * 2**7) as int8 (exponent -7)
    and returns err[label].
    """
    # t = z * 2**exp * log2(e) in Q4 (1/16 octave), floor; the shift is
    # clamped to [0, 31] (logits beyond 2**11 in magnitude are one-hot anyway).
    sh = 11 - exp
    sh = 0 if sh < 0 else (31 if sh > 31 else sh)
    tmax = -0x7FFFFFFF
    for j in range(n):
        t = (z[j] * LOG2E_Q15) >> sh
        p[j] = t
        if t > tmax:
            tmax = t
    total = 0
    for j in range(n):
        t = p[j] - tmax + SPAN_Q4
        if t < 0:
            t = 0
        # 2**(t/16) - 1, in [0, 1023]
        v = ((EXP2_Q15[t & 15] << (t >> 4)) >> 15) - 1
        p[j] = v
        total += v
    s = 0
    for j in range(n):
        v = (p[j] << 11) // total
        p[j] = v
        s += v
    p[label] -= s
    for j in range(n):
        v = rshift_round(p[j], 4)
        err[j] = Q_MAX if v > Q_MAX else (-Q_MAX if v < -Q_MAX else v)
    return err[label]


# ------------------------------------------------------------------ update --

def _update1(w, j, g, shift):
    """w[j] = sat8(w[j] - r(g)): one weight of the NITI update."""
    return _put8(w, j, w[j] - (g if shift <= 0 else rshift_pseudo(g, shift)))


def update_s8(w, g, n, shift, c0=0, c1=None):
    """NITI update: w[j] = sat8(w[j] - r(g[j])), r the pseudo-stochastic
    rounding by 2**shift (shift <= 0: g is used as it is), items c0 <= j < c1.
    Returns the count of weights that saturated."""
    sat = 0
    for j in range(c0, check_range("update_s8", c0, c1, n)):
        sat += _update1(w, j, g[j], shift)
    return sat


def update_outer_s8(e, x, w, n_out, n_in, mu, c0=0, c1=None):
    """NITI's update of a linear layer from one sample, without its gradient:
    update_s8 with g[o*n_in + i] = e[o] * x[i] (outer_s8_s32) and shift =
    bitlen_s32(g) - mu, which is bit_length(max|e| * max|x|). Rows c0 <= o < c1,
    0 <= mu <= 7. Returns the count of weights that saturated."""
    c1 = check_range("update_outer_s8", c0, c1, n_out)
    if not 0 <= mu <= 7:
        raise ValueError("update_outer_s8: mu must be in [0, 7], got %d" % mu)
    shift = bit_length(_maxabs(e, n_out) * _maxabs(x, n_in)) - mu
    sat = 0
    for o in range(c0, c1):
        eo = e[o]
        b = o * n_in
        for i in range(n_in):
            sat += _update1(w, b + i, eo * x[i], shift)
    return sat
