/* update.c - NITI's weight update: pseudo-stochastic rounding, subtract, saturate.
 *
 * A weight gradient is mostly 0 (the outer product of sparse errors and
 * activations), and a zero gradient leaves the weight as it is unless it is
 * -128 (clipped to -127 and counted): four gradients are tested at a time,
 * and the rounding's masks are computed once per call. */
#include "picotrain_kernels.h"

/* |d| beyond this saturates whatever the int8 weight is: clamping keeps the
 * subtraction in int32 and the result exact. */
#define DELTA_CLAMP 1024

/* w = sat8(w - d); returns 1 when it saturated. */
PT_INLINE int32_t apply_delta(int8_t *w, int32_t d) {
    int32_t v;
    if (d > DELTA_CLAMP) {
        d = DELTA_CLAMP;
    } else if (d < -DELTA_CLAMP) {
        d = -DELTA_CLAMP;
    }
    v = *w - d;
    if (v > PT_Q_MAX) {
        *w = PT_Q_MAX;
        return 1;
    }
    if (v < -PT_Q_MAX) {
        *w = -PT_Q_MAX;
        return 1;
    }
    *w = (int8_t)v;
    return 0;
}

/* Four gradients that are all 0: only a -128 weight changes. */
PT_INLINE int32_t clip_m128(int8_t *w) {
    int32_t sat = 0, t;
    if (PT_ALIGNED4(w)) {
        uint32_t v = *(const pt_u32a *)w ^ 0x80808080u;
        if (!((v - 0x01010101u) & ~v & 0x80808080u)) {
            return 0;   /* no byte is 0x80 */
        }
    }
    for (t = 0; t < 4; t++) {
        if (w[t] == -128) {
            w[t] = -PT_Q_MAX;
            sat++;
        }
    }
    return sat;
}

/* Four weights with their nonzero-somewhere gradients, 1 <= shift <= 31: the
 * rounding of kernels_py.rshift_pseudo with its masks precomputed. q = |g| >> s,
 * plus 1 when the upper s - s/2 discarded bits (the probability) exceed the
 * lower s/2 (the random number, doubled when s is odd). */
static PT_NOINLINE int32_t update4(int8_t *w, const int32_t *g, uint32_t s, uint32_t mask, uint32_t half,
                                   uint32_t hmask, uint32_t odd) {
    int32_t sat = 0, t;
    for (t = 0; t < 4; t++) {
        const int32_t gt = g[t];
        uint32_t m, rem, q;
        int32_t d, v;
        if (gt == 0) {
            if (w[t] == -128) {
                w[t] = -PT_Q_MAX;
                sat++;
            }
            continue;
        }
        m = pt_abs_u32(gt);
        rem = m & mask;
        q = (m >> s) + ((rem >> half) > ((rem & hmask) << odd));
        d = q > DELTA_CLAMP ? DELTA_CLAMP : (int32_t)q;
        v = gt < 0 ? w[t] + d : w[t] - d;
        if (v > PT_Q_MAX) {
            v = PT_Q_MAX;
            sat++;
        } else if (v < -PT_Q_MAX) {
            v = -PT_Q_MAX;
            sat++;
        }
        w[t] = (int8_t)v;
    }
    return sat;
}

static PT_NOINLINE int32_t update_fast(int8_t *w, const int32_t *g, int32_t n, int32_t shift) {
    const uint32_t s = (uint32_t)shift, mask = (1u << shift) - 1u, half = s >> 1;
    const uint32_t hmask = (1u << half) - 1u, odd = s & 1u;
    int32_t sat = 0;
    for (; n >= 4; n -= 4, w += 4, g += 4) {
        if ((g[0] | g[1] | g[2] | g[3]) == 0) {
            sat += clip_m128(w);
            continue;
        }
        sat += update4(w, g, s, mask, half, hmask, odd);
    }
    for (; n > 0; n--, w++, g++) {
        int32_t d = 0;
        if (*g) {
            const uint32_t m = pt_abs_u32(*g), rem = m & mask;
            const uint32_t q = (m >> s) + ((rem >> half) > ((rem & hmask) << odd));
            d = q > DELTA_CLAMP ? DELTA_CLAMP : (int32_t)q;
            d = *g < 0 ? -d : d;
        }
        sat += apply_delta(w, d);
    }
    return sat;
}

int32_t pt_update_s8(int8_t *w, const int32_t *g, int32_t n, int32_t shift, int32_t c0, int32_t c1) {
    int32_t sat = 0;
    (void)n;
    w += c0;   /* items [c0, c1): the same step on each */
    g += c0;
    n = c1 - c0;
    if (shift >= 1 && shift <= 31) {
        return update_fast(w, g, n, shift);
    }
    for (; n > 0; n--) {
        sat += apply_delta(w++, pt_rshift_pseudo_s32(*g++, shift));
    }
    return sat;
}
