/* mask.c - edge-popup (PRIOT) masks: which edges are kept, a materialised
 * masked copy of the weights, and the count of compact scores. */
#include "picotrain_kernels.h"

int32_t pt_popcount_bits(const uint8_t *bits, int32_t n) {
    int32_t count = 0, j;
    for (j = 0; j + 8 <= n; j += 8) {
        uint32_t b = *bits++;
        b = b - ((b >> 1) & 0x55u);
        b = (b & 0x33u) + ((b >> 2) & 0x33u);
        count += (int32_t)((b + (b >> 4)) & 0x0Fu);
    }
    if (j < n) {
        uint32_t b = *bits & ((1u << (n - j)) - 1u);
        for (; b; b >>= 1) {
            count += (int32_t)(b & 1u);
        }
    }
    return count;
}

void pt_mask_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, int8_t *out, int32_t n) {
    uint32_t j, si = 0;
    if (sc == NULL || sc->data == NULL) {
        for (; n > 0; n--) {
            *out++ = *w++;
        }
        return;
    }
    for (j = 0; j < (uint32_t)n; j++) {
        int8_t v = w[j];
        if (pt_edge_scored(sc->subset, j) && pt_score_get(sc, si++) < thr) {
            v = 0;
        }
        out[j] = v;
    }
}
