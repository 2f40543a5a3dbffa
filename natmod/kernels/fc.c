/* fc.c - the linear layer: forward, error to the input, weight gradient, and
 * the edge-popup masked forward / backward.
 *
 * Sparse operands: a linear layer's input is a ReLU output (about half 0) and
 * its output error is mostly 0. The forward pass lists the nonzero inputs
 * (a chunk of NZ_FC at a time, on the stack) and walks four weight rows per
 * pass over the list; the error to the input adds only the rows with a
 * nonzero error, two at a time; the outer product writes zero rows as words.
 * Every product skipped is zero, so the sums are the same. */
#include "picotrain_kernels.h"

#define NZ_FC 96   /* listed nonzero inputs per chunk: 384 bytes of stack */

int32_t pt_list_nonzero_s8(const int8_t *x, int32_t n, int32_t *from, int32_t *ent, int32_t cap) {
    int32_t i = *from, m = 0;
    while (i < n && m < cap) {
        int32_t v;
        if (i + 4 <= n && PT_ALIGNED4(x + i) && *(const pt_u32a *)(x + i) == 0) {
            i += 4;
            continue;
        }
        v = x[i];
        if (v != 0) {
            ent[m++] = (int32_t)(((uint32_t)i << 8) | (uint8_t)v);
        }
        i++;
    }
    *from = i;
    return m;
}

#define list_nonzero(x, n, from, ent) pt_list_nonzero_s8(x, n, from, ent, NZ_FC)

#define ENT_V(e) ((int32_t)(int8_t)(uint8_t)(e))
#define ENT_I(e) ((int32_t)((uint32_t)(e) >> 8))

