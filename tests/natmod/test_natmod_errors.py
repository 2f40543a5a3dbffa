"""What the toolchain refuses, and how it says so; what MicroPython says about a wrong .mpy."""

import subprocess

import mpy_ld
import pytest
from conftest import need_toolchain
from mpy_ld import LinkError, qstrs

BINDING = """#include "py/dynruntime.h"
%s
mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY
    MP_DYNRUNTIME_INIT_EXIT
}
"""


def link_error(natmod_build, mpy_dir, tmp_path, arch, source):
    """The LinkError of building a module "broken" made of `source`."""
    need_toolchain(arch)
    src = tmp_path / "broken"
    src.mkdir()
    (src / "broken.c").write_text(source)
    with pytest.raises(LinkError) as e:
        natmod_build.build_module(src, arch, mpy_dir, tmp_path / "out")
    return str(e.value)


FLOAT = "int32_t scale(int32_t x, int32_t y) { return (int32_t)((float)x * 1.5f / (float)y); }"
DOUBLE = FLOAT.replace("float", "double").replace("1.5f", "1.5")


@pytest.mark.parametrize("arch, source, helpers", [
    ("armv6m", FLOAT, "__aeabi_f2iz, __aeabi_fdiv, __aeabi_fmul, __aeabi_i2f"),
    ("armv7m", FLOAT, "__aeabi_f2iz, __aeabi_fdiv, __aeabi_fmul, __aeabi_i2f"),
    # The Cortex-M4's FPU does single precision in hardware, double with helpers.
    ("armv7emsp", DOUBLE, "__aeabi_d2iz, __aeabi_ddiv, __aeabi_dmul, __aeabi_i2d"),
])
def test_floating_point_helpers_are_refused(natmod_build, mpy_dir, tmp_path, arch, source, helpers):
    msg = link_error(natmod_build, mpy_dir, tmp_path, arch, BINDING % source)
    assert msg == "floating-point helper(s) %s (used by broken.o): modules must be integer-only" % helpers


@pytest.mark.parametrize("arch", ["x64", "armv6m"])
def test_static_bss_is_refused(natmod_build, mpy_dir, tmp_path, arch):
    msg = link_error(natmod_build, mpy_dir, tmp_path, arch, BINDING % (
        "static int32_t hidden;\nint32_t next(void) { return hidden++; }"))
    assert "make .bss of broken.o (hidden) a non-static global" in msg


@pytest.mark.parametrize("arch", ["x64", "armv6m"])
def test_initialised_data_is_refused(natmod_build, mpy_dir, tmp_path, arch):
    msg = link_error(natmod_build, mpy_dir, tmp_path, arch, BINDING % (
        "int32_t table[2] = {1, 2};\nint32_t get(int i) { return table[i]; }"))
    assert msg.startswith("broken.o: initialised data in .data (table): the loader has no .data")


@pytest.mark.parametrize("arch", ["x64", "armv6m"])
def test_undefined_symbol_is_named(natmod_build, mpy_dir, tmp_path, arch):
    msg = link_error(natmod_build, mpy_dir, tmp_path, arch, BINDING % (
        "int32_t missing(int32_t);\nint32_t call(int32_t x) { return missing(x) + 1; }"))
    assert msg.startswith("undefined symbol(s): missing (used by broken.o).")


def test_missing_entry_point(natmod_build, mpy_dir, tmp_path):
    msg = link_error(natmod_build, mpy_dir, tmp_path, "x64", "int f(void) { return 1; }\n")
    assert msg.startswith("no mpy_init")


