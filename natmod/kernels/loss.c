/* loss.c - argmax and NITI's integer softmax cross-entropy error. */
#include "picotrain_kernels.h"

/* round(2^(k/16) * 2^15), k = 0..15: the fractional part of 2^t in Q15. */
static const uint16_t exp2_q15[16] = {
    32768, 34219, 35734, 37316, 38968, 40693, 42495, 44376,
    46341, 48393, 50535, 52773, 55109, 57549, 60097, 62757,
};
#define LOG2E_Q15 47274   /* round(log2(e) * 2^15), NITI's constant */
#define SPAN_Q4 160       /* keep 10 octaves below the largest logit */

int32_t pt_argmax_s8(const int8_t *x, int32_t n) {
    int32_t best = x[0], bi = 0, j;
    for (j = 1; j < n; j++) {
        if (x[j] > best) {
            best = x[j];
            bi = j;
        }
    }
    return bi;
}

int32_t pt_softmax_xent_s8(const int8_t *z, int32_t n, int32_t exp, int32_t label, int8_t *err, int32_t *p) {
    int32_t sh, tmax = -PT_S32_MAX, j;
    uint32_t total = 0, s = 0;
    /* t = z * 2^exp * log2(e) in Q4 (1/16 octave), floor; shift clamped to [0, 31] */
    if (exp > 11) {
        sh = 0;
    } else if (exp < -20) {
        sh = 31;
    } else {
        sh = 11 - exp;
    }
    for (j = 0; j < n; j++) {
        int32_t t = ((int32_t)z[j] * LOG2E_Q15) >> sh;   /* arithmetic: floor */
        p[j] = t;
        if (t > tmax) {
            tmax = t;
        }
    }
    for (j = 0; j < n; j++) {
        int32_t t = p[j] - tmax + SPAN_Q4;   /* <= 160 */
        uint32_t v;
        if (t < 0) {
            t = 0;
        }
        v = (((uint32_t)exp2_q15[t & 15] << (t >> 4)) >> 15) - 1u;   /* 2^(t/16) - 1 in [0, 1023] */
        p[j] = (int32_t)v;
        total += v;   /* >= 1023: the largest logit gives t = 160 */
    }
    for (j = 0; j < n; j++) {
        uint32_t v = pt_udiv_u32((uint32_t)p[j] << 11, total);
        p[j] = (int32_t)v;
        s += v;
    }
    p[label] -= (int32_t)s;
    for (j = 0; j < n; j++) {
        err[j] = pt_sat_s8(pt_rshift_round_s32(p[j], 4));
    }
    return err[label];
}
