/* Kernels that exercise the cycle harness's calling and checking paths: output buffers,
 * arguments passed on the stack, and the errors it must report. */
#include <stdint.h>

/* The shape of the project's fully connected kernel: 5 arguments, so one goes on the stack. */
void fc_s8_s32(const int8_t *x, const int8_t *w, int32_t *out, int n_in, int n_out)
{
    for (int o = 0; o < n_out; o++) {
        int32_t acc = 0;
        for (int i = 0; i < n_in; i++)
            acc += (int32_t)x[i] * w[o * n_in + i];
        out[o] = acc;
    }
}

/* Nine arguments, five on the stack; distinct weights make any reordering visible. */
int32_t weigh9(int32_t a0, int32_t a1, int32_t a2, int32_t a3, int32_t a4,
               int32_t a5, int32_t a6, int32_t a7, int32_t a8)
{
    return a0 + 3 * a1 + 5 * a2 + 7 * a3 + 11 * a4 + 13 * a5 + 17 * a6 + 19 * a7 + 23 * a8;
}

void write_past_end(uint8_t *p, int n)
{
    p[n] = 0;
}

void trap(void)
{
    __builtin_trap();
}