def test_unsupported_relocation_is_named(mpy_dir, tmp_path):
    # A 32-bit absolute address: what code compiled without -fpic has. The loader only
    # relocates whole pointers.
    src = tmp_path / "abs32.s"
    src.write_text(".text\n.globl mpy_init\nmpy_init: ret\n.section .rodata\n.long counter\n"
                   ".bss\n.globl counter\ncounter: .zero 4\n.section .note.GNU-stack,\"\",@progbits\n")
    subprocess.run(["as", str(src), "-o", str(tmp_path / "abs32.o")], check=True)
    with pytest.raises(LinkError) as e:
        mpy_ld.link("x64", [tmp_path / "abs32.o"], qstrs.header_text({}), mpy_dir)
    assert str(e.value) == ("abs32.o: R_X86_64_32 against counter at .rodata+0x0: "
                            "relocation type not supported by this linker")


def test_wrong_arch_and_version_in_the_unix_port(build_selftest, run_mpy):
    """What MicroPython itself says (py/persistentcode.c, mp_raw_code_load)."""
    path, _ = build_selftest("armv6m")
    data = path.read_bytes()
    p = run_mpy({"selftest.mpy": data}, "import selftest")
    assert p.returncode == 1 and p.stdout.strip().endswith("ValueError: incompatible .mpy arch")
    p = run_mpy({"selftest.mpy": data[:1] + b"\x05" + data[2:]}, "import selftest")  # mpy v5
    assert p.returncode == 1 and p.stdout.strip().endswith("ValueError: incompatible .mpy file")


X64_ENTRY = ".text\n.globl mpy_init\nmpy_init: ret\n.section .note.GNU-stack,\"\",@progbits\n"
REFUSED = [  # (arch, assembly sources (one object each), message)
    ("x64", [X64_ENTRY, X64_ENTRY.replace("ret", "nop; ret")],
     "symbol mpy_init defined in both o0.o and o1.o"),
    ("x64", [X64_ENTRY + ".section .init_array,\"aw\"\n.quad mpy_init\n"],
     "o0.o: unsupported section .init_array"),
    ("x64", [X64_ENTRY + ".section .rodata\n.balign 64\n.byte 1\n"],
     "o0.o: .rodata needs 64-byte alignment, the loader gives 32"),
    ("x64", [X64_ENTRY + ".section .rodata\n.byte 1\n.quad mpy_init\n"],
     "o0.o: R_X86_64_64 against mpy_init at .rodata+0x1: pointer at an unaligned offset "
     "(the loader relocates whole words)"),
    ("x64", [X64_ENTRY + ".text\nmovq buf@GOTPCREL(%rip), %rax\n.comm buf, 16\n"],
     "o0.o: symbol buf is SHN_COMMON, unsupported (compile with -fno-common)"),
    ("x64", [X64_ENTRY + ".data\n.long 1\n"],
     "o0.o: initialised data in .data (unnamed): the loader has no .data; make it const, or "
     "zero-initialised and set it in mpy_init"),
    ("x64", [X64_ENTRY + ".section .data.rel.local,\"aw\"\nptrs: .quad mpy_init\n"],
     "o0.o: initialised data in .data.rel.local (ptrs): the loader has no .data; make it const, or "
     "zero-initialised and set it in mpy_init"),
    ("armv6m", [".syntax unified\n.thumb\n.text\n.global mpy_init\n.type mpy_init, %function\n"
                ".thumb_func\nmpy_init: bl table\n.section .rodata\ntable: .word 0\n"],
     "o0.o: R_ARM_THM_CALL against .rodata at .text+0x0: target is not a Thumb function"),
]


@pytest.mark.parametrize("arch, sources, message", REFUSED)
def test_refused_objects(mpy_dir, tmp_path, arch, sources, message):
    need_toolchain(arch)
    objects = []
    for i, source in enumerate(sources):
        (tmp_path / ("o%d.s" % i)).write_text(source)
        objects.append(tmp_path / ("o%d.o" % i))
        assembler = "as" if arch == "x64" else "arm-none-eabi-as"
        subprocess.run([assembler, str(tmp_path / ("o%d.s" % i)), "-o", str(objects[-1])], check=True)
    with pytest.raises(LinkError) as e:
        mpy_ld.link(arch, objects, qstrs.header_text({}), mpy_dir)
    assert str(e.value) == message
