"""Run an armv6m native module on an emulated Cortex-M0+ (rp2040py): the nearest thing to a
Pico here.

The .mpy is loaded at RP2040 SRAM addresses by natmod_mpyload (the loader's relocation pass),
then executed instruction by instruction. MicroPython's runtime is a Python stand-in: every
mp_fun_table entry the module may call points at a BKPT; when the core hits it, Python does
what that runtime function would (on stand-in objects) and returns to the caller. Objects
are opaque handles the module passes around without looking inside, as in the real ABI.
"""

import struct

from natmod_mpyload import NativeMpy

SRAM = 0x20000000
TRAPS = SRAM  # mp_fun_table entry k is a BKPT at TRAPS + 2k
RETURN = SRAM + 0x200  # where a call made from Python returns to
FUN_TABLE = SRAM + 0x1000
QSTR_TABLE = SRAM + 0x1400
SELF = SRAM + 0x1800  # mpy_init's mp_obj_fun_bc_t; its context right after
DATA = SRAM + 0x2000  # buffers handed to the module
TEXT = SRAM + 0x10000
BSS = SRAM + 0x30000
STACK_TOP = SRAM + 0x41000
HANDLES = 0x50000000  # stand-in objects: HANDLES + 8 * i (never dereferenced by the module)
DYN_QSTRS = 1000  # the qstr numbers the stand-in loader gives the module's own qstrs

# py/nativeglue.h: mp_fun_table entries (index) the stand-in implements.
NONE, FALSE, TRUE = 0, 1, 2
FROM_OBJ, TO_OBJ, SWAP_GLOBALS, LOAD_GLOBAL, LOAD_ATTR, STORE_GLOBAL, NEW_TUPLE = 3, 4, 5, 7, 9, 13, 19
RAISE_MSG, NEW_STR, GET_BUFFER = 55, 57, 65
TYPES = 73  # 73.. firmware objects (mp_type_type, ...); 77..80 mp_type_fun_builtin_0..3
N_ENTRIES = 87
MP_NATIVE_TYPE_QSTR = 8


class MicroPythonError(Exception):
    """An exception the module raised: (type name, message)."""


class Obj(int):
    """A stand-in object's handle (what the module sees as an mp_obj_t)."""


