"""x86-64 (the unix port): entry stub and relocations.

x86-64 objects use RELA relocations (explicit addend A). Notation as in the psABI: S the
target's address, P the place, GOT(S) the address of S's GOT slot; all are offsets in the text
block, the loader's relocations (link.py) make the absolute ones absolute.
"""

import struct

MACHINE = "EM_X86_64"

RELOC_TYPES = {
    1: "R_X86_64_64",
    2: "R_X86_64_PC32",
    4: "R_X86_64_PLT32",
    9: "R_X86_64_GOTPCREL",
    41: "R_X86_64_GOTPCRELX",
    42: "R_X86_64_REX_GOTPCRELX",
}


def entry_stub(entry):
    """`jmp rel32` to mpy_init: reaches anywhere in the module; the arguments are untouched."""
    return b"\xe9" + struct.pack("<i", entry - 5)


def _put_rel32(ln, sec, rel, p, value):
    if not -(1 << 31) <= value < (1 << 31):
        ln.fail(sec, rel, "32-bit displacement out of range")
    struct.pack_into("<i", ln.image, p, value)


def apply(ln, sec, rel):
    """Resolve one relocation of section `sec` into ln.image (ln: the Linker)."""
    kind = rel.type_name
    p = sec.offset + rel.offset
    if kind == "R_X86_64_64":
        ln.absolute(sec, rel, rel.addend)
    elif kind in ("R_X86_64_PC32", "R_X86_64_PLT32"):  # a PLT is not needed: calls stay in the module
        _put_rel32(ln, sec, rel, p, ln.text_target(sec, rel).value + rel.addend - p)
    elif kind in ("R_X86_64_GOTPCREL", "R_X86_64_GOTPCRELX", "R_X86_64_REX_GOTPCRELX"):
        # The X forms allow turning the load from the GOT into a lea; keeping the GOT load is
        # always correct.
        _put_rel32(ln, sec, rel, p, ln.got_entry(sec, rel) + rel.addend - p)
    else:
        ln.fail(sec, rel, "relocation type not supported by this linker")
