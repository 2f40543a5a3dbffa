"""GNU ld as the reference for natmod/mpy_ld: link the same objects at fixed addresses.

ld gets a linker script that lays sections out as our linker did (the entry stub, each input
section in our order, zeros between them, the GOT, BSS at its own address) and resolves every
relocation itself. Our .mpy, "loaded" at the same addresses by natmod_mpyload, must give the
same bytes.

The one freedom: each linker builds its own GOT, and ld orders the slots its own way. So the
words that address the GOT (GOT-relative relocation fields) are compared by what they lead to:
the slot each one designates must hold the same address in both images. Every other byte must
be identical.
"""

import struct
import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

# Fixed addresses for the comparison: RP2040-like for ARM (SRAM, flash), anything for x64.
ADDRESSES = {
    4: dict(text=0x20010000, bss=0x20030000, qstr_table=0x20038000, fun_table=0x10020000, objects=0x10030000),
    8: dict(text=0x7F0000010000, bss=0x7F0000030000, qstr_table=0x7F0000038000, fun_table=0x7F0000020000,
            objects=0x7F0000040000),
}

# mp_fun_table entries that hold firmware objects (py/nativeglue.h: "start at index 73").
FUN_TABLE_OBJECTS = [
    "mp_type_type", "mp_type_str", "mp_type_list", "mp_type_dict", "mp_type_fun_builtin_0",
    "mp_type_fun_builtin_1", "mp_type_fun_builtin_2", "mp_type_fun_builtin_3", "mp_type_fun_builtin_var",
    "mp_type_Exception", "mp_stream_read_obj", "mp_stream_readinto_obj",
    "mp_stream_unbuffered_readline_obj", "mp_stream_write_obj",
]
FIRST_OBJECT = 73

# GOT-relative relocation types (ELF numbers) and what their field holds: the GOT origin
# relative to the place, a slot relative to the origin or to the place, or an address
# relative to the origin.
GOT_RELATIVE = {
    # R_ARM_BASE_PREL, R_ARM_GOT_BREL, R_ARM_GOT_PREL, R_ARM_GOTOFF32
    "EM_ARM": {25: "got_origin", 26: "slot_from_origin", 96: "slot_pc", 24: "from_origin"},
    # R_X86_64_GOTPCREL, R_X86_64_GOTPCRELX, R_X86_64_REX_GOTPCRELX
    "EM_X86_64": {9: "slot_pc", 41: "slot_pc", 42: "slot_pc"},
}

STUBS = {
    "EM_ARM": ("arm-none-eabi-as", ".syntax unified\n.thumb\n.text\npush {r4, lr}\nbl mpy_init\npop {r4, pc}\n"),
    "EM_X86_64": ("as", ".text\njmp mpy_init\n.section .note.GNU-stack,\"\",@progbits\n"),
}


def fun_table(word):
    """A fake mp_fun_table: entry k of the firmware-object part points at objects + 0x100 * k."""
    base = ADDRESSES[word]["objects"]
    return [base + 0x100 * k for k in range(FIRST_OBJECT + len(FUN_TABLE_OBJECTS))]


def load_ours(mpy):
    a = ADDRESSES[mpy.word]
    return mpy.load(a["text"], a["bss"], a["qstr_table"], a["fun_table"], fun_table(mpy.word))


class LdImage:
    """The sections of ld's output that matter, by address."""

    def __init__(self, path):
        with open(path, "rb") as f:
            elf = ELFFile(f)
            self.sections = {s.name: (s["sh_addr"], s.data() if s["sh_type"] != "SHT_NOBITS" else None,
                                      s["sh_size"]) for s in elf.iter_sections() if s["sh_flags"] & 2}

    def read(self, addr, n):
        for start, data, size in self.sections.values():
            if data is not None and start <= addr and addr + n <= start + size:
                return data[addr - start:addr - start + n]
        raise AssertionError("ld image has nothing at 0x%x" % addr)


