/* topk.c - the k entries of largest magnitude, selected without scratch memory
 * (partial-update FQT): a bitwise search for the k-th largest magnitude, one
 * counting pass per bit, then one pass that emits the indices in order. */
#include "picotrain_kernels.h"

/* NOINLINE keeps the counting pass a function of its own, all in registers
 * (folded into the search loop, GCC spills its counters on an M0+). */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* #{j < n : |g[j]| >= t}. For 1 <= t <= 2^31, |v| < t exactly when v + t - 1
 * (mod 2^32) is at most 2t - 2: the magnitude test costs one add and one
 * compare, no abs. */
static NOINLINE int32_t count_ge(const int32_t *g, int32_t n, uint32_t t) {
    uint32_t lo = t - 1u, span = 2u * t - 1u;
    int32_t c = 0;
    if (t == 0) {
        return n;
    }
    if (t > 0x80000000u) {
        return 0;
    }
    for (; n >= 4; n -= 4, g += 4) {   /* unrolled: the loop costs as much as a test */
        c += (uint32_t)g[0] + lo >= span;
        c += (uint32_t)g[1] + lo >= span;
        c += (uint32_t)g[2] + lo >= span;
        c += (uint32_t)g[3] + lo >= span;
    }
    for (; n > 0; n--) {
        c += (uint32_t)*g++ + lo >= span;
    }
    return c;
}

uint32_t pt_topk_abs_s32(const int32_t *g, int32_t n, int32_t k, int32_t *idx) {
    uint32_t mx = 0, t = 0, bit, m;
    int32_t gt = 0, need, j, o = 0;
    if (k <= 0) {
        return 0;
    }
    for (j = 0; j < n; j++) {
        m = pt_abs_u32(g[j]);
        if (m > mx) {
            mx = m;
        }
    }
    /* t = the largest value with #{|g| >= t} >= k, i.e. the k-th largest
     * magnitude, decided bit by bit from the top bit of mx (t = 0 always
     * qualifies). gt = #{|g| > t}: the count of the last candidate that
     * failed, which is t + 1 (every later bit succeeded); 0 when none failed
     * below the top bit (then t = mx). */
    if (k == 1) {
        t = mx;
    } else if (mx != 0) {
        for (bit = 1u << (pt_bitlen_u32(mx) - 1); bit != 0; bit >>= 1) {
            int32_t c = count_ge(g, n, t | bit);
            if (c >= k) {
                t |= bit;
                if (c == k) {
                    /* {|g| >= t} has exactly k entries: emit them; the
                     * smallest of their magnitudes is the k-th largest */
                    uint32_t lo = t;
                    t = mx;
                    for (j = 0; j < n; j++) {
                        m = pt_abs_u32(g[j]);
                        if (m >= lo) {
                            idx[o++] = j;
                            if (m < t) {
                                t = m;
                            }
                        }
                    }
                    return t;
                }
            } else {
                gt = c;
            }
        }
    }
    /* every entry above t, and the first k - gt equal to t */
    need = k - gt;
    for (j = 0; j < n && o < k; j++) {
        m = pt_abs_u32(g[j]);
        if (m > t) {
            idx[o++] = j;
        } else if (m == t && need > 0) {
            need--;
            idx[o++] = j;
        }
    }
    return t;
}
