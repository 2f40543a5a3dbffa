/* update.c - NITI's weight update: pseudo-stochastic rounding, subtract, saturate.
 *
 * A weight gradient is mostly 0 (the outer product of sparse errors and
 * activations; often all of it when the error was 0), and a zero gradient
 * leaves the weight as it is unless it is -128 (clipped to -127 and counted).
 * So runs of zero gradients are skipped four at a time, their weights tested
 * a word at a time, and each nonzero gradient is rounded with shifts
 * computed once per call. shift <= 0 is the same loop with no bits dropped
 * (the gradient is used as it is). */
#include "picotrain_kernels.h"

/* |d| beyond this saturates whatever the int8 weight is: clamping keeps the
 * subtraction in int32 and the result exact. */
#define DELTA_CLAMP 1024

/* w = sat8(w - d); returns 1 when it saturated. */
PT_INLINE int32_t apply_delta(int8_t *w, int32_t d) {
    int32_t v;
    if (d > DELTA_CLAMP) {
        d = DELTA_CLAMP;
    } else if (d < -DELTA_CLAMP) {
        d = -DELTA_CLAMP;
    }
    v = *w - d;
    if (v > PT_Q_MAX) {
        *w = PT_Q_MAX;
        return 1;
    }
    if (v < -PT_Q_MAX) {
        *w = -PT_Q_MAX;
        return 1;
    }
    *w = (int8_t)v;
    return 0;
}

/* Length of the leading run of (w, g)[0:n], in whole groups of four, with
 * nothing to do: gradients 0 and no weight -128. 0 when w is not 4-aligned
 * (the word test needs it; update_items then does the work). */
#if PT_ASM_M0
/* Per group of four 23 cycles: the gradients by one ldm, the weights as a
 * word with no byte 0x80 (the SWAR zero-byte test on w ^ 0x80808080). */
static PT_NOINLINE int32_t idle_run(const int8_t *w, const int32_t *g, int32_t n) {
    register const int32_t *end_ __asm__("r8") = g + (n & ~3);
    register uint32_t k01_ __asm__("r9") = 0x01010101u;
    const int32_t *p = g;
    uint32_t k80 = 0x80808080u, a, b, c, d;
    if (!PT_ALIGNED4(w)) {
        return 0;
    }
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "cmp %[p], %[end]\n\t"
        "bcs 3f\n\t"
        "ldmia %[p]!, {%[a], %[b], %[c], %[d]}\n\t"
        "orrs %[a], %[b]\n\t"
        "orrs %[a], %[c]\n\t"
        "orrs %[a], %[d]\n\t"
        "bne 2f\n\t"
        "ldr %[a], [%[w]]\n\t"
        "eors %[a], %[k80]\n\t"
        "mov %[b], %[k01]\n\t"
        "subs %[b], %[a], %[b]\n\t"
        "bics %[b], %[a]\n\t"
        "tst %[b], %[k80]\n\t"
        "bne 2f\n\t"
        "adds %[w], #4\n\t"
        "b 1b\n"
        "2:\n\t"
        "subs %[p], #16\n"
        "3:\n"
        : [p] "+l"(p), [w] "+l"(w), [a] "=&l"(a), [b] "=&l"(b), [c] "=&l"(c), [d] "=&l"(d)
        : [k80] "l"(k80), [end] "r"(end_), [k01] "r"(k01_)
        : "cc", "memory");
    return (int32_t)(p - g);
}
#else
static int32_t idle_run(const int8_t *w, const int32_t *g, int32_t n) {
    const int32_t *p = g, *const end = g + (n & ~3);
    if (!PT_ALIGNED4(w)) {
        return 0;
    }
    for (; p < end; p += 4, w += 4) {
        const uint32_t v = *(const pt_u32a *)w ^ 0x80808080u;
        if ((p[0] | p[1] | p[2] | p[3]) != 0 || ((v - 0x01010101u) & ~v & 0x80808080u) != 0) {
            break;
        }
    }
    return (int32_t)(p - g);
}
#endif

/* Length of the leading run of g[0:n] made of whole groups of four that each
 * hold a nonzero. */
static int32_t busy_run(const int32_t *g, int32_t n) {
    const int32_t *p = g, *const end = g + (n & ~3);
    while (p < end && (p[0] | p[1] | p[2] | p[3]) != 0) {
        p += 4;
    }
    return (int32_t)(p - g);
}

/* The shifts of the rounding below for one s, 0 <= s <= 31, written so that
 * no shift count reaches 32 in C: the shifts by 32 - s and 32 - h - o are
 * done as lo = 31 - s, up = 31 - s + h, then one more. */
typedef struct {
    uint32_t s, lo, ph, up;
} pt_pseudo_t;

