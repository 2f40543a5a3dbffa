/* The plain int8 dot product the harness is calibrated against: no hand tuning, so the
 * measured cycles per MAC are what -Os makes of the obvious loop on the Cortex-M0+. */
#include <stdint.h>

int32_t dot_s8(const int8_t *a, const int8_t *b, int n)
{
    int32_t acc = 0;
    for (int i = 0; i < n; i++)
        acc += (int32_t)a[i] * b[i];
    return acc;
}
