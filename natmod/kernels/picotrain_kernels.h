/*
 * picotrain_kernels.h - the C kernel API of picotrain (plain C99, no MicroPython).
 *
 * One C function per name of device/picotrain/kernels.py NAMES, with the same
 * semantics, bit for bit, as the pure-Python reference kernels_py.py (the
 * ground truth; docs/NUMERICS.md states the rules). Names follow CMSIS-NN's
 * habit of saying the types and the layout:
 *
 *     pt_<op>_<input type>_<output/accumulator type>[_<layout>]
 *     s8 = int8_t, s32 = int32_t, chw = channel-major images (C, H, W)
 *
 * Rules shared by every kernel:
 *   - The caller owns every buffer; kernels allocate nothing and touch only
 *     the items the sizes imply (documented per kernel). They do NOT check
 *     sizes: the MicroPython binding (binding.c) validates every argument
 *     before calling here.
 *   - int8 results saturate to [-127, 127] (PT_Q_MAX), int32 results to
 *     [-(2^31 - 1), 2^31 - 1]; inputs may hold -128 / INT32_MIN.
 *   - "round" is round half away from zero on the magnitude; a shift <= 0 is
 *     no shift at all (never a left shift), any shift >= 1 is exact, however
 *     large.
 *   - int8 x int8 products accumulate in int32; the sums are exact as long as
 *     a sum has at most PT_MAX_FANIN terms (the binding enforces it).
 *   - No floating point, no division instruction in any loop (armv6m has
 *     none): the few divisions per call use pt_udiv_u32 (shift-subtract).
 *   - Right shifts of negative int32 values are arithmetic (floor), which is
 *     what GCC and Clang do on every target picotrain supports.
 *   - Channel ranges (two cores): the big kernels take trailing c0, c1 and
 *     compute only channels [c0, c1) of their output (0 <= c0 <= c1 <= the
 *     channel count; output channels / rows, or for the error-to-input of a
 *     convolution its input channels), with whole-tensor buffers indexed as
 *     usual. Each output item gets exactly the arithmetic of the whole call,
 *     so the two halves of a split call give the whole call's bits.
 */
#ifndef PICOTRAIN_KERNELS_H
#define PICOTRAIN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define PT_Q_MAX 127                 /* int8 saturation bound (symmetric, as NITI) */
#define PT_CHANNEL_RANGES 1          /* the big kernels take c0, c1 (the rules above) */

/* armv6m (Cortex-M0+, the RP2040) gets hand-scheduled Thumb-1 inner loops
 * (inline asm); every other target, and -DPT_NO_ASM, the C loops with the
 * same results. Word accesses to int8 buffers go through pt_u32a (may_alias,
 * and only at 4-aligned addresses: an M0+ faults on unaligned words). */
#if defined(__thumb__) && defined(__ARM_ARCH_6M__) && !defined(PT_NO_ASM)
#define PT_ASM_M0 1
#else
#define PT_ASM_M0 0
#endif
#if defined(__GNUC__)
#define PT_NOINLINE __attribute__((noinline))
#define PT_INLINE static inline __attribute__((always_inline))
typedef uint32_t __attribute__((may_alias)) pt_u32a;
#else
#define PT_NOINLINE
#define PT_INLINE static inline
typedef uint32_t pt_u32a;
#endif
#define PT_ALIGNED4(p) ((((uintptr_t)(p)) & 3u) == 0)
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "picotrain's kernels pack int8 lanes into words little-endian"
#endif
#define PT_S32_MAX 0x7FFFFFFF        /* int32 saturation bound (symmetric) */
#define PT_MAX_FANIN 131071          /* 2^31 / 2^14 - 1: terms of an exact int8*int8 sum */
#define PT_SCORE_CLAMP 65536         /* |score delta| beyond this always saturates */

/* ------------------------------------------------------- scalar helpers -- */

/* a / b for unsigned 32-bit values, b > 0 (shift-subtract; no libgcc). */
uint32_t pt_udiv_u32(uint32_t a, uint32_t b);

/* Bit length of x (0 for 0). */
int32_t pt_bitlen_u32(uint32_t x);

/* |v| as uint32 (exact for INT32_MIN). */
PT_INLINE uint32_t pt_abs_u32(int32_t v) {
    return v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
}

