/* pool.c - ReLU and k x k max pooling (stride k), forward and backward. */
#include "picotrain_kernels.h"

void pt_relu_s8(int8_t *x, int32_t n) {
    for (; n > 0; n--, x++) {
        if (*x < 0) {
            *x = 0;
        }
    }
}

void pt_relu_bwd_s8(const int8_t *y, int8_t *e, int32_t n) {
    for (; n > 0; n--, e++) {
        if (*y++ <= 0) {
            *e = 0;
        }
    }
}

void pt_maxpool2d_s8_chw(const int8_t *x, int8_t *out, uint8_t *idx, int32_t c, int32_t h,
                         int32_t w, int32_t k) {
    const int32_t oh = (int32_t)pt_udiv_u32((uint32_t)h, (uint32_t)k);
    const int32_t ow = (int32_t)pt_udiv_u32((uint32_t)w, (uint32_t)k);
    int32_t ch, oy, ox, dy, dx;
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

void pt_maxpool2d_bwd_s8_chw(const int8_t *e, const uint8_t *idx, int8_t *out, int32_t c,
                             int32_t h, int32_t w, int32_t k) {
    const int32_t oh = (int32_t)pt_udiv_u32((uint32_t)h, (uint32_t)k);
    const int32_t ow = (int32_t)pt_udiv_u32((uint32_t)w, (uint32_t)k);
    int32_t ch, oy, ox, t;
    for (t = 0; t < c * h * w; t++) {
        out[t] = 0;
    }
    for (ch = 0; ch < c; ch++) {
        for (oy = 0; oy < oh; oy++) {
            int32_t base = (ch * h + oy * k) * w;
            for (ox = 0; ox < ow; ox++, base += k) {
                int32_t bi = *idx++, dy = 0;
                while (bi >= k) {   /* bi < k*k: at most k - 1 steps, no division */
                    bi -= k;
                    dy++;
                }
                out[base + dy * w + bi] = *e++;
            }
        }
    }
}