/* acc[r] += sum over the entries of w_r[i] * v, four rows w_r = w + r * n_in. */
#if PT_ASM_M0
static PT_NOINLINE void dot4_list(const int32_t *lp, const int32_t *end, const int8_t *w, int32_t n_in,
                                  int32_t *acc) {
    register int32_t a0 __asm__("r8") = acc[0];
    register int32_t a1 __asm__("r9") = acc[1];
    register int32_t a2 __asm__("r10") = acc[2];
    register int32_t a3 __asm__("r11") = acc[3];
    register const int32_t *e_ __asm__("r12") = end;
    const int8_t *w0 = w, *w1 = w + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
    int32_t p, v, t;
    /* per entry 23 cycles for 4 MACs: ldm 2, decode 2, 4 x (ldrsb 2, muls, add), loop 3 */
    __asm__ volatile(
        ".syntax unified\n\t"
        "cmp %[lp], %[end]\n\t"
        "beq 2f\n"
        "1:\n\t"
        "ldmia %[lp]!, {%[p]}\n\t"
        "sxtb %[v], %[p]\n\t"
        "asrs %[p], %[p], #8\n\t"
        "ldrsb %[t], [%[w0], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a0], %[t]\n\t"
        "ldrsb %[t], [%[w1], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a1], %[t]\n\t"
        "ldrsb %[t], [%[w2], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a2], %[t]\n\t"
        "ldrsb %[t], [%[w3], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a3], %[t]\n\t"
        "cmp %[lp], %[end]\n\t"
        "bne 1b\n"
        "2:\n"
        : [lp] "+l"(lp), [p] "=&l"(p), [v] "=&l"(v), [t] "=&l"(t),
          [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3)
        : [end] "r"(e_), [w0] "l"(w0), [w1] "l"(w1), [w2] "l"(w2), [w3] "l"(w3)
        : "cc", "memory");
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#else
static void dot4_list(const int32_t *lp, const int32_t *end, const int8_t *w, int32_t n_in, int32_t *acc) {
    const int8_t *w1 = w + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
    for (; lp < end; lp++) {
        const int32_t i = ENT_I(*lp), v = ENT_V(*lp);
        acc[0] += w[i] * v;
        acc[1] += w1[i] * v;
        acc[2] += w2[i] * v;
        acc[3] += w3[i] * v;
    }
}
#endif

/* acc += sum over the entries of w[i] * v, one row. */
static void dot1_list(const int32_t *lp, const int32_t *end, const int8_t *w, int32_t *acc) {
    int32_t a = *acc;
    for (; lp < end; lp++) {
        a += w[ENT_I(*lp)] * ENT_V(*lp);
    }
    *acc = a;
}

static void fc_rows(const int8_t *x, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out) {
    int32_t ent[NZ_FC], from = 0, first = 1, o;
    while (first || from < n_in) {
        const int32_t m = list_nonzero(x, n_in, &from, ent);
        const int8_t *wr = w;
        if (first) {
            for (o = 0; o < n_out; o++) {
                out[o] = 0;
            }
            first = 0;
        }
        for (o = 0; o + 4 <= n_out; o += 4, wr += 4 * n_in) {
            dot4_list(ent, ent + m, wr, n_in, out + o);
        }
        for (; o < n_out; o++, wr += n_in) {
            dot1_list(ent, ent + m, wr, out + o);
        }
    }
}

/* Rows [c0, c1): the whole computation on the rows' weights and outputs. */
void pt_fc_s8_s32(const int8_t *x, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out,
                  int32_t c0, int32_t c1) {
    (void)n_out;
    fc_rows(x, w + c0 * n_in, out + c0, n_in, c1 - c0);
}

/* op[0:n] += wa[0:n] * ea + wb[0:n] * eb, n >= 1. */
#if PT_ASM_M0
/* 15 cycles per two MACs (GCC's loop: 25, it kept two of its values on the
 * stack): the rows are read at their ends plus a negative index counting up
 * to 0, so the eight values fit the eight low registers. */
static PT_NOINLINE void add_rows2(int32_t *op, const int8_t *wa, int32_t ea, const int8_t *wb, int32_t eb,
                                  int32_t n) {
    const int8_t *wae = wa + n, *wbe = wb + n;
    int32_t i = -n, t, u;
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "ldrsb %[t], [%[wae], %[i]]\n\t"
        "ldrsb %[u], [%[wbe], %[i]]\n\t"
        "muls %[t], %[ea]\n\t"
        "muls %[u], %[eb]\n\t"
        "adds %[t], %[t], %[u]\n\t"
        "ldr %[u], [%[op]]\n\t"
        "adds %[t], %[t], %[u]\n\t"
        "stmia %[op]!, {%[t]}\n\t"
        "adds %[i], #1\n\t"
        "bne 1b\n"
        : [op] "+l"(op), [i] "+l"(i), [t] "=&l"(t), [u] "=&l"(u)
        : [wae] "l"(wae), [wbe] "l"(wbe), [ea] "l"(ea), [eb] "l"(eb)
        : "cc", "memory");
}
#else
static void add_rows2(int32_t *op, const int8_t *wa, int32_t ea, const int8_t *wb, int32_t eb, int32_t n) {
    int32_t i;
    for (i = 0; i < n; i++) {
        op[i] += wa[i] * ea + wb[i] * eb;
    }
}
#endif

void pt_fc_t_s8_s32(const int8_t *e, const int8_t *w, int32_t *out, int32_t n_in, int32_t n_out) {
    const int8_t *wa = NULL;
    int32_t ea = 0, i, o;
    if (n_in == 0) {
        return;   /* no output (add_rows2 needs n >= 1) */
    }
    for (i = 0; i < n_in; i++) {
        out[i] = 0;
    }
    /* rows with a nonzero error, added two at a time */
    for (o = 0; o < n_out; o++, w += n_in) {
        const int32_t eo = e[o];
        if (eo == 0) {
            continue;
        }
        if (wa == NULL) {
            wa = w;
            ea = eo;
            continue;
        }
        add_rows2(out, wa, ea, w, eo, n_in);
        wa = NULL;
    }
    if (wa != NULL) {
        add_rows2(out, wa, ea, wa, 0, n_in);
    }
}

