"""A re-implementation, for tests, of how MicroPython loads a native .mpy.

Written from py/persistentcode.c (mp_raw_code_load, load_raw_code, mp_native_relocate) of
MicroPython 1.28, independently of natmod/mpy_ld: it is the oracle the linker is checked with.
Only what a dynamic native module uses is implemented (one native viper raw code, no
constant objects, no children); anything else is an assertion failure.
"""

import struct

ARCH_WORD = {2: 8, 4: 4, 5: 4, 7: 4}  # MP_NATIVE_ARCH_X64, ARMV6M, ARMV7M, ARMV7EMSP


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def byte(self):
        self.pos += 1
        return self.data[self.pos - 1]

    def bytes(self, n):
        self.pos += n
        assert self.pos <= len(self.data), "truncated .mpy"
        return self.data[self.pos - n:self.pos]

    def uint(self):  # read_uint
        n = 0
        while True:
            b = self.byte()
            n = (n << 7) | (b & 0x7F)
            if not b & 0x80:
                return n


class NativeMpy:
    """The parts of a native module's .mpy the loader uses."""

    def __init__(self, data):
        r = Reader(data)
        magic, self.version, feature, self.small_int_bits = r.bytes(4)
        assert magic == ord("M")
        self.arch = (feature >> 2) & 0x2F  # MPY_FEATURE_DECODE_ARCH
        self.sub_version = feature & 3  # MPY_FEATURE_DECODE_SUB_VERSION
        self.word = ARCH_WORD[self.arch]
        n_qstr, n_obj = r.uint(), r.uint()
        assert n_obj == 0
        self.qstrs = []
        for _ in range(n_qstr):  # load_qstr: odd = static qstr number, even = length
            n = r.uint()
            if n & 1:
                self.qstrs.append(n >> 1)
            else:
                self.qstrs.append(r.bytes(n >> 1).decode())
                assert r.byte() == 0
        kind_len = r.uint()
        assert kind_len & 3 == 2, "not MP_CODE_NATIVE_VIPER"
        assert not kind_len & 4, "children"
        self.text = bytes(r.bytes(kind_len >> 3))
        self.scope_flags = r.uint()
        assert not self.scope_flags & 0x20, "separate rodata"
        self.bss_size = r.uint() if self.scope_flags & 0x40 else 0
        self.reloc_pos = r.pos
        self.reader = r
        if self.scope_flags & 0x10:
            self.relocations()  # walk the stream once to find the end of the file
        assert r.pos == len(data), "%d bytes after the module" % (len(data) - r.pos)

    def relocations(self):
        """[(word index in text, dest)], see decode_relocations."""
        if not self.scope_flags & 0x10:  # MP_SCOPE_FLAG_VIPERRELOC
            return []
        self.reader.pos = self.reloc_pos
        return decode_relocations(self.reader)

    def load(self, text_base, bss_base, qstr_table, fun_table_addr, fun_table):
        """The text as mp_native_relocate leaves it: `*addr_to_adjust++ += dest` per relocation."""
        fmt = "<Q" if self.word == 8 else "<I"
        mask = (1 << 8 * self.word) - 1
        bases = {0: text_base, 4: bss_base, 6: qstr_table, 8: fun_table_addr}
        text = bytearray(self.text)
        for index, dest in self.relocations():
            add = fun_table[dest - 9] if dest >= 9 else bases[dest]  # no rodata, no object table
            (v,) = struct.unpack_from(fmt, text, index * self.word)
            struct.pack_into(fmt, text, index * self.word, (v + add) & mask)
        return bytes(text)


def decode_relocations(r):
    """mp_native_relocate's reading of the stream: [(word index in text, dest)] in order.

    dest as the loader numbers it after the op's first shift, with the run-length bit
    dropped: 0 text, 2 rodata, 4 BSS, 6 qstr table, 7 object table, 8 &mp_fun_table,
    9 + k mp_fun_table[k].
    """
    out, index = [], None
    while True:
        op = r.byte()
        if op == 0xFF:
            return out
        if op & 1:
            addr = r.uint()
            assert addr & 1 == 0, "relocation in rodata"
            index = addr >> 1
        op >>= 1
        n = 1
        if op <= 5:
            if op & 1:
                n = r.uint()
            op >>= 1
            dest = op * 2
        else:
            dest = op
        for _ in range(n):
            out.append((index, dest))
            index += 1