PT_INLINE pt_pseudo_t pseudo_shifts(uint32_t s) {
    const uint32_t h = s >> 1;
    const pt_pseudo_t r = {s, 31 - s, s - h, 31 - s + h};
    return r;
}

/* |g| >> s, plus 1 when the upper dropped bits exceed the lower (m = |g|). */
PT_INLINE uint32_t round_pseudo(uint32_t m, const pt_pseudo_t *r) {
    const uint32_t rem = (m << r->lo) << 1;
    return (m >> r->s) + (((rem >> r->up) >> 1) > (((rem << r->ph) >> r->up) >> 1));
}

/* The update of w[0:n] item by item, 0 <= s <= 31: the rounding of
 * kernels_py.rshift_pseudo, q = |g| >> s plus 1 when the upper s - s/2
 * dropped bits (the probability P) exceed the lower h = s/2 (the random
 * number R, doubled when s is odd: o = s & 1). Both come from shifts that
 * drop the bits above them: with rem = |g| << (32 - s) (the dropped bits on
 * top), P = rem >> (32 - h - o) and 2^o R = (rem << (h + o)) >> (32 - h - o).
 * s = 0 drops nothing: q = |g|. */
#if PT_ASM_M0
/* The rounding in Thumb-1, shared by the loops below: g in m on entry, the
 * rounded |g| in m and g's sign (0 or -1) in sg on exit; t1..t3 scratch, the
 * shift counts lo = 32 - s, s, ph = s - h, up = 32 - s + h in registers (a
 * register shift by 32 gives 0, which s = 0 and h = 0 rely on). 17 cycles. */
#define PSEUDO_ROUND_ASM \
    "asrs %[sg], %[m], #31\n\t" \
    "eors %[m], %[sg]\n\t" \
    "subs %[m], %[sg]\n\t"          /* |g| */ \
    "mov %[t3], %[lo]\n\t" \
    "movs %[t2], %[m]\n\t" \
    "lsls %[t2], %[t3]\n\t"         /* rem: the dropped bits on top */ \
    "mov %[t3], %[s]\n\t" \
    "lsrs %[m], %[t3]\n\t"          /* q = |g| >> s */ \
    "mov %[t3], %[ph]\n\t" \
    "movs %[t1], %[t2]\n\t" \
    "lsls %[t2], %[t3]\n\t" \
    "mov %[t3], %[up]\n\t" \
    "lsrs %[t1], %[t3]\n\t"         /* P */ \
    "lsrs %[t2], %[t3]\n\t"         /* 2^o R */ \
    "cmp %[t2], %[t1]\n\t" \
    "bcs 2f\n\t" \
    "adds %[m], #1\n"               /* P > 2^o R: round up */ \
    "2:\n\t"

/* v = w - step beyond +-127 in t1, v + 127 in t2: t1 = +-127 by v's sign, then
 * label 8 (the loops' saturated path) */
#define SAT_V_ASM \
    "movs %[t1], #127\n\t" \
    "cmp %[t2], #0\n\t" \
    "bgt 8f\n\t" \
    "negs %[t1], %[t1]\n" \
    "8:\n\t"

/* sat++ (a saturated weight: rare, so it lives on the stack) */
#define COUNT_SAT_ASM \
    "ldr %[t2], %[sat]\n\t" \
    "adds %[t2], #1\n\t" \
    "str %[t2], %[sat]\n\t"

/* Per nonzero gradient 37 cycles, per zero one 14 (GCC's loop: ~70; too
 * few low registers for its constants). */