void pt_outer_s8_s32(const int8_t *e, const int8_t *x, int32_t *out, int32_t n_out, int32_t n_in,
                     int32_t c0, int32_t c1) {
    int32_t o;
    (void)n_out;
    out += c0 * n_in;
    for (o = c0; o < c1; o++) {
        const int32_t eo = e[o];
        int32_t i = 0;
        if (eo == 0) {
            for (; i + 4 <= n_in; i += 4, out += 4) {
                out[0] = 0;
                out[1] = 0;
                out[2] = 0;
                out[3] = 0;
            }
            for (; i < n_in; i++) {
                *out++ = 0;
            }
            continue;
        }
        for (; i + 4 <= n_in; i += 4, out += 4) {
            out[0] = eo * x[i];
            out[1] = eo * x[i + 1];
            out[2] = eo * x[i + 2];
            out[3] = eo * x[i + 3];
        }
        for (; i < n_in; i++) {
            *out++ = eo * x[i];
        }
    }
}

/* Masked variants: an edge is kept when it has no score or its score >= thr;
 * si counts the scored edges seen so far (the index into compact scores). */

#if PT_ASM_M0
/* acc[r] += sum over the entries of [s_r[i] >= thr] w_r[i] * v, two rows of
 * int8 weights and dense int8 scores: per entry 23 cycles for 2 edges. */
static PT_NOINLINE void dot2_list_masked(const int32_t *lp, const int32_t *end, const int8_t *w,
                                         const int8_t *s, int32_t n_in, int32_t thr, int32_t *acc) {
    register int32_t a0 __asm__("r8") = acc[0];
    register int32_t a1 __asm__("r9") = acc[1];
    register int32_t th __asm__("r10") = thr;
    register const int32_t *e_ __asm__("r11") = end;
    const int8_t *w1 = w + n_in, *s1 = s + n_in;
    int32_t p, v, t;
    __asm__ volatile(
        ".syntax unified\n\t"
        "cmp %[lp], %[end]\n\t"
        "beq 9f\n"
        "1:\n\t"
        "ldmia %[lp]!, {%[p]}\n\t"
        "sxtb %[v], %[p]\n\t"
        "asrs %[p], %[p], #8\n\t"
        "ldrsb %[t], [%[s0], %[p]]\n\t"
        "cmp %[t], %[th]\n\t"
        "blt 2f\n\t"
        "ldrsb %[t], [%[w0], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a0], %[t]\n"
        "2:\n\t"
        "ldrsb %[t], [%[s1], %[p]]\n\t"
        "cmp %[t], %[th]\n\t"
        "blt 3f\n\t"
        "ldrsb %[t], [%[w1], %[p]]\n\t"
        "muls %[t], %[v]\n\t"
        "add %[a1], %[t]\n"
        "3:\n\t"
        "cmp %[lp], %[end]\n\t"
        "bne 1b\n"
        "9:\n"
        : [lp] "+l"(lp), [p] "=&l"(p), [v] "=&l"(v), [t] "=&l"(t), [a0] "+r"(a0), [a1] "+r"(a1)
        : [end] "r"(e_), [th] "r"(th), [w0] "l"(w), [w1] "l"(w1), [s0] "l"(s), [s1] "l"(s1)
        : "cc", "memory");
    acc[0] = a0;
    acc[1] = a1;
}
#else
static void dot2_list_masked(const int32_t *lp, const int32_t *end, const int8_t *w, const int8_t *s,
                             int32_t n_in, int32_t thr, int32_t *acc) {
    const int8_t *w1 = w + n_in, *s1 = s + n_in;
    for (; lp < end; lp++) {
        const int32_t i = ENT_I(*lp), v = ENT_V(*lp);
        if (s[i] >= thr) {
            acc[0] += w[i] * v;
        }
        if (s1[i] >= thr) {
            acc[1] += w1[i] * v;
        }
    }
}
#endif

static void dot1_list_masked(const int32_t *lp, const int32_t *end, const int8_t *w, const int8_t *s,
                             int32_t thr, int32_t *acc) {
    int32_t a = *acc;
    for (; lp < end; lp++) {
        const int32_t i = ENT_I(*lp);
        if (s[i] >= thr) {
            a += w[i] * ENT_V(*lp);
        }
    }
    *acc = a;
}