/* v / 2^s rounded half away from zero; s <= 0: v. Any s. */
PT_INLINE int32_t pt_rshift_round_s32(int32_t v, int32_t s) {
    uint32_t m, q;
    if (s <= 0) {
        return v;
    }
    m = pt_abs_u32(v);
    if (s < 32) {
        q = (m + (1u << (s - 1))) >> s;   /* m <= 2^31: no overflow */
    } else {
        q = (s == 32 && m == 0x80000000u) ? 1u : 0u;
    }
    return v < 0 ? -(int32_t)q : (int32_t)q;
}

/* NITI's pseudo-stochastic rounding of v / 2^s (kernels_py.rshift_pseudo):
 * the upper s - s/2 discarded bits are the probability, the lower s/2 bits
 * (doubled when s is odd) the random number; round the magnitude up when
 * probability > random number. s <= 0: v. Any s. */
static inline int32_t pt_rshift_pseudo_s32(int32_t v, int32_t s) {
    uint32_t m, q, rem, prob, rnd, half;
    if (s <= 0) {
        return v;
    }
    if (s >= 64) {
        return 0;   /* probability = 0 */
    }
    m = pt_abs_u32(v);
    if (s < 32) {
        q = m >> s;
        rem = m & ((1u << s) - 1u);
    } else {
        q = 0;
        rem = m;
    }
    half = (uint32_t)s >> 1;          /* <= 31 */
    prob = rem >> half;
    rnd = rem & ((1u << half) - 1u);
    if (s & 1) {
        rnd <<= 1;                      /* < 2^32 since half <= 31 */
    }
    if (prob > rnd) {
        q++;
    }
    return v < 0 ? -(int32_t)q : (int32_t)q;
}

PT_INLINE int8_t pt_sat_s8(int32_t v) {
    return (int8_t)(v > PT_Q_MAX ? PT_Q_MAX : (v < -PT_Q_MAX ? -PT_Q_MAX : v));
}

static inline int32_t pt_sat_s32(int64_t v) {
    return (int32_t)(v > PT_S32_MAX ? PT_S32_MAX : (v < -PT_S32_MAX ? -PT_S32_MAX : v));
}

/* ------------------------------------------------- requant, accumulators -- */

/* Bit length of max |acc[0:n]| (NITI's range estimate; 32 for INT32_MIN). */
int32_t pt_bitlen_s32(const int32_t *acc, int32_t n);

/* out[j] = sat8(round(acc[j] / 2^shift)), j < n; returns how many saturated. */
int32_t pt_requant_s32_s8(const int32_t *acc, int8_t *out, int32_t n, int32_t shift);

/* acc[ch*plane + j] = sat32(acc[...] + b), b = bias[ch] * 2^d (d < 0: rounded
 * shift by -d); ch < c, j < plane. */
void pt_bias_add_s32(int32_t *acc, const int32_t *bias, int32_t c, int32_t plane, int32_t d);

/* acc[j] = sat32(round(acc[j] / 2^sa) + round(g[j] / 2^sg)), j < n. */
void pt_acc_add_s32(int32_t *acc, const int32_t *g, int32_t n, int32_t sa, int32_t sg);

/* -------------------------------------- binary-decomposition rescale (Tin-Tin) -- */

#define PT_RESCALE_MUL_MAX 0xFFFF    /* mul < 2^16 */
#define PT_RESCALE_SHIFT_MAX 62      /* shift in [0, 62] */

/* out[j] = sat8(round(acc[j] * mul / 2^shift)), j < n, with the product
 * exact (|acc * mul| < 2^47): one shifted add per set bit of mul, no
 * multiply. Needs mul <= PT_RESCALE_MUL_MAX and 0 <= shift <=
 * PT_RESCALE_SHIFT_MAX (the binding checks). Returns how many saturated. */
int32_t pt_rescale_s32_s8(const int32_t *acc, int8_t *out, int32_t n, uint32_t mul, int32_t shift);

/* ------------------------------------------------ top-k by magnitude (FQT) -- */

/* idx[0:k] = the indices of the k entries of g[0:n] with the largest
 * |g[j]| (|INT32_MIN| = 2^31), ties to the lower index, in increasing index
 * order; returns the k-th largest magnitude (0 when k == 0). Needs
 * 0 <= k <= n. g is only read and no scratch is used: one pass for max |g|,
 * one counting pass per bit of it (fewer when a count hits k), one to emit. */
