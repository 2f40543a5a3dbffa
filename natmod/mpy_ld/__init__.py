"""picotrain's ELF -> .mpy linker for MicroPython dynamic native modules (mpy v6.3).

Written from MicroPython's loader (py/persistentcode.c) and runtime headers; see docs/NATMOD.md.

    linked = link("armv6m", ["a.o", "b.o"], config_header_text, mpy_dir, libs=[libgcc_a])
    open("mod.mpy", "wb").write(mpy_bytes(linked, "mod.c"))
"""

from elftools.elf.enums import ENUM_RELOC_TYPE_ARM, ENUM_RELOC_TYPE_x64

from . import arm, runtime, x64
from .link import Linker
from .mpyfile import mpy_bytes
from .objects import LinkError

__all__ = ["ARCHES", "LinkError", "link", "mpy_bytes"]


class Arch:
    def __init__(self, name, code, word, backend, elf_names):
        self.name = name
        self.code = code  # py/persistentcode.h: MP_NATIVE_ARCH_*
        self.word = word  # bytes per pointer: the unit of loader relocations
        self.thumb = backend is arm
        self.machine = backend.MACHINE
        # Names of every type, for error messages; the backend handles its RELOC_TYPES only.
        self.reloc_types = {v: k for k, v in elf_names.items()} | backend.RELOC_TYPES
        self.entry_stub = backend.entry_stub
        self.apply = backend.apply


ARCHES = {
    "x64": Arch("x64", 2, 8, x64, ENUM_RELOC_TYPE_x64),
    "armv6m": Arch("armv6m", 4, 4, arm, ENUM_RELOC_TYPE_ARM),
    "armv7m": Arch("armv7m", 5, 4, arm, ENUM_RELOC_TYPE_ARM),
    "armv7emsp": Arch("armv7emsp", 7, 4, arm, ENUM_RELOC_TYPE_ARM),
}


def link(arch, objects, config_header, mpy_dir, libs=()):
    """Link object files for `arch` (a name in ARCHES) into a Linked module.

    config_header: text of the module's generated config header (its qstrs); mpy_dir: the
    MicroPython tree the objects were compiled against; libs: archives to take helper
    functions from (libgcc.a). Raises LinkError with a clear message.
    """
    return Linker(ARCHES[arch], objects, config_header, runtime.fun_table_objects(mpy_dir), libs).link()