/* PRIOT-S, compact scores: out (the unmasked pass) minus the pruned edges'
 * products. Pruned edges are few: the subset's words are walked once, in
 * order, and only a pruned edge costs a product (issue 8: mapping each pruned
 * score back to its edge cost ~170 instructions an edge). The sums are exact:
 * subtracting is never adding. */
static PT_NOINLINE void fc_unprune_subset(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                                          int32_t *out, int32_t n_in, int32_t n_out) {
    const uint32_t n = (uint32_t)n_in * (uint32_t)n_out;
    uint32_t q, si = 0, row = 0, row_start = 0;   /* the row of the last pruned edge, its first edge */
    for (q = 0; q < n; q += 32u) {
        uint32_t b = pt_pruned_bits(sc, q, n - q < 32u ? n - q : 32u, thr, &si);
        for (; b; b &= b - 1u) {
            const uint32_t j = q + pt_lowest_bit(b);
            while (j >= row_start + (uint32_t)n_in) {   /* edges come in order: walk the rows forward */
                row_start += (uint32_t)n_in;
                row++;
            }
            out[row] -= w[j] * x[j - row_start];
        }
    }
}

/* Dense int8 scores (PRIOT): the nonzero inputs, two rows per pass. */
static PT_NOINLINE void fc_mask_dense_s8(const int8_t *x, const int8_t *w, const int8_t *s, int32_t thr,
                                         int32_t *out, int32_t n_in, int32_t n_out) {
    int32_t ent[NZ_FC], from = 0, first = 1, o;
    while (first || from < n_in) {
        const int32_t m = list_nonzero(x, n_in, &from, ent);
        if (first) {
            for (o = 0; o < n_out; o++) {
                out[o] = 0;
            }
            first = 0;
        }
        for (o = 0; o + 2 <= n_out; o += 2) {
            dot2_list_masked(ent, ent + m, w + o * n_in, s + o * n_in, n_in, thr, out + o);
        }
        if (o < n_out) {
            dot1_list_masked(ent, ent + m, w + o * n_in, s + o * n_in, thr, out + o);
        }
    }
}

static void fc_mask_rows(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                         int32_t *out, int32_t n_in, int32_t n_out) {
    uint32_t j = 0, si = 0;
    if (sc == NULL) {
        fc_rows(x, w, out, n_in, n_out);
        return;
    }
    if (sc->subset == NULL && !sc->s16) {
        fc_mask_dense_s8(x, w, (const int8_t *)sc->data, thr, out, n_in, n_out);
        return;
    }
    if (sc->subset != NULL) {
        fc_rows(x, w, out, n_in, n_out);
        fc_unprune_subset(x, w, sc, thr, out, n_in, n_out);
        return;
    }
    for (; n_out > 0; n_out--) {
        const int8_t *xp = x;
        int32_t acc = 0;
        int32_t i;
        for (i = n_in; i > 0; i--, j++, w++, xp++) {
            if (pt_edge_scored(sc, j) && pt_score_get(sc, si++) < thr) {
                continue;   /* pruned */
            }
            acc += (int32_t)*w * *xp;
        }
        *out++ = acc;
    }
}

void pt_fc_mask_s8_s32(const int8_t *x, const int8_t *w, const pt_scores_t *sc, int32_t thr,
                       int32_t *out, int32_t n_in, int32_t n_out, int32_t c0, int32_t c1) {
    const int32_t j0 = c0 * n_in;
    pt_scores_t v;
    (void)n_out;
    fc_mask_rows(x, w + j0, pt_mask_view(&v, sc, (uint32_t)j0), thr, out + c0, n_in, c1 - c0);
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
        if (eo == 0) {
            /* nothing to add: just move past the row's edges and scores */
            si += pt_scores_in(sc, j, (uint32_t)n_in);
            j += (uint32_t)n_in;
            w += n_in;
            continue;
        }
        for (i = n_in; i > 0; i--, j++, w++, op++) {
            if (pt_edge_scored(sc, j) && pt_score_get(sc, si++) < thr) {
                continue;
            }
            *op += (int32_t)*w * eo;
        }
    }
}
