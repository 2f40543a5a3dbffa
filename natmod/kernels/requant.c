/* requant.c - scalar helpers, range estimate, requantisation, int32 accumulators. */
#include "picotrain_kernels.h"

uint32_t pt_udiv_u32(uint32_t a, uint32_t b) {
    uint32_t q = 0, r = 0;
    int i;
    if (b > 0x80000000u) {
        return a >= b ? 1u : 0u;   /* r << 1 below would lose a bit */
    }
    if ((b & (b - 1u)) == 0) {
        return a >> (pt_bitlen_u32(b) - 1);   /* a power of two (1, 2: strides, pools) */
    }
    if (a < b) {
        return 0;
    }
    for (i = pt_bitlen_u32(a) - 1; i >= 0; i--) {   /* from a's top bit: the rest are 0 */
        r = (r << 1) | ((a >> i) & 1u);
        if (r >= b) {
            r -= b;
            q |= 1u << i;
        }
    }
    return q;
}

int32_t pt_bitlen_u32(uint32_t x) {
    int32_t n = 0;
    while (x >= 256u) {
        x >>= 8;
        n += 8;
    }
    while (x) {
        x >>= 1;
        n++;
    }
    return n;
}

/* The bit length of max |acc| is that of the OR of every |acc|: the OR of
 * the magnitudes, four at a time, a group of four zeros (int32 gradients are
 * mostly 0) skipped after one test. */
#if PT_ASM_M0
/* 13 cycles per group of zeros (ldm, three orrs, the branch), 30 otherwise;
 * GCC's loop took about 25 and 32. The ldm fills r4-r7 in that order. */
static PT_NOINLINE uint32_t or_abs4(const int32_t *acc, int32_t n4) {
    register const int32_t *end __asm__("r8") = acc + n4;
    register int32_t a __asm__("r4");
    register int32_t b __asm__("r5");
    register int32_t c __asm__("r6");
    register int32_t d __asm__("r7");
    uint32_t m = 0, t;
#define OA_ABS(x) "asrs %[t], %[" #x "], #31\n\t" "eors %[" #x "], %[t]\n\t" \
                  "subs %[" #x "], %[" #x "], %[t]\n\t" "orrs %[m], %[" #x "]\n\t"
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "cmp %[acc], %[end]\n\t"
        "bcs 9f\n\t"
        "ldmia %[acc]!, {%[a], %[b], %[c], %[d]}\n\t"
        "movs %[t], %[a]\n\t"
        "orrs %[t], %[b]\n\t"
        "orrs %[t], %[c]\n\t"
        "orrs %[t], %[d]\n\t"
        "beq 1b\n\t"
        OA_ABS(a) OA_ABS(b) OA_ABS(c) OA_ABS(d)
        "b 1b\n"
        "9:\n"
        : [acc] "+l"(acc), [m] "+l"(m), [t] "=&l"(t), [a] "=&l"(a), [b] "=&l"(b), [c] "=&l"(c),
          [d] "=&l"(d)
        : [end] "r"(end)
        : "cc", "memory");
#undef OA_ABS
    return m;
}
#else
static uint32_t or_abs4(const int32_t *acc, int32_t n4) {
    uint32_t m = 0;
    for (; n4 > 0; n4 -= 4, acc += 4) {
        const int32_t a = acc[0], b = acc[1], c = acc[2], d = acc[3];
        if ((a | b | c | d) != 0) {
            m |= pt_abs_u32(a) | pt_abs_u32(b) | pt_abs_u32(c) | pt_abs_u32(d);
        }
    }
    return m;
}
#endif

int32_t pt_bitlen_s32(const int32_t *acc, int32_t n) {
    const int32_t n4 = n & ~3;
    uint32_t m = or_abs4(acc, n4);
    for (acc += n4, n -= n4; n > 0; n--) {
        m |= pt_abs_u32(*acc++);
    }
    return pt_bitlen_u32(m);
}

