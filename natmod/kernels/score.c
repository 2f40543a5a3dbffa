/* score.c - PRIOT score steps: s = sat(s - round(g * w / 2^shift)) for every
 * scored edge, from a gradient buffer or fused with the gradient's computation.
 * (The convolution's fused step lives in conv2d.c, next to its gradient.)
 *
 * Speed: a step with g == 0 leaves an in-range score as it is, and g = e[o] *
 * x[i] is 0 for most edges of a linear layer (errors after ReLU / max-pool and
 * ReLU activations are mostly 0). So fc_score_s8 does the full step only
 * where e[o] != 0 and x[i] != 0; elsewhere it only checks that the scores are
 * in [-smax, smax] (a word at a time for int8 scores with smax = 127), which
 * is all the step could change there. */
#include "picotrain_kernels.h"

/* round(g * w / 2^shift) for |g| >= 2^24, exactly, clamped to +-PT_SCORE_CLAMP
 * (any larger step saturates the score anyway), in 32-bit arithmetic only:
 * |g| * |w| < 2^39 is held as A * 2^16 + B with B < 2^16. */
int32_t pt_round_gw_exact(int32_t g, int32_t w, int32_t shift) {
    uint32_t m = pt_abs_u32(g), a = pt_abs_u32(w), A, B, r;
    if (a == 0) {
        return 0;
    }
    A = (m >> 16) * a;              /* < 2^23 */
    B = (m & 0xFFFFu) * a;          /* < 2^23 */
    A += B >> 16;
    B &= 0xFFFFu;
    if (shift <= 0) {
        r = A ? PT_SCORE_CLAMP : B;
    } else if (shift <= 16) {
        /* (A 2^16 + B + 2^(s-1)) >> s = A 2^(16-s) + ((B + 2^(s-1)) >> s) */
        r = A >= 65536u ? PT_SCORE_CLAMP
                        : (A << (16 - shift)) + ((B + (1u << (shift - 1))) >> shift);
    } else if (shift < 48) {
        /* B < 2^16 cannot carry into the kept bits: (A + 2^(t-1)) >> t, t = s - 16 */
        uint32_t t = (uint32_t)shift - 16u;
        r = t < 32u ? (A + (1u << (t - 1u))) >> t : 0u;
    } else {
        r = 0;
    }
    if (r > PT_SCORE_CLAMP) {
        r = PT_SCORE_CLAMP;
    }
    return ((g < 0) != (w < 0)) ? -(int32_t)r : (int32_t)r;
}

int32_t pt_score_step(const pt_scores_t *sc, uint32_t si, int32_t g, int32_t w, int32_t shift, int32_t smax) {
    return pt_score_apply(sc, si, g, w, shift, smax);
}

const int8_t *pt_find_below_s8(const int8_t *p, const int8_t *end, uint32_t below) {
    const uint32_t hi = 0x80808080u;
#if PT_ASM_M0
    /* two words per iteration: 15 cycles for 8 bytes */
    register const int8_t *end_ __asm__("r8") = end;
    uint32_t a, b, t, u;
    if (p == end) {
        return end;
    }
    __asm__ volatile(
        ".syntax unified\n\t"
        "1:\n\t"
        "ldmia %[p]!, {%[a], %[b]}\n\t"
        "eors %[a], %[hi]\n\t"
        "eors %[b], %[hi]\n\t"
        "subs %[t], %[a], %[lo]\n\t"
        "bics %[t], %[a]\n\t"
        "subs %[u], %[b], %[lo]\n\t"
        "bics %[u], %[b]\n\t"
        "orrs %[t], %[u]\n\t"
        "tst %[t], %[hi]\n\t"
        "bne 2f\n\t"
        "cmp %[p], %[end]\n\t"
        "bne 1b\n\t"
        "b 3f\n"
        "2:\n\t"
        "subs %[p], #8\n"
        "3:\n"
        : [p] "+l"(p), [a] "=&l"(a), [b] "=&l"(b), [t] "=&l"(t), [u] "=&l"(u)
        : [end] "r"(end_), [hi] "l"(hi), [lo] "l"(below)
        : "cc", "memory");
    return p;
#else
    for (; p < end; p += 8) {
        uint32_t a = ((const pt_u32a *)p)[0] ^ hi, b = ((const pt_u32a *)p)[1] ^ hi;
        if (((a - below) & ~a & hi) | ((b - below) & ~b & hi)) {
            return p;
        }
    }
    return end;
#endif
}

const int8_t *pt_first_below_s8(const int8_t *p, const int8_t *end, int32_t lim) {
    for (; p < end && !PT_ALIGNED4(p); p++) {
        if (*p < lim) {
            return p;
        }
    }
    p = pt_find_below_s8(p, p + ((end - p) & ~7), (uint32_t)(lim + 128) * 0x01010101u);
    for (; p < end; p++) {
        if (*p < lim) {
            return p;
        }
    }
    return end;
}

