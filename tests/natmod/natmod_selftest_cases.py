"""What natmod/selftest must do, as (function, args, expected) in call order.

The same cases run on the x64 build in the unix port and on the armv6m build on an emulated
Cortex-M0+. Arguments are ints, bytes (a buffer) or WEIGHTED (an object with .weight == 7);
an expected ["ValueError", message] means that exception.
"""

import zlib


class Weighted:
    weight = 7


WEIGHTED = Weighted()
PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]
DIVISIONS = [(7, 2), (-7, 2), (7, -2), (-7, -2), (-2147483647, 10), (1000, -7)]


def mix(x):
    """bulk.c's selftest_mix."""
    for base in (0x100, 0x2000, 0x30000, 0x400000):
        for k in range(64):
            x = ((x ^ (x >> 15)) * 0x2C1B3C6D + base + k) & 0xFFFFFFFF
    return x


def s32(x):
    return x - (1 << 32) if x >= 1 << 31 else x


def c_divmod(a, b):
    """C's / and % (truncating)."""
    q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    return [q, a - q * b]


def error(message):
    return ["ValueError", "selftest: " + message]


CASES = [
    ("answer", (), 42),
    ("name", (), "picotrain_selftest"),  # a qstr of the module's table
    ("weight_of", (WEIGHTED,), 7),  # an attribute looked up by qstr
    ("counter", (), 12345),  # BSS, set in mpy_init
    ("bump", (5,), 12350),
    ("counter", (), 12350),
    *[("prime", (i,), p) for i, p in enumerate(PRIMES)],  # a const table in the other file
    ("prime", (16,), error("index out of range")),
    ("check", (3,), 3),
    ("check", (-1,), error("negative")),
    ("sum_b", (bytes([1, 254, 3, 128, 127, 156]),), -99),  # int8: 1 - 2 + 3 - 128 + 127 - 100
    *[("cdivmod", ab, c_divmod(*ab)) for ab in DIVISIONS],  # __aeabi_idiv(mod) on armv6m
    ("cdivmod", (1, 0), error("division by zero")),
    # Through the table of function pointers (the last one tail-calls into the other file).
    *[("apply", (i, 1000, -7), r) for i, r in enumerate([993, 1007, -7000, -142, 6, s32(mix(1000 ^ 0xFFFFFFF9))])],
    *[("op_name", (i,), n) for i, n in enumerate(["add", "sub", "mul", "div", "mod", "mix"])],
    ("cell", (0, 3), 3000),  # stores through a table of pointers into BSS
    ("cell", (1, 4), 3004),
    *[("mix", (x,), mix(x)) for x in (0, 1, 0xFFFFFFFF)],  # > 2 KB of code
    ("crc32", (b"picotrain",), zlib.crc32(b"picotrain")),  # a 1 KB rodata table
]


def micropython_script():
    """A MicroPython script that runs CASES against `import selftest` and prints JSON."""
    calls = ", ".join("(%r, (%s))" % (name, "".join(("W()" if a is WEIGHTED else repr(a)) + "," for a in args))
                      for name, args, _ in CASES)
    return """
import json, selftest
class W:
    weight = 7
def run(name, args):
    try:
        r = getattr(selftest, name)(*args)
    except ValueError as e:
        return ["ValueError", str(e)]
    return list(r) if isinstance(r, tuple) else r
print(json.dumps([run(name, args) for name, args in [%s]]))
""" % calls
