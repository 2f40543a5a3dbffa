/* score.c - PRIOT score steps: s = sat(s - round(g * w / 2^shift)) for every
 * scored edge, from a gradient buffer or fused with the gradient's computation. */
#include "picotrain_kernels.h"

#define FAST_G (1 << 24)   /* |g| < 2^24 and |w| <= 128: g * w fits int32 */

/* round(g * w / 2^shift) for |g| >= 2^24, exactly, clamped to +-PT_SCORE_CLAMP
 * (any larger step saturates the score anyway), in 32-bit arithmetic only:
 * |g| * |w| < 2^39 is held as A * 2^16 + B with B < 2^16. */
static int32_t round_gw_exact(int32_t g, int32_t w, int32_t shift) {
    uint32_t m = pt_abs_u32(g), a = pt_abs_u32(w), A, B, r;
    if (a == 0) {
        return 0;
    }
    A = (m >> 16) * a;              /* < 2^23 */
    B = (m & 0xFFFFu) * a;          /* < 2^23 */
    A += B >> 16;
    B &= 0xFFFFu;
    if (shift <= 0) {
        r = A ? PT_SCORE_CLAMP : B;
    } else if (shift <= 16) {
        /* (A 2^16 + B + 2^(s-1)) >> s = A 2^(16-s) + ((B + 2^(s-1)) >> s) */
        r = A >= 65536u ? PT_SCORE_CLAMP
                        : (A << (16 - shift)) + ((B + (1u << (shift - 1))) >> shift);
    } else if (shift < 48) {
        /* B < 2^16 cannot carry into the kept bits: (A + 2^(t-1)) >> t, t = s - 16 */
        uint32_t t = (uint32_t)shift - 16u;
        r = t < 32u ? (A + (1u << (t - 1u))) >> t : 0u;
    } else {
        r = 0;
    }
    if (r > PT_SCORE_CLAMP) {
        r = PT_SCORE_CLAMP;
    }
    return ((g < 0) != (w < 0)) ? -(int32_t)r : (int32_t)r;
}

static inline int32_t score_step(const pt_scores_t *sc, uint32_t si, int32_t g, int32_t w,
                                 int32_t shift, int32_t smax) {
    int32_t r, v, sat = 0;
    if (g > -FAST_G && g < FAST_G) {
        r = pt_rshift_round_s32(g * w, shift);
        if (r > PT_SCORE_CLAMP) {
            r = PT_SCORE_CLAMP;
        } else if (r < -PT_SCORE_CLAMP) {
            r = -PT_SCORE_CLAMP;
        }
    } else {
        r = round_gw_exact(g, w, shift);
    }
    v = pt_score_get(sc, si) - r;
    if (v > smax) {
        v = smax;
        sat = 1;
    } else if (v < -smax) {
        v = -smax;
        sat = 1;
    }
    if (sc->s16) {
        ((int16_t *)sc->data)[si] = (int16_t)v;
    } else {
        ((int8_t *)sc->data)[si] = (int8_t)v;
    }
    return sat;
}

int32_t pt_score_step(const pt_scores_t *sc, uint32_t si, int32_t g, int32_t w, int32_t shift, int32_t smax) {
    return score_step(sc, si, g, w, shift, smax);
}

int32_t pt_fc_score_s8(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                       int32_t shift, int32_t smax, int32_t n_in, int32_t n_out) {
    uint32_t j = 0, si = 0;
    int32_t sat = 0;
    for (; n_out > 0; n_out--) {
        int32_t eo = *e++, i;
        for (i = 0; i < n_in; i++, j++) {
            if (pt_edge_scored(sc->subset, j)) {
                sat += score_step(sc, si++, eo * x[i], w[j], shift, smax);
            }
        }
    }
    return sat;
}

int32_t pt_conv2d_score_s8_chw(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                               int32_t shift, int32_t smax, const pt_conv2d_dims_t *d) {
    uint32_t j = 0, si = 0;
    int32_t sat = 0, co, ci, kh, kw;
    for (co = 0; co < d->c_out; co++) {
        for (ci = 0; ci < d->c_in; ci++) {
            for (kh = 0; kh < d->k; kh++) {
                for (kw = 0; kw < d->k; kw++, j++) {
                    if (pt_edge_scored(sc->subset, j)) {
                        int32_t g = pt_conv2d_tap_s8_s32_chw(e, x, d, co, ci, kh, kw);
                        sat += score_step(sc, si++, g, w[j], shift, smax);
                    }
                }
            }
        }
    }
    return sat;
}

int32_t pt_score_update_s8(const pt_scores_t *sc, const int32_t *g, const int8_t *w, int32_t shift,
                           int32_t smax, int32_t n) {
    uint32_t j, si = 0;
    int32_t sat = 0;
    for (j = 0; j < (uint32_t)n; j++) {
        if (pt_edge_scored(sc->subset, j)) {
            sat += score_step(sc, si++, g[j], w[j], shift, smax);
        }
    }
    return sat;
}
