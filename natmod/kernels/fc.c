/* fc.c - the linear layer: forward, error to the input, weight gradient, and
 * the edge-popup masked forward / backward. */
#include "picotrain_kernels.h"

void pt_fc_s8_s32(const int8_t *x, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out) {
    for (; n_out > 0; n_out--) {
        const int8_t *xp = x;
        int32_t acc = 0;
        int32_t i;
        for (i = n_in; i > 0; i--) {
            acc += (int32_t)*w++ * *xp++;
        }
        *out++ = acc;
    }
}

void pt_fc_t_s8_s32(const int8_t *e, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out) {
    int32_t i;
    for (i = 0; i < n_in; i++) {
        out[i] = 0;
    }
    for (; n_out > 0; n_out--) {
        int32_t eo = *e++;
        int32_t *op = out;
        if (eo == 0) {
            w += n_in;
            continue;
        }
        for (i = n_in; i > 0; i--) {
            *op++ += (int32_t)*w++ * eo;
        }
    }
}

void pt_outer_s8_s32(const int8_t *e, const int8_t *x, int32_t *out, int32_t n_out, int32_t n_in) {
    for (; n_out > 0; n_out--) {
        int32_t eo = *e++;
        const int8_t *xp = x;
        int32_t i;
        for (i = n_in; i > 0; i--) {
            *out++ = eo * *xp++;
        }
    }
}

/* Masked variants: the mask test runs once per weight, in edge order; si
 * counts the scored edges seen so far (the index into compact scores). */

void pt_fc_mask_s8_s32(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                       int32_t *out, int32_t n_in, int32_t n_out) {
    uint32_t j = 0, si = 0;
    if (sc == NULL || sc->data == NULL) {
        pt_fc_s8_s32(x, w, out, n_in, n_out);
        return;
    }
    for (; n_out > 0; n_out--) {
        const int8_t *xp = x;
        int32_t acc = 0;
        int32_t i;
        for (i = n_in; i > 0; i--, j++, w++, xp++) {
            if (pt_edge_scored(sc->subset, j) && pt_score_get(sc, si++) < thr) {
                continue;   /* pruned */
            }
            acc += (int32_t)*w * *xp;
        }
        *out++ = acc;
    }
}

void pt_fc_t_mask_s8_s32(const int8_t *e, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                         int32_t *out, int32_t n_in, int32_t n_out) {
    uint32_t j = 0, si = 0;
    int32_t i;
    if (sc == NULL || sc->data == NULL) {
        pt_fc_t_s8_s32(e, w, out, n_in, n_out);
        return;
    }
    for (i = 0; i < n_in; i++) {
        out[i] = 0;
    }
    for (; n_out > 0; n_out--) {
        int32_t eo = *e++;
        int32_t *op = out;
        for (i = n_in; i > 0; i--, j++, w++, op++) {
            if (pt_edge_scored(sc->subset, j) && pt_score_get(sc, si++) < thr) {
                continue;
            }
            *op += (int32_t)*w * eo;
        }
    }
}
