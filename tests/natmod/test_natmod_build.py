"""natmod/build.py: the command, the generated config header, the .mpy's qstr table and
relocation stream, the facts read from MicroPython's sources, and the upstream route."""

import re
import shutil
import subprocess
import sys

import pytest
from conftest import NATMOD, need_toolchain
from hypothesis import given
from hypothesis import strategies as st
from mpy_ld import qstrs, runtime
from mpy_ld.mpyfile import reloc_stream
from natmod_gnuld import FIRST_OBJECT, FUN_TABLE_OBJECTS
from natmod_mpyload import NativeMpy, Reader, decode_relocations


def test_command_builds_a_module():
    need_toolchain("x64")
    p = subprocess.run([sys.executable, str(NATMOD / "build.py"), "--arch", "x64", "--module", "selftest"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"\[natmod\] selftest x64: text \d+ B, BSS 40 B -> "
                        r"natmod/build/selftest-x64-mpy6\.3\.mpy \(\d+ B\)\n", p.stdout)
    assert NativeMpy((NATMOD / "build" / "selftest-x64-mpy6.3.mpy").read_bytes()).arch == 2
    link_map = (NATMOD / "build" / "selftest" / "x64" / "selftest.map").read_text()
    assert re.search(r"\n  text 0x[0-9a-f]{5}  mpy_init\n", link_map)


def test_command_rejects_an_unknown_arch():
    p = subprocess.run([sys.executable, str(NATMOD / "build.py"), "--arch", "z80"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown arch z80" in p.stderr


def test_qstr_table_matches_config_header(build_selftest):
    path, linked = build_selftest("armv6m")
    header = (build_selftest.out_dir / "selftest" / "armv6m" / "selftest.config.h").read_text()
    own = re.findall(r"#define MP_QSTR_(\w+) \(mp_native_qstr_table\[(\d+)\]\)", header)
    mpy = NativeMpy(path.read_bytes())
    # Entry 0 is the source name; entry i is the qstr the header numbers i.
    assert mpy.qstrs[0] == "bulk.c"
    assert [(q, str(i)) for i, q in enumerate(mpy.qstrs[1:], 1)] == own
    assert {"picotrain_selftest", "weight", "crc32"} <= set(mpy.qstrs)
    # Static qstrs are constants, not table entries.
    assert "#define MP_QSTR_ValueError (55)" in header and "ValueError" not in mpy.qstrs


def test_static_qstrs_end_where_the_loader_says(mpy_dir):
    source = (mpy_dir / "py" / "persistentcode.c").read_text()
    last = re.search(r"#define QSTR_LAST_STATIC MP_QSTR_(\w+)", source).group(1)
    static = runtime.static_qstrs(mpy_dir)
    assert static[last] == max(static.values()) == 165


def test_fun_table_objects(mpy_dir):
    # py/nativeglue.h: "The following entries start at index 73"
    assert runtime.fun_table_objects(mpy_dir) == {n: FIRST_OBJECT + i for i, n in enumerate(FUN_TABLE_OBJECTS)}


def test_read_own_qstrs_needs_consecutive_entries():
    assert qstrs.read_own_qstrs(qstrs.header_text({"len": 3}, ["b", "a"])) == ["b", "a"]
    with pytest.raises(ValueError):
        qstrs.read_own_qstrs("#define MP_QSTR_x (mp_native_qstr_table[2])\n")


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["text", "bss", 6, 8, 9, 87])), max_size=60),
       st.integers(0, 20000))
def test_relocation_stream_decodes_as_the_loader_reads_it(steps, start):
    """Runs, gaps and every destination kind: the loader's reading gives back the list."""
    relocs, index = [], start
    for gap, dest in steps:
        index += gap
        relocs.append((index, dest))
        index += 1
    decoded = decode_relocations(Reader(reloc_stream(relocs)))
    assert decoded == [(i, {"text": 0, "bss": 4}.get(d, d)) for i, d in relocs]


def test_upstream_makefile_drives_dynruntime_mk(natmod_build, mpy_dir, tmp_path):
    """With MPY_DIR set to a MicroPython checkout, build.py runs upstream's dynruntime.mk.

    No checkout here, so: a stand-in tree with the sdist's py/ and an empty tools/mpy_ld.py,
    and `make -n` shows the commands the generated Makefile makes dynruntime.mk run.
    """
    need_toolchain("armv6m")
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    checkout = tmp_path / "micropython"
    (checkout / "tools").mkdir(parents=True)
    (checkout / "tools" / "mpy_ld.py").write_text("")
    (checkout / "py").symlink_to(mpy_dir / "py")
    work = tmp_path / "work"
    work.mkdir()
    (work / "Makefile").write_text(natmod_build.upstream_makefile(NATMOD / "selftest", "armv6m", checkout))
    p = subprocess.run(["make", "-n", "-C", str(work)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    src = NATMOD / "selftest"
    mpy_ld = "python3 %s/tools/mpy_ld.py" % checkout
    libgcc = natmod_build.libgcc("armv6m")[0]
    assert "%s --arch armv6m --preprocess -o build-armv6m/selftest.config.h %s/bulk.c %s/selftest.c" % (
        mpy_ld, src, src) in p.stdout
    assert re.search(r"arm-none-eabi-gcc .*-mthumb -mcpu=cortex-m0 .*-o build-armv6m/+%s/bulk.o -c %s/bulk.c"
                     % (re.escape(str(src)), re.escape(str(src))), p.stdout)
    assert re.search(r"%s --arch armv6m --qstrs build-armv6m/selftest.config.h -l%s .*-o build-armv6m/selftest.mpy"
                     % (re.escape(mpy_ld), re.escape(libgcc)), p.stdout)
    assert "tools/mpy-tool.py --merge -o selftest.mpy build-armv6m/selftest.mpy" in p.stdout