uint32_t pt_topk_abs_s32(const int32_t *g, int32_t n, int32_t k, int32_t *idx);

/* ------------------------------------------------------------ linear layer -- */

/* out[o] = sum_i w[o*n_in + i] * x[i], c0 <= o < c1 <= n_out (w row-major n_out x n_in). */
void pt_fc_s8_s32(const int8_t *x, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out,
                  int32_t c0, int32_t c1);

/* out[i] = sum_o w[o*n_in + i] * e[o], i < n_in (error to the input). */
void pt_fc_t_s8_s32(const int8_t *e, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out);

/* Entries (i << 8) | (uint8)x[i] for the nonzero x[i], i from *from on, at
 * most cap of them (*from moves past the last one listed); returns how many.
 * i < 2^23 (n_in <= PT_MAX_FANIN). The sparse linear-layer kernels' list. */
int32_t pt_list_nonzero_s8(const int8_t *x, int32_t n, int32_t *from, int32_t *ent, int32_t cap);

/* out[o*n_in + i] = e[o] * x[i], c0 <= o < c1 (weight gradient of a linear layer). */
void pt_outer_s8_s32(const int8_t *e, const int8_t *x, int32_t *out, int32_t n_out, int32_t n_in,
                     int32_t c0, int32_t c1);

/* -------------------------------------------------------------- conv layer -- */

/* Geometry of a direct convolution on CHW images: input (c_in, h, w), weights
 * (c_out, c_in, k, k), output (c_out, oh, ow), oh = (h + 2 pad - k) / stride + 1. */
typedef struct {
    int32_t c_in, h, w, c_out, k, stride, pad, oh, ow;
} pt_conv2d_dims_t;

/* Fill *d; returns 0, or -1 when the geometry is invalid (a size < 0, k < 1,
 * stride < 1, pad < 0, or the kernel does not fit: h + 2 pad < k or
 * w + 2 pad < k). Sizes must be small enough that the products below fit in
 * int32 (the binding checks). */
int pt_conv2d_dims(pt_conv2d_dims_t *d, int32_t c_in, int32_t h, int32_t w, int32_t c_out,
                   int32_t k, int32_t stride, int32_t pad);

/* out (c_out, oh, ow) = conv(x (c_in, h, w), w); zero padding; output channels [c0, c1). */
void pt_conv2d_s8_s32_chw(const int8_t *x, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d,
                          int32_t c0, int32_t c1);

/* out (c_in, h, w) = error to the input of the convolution, from e (c_out, oh, ow);
 * input channels [c0, c1) of out. */
void pt_conv2d_t_s8_s32_chw(const int8_t *e, const int8_t *w, int32_t *out, const pt_conv2d_dims_t *d,
                            int32_t c0, int32_t c1);

/* out (c_out, c_in, k, k) = weight gradient: sum over output positions of e * x;
 * the rows of output channels [c0, c1). */
void pt_conv2d_grad_s8_s32_chw(const int8_t *e, const int8_t *x, int32_t *out, const pt_conv2d_dims_t *d,
                               int32_t c0, int32_t c1);

/* *v = *d restricted to c_out output channels (a channel range's view). */
void pt_conv2d_dims_channels(pt_conv2d_dims_t *v, const pt_conv2d_dims_t *d, int32_t c_out);

/* The gradient of the one weight (co, ci, kh, kw): one item of the above. */
int32_t pt_conv2d_tap_s8_s32_chw(const int8_t *e, const int8_t *x, const pt_conv2d_dims_t *d,
                                 int32_t co, int32_t ci, int32_t kh, int32_t kw);

/* ------------------------------------------------ activation and pooling -- */

/* In place: x[j] = max(x[j], 0), j < n. */
void pt_relu_s8(int8_t *x, int32_t n);

/* In place: e[j] = 0 where y[j] <= 0, j < n. */
void pt_relu_bwd_s8(const int8_t *y, int8_t *e, int32_t n);

/* k x k max pooling, stride k, floor: out (c, h/k, w/k); idx (NULL allowed)
 * gets the window offset dy*k + dx of the first maximum (needs k <= 16).
 * relu != 0: out = max(window maximum, 0), a ReLU before the pool applied
 * after it (the two commute; idx is the same). */