/* 1 when every int8 score of s[0:n] is in [-smax, smax]; for smax = 127 only
 * -128 is outside: eight at a time, looking for a byte below -127. */
static int scores_in_range_s8(const int8_t *s, int32_t n, int32_t smax) {
    const int8_t *end = s + n;
    if (smax == PT_Q_MAX) {
        return pt_first_below_s8(s, end, -PT_Q_MAX) == end;
    }
    for (; s < end; s++) {
        if (*s > smax || *s < -smax) {
            return 0;
        }
    }
    return 1;
}

/* The step with g = 0 for scores[si .. si + n): clamp any score outside
 * [-smax, smax]; returns how many were clamped. */
int32_t pt_scores_clamp(const pt_scores_t *sc, uint32_t si, uint32_t n, int32_t smax) {
    int32_t sat = 0;
    if (!sc->s16) {
        int8_t *s = (int8_t *)sc->data + si, *end = s + n;
        if (scores_in_range_s8(s, (int32_t)n, smax)) {
            return 0;
        }
        for (; s < end; s++) {
            int32_t v = *s;
            if (pt_clamp_sym(&v, smax)) {
                *s = (int8_t)v;
                sat++;
            }
        }
    } else {
        int16_t *s = (int16_t *)sc->data + si, *end = s + n;
        for (; s < end; s++) {
            int32_t v = *s;
            if (pt_clamp_sym(&v, smax)) {
                *s = (int16_t)v;
                sat++;
            }
        }
    }
    return sat;
}

#define NZ_SC 96        /* listed nonzero inputs per chunk: 384 bytes of stack */
#define ROWS_FAST 256   /* rows tracked by the list path (a bitmap on the stack) */

/* The score steps of one row over the listed nonzero inputs (entries (i << 8) |
 * (uint8)x[i]): dense int8 scores s[0:n_in] all in [-smax, smax], weights w[0:n_in],
 * 1 <= shift <= 31, |e * x * w| <= 2^21 (no clamp needed). */
#if PT_ASM_M0
static PT_NOINLINE int32_t score_list_s8(const int32_t *lp, const int32_t *end, const int8_t *w, int8_t *s,
                                         int32_t eo, int32_t shift, int32_t smax) {
    register const int32_t *e_ __asm__("r8") = end;
    register int32_t eo_ __asm__("r9") = eo;
    register int32_t half __asm__("r10") = 1 << (shift - 1);
    register int32_t hi __asm__("r11") = smax;
    register int32_t lo __asm__("r12") = -smax;
    int32_t i, v, t, sg, sat = 0;
    /* per edge 29 cycles: ldm 2, decode 2, ldrsb w 2, muls + beq (w = 0), muls by e,
     * |p| 3, + half, >> shift, sign back 2, ldrsb s 2, s - r, two compares 4, strb 2, loop 3 */
    __asm__ volatile(
        ".syntax unified\n\t"
        "cmp %[lp], %[end]\n\t"
        "beq 9f\n"
        "1:\n\t"
        "ldmia %[lp]!, {%[i]}\n\t"
        "sxtb %[v], %[i]\n\t"
        "asrs %[i], %[i], #8\n\t"
        "ldrsb %[t], [%[w], %[i]]\n\t"
        "muls %[v], %[t]\n\t"             /* x * w; 0 when w = 0: no step */
        "beq 2f\n\t"
        "mov %[t], %[eo]\n\t"
        "muls %[v], %[t]\n\t"             /* p = e * x * w */
        "asrs %[sg], %[v], #31\n\t"
        "eors %[v], %[sg]\n\t"
        "subs %[v], %[v], %[sg]\n\t"      /* |p| */
        "add %[v], %[half]\n\t"
        "lsrs %[v], %[sh]\n\t"
        "eors %[v], %[sg]\n\t"
        "subs %[v], %[v], %[sg]\n\t"      /* r: rounded half away from zero */
        "ldrsb %[t], [%[s], %[i]]\n\t"
        "subs %[t], %[t], %[v]\n\t"       /* s - r */
        "cmp %[t], %[hi]\n\t"
        "bgt 3f\n\t"
        "cmp %[t], %[lo]\n\t"
        "blt 4f\n"
        "5:\n\t"
        "strb %[t], [%[s], %[i]]\n"
        "2:\n\t"
        "cmp %[lp], %[end]\n\t"
        "bne 1b\n\t"
        "b 9f\n"
        "3:\n\t"                          /* saturated high (sg is free here) */
        "mov %[t], %[hi]\n\t"
        "b 6f\n"
        "4:\n\t"                          /* saturated low */
        "mov %[t], %[lo]\n"
        "6:\n\t"
        "ldr %[sg], %[sat]\n\t"
        "adds %[sg], #1\n\t"
        "str %[sg], %[sat]\n\t"
        "b 5b\n"
        "9:\n"
        : [lp] "+l"(lp), [i] "=&l"(i), [v] "=&l"(v), [t] "=&l"(t), [sg] "=&l"(sg), [sat] "+m"(sat)
        : [end] "r"(e_), [eo] "r"(eo_), [half] "r"(half), [hi] "r"(hi), [lo] "r"(lo),
          [w] "l"(w), [s] "l"(s), [sh] "l"(shift)
        : "cc", "memory");
    return sat;
}
#endif

