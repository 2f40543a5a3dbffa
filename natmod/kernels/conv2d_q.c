/* conv2d_q.c - convolution fused with the static requantization (issue 8).
 *
 * With a static shift nothing needs a layer's whole int32 output: each pass
 * computes the int32 sums of as many output channels as the caller's
 * scratch holds, adds the bias and requantizes them to int8, so the shared
 * int32 scratch shrinks from the largest feature map to what the backward
 * pass needs. Same arithmetic, in the same order, as the three unfused
 * kernels. */
#include "picotrain_kernels.h"

int32_t pt_conv2d_mask_s8_s8_chw(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                 int8_t *out, int32_t *acc, int32_t n_acc, const pt_conv2d_dims_t *d,
                                 int32_t shift, const int32_t *bias, int32_t bd, int32_t c0, int32_t c1) {
    const int32_t plane = d->oh * d->ow;
    int32_t per, co, sat = 0;
    int sparse;
    pt_nz_cache_t kc, *kcp = NULL;
    if (plane == 0 || c0 >= c1) {
        return 0;
    }
    sparse = pt_conv2d_fwd_sparse(x, d);
    per = (int32_t)pt_udiv_u32((uint32_t)n_acc, (uint32_t)plane);   /* >= 1 */
    sc = (sc != NULL && sc->data != NULL) ? sc : NULL;
    if (sparse && c1 - c0 > per) {
        /* Several passes: the first lists the nonzero inputs into the bytes
         * of out that the last pass writes (its requantization comes after
         * its last read of the lists), the others replay them (the first
         * layer: 4 passes; listing again cost 6 % of the call). */
        const int32_t last = c0 + per * (int32_t)pt_udiv_u32((uint32_t)(c1 - c0 - 1), (uint32_t)per);
        const uintptr_t lo = ((uintptr_t)(out + last * plane) + 3u) & ~(uintptr_t)3u;
        const uintptr_t hi = (uintptr_t)(out + c1 * plane);
        kc.buf = (int32_t *)lo;
        kc.cap = hi > lo ? (int32_t)((hi - lo) >> 2) : 0;
        kc.pos = 0;
        kc.state = PT_NZ_RECORD;
        kcp = &kc;
    }
    for (co = c0; co < c1; co += per) {
        const int32_t nch = c1 - co < per ? c1 - co : per;
        pt_conv2d_range_s32(x, w, sc, thr, acc, d, co, co + nch, sparse, kcp);
        if (bias != NULL) {
            pt_bias_add_s32(acc, bias + co, nch, plane, bd);
        }
        sat += pt_requant_s32_s8(acc, out + co * plane, nch * plane, shift);
    }
    return sat;
}