void pt_maxpool2d_s8_chw(const int8_t *x, int8_t *out, uint8_t *idx, int32_t c, int32_t h,
                         int32_t w, int32_t k, int32_t relu);

/* out (c, h, w) = 0, then each e[o] goes to its window's maximum idx[o];
 * with y (the rectified pool's output, NULL allowed) only where y[o] > 0.
 * Needs idx[o] < k*k for every o < c*(h/k)*(w/k) (the binding checks). */
void pt_maxpool2d_bwd_s8_chw(const int8_t *e, const uint8_t *idx, int8_t *out, int32_t c,
                             int32_t h, int32_t w, int32_t k, const int8_t *y);

/* -------------------------------------------------------------------- loss -- */

/* Index of the first maximum of x[0:n], n >= 1. */
int32_t pt_argmax_s8(const int8_t *x, int32_t n);

/* NITI's integer softmax cross-entropy error (kernels_py.softmax_xent_s8):
 * err[0:n] = round((softmax(z * 2^exp) - onehot(label)) * 2^7), p[0:n] int32
 * scratch; returns err[label]. Needs 1 <= n <= PT_SOFTMAX_MAX_N, 0 <= label < n. */
#define PT_SOFTMAX_MAX_N 65535
int32_t pt_softmax_xent_s8(const int8_t *z, int32_t n, int32_t exp, int32_t label, int8_t *err, int32_t *p);

/* ------------------------------------------------------------------ update -- */

/* NITI update: w[j] = sat8(w[j] - pseudo(g[j], shift)), c0 <= j < c1 <= n
 * (a range of items); returns how many weights saturated. */
int32_t pt_update_s8(int8_t *w, const int32_t *g, int32_t n, int32_t shift, int32_t c0, int32_t c1);

/* NITI's update of a linear layer from one sample's gradient, the outer
 * product g[o*n_in + i] = e[o] * x[i], without the gradient: as pt_update_s8
 * with shift = bitlen(max|e[0:n_out]| * max|x[0:n_in]|) - mu (what
 * pt_bitlen_s32 gives for g), rows c0 <= o < c1; 0 <= mu <= 7, n_in <=
 * PT_MAX_FANIN. Returns how many weights saturated. */
int32_t pt_update_outer_s8(const int8_t *e, const int8_t *x, int8_t *w, int32_t n_out, int32_t n_in,
                           int32_t mu, int32_t c0, int32_t c1);

/* ---------------------------------------------------- edge-popup (PRIOT) -- */
/*
 * An edge is one weight, numbered j in the weight buffer's order. Edge j is
 * kept when it has no score, or when its score is >= thr. With subset NULL
 * every edge has a score and scores are dense (scores[j]); otherwise the bit
 * j of the bitmap subset (byte j >> 3, bit j & 7) says whether edge j has a
 * score, and scores are compact: one per set bit, in edge order. Scores are
 * int8 or int16 (s16 != 0). The kernels visit weights in edge order, so a
 * mask costs one test per weight and no mask buffer exists.
 */
typedef struct {
    void *data;             /* int8_t[] or int16_t[]; NULL: no scores (nothing masked) */
    const uint8_t *subset;  /* NULL: dense scores; else the bitmap of scored edges */
    int32_t s16;            /* nonzero: data is int16_t[] */
    uint32_t edge0;         /* the subset bit of edge 0: a channel range's view of a layer
                               starts mid-bitmap (0 for a whole layer) */
} pt_scores_t;

PT_INLINE int32_t pt_score_get(const pt_scores_t *sc, uint32_t si) {
    return sc->s16 ? (int32_t)((const int16_t *)sc->data)[si] : (int32_t)((const int8_t *)sc->data)[si];
}

/* Bit b of a bitmap; every bit of a NULL bitmap is set. */
PT_INLINE int pt_bit(const uint8_t *bits, uint32_t b) {
    return bits == NULL || ((bits[b >> 3] >> (b & 7u)) & 1u);
}

/* Whether edge j of *sc has a score: bit edge0 + j of the subset. */
PT_INLINE int pt_edge_scored(const pt_scores_t *sc, uint32_t j) {
    return pt_bit(sc->subset, sc->edge0 + j);
}

/* *v = the scores of the edges from j0 on of *sc, numbered from 0; returns v. */
pt_scores_t *pt_scores_view(pt_scores_t *v, const pt_scores_t *sc, uint32_t j0);