#if !PT_ASM_M0
static int32_t score_list_s8(const int32_t *lp, const int32_t *end, const int8_t *w, int8_t *s,
                             int32_t eo, int32_t shift, int32_t smax) {
    const uint32_t half = 1u << (shift - 1);
    int32_t sat = 0;
    for (; lp < end; lp++) {
        const int32_t i = (int32_t)((uint32_t)*lp >> 8);
        const int32_t p = (int32_t)(int8_t)(uint8_t)*lp * w[i];
        if (p != 0) {
            sat += pt_step_s8(s + i, p * eo, half, shift, smax);
        }
    }
    return sat;
}
#endif

/* PRIOT-S: the steps of the scored edges among v's bits (edge t: bit t) on
 * their compact int8 scores from *sp on (all in [-smax, smax]), e[o] = eo !=
 * 0, only where x[t] != 0 (g = eo x[t]); *sp moves past the scored edges.
 * v != 0, 1 <= shift <= 31. */
#if PT_ASM_M0
/* 11 cycles a scored edge whose input is 0, 34 a step (PT_SCORE_BITS_ASM). */
static PT_NOINLINE int32_t score_bits_x_s8(int8_t **sp, const int8_t *x, const int8_t *w, uint32_t v, int32_t eo,
                                           int32_t shift, int32_t smax) {
    register int32_t hi __asm__("r8") = smax;
    register int32_t lo __asm__("r9") = -smax;
    register int32_t sat __asm__("r10") = 0;
    register int32_t sh1 __asm__("r11") = shift - 1;
    register int32_t e __asm__("r12") = eo;
    int8_t *s = *sp;
    int32_t i = -1, p, t, q;
    __asm__ volatile(
        PT_SCORE_BITS_ASM("ldrsb %[p], [%[x], %[i]]\n\t"
                          "cmp %[p], #0\n\t"
                          "beq 9f\n\t"             /* x = 0: g = 0, the score stays */
                          "ldrsb %[t], [%[w], %[i]]\n\t"
                          "muls %[p], %[t]\n\t"
                          "mov %[t], %[e]\n\t"
                          "muls %[p], %[t]\n\t")   /* g * w = eo x w */
        : [s] "+l"(s), [v] "+l"(v), [i] "+l"(i), [p] "=&l"(p), [t] "=&l"(t), [q] "=&l"(q), [sat] "+r"(sat)
        : [x] "l"(x), [w] "l"(w), [hi] "r"(hi), [lo] "r"(lo), [sh1] "r"(sh1), [e] "r"(e)
        : "cc", "memory");
    *sp = s;
    return sat;
}
#else
static int32_t score_bits_x_s8(int8_t **sp, const int8_t *x, const int8_t *w, uint32_t v, int32_t eo,
                               int32_t shift, int32_t smax) {
    const uint32_t half = 1u << (shift - 1);
    int8_t *s = *sp;
    int32_t sat = 0, t;
    for (t = 0; v; t++, v >>= 1) {
        if (v & 1u) {
            if (x[t] != 0) {
                sat += pt_step_s8(s, x[t] * w[t] * eo, half, shift, smax);
            }
            s++;
        }
    }
    *sp = s;
    return sat;
}
#endif

/* One row of it: edges j0 .. j0 + n_in of the subset, 32 at a time. */
static PT_NOINLINE int32_t score_row_subset_s8(const int8_t *x, const int8_t *w, const uint8_t *bits, uint32_t j0,
                                               int8_t *s, int32_t eo, int32_t n_in, int32_t shift, int32_t smax) {
    int32_t sat = 0, i0;
    for (i0 = 0; i0 < n_in; i0 += 32) {
        const uint32_t v = pt_bits_at(bits, j0 + (uint32_t)i0, n_in - i0 < 32 ? (uint32_t)(n_in - i0) : 32u);
        if (v) {
            sat += score_bits_x_s8(&s, x + i0, w + i0, v, eo, shift, smax);
        }
    }
    return sat;
}

/* The rows of the list path (bitmap fast): only where x[i] != 0, the nonzero
 * inputs listed once for all rows (apart, so its list and the PRIOT-S index
 * list never share a stack frame). */
