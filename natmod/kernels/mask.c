/* mask.c - edge-popup (PRIOT) masks: which edges are kept, a materialised
 * masked copy of the weights, and the count of compact scores (set bits of
 * a PRIOT-S subset bitmap). */
#include "picotrain_kernels.h"

/* Set bits of a byte, from two nibbles. */
PT_INLINE uint32_t popcount8(uint32_t b) {
    static const uint8_t nib[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
    return (uint32_t)nib[b & 15u] + nib[(b >> 4) & 15u];
}

/* The set bits of each byte of p[0:k] (1 <= k <= 31), summed byte by byte
 * (each sum <= 8 k < 256). Apart from its caller, whose bit loops left gcc
 * too few registers to keep the three masks in them (16 cycles a word, not 29). */
static PT_NOINLINE uint32_t byte_counts(const pt_u32a *p, uint32_t k) {
    const uint32_t m1 = 0x55555555u, m2 = 0x33333333u, m4 = 0x0F0F0F0Fu;
    uint32_t acc = 0, b;
    for (; k; k--) {
        b = *p++;
        b = b - ((b >> 1) & m1);
        b = (b & m2) + ((b >> 2) & m2);
        acc += (b + (b >> 4)) & m4;
    }
    return acc;
}

uint32_t pt_popcount_range(const uint8_t *bits, uint32_t j0, uint32_t n) {
    uint32_t c = 0, j = j0, end = j0 + n;
    while (j < end && (j & 7u)) {
        c += (bits[j >> 3] >> (j & 7u)) & 1u;
        j++;
    }
    /* long ranges (a layer's count, checked by the binding at every call):
     * bytes up to a word boundary, then 32 bits at a time, the words' byte
     * counts (<= 8 each) summed over up to 31 words before they are added up
     * (issue 8: 17 cycles a word where a whole popcount took 30) */
    if (end - j >= 64u) {
        const pt_u32a *p;
        uint32_t nw;
        for (; !PT_ALIGNED4(bits + (j >> 3)); j += 8u) {
            c += popcount8(bits[j >> 3]);
        }
        p = (const pt_u32a *)(bits + (j >> 3));
        nw = (end - j) >> 5;
        j += nw << 5;
        while (nw) {
            uint32_t k = nw < 31u ? nw : 31u, acc;
            nw -= k;
            acc = byte_counts(p, k);
            p += k;
            acc = (acc & 0x00FF00FFu) + ((acc >> 8) & 0x00FF00FFu);
            c += (acc + (acc >> 16)) & 0xFFFFu;
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

/* out[0:n] = w[0:n], a word at a time when both are 4-aligned. */
static void copy_s8(int8_t *out, const int8_t *w, int32_t n) {
    int32_t t = 0;
    if (PT_ALIGNED4(out) && PT_ALIGNED4(w)) {
        for (; t + 4 <= n; t += 4) {
            *(pt_u32a *)(out + t) = *(const pt_u32a *)(w + t);
        }
    }
    for (; t < n; t++) {
        out[t] = w[t];
    }
}

uint32_t pt_mask_range_s8(const int8_t *w, const pt_scores_t *sc, int32_t thr, uint32_t j0, uint32_t si,
                          int8_t *out, int32_t n) {
    int32_t t;
    if (sc == NULL || sc->data == NULL) {
        copy_s8(out, w, n);
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
    /* compact scores (PRIOT-S): copy the weights, then zero the pruned ones
     * (issue 8: a test of every edge's subset bit cost ~26 instructions an
     * edge, 83k on the tiny CNN's L3) */
    copy_s8(out, w, n);
    for (t = 0; t < n; t += 32) {
        uint32_t b = pt_pruned_bits(sc, j0 + (uint32_t)t, n - t < 32 ? (uint32_t)(n - t) : 32u, thr, &si);
        for (; b; b &= b - 1u) {
            out[t + (int32_t)pt_lowest_bit(b)] = 0;
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
