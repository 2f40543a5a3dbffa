/* rescale.c - binary-decomposition rescaling (Tin-Tin):
 * out = sat8(round(acc * mul / 2^shift)), the product P = |acc| * mul built
 * exactly from one shifted add per set bit of mul: no multiply, and 32-bit
 * arithmetic only (on armv6m a 64-bit shift by a variable amount would be a
 * libgcc call). P < 2^31 * 2^16 = 2^47. */
#include "picotrain_kernels.h"

#define STEPS_END 16u   /* ends the list of steps (a real step is at most 15) */

int32_t pt_rescale_s32_s8(const int32_t *acc, int8_t *out, int32_t n, uint32_t mul, int32_t shift) {
    /* the set bits b0 < b1 < ... of mul as steps b0, b1 - b0, ...: the term
     * m << b_i is the previous term shifted by one step */
    uint8_t steps[17];
    const uint8_t *st;
    uint32_t b, last = 0, nt = 0, m_fit, fs, half, ha, sa;
    int32_t sat = 0, j;
    for (b = 0; b < 16u; b++) {
        if ((mul >> b) & 1u) {
            steps[nt++] = (uint8_t)(b - last);
            last = b;
        }
    }
    steps[nt] = STEPS_END;
    /* Three ways, by m = |acc[j]|:
     * 1. m < m_fit = 2^(31 - bitlen(mul)), shift <= 31: P < 2^31, and so is
     *    every partial sum: round(P / 2^shift) = (P + 2^(shift-1)) >> shift in
     *    32 bits. (mul = 0: every m, P = 0; fs keeps the shift defined.)
     * 2. else P >= 2^(31 - bitlen(mul)) * 2^(bitlen(mul) - 1) = 2^30, which
     *    saturates when shift <= 23 (the result is >= 2^30 / 2^23 = 128).
     * 3. else (shift >= 24): P = A * 2^16 + L, L < 2^16, from two 32-bit
     *    sums (m = mh * 2^16 + ml: the shifted adds of mh <= 2^15 stay below
     *    2^31, those of ml < 2^16 below 2^32). L cannot reach the rounding
     *    bit 2^(shift-1), so round(P / 2^shift) = (A + 2^(shift-17)) >>
     *    (shift - 16); for shift >= 48 that is 0 (P < 2^47), which ha = 0,
     *    sa = 31 give too (A < 2^31). */
    if (mul == 0) {
        m_fit = 0xFFFFFFFFu;
    } else {
        m_fit = shift <= 31 ? 1u << (31 - pt_bitlen_u32(mul)) : 0u;
    }
    fs = shift <= 31 ? (uint32_t)shift : 31u;
    half = shift >= 1 && shift <= 31 ? 1u << (shift - 1) : 0u;
    sa = shift >= 48 ? 31u : (uint32_t)(shift - 16) & 31u;
    ha = shift >= 17 && shift < 48 ? 1u << (shift - 17) : 0u;
    for (j = 0; j < n; j++) {
        int32_t v = acc[j];
        uint32_t sg = (uint32_t)(v >> 31), m = ((uint32_t)v ^ sg) - sg, q;   /* |v| */
        if (m < m_fit) {
            uint32_t p = half;
            for (st = steps; (b = *st) != STEPS_END; st++) {
                m <<= b;
                p += m;
            }
            q = p >> fs;
        } else if (shift <= 23) {
            q = PT_Q_MAX + 1;
        } else {
            uint32_t x = m & 0xFFFFu, l = 0, a = ha;
            for (st = steps; (b = *st) != STEPS_END; st++) {
                x <<= b;
                l += x;
            }
            x = m >> 16;
            for (st = steps; (b = *st) != STEPS_END; st++) {
                x <<= b;
                a += x;
            }
            q = (a + (l >> 16)) >> sa;
        }
        if (q > PT_Q_MAX) {
            q = PT_Q_MAX;
            sat++;
        }
        out[j] = (int8_t)(int32_t)((q ^ sg) - sg);   /* the sign back */
    }
    return sat;
}