static PT_NOINLINE int32_t fc_score_listed(const int8_t *e, const int8_t *x, const int8_t *w, int8_t *s,
                                          const uint8_t *fast, int32_t shift, int32_t smax, int32_t n_in,
                                          int32_t n_out) {
    int32_t ent[NZ_SC], from = 0, o, sat = 0;
    while (from < n_in) {
        const int32_t m = pt_list_nonzero_s8(x, n_in, &from, ent, NZ_SC);
        for (o = 0; o < n_out; o++) {
            if ((fast[o >> 3] >> (o & 7)) & 1) {
                const size_t base = (size_t)o * (size_t)n_in;
                sat += score_list_s8(ent, ent + m, w + base, s + base, e[o], shift, smax);
            }
        }
    }
    return sat;
}

/* PRIOT-S (compact scores): every row. */
static PT_NOINLINE int32_t fc_score_subset(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                                           int32_t shift, int32_t smax, int32_t n_in, int32_t n_out) {
    uint32_t j = 0, si = 0;
    int32_t sat = 0, o, i;
    const int rows = !sc->s16 && shift >= 1 && shift <= 31;
    for (o = 0; o < n_out; o++) {
        const int32_t eo = e[o];
        const uint32_t row_si = pt_scores_in(sc, j, (uint32_t)n_in);
        const int8_t *wr = w + (size_t)o * (size_t)n_in;
        if (eo == 0) {
            sat += pt_scores_clamp(sc, si, row_si, smax);
        } else if (rows && scores_in_range_s8((const int8_t *)sc->data + si, (int32_t)row_si, smax)) {
            sat += score_row_subset_s8(x, wr, sc->subset, sc->edge0 + j, (int8_t *)sc->data + si, eo, n_in, shift, smax);
        } else {
            uint32_t k = si;
            for (i = 0; i < n_in; i++) {
                if (pt_edge_scored(sc, j + (uint32_t)i)) {
                    sat += pt_score_apply(sc, k++, eo * x[i], wr[i], shift, smax);
                }
            }
        }
        si += row_si;
        j += (uint32_t)n_in;
    }
    return sat;
}

static int32_t fc_score_rows(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                             int32_t shift, int32_t smax, int32_t n_in, int32_t n_out) {
    uint32_t si = 0;
    int32_t sat = 0, o, i;
    uint8_t fast[ROWS_FAST / 8];
    const int listed = !sc->s16 && shift >= 1 && shift <= 31 && n_out <= ROWS_FAST && n_in < (1 << 23);
    if (sc->subset != NULL) {
        return fc_score_subset(e, x, w, sc, shift, smax, n_in, n_out);
    }
    /* Every row with e[o] = 0 (g = 0: clamping only), and every row the list path
     * cannot take (int16 scores, a score out of range, other shifts): here. */
    for (o = 0; o < n_out; o++, si += (uint32_t)n_in) {
        const int32_t eo = e[o];
        const int8_t *wr = w + (size_t)o * (size_t)n_in;
        int ok = 0;
        if (eo == 0) {
            sat += pt_scores_clamp(sc, si, (uint32_t)n_in, smax);
        } else if (listed && scores_in_range_s8((const int8_t *)sc->data + si, n_in, smax)) {
            ok = 1;   /* the list path below */
        } else {
            for (i = 0; i < n_in; i++) {
                sat += pt_score_apply(sc, si + (uint32_t)i, eo * x[i], wr[i], shift, smax);
            }
        }
        if (listed) {
            if ((o & 7) == 0) {
                fast[o >> 3] = 0;
            }
            fast[o >> 3] |= (uint8_t)(ok << (o & 7));
        }
    }
    if (listed) {
        sat += fc_score_listed(e, x, w, (int8_t *)sc->data, fast, shift, smax, n_in, n_out);
    }
    return sat;
}

/* Rows [c0, c1): the whole step on the rows' errors, weights and scores. */
int32_t pt_fc_score_s8(const int8_t *e, const int8_t *x, const int8_t *w, const pt_scores_t *sc,
                       int32_t shift, int32_t smax, int32_t n_in, int32_t n_out, int32_t c0, int32_t c1) {
    const int32_t j0 = c0 * n_in;
    pt_scores_t v;
    (void)n_out;
    return fc_score_rows(e + c0, x, w + j0, pt_scores_view(&v, sc, (uint32_t)j0), shift, smax, n_in, c1 - c0);
}

int32_t pt_score_update_s8(const pt_scores_t *sc, const int32_t *g, const int8_t *w, int32_t shift,
                           int32_t smax, int32_t n) {
    uint32_t j, si = 0;
    int32_t sat = 0;
    for (j = 0; j < (uint32_t)n; j++) {
        if (pt_edge_scored(sc, j)) {
            sat += pt_score_apply(sc, si++, g[j], w[j], shift, smax);
        }
    }
    return sat;
}
