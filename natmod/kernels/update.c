/* update.c - NITI's weight update: pseudo-stochastic rounding, subtract, saturate. */
#include "picotrain_kernels.h"

/* |d| beyond this saturates whatever the int8 weight is: clamping keeps the
 * subtraction in int32 and the result exact. */
#define DELTA_CLAMP 1024

int32_t pt_update_s8(int8_t *w, const int32_t *g, int32_t n, int32_t shift) {
    int32_t sat = 0;
    for (; n > 0; n--, w++) {
        int32_t d = pt_rshift_pseudo_s32(*g++, shift), v;
        if (d > DELTA_CLAMP) {
            d = DELTA_CLAMP;
        } else if (d < -DELTA_CLAMP) {
            d = -DELTA_CLAMP;
        }
        v = *w - d;
        if (v > PT_Q_MAX) {
            v = PT_Q_MAX;
            sat++;
        } else if (v < -PT_Q_MAX) {
            v = -PT_Q_MAX;
            sat++;
        }
        *w = (int8_t)v;
    }
    return sat;
}
