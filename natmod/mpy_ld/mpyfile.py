"""Write a linked module as a .mpy file (format: py/persistentcode.c, mp_raw_code_load)."""

from .link import OP_QSTR_TABLE
from .runtime import MPY_SUB_VERSION, MPY_VERSION

SMALL_INT_BITS = 31  # header[3]: loadable by any port whose small ints have at least 31 bits
KIND_NATIVE_VIPER = 2  # MP_CODE_NATIVE_VIPER - MP_CODE_BYTECODE, in the raw code's kind bits
SCOPE_VIPERRELOC = 0x10  # py/runtime0.h: MP_SCOPE_FLAG_VIPERRELOC
SCOPE_VIPERBSS = 0x40  # MP_SCOPE_FLAG_VIPERBSS (VIPERRODATA is unused: rodata lives in text)

# Loader relocation ops for the regions (mp_native_relocate): dest << 1, +1 for "n follows".
_REGION_OP = {"text": 0, "bss": 4}


def vuint(n):
    """7 bits per byte, most significant group first, bit 7 set on all but the last byte."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _qstr(s):
    b = s.encode()
    return vuint(len(b) << 1) + b + b"\0"


def reloc_stream(relocs):
    """Encode [(word index in text, dest)] sorted by index; dest "text", "bss" or an op >= 6.

    Each op byte is dest << 1 | has_offset. The loader's write pointer advances one word per
    relocation, so an offset (word_index << 1, 0 = in text) is only written when the next
    relocation is not the word right after the previous one; a run of consecutive words going
    to the same region is one op with a count.
    """
    out = bytearray()
    i, here = 0, None
    while i < len(relocs):
        index, dest = relocs[i]
        n = 1
        if dest in _REGION_OP:
            while i + n < len(relocs) and relocs[i + n] == (index + n, dest):
                n += 1
            op = _REGION_OP[dest] + (n > 1)
        else:
            assert OP_QSTR_TABLE <= dest <= 0x7E  # op byte 0xFF ends the stream
            op = dest
        out.append(op << 1 | (index != here))
        if index != here:
            out += vuint(index << 1)
        if n > 1:
            out += vuint(n)
        i += n
        here = index + n
    return bytes(out + b"\xff")


def mpy_bytes(linked, source_name):
    """The .mpy file of a module: header, qstrs, and one native viper raw code (the module)."""
    out = bytearray(b"M" + bytes([MPY_VERSION, linked.arch.code << 2 | MPY_SUB_VERSION, SMALL_INT_BITS]))
    out += vuint(1 + len(linked.qstrs)) + vuint(0)  # qstrs; no constant objects
    out += _qstr(source_name)
    for q in linked.qstrs:
        out += _qstr(q)
    out += vuint(len(linked.text) << 3 | KIND_NATIVE_VIPER)  # no children
    out += linked.text
    flags = (SCOPE_VIPERRELOC if linked.relocs else 0) | (SCOPE_VIPERBSS if linked.bss_size else 0)
    out += vuint(flags)
    if linked.bss_size:
        out += vuint(linked.bss_size)
    if linked.relocs:
        out += reloc_stream(linked.relocs)
    return bytes(out)
