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

void pt_conv2d_dims_channels(pt_conv2d_dims_t *v, const pt_conv2d_dims_t *d, int32_t c_out) {
    /* field by field: a struct assignment may become a memcpy call, which a
     * native module cannot link */
    v->c_in = d->c_in;
    v->h = d->h;
    v->w = d->w;
    v->c_out = c_out;
    v->k = d->k;
    v->stride = d->stride;
    v->pad = d->pad;
    v->oh = d->oh;
    v->ow = d->ow;
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
#define NOINLINE PT_NOINLINE

/* op[0:n] += wv * src[0:n]: both passes' rows at stride 1 (the common case),
 * four arguments, all in registers. */
static NOINLINE void row_add1(int32_t *op, const int8_t *src, int32_t n, int32_t wv) {
    int32_t *end = op + n;
    while (op < end) {
        *op++ += wv * *src++;
    }
}

/* op[0:n] += wv * xp[0], xp[stride], ... */
static NOINLINE void row_fwd(int32_t *op, const int8_t *xp, int32_t n, int32_t wv, int32_t stride) {
    int32_t i = 0;
    for (; n > 0; n--, i += stride) {
        *op++ += wv * xp[i];
    }
}

/* op[0], op[stride], ... += wv * ep[0:n] */
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
    if (sc != NULL && pt_edge_scored(sc, j) && pt_score_get(sc, (*si)++) < thr) {
        return 0;
    }
    return w[j];
}

/* Forward (masked when sc has scores) of the output channels [c0, c1), into
 * out[0 : (c1 - c0) * plane]; si0 is the index of channel c0's first score.
 * The other forward passes below take the same range. */
static PT_NOINLINE void conv_fwd(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                     int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1, uint32_t si0) {
    const int32_t k = d->k, stride = d->stride, pad = d->pad, ow = d->ow;
    const int32_t plane = d->oh * d->ow, hw = d->h * d->w, xstep = stride * d->w;
    uint32_t j = (uint32_t)(c0 * d->c_in * k * k), si = si0;
    int32_t co, ci, kh, kw, t;
    for (t = 0; t < (c1 - c0) * plane; t++) {
        out[t] = 0;
    }
    for (co = c0; co < c1; co++) {
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
                    ooff = (co - c0) * plane + y0 * ow + x0;
                    for (oy = y0; oy < y1; oy++, xoff += xstep, ooff += ow) {
                        if (stride == 1) {
                            row_add1(out + ooff, x + xoff, cnt, wv);
                        } else {
                            row_fwd(out + ooff, x + xoff, cnt, wv, stride);
                        }
                    }
                }
            }
        }
    }
}

/* The scores consumed by the edges [j, j + n). */
static uint32_t scores_of(const pt_scores_t *sc, uint32_t j, uint32_t n) {
    return sc == NULL ? 0 : pt_scores_in(sc, j, n);
}