/* The same for a mask: NULL when nothing is masked (sc NULL or without data). */
PT_INLINE const pt_scores_t *pt_mask_view(pt_scores_t *v, const pt_scores_t *sc, uint32_t j0) {
    return (sc != NULL && sc->data != NULL) ? pt_scores_view(v, sc, j0) : NULL;
}

/* Set bits of a 32-bit word (SWAR; the last step a multiply: single-cycle on the M0+). */
PT_INLINE uint32_t pt_popcount32(uint32_t b) {
    b = b - ((b >> 1) & 0x55555555u);
    b = (b & 0x33333333u) + ((b >> 2) & 0x33333333u);
    b = (b + (b >> 4)) & 0x0F0F0F0Fu;
    return (b * 0x01010101u) >> 24;
}

/* Index of the lowest set bit of v != 0 (de Bruijn: the M0+ has no count-zeros). */
PT_INLINE uint32_t pt_lowest_bit(uint32_t v) {
    static const uint8_t pos[32] = {0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8,
                                    31, 27, 13, 23, 21, 19, 16, 7, 26, 12, 18, 6, 11, 5, 10, 9};
    return pos[((v & (0u - v)) * 0x077CB531u) >> 27];
}

/* The first 8-byte group of p[0 : end - p] (p 4-aligned, end - p a multiple
 * of 8) holding an int8 below thr, with below = (thr + 128) * 0x01010101 and
 * -127 <= thr <= 0 (biased by 128, "a byte < thr + 128 <= 128" is exact);
 * end when there is none (score.c; eight bytes in 15 cycles on the M0+). */
const int8_t *pt_find_below_s8(const int8_t *p, const int8_t *end, uint32_t below);

/* The first byte of p[0 : end - p) below lim (-127 <= lim <= 0), or end, at
 * any alignment: bytes up to a word boundary, pt_find_below_s8's blocks of
 * eight, then the bytes of the block it found or of the tail. */
const int8_t *pt_first_below_s8(const int8_t *p, const int8_t *end, int32_t lim);

/* Bits j .. j + nb of a bitmap as a word, bit j lowest (1 <= nb <= 32), any
 * alignment: reads only the bytes holding them (five when j is not a
 * multiple of 8 and nb > 24: a channel range's view starts mid-byte). */
PT_INLINE uint32_t pt_bits_at(const uint8_t *bits, uint32_t j, uint32_t nb) {
    const uint8_t *b = bits + (j >> 3);
    const uint32_t sh = j & 7u, want = sh + nb;   /* bits of b that matter */
    uint32_t v = b[0];
    if (want > 8u) {
        v |= (uint32_t)b[1] << 8;
    }
    if (want > 16u) {
        v |= (uint32_t)b[2] << 16;
    }
    if (want > 24u) {
        v |= (uint32_t)b[3] << 24;
    }
    if (sh) {
        v >>= sh;
        if (want > 32u) {
            v |= (uint32_t)b[4] << (32u - sh);
        }
    }
    return nb < 32u ? v & ((1u << nb) - 1u) : v;
}

/* Number of set bits of bits[j0 .. j0 + n) (compact scores; mask.c). */
uint32_t pt_popcount_range(const uint8_t *bits, uint32_t j0, uint32_t n);

/* Number of scored edges among the edges [j, j + n) of *sc. */
PT_INLINE uint32_t pt_scores_in(const pt_scores_t *sc, uint32_t j, uint32_t n) {
    return sc->subset == NULL ? n : pt_popcount_range(sc->subset, sc->edge0 + j, n);
}

/* The score step with g = 0 on scores[si .. si + n): clamps the scores
 * outside [-smax, smax]; returns how many (score.c). */
int32_t pt_scores_clamp(const pt_scores_t *sc, uint32_t si, uint32_t n, int32_t smax);

/* The pruned edges among the edges j .. j + nb of compact scores (sc->subset
 * set, 1 <= nb <= 32) as bits, edge j lowest; *si, the score index of the
 * first scored edge from j on, moves past the range. Only scored edges are
 * visited (PRIOT-S: one in ten or two). Inline: fc.c's walk over a layer
 * calls it for every 32 edges (a call cost ~20 instructions more each). */