def link_with_ld(machine, linked, object_paths, libs, work):
    """Link `object_paths` (+ libs) with GNU ld in the layout of `linked`; returns LdImage."""
    word = 8 if machine == "EM_X86_64" else 4
    a = ADDRESSES[word]
    prefix = "arm-none-eabi-" if machine == "EM_ARM" else ""
    assembler, stub_src = STUBS[machine]
    (work / "entry_stub.s").write_text(stub_src)
    cpu = ["-mcpu=cortex-m0plus"] if machine == "EM_ARM" else []
    subprocess.run([assembler] + cpu + [str(work / "entry_stub.s"), "-o", str(work / "entry_stub.o")], check=True)

    def pattern(sec):
        if sec.obj.name in linked.libgcc_members:
            return "*libgcc.a:%s(%s)" % (sec.obj.name, sec.name)
        return "*/%s(%s)" % (sec.obj.name, sec.name)

    text = "\n    ".join(pattern(s) for s in linked.sections if s.region == "text")
    bss = "\n    ".join(pattern(s) for s in linked.sections if s.region == "bss")
    script = """ENTRY(mpy_init)
SECTIONS {
  .text 0x%x : {
    */entry_stub.o(.text)
    %s
  } =0
  .got : { *(.got) }
  .got.plt : { *(.got.plt) }
  .bss 0x%x : {
    %s
  }
  /DISCARD/ : { *(.eh_frame) *(.ARM.exidx*) *(.ARM.extab*) }
}
mp_fun_table = 0x%x;
mp_native_qstr_table = 0x%x;
""" % (a["text"], text, a["bss"], bss, a["fun_table"], a["qstr_table"])
    table = fun_table(word)
    script += "".join("%s = 0x%x;\n" % (name, table[FIRST_OBJECT + i]) for i, name in enumerate(FUN_TABLE_OBJECTS))
    (work / "layout.ld").write_text(script)
    out = work / "reference.elf"
    cmd = [prefix + "ld", "-T", str(work / "layout.ld"), "-o", str(out), str(work / "entry_stub.o")]
    cmd += [str(p) for p in object_paths] + [str(p) for p in libs]
    if machine == "EM_X86_64":
        cmd += ["--no-relax", "--no-warn-rwx-segments"]  # keep GOT loads as GOT loads
    subprocess.run(cmd, check=True, capture_output=True)
    return LdImage(out)


def got_relative_sites(machine, linked, object_paths, base):
    """{address: (how, addend, field size)} of GOT-relative fields, from the input objects."""
    by_name = {Path(p).name: p for p in object_paths}
    kinds = GOT_RELATIVE[machine]
    sites = {}
    for sec in linked.sections:
        if sec.obj.name not in by_name:
            continue  # a libgcc member: a GOT-relative field in it would show as a byte difference
        with open(by_name[sec.obj.name], "rb") as f:
            elf = ELFFile(f)
            header = elf.get_section_by_name(sec.name)
            data = header.data()
            for rs in elf.iter_sections():
                if not isinstance(rs, RelocationSection) or elf.get_section(rs["sh_info"]).name != sec.name:
                    continue
                for r in rs.iter_relocations():
                    how = kinds.get(r["r_info_type"])
                    if how:
                        addend = r["r_addend"] if rs.is_RELA() else struct.unpack_from("<i", data, r["r_offset"])[0]
                        sites[base + sec.offset + r["r_offset"]] = (how, addend)
    return sites


def compare(ours, ld, sites, word):
    """Assert that our loaded text `ours` and ld's image agree (see the module docstring)."""
    text_addr, ld_text, size = ld.sections[".text"]
    assert len(ours) >= size, "our text is shorter than ld's"
    fields = {addr + i for addr in sites for i in range(4)}
    diffs = [i for i in range(size) if ours[i] != ld_text[i] and text_addr + i not in fields]
    assert not diffs, "bytes differ from GNU ld at text offsets %s" % ", ".join("0x%x" % d for d in diffs[:8])

    def field(image_read, addr):
        return struct.unpack("<i", image_read(addr, 4))[0]

    def ours_read(addr, n):
        assert text_addr <= addr and addr + n <= text_addr + len(ours), "0x%x is outside our text" % addr
        return ours[addr - text_addr:addr - text_addr + n]

    # Each linker's GOT origin, from the fields that hold "origin + A - P" (R_ARM_BASE_PREL).
    origins = [{p + field(read, p) - addend for p, (how, addend) in sites.items() if how == "got_origin"}
               for read in (ours_read, ld.read)]
    assert all(len(o) <= 1 for o in origins), "inconsistent GOT origin"
    our_origin, ld_origin = [o.pop() if o else None for o in origins]
    for p, (how, addend) in sites.items():
        mine, theirs = field(ours_read, p), field(ld.read, p)
        if how == "got_origin":
            continue
        if how == "from_origin":  # an address relative to the GOT origin
            assert our_origin + mine == ld_origin + theirs, "GOT-relative address at 0x%x" % p
            continue
        if how == "slot_from_origin":
            ours_slot, ld_slot = our_origin + mine - addend, ld_origin + theirs - addend
        else:  # slot_pc: the slot's address relative to the place
            ours_slot, ld_slot = p + mine - addend, p + theirs - addend
        assert ours_read(ours_slot, word) == ld.read(ld_slot, word), "GOT slot used at 0x%x" % p
    return len(sites)