/* One requantised value: magnitude, add half, shift, saturate, sign back. */
#define RQ(a, q, half, shift, sat)                  \
    do {                                            \
        uint32_t sg_ = (uint32_t)((a) >> 31);       \
        q = ((((uint32_t)(a) ^ sg_) - sg_) + half) >> shift; \
        if (q > PT_Q_MAX) {                         \
            q = PT_Q_MAX;                           \
            sat++;                                  \
        }                                           \
        q = (q ^ sg_) - sg_;                        \
    } while (0)

#if PT_ASM_M0
/* Requantize the first 3 floor(n / 3) of n >= 3 values, 1 <= shift <= 24;
 * returns how many, adds the saturated ones to *sat. Three values per
 * iteration, 9 cycles each and 8 an iteration (ldm, pointer, loop; RQ's
 * magnitude and sign round trip took 12 a value and 9 an iteration of four):
 * q = (a + half + (a >> 31)) >> shift rounds half away from zero as RQ does
 * (for a < 0, -((|a| + half) >> shift) = (a + half - 1) >> shift); then
 * q + 127 <= 254 as unsigned, or out of line to saturate. An a + half that
 * wraps past INT32_MAX gives q <= -128 when shift <= 24, so it saturates too:
 * the out-of-line path takes the sign from a, loaded again. Registers: every
 * low one is taken (an LDM fills r3-r5 in that order). */
static PT_NOINLINE int32_t requant3(const int32_t *acc_, int8_t *out_, int32_t n, int32_t shift, int32_t *sat) {
    register const int32_t *acc __asm__("r0") = acc_;
    register int8_t *out __asm__("r1") = out_;
    register int32_t sg __asm__("r2");
    register int32_t a0 __asm__("r3");
    register int32_t a1 __asm__("r4");
    register int32_t a2 __asm__("r5");
    register int32_t sh __asm__("r6") = shift;
    register int32_t k127 __asm__("r7") = PT_Q_MAX;
    register const int32_t *end __asm__("r8") = acc_ + n - 2;   /* at least 3 left while acc < end */
    register uint32_t hf __asm__("r9") = 1u << (shift - 1);
    register int32_t ns __asm__("r10") = 0;
    register int32_t one __asm__("r11") = 1;
#define RQ3(a, i)                                                          \
    "asrs %[sg], %[" #a "], #31\n\t"                                      \
    "add %[" #a "], %[hf]\n\t"                                            \
    "adds %[" #a "], %[" #a "], %[sg]\n\t"                                \
    "asrs %[" #a "], %[sh]\n\t"                                           \
    "adds %[sg], %[" #a "], %[k]\n\t"                                     \
    "cmp %[sg], #254\n\t"                                                 \
    "bhi 8" #i "f\n"                                                      \
    "7" #i ":\n\t"                                                        \
    "strb %[" #a "], [%[out], #" #i "]\n\t"
/* value i was loaded from acc - 12 + 4 i: +-127 by its sign */
#define RQ3_SAT(a, i, back)                                                \
    "8" #i ":\n\t"                                                        \
    "mov %[sg], %[acc]\n\t"                                               \
    "subs %[sg], #" #back "\n\t"                                          \
    "ldr %[sg], [%[sg]]\n\t"                                              \
    "asrs %[sg], %[sg], #31\n\t"                                          \
    "movs %[" #a "], #127\n\t"                                            \
    "eors %[" #a "], %[sg]\n\t"                                           \
    "subs %[" #a "], %[" #a "], %[sg]\n\t"                                \
    "add %[ns], %[one]\n\t"                                               \
    "b 7" #i "b\n"
    __asm__ volatile(
        ".syntax unified\n"
        "1:\n\t"
        "ldmia %[acc]!, {%[a0], %[a1], %[a2]}\n\t"
        RQ3(a0, 0) RQ3(a1, 1) RQ3(a2, 2)
        "adds %[out], #3\n\t"
        "cmp %[acc], %[end]\n\t"
        "bcc 1b\n\t"
        "b 9f\n"
        RQ3_SAT(a0, 0, 12) RQ3_SAT(a1, 1, 8) RQ3_SAT(a2, 2, 4)
        "9:\n"
        : [acc] "+l"(acc), [out] "+l"(out), [sg] "=&l"(sg), [a0] "=&l"(a0), [a1] "=&l"(a1), [a2] "=&l"(a2),
          [ns] "+r"(ns)
        : [end] "r"(end), [hf] "r"(hf), [sh] "l"(sh), [k] "l"(k127), [one] "r"(one)
        : "cc", "memory");
#undef RQ3
#undef RQ3_SAT
    *sat += ns;
    return (int32_t)(acc - acc_);
}
#endif

