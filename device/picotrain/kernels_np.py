"""numpy kernels: the fast host mirror (CPython only).

Same signatures and the same bits as kernels_py.py; the caller's array.array
buffers are wrapped without copying (np.frombuffer) and written in place.
Integer arithmetic is done in int64, so no intermediate can overflow before
the documented saturation. Tiny kernels (loss, argmax) reuse the pure-Python
code: they touch ten values and numpy would only add overhead.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .kernels_py import (Q_MAX, _check_rescale, argmax_s8, binary_decompose,  # noqa: F401
                         bit_length, check_range, conv_out_size, rshift_round, softmax_xent_s8)

_I8, _I32 = np.int8, np.int32


def _v(buf, dtype, n):
    """A numpy view of the first n items of a caller-owned buffer."""
    return np.frombuffer(buf, dtype=dtype, count=n)


def _round(v, s):
    """Round-half-away-from-zero shift of an int64 array (see rshift_round)."""
    if s <= 0:
        return v
    if s > 62:
        # Every caller's |v| is below 2**61, so it rounds to 0 (as rshift_round
        # does on Python ints); 1 << (s - 1) would not fit int64.
        return np.zeros_like(v)
    m = (np.abs(v) + (1 << (s - 1))) >> s
    return np.where(v < 0, -m, m)


def _sat32(v):
    return np.clip(v, -0x7FFFFFFF, 0x7FFFFFFF)


def bitlen_s32(acc, n):
    if n == 0:
        return 0
    return bit_length(int(np.abs(_v(acc, _I32, n).astype(np.int64)).max()))


def requant_s32_s8(acc, out, n, shift):
    r = _round(_v(acc, _I32, n).astype(np.int64), shift)
    sat = int(np.count_nonzero((r > Q_MAX) | (r < -Q_MAX)))
    _v(out, _I8, n)[:] = np.clip(r, -Q_MAX, Q_MAX)
    return sat


def rescale_s32_s8(acc, out, n, mul, shift):
    _check_rescale(mul, shift)
    # |acc * mul| < 2**47 and shift <= 62: _round cannot overflow int64
    r = _round(_v(acc, _I32, n).astype(np.int64) * mul, shift)
    sat = int(np.count_nonzero((r > Q_MAX) | (r < -Q_MAX)))
    _v(out, _I8, n)[:] = np.clip(r, -Q_MAX, Q_MAX)
    return sat


def topk_abs_s32(g, n, k, idx):
    if not 0 <= k <= n:
        raise ValueError("topk_abs_s32: k must be in [0, %d], got %d" % (n, k))
    if k == 0:
        return 0
    m = np.abs(_v(g, _I32, n).astype(np.int64))
    t = int(np.partition(m, n - k)[n - k])  # the k-th largest magnitude
    sel = m > t
    ties = np.flatnonzero(m == t)[:k - int(np.count_nonzero(sel))]  # lowest indices first
    sel[ties] = True
    _v(idx, _I32, k)[:] = np.flatnonzero(sel)
    return t


def _bias_terms(bias, d):
    """bias * 2**d as int64 (d < 0: rounded shift). From d = 32 on, any
    non-zero bias saturates whatever it is added to (|sum| < 2**31 for every
    caller), so sign(bias) * 2**32 stands in: bias << 32 itself would overflow
    int64 in the sum for bias = -2**31 (the reference shifts Python ints)."""
    b = bias.astype(np.int64)
    if d >= 32:
        return np.sign(b) << 32
    return b << d if d >= 0 else _round(b, -d)


def bias_add_s32(acc, bias, c, plane, d):
    b = _bias_terms(_v(bias, _I32, c), d)
    a = _v(acc, _I32, c * plane).reshape(c, plane)
    a[:] = _sat32(a.astype(np.int64) + b[:, None])


def acc_add_s32(acc, g, n, sa, sg):
    a = _v(acc, _I32, n)
    a[:] = _sat32(_round(a.astype(np.int64), sa) + _round(_v(g, _I32, n).astype(np.int64), sg))


# ---------------------------------------------------- edge-popup (PRIOT) --
_SDT = {"b": np.int8, "h": np.int16}


def _scored(subset, n):
    """Boolean array: which of n edges carry a score."""
    return np.unpackbits(np.frombuffer(subset, np.uint8), count=n, bitorder="little").astype(bool)


def _score_view(scores, subset, n):
    m = n if subset is None else int(_scored(subset, n).sum())
    return np.frombuffer(scores, _SDT[scores.typecode], count=m)


def _masked(w, scores, subset, thr, n):
    """int64 weights with pruned edges zeroed (a host-side temporary)."""
    W = _v(w, _I8, n).astype(np.int64)
    if scores is None:
        return W
    S = _score_view(scores, subset, n)
    if subset is None:
        W[S < thr] = 0
    else:
        idx = np.flatnonzero(_scored(subset, n))
        W[idx[S < thr]] = 0
    return W


def mask_s8(w, scores, subset, thr, out, n):
    _v(out, _I8, n)[:] = _masked(w, scores, subset, thr, n)


def fc_mask_s8_s32(x, w, scores, subset, thr, out, n_in, n_out, c0=0, c1=None):
    c1 = check_range("fc_mask_s8_s32", c0, c1, n_out)
    W = _masked(w, scores, subset, thr, n_in * n_out).reshape(n_out, n_in)[c0:c1]
    _v(out, _I32, n_out)[c0:c1] = W @ _v(x, _I8, n_in).astype(np.int64)


def fc_t_mask_s8_s32(e, w, scores, subset, thr, out, n_in, n_out):
    W = _masked(w, scores, subset, thr, n_in * n_out).reshape(n_out, n_in)
    _v(out, _I32, n_in)[:] = _v(e, _I8, n_out).astype(np.int64) @ W


def fc_s8_s32(x, w, out, n_in, n_out, c0=0, c1=None):
    c1 = check_range("fc_s8_s32", c0, c1, n_out)
    fc_mask_s8_s32(x, w, None, None, 0, out, n_in, n_out, c0, c1)


def fc_t_s8_s32(e, w, out, n_in, n_out):
    fc_t_mask_s8_s32(e, w, None, None, 0, out, n_in, n_out)


def _score_apply(scores, subset, gw, shift, smax, n, j0=0):
    """scores -= round(gw / 2**shift) over the scored edges among the edges
    [j0, j0 + gw.size) of n, saturated."""
    S = _score_view(scores, subset, n)
    if subset is None:
        S = S[j0:j0 + gw.size]
    else:
        m = _scored(subset, n)
        lo = int(np.count_nonzero(m[:j0]))  # the scores of the edges before j0
        gw = gw[m[j0:j0 + gw.size]]
        S = S[lo:lo + gw.size]
    r = S.astype(np.int64) - _round(gw, shift)
    sat = int(np.count_nonzero((r > smax) | (r < -smax)))
    S[:] = np.clip(r, -smax, smax)
    return sat


def fc_score_s8(e, x, w, scores, subset, shift, smax, n_in, n_out, c0=0, c1=None):
    c1 = check_range("fc_score_s8", c0, c1, n_out)
    g = np.outer(_v(e, _I8, n_out)[c0:c1].astype(np.int64), _v(x, _I8, n_in).astype(np.int64)).ravel()
    gw = g * _v(w, _I8, n_in * n_out)[c0 * n_in:c1 * n_in]
    return _score_apply(scores, subset, gw, shift, smax, n_in * n_out, c0 * n_in)


def score_update_s8(scores, subset, g, w, shift, smax, n):
    gw = _v(g, _I32, n).astype(np.int64) * _v(w, _I8, n)
    return _score_apply(scores, subset, gw, shift, smax, n)


def outer_s8_s32(e, x, out, n_out, n_in, c0=0, c1=None):
    c1 = check_range("outer_s8_s32", c0, c1, n_out)
    g = np.outer(_v(e, _I8, n_out)[c0:c1].astype(np.int64), _v(x, _I8, n_in).astype(np.int64))
    _v(out, _I32, n_out * n_in)[c0 * n_in:c1 * n_in] = g.ravel()


def _cols(x, c_in, h, wd, k, stride, pad):
    """im2col: (c_in*k*k, oh*ow) int64 patches of the zero-padded input."""
    X = _v(x, _I8, c_in * h * wd).reshape(c_in, h, wd).astype(np.int64)
    X = np.pad(X, ((0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(X, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    oh, ow = win.shape[1], win.shape[2]
    return win.transpose(0, 3, 4, 1, 2).reshape(c_in * k * k, oh * ow)


def conv2d_mask_s8_s32_chw(x, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_mask_s8_s32_chw", c0, c1, c_out)
    cols = _cols(x, c_in, h, wd, k, stride, pad)
    W = _masked(w, scores, subset, thr, c_out * c_in * k * k).reshape(c_out, -1)[c0:c1]
    plane = cols.shape[1]
    _v(out, _I32, c_out * plane)[c0 * plane:c1 * plane] = (W @ cols).ravel()


def conv2d_mask_s8_s8_chw(x, w, scores, subset, thr, out, acc, c_in, h, wd, c_out, k, stride, pad,
                          shift, bias, d, c0=0, c1=None):
    """kernels_py.conv2d_mask_s8_s8_chw: the whole int32 map at once here (host
    memory); acc is scratch and is left as it was."""
    c1 = check_range("conv2d_mask_s8_s8_chw", c0, c1, c_out)
    cols = _cols(x, c_in, h, wd, k, stride, pad)
    W = _masked(w, scores, subset, thr, c_out * c_in * k * k).reshape(c_out, -1)[c0:c1]
    r = W @ cols
    if bias is not None:
        r = _sat32(r + _bias_terms(_v(bias, _I32, c_out)[c0:c1], d)[:, None])
    r = _round(r, shift)
    plane = cols.shape[1]
    _v(out, _I8, c_out * plane)[c0 * plane:c1 * plane] = np.clip(r, -Q_MAX, Q_MAX).ravel()
    return int(np.count_nonzero((r > Q_MAX) | (r < -Q_MAX)))


def conv2d_s8_s8_chw(x, w, out, acc, c_in, h, wd, c_out, k, stride, pad, shift, bias, d, c0=0, c1=None):
    return conv2d_mask_s8_s8_chw(x, w, None, None, 0, out, acc, c_in, h, wd, c_out, k, stride, pad,
                                 shift, bias, d, c0, c1)


def conv2d_s8_s32_chw(x, w, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_s8_s32_chw", c0, c1, c_out)
    conv2d_mask_s8_s32_chw(x, w, None, None, 0, out, c_in, h, wd, c_out, k, stride, pad, c0, c1)


def conv2d_t_s8_s32_chw(e, w, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_t_s8_s32_chw", c0, c1, c_in)
    conv2d_t_mask_s8_s32_chw(e, w, None, None, 0, out, c_in, h, wd, c_out, k, stride, pad, c0, c1)


def conv2d_t_mask_s8_s32_chw(e, w, scores, subset, thr, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_t_mask_s8_s32_chw", c0, c1, c_in)
    oh = conv_out_size(h, k, stride, pad)
    ow = conv_out_size(wd, k, stride, pad)
    W = _masked(w, scores, subset, thr, c_out * c_in * k * k).reshape(c_out, c_in, k, k)[:, c0:c1]
    E = _v(e, _I8, c_out * oh * ow).reshape(c_out, oh, ow).astype(np.int64)
    X = np.zeros((c1 - c0, h + 2 * pad, wd + 2 * pad), np.int64)
    # col2im: every kernel tap scatters W^T e back onto the strided input grid.
    for kh in range(k):
        for kw in range(k):
            tap = np.tensordot(W[:, :, kh, kw], E, axes=(0, 0))  # (c_in, oh, ow)
            X[:, kh:kh + stride * oh:stride, kw:kw + stride * ow:stride] += tap
    _v(out, _I32, c_in * h * wd)[c0 * h * wd:c1 * h * wd] = X[:, pad:pad + h, pad:pad + wd].ravel()


def _conv_grad(e, x, c_in, h, wd, c_out, k, stride, pad, c0, c1):
    """The weight gradient rows of output channels [c0, c1), flat."""
    cols = _cols(x, c_in, h, wd, k, stride, pad)
    E = _v(e, _I8, c_out * cols.shape[1]).reshape(c_out, -1)[c0:c1].astype(np.int64)
    return (E @ cols.T).ravel()


def conv2d_grad_s8_s32_chw(e, x, out, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_grad_s8_s32_chw", c0, c1, c_out)
    nco = c_in * k * k
    _v(out, _I32, c_out * nco)[c0 * nco:c1 * nco] = _conv_grad(e, x, c_in, h, wd, c_out, k, stride, pad, c0, c1)


def conv2d_score_s8_chw(e, x, w, scores, subset, shift, smax, c_in, h, wd, c_out, k, stride, pad, c0=0, c1=None):
    c1 = check_range("conv2d_score_s8_chw", c0, c1, c_out)
    nco = c_in * k * k
    g = _conv_grad(e, x, c_in, h, wd, c_out, k, stride, pad, c0, c1)
    gw = g * _v(w, _I8, c_out * nco)[c0 * nco:c1 * nco]
    return _score_apply(scores, subset, gw, shift, smax, c_out * nco, c0 * nco)


def relu_s8(x, n):
    v = _v(x, _I8, n)
    np.maximum(v, 0, out=v)


def relu_bwd_s8(y, e, n):
    _v(e, _I8, n)[_v(y, _I8, n) <= 0] = 0


def maxpool2d_s8_chw(x, out, idx, c, h, wd, k, relu=0):
    oh, ow = h // k, wd // k
    X = _v(x, _I8, c * h * wd).reshape(c, h, wd)[:, :oh * k, :ow * k]
    win = X.reshape(c, oh, k, ow, k).transpose(0, 1, 3, 2, 4).reshape(c, oh, ow, k * k)
    bi = win.argmax(axis=3)  # first maximum, as the reference
    best = np.take_along_axis(win, bi[..., None], 3).ravel()
    _v(out, _I8, c * oh * ow)[:] = np.maximum(best, 0) if relu else best
    if idx is not None:
        np.frombuffer(idx, np.uint8, c * oh * ow)[:] = bi.ravel()


def maxpool2d_bwd_s8_chw(e, idx, out, c, h, wd, k, y=None):
    oh, ow = h // k, wd // k
    O = _v(out, _I8, c * h * wd).reshape(c, h, wd)
    O[:] = 0
    bi = np.frombuffer(idx, np.uint8, c * oh * ow).reshape(c, oh, ow).astype(np.int64)
    ch, oy, ox = np.indices((c, oh, ow))
    E = _v(e, _I8, c * oh * ow).reshape(c, oh, ow)
    if y is not None:
        E = np.where(_v(y, _I8, c * oh * ow).reshape(c, oh, ow) > 0, E, 0)
    O[ch, oy * k + bi // k, ox * k + bi % k] = E


def _pseudo(g, s):
    """Vectorised rshift_pseudo (NITI's pseudo-stochastic rounding)."""
    m = np.abs(g)
    rem = m & ((1 << s) - 1)
    half = s >> 1
    rnd = (rem & ((1 << half) - 1)) << (s & 1)
    q = (m >> s) + ((rem >> half) > rnd)
    return np.where(g < 0, -q, q)


def _update(W, G, shift):
    """W[:] = sat8(W - r(G)) in place (int8 view, int64 gradient); the count."""
    r = W.astype(np.int64) - (G if shift <= 0 else _pseudo(G, shift))
    sat = int(np.count_nonzero((r > Q_MAX) | (r < -Q_MAX)))
    W[:] = np.clip(r, -Q_MAX, Q_MAX)
    return sat


def update_s8(w, g, n, shift, c0=0, c1=None):
    c1 = check_range("update_s8", c0, c1, n)
    return _update(_v(w, _I8, n)[c0:c1], _v(g, _I32, n)[c0:c1].astype(np.int64), shift)


def update_outer_s8(e, x, w, n_out, n_in, mu, c0=0, c1=None):
    c1 = check_range("update_outer_s8", c0, c1, n_out)
    if not 0 <= mu <= 7:
        raise ValueError("update_outer_s8: mu must be in [0, 7], got %d" % mu)
    E = _v(e, _I8, n_out).astype(np.int64)
    X = _v(x, _I8, n_in).astype(np.int64)
    shift = bit_length(int(np.abs(E).max(initial=0) * np.abs(X).max(initial=0))) - mu
    G = np.outer(E[c0:c1], X).ravel()
    return _update(_v(w, _I8, n_out * n_in)[c0 * n_in:c1 * n_in], G, shift)
