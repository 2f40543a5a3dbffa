/* conv2d.c - direct 2-D convolution on CHW images: forward, error to the
 * input, weight gradient, and the edge-popup masked forward / backward.
 *
 * The loops visit the weights in their own order (co, ci, kh, kw); for each
 * weight (a "tap") they sweep the output positions whose input pixel lies
 * inside the image, so padding costs nothing and a mask costs one test per
 * weight. Offsets are int32 indices; a pointer is formed only for an item
 * that is read or written.
 */
#include "picotrain_kernels.h"

int pt_conv2d_dims(pt_conv2d_dims_t *d, int32_t c_in, int32_t h, int32_t w, int32_t c_out,
                   int32_t k, int32_t stride, int32_t pad) {
    int64_t eh = (int64_t)h + 2 * (int64_t)pad - k;
    int64_t ew = (int64_t)w + 2 * (int64_t)pad - k;
    if (c_in < 0 || h < 0 || w < 0 || c_out < 0 || k < 1 || stride < 1 || pad < 0) {
        return -1;
    }
    if (eh < 0 || ew < 0 || eh > PT_S32_MAX || ew > PT_S32_MAX) {
        return -1;
    }
    d->c_in = c_in;
    d->h = h;
    d->w = w;
    d->c_out = c_out;
    d->k = k;
    d->stride = stride;
    d->pad = pad;
    d->oh = (int32_t)pt_udiv_u32((uint32_t)eh, (uint32_t)stride) + 1;
    d->ow = (int32_t)pt_udiv_u32((uint32_t)ew, (uint32_t)stride) + 1;
    return 0;
}

/* Output positions o in [*lo, *hi) with 0 <= o*stride - pad + kk < size.
 * No division: each loop runs at most pad/stride + 1 times. */
static void tap_range(int32_t kk, int32_t pad, int32_t stride, int32_t size, int32_t osize,
                      int32_t *lo, int32_t *hi) {
    int32_t o = 0, v = kk - pad;
    while (v < 0 && o < osize) {
        v += stride;
        o++;
    }
    *lo = o;
    o = osize;
    v = (osize - 1) * stride - pad + kk;
    while (o > *lo && v >= size) {
        v -= stride;
        o--;
    }
    *hi = o;
}

/* The innermost loops, one output row each, as functions of their own: with
 * only these values live, an M0+ keeps them all in registers. NOINLINE keeps
 * GCC from folding them back into the loop nest (and its register spills). */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* op[0:n] += wv * xp[0], xp[stride], ...; stride 1 (the common case) has its
 * own loop, with four arguments, all in registers. */
static NOINLINE void row_fwd1(int32_t *op, const int8_t *xp, int32_t n, int32_t wv) {
    int32_t *end = op + n;
    while (op < end) {
        *op++ += wv * *xp++;
    }
}

static NOINLINE void row_fwd(int32_t *op, const int8_t *xp, int32_t n, int32_t wv, int32_t stride) {
    int32_t i = 0;
    for (; n > 0; n--, i += stride) {
        *op++ += wv * xp[i];
    }
}

/* op[0], op[stride], ... += wv * ep[0:n] */
static NOINLINE void row_bwd1(int32_t *op, const int8_t *ep, int32_t n, int32_t wv) {
    const int8_t *end = ep + n;
    while (ep < end) {
        *op++ += wv * *ep++;
    }
}

static NOINLINE void row_bwd(int32_t *op, const int8_t *ep, int32_t n, int32_t wv, int32_t stride) {
    int32_t i = 0;
    for (; n > 0; n--, i += stride) {
        op[i] += wv * *ep++;
    }
}

/* sum of ep[0:n] * xp[0], xp[stride], ... */
static NOINLINE int32_t row_dot(const int8_t *ep, const int8_t *xp, int32_t n, int32_t stride) {
    const int8_t *end = ep + n;
    int32_t s = 0;
    if (stride == 1) {
        while (ep < end) {
            s += *ep++ * *xp++;
        }
        return s;
    }
    while (ep < end) {
        s += *ep++ * *xp;
        xp += stride;
    }
    return s;
}

/* The weight w[j] with the mask applied; advances *si past a scored edge. */
static inline int32_t masked_weight(const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                    uint32_t j, uint32_t *si) {
    if (sc != NULL && pt_edge_scored(sc->subset, j) && pt_score_get(sc, (*si)++) < thr) {
        return 0;
    }
    return w[j];
}