int32_t pt_requant_s32_s8(const int32_t *acc, int8_t *out, int32_t n, int32_t shift) {
    int32_t sat = 0;
    if (shift >= 1 && shift <= 31) {
        /* the hot path (the armv6m build: requant3 for shifts up to 24): |a| as
         * uint32 (exact for INT32_MIN), add half, shift */
        const uint32_t half = 1u << (shift - 1);
        uint32_t q0;
#if PT_ASM_M0
        if (n >= 3 && shift <= 24) {
            const int32_t done = requant3(acc, out, n, shift, &sat);
            acc += done;
            out += done;
            n -= done;
        }
#else
        while (n > 0 && !PT_ALIGNED4(out)) {
            RQ(*acc, q0, half, shift, sat);
            *out++ = (int8_t)q0;
            acc++;
            n--;
        }
        for (; n >= 4; n -= 4, acc += 4, out += 4) {
            uint32_t q1, q2, q3;
            RQ(acc[0], q0, half, shift, sat);
            RQ(acc[1], q1, half, shift, sat);
            RQ(acc[2], q2, half, shift, sat);
            RQ(acc[3], q3, half, shift, sat);
            *(pt_u32a *)out = (q0 & 0xFFu) | ((q1 & 0xFFu) << 8) | ((q2 & 0xFFu) << 16) | (q3 << 24);
        }
#endif
        for (; n > 0; n--) {
            RQ(*acc, q0, half, shift, sat);
            *out++ = (int8_t)q0;
            acc++;
        }
        return sat;
    }
    for (; n > 0; n--) {
        int32_t v = pt_rshift_round_s32(*acc++, shift);
        if (v > PT_Q_MAX || v < -PT_Q_MAX) {
            sat++;
        }
        *out++ = pt_sat_s8(v);
    }
    return sat;
}

void pt_bias_add_s32(int32_t *acc, const int32_t *bias, int32_t c, int32_t plane, int32_t d) {
    for (; c > 0; c--) {
        int32_t bv = *bias++;
        int64_t b;
        int32_t j;
        if (d >= 0) {
            uint32_t m = pt_abs_u32(bv);
            uint64_t bm;
            if (d == 0 || m == 0) {
                bm = m;
            } else if (d >= 32 || (m >> (32 - d)) != 0) {
                /* |b| >= 2^32: acc + b saturates whatever acc is */
                bm = (uint64_t)1 << 32;
            } else {
                bm = m << d;
            }
            b = bv < 0 ? -(int64_t)bm : (int64_t)bm;
        } else {
            b = pt_rshift_round_s32(bv, d < -64 ? 64 : -d);
        }
        for (j = plane; j > 0; j--) {
            *acc = pt_sat_s32((int64_t)*acc + b);
            acc++;
        }
    }
}

void pt_acc_add_s32(int32_t *acc, const int32_t *g, int32_t n, int32_t sa, int32_t sg) {
    for (; n > 0; n--) {
        *acc = pt_sat_s32((int64_t)pt_rshift_round_s32(*acc, sa) + pt_rshift_round_s32(*g++, sg));
        acc++;
    }
}
