"""The one PRNG of picotrain: xorshift32 (Marsaglia 2003, shifts 13/17/5).

Every random choice in the library (score initialisation, PRIOT-S subsets,
shuffling) draws from an explicitly seeded XorShift32, so that CPython,
MicroPython and the native kernels produce the same bits. See docs/NUMERICS.md.
"""

_MASK = 0xFFFFFFFF


class XorShift32:
    def __init__(self, seed):
        seed = int(seed) & _MASK
        if seed == 0:
            # xorshift's only fixed point; documented remap so every seed is usable.
            seed = 0x9E3779B9
        self.state = seed

    def next(self):
        """Next 32-bit unsigned value."""
        x = self.state
        x ^= (x << 13) & _MASK
        x ^= x >> 17
        x ^= (x << 5) & _MASK
        self.state = x
        return x

    def below(self, n):
        """Integer in [0, n): next() % n (modulo bias is below 2**-20 for n < 4096)."""
        if n <= 0:
            raise ValueError("below(n) needs n > 0, got %d" % n)
        return self.next() % n

    def shuffle(self, seq):
        """Fisher-Yates in place, from the last element down."""
        for i in range(len(seq) - 1, 0, -1):
            j = self.below(i + 1)
            seq[i], seq[j] = seq[j], seq[i]
        return seq