/* Forward (masked when sc has scores). */
static void conv_fwd(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                     int32_t *out, const pt_conv2d_dims_t *d) {
    const int32_t k = d->k, stride = d->stride, pad = d->pad, ow = d->ow;
    const int32_t plane = d->oh * d->ow, hw = d->h * d->w, xstep = stride * d->w;
    uint32_t j = 0, si = 0;
    int32_t co, ci, kh, kw, t;
    for (t = 0; t < d->c_out * plane; t++) {
        out[t] = 0;
    }
    for (co = 0; co < d->c_out; co++) {
        for (ci = 0; ci < d->c_in; ci++) {
            for (kh = 0; kh < k; kh++) {
                int32_t y0, y1;
                tap_range(kh, pad, stride, d->h, d->oh, &y0, &y1);
                for (kw = 0; kw < k; kw++) {
                    int32_t wv = masked_weight(w, sc, thr, j++, &si);
                    int32_t x0, x1, cnt, oy, xoff, ooff;
                    if (wv == 0) {
                        continue;
                    }
                    tap_range(kw, pad, stride, d->w, ow, &x0, &x1);
                    cnt = x1 - x0;
                    if (cnt <= 0) {
                        continue;
                    }
                    xoff = ci * hw + (y0 * stride - pad + kh) * d->w + x0 * stride - pad + kw;
                    ooff = co * plane + y0 * ow + x0;
                    for (oy = y0; oy < y1; oy++, xoff += xstep, ooff += ow) {
                        if (stride == 1) {
                            row_fwd1(out + ooff, x + xoff, cnt, wv);
                        } else {
                            row_fwd(out + ooff, x + xoff, cnt, wv, stride);
                        }
                    }
                }
            }
        }
    }
}

/* Error to the input (masked when sc has scores): the adjoint of conv_fwd. */
static void conv_bwd(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                     int32_t *out, const pt_conv2d_dims_t *d) {
    const int32_t k = d->k, stride = d->stride, pad = d->pad, ow = d->ow;
    const int32_t plane = d->oh * d->ow, hw = d->h * d->w, xstep = stride * d->w;
    uint32_t j = 0, si = 0;
    int32_t co, ci, kh, kw, t;
    for (t = 0; t < d->c_in * hw; t++) {
        out[t] = 0;
    }
    for (co = 0; co < d->c_out; co++) {
        for (ci = 0; ci < d->c_in; ci++) {
            for (kh = 0; kh < k; kh++) {
                int32_t y0, y1;
                tap_range(kh, pad, stride, d->h, d->oh, &y0, &y1);
                for (kw = 0; kw < k; kw++) {
                    int32_t wv = masked_weight(w, sc, thr, j++, &si);
                    int32_t x0, x1, cnt, oy, xoff, eoff;
                    if (wv == 0) {
                        continue;
                    }
                    tap_range(kw, pad, stride, d->w, ow, &x0, &x1);
                    cnt = x1 - x0;
                    if (cnt <= 0) {
                        continue;
                    }
                    xoff = ci * hw + (y0 * stride - pad + kh) * d->w + x0 * stride - pad + kw;
                    eoff = co * plane + y0 * ow + x0;
                    for (oy = y0; oy < y1; oy++, xoff += xstep, eoff += ow) {
                        if (stride == 1) {
                            row_bwd1(out + xoff, e + eoff, cnt, wv);
                        } else {
                            row_bwd(out + xoff, e + eoff, cnt, wv, stride);
                        }
                    }
                }
            }
        }
    }
}

void pt_conv2d_s8_s32_chw(const int8_t *x, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d) {
    conv_fwd(x, w, NULL, 0, out, d);
}

void pt_conv2d_t_s8_s32_chw(const int8_t *e, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d) {
    conv_bwd(e, w, NULL, 0, out, d);
}

void pt_conv2d_mask_s8_s32_chw(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                               int32_t *out, const pt_conv2d_dims_t *d) {
    conv_fwd(x, w, (sc != NULL && sc->data != NULL) ? sc : NULL, thr, out, d);
}

void pt_conv2d_t_mask_s8_s32_chw(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                 int32_t *out, const pt_conv2d_dims_t *d) {
    conv_bwd(e, w, (sc != NULL && sc->data != NULL) ? sc : NULL, thr, out, d);
}

int32_t pt_conv2d_tap_s8_s32_chw(const int8_t *e, const int8_t *x, const pt_conv2d_dims_t *d,
                                 int32_t co, int32_t ci, int32_t kh, int32_t kw) {
    const int32_t stride = d->stride, pad = d->pad, ow = d->ow;
    int32_t y0, y1, x0, x1, cnt, oy, xoff, eoff, s = 0;
    tap_range(kh, pad, stride, d->h, d->oh, &y0, &y1);
    tap_range(kw, pad, stride, d->w, ow, &x0, &x1);
    cnt = x1 - x0;
    if (cnt <= 0) {
        return 0;
    }
    xoff = ci * d->h * d->w + (y0 * stride - pad + kh) * d->w + x0 * stride - pad + kw;
    eoff = co * d->oh * ow + y0 * ow + x0;
    for (oy = y0; oy < y1; oy++, xoff += stride * d->w, eoff += ow) {
        s += row_dot(e + eoff, x + xoff, cnt, stride);
    }
    return s;
}

void pt_conv2d_grad_s8_s32_chw(const int8_t *e, const int8_t *x, int32_t *out, const pt_conv2d_dims_t *d) {
    int32_t co, ci, kh, kw;
    for (co = 0; co < d->c_out; co++) {
        for (ci = 0; ci < d->c_in; ci++) {
            for (kh = 0; kh < d->k; kh++) {
                for (kw = 0; kw < d->k; kw++) {
                    *out++ = pt_conv2d_tap_s8_s32_chw(e, x, d, co, ci, kh, kw);
                }
            }
        }
    }
}
