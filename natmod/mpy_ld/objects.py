"""Relocatable ELF objects as the linker sees them: placed sections, symbols, relocations."""

import io

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection


class LinkError(Exception):
    """A module that cannot be linked; the message names the object, symbol and reason."""


class Section:
    """One input section that goes into the module: kind is "text", "rodata" or "bss"."""

    def __init__(self, obj, index, name, kind, align, data, size):
        self.obj, self.index, self.name, self.kind = obj, index, name, kind
        self.align, self.data, self.size = align, data, size
        self.offset = None  # in its region (text or bss), set by the layout

    @property
    def region(self):
        return "bss" if self.kind == "bss" else "text"

    def __repr__(self):
        return "%s(%s)" % (self.obj.name, self.name)


class Reloc:
    def __init__(self, offset, type_name, symbol, addend):
        self.offset, self.type_name, self.symbol, self.addend = offset, type_name, symbol, addend


# Sections with no place in a module: unwind tables (nothing unwinds native module code) and notes.
_IGNORED = (".eh_frame", ".ARM.exidx", ".ARM.extab", ".note")


def _kind(name, header):
    """Where an allocated section goes, or None to leave it out."""
    if name.startswith(_IGNORED):
        return None
    if name == ".text" or name.startswith(".text."):
        return "text"
    if name.startswith((".rodata", ".data.rel.ro")):
        # .data.rel.ro is read-only data with pointers in it (e.g. a const table of function
        # pointers): the linker turns each pointer into a loader relocation.
        return "rodata"
    if header["sh_type"] == "SHT_NOBITS" and name.startswith(".bss"):
        return "bss"
    if name.startswith(".data"):
        return "data"
    raise LinkError("unsupported section %s" % name)


class ObjectFile:
    def __init__(self, name, data, reloc_types):
        self.name = name
        self.elf = ELFFile(io.BytesIO(data))
        self.machine = self.elf["e_machine"]
        self.symtab = self.elf.get_section_by_name(".symtab")
        self.sections = {}  # section index -> Section
        for index, header in enumerate(self.elf.iter_sections()):
            if not header["sh_flags"] & 2 or header["sh_size"] == 0:  # SHF_ALLOC, non-empty
                continue
            try:
                kind = _kind(header.name, header)
            except LinkError as e:
                raise LinkError("%s: %s" % (name, e)) from None
            if kind == "data":
                raise LinkError(
                    "%s: initialised data in %s (%s): the loader has no .data; make it const, or "
                    "zero-initialised and set it in mpy_init" % (name, header.name, self.names_in(index)))
            if kind is not None:
                data = None if kind == "bss" else bytearray(header.data())
                self.sections[index] = Section(self, index, header.name, kind,
                                               max(header["sh_addralign"], 1), data, header["sh_size"])
        self.relocs = {}  # section index -> [Reloc]
        for header in self.elf.iter_sections():
            if isinstance(header, RelocationSection) and header["sh_info"] in self.sections:
                rela = header.is_RELA()
                self.relocs[header["sh_info"]] = [
                    Reloc(r["r_offset"], reloc_types.get(r["r_info_type"], "type %d" % r["r_info_type"]),
                          self.symtab.get_symbol(r["r_info_sym"]), r["r_addend"] if rela else None)
                    for r in header.iter_relocations()]

    def names_in(self, index):
        """The symbols defined in section `index`, for messages."""
        names = [s.name for s in self.symtab.iter_symbols()
                 if s["st_shndx"] == index and s.name and not s.name.startswith("$")
                 and s["st_info"]["type"] != "STT_SECTION"]
        return ", ".join(names) or "unnamed"

    def defined_globals(self):
        for sym in self.symtab.iter_symbols():
            if sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK") and isinstance(sym["st_shndx"], int):
                yield sym

    def undefined_references(self):
        """Names of undefined symbols that relocations of loaded sections refer to."""
        for relocs in self.relocs.values():
            for r in relocs:
                if r.symbol["st_shndx"] == "SHN_UNDEF" and r.symbol.name:
                    yield r.symbol.name


def load(path, reloc_types):
    with open(path, "rb") as f:
        return ObjectFile(str(path).rsplit("/", 1)[-1], f.read(), reloc_types)
