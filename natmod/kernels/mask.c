/* mask.c - edge-popup (PRIOT) masks: which edges are kept, a materialised
 * masked copy of the weights, and the count of compact scores. */
#include "picotrain_kernels.h"

/* Set bits of a 32-bit word (SWAR). */
PT_INLINE uint32_t popcount32(uint32_t b) {
    b = b - ((b >> 1) & 0x55555555u);
    b = (b & 0x33333333u) + ((b >> 2) & 0x33333333u);
    b = (b + (b >> 4)) & 0x0F0F0F0Fu;
    return (b + (b >> 8) + (b >> 16) + (b >> 24)) & 0x3Fu;
}

int32_t pt_popcount_bits(const uint8_t *bits, int32_t n) {
    uint32_t count = 0;
    int32_t j = 0;
    /* whole bytes up to a word boundary, then words, then bytes, then the last bits */
    for (; j + 8 <= n && !PT_ALIGNED4(bits); j += 8) {
        count += popcount32(*bits++);
    }
    for (; j + 32 <= n; j += 32, bits += 4) {
        count += popcount32(*(const pt_u32a *)bits);
    }
    for (; j + 8 <= n; j += 8) {
        count += popcount32(*bits++);
    }
    if (j < n) {
        count += popcount32(*bits & ((1u << (n - j)) - 1u));
    }
    return (int32_t)count;
}

uint32_t pt_mask_range_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, uint32_t j0, uint32_t si,
                          int8_t *out, int32_t n) {
    int32_t t;
    if (sc == NULL || sc->data == NULL) {
        for (t = 0; t < n; t++) {
            out[t] = w[t];
        }
        return si;
    }
    if (sc->subset == NULL && !sc->s16) {
        /* dense int8 scores (PRIOT) */
        const int8_t *s = (const int8_t *)sc->data + si;
        for (t = 0; t < n; t++) {
            out[t] = s[t] >= thr ? w[t] : 0;
        }
        return si + (uint32_t)n;
    }
    j0 += sc->edge0;   /* a local bit index: the stores to out may alias *sc */
    for (t = 0; t < n; t++) {
        const uint32_t b = j0 + (uint32_t)t;
        int8_t v = w[t];
        if (pt_bit(sc->subset, b) && pt_score_get(sc, si++) < thr) {
            v = 0;
        }
        out[t] = v;
    }
    return si;
}

pt_scores_t *pt_scores_view(pt_scores_t *v, const pt_scores_t *sc, uint32_t j0) {
    const uint32_t skip = pt_scores_in(sc, 0, j0);
    v->s16 = sc->s16;
    v->data = sc->data;   /* may be NULL when there are no scores at all */
    if (skip) {
        v->data = sc->s16 ? (void *)((int16_t *)sc->data + skip) : (void *)((int8_t *)sc->data + skip);
    }
    v->subset = sc->subset;
    v->edge0 = sc->subset ? sc->edge0 + j0 : 0;
    return v;
}

void pt_mask_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, int8_t *out, int32_t n) {
    pt_mask_range_s8(w, sc, thr, 0, 0, out, n);
}
