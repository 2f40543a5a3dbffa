"""ARM Thumb (armv6m, armv7m, armv7emsp): entry stub and relocations.

ARM objects use REL relocations: the addend A is stored in the field being patched. Notation
is AAELF's: S the target's address, T 1 for a Thumb function, P the place, GOT_ORG the GOT
origin (our GOT's start), GOT(S) the address of S's GOT slot. All addresses are offsets in the
text block; the loader's relocations (link.py) make the absolute ones absolute.
"""

import struct

MACHINE = "EM_ARM"

# The kinds gcc emits for -fpic Thumb code and libgcc's helpers, by ELF number.
RELOC_TYPES = {
    2: "R_ARM_ABS32",
    3: "R_ARM_REL32",
    10: "R_ARM_THM_CALL",
    24: "R_ARM_GOTOFF32",
    25: "R_ARM_BASE_PREL",
    26: "R_ARM_GOT_BREL",
    30: "R_ARM_THM_JUMP24",
    38: "R_ARM_TARGET1",
    96: "R_ARM_GOT_PREL",
}


def entry_stub(entry):
    """Code at text offset 0 that enters mpy_init at `entry`, however far away it is.

    A 16-bit `b` reaches only +-2 KB (the bug that broke armv6m modules over ~2 KB before
    MicroPython 1.24). `bl` reaches +-16 MB on every Thumb arch but overwrites lr, so save it:
    push {r4, lr}; bl mpy_init; pop {r4, pc}. r4 keeps the stack 8-byte aligned; the four
    arguments stay in r0-r3 and mpy_init's result in r0.
    """
    stub = bytearray(struct.pack("<HHHH", 0xB510, 0xF000, 0xF800, 0xBD10))
    _put_branch(stub, 2, entry - (2 + 4))
    return bytes(stub)


def _word(image, p):
    return int.from_bytes(image[p:p + 4], "little", signed=True)


def _put_word(image, p, value):
    image[p:p + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")


def _branch(image, p):
    """Offset encoded in a Thumb-2 BL / B.W at p (the two halfwords of encoding T1 / T4)."""
    hw1, hw2 = struct.unpack_from("<HH", image, p)
    s = (hw1 >> 10) & 1
    i1 = 1 - (((hw2 >> 13) & 1) ^ s)
    i2 = 1 - (((hw2 >> 11) & 1) ^ s)
    off = (s << 24) | (i1 << 23) | (i2 << 22) | ((hw1 & 0x3FF) << 12) | ((hw2 & 0x7FF) << 1)
    return off - (1 << 25) if s else off


def _put_branch(image, p, off):
    if off & 1 or not -(1 << 24) <= off < (1 << 24):
        raise ValueError("branch offset %d out of range" % off)
    s, i1, i2 = (off >> 24) & 1, (off >> 23) & 1, (off >> 22) & 1
    hw1, hw2 = struct.unpack_from("<HH", image, p)
    hw1 = (hw1 & 0xF800) | (s << 10) | ((off >> 12) & 0x3FF)
    hw2 = (hw2 & 0xD000) | ((1 - i1 ^ s) << 13) | ((1 - i2 ^ s) << 11) | ((off >> 1) & 0x7FF)
    struct.pack_into("<HH", image, p, hw1, hw2)


def apply(ln, sec, rel):
    """Resolve one relocation of section `sec` into ln.image (ln: the Linker)."""
    kind, image = rel.type_name, ln.image
    p = sec.offset + rel.offset
    if kind in ("R_ARM_THM_CALL", "R_ARM_THM_JUMP24"):
        t = ln.text_target(sec, rel)
        if not t.thumb:  # Cortex-M only runs Thumb code: a branch must land on a Thumb function
            ln.fail(sec, rel, "target is not a Thumb function")
        try:
            _put_branch(image, p, t.value + _branch(image, p) - p)
        except ValueError as e:
            ln.fail(sec, rel, str(e))
    elif kind in ("R_ARM_ABS32", "R_ARM_TARGET1"):  # TARGET1 is ABS32 on bare-metal ARM
        ln.absolute(sec, rel, _word(image, p))
    elif kind == "R_ARM_REL32":
        t = ln.text_target(sec, rel)
        _put_word(image, p, ((t.value + _word(image, p)) | t.thumb) - p)
    elif kind == "R_ARM_BASE_PREL":  # gcc: the GOT origin, PC-relative
        t = ln.resolve(sec.obj, rel.symbol)
        if t.name != "_GLOBAL_OFFSET_TABLE_":
            ln.fail(sec, rel, "only the GOT origin is supported as a base")
        _put_word(image, p, t.value + _word(image, p) - p)
    elif kind == "R_ARM_GOT_BREL":  # gcc: a global's GOT slot, from the GOT origin
        _put_word(image, p, ln.got_entry(sec, rel) + _word(image, p) - ln.got_start)
    elif kind == "R_ARM_GOT_PREL":
        _put_word(image, p, ln.got_entry(sec, rel) + _word(image, p) - p)
    elif kind == "R_ARM_GOTOFF32":
        t = ln.text_target(sec, rel)
        _put_word(image, p, ((t.value + _word(image, p)) | t.thumb) - ln.got_start)
    else:
        ln.fail(sec, rel, "relocation type not supported by this linker")
