// The far half of the selftest module: code and tables that selftest.c reaches across the
// module, and enough of them (> 2 KB of code before mpy_init) that the entry jump and the
// calls back here need the long Thumb branch.

#include <stddef.h>
#include <stdint.h>

// A const global used from another file: reached through a GOT slot pointing into text.
const int16_t selftest_primes[16] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53};

// C division by a variable: armv6m has no divide instruction, so this calls libgcc's
// __aeabi_idiv / __aeabi_idivmod, which the linker must pull into the module.
int32_t selftest_div(int32_t a, int32_t b) {
    return a / b;
}

int32_t selftest_mod(int32_t a, int32_t b) {
    return a % b;
}

// 256 unrolled rounds of a multiply-xorshift mix: about 2.5 KB of straight-line code.
#define ROUND(k) x = (x ^ (x >> 15)) * 0x2c1b3c6du + (k);
#define ROUND4(k) ROUND(k) ROUND(k + 1) ROUND(k + 2) ROUND(k + 3)
#define ROUND16(k) ROUND4(k) ROUND4(k + 4) ROUND4(k + 8) ROUND4(k + 12)
#define ROUND64(k) ROUND16(k) ROUND16(k + 16) ROUND16(k + 32) ROUND16(k + 48)

uint32_t selftest_mix(uint32_t x) {
    ROUND64(0x100) ROUND64(0x2000) ROUND64(0x30000) ROUND64(0x400000)
    return x;
}

// CRC-32 (zlib's) with a 1 KB table in rodata, reached PC-relatively from the code.
static const uint32_t crc_table[256] = {
#define C1(n) (((n) >> 1) ^ ((0u - ((n) & 1u)) & 0xedb88320u))
#define C8(n) C1(C1(C1(C1(C1(C1(C1(C1(n))))))))
#define ROW(n) C8(n), C8(n + 1), C8(n + 2), C8(n + 3), C8(n + 4), C8(n + 5), C8(n + 6), C8(n + 7)
#define ROW64(n) ROW(n), ROW(n + 8), ROW(n + 16), ROW(n + 24), ROW(n + 32), ROW(n + 40), ROW(n + 48), ROW(n + 56)
    ROW64(0u), ROW64(64u), ROW64(128u), ROW64(192u)
};

uint32_t selftest_crc32(const uint8_t *buf, size_t len) {
    uint32_t crc = 0xffffffffu;
    while (len--) {
        crc = crc_table[(crc ^ *buf++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}
