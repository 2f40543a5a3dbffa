/* requant.c - scalar helpers, range estimate, requantisation, int32 accumulators. */
#include "picotrain_kernels.h"

uint32_t pt_udiv_u32(uint32_t a, uint32_t b) {
    uint32_t q = 0, r = 0;
    int i;
    if (b > 0x80000000u) {
        return a >= b ? 1u : 0u;   /* r << 1 below would lose a bit */
    }
    for (i = 31; i >= 0; i--) {
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

int32_t pt_bitlen_s32(const int32_t *acc, int32_t n) {
    uint32_t m = 0;
    for (; n > 0; n--) {
        uint32_t v = pt_abs_u32(*acc++);
        if (v > m) {
            m = v;
        }
    }
    return pt_bitlen_u32(m);
}

int32_t pt_requant_s32_s8(const int32_t *acc, int8_t *out, int32_t n, int32_t shift) {
    int32_t sat = 0;
    if (shift >= 1 && shift <= 31) {
        /* the hot path: magnitude, add half, shift, saturate, sign back */
        uint32_t half = 1u << (shift - 1);
        for (; n > 0; n--) {
            int32_t a = *acc++;
            uint32_t q = (pt_abs_u32(a) + half) >> shift;
            if (q > PT_Q_MAX) {
                q = PT_Q_MAX;
                sat++;
            }
            *out++ = (int8_t)(a < 0 ? -(int32_t)q : (int32_t)q);
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
