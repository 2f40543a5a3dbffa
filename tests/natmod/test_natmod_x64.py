"""The selftest module built for x64 and run in the MicroPython unix port."""

import json

from natmod_mpyload import NativeMpy
from natmod_selftest_cases import CASES, micropython_script


def test_every_feature(build_selftest, run_mpy):
    path, _ = build_selftest("x64")
    p = run_mpy({"selftest.mpy": path.read_bytes()}, micropython_script())
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    for (name, args, expected), got in zip(CASES, results, strict=True):
        assert got == expected, "%s%r" % (name, args)


LOADED_TEXT = """
import binascii, selftest, uctypes
fun = id(selftest.answer)
print(fun, id(type(abs)), id(type(divmod)), id(type(setattr)))
print(binascii.hexlify(uctypes.bytearray_at(fun - {offset}, {length})).decode())
"""


def test_loader_simulation_matches_the_real_loader(build_selftest, run_mpy):
    """The unix port's loaded text, read back, is what natmod_mpyload computes.

    This ties the oracle of the ARM tests (natmod_mpyload) to the real loader: same text
    base, same relocation stream, same result, byte for byte.
    """
    path, linked = build_selftest("x64")
    mpy = NativeMpy(path.read_bytes())
    region, offset = linked.symbols["answer_obj"]  # a const function object, in text
    assert region == "text"
    p = run_mpy({"selftest.mpy": path.read_bytes()},
                LOADED_TEXT.format(offset=offset, length=len(mpy.text)))
    assert p.returncode == 0, p.stderr
    ids, hexdump = p.stdout.split("\n")[:2]
    fun, type_builtin_1, type_builtin_2, type_builtin_3 = map(int, ids.split())
    text_base = fun - offset
    real = bytes.fromhex(hexdump)

    # What each relocation added, from the real image: one value per destination.
    word = mpy.word
    added = {}
    for index, dest in mpy.relocations():
        delta = (int.from_bytes(real[index * word:][:word], "little")
                 - int.from_bytes(mpy.text[index * word:][:word], "little")) % (1 << 64)
        assert added.setdefault(dest, delta) == delta, "destination %d relocated inconsistently" % dest
    assert added[0] == text_base
    # mp_fun_table entries 78..80 (py/nativeglue.h) hold the builtin function types with 1..3
    # arguments: the firmware's own functions have those types.
    assert [added[9 + k] for k in (78, 79, 80)] == [type_builtin_1, type_builtin_2, type_builtin_3]

    fun_table = [0] * 128
    for dest, value in added.items():
        if dest >= 9:
            fun_table[dest - 9] = value
    simulated = mpy.load(text_base, added.get(4, 0), added.get(6, 0), added.get(8, 0), fun_table)
    assert simulated == real