static PT_NOINLINE int32_t update_items(int8_t *w, const int32_t *g, int32_t n, uint32_t s) {
    register uint32_t s_ __asm__("r8") = s;
    register uint32_t lo_ __asm__("r9") = 32 - s;
    register uint32_t ph_ __asm__("r10") = s - (s >> 1);
    register uint32_t up_ __asm__("r11") = 32 - s + (s >> 1);
    register const int32_t *end_ __asm__("r12") = g + n;
    int32_t sat = 0;
    uint32_t m, sg, t1, t2, t3;
    __asm__ volatile(
        ".syntax unified\n\t"
        "cmp %[g], %[end]\n\t"
        "beq 9f\n"
        "1:\n\t"
        "ldmia %[g]!, {%[m]}\n\t"
        "cmp %[m], #0\n\t"
        "beq 5f\n\t"
        PSEUDO_ROUND_ASM
        "cmp %[m], #255\n\t"
        "bhi 6f\n\t"
        "eors %[m], %[sg]\n\t"
        "subs %[m], %[sg]\n\t"          /* the signed step */
        "ldrb %[t1], [%[w]]\n\t"
        "sxtb %[t1], %[t1]\n\t"
        "subs %[t1], %[m]\n\t"          /* v = w - step */
        "movs %[t2], %[t1]\n\t"
        "adds %[t2], #127\n\t"
        "cmp %[t2], #254\n\t"
        "bhi 7f\n\t"
        "strb %[t1], [%[w]]\n"
        "4:\n\t"
        "adds %[w], #1\n\t"
        "cmp %[g], %[end]\n\t"
        "bne 1b\n\t"
        "b 9f\n"
        "5:\n\t"                        /* zero gradient: only -128 changes */
        "ldrb %[t1], [%[w]]\n\t"
        "cmp %[t1], #128\n\t"
        "bne 4b\n\t"
        "movs %[t1], #129\n\t"
        "b 8f\n"
        "6:\n\t"                        /* |step| > 255: saturates, away from the gradient's sign */
        "movs %[t1], #127\n\t"
        "cmp %[sg], #0\n\t"
        "bne 8f\n\t"
        "negs %[t1], %[t1]\n\t"
        "b 8f\n"
        "7:\n\t"                        /* v beyond +-127 */
        SAT_V_ASM                       /* store a saturated weight, count it */
        "strb %[t1], [%[w]]\n\t"
        COUNT_SAT_ASM
        "b 4b\n"
        "9:\n"
        : [w] "+l"(w), [g] "+l"(g), [m] "=&l"(m), [sg] "=&l"(sg), [t1] "=&l"(t1), [t2] "=&l"(t2),
          [t3] "=&l"(t3), [sat] "+m"(sat)
        : [up] "r"(up_), [s] "r"(s_), [lo] "r"(lo_), [ph] "r"(ph_), [end] "r"(end_)
        : "cc", "memory");
    return sat;
}
#else
static int32_t update_items(int8_t *w, const int32_t *g, int32_t n, uint32_t s) {
    const pt_pseudo_t r = pseudo_shifts(s);
    const int32_t *end = g + n;
    int32_t sat = 0;
    for (; g < end; w++, g++) {
        const int32_t gt = *g;
        uint32_t q;
        if (gt == 0) {
            if (*w == -128) {
                *w = -PT_Q_MAX;
                sat++;
            }
            continue;
        }
        q = round_pseudo(pt_abs_u32(gt), &r);
        if (q > 2 * PT_Q_MAX + 1) {
            q = 2 * PT_Q_MAX + 2;   /* > 255: saturates whatever the weight is (-128 too) */
        }
        sat += apply_delta(w, gt < 0 ? -(int32_t)q : (int32_t)q);
    }
    return sat;
}
#endif

/* Idle runs are skipped; the rest goes to update_items in runs of groups
 * that each hold a nonzero gradient (or one group, or the last items). */
static int32_t update_runs(int8_t *w, const int32_t *g, int32_t n, uint32_t s) {
    int32_t sat = 0;
    while (n > 0) {
        int32_t r = idle_run(w, g, n);
        w += r;
        g += r;
        n -= r;
        r = busy_run(g, n);
        if (r == 0) {
            r = n < 4 ? n : 4;
        }
        sat += update_items(w, g, r, s);
        w += r;
        g += r;
        n -= r;
    }
    return sat;
}

int32_t pt_update_s8(int8_t *w, const int32_t *g, int32_t n, int32_t shift, int32_t c0, int32_t c1) {
    int32_t sat = 0;
    (void)n;
    w += c0;   /* items [c0, c1): the same step on each */
    g += c0;
    n = c1 - c0;
    if (shift <= 31) {
        return update_runs(w, g, n, shift > 0 ? (uint32_t)shift : 0u);
    }
    for (; n > 0; n--) {
        sat += apply_delta(w++, pt_rshift_pseudo_s32(*g++, shift));
    }
    return sat;
}

/* -------------------------------------------- a linear layer at batch 1 --
 *
 * A linear layer's gradient from one sample is the outer product g[o][i] =
 * e[o] x[i], whose largest magnitude is max|e| max|x|: NITI's shift is known
 * before any item is, and the update needs no gradient buffer. It visits only
 * the pairs with e[o] != 0 and x[i] != 0, the nonzero inputs listed once per
 * chunk for all rows; every other weight has g = 0, where only -128 changes
 * (to -127), which one scan of the rows does at the end (an updated weight is
 * never -128). With 0 <= mu <= 7 a step is at most 2^mu <= 128: no clamp. */

#define NZ_UPD 64   /* listed nonzero inputs per chunk: 260 bytes of stack */

static int32_t maxabs_s8(const int8_t *v, int32_t n) {
    int32_t m = 0, i;
    for (i = 0; i < n; i++) {
        const int32_t a = v[i] < 0 ? -v[i] : v[i];
        if (a > m) {
            m = a;
        }
    }
    return m;
}