PT_INLINE uint32_t pt_pruned_bits(const pt_scores_t *sc, uint32_t j, uint32_t nb, int32_t thr, uint32_t *si) {
    const uint32_t at = sc->edge0 + j;   /* a channel range's view starts mid-bitmap */
    const uint8_t *p = sc->subset + (at >> 3);
    uint32_t v, pruned = 0, i = *si;
    if (nb == 32u && (at & 7u) == 0 && PT_ALIGNED4(p)) {
        v = *(const pt_u32a *)p;
    } else {
        v = pt_bits_at(sc->subset, at, nb);
    }
#if PT_ASM_M0
    if (!sc->s16 && v) {
        /* int8 scores: 9 cycles a scored edge (gcc's loop: about 15, thr on the stack) */
        const int8_t *s = (const int8_t *)sc->data;
        uint32_t t;
        __asm__ volatile(
            ".syntax unified\n"
            "1:\n\t"
            "ldrsb %[t], [%[s], %[i]]\n\t"
            "cmp %[t], %[thr]\n\t"
            "blt 3f\n"
            "2:\n\t"
            "adds %[i], #1\n\t"
            "subs %[t], %[v], #1\n\t"
            "ands %[v], %[t]\n\t"
            "bne 1b\n\t"
            "b 4f\n"
            "3:\n\t"                       /* pruned: its bit, the lowest of v */
            "negs %[t], %[v]\n\t"
            "ands %[t], %[v]\n\t"
            "orrs %[pr], %[t]\n\t"
            "b 2b\n"
            "4:\n"
            : [i] "+l"(i), [v] "+l"(v), [pr] "+l"(pruned), [t] "=&l"(t)
            : [s] "l"(s), [thr] "l"(thr)
            : "cc", "memory");   /* it reads s[] */
        *si = i;
        return pruned;
    }
#endif
    for (; v; v &= v - 1u, i++) {
        if (pt_score_get(sc, i) < thr) {
            pruned |= v & (0u - v);
        }
    }
    *si = i;
    return pruned;
}

/* out[j] = w[j] if edge j is kept else 0, j < n (sc NULL / sc->data NULL: copy). */
void pt_mask_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, int8_t *out, int32_t n);

/* The same for the edges j0 .. j0 + n of a layer: w and out point at edge j0's
 * weight and its masked copy, si is the index of edge j0's score (or of the
 * next scored edge); returns the score index after the range. out may be w. */
uint32_t pt_mask_range_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, uint32_t j0, uint32_t si,
                          int8_t *out, int32_t n);

/* pt_fc_s8_s32 / pt_fc_t_s8_s32 / pt_conv2d_s8_s32_chw / pt_conv2d_t_s8_s32_chw
 * with the pruned edges' weights taken as 0 (the same channel ranges). */
void pt_fc_mask_s8_s32(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                       int32_t *out, int32_t n_in, int32_t n_out, int32_t c0, int32_t c1);
void pt_fc_t_mask_s8_s32(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                         int32_t *out, int32_t n_in, int32_t n_out);
void pt_conv2d_mask_s8_s32_chw(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                               int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1);
void pt_conv2d_t_mask_s8_s32_chw(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                 int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1);

/* The forward pass of the output channels [c0, c1) only, masked when sc is
 * not NULL (sc->data non-NULL), into out[0 : (c1 - c0) * oh * ow]: channel
 * c0 first. 0 <= c0 <= c1 <= c_out. sparse: pt_conv2d_fwd_sparse(x, d), the
 * path's choice (made once per input by a caller that computes several
 * ranges). kc: NULL, or where the sparse path keeps the lists of nonzero
 * inputs that one range made, for the next ranges of the same x and w to
 * replay instead of listing the inputs again (pt_nz_cache_t). */
typedef struct {
    int32_t *buf;    /* cap words, 4-aligned */
    int32_t cap;
    int32_t pos;     /* words used (recording) or read (replaying) */
    int32_t state;   /* PT_NZ_RECORD, PT_NZ_REPLAY, or PT_NZ_OFF (buf was too small) */
} pt_nz_cache_t;
#define PT_NZ_RECORD 0
#define PT_NZ_REPLAY 1
#define PT_NZ_OFF 2
int pt_conv2d_fwd_sparse(const int8_t *x, const pt_conv2d_dims_t *d);
void pt_conv2d_range_s32(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                         int32_t *out, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1, int sparse,
                         pt_nz_cache_t *kc);

