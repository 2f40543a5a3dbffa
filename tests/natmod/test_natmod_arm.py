"""The selftest module for the ARM arches, which nothing here can load for real.

Each build is checked three ways: its header; GNU ld linking the same objects at fixed
addresses gives the image our .mpy gives once relocated there the way py/persistentcode.c
does it (natmod_mpyload, itself checked against the unix port's real loader in
test_natmod_x64.py); and for armv6m, the Pico's arch, the loaded module runs on an emulated
Cortex-M0+ with the selftest cases the x64 build passes in the unix port.
"""

import importlib.util
import re
import struct

import pytest
from conftest import need_toolchain
from natmod_gnuld import ADDRESSES, compare, got_relative_sites, link_with_ld, load_ours
from natmod_mpyload import NativeMpy
from natmod_selftest_cases import CASES

ARCH_CODE = {"armv6m": 4, "armv7m": 5, "armv7emsp": 7}  # py/persistentcode.h: MP_NATIVE_ARCH_*
FLOAT_HELPER = re.compile(r"^__aeabi_(f|d|[iu]2[fd]|u?l2[fd])|^__(add|sub|mul|div)[sd]f3$|^__float|^__fix")


@pytest.mark.parametrize("arch", list(ARCH_CODE))
def test_header(build_selftest, arch):
    path, _ = build_selftest(arch)
    data = path.read_bytes()
    # 'M', mpy version 6, arch << 2 | sub-version 3, small-int bits
    assert data[:4] == bytes([ord("M"), 6, ARCH_CODE[arch] << 2 | 3, 31])
    mpy = NativeMpy(data)
    assert mpy.qstrs[0] == "bulk.c" and "picotrain_selftest" in mpy.qstrs and "weight" in mpy.qstrs


@pytest.mark.parametrize("arch", list(ARCH_CODE))
def test_no_float_helpers(build_selftest, arch):
    _, linked = build_selftest(arch)
    assert not [s for s in linked.symbols if FLOAT_HELPER.search(s)]
    # Only the integer division helpers come from libgcc, and only where there is no divider.
    assert linked.libgcc_members == (["_divsi3.o", "_dvmd_tls.o"] if arch == "armv6m" else [])


@pytest.mark.parametrize("arch", list(ARCH_CODE) + ["x64"])
def test_same_image_as_gnu_ld(build_selftest, natmod_build, arch, tmp_path):
    path, linked = build_selftest(arch)
    objects = sorted((build_selftest.out_dir / "selftest" / arch).glob("*.o"))
    mpy = NativeMpy(path.read_bytes())
    machine = "EM_X86_64" if arch == "x64" else "EM_ARM"
    ld = link_with_ld(machine, linked, objects, natmod_build.libgcc(arch), tmp_path)
    sites = got_relative_sites(machine, linked, objects, ADDRESSES[mpy.word]["text"])
    assert compare(load_ours(mpy), ld, sites, mpy.word) > 10
    assert ld.sections[".bss"][2] == mpy.bss_size


def thumb_bl_target(code, at):
    """Where the Thumb BL at `at` goes (ARMv7-M ARM, A6.7.18: encoding T1)."""
    hw1, hw2 = struct.unpack_from("<HH", code, at)
    s, j1, j2 = (hw1 >> 10) & 1, (hw2 >> 13) & 1, (hw2 >> 11) & 1
    assert hw1 >> 11 == 0b11110 and hw2 >> 14 == 0b11 and hw2 & 0x1000, "not a BL"
    imm = s << 24 | (1 - (j1 ^ s)) << 23 | (1 - (j2 ^ s)) << 22 | (hw1 & 0x3FF) << 12 | (hw2 & 0x7FF) << 1
    return at + 4 + imm - (s << 25)


@pytest.mark.parametrize("arch", list(ARCH_CODE))
def test_entry_reaches_mpy_init_beyond_2kb(build_selftest, arch):
    path, linked = build_selftest(arch)
    text = NativeMpy(path.read_bytes()).text
    region, entry = linked.symbols["mpy_init"]
    assert len(text) > 4096 and region == "text" and entry > 2048 + 8  # out of a 16-bit b's reach
    # push {r4, lr}; bl mpy_init; pop {r4, pc}
    assert text[0:2] == b"\x10\xb5" and text[6:8] == b"\x10\xbd"
    assert thumb_bl_target(text, 2) == entry


def test_armv6m_runs_on_emulated_cortex_m0plus(build_selftest, natmod_build, mpy_dir):
    pytest.importorskip("rp2040py", reason="rp2040py (the RP2040 emulator) is not installed")
    from natmod_m0 import MicroPythonError, Module

    path, _ = build_selftest("armv6m")
    module = Module(path.read_bytes(), natmod_build.runtime.static_qstrs(mpy_dir))
    module.init()  # through the entry stub, with the loader's BSS, qstr table and mp_fun_table
    assert sorted(module.globals) == sorted({name for name, _, _ in CASES})
    for name, args, expected in CASES:
        try:
            got = module.function(name)(*args)
        except MicroPythonError as e:
            got = list(e.args)
        assert (list(got) if isinstance(got, tuple) else got) == expected, "%s%r" % (name, args)


INT64 = """#include "py/dynruntime.h"
int64_t div64(int64_t a, int64_t b) { return a / b; }
uint64_t mod64(uint64_t a, uint64_t b) { return a % b; }
int64_t mul64(int64_t a, int64_t b) { return a * b; }
mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY
    MP_DYNRUNTIME_INIT_EXIT
}
"""


@pytest.mark.parametrize("arch", ["armv6m", "armv7m"])
def test_64_bit_arithmetic_pulls_libgcc_transitively(natmod_build, mpy_dir, tmp_path, arch):
    """64-bit division needs libgcc helpers that need more helpers (some written in C)."""
    need_toolchain(arch)
    (tmp_path / "int64").mkdir()
    (tmp_path / "int64" / "int64.c").write_text(INT64)
    path, linked = natmod_build.build_module(tmp_path / "int64", arch, mpy_dir, tmp_path / "out")
    assert {"_aeabi_ldivmod.o", "_aeabi_uldivmod.o", "_udivmoddi4.o"} <= set(linked.libgcc_members)
    objects = sorted((tmp_path / "out" / "int64" / arch).glob("*.o"))
    mpy = NativeMpy(path.read_bytes())
    ld = link_with_ld("EM_ARM", linked, objects, natmod_build.libgcc(arch), tmp_path)
    compare(load_ours(mpy), ld, got_relative_sites("EM_ARM", linked, objects, ADDRESSES[4]["text"]), 4)
    if arch != "armv6m" or importlib.util.find_spec("rp2040py") is None:
        return
    from natmod_m0 import TEXT, Module

    module = Module(path.read_bytes(), {})
    for name, a, b, expected in [("div64", -(10 ** 15), 7, -(10 ** 15 // 7)),  # C truncates
                                 ("mod64", 2 ** 64 - 1, 10 ** 9 + 7, (2 ** 64 - 1) % (10 ** 9 + 7)),
                                 ("mul64", -123456789, 987654321, -123456789 * 987654321)]:
        a, b = a & (2 ** 64 - 1), b & (2 ** 64 - 1)  # AAPCS: 64-bit arguments in r0:r1, r2:r3
        lo = module.call(TEXT + linked.symbols[name][1], a & 0xFFFFFFFF, a >> 32, b & 0xFFFFFFFF, b >> 32)
        assert lo | module.core.registers[1] << 32 == expected & (2 ** 64 - 1), name