/* w[0:n]: every -128 becomes -127 (a zero step); returns how many. */
static int32_t clip_min_s8(int8_t *p, int32_t n) {
    int8_t *const end = p + n;
    int32_t sat = 0;
    while ((p = (int8_t *)pt_first_below_s8(p, end, -PT_Q_MAX)) != end) {
        *p++ = -PT_Q_MAX;
        sat++;
    }
    return sat;
}

/* The steps of one row w[0:n_in] with error eo != 0 over the listed inputs
 * (entries (i << 8) | (uint8)x[i], ended by an entry with x = 0); s as in
 * update_items. Returns how many weights saturated. */
#if PT_ASM_M0
/* Per pair about 40 cycles: the entry 6, g 2, the rounding 17, the signed
 * step 2, the weight and its range 7, store and loop 4. */
static PT_NOINLINE int32_t update_list(int8_t *w, const int32_t *lp, int32_t eo, uint32_t s) {
    register uint32_t s_ __asm__("r8") = s;
    register uint32_t lo_ __asm__("r9") = 32 - s;
    register uint32_t ph_ __asm__("r10") = s - (s >> 1);
    register uint32_t up_ __asm__("r11") = 32 - s + (s >> 1);
    register int32_t eo_ __asm__("r12") = eo;
    int32_t sat = 0;
    uint32_t i, m, sg, t1, t2, t3;
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "ldmia %[lp]!, {%[i]}\n\t"
        "lsls %[m], %[i], #24\n\t"
        "beq 9f\n\t"                    /* x = 0: the end of the list */
        "asrs %[m], %[m], #24\n\t"      /* x */
        "asrs %[i], %[i], #8\n\t"       /* its index */
        "mov %[t3], %[eo]\n\t"
        "muls %[m], %[t3]\n\t"          /* g = e x */
        PSEUDO_ROUND_ASM
        "eors %[m], %[sg]\n\t"
        "subs %[m], %[sg]\n\t"          /* the signed step */
        "ldrsb %[t1], [%[w], %[i]]\n\t"
        "subs %[t1], %[m]\n\t"          /* v = w - step */
        "movs %[t2], %[t1]\n\t"
        "adds %[t2], #127\n\t"
        "cmp %[t2], #254\n\t"
        "bhi 7f\n"
        "3:\n\t"
        "strb %[t1], [%[w], %[i]]\n\t"
        "b 1b\n"
        "7:\n\t"                        /* v beyond +-127: saturate, count */
        SAT_V_ASM
        COUNT_SAT_ASM
        "b 3b\n"
        "9:\n"
        : [lp] "+l"(lp), [i] "=&l"(i), [m] "=&l"(m), [sg] "=&l"(sg), [t1] "=&l"(t1), [t2] "=&l"(t2),
          [t3] "=&l"(t3), [sat] "+m"(sat)
        : [w] "l"(w), [s] "r"(s_), [lo] "r"(lo_), [ph] "r"(ph_), [up] "r"(up_), [eo] "r"(eo_)
        : "cc", "memory");
    return sat;
}
#else
static int32_t update_list(int8_t *w, const int32_t *lp, int32_t eo, uint32_t s) {
    const pt_pseudo_t r = pseudo_shifts(s);
    int32_t sat = 0;
    for (; (uint8_t)*lp != 0; lp++) {
        const int32_t g = eo * (int32_t)(int8_t)(uint8_t)*lp;
        const int32_t q = (int32_t)round_pseudo(pt_abs_u32(g), &r);
        sat += apply_delta(w + ((uint32_t)*lp >> 8), g < 0 ? -q : q);
    }
    return sat;
}
#endif

int32_t pt_update_outer_s8(const int8_t *e, const int8_t *x, int8_t *w, int32_t n_out, int32_t n_in,
                           int32_t mu, int32_t c0, int32_t c1) {
    int32_t ent[NZ_UPD + 1], from = 0, sat = 0, o;
    const int32_t b = pt_bitlen_u32((uint32_t)(maxabs_s8(e, n_out) * maxabs_s8(x, n_in)));
    const uint32_t s = b > mu ? (uint32_t)(b - mu) : 0u;
    while (from < n_in) {
        const int32_t m = pt_list_nonzero_s8(x, n_in, &from, ent, NZ_UPD);
        ent[m] = 0;   /* the end: x = 0 is never listed */
        for (o = c0; o < c1 && m > 0; o++) {
            if (e[o] != 0) {
                sat += update_list(w + (size_t)o * (size_t)n_in, ent, e[o], s);
            }
        }
    }
    return sat + clip_min_s8(w + (size_t)c0 * (size_t)n_in, (c1 - c0) * n_in);
}
