"""Every relocation kind the linker handles, linked by it and by GNU ld: the images agree.

The selftest module only has the kinds gcc emits for it; these hand-written objects have all
of them (natmod_relocs_*.s), including forms other compilers emit.
"""

import shutil
import subprocess
from pathlib import Path

import mpy_ld
import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from mpy_ld import arm, qstrs, x64
from natmod_gnuld import ADDRESSES, compare, got_relative_sites, link_with_ld, load_ours
from natmod_mpyload import NativeMpy

HERE = Path(__file__).resolve().parent
CASES = {  # arch: (assembler, source, backend, ELF machine)
    "armv7m": ("arm-none-eabi-as", "natmod_relocs_arm.s", arm, "EM_ARM"),
    "x64": ("as", "natmod_relocs_x64.s", x64, "EM_X86_64"),
}


def relocation_types(path, names):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {names.get(r["r_info_type"], r["r_info_type"])
                for s in elf.iter_sections() if isinstance(s, RelocationSection)
                for r in s.iter_relocations()}


@pytest.mark.parametrize("arch", list(CASES))
def test_every_relocation_kind_matches_gnu_ld(arch, mpy_dir, tmp_path):
    assembler, source, backend, machine = CASES[arch]
    if shutil.which(assembler) is None:
        pytest.skip("%s not installed" % assembler)
    obj = tmp_path / "relocs.o"
    subprocess.run([assembler, str(HERE / source), "-o", str(obj)], check=True)
    # The object exercises exactly the kinds the backend claims to handle.
    assert relocation_types(obj, backend.RELOC_TYPES) == set(backend.RELOC_TYPES.values())

    linked = mpy_ld.link(arch, [obj], qstrs.header_text({}), mpy_dir)
    mpy = NativeMpy(mpy_ld.mpy_bytes(linked, "relocs.s"))
    ld = link_with_ld(machine, linked, [obj], [], tmp_path)
    sites = got_relative_sites(machine, linked, [obj], ADDRESSES[mpy.word]["text"])
    assert compare(load_ours(mpy), ld, sites, mpy.word) == len(sites) > 0
    assert ld.sections[".bss"][2] == mpy.bss_size == (16 if arch == "x64" else 8)
