/* mask.c - edge-popup (PRIOT) masks: which edges are kept, a materialised
 * masked copy of the weights, and the count of compact scores (set bits of
 * a PRIOT-S subset bitmap). */
#include "picotrain_kernels.h"

/* Set bits of a byte, from two nibbles. */
PT_INLINE uint32_t popcount8(uint32_t b) {
    static const uint8_t nib[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    return (uint32_t)nib[b & 15u] + nib[(b >> 4) & 15u];
}

uint32_t pt_popcount_range(const uint8_t *bits, uint32_t j0, uint32_t n) {
    uint32_t c = 0, j = j0, end = j0 + n;
    while (j < end && (j & 7u)) {
        c += (bits[j >> 3] >> (j & 7u)) & 1u;
        j++;
    }
    /* long ranges (a layer's count): bytes up to a word boundary, then 32 bits at a time */
    if (end - j >= 64u) {
        for (; !PT_ALIGNED4(bits + (j >> 3)); j += 8u) {
            c += popcount8(bits[j >> 3]);
        }
        for (; j + 32u <= end; j += 32u) {
            c += pt_popcount32(*(const pt_u32a *)(bits + (j >> 3)));
        }
    }
    for (; j + 8u <= end; j += 8u) {
        c += popcount8(bits[j >> 3]);
    }
    for (; j < end; j++) {
        c += (bits[j >> 3] >> (j & 7u)) & 1u;
    }
    return c;
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
    if (sc->subset == NULL) {   /* dense int16 scores */
        for (t = 0; t < n; t++) {
            out[t] = pt_score_get(sc, si++) >= thr ? w[t] : 0;
        }
        return si;
    }
    {
        /* compact scores (PRIOT-S): the subset's bits a byte at a time, the
         * score type tested once (issue 8: ~20 cycles per edge before) */
        const uint8_t *bits = sc->subset;   /* locals: the stores to out may alias *sc */
        const int8_t *s8 = (const int8_t *)sc->data;
        const int16_t *s16 = sc->s16 ? (const int16_t *)sc->data : NULL;
        j0 += sc->edge0;   /* a channel range's view starts mid-bitmap */
        t = 0;
        while (t < n) {
            const uint32_t j = j0 + (uint32_t)t;
            uint32_t b = (uint32_t)bits[j >> 3] >> (j & 7u), left = 8u - (j & 7u);
            for (; left && t < n; left--, t++, b >>= 1) {
                int8_t v = w[t];
                if ((b & 1u) && (s16 ? s16[si] : s8[si]) < thr) {
                    v = 0;
                }
                si += b & 1u;
                out[t] = v;
            }
        }
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
