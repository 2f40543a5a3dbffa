/* pool.c - ReLU and k x k max pooling (stride k), forward and backward.
 *
 * The element-wise loops work on four int8 at a time where the buffer is
 * 4-aligned (SWAR: one 32-bit word holds four lanes; masks keep the lanes
 * apart), and byte by byte at the ends. 2 x 2 pooling, the common case, has
 * its own loop. */
#include "picotrain_kernels.h"

#define LANE_LOW 0x01010101u
#define LANE_HIGH 0x80808080u

/* 0xFF in every byte lane of v whose sign bit is set, 0x00 elsewhere. */
PT_INLINE uint32_t lanes_negative(uint32_t v) {
    uint32_t m = (v >> 7) & LANE_LOW;
    return (m << 8) - m;   /* m * 0xFF without carries between lanes */
}

/* 0xFF in every byte lane of v that is <= 0 (zero or negative), 0x00 elsewhere. */
PT_INLINE uint32_t lanes_nonpositive(uint32_t v) {
    /* a lane is zero iff adding 0x7F to its low 7 bits does not carry into
     * bit 7 and its bit 7 is clear (exact per lane: no carry leaves a lane) */
    uint32_t nz = ((v & ~LANE_HIGH) + ~LANE_HIGH) | v;   /* bit 7 set: lane nonzero */
    uint32_t m = ((~nz | v) >> 7) & LANE_LOW;           /* zero or negative */
    return (m << 8) - m;
}

void pt_relu_s8(int8_t *x, int32_t n) {
    int8_t *end = x + n;
    while (x < end && !PT_ALIGNED4(x)) {
        if (*x < 0) {
            *x = 0;
        }
        x++;
    }
    for (; x + 4 <= end; x += 4) {
        uint32_t v = *(pt_u32a *)x;
        if (v & LANE_HIGH) {
            *(pt_u32a *)x = v & ~lanes_negative(v);
        }
    }
    for (; x < end; x++) {
        if (*x < 0) {
            *x = 0;
        }
    }
}

void pt_relu_bwd_s8(const int8_t *y, int8_t *e, int32_t n) {
    const int8_t *end = y + n;
    if (((uintptr_t)y & 3u) == ((uintptr_t)e & 3u)) {
        while (y < end && !PT_ALIGNED4(y)) {
            if (*y++ <= 0) {
                *e = 0;
            }
            e++;
        }
        for (; y + 4 <= end; y += 4, e += 4) {
            /* after max pooling most error words are 0: nothing to clear */
            const uint32_t v = *(pt_u32a *)e;
            if (v) {
                *(pt_u32a *)e = v & ~lanes_nonpositive(*(const pt_u32a *)y);
            }
        }
    }
    for (; y < end; e++) {
        if (*y++ <= 0) {
            *e = 0;
        }
    }
}

/* 2 x 2 pooling of one pair of input rows r0, r1 (w wide) into ow outputs. */
static void pool2_row(const int8_t *r0, const int8_t *r1, int8_t *out, uint8_t *idx, int32_t ow) {
    int32_t ox;
    for (ox = 0; ox < ow; ox++, r0 += 2, r1 += 2) {
        int32_t best = r0[0], bi = 0, v;
        v = r0[1];
        if (v > best) {
            best = v;
            bi = 1;
        }
        v = r1[0];
        if (v > best) {
            best = v;
            bi = 2;
        }
        v = r1[1];
        if (v > best) {
            best = v;
            bi = 3;
        }
        out[ox] = (int8_t)best;
        if (idx != NULL) {
            idx[ox] = (uint8_t)bi;
        }
    }
}

static void maxpool(const int8_t *x, int8_t *out, uint8_t *idx, int32_t c, int32_t h, int32_t w,
                    int32_t k, int32_t oh, int32_t ow) {
    int32_t ch, oy, ox, dy, dx;
    if (k == 2) {
        for (ch = 0; ch < c; ch++) {
            const int8_t *xp = x + ch * h * w;
            for (oy = 0; oy < oh; oy++, xp += 2 * w, out += ow) {
                pool2_row(xp, xp + w, out, idx, ow);
                if (idx != NULL) {
                    idx += ow;
                }
            }
        }
        return;
    }
    for (ch = 0; ch < c; ch++) {
        for (oy = 0; oy < oh; oy++) {
            int32_t base = (ch * h + oy * k) * w;
            for (ox = 0; ox < ow; ox++, base += k) {
                int32_t best = x[base], bi = 0, off = 0, row = base;
                for (dy = 0; dy < k; dy++, row += w) {
                    const int8_t *xp = x + row;
                    for (dx = 0; dx < k; dx++, off++) {
                        int32_t v = *xp++;
                        if (v > best) {
                            best = v;
                            bi = off;
                        }
                    }
                }
                *out++ = (int8_t)best;
                if (idx != NULL) {
                    *idx++ = (uint8_t)bi;
                }
            }
        }
    }
}

void pt_maxpool2d_s8_chw(const int8_t *x, int8_t *out, uint8_t *idx, int32_t c, int32_t h,
                         int32_t w, int32_t k, int32_t relu) {
    const int32_t oh = (int32_t)pt_udiv_u32((uint32_t)h, (uint32_t)k);
    const int32_t ow = (int32_t)pt_udiv_u32((uint32_t)w, (uint32_t)k);
    maxpool(x, out, idx, c, h, w, k, oh, ow);
    if (relu) {
        pt_relu_s8(out, c * oh * ow);   /* a word at a time, on the k*k times smaller output */
    }
}

/* n int8 zeros, a word at a time where aligned. */
static void zero_s8(int8_t *p, int32_t n) {
    int8_t *end = p + n;
    while (p < end && !PT_ALIGNED4(p)) {
        *p++ = 0;
    }
    for (; p + 16 <= end; p += 16) {
        ((pt_u32a *)p)[0] = 0;
        ((pt_u32a *)p)[1] = 0;
        ((pt_u32a *)p)[2] = 0;
        ((pt_u32a *)p)[3] = 0;
    }
    for (; p + 4 <= end; p += 4) {
        *(pt_u32a *)p = 0;
    }
    while (p < end) {
        *p++ = 0;
    }
}

void pt_maxpool2d_bwd_s8_chw(const int8_t *e, const uint8_t *idx, int8_t *out, int32_t c,
                             int32_t h, int32_t w, int32_t k, const int8_t *y) {
    const int32_t oh = (int32_t)pt_udiv_u32((uint32_t)h, (uint32_t)k);
    const int32_t ow = (int32_t)pt_udiv_u32((uint32_t)w, (uint32_t)k);
    int32_t ch, oy, ox, o = 0;
    zero_s8(out, c * h * w);
    for (ch = 0; ch < c; ch++) {
        for (oy = 0; oy < oh; oy++) {
            int8_t *base = out + (ch * h + oy * k) * w;
            if (k == 2) {
                for (ox = 0; ox < ow; ox++, base += 2, o++) {
                    const int32_t v = e[o];
                    if (v != 0 && (y == NULL || y[o] > 0)) {   /* most errors after a pool are 0 */
                        const int32_t bi = idx[o];
                        base[(bi >> 1) * w + (bi & 1)] = (int8_t)v;   /* bi < 4 */
                    }
                }
                continue;
            }
            for (ox = 0; ox < ow; ox++, base += k, o++) {
                int32_t bi = idx[o], dy = 0;
                if (y != NULL && y[o] <= 0) {
                    continue;
                }
                while (bi >= k) {   /* bi < k*k: at most k - 1 steps, no division */
                    bi -= k;
                    dy++;
                }
                base[dy * w + bi] = e[o];
            }
        }
    }
}
