/* shims.c - flat-argument entry points for the cycle harness (benchmarks/kbench/emu.py).
 *
 * The harness passes ints and buffer addresses only; the edge-popup kernels take a
 * pt_scores_t holding pointers, which these wrappers build on the stack (as binding.c does)
 * before calling the kernel. Each adds a handful of cycles to a call of 10^4..10^6 cycles.
 * Conv kernels are called directly: their pt_conv2d_dims_t is a plain Buf of 9 int32.
 */
#include "picotrain_kernels.h"

/* The kernels since two cores take a channel range and have views of compact scores; the
 * baseline kernels (benchmarks/kernels.py --baseline) take neither, and ignore c0, c1. */
#ifdef PT_CHANNEL_RANGES
#define RANGE , c0, c1
#define EDGE0(sc) sc.edge0 = 0
#else
#define RANGE
#define EDGE0(sc) (void)0
#endif

#define SCORES(sc, data, subset, s16) \
    pt_scores_t sc; sc.data = (data); sc.subset = (const uint8_t *)(subset); sc.s16 = (s16); \
    EDGE0(sc)

void kb_mask_s8(const int8_t *w, void *data, const uint8_t *subset, int32_t s16, int32_t thr,
                int8_t *out, int32_t n) {
    SCORES(sc, data, subset, s16);
    pt_mask_s8(w, &sc, thr, out, n);
}

void kb_fc_mask_s8_s32(const int8_t *x, const int8_t *w, void *data, const uint8_t *subset, int32_t s16,
                       int32_t thr, int32_t *out, int32_t n_in, int32_t n_out, int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    pt_fc_mask_s8_s32(x, w, &sc, thr, out, n_in, n_out RANGE);
}

void kb_fc_t_mask_s8_s32(const int8_t *e, const int8_t *w, void *data, const uint8_t *subset, int32_t s16,
                         int32_t thr, int32_t *out, int32_t n_in, int32_t n_out) {
    SCORES(sc, data, subset, s16);
    pt_fc_t_mask_s8_s32(e, w, &sc, thr, out, n_in, n_out);
}

void kb_conv2d_mask_s8_s32_chw(const int8_t *x, const int8_t *w, void *data, const uint8_t *subset,
                               int32_t s16, int32_t thr, int32_t *out, const pt_conv2d_dims_t *d,
                               int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    pt_conv2d_mask_s8_s32_chw(x, w, &sc, thr, out, d RANGE);
}

void kb_conv2d_t_mask_s8_s32_chw(const int8_t *e, const int8_t *w, void *data, const uint8_t *subset,
                                 int32_t s16, int32_t thr, int32_t *out, const pt_conv2d_dims_t *d,
                                 int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    pt_conv2d_t_mask_s8_s32_chw(e, w, &sc, thr, out, d RANGE);
}

int32_t kb_fc_score_s8(const int8_t *e, const int8_t *x, const int8_t *w, void *data,
                       const uint8_t *subset, int32_t s16, int32_t shift, int32_t smax,
                       int32_t n_in, int32_t n_out, int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    return pt_fc_score_s8(e, x, w, &sc, shift, smax, n_in, n_out RANGE);
}

int32_t kb_conv2d_score_s8_chw(const int8_t *e, const int8_t *x, const int8_t *w, void *data,
                               const uint8_t *subset, int32_t s16, int32_t shift, int32_t smax,
                               const pt_conv2d_dims_t *d, int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    return pt_conv2d_score_s8_chw(e, x, w, &sc, shift, smax, d RANGE);
}

int32_t kb_score_update_s8(void *data, const uint8_t *subset, int32_t s16, const int32_t *g,
                           const int8_t *w, int32_t shift, int32_t smax, int32_t n) {
    SCORES(sc, data, subset, s16);
    return pt_score_update_s8(&sc, g, w, shift, smax, n);
}

#ifdef PT_CONV_Q   /* not in the kernels before issue 8 (benchmarks/kernels.py's "before") */
/* the fused forward (conv2d_q.c); data NULL: the unmasked conv2d_s8_s8_chw */
int32_t kb_conv2d_mask_s8_s8_chw(const int8_t *x, const int8_t *w, void *data, const uint8_t *subset,
                                 int32_t s16, int32_t thr, int8_t *out, int32_t *acc, int32_t n_acc,
                                 const pt_conv2d_dims_t *d, int32_t shift, const int32_t *bias, int32_t bd,
                                 int32_t c0, int32_t c1) {
    SCORES(sc, data, subset, s16);
    return pt_conv2d_mask_s8_s8_chw(x, w, &sc, thr, out, acc, n_acc, d, shift, bias, bd, c0, c1);
}
#endif