class Module:
    def __init__(self, mpy_bytes, static_qstrs):
        from rp2040py.rp2040 import RP2040

        mpy = NativeMpy(mpy_bytes)
        assert mpy.arch == 4, "not armv6m"
        self.objects = []
        self.qstr_names = {n: q for q, n in static_qstrs.items()}
        self.qstr_names.update({DYN_QSTRS + i: q for i, q in enumerate(mpy.qstrs)})
        table = [TRAPS + 2 * k + 1 for k in range(N_ENTRIES)]
        table[NONE:TRUE + 1] = [self.handle(v) for v in (None, False, True)]
        for k in range(TYPES, N_ENTRIES):
            table[k] = self.handle(("firmware object", k))

        self.chip = chip = RP2040()
        chip.on_break = self._trap
        self.core = chip.core
        chip.sram[0:2 * N_ENTRIES] = b"\x00\xbe" * N_ENTRIES  # bkpt #0
        chip.sram[RETURN - SRAM:RETURN - SRAM + 2] = b"\x00\xbe"
        self._put(FUN_TABLE, struct.pack("<%dI" % N_ENTRIES, *table))
        self._put(QSTR_TABLE, struct.pack("<%dH" % len(mpy.qstrs), *range(DYN_QSTRS, DYN_QSTRS + len(mpy.qstrs))))
        # self->context->module.globals: fun_bc = {base, context}, context = {module = {base, globals}}
        self._put(SELF, struct.pack("<4I", 0, SELF + 8, 0, self.handle("module globals")))
        self._put(TEXT, mpy.load(TEXT, BSS, QSTR_TABLE, FUN_TABLE, table))
        self.data_end = DATA
        self.globals = {}

    def _put(self, addr, data):
        self.chip.sram[addr - SRAM:addr - SRAM + len(data)] = data

    def _get(self, addr, n):
        return bytes(self.chip.sram[addr - SRAM:addr - SRAM + n])

    def handle(self, value):
        self.objects.append(value)
        return Obj(HANDLES + 8 * (len(self.objects) - 1))

    def value(self, obj):
        assert obj >= HANDLES and (obj - HANDLES) % 8 == 0, "0x%x is not an object" % obj
        return self.objects[(obj - HANDLES) // 8]

    def call(self, addr, *args, limit=200_000):
        """Call Thumb function `addr` with word arguments; returns r0."""
        core = self.core
        for i, a in enumerate(args):
            core.registers[i] = a & 0xFFFFFFFF
        core.sp, core.lr, core.pc = STACK_TOP, RETURN | 1, addr & ~1
        self._returned = False
        n = 0
        while not self._returned:
            core.execute_instruction()
            n += 1
            assert n < limit, "no return after %d instructions" % n
        return core.registers[0]

    def _trap(self, code):
        core = self.core
        pc = core.pc - 2
        if pc == RETURN:
            self._returned = True
            return
        k = (pc - TRAPS) // 2
        r = core.registers
        result = self._runtime(k, r[0], r[1], r[2], r[3])
        r[0] = result & 0xFFFFFFFF if result is not None else 0
        core.pc = core.lr & ~1

    def _runtime(self, k, a0, a1, a2, a3):
        """What mp_fun_table[k] does, on stand-in objects."""
        if k == FROM_OBJ:
            return self.value(a0)
        if k == TO_OBJ:
            if a1 == MP_NATIVE_TYPE_QSTR:
                return self.handle(self.qstr_names[a0])
            return self.handle(a0 - (1 << 32) if a1 == 2 and a0 >= 1 << 31 else a0)  # 2: INT
        if k == SWAP_GLOBALS:
            return self.handle("previous globals")
        if k == LOAD_GLOBAL:
            return self.handle(("global", self.qstr_names[a0]))
        if k == LOAD_ATTR:
            return self.handle(getattr(self.value(a0), self.qstr_names[a1]))
        if k == STORE_GLOBAL:
            self.globals[self.qstr_names[a0]] = a1
            return None
        if k == NEW_TUPLE:
            return self.handle(tuple(self.value(o) for o in struct.unpack("<%dI" % a0, self._get(a1, 4 * a0))))
        if k == RAISE_MSG:
            raise MicroPythonError(self.value(a0)[1], self._cstring(a1))
        if k == NEW_STR:
            return self.handle(self._get(a0, a1).decode())
        if k == GET_BUFFER:  # (obj, mp_buffer_info_t *, flags): our buffers are bytes in SRAM
            addr, data = self.value(a0)
            self._put(a1, struct.pack("<IIi", addr, len(data), ord("b")))
            return 1
        raise AssertionError("the module called mp_fun_table[%d], which the stand-in lacks" % k)

    def _cstring(self, addr):
        out = b""
        while not out.endswith(b"\0"):
            out += self._get(addr + len(out), 1)
        return out[:-1].decode()

    def _argument(self, value):
        """A Python value as an object: bytes become a buffer whose data lives in SRAM."""
        if not isinstance(value, bytes):
            return self.handle(value)
        addr = self.data_end
        self._put(addr, value)
        self.data_end = (addr + len(value) + 3) & ~3
        return self.handle((addr, value))

    def init(self):
        """Run mpy_init from text offset 0 (the entry stub), as the firmware would."""
        assert self.value(self.call(TEXT, SELF, 0, 0, 0)) is None

    def function(self, name):
        """A Python callable for global `name` (a const mp_obj_fun_builtin_fixed_t in text)."""
        obj = self.globals[name]
        base_type, fun = struct.unpack("<II", self._get(obj, 8))

        def call(*args):
            assert self.value(base_type) == ("firmware object", 77 + len(args)), "wrong builtin type"
            return self.value(self.call(fun, *[self._argument(a) for a in args]))
        return call