/* Error to the input channels [c0, c1) (masked when sc has scores): the adjoint of conv_fwd. */
static PT_NOINLINE void conv_bwd_generic(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                     int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    const int32_t k = d->k, stride = d->stride, pad = d->pad, ow = d->ow;
    const int32_t plane = d->oh * d->ow, hw = d->h * d->w, xstep = stride * d->w;
    const uint32_t nco = (uint32_t)(d->c_in * k * k), skip = (uint32_t)(c0 * k * k);
    uint32_t j, si, jco = 0, sico = 0;
    int32_t co, ci, kh, kw, t;
    for (t = c0 * hw; t < c1 * hw; t++) {
        out[t] = 0;
    }
    for (co = 0; co < d->c_out; co++, jco += nco) {
        /* the edges of co start at jco; those of the channels before c0 are skipped */
        j = jco + skip;
        si = sico + scores_of(sc, jco, skip);
        sico += scores_of(sc, jco, nco);
        for (ci = c0; ci < c1; ci++) {
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
                            row_add1(out + xoff, e + eoff, cnt, wv);
                        } else {
                            row_bwd(out + xoff, e + eoff, cnt, wv, stride);
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------
 * Dense forward pass (stride 1, no padding): output-stationary blocks of four
 * neighbouring outputs of one channel, the four sums in registers across all
 * c_in * k * k taps; per row of taps the k weights sit in registers and each
 * input byte is loaded once and used for every output it feeds. On the M0+
 * (k = 5, block4_k5): 88 cycles per row of 20 MACs, less where input words
 * or bytes are 0; the tiny CNN's conv layers average 3.6-3.8 cycles per MAC
 * with the loops. The (masked) weights of an output channel are staged on
 * the stack.
 * ------------------------------------------------------------------------ */
#define DENSE_W_MAX 256   /* c_in * k * k of the dense path: staged weights on the stack */

static int dense_fwd_ok(const pt_conv2d_dims_t *d) {
    return d->stride == 1 && d->pad == 0 && d->c_in * d->k * d->k <= DENSE_W_MAX;
}

/* The dense path reads x a word at a time (block4_k5): the armv6m build, k = 5,
 * and every row it reads 4-aligned. */
static int dense_words_ok(const int8_t *x, const pt_conv2d_dims_t *d) {
    return PT_ASM_M0 && d->k == 5 && d->c_in > 0 && PT_ALIGNED4(x) && (d->w & 3) == 0;
}

/* out[0:4] = sum over (ci, kh, kw) of wc[(ci*k + kh)*k + kw] * xb[ci*hw + kh*W + kw + 0:4] */
static void block4_c(const int8_t *xb, const int8_t *wc, int32_t c_in, int32_t k, int32_t W, int32_t hw,
                     int32_t *out) {
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, ci, kh, kw;
    for (ci = 0; ci < c_in; ci++) {
        for (kh = 0; kh < k; kh++) {
            const int8_t *xr = xb + ci * hw + kh * W;
            for (kw = 0; kw < k; kw++) {
                const int32_t wv = *wc++;
                a0 += wv * xr[kw];
                a1 += wv * xr[kw + 1];
                a2 += wv * xr[kw + 2];
                a3 += wv * xr[kw + 3];
            }
        }
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
    out[3] = a3;
}

#if PT_ASM_M0
/* block4_c for k = 5 on 4-aligned input rows, the weights staged as int32.
 * Each row of taps reads its eight input bytes as two words (2 cycles each,
 * where ldrb + sxtb cost 3 a byte) and unpacks them with shifts; a word of
 * four zero bytes skips its ten MACs (a ReLU'd feature map or MNIST's
 * background: 18-20 % of the words of the tiny CNN's L3 input, 56 % of
 * L0's). Bytes 1 to 6 are tested as they are unpacked (the shift that
 * unpacks a byte sets the flags, so byte 4 is unpacked by shifts too, not
 * sxtb): a zero byte skips its two to four MACs, 2-4 % of these
 * convolutions' cycles on real data. A MULS overwrites one operand: a
 * byte's last product overwrites the byte, and a weight's last product in
 * the row (with output 3) the weight, which the next row loads again; the
 * other products multiply a copy (8 copies a row, not 12). Per row of 20
 * MACs 88 cycles dense, 23 with two zero words (the byte loads took 87
 * every time).
 * Registers: r0-r4 the row's five weights w0-w4 (in that order for the
 * ldm), r5 t (an input byte), r6 u (its copy while it has further uses),
 * r7 v (the input word); r8-r11 the four sums, r12 the input row pointer,
 * lr the weight pointer. Input byte j of the row feeds output i with
 * weight j - i. */
#define B4_C(w, a) "mov %[u], %[t]\n\t" "muls %[u], %[" #w "]\n\t" "add %[" #a "], %[u]\n\t"
#define B4_L(w, a) "muls %[t], %[" #w "]\n\t" "add %[" #a "], %[t]\n\t"
/* weight w's last use in the row (it is loaded again for the next): w *= t, t kept */
#define B4_W(w, a) "muls %[" #w "], %[t]\n\t" "add %[" #a "], %[" #w "]\n\t"
#define B4_B0 "sxtb %[t], %[v]\n\t"
#define B4_B0Z "lsls %[t], %[v], #24\n\t" "asrs %[t], %[t], #24\n\t"
#define B4_B1 "lsls %[t], %[v], #16\n\t" "asrs %[t], %[t], #24\n\t"
#define B4_B2 "lsls %[t], %[v], #8\n\t" "asrs %[t], %[t], #24\n\t"
#define B4_B3 "asrs %[t], %[v], #24\n\t"
/* the input word at byte offset off of the row; to label 3 when it is 0 */
#define B4_WORD(off) "mov %[u], %[xp]\n\t" "ldr %[v], [%[u], #" #off "]\n\t" "cmp %[v], #0\n\t"
#define B4_ROW(step)                                                            \
    "mov %[t], lr\n\t"                                                        \
    "ldmia %[t]!, {r0, r1, r2, r3, r4}\n\t"                                   \
    "mov lr, %[t]\n\t"                                                        \
    B4_WORD(0) "beq 3f\n\t"                                                   \
    B4_B0 B4_L(w0, a0)                                                          \
    B4_B1 "beq 6f\n\t" B4_C(w1, a0) B4_L(w0, a1)                               \
    "6:\n\t"                                                                  \
    B4_B2 "beq 7f\n\t" B4_C(w2, a0) B4_C(w1, a1) B4_L(w0, a2)                  \
    "7:\n\t"                                                                  \
    B4_B3 "beq 3f\n\t" B4_W(w0, a3) B4_C(w3, a0) B4_C(w2, a1) B4_L(w1, a2)     \
    "3:\n\t"                                                                  \
    B4_WORD(4) "beq 4f\n\t"                                                   \
    B4_B0Z "beq 6f\n\t" B4_W(w1, a3) B4_C(w4, a0) B4_C(w3, a1) B4_L(w2, a2)    \
    "6:\n\t"                                                                  \
    B4_B1 "beq 7f\n\t" B4_W(w2, a3) B4_C(w4, a1) B4_L(w3, a2)                  \
    "7:\n\t"                                                                  \
    B4_B2 "beq 8f\n\t" B4_W(w3, a3) B4_L(w4, a2)                               \
    "8:\n\t"                                                                  \
    B4_B3 B4_L(w4, a3)                                                          \
    "4:\n\t"                                                                  \
    "ldr %[t], %[" #step "]\n\t"                                              \
    "add %[xp], %[t]\n\t"

/* nb blocks of four outputs side by side, out[0:4 nb] (xb and out advance by
 * 4 a block): one call per output row, about 45 cycles of set-up and stores
 * a block (plus 8 a channel); a call per block cost 54 more (the first
 * layer, 1,152 blocks: 516k -> 454k cycles). */
static PT_NOINLINE void block4_k5(const int8_t *xb, const int32_t *wc, int32_t c_in, int32_t W, int32_t hw,
                                  int32_t *out, int32_t nb) {
    register int32_t a0 __asm__("r8");
    register int32_t a1 __asm__("r9");
    register int32_t a2 __asm__("r10");
    register int32_t a3 __asm__("r11");
    register const int8_t *xp __asm__("r12");
    register int32_t w0 __asm__("r0");
    register int32_t w1 __asm__("r1");
    register int32_t w2 __asm__("r2");
    register int32_t w3 __asm__("r3");
    register int32_t w4 __asm__("r4");
    register int32_t t __asm__("r5");
    register int32_t u __asm__("r6");
    register uint32_t v __asm__("r7");
    int32_t rstep = W, cstep = hw - 4 * W, left;
    const int32_t *wp = wc;
    __asm__ volatile(
        ".syntax unified\n"
        "0:\n\t"
        "movs %[t], #0\n\t"
        "mov %[a0], %[t]\n\t"
        "mov %[a1], %[t]\n\t"
        "mov %[a2], %[t]\n\t"
        "mov %[a3], %[t]\n\t"
        "ldr %[t], %[wp]\n\t"
        "mov lr, %[t]\n\t"
        "ldr %[t], %[xb]\n\t"
        "mov %[xp], %[t]\n\t"
        "ldr %[t], %[cin]\n\t"
        "str %[t], %[left]\n"
        "1:\n\t"
        B4_ROW(rstep)
        B4_ROW(rstep)
        B4_ROW(rstep)
        B4_ROW(rstep)
        B4_ROW(cstep)
        "ldr %[t], %[left]\n\t"
        "subs %[t], #1\n\t"
        "str %[t], %[left]\n\t"
        "beq 2f\n\t"
        "b 1b\n"          /* the body is beyond a conditional branch's reach */
        "2:\n\t"
        "ldr %[t], %[out]\n\t"
        "mov %[u], %[a0]\n\t"
        "str %[u], [%[t], #0]\n\t"
        "mov %[u], %[a1]\n\t"
        "str %[u], [%[t], #4]\n\t"
        "mov %[u], %[a2]\n\t"
        "str %[u], [%[t], #8]\n\t"
        "mov %[u], %[a3]\n\t"
        "str %[u], [%[t], #12]\n\t"
        "adds %[t], #16\n\t"
        "str %[t], %[out]\n\t"
        "ldr %[t], %[xb]\n\t"
        "adds %[t], #4\n\t"
        "str %[t], %[xb]\n\t"
        "ldr %[t], %[nb]\n\t"
        "subs %[t], #1\n\t"
        "str %[t], %[nb]\n\t"
        "beq 5f\n\t"
        "b 0b\n"
        "5:\n"
        : [xp] "=&r"(xp), [t] "=&l"(t), [u] "=&l"(u), [v] "=&l"(v),
          [w0] "=&l"(w0), [w1] "=&l"(w1), [w2] "=&l"(w2), [w3] "=&l"(w3), [w4] "=&l"(w4),
          [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [left] "=m"(left),
          [xb] "+m"(xb), [out] "+m"(out), [nb] "+m"(nb)
        : [wp] "m"(wp), [rstep] "m"(rstep), [cstep] "m"(cstep), [cin] "m"(c_in)
        : "cc", "memory", "lr");
}

/* w32[0:n] = w[0:n] sign-extended, four from a word when w is 4-aligned
 * (a channel's 200 weights of L3 in 5 cycles each where a byte loop took 7). */
static void widen_s8(int32_t *w32, const int8_t *w, int32_t n) {
    int32_t t = 0;
    if (PT_ALIGNED4(w)) {
        for (; t + 4 <= n; t += 4) {
            const uint32_t v = *(const pt_u32a *)(w + t);
            w32[t] = (int8_t)v;
            w32[t + 1] = (int32_t)(v << 16) >> 24;
            w32[t + 2] = (int32_t)(v << 8) >> 24;
            w32[t + 3] = (int32_t)v >> 24;
        }
    }
    for (; t < n; t++) {
        w32[t] = w[t];
    }
}
#endif

/* The dense forward pass (dense_fwd_ok). */
static PT_NOINLINE void conv_fwd_dense(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                           int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1, uint32_t si0) {
    const int32_t k = d->k, W = d->w, hw = d->h * W, ow = d->ow, nco = d->c_in * k * k;
    uint32_t j = (uint32_t)(c0 * nco), si = si0;
    int32_t co, oy, ox;
    int32_t wst_words[DENSE_W_MAX / 4];   /* the masked weights, 4-aligned for a word copy */
    int8_t *const wst = (int8_t *)wst_words;
#if PT_ASM_M0
    int32_t w32[DENSE_W_MAX];   /* block4_k5's weights, widened once per channel */
    const int words = dense_words_ok(x, d);
#endif
    for (co = c0; co < c1; co++) {
        const int8_t *wc = w + co * nco;
        if (sc != NULL) {
            si = pt_mask_range_s8(wc, sc, thr, j, si, wst, nco);
            j += (uint32_t)nco;
            wc = wst;
        }
#if PT_ASM_M0
        if (words) {
            widen_s8(w32, wc, nco);
        }
#endif
        for (oy = 0; oy < d->oh; oy++) {
            const int8_t *xr = x + oy * W;
            int32_t *orow = out + ((co - c0) * d->oh + oy) * ow;
            ox = 0;
#if PT_ASM_M0
            if (words && ow >= 4) {
                block4_k5(xr, w32, d->c_in, W, hw, orow, ow >> 2);
                ox = ow & ~3;
            }
#endif
            for (; ox + 4 <= ow; ox += 4) {
                block4_c(xr + ox, wc, d->c_in, k, W, hw, orow + ox);
            }
            for (; ox < ow; ox++) {
                int32_t a = 0, ci, kh, kw;
                const int8_t *wt = wc;
                for (ci = 0; ci < d->c_in; ci++) {
                    for (kh = 0; kh < k; kh++) {
                        const int8_t *xt = xr + ox + ci * hw + kh * W;
                        for (kw = 0; kw < k; kw++) {
                            a += *wt++ * xt[kw];
                        }
                    }
                }
                orow[ox] = a;
            }
        }
    }
}

/* 1 when x[0:n] holds no negative byte (a ReLU's output, an image): the
 * sparse gathers from it then need no sign extension (nz_t.nonneg). */
static int nonneg_s8(const int8_t *x, int32_t n) {
    return pt_first_below_s8(x, x + n, 0) == x + n;
}

/* Nonzero bytes of x[0:n]. */
static int32_t count_nonzero(const int8_t *x, int32_t n) {
    int32_t c = 0;
    const int8_t *end = x + n;
    while (x < end && !PT_ALIGNED4(x)) {
        c += *x++ != 0;
    }
    for (; x + 4 <= end; x += 4) {
        uint32_t v = *(const pt_u32a *)x;
        if (v) {
            c += ((v & 0xFFu) != 0) + ((v & 0xFF00u) != 0) + ((v & 0xFF0000u) != 0) + ((v >> 24) != 0);
        }
    }
    while (x < end) {
        c += *x++ != 0;
    }
    return c;
}

/* ------------------------------------------------------------------------
 * Sparse paths. In training, 85-95 % of a conv layer's output error is 0
 * (max-pool backward keeps one error in four, ReLU backward drops more) and
 * 55-75 % of its input activations are 0 (ReLU; MNIST's background): the
 * error to the input and the weight gradient (with PRIOT's score step) visit
 * only the nonzero errors, the forward pass (stride 1) only the nonzero
 * inputs. Every product skipped is a zero product, so the sums are the same;
 * a dense operand costs a few cycles per MAC more than a dense loop would.
 *
 * The nonzeros of one plane (R x C) are listed in a small stack buffer
 * (nz_t), a chunk of NZ_MAX at a time. Position (r, c) owns a k x k window
 * of a target plane (TH x TW) whose top-left is (r*a + b, c*a + b):
 *   error to the input / gradient: the plane is e[co] (oh x ow), the target
 *     the input plane (h x w), a = stride, b = -pad;
 *   forward (stride 1): the plane is x[ci] (h x w), the target the output
 *     plane (oh x ow), a = 1, b = pad - (k - 1); window cell (i, j) is
 *     weight tap (k-1-i, k-1-j).
 * Entries: interior (window inside the target) (off << 8) | (uint8)v with
 * off = top * TW + left, so window cell (i, j) is target item off + i*TW + j;
 * border (part of the window outside) (r << 20) | (c << 8) | (uint8)v, handled
 * in C with the window clipped to the target.
 * Gradient: g[j] = sum over entries of v * x[off + i*TW + j] (gather, the k
 * sums in registers). Error to the input and forward: target[off + i*TW + j]
 * += wrow[j] * v (scatter).
 * ------------------------------------------------------------------------ */
#define NZ_MAX 96       /* entries per chunk: 384 bytes of stack */
#define KROW_MAX 16     /* k of the sparse paths (a row of taps, a k x k block of int8 weights on the stack) */

typedef struct {
    int32_t R, C, a, b, k, TH, TW;   /* geometry, above */
    int32_t iy0, iy1, ix0, ix1;      /* positions whose window lies inside the target */
    int32_t oy, ox;                  /* where the next scan starts */
    int32_t n_in, n_bd;              /* ent[0 .. n_in) interior, ent[NZ_MAX - n_bd .. NZ_MAX) border */
    int32_t nonneg;                  /* 1: the int8 target planes hold no negative byte (a gather's
                                        bytes need no sign extension) */
    int32_t ent[NZ_MAX];
} nz_t;

/* Positions o in [*lo, *hi) of n with 0 <= o*a + b and o*a + b + k <= T. */
static void interior(int32_t a, int32_t b, int32_t k, int32_t T, int32_t n, int32_t *lo, int32_t *hi) {
    int32_t o = 0;
    while (o < n && o * a + b < 0) {
        o++;
    }
    *lo = o;
    o = n;
    while (o > *lo && (o - 1) * a + b + k > T) {
        o--;
    }
    *hi = o;
}

static void nz_setup(nz_t *L, int32_t R, int32_t C, int32_t a, int32_t b, int32_t k, int32_t TH, int32_t TW) {
    L->R = R;
    L->C = C;
    L->a = a;
    L->b = b;
    L->k = k;
    L->TH = TH;
    L->TW = TW;
    interior(a, b, k, TH, R, &L->iy0, &L->iy1);
    interior(a, b, k, TW, C, &L->ix0, &L->ix1);
    L->oy = L->ox = L->n_in = L->n_bd = L->nonneg = 0;
}

/* Sizes the entries hold (offsets < 2^22, positions < 4096) and the stack
 * buffers (k <= KROW_MAX). */
static int nz_fits(int32_t R, int32_t C, int32_t k, int32_t TH, int32_t TW) {
    return k <= KROW_MAX && R < 4096 && C < 4096 && (uint32_t)TH * (uint32_t)TW <= (1u << 22);
}

static int sparse_bwd_ok(const pt_conv2d_dims_t *d) {
    return nz_fits(d->oh, d->ow, d->k, d->h, d->w);
}

#define KFWD_MAX 8   /* k of the sparse forward pass (its k x k weights on the stack) */

static int sparse_fwd_ok(const pt_conv2d_dims_t *d) {
    return d->stride == 1 && d->k <= KFWD_MAX && d->pad <= 32767 - KROW_MAX &&
           nz_fits(d->h, d->w, d->k, d->oh, d->ow);
}

/* List the nonzeros of plane ep (R x C) from (L->oy, L->ox) on, until the
 * plane ends (returns 1) or NZ_MAX entries are listed (returns 0; the next
 * call goes on from there). Aligned words are read whole: a zero word (most of
 * them) costs one load and one test. */
typedef struct {
    int32_t n_in, n_bd, inrow, rowoff;
} nz_acc_t;

/* Add the nonzero v at column ox; 0 when the buffer is full. */
PT_INLINE int nz_add(nz_t *L, nz_acc_t *A, int32_t oy, int32_t ox, int32_t v) {
    if (A->n_in + A->n_bd == NZ_MAX) {
        return 0;
    }
    if (A->inrow && ox >= L->ix0 && ox < L->ix1) {
        L->ent[A->n_in++] = (int32_t)(((uint32_t)(A->rowoff + ox * L->a) << 8) | (uint8_t)v);
    } else {
        L->ent[NZ_MAX - 1 - A->n_bd++] = (int32_t)(((uint32_t)oy << 20) | ((uint32_t)ox << 8) | (uint8_t)v);
    }
    return 1;
}

static int nz_scan(nz_t *L, const int8_t *ep) {
    const int32_t C = L->C;
    int32_t oy = L->oy, ox = L->ox;
    nz_acc_t A;
    A.n_in = A.n_bd = 0;
    for (; oy < L->R; oy++, ox = 0) {
        const int8_t *row = ep + oy * C;
        A.inrow = oy >= L->iy0 && oy < L->iy1;
        A.rowoff = A.inrow ? (oy * L->a + L->b) * L->TW + L->b : 0;
        for (; ox < C && !PT_ALIGNED4(row + ox); ox++) {
            if (row[ox] != 0 && !nz_add(L, &A, oy, ox, row[ox])) {
                goto full;
            }
        }
        for (; ox + 4 <= C; ox += 4) {
            uint32_t v4 = *(const pt_u32a *)(row + ox);
            int32_t b;
            if (v4 == 0) {
                continue;
            }
            for (b = 0; b < 4; b++, v4 >>= 8) {
                if ((v4 & 0xFFu) != 0 && !nz_add(L, &A, oy, ox + b, (int32_t)(int8_t)(uint8_t)v4)) {
                    ox += b;
                    goto full;
                }
            }
        }
        for (; ox < C; ox++) {
            if (row[ox] != 0 && !nz_add(L, &A, oy, ox, row[ox])) {
                goto full;
            }
        }
    }
    L->oy = oy;
    L->ox = 0;
    L->n_in = A.n_in;
    L->n_bd = A.n_bd;
    return 1;
full:
    L->oy = oy;
    L->ox = ox;
    L->n_in = A.n_in;
    L->n_bd = A.n_bd;
    return 0;
}

/* The next chunk of plane ep: listed by nz_scan, or replayed from kc (a
 * chunk is a header word n_in | n_bd << 8 | done << 16, then its interior and
 * border entries). A replay costs a copy of the entries, a listing a test of
 * every input byte and the encoding of each nonzero. */
static int nz_next(nz_t *L, const int8_t *ep, pt_nz_cache_t *kc) {
    int32_t *p, i, n;
    int done;
    if (kc != NULL && kc->state == PT_NZ_REPLAY) {
        p = kc->buf + kc->pos;
        L->n_in = p[0] & 0xFF;
        L->n_bd = (p[0] >> 8) & 0xFF;
        done = p[0] >> 16;
        for (i = 0, p++; i < L->n_in; i++) {
            L->ent[i] = *p++;
        }
        for (i = NZ_MAX - L->n_bd; i < NZ_MAX; i++) {
            L->ent[i] = *p++;
        }
        kc->pos = (int32_t)(p - kc->buf);
        return done;
    }
    done = nz_scan(L, ep);
    if (kc != NULL && kc->state == PT_NZ_RECORD) {
        n = 1 + L->n_in + L->n_bd;
        if (n > kc->cap - kc->pos) {
            kc->state = PT_NZ_OFF;
            return done;
        }
        p = kc->buf + kc->pos;
        *p++ = L->n_in | (L->n_bd << 8) | (done << 16);
        for (i = 0; i < L->n_in; i++) {
            *p++ = L->ent[i];
        }
        for (i = NZ_MAX - L->n_bd; i < NZ_MAX; i++) {
            *p++ = L->ent[i];
        }
        kc->pos += n;
    }
    return done;
}

/* Start the scan of a plane over. */
static void nz_rewind(nz_t *L) {
    L->oy = L->ox = L->n_in = L->n_bd = 0;
}

#define ENT_V(e) ((int32_t)(int8_t)(uint8_t)(e))
#define ENT_OFF(e) ((int32_t)((uint32_t)(e) >> 8))
#define BD_R(e) ((int32_t)((uint32_t)(e) >> 20))
#define BD_C(e) ((int32_t)(((uint32_t)(e) >> 8) & 0xFFFu))

/* g[r*gk + 0:n] = sum over the interior entries [lp, end) of v * xb[off + r*TW + 0:n], r < rows. */
static void gather_c(const int32_t *lp, const int32_t *end, const int8_t *xb, int32_t *g, int32_t n,
                     int32_t rows, int32_t TW, int32_t gk) {
    const int32_t *l;
    int32_t t;
    for (; rows > 0; rows--, xb += TW, g += gk) {
        for (t = 0; t < n; t++) {
            g[t] = 0;
        }
        for (l = lp; l < end; l++) {
            const int8_t *xp = xb + ENT_OFF(*l);
            int32_t v = ENT_V(*l);
            for (t = 0; t < n; t++) {
                g[t] += v * xp[t];
            }
        }
    }
}

#if PT_ASM_M0
/* gather_c with n = 5, the five accumulators in r8-r12: per entry 33 cycles
 * for 5 MACs (ldm 2, decode 3, 5 x (ldrb 2, sxtb, muls, add), loop 3), 28
 * when the target holds no negative byte (no sxtb: a ReLU'd feature map, an
 * image), per row about 35 more (the window's rows in one call: a call a row
 * cost ~100 in the callers' loops); rows >= 1. EXT: the sign extension of
 * a byte, or nothing. */
#define G5_MAC(off, g, EXT)                                                     \
    "ldrb %[t], [%[p], #" #off "]\n\t" EXT "muls %[t], %[v]\n\t" "add %[" #g "], %[t]\n\t"
#define GATHER5_ROWS_ASM(EXT)                                                   \
    __asm__ volatile(                                                         \
        ".syntax unified\n"                                                   \
        "0:\n\t"                                                              \
        "movs %[t], #0\n\t"                                                   \
        "mov %[g0], %[t]\n\t"                                                 \
        "mov %[g1], %[t]\n\t"                                                 \
        "mov %[g2], %[t]\n\t"                                                 \
        "mov %[g3], %[t]\n\t"                                                 \
        "mov %[g4], %[t]\n\t"                                                 \
        "ldr %[lp], %[lp0]\n\t"                                               \
        "cmp %[lp], %[end]\n\t"                                               \
        "beq 2f\n"                                                            \
        "1:\n\t"                                                              \
        "ldmia %[lp]!, {%[p]}\n\t"          /* entry: off << 8 | v */          \
        "sxtb %[v], %[p]\n\t"                                                 \
        "asrs %[p], %[p], #8\n\t"                                             \
        "adds %[p], %[p], %[xb]\n\t"        /* p = xb + off */                 \
        G5_MAC(0, g0, EXT) G5_MAC(1, g1, EXT) G5_MAC(2, g2, EXT)              \
        G5_MAC(3, g3, EXT) G5_MAC(4, g4, EXT)                                 \
        "cmp %[lp], %[end]\n\t"                                               \
        "bne 1b\n"                                                            \
        "2:\n\t"                            /* the row's sums to g, the next row */ \
        "ldr %[t], %[g]\n\t"                                                  \
        "mov %[p], %[g0]\n\t"                                                 \
        "str %[p], [%[t], #0]\n\t"                                            \
        "mov %[p], %[g1]\n\t"                                                 \
        "str %[p], [%[t], #4]\n\t"                                            \
        "mov %[p], %[g2]\n\t"                                                 \
        "str %[p], [%[t], #8]\n\t"                                            \
        "mov %[p], %[g3]\n\t"                                                 \
        "str %[p], [%[t], #12]\n\t"                                           \
        "mov %[p], %[g4]\n\t"                                                 \
        "str %[p], [%[t], #16]\n\t"                                           \
        "ldr %[p], %[gk4]\n\t"                                                \
        "adds %[t], %[t], %[p]\n\t"                                           \
        "str %[t], %[g]\n\t"                                                  \
        "ldr %[t], %[TW]\n\t"                                                 \
        "adds %[xb], %[xb], %[t]\n\t"                                         \
        "ldr %[t], %[rows]\n\t"                                               \
        "subs %[t], #1\n\t"                                                   \
        "str %[t], %[rows]\n\t"                                               \
        "bne 0b\n"                                                            \
        : [lp] "=&l"(lp), [p] "=&l"(p), [v] "=&l"(v), [t] "=&l"(t), [xb] "+l"(xb), \
          [g0] "=&r"(g0), [g1] "=&r"(g1), [g2] "=&r"(g2), [g3] "=&r"(g3), [g4] "=&r"(g4), \
          [g] "+m"(g), [rows] "+m"(rows)                                      \
        : [end] "l"(end), [lp0] "m"(lp0), [gk4] "m"(gk4), [TW] "m"(TW)        \
        : "cc", "memory")

static PT_NOINLINE void gather5_rows(const int32_t *lp0, const int32_t *end, const int8_t *xb, int32_t *g,
                                     int32_t rows, int32_t TW, int32_t gk, int nonneg) {
    register int32_t g0 __asm__("r8");
    register int32_t g1 __asm__("r9");
    register int32_t g2 __asm__("r10");
    register int32_t g3 __asm__("r11");
    register int32_t g4 __asm__("r12");
    const int32_t gk4 = gk * 4;
    const int32_t *lp;
    int32_t p, v, t;
    if (nonneg) {
        GATHER5_ROWS_ASM("");
    } else {
        GATHER5_ROWS_ASM("sxtb %[t], %[t]\n\t");
    }
}
#else
static void gather5_rows(const int32_t *lp, const int32_t *end, const int8_t *xb, int32_t *g, int32_t rows,
                         int32_t TW, int32_t gk, int nonneg) {
    (void)nonneg;
    gather_c(lp, end, xb, g, 5, rows, TW, gk);
}
#endif

/* out[off + r*TW + 0:n] += w8[r*wk + 0:n] * v for every interior entry [lp, end), r < rows. */
static void scatter_c(const int32_t *lp, const int32_t *end, int32_t *ob, const int8_t *w8, int32_t n,
                      int32_t rows, int32_t TW, int32_t wk) {
    const int32_t *l;
    int32_t t;
    for (; rows > 0; rows--, ob += TW, w8 += wk) {
        for (l = lp; l < end; l++) {
            int32_t *op = ob + ENT_OFF(*l);
            int32_t v = ENT_V(*l);
            for (t = 0; t < n; t++) {
                op[t] += w8[t] * v;
            }
        }
    }
}

#if PT_ASM_M0
/* scatter_c with n = 5, a row's weights in r8-r12: per entry 44 cycles for 5
 * MACs (ldm 2, decode 5, 5 x (ldr 2, mov, muls, adds, str 2), loop 3), per
 * row about 35 more (loading its five int8 weights); rows >= 1. */
static PT_NOINLINE void scatter5_rows(const int32_t *lp0, const int32_t *end, int32_t *ob, const int8_t *w8,
                                      int32_t rows, int32_t TW, int32_t wk) {
    register int32_t w0 __asm__("r8");
    register int32_t w1 __asm__("r9");
    register int32_t w2 __asm__("r10");
    register int32_t w3 __asm__("r11");
    register int32_t w4 __asm__("r12");
    const int32_t tw4 = TW * 4;
    const int32_t *lp;
    int32_t p, v, o, t;
    __asm__ volatile(
        ".syntax unified\n"
        "0:\n\t"
        "ldr %[t], %[w8]\n\t"               /* the row's weights, sign-extended */
        "ldrb %[v], [%[t], #0]\n\t"
        "sxtb %[v], %[v]\n\t"
        "mov %[w0], %[v]\n\t"
        "ldrb %[v], [%[t], #1]\n\t"
        "sxtb %[v], %[v]\n\t"
        "mov %[w1], %[v]\n\t"
        "ldrb %[v], [%[t], #2]\n\t"
        "sxtb %[v], %[v]\n\t"
        "mov %[w2], %[v]\n\t"
        "ldrb %[v], [%[t], #3]\n\t"
        "sxtb %[v], %[v]\n\t"
        "mov %[w3], %[v]\n\t"
        "ldrb %[v], [%[t], #4]\n\t"
        "sxtb %[v], %[v]\n\t"
        "mov %[w4], %[v]\n\t"
        "ldr %[v], %[wk]\n\t"
        "adds %[t], %[t], %[v]\n\t"
        "str %[t], %[w8]\n\t"
        "ldr %[lp], %[lp0]\n\t"
        "cmp %[lp], %[end]\n\t"
        "beq 2f\n"
        "1:\n\t"
        "ldmia %[lp]!, {%[p]}\n\t"          /* entry: off << 8 | v */
        "sxtb %[v], %[p]\n\t"
        "asrs %[p], %[p], #8\n\t"
        "lsls %[p], %[p], #2\n\t"
        "adds %[p], %[p], %[ob]\n\t"        /* p = ob + off (int32 items) */
        "ldr %[o], [%[p], #0]\n\t"
        "mov %[t], %[w0]\n\t"
        "muls %[t], %[v]\n\t"
        "adds %[o], %[o], %[t]\n\t"
        "str %[o], [%[p], #0]\n\t"
        "ldr %[o], [%[p], #4]\n\t"
        "mov %[t], %[w1]\n\t"
        "muls %[t], %[v]\n\t"
        "adds %[o], %[o], %[t]\n\t"
        "str %[o], [%[p], #4]\n\t"
        "ldr %[o], [%[p], #8]\n\t"
        "mov %[t], %[w2]\n\t"
        "muls %[t], %[v]\n\t"
        "adds %[o], %[o], %[t]\n\t"
        "str %[o], [%[p], #8]\n\t"
        "ldr %[o], [%[p], #12]\n\t"
        "mov %[t], %[w3]\n\t"
        "muls %[t], %[v]\n\t"
        "adds %[o], %[o], %[t]\n\t"
        "str %[o], [%[p], #12]\n\t"
        "ldr %[o], [%[p], #16]\n\t"
        "mov %[t], %[w4]\n\t"
        "muls %[t], %[v]\n\t"
        "adds %[o], %[o], %[t]\n\t"
        "str %[o], [%[p], #16]\n\t"
        "cmp %[lp], %[end]\n\t"
        "bne 1b\n"
        "2:\n\t"                            /* the next row */
        "ldr %[t], %[tw4]\n\t"
        "adds %[ob], %[ob], %[t]\n\t"
        "ldr %[t], %[rows]\n\t"
        "subs %[t], #1\n\t"
        "str %[t], %[rows]\n\t"
        "bne 0b\n"
        : [lp] "=&l"(lp), [p] "=&l"(p), [v] "=&l"(v), [o] "=&l"(o), [t] "=&l"(t), [ob] "+l"(ob),
          [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3), [w4] "=&r"(w4),
          [w8] "+m"(w8), [rows] "+m"(rows)
        : [end] "l"(end), [lp0] "m"(lp0), [wk] "m"(wk), [tw4] "m"(tw4)
        : "cc", "memory");
}
#else
static void scatter5_rows(const int32_t *lp, const int32_t *end, int32_t *ob, const int8_t *w8, int32_t rows,
                          int32_t TW, int32_t wk) {
    scatter_c(lp, end, ob, w8, 5, rows, TW, wk);
}
#endif

/* g[r*k + 0:k] = sum over the listed entries of v * tp[(top + i0 + r) * TW + left + 0:k],
 * r < rows: window rows i0 .. i0 + rows of the target plane tp (the gradients
 * of those rows of taps). */
static void gather_rows(const nz_t *L, const int8_t *tp, int32_t i0, int32_t rows, int32_t *g) {
    const int32_t k = L->k, TW = L->TW;
    int32_t j = 0, e, r;
    if (L->n_in > 0) {
        /* an interior window exists, so (i0 + r)*TW + j stays inside the plane */
        const int8_t *xb = tp + i0 * TW;
        const int32_t *end = L->ent + L->n_in;
        for (; j + 5 <= k; j += 5) {
            gather5_rows(L->ent, end, xb + j, g + j, rows, TW, k, L->nonneg);
        }
        if (j < k) {
            gather_c(L->ent, end, xb + j, g + j, k - j, rows, TW, k);
        }
    } else {
        for (; j < k * rows; j++) {
            g[j] = 0;
        }
    }
    for (e = NZ_MAX - L->n_bd; e < NZ_MAX; e++) {
        const int32_t ent = L->ent[e], v = ENT_V(ent);
        const int32_t x0 = BD_C(ent) * L->a + L->b;
        const int32_t lo = x0 < 0 ? -x0 : 0, hi = TW - x0 < k ? TW - x0 : k;
        for (r = 0; r < rows; r++) {
            const int32_t y = BD_R(ent) * L->a + L->b + i0 + r;
            const int8_t *xr;
            if (y < 0 || y >= L->TH) {
                continue;
            }
            xr = tp + y * TW + x0;
            for (j = lo; j < hi; j++) {
                g[r * k + j] += v * xr[j];
            }
        }
    }
}

/* tp[(top + i) * TW + left + j] += w8[i*k + j] * v for every listed entry,
 * i, j < k: the window's rows of the target plane tp (int32). */
static void scatter_rows(const nz_t *L, int32_t *tp, const int8_t *w8) {
    const int32_t k = L->k, TW = L->TW;
    int32_t i, j, e;
    if (L->n_in > 0) {
        const int32_t *end = L->ent + L->n_in;
        for (j = 0; j + 5 <= k; j += 5) {
            scatter5_rows(L->ent, end, tp + j, w8 + j, k, TW, k);
        }
        if (j < k) {
            scatter_c(L->ent, end, tp + j, w8 + j, k - j, k, TW, k);
        }
    }
    for (e = NZ_MAX - L->n_bd; e < NZ_MAX; e++) {
        const int32_t ent = L->ent[e], v = ENT_V(ent);
        const int32_t x0 = BD_C(ent) * L->a + L->b;
        const int32_t lo = x0 < 0 ? -x0 : 0, hi = TW - x0 < k ? TW - x0 : k;
        for (i = 0; i < k; i++) {
            const int32_t y = BD_R(ent) * L->a + L->b + i;
            int32_t *orow;
            if (y < 0 || y >= L->TH) {
                continue;
            }
            orow = tp + y * TW + x0;
            for (j = lo; j < hi; j++) {
                orow[j] += w8[i * k + j] * v;
            }
        }
    }
}

/* gather_rows when the plane needed several chunks: each is listed again
 * (the stack holds one), a row at a time. */
static void gather_rows_chunked(nz_t *L, const int8_t *ep, const int8_t *tp, int32_t i0, int32_t rows,
                                int32_t *g) {
    int32_t tmp[KROW_MAX], j, r, done;
    for (r = 0; r < rows; r++, g += L->k) {
        nz_rewind(L);
        done = nz_scan(L, ep);
        gather_rows(L, tp, i0 + r, 1, g);
        while (!done) {
            done = nz_scan(L, ep);
            gather_rows(L, tp, i0 + r, 1, tmp);
            for (j = 0; j < L->k; j++) {
                g[j] += tmp[j];
            }
        }
    }
}

static void zero_s32(int32_t *p, int32_t n) {
    for (; n > 0; n--) {
        *p++ = 0;
    }
}

/* Weight gradient from the nonzero errors (sparse_bwd_ok). */
static PT_NOINLINE void conv_grad_sparse(const int8_t *e, const int8_t *x, int32_t *out, const pt_conv2d_dims_t *d) {
    const int32_t k = d->k, plane = d->oh * d->ow, hw = d->h * d->w, nco = d->c_in * k * k;
    int32_t co, ci, kh, t, g[KROW_MAX];
    nz_t L;
    nz_setup(&L, d->oh, d->ow, d->stride, -d->pad, k, d->h, d->w);
    L.nonneg = nonneg_s8(x, d->c_in * hw);
    for (co = 0; co < d->c_out; co++, out += nco) {
        int first = 1, done;
        nz_rewind(&L);
        do {
            done = nz_scan(&L, e + co * plane);
            if (first && done && L.n_in + L.n_bd == 0) {
                zero_s32(out, nco);
                break;
            }
            for (ci = 0; ci < d->c_in; ci++) {
                if (first) {
                    gather_rows(&L, x + ci * hw, 0, k, out + ci * k * k);
                    continue;
                }
                for (kh = 0; kh < k; kh++) {
                    int32_t *gp = out + (ci * k + kh) * k;
                    gather_rows(&L, x + ci * hw, kh, 1, g);
                    for (t = 0; t < k; t++) {
                        gp[t] += g[t];
                    }
                }
            }
            first = 0;
        } while (!done);
    }
}

static void conv_grad(const int8_t *e, const int8_t *x, int32_t *out, const pt_conv2d_dims_t *d) {
    int32_t co, ci, kh, kw;
    if (sparse_bwd_ok(d)) {
        conv_grad_sparse(e, x, out, d);
        return;
    }
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

#if PT_ASM_M0
/* pt_step_s8 on s[0:n] with p = g[t] * w[t] (n >= 1, 1 <= shift <= 31, every
 * |g| < 2^24): 26 cycles a tap, where gcc's loop kept s, g, w, half and smax
 * on the stack (about 50). Registers: r0-r7 the pointers, the index, the
 * shift and three temporaries; r8-r12 half, smax, -smax, the saturation
 * count and n. */
static PT_NOINLINE int32_t score_steps_m0(int8_t *s, const int32_t *g, const int8_t *w, int32_t n,
                                          int32_t shift, int32_t smax) {
    register uint32_t half __asm__("r8") = 1u << (shift - 1);
    register int32_t hi __asm__("r9") = smax;
    register int32_t lo __asm__("r10") = -smax;
    register int32_t sat __asm__("r11") = 0;
    register int32_t end __asm__("r12") = n;
    int32_t i = 0, p, t, v;
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "ldmia %[g]!, {%[p]}\n\t"
        "ldrsb %[t], [%[w], %[i]]\n\t"
        "muls %[p], %[t]\n\t"
        "asrs %[t], %[p], #31\n\t"      /* the sign of g * w */
        "eors %[p], %[t]\n\t"
        "subs %[p], %[p], %[t]\n\t"     /* |g * w| */
        "add %[p], %[half]\n\t"
        "lsrs %[p], %[sh]\n\t"
        "eors %[p], %[t]\n\t"
        "subs %[p], %[p], %[t]\n\t"     /* the step, halves away from 0 */
        "ldrsb %[v], [%[s], %[i]]\n\t"
        "subs %[v], %[v], %[p]\n\t"
        "cmp %[v], %[hi]\n\t"
        "bgt 2f\n\t"
        "cmp %[v], %[lo]\n\t"
        "blt 3f\n"
        "4:\n\t"
        "strb %[v], [%[s], %[i]]\n\t"
        "adds %[i], #1\n\t"
        "cmp %[i], %[end]\n\t"
        "blt 1b\n\t"
        "b 5f\n"
        "2:\n\t"                         /* saturated: rare, out of the loop */
        "mov %[v], %[hi]\n\t"
        "b 6f\n"
        "3:\n\t"
        "mov %[v], %[lo]\n"
        "6:\n\t"
        "mov %[t], %[sat]\n\t"
        "adds %[t], #1\n\t"
        "mov %[sat], %[t]\n\t"
        "b 4b\n"
        "5:\n"
        : [g] "+l"(g), [i] "+l"(i), [p] "=&l"(p), [t] "=&l"(t), [v] "=&l"(v), [sat] "+r"(sat)
        : [s] "l"(s), [w] "l"(w), [sh] "l"(shift), [half] "r"(half), [hi] "r"(hi), [lo] "r"(lo),
          [end] "r"(end)
        : "cc", "memory");
    return sat;
}
#endif

/* score_steps_m0's step for the taps of v's set bits only (tap t: bit t,
 * g[t], w[t]), on the compact int8 scores s[0 ..) of PRIOT-S, v != 0. */
#if PT_ASM_M0
/* 29 cycles a scored tap (PT_SCORE_BITS_ASM). */
static PT_NOINLINE int32_t score_bits_s8(int8_t *s, const int32_t *g, const int8_t *w, uint32_t v,
                                         int32_t shift, int32_t smax) {
    register int32_t hi __asm__("r8") = smax;
    register int32_t lo __asm__("r9") = -smax;
    register int32_t sat __asm__("r10") = 0;
    register int32_t sh1 __asm__("r11") = shift - 1;
    int32_t i = -1, p, t, q;
    __asm__ volatile(
        PT_SCORE_BITS_ASM("lsls %[t], %[i], #2\n\t"
                          "ldr %[p], [%[g], %[t]]\n\t"
                          "ldrsb %[t], [%[w], %[i]]\n\t"
                          "muls %[p], %[t]\n\t")
        : [s] "+l"(s), [v] "+l"(v), [i] "+l"(i), [p] "=&l"(p), [t] "=&l"(t), [q] "=&l"(q), [sat] "+r"(sat)
        : [g] "l"(g), [w] "l"(w), [hi] "r"(hi), [lo] "r"(lo), [sh1] "r"(sh1)
        : "cc", "memory");
    return sat;
}
#else
static int32_t score_bits_s8(int8_t *s, const int32_t *g, const int8_t *w, uint32_t v, int32_t shift,
                             int32_t smax) {
    const uint32_t half = 1u << (shift - 1);
    int32_t sat = 0, t;
    for (t = 0; v; t++, v >>= 1) {
        if (v & 1u) {
            sat += pt_step_s8(s++, g[t] * w[t], half, shift, smax);
        }
    }
    return sat;
}
#endif

/* The score steps of n >= 1 taps from edge j on (g their gradients, w their
 * weights; *si the score index of the first scored one, moved past them).
 * The taps of a block that have no score were never gathered: only the
 * scored ones are read. fast (conv_score: 1 <= shift <= 31, and every |g| <
 * 2^24 by the layer's size, so g * w fits int32): int8 scores take the
 * inline step; else pt_score_apply. */
static int32_t score_block(const pt_scores_t *sc, uint32_t *si, const int32_t *g, const int8_t *w, uint32_t j,
                           const uint32_t *bw, int32_t n, int32_t shift, int32_t smax, int fast) {
    int32_t sat = 0, t;
    if (!fast || sc->s16) {
        for (t = 0; t < n; t++) {
            if (pt_edge_scored(sc, j + (uint32_t)t)) {
                sat += pt_score_apply(sc, (*si)++, g[t], w[t], shift, smax);
            }
        }
    } else if (sc->subset == NULL) {
        /* PRIOT's int8 scores: one step per tap, g = 0 or w = 0 a step of 0
         * that only clamps, as pt_score_apply */
        int8_t *s = (int8_t *)sc->data + *si;
#if PT_ASM_M0
        sat = score_steps_m0(s, g, w, n, shift, smax);
#else
        const uint32_t half = 1u << (shift - 1);
        for (t = 0; t < n; t++) {
            sat += pt_step_s8(s + t, g[t] * w[t], half, shift, smax);
        }
#endif
        *si += (uint32_t)n;
    } else {
        /* PRIOT-S's int8 scores: 32 taps a word of the subset */
        for (t = 0; t < n; t += 32) {
            const uint32_t v = bw[t >> 5];
            if (v) {
                sat += score_bits_s8((int8_t *)sc->data + *si, g + t, w + t, v, shift, smax);
                *si += pt_popcount32(v);
            }
        }
    }
    return sat;
}

#define GBLK 80   /* taps per block of conv_score (whole rows): 320 bytes of stack */

/* Bits b .. b + k of the words bw (k < 32, b + k <= 32 * their number). */
static uint32_t bits_in(const uint32_t *bw, uint32_t b, uint32_t k) {
    const uint32_t sh = b & 31u;
    uint32_t v = bw[b >> 5] >> sh;
    if (sh + k > 32u) {
        v |= bw[(b >> 5) + 1u] << (32u - sh);
    }
    return v & ((1u << k) - 1u);
}

static PT_NOINLINE int32_t conv_score(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                                      int32_t shift, int32_t smax, const pt_conv2d_dims_t *d) {
    const int32_t k = d->k, plane = d->oh * d->ow, hw = d->h * d->w, nrows = d->c_in * k, nco = nrows * k;
    /* a tap's g sums at most plane products of int8 (|e x| <= 2^14): under 2^24 */
    const int fast = shift >= 1 && shift <= 31 && plane < 1024;
    uint32_t j = 0, si = 0;
    int32_t sat = 0, co, ci, kh, kw, r, rows, rb, nr, t, g[GBLK];
    nz_t L;
    if (!sparse_bwd_ok(d)) {
        for (co = 0; co < d->c_out; co++) {
            for (ci = 0; ci < d->c_in; ci++) {
                for (kh = 0; kh < k; kh++) {
                    for (kw = 0; kw < k; kw++, j++) {
                        if (pt_edge_scored(sc, j)) {
                            int32_t gt = pt_conv2d_tap_s8_s32_chw(e, x, d, co, ci, kh, kw);
                            sat += pt_score_step(sc, si++, gt, w[j], shift, smax);
                        }
                    }
                }
            }
        }
        return sat;
    }
    rb = (int32_t)pt_udiv_u32(GBLK, (uint32_t)k);   /* rows a block (k <= KROW_MAX < GBLK) */
    nz_setup(&L, d->oh, d->ow, d->stride, -d->pad, k, d->h, d->w);
    L.nonneg = nonneg_s8(x, d->c_in * hw);
    for (co = 0; co < d->c_out; co++) {
        const int8_t *ep = e + co * plane;
        int done;
        nz_rewind(&L);
        done = nz_scan(&L, ep);
        if (done && L.n_in + L.n_bd == 0) {
            /* g = 0: the steps only clamp out-of-range scores */
            const uint32_t cnt = pt_scores_in(sc, j, (uint32_t)nco);
            sat += pt_scores_clamp(sc, si, cnt, smax);
            si += cnt;
            j += (uint32_t)nco;
            continue;
        }
        /* blocks of whole rows of taps: the block's subset bits (bw), the
         * gradients of its scored rows, then its steps in one call (a call a
         * row cost ~50 cycles more); the scored rows of an input channel that
         * come in a run are gathered in one call */
        ci = kh = 0;
        for (rows = 0; rows < nrows; rows += nr) {
            uint32_t bw[(GBLK + 31) / 32];
            int32_t nt, run;
            nr = rows + rb <= nrows ? rb : nrows - rows;
            nt = nr * k;
            for (t = 0; t < nt; t += 32) {
                bw[t >> 5] = sc->subset == NULL ? ~0u
                             : pt_bits_at(sc->subset, sc->edge0 + j + (uint32_t)t, nt - t < 32 ? (uint32_t)(nt - t) : 32u);
            }
            for (r = 0; r < nr; r += run, kh += run) {
                if (kh == k) {
                    kh = 0;
                    ci++;
                }
                for (run = 0; r + run < nr && kh + run < k && bits_in(bw, (uint32_t)((r + run) * k), (uint32_t)k);) {
                    run++;
                }
                if (run == 0) {
                    run = 1;   /* a row without scores: no gradient */
                } else if (done) {
                    gather_rows(&L, x + ci * hw, kh, run, g + r * k);
                } else {
                    gather_rows_chunked(&L, ep, x + ci * hw, kh, run, g + r * k);
                }
            }
            sat += score_block(sc, &si, g, w + j, j, bw, nt, shift, smax, fast);
            j += (uint32_t)nt;
        }
    }
    return sat;
}

/* Error to the input channels [c0, c1) from the nonzero errors (sparse_bwd_ok):
 * out = 0, then every nonzero e[co][oy][ox] adds its (masked) weights times e
 * to its window. */
static PT_NOINLINE void conv_t_sparse(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                          int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    const int32_t k = d->k, hw = d->h * d->w, plane = d->oh * d->ow, nco = d->c_in * k * k;
    const uint32_t skip = (uint32_t)(c0 * k * k);
    uint32_t j = 0, si = 0;
    int32_t co, ci;
    int8_t w8[KROW_MAX * KROW_MAX];
    nz_t L;
    zero_s32(out + c0 * hw, (c1 - c0) * hw);
    nz_setup(&L, d->oh, d->ow, d->stride, -d->pad, k, d->h, d->w);
    for (co = 0; co < d->c_out; co++) {
        const int8_t *ep = e + co * plane;
        const uint32_t jco = j, sico = si, siskip = si + scores_of(sc, j, skip);
        int done;
        nz_rewind(&L);
        do {
            done = nz_scan(&L, ep);
            if (L.n_in + L.n_bd == 0) {
                break;
            }
            j = jco + skip;
            si = siskip;
            for (ci = c0; ci < c1; ci++, j += (uint32_t)(k * k)) {
                const int8_t *wb = w + j;
                if (sc != NULL) {
                    /* a block pruned to zeros adds nothing */
                    si = pt_mask_range_s8(wb, sc, thr, j, si, w8, k * k);
                    if (count_nonzero(w8, k * k) == 0) {
                        continue;
                    }
                    wb = w8;
                }
                scatter_rows(&L, out + ci * hw, wb);
            }
        } while (!done);
        /* past co's edges, whether or not they were walked */
        j = jco + (uint32_t)nco;
        si = sico + scores_of(sc, jco, (uint32_t)nco);
    }
}

/* Scatter the listed inputs of x[ci] into output plane op with the (masked)
 * k x k weights wblk of (co, ci), turned by 180 degrees. */
static void fwd_block(const nz_t *L, const int8_t *wblk, int32_t *op) {
    const int32_t kk = L->k * L->k;
    int32_t t;
    int8_t wrot[KFWD_MAX * KFWD_MAX];
    for (t = 0; t < kk; t++) {
        wrot[t] = wblk[kk - 1 - t];   /* turned by 180 degrees: the block's taps in reverse */
    }
    scatter_rows(L, op, wrot);
}

#define SPARSE_CO_MAX 64   /* output channels whose compact score indices fit the stack */

/* Forward pass from the nonzero inputs (sparse_fwd_ok: stride 1): out = 0,
 * then every nonzero x[ci][y][xx] adds its value times the (masked) weights
 * of (co, ci) to the outputs it feeds. Each input plane is listed once for
 * all output channels: the score of edge j is scores[j], or with compact
 * scores (PRIOT-S) scores[sic[co - c0]], each channel's next score index
 * (issue 8: listing a plane again per channel cost as much as the scatter);
 * beyond SPARSE_CO_MAX channels compact scores walk the edges in order.
 * With kc, the first call records its lists and the next calls replay them
 * (the lists depend on x only, and every call walks the planes in order). */
static PT_NOINLINE void conv_fwd_sparse(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                            int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1, uint32_t si0,
                            pt_nz_cache_t *kc) {
    const int32_t k = d->k, kk = k * k, hw = d->h * d->w, plane = d->oh * d->ow, nco = d->c_in * kk;
    uint32_t j = (uint32_t)(c0 * nco), si = si0, sic[SPARSE_CO_MAX];
    int32_t co, ci, done;
    int8_t wblk[KFWD_MAX * KFWD_MAX];
    nz_t L;
    const int compact = sc != NULL && sc->subset != NULL;
    zero_s32(out, (c1 - c0) * plane);
    nz_setup(&L, d->h, d->w, 1, d->pad - (k - 1), k, d->oh, d->ow);
    if (!compact || c1 - c0 <= SPARSE_CO_MAX) {
        if (kc != NULL) {
            kc->pos = 0;
        }
        for (co = c0; compact && co < c1; co++) {
            sic[co - c0] = si;
            si += scores_of(sc, (uint32_t)(co * nco), (uint32_t)nco);
        }
        for (ci = 0; ci < d->c_in; ci++) {
            int listed = 0;
            nz_rewind(&L);
            do {
                done = nz_next(&L, x + ci * hw, kc);
                if (L.n_in + L.n_bd == 0) {
                    break;
                }
                for (co = c0; co < c1; co++) {
                    j = (uint32_t)(co * nco + ci * kk);
                    if (!compact) {
                        pt_mask_range_s8(w + j, sc, thr, j, j, wblk, kk);
                    } else if (!listed) {   /* the block's scores are consumed once */
                        sic[co - c0] = pt_mask_range_s8(w + j, sc, thr, j, sic[co - c0], wblk, kk);
                    } else {
                        pt_mask_range_s8(w + j, sc, thr, j, sic[co - c0] - scores_of(sc, j, (uint32_t)kk), wblk,
                                         kk);
                    }
                    if (count_nonzero(wblk, kk)) {
                        fwd_block(&L, wblk, out + (co - c0) * plane);
                    }
                }
                listed = 1;
            } while (!done);
            for (co = c0; compact && !listed && co < c1; co++) {   /* an empty plane: skip its scores */
                sic[co - c0] += scores_of(sc, (uint32_t)(co * nco + ci * kk), (uint32_t)kk);
            }
        }
        if (kc != NULL && kc->state == PT_NZ_RECORD) {
            kc->state = PT_NZ_REPLAY;
        }
        return;
    }
    for (co = c0; co < c1; co++) {
        for (ci = 0; ci < d->c_in; ci++) {
            si = pt_mask_range_s8(w + j, sc, thr, j, si, wblk, kk);
            j += (uint32_t)kk;
            if (count_nonzero(wblk, kk) == 0) {
                continue;
            }
            nz_rewind(&L);
            do {
                done = nz_scan(&L, x + ci * hw);
                if (L.n_in + L.n_bd == 0) {
                    break;
                }
                fwd_block(&L, wblk, out + (co - c0) * plane);
            } while (!done);
        }
    }
}

/* The forward pass takes the sparse path when few inputs are nonzero, else
 * the dense one when the geometry allows, else the general loop. A nonzero
 * input costs the sparse path about 2x what the byte-wise dense path pays
 * per output per (input channel, tap), so sparse wins when nonzeros <
 * c_in * oh * ow / 2. The word-wise dense path skips zero words, and on the
 * tiny CNN (thinned inputs on the emulator) the sparse path won only below
 * about (oh * ow - 128) / 8 nonzeros per input channel: on L0 (24 x 24
 * outputs) below 19 % nonzero inputs, on L3 (8 x 8) never. */
int pt_conv2d_fwd_sparse(const int8_t *x, const pt_conv2d_dims_t *d) {
    int32_t nz;
    if (!sparse_fwd_ok(d)) {
        return 0;
    }
    if (!dense_fwd_ok(d)) {
        return 1;
    }
    if (dense_words_ok(x, d)) {
        const int32_t lim = d->c_in * (d->oh * d->ow - 128);
        return lim > 0 && 8 * count_nonzero(x, d->c_in * d->h * d->w) < lim;
    }
    nz = count_nonzero(x, d->c_in * d->h * d->w);
    return 2 * nz < d->c_in * d->oh * d->ow;
}

void pt_conv2d_range_s32(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                         int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1, int sparse,
                         pt_nz_cache_t *kc) {
    const uint32_t si0 = scores_of(sc, 0, (uint32_t)(c0 * d->c_in * d->k * d->k));
    if ((c1 - c0) * d->oh * d->ow == 0) {
        return;   /* no output */
    }
    if (sparse) {
        conv_fwd_sparse(x, w, sc, thr, out, d, c0, c1, si0, kc);
    } else if (dense_fwd_ok(d)) {
        conv_fwd_dense(x, w, sc, thr, out, d, c0, c1, si0);
    } else {
        conv_fwd(x, w, sc, thr, out, d, c0, c1, si0);
    }
}

/* A range [c0, c1) of output channels (forward, gradient, score step) writes
 * those channels of the whole-tensor output; the error to the input takes a
 * range of input channels. */

void pt_conv2d_s8_s32_chw(const int8_t *x, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d,
                          int32_t c0, int32_t c1) {
    pt_conv2d_range_s32(x, w, NULL, 0, out + c0 * d->oh * d->ow, d, c0, c1, pt_conv2d_fwd_sparse(x, d), NULL);
}

void pt_conv2d_mask_s8_s32_chw(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                               int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    pt_conv2d_range_s32(x, w, (sc != NULL && sc->data != NULL) ? sc : NULL, thr, out + c0 * d->oh * d->ow, d,
                        c0, c1, pt_conv2d_fwd_sparse(x, d), NULL);
}

void pt_conv2d_grad_s8_s32_chw(const int8_t *e, const int8_t *x, int32_t *out, const pt_conv2d_dims_t *d,
                               int32_t c0, int32_t c1) {
    pt_conv2d_dims_t v;
    pt_conv2d_dims_channels(&v, d, c1 - c0);
    conv_grad(e + c0 * d->oh * d->ow, x, out + c0 * d->c_in * d->k * d->k, &v);
}

int32_t pt_conv2d_score_s8_chw(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                               int32_t shift, int32_t smax, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    const int32_t j0 = c0 * d->c_in * d->k * d->k;
    pt_conv2d_dims_t v;
    pt_scores_t vs;
    pt_conv2d_dims_channels(&v, d, c1 - c0);
    return conv_score(e + c0 * d->oh * d->ow, x, w + j0, pt_scores_view(&vs, sc, (uint32_t)j0), shift, smax, &v);
}

/* The error to the input walks every output channel; the range is of input channels. */
static void conv_t_any(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                       int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    if (sparse_bwd_ok(d)) {
        conv_t_sparse(e, w, sc, thr, out, d, c0, c1);
    } else {
        conv_bwd_generic(e, w, sc, thr, out, d, c0, c1);
    }
}

void pt_conv2d_t_s8_s32_chw(const int8_t *e, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d,
                            int32_t c0, int32_t c1) {
    conv_t_any(e, w, NULL, 0, out, d, c0, c1);
}

void pt_conv2d_t_mask_s8_s32_chw(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                 int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    pt_scores_t vs;
    conv_t_any(e, w, pt_mask_view(&vs, sc, 0), thr, out, d, c0, c1);
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