/* Convolution fused with the static requantization (conv2d_q.c; PT_CONV_Q
 * says it exists, for code built against older versions of this header): for the
 * output channels [c0, c1), out (c_out, oh, ow) int8 = requant(conv(x, w * M)
 * + bias * 2^bd, shift), bit for bit pt_conv2d_mask_s8_s32_chw, then
 * pt_bias_add_s32 (bias NULL: none), then pt_requant_s32_s8; returns how
 * many outputs saturated. acc[0:n_acc] is int32 scratch, n_acc >= oh * ow:
 * as many channels as it holds are computed per pass, so no int32 feature
 * map exists. sc NULL (or sc->data NULL): no mask. */
#define PT_CONV_Q 1
int32_t pt_conv2d_mask_s8_s8_chw(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                 int8_t *out, int32_t *acc, int32_t n_acc, const pt_conv2d_dims_t *d,
                                 int32_t shift, const int32_t *bias, int32_t bd, int32_t c0, int32_t c1);

/* The PRIOT score step of one scored edge, given its weight gradient g and
 * weight w: s = sat(s - round(g * w / 2^shift)) to [-smax, smax] (exact for
 * every int32 g). Returns 1 when it saturated. sc->data must be non-NULL. */
int32_t pt_score_step(const pt_scores_t *sc, uint32_t si, int32_t g, int32_t w, int32_t shift, int32_t smax);

#define PT_SCORE_FAST_G (1 << 24)   /* |g| < 2^24 and |w| <= 128: g * w fits int32 */

/* round(g * w / 2^shift) clamped to +-PT_SCORE_CLAMP, exact for every int32 g
 * (score.c; the slow path of pt_score_apply). */
int32_t pt_round_gw_exact(int32_t g, int32_t w, int32_t shift);

/* *v clamped to [-lim, lim]; returns 1 when it was outside (a saturation). */
PT_INLINE int32_t pt_clamp_sym(int32_t *v, int32_t lim) {
    if (*v > lim) {
        *v = lim;
        return 1;
    }
    if (*v < -lim) {
        *v = -lim;
        return 1;
    }
    return 0;
}

/* *s = sat(*s - round(p / 2^shift)) to [-smax, smax] for an int8 score, with
 * 1 <= shift <= 31, half = 2^(shift - 1) and |p| < 2^31 (a rounded step of
 * at most 2^30: no overflow); returns 1 when it saturated. */
PT_INLINE int32_t pt_step_s8(int8_t *s, int32_t p, uint32_t half, int32_t shift, int32_t smax) {
    const uint32_t sg = (uint32_t)(p >> 31);
    const uint32_t q = ((((uint32_t)p ^ sg) - sg) + half) >> shift;
    int32_t v = *s - (int32_t)((q ^ sg) - sg);
    const int32_t sat = pt_clamp_sym(&v, smax);
    *s = (int8_t)v;
    return sat;
}

/* Thumb-1 text of the PRIOT-S score-step loops that walk a word of subset
 * bits (conv2d.c: score_bits_s8, a conv layer's gathered taps; score.c:
 * score_bits_x_s8, a Linear row): pt_step_s8 on every set bit of [v] (v != 0,
 * bit i: edge i), each bit shifted out into the carry, so the walk needs no
 * count of trailing zeros (the M0+ has none): 4 cycles an unscored edge, 6
 * eight unscored ones in a row. PRODUCT leaves g * w in [p] for edge [i]
 * (it may branch to 9f: no step, the score is only passed). The rounding adds
 * half as ((|p| >> (shift - 1)) + 1) >> 1, the same bits, so that no register
 * holds half. Operands: [s] the score pointer, moved past the scored edges;
 * [i] = -1 on entry; [p] [t] [q] temporaries; [hi] [lo] smax and -smax, [sh1]
 * shift - 1 and [sat] the count (high registers). */
#define PT_SCORE_BITS_ASM(PRODUCT)                                             \
    ".syntax unified\n\t"                                                      \
    "b 8f\n"                                                                   \
    "1:\n\t"                            /* v != 0: a clear bit is never the last */ \
    "adds %[i], #1\n\t"                                                        \
    "lsrs %[v], %[v], #1\n\t"           /* C: edge i is scored */              \
    "bcc 1b\n\t"                                                               \
    PRODUCT                                                                    \
    "asrs %[t], %[p], #31\n\t"          /* the sign of g * w */                \
    "eors %[p], %[t]\n\t"                                                      \
    "subs %[p], %[p], %[t]\n\t"         /* |g * w| */                          \
    "mov %[q], %[sh1]\n\t"                                                     \
    "lsrs %[p], %[q]\n\t"                                                      \
    "adds %[p], #1\n\t"                                                        \
    "lsrs %[p], %[p], #1\n\t"                                                  \
    "eors %[p], %[t]\n\t"                                                      \
    "subs %[p], %[p], %[t]\n\t"         /* the step, halves away from 0 */     \
    "ldrb %[q], [%[s]]\n\t"                                                    \
    "sxtb %[q], %[q]\n\t"                                                      \
    "subs %[q], %[q], %[p]\n\t"                                                \
    "cmp %[q], %[hi]\n\t"                                                      \
    "bgt 3f\n\t"                                                               \
    "cmp %[q], %[lo]\n\t"                                                      \
    "blt 4f\n"                                                                 \
    "6:\n\t"                                                                   \
    "strb %[q], [%[s]]\n"                                                      \
    "9:\n\t"                                                                   \
    "adds %[s], #1\n"                                                          \
    "8:\n\t"                                                                   \
    "lsls %[t], %[v], #24\n\t"          /* a scored edge among the next eight? */ \
    "bne 1b\n\t"                                                               \
    "cmp %[v], #0\n\t"                                                         \
    "beq 5f\n\t"                                                               \
    "lsrs %[v], %[v], #8\n\t"           /* no: skip them */                    \
    "adds %[i], #8\n\t"                                                        \
    "b 8b\n"                                                                   \
    "3:\n\t"                            /* saturated: rare, out of the loop */ \
    "mov %[q], %[hi]\n\t"                                                      \
    "b 7f\n"                                                                   \
    "4:\n\t"                                                                   \
    "mov %[q], %[lo]\n"                                                        \
    "7:\n\t"                                                                   \
    "mov %[t], %[sat]\n\t"                                                     \
    "adds %[t], #1\n\t"                                                        \
    "mov %[sat], %[t]\n\t"                                                     \
    "b 6b\n"                                                                   \
    "5:\n"

/* pt_score_step inline, for the kernels' loops. g == 0 (the common case: most
 * errors and activations are 0) only clamps a score that is out of range. */
PT_INLINE int32_t pt_score_apply(const pt_scores_t *sc, uint32_t si, int32_t g, int32_t w,
                                     int32_t shift, int32_t smax) {
    int32_t r, v, s, sat;
    s = pt_score_get(sc, si);
    if (g == 0 || w == 0) {
        if (s >= -smax && s <= smax) {
            return 0;
        }
        r = 0;
    } else if (g > -PT_SCORE_FAST_G && g < PT_SCORE_FAST_G) {
        r = pt_rshift_round_s32(g * w, shift);
        if (r > PT_SCORE_CLAMP) {
            r = PT_SCORE_CLAMP;
        } else if (r < -PT_SCORE_CLAMP) {
            r = -PT_SCORE_CLAMP;
        }
    } else {
        r = pt_round_gw_exact(g, w, shift);
    }
    v = s - r;
    sat = pt_clamp_sym(&v, smax);
    if (sc->s16) {
        ((int16_t *)sc->data)[si] = (int16_t)v;
    } else {
        ((int8_t *)sc->data)[si] = (int8_t)v;
    }
    return sat;
}

/* Fused PRIOT score steps (no gradient buffer), on the weight rows of output
 * channels [c0, c1). Each returns the saturation count. smax must fit the
 * score type (<= 127 for int8, <= 32767 for int16). */
int32_t pt_fc_score_s8(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                       int32_t shift, int32_t smax, int32_t n_in, int32_t n_out, int32_t c0, int32_t c1);
int32_t pt_conv2d_score_s8_chw(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                               int32_t shift, int32_t smax, const pt_conv2d_dims_t *d, int32_t c0, int32_t c1);
/* Score step from an int32 weight gradient buffer g[0:n] (mini-batch path). */
int32_t pt_score_update_s8(const pt_scores_t *sc, const int32_t *g, const int8_t *w, int32_t shift,
                           int32_t smax, int32_t n);

#endif /* PICOTRAIN_KERNELS_H */
