"""Link relocatable objects into the image of a native module.

The module's memory, as the loader (py/persistentcode.c) makes it:
- text: one block read from the .mpy and relocated in place. We put everything read-only in
  it: an entry stub, all .text, then all .rodata/.data.rel.ro, then the GOT. Code reaches
  its read-only data PC-relatively, so they must stay at fixed distances: one block.
- BSS: a zeroed block the loader allocates apart from text, so text can only reach it through
  absolute pointers (GOT entries, pointers in const tables) that the loader relocates.
- external addresses known only at load time: the qstr table, mp_fun_table, and the firmware
  objects mp_fun_table points to (types, stream methods).

Every absolute pointer in text becomes a loader relocation: the word holds the offset within
its region and the loader adds the region's address (or the external address) at load time.
"""

import re

from . import qstrs as qstrs_mod
from .archive import Archive
from .objects import LinkError, ObjectFile, load

# Loader relocation destinations (mp_native_relocate): op 0 text, 2 rodata (unused: our
# rodata is in text), 4 BSS (odd ops are the same with a run length), 6 the qstr table,
# 7 the object table (unused), 8 &mp_fun_table, 9 + k the value of mp_fun_table[k].
OP_QSTR_TABLE = 6
OP_FUN_TABLE = 8
OP_FUN_TABLE_ENTRY = 9

# The one symbol the linker defines: the GOT origin, which ARM code adds its GOT offsets to.
GOT_SYMBOL = "_GLOBAL_OFFSET_TABLE_"

# The loader allocates text and BSS from the GC heap, whose blocks are 4 words
# (MICROPY_BYTES_PER_GC_BLOCK): no section may need more alignment than that.
GC_BLOCK_WORDS = 4

# Soft-float helpers of libgcc (AEABI and generic names): a module must stay integer-only.
# __aeabi_fmul, __aeabi_cdcmple, __aeabi_i2f, __aeabi_ul2d, __floatsisf, __fixdfsi, __addsf3, ...
FLOAT_HELPER = re.compile(r"^__aeabi_(?:c?[fd]|u?[il]2[fd])|^__(?:float|fix)\w*[sdtx]f|[sdtx][fc][23]$")


class Target:
    """Where a symbol ends up: region "text" or "bss" (value = offset), or "ext" (value = op)."""

    def __init__(self, name, region, value, thumb=False):
        self.name, self.region, self.value, self.thumb = name, region, value, thumb

    def key(self):
        return (self.region, self.value, self.thumb)


class Linked:
    """The result: text image, BSS size, loader relocations and where everything went."""

    def __init__(self, arch, text, bss_size, relocs, qstrs, sections, symbols, got, libgcc_members):
        self.arch, self.text, self.bss_size, self.relocs = arch, text, bss_size, relocs
        self.qstrs = qstrs  # the module's own qstrs, table entries 1..
        self.sections = sections  # placed input sections, in layout order
        self.symbols = symbols  # {name: (region, offset)} of functions and objects
        self.got = got  # [(offset, Target)]
        self.libgcc_members = libgcc_members


class Linker:
    def __init__(self, arch, object_paths, config_header, fun_table_objects, libs=()):
        self.arch = arch
        self.qstrs = qstrs_mod.read_own_qstrs(config_header)
        self.externals = {qstrs_mod.TABLE_SYMBOL: OP_QSTR_TABLE, "mp_fun_table": OP_FUN_TABLE}
        for sym, k in fun_table_objects.items():
            self.externals[sym] = OP_FUN_TABLE_ENTRY + k
        self.objects = [load(p, arch.reloc_types) for p in object_paths]
        for obj in self.objects:
            if obj.machine != arch.machine:
                raise LinkError("%s: %s object, expected %s for %s" % (obj.name, obj.machine, arch.machine, arch.name))
        self.libgcc_members = self._pull_from_archives([Archive(p) for p in libs])
        self.globals = self._collect_globals()
        self.got_slots = {}  # Target.key() -> (offset, Target)
        self.loader_relocs = []  # (word index in text, dest): dest "text", "bss" or an op

    # -- symbols -------------------------------------------------------------------------

    def _pull_from_archives(self, archives):
        """Add the archive members that define what the objects leave undefined, transitively."""
        pulled = []
        while True:
            defined = {s.name for obj in self.objects for s in obj.defined_globals()}
            wanted = {}
            for obj in self.objects:
                for name in obj.undefined_references():
                    if name not in defined and name not in self.externals and name != GOT_SYMBOL:
                        wanted.setdefault(name, obj.name)
            floats = sorted(n for n in wanted if FLOAT_HELPER.search(n))
            if floats:
                raise LinkError("floating-point helper(s) %s (used by %s): modules must be integer-only"
                                % (", ".join(floats), ", ".join(sorted({wanted[n] for n in floats}))))
            found = _first_definition(archives, wanted)
            if not found:
                break
            member, data = found
            self.objects.append(ObjectFile(member, data, self.arch.reloc_types))
            pulled.append(member)
        if wanted:
            raise LinkError(
                "undefined symbol(s): %s. A module can only call the firmware through mp_fun_table "
                "(py/dynruntime.h); memset/memcpy must be defined in the module (docs/NATMOD.md)"
                % ", ".join("%s (used by %s)" % (n, wanted[n]) for n in sorted(wanted)))
        return pulled

    def _collect_globals(self):
        table = {}
        for obj in self.objects:
            for sym in obj.defined_globals():
                if sym.name in table and sym["st_info"]["bind"] == "STB_WEAK":
                    continue
                if sym.name in table and table[sym.name][1]["st_info"]["bind"] == "STB_GLOBAL":
                    raise LinkError("symbol %s defined in both %s and %s"
                                    % (sym.name, table[sym.name][0].name, obj.name))
                table[sym.name] = (obj, sym)
        return table

    def resolve(self, obj, sym):
        """The Target of a relocation's symbol, seen from object `obj`."""
        shndx = sym["st_shndx"]
        if shndx == "SHN_UNDEF":
            if sym.name == GOT_SYMBOL:
                return Target(GOT_SYMBOL, "text", self.got_start)
            if sym.name in self.globals:
                return self.resolve(*self.globals[sym.name])
            return Target(sym.name, "ext", self.externals[sym.name])
        if not isinstance(shndx, int):
            raise LinkError("%s: symbol %s is %s, unsupported (compile with -fno-common)" % (obj.name, sym.name, shndx))
        sec = obj.sections.get(shndx)
        if sec is None:
            raise LinkError("%s: %s refers to section %s, which is not part of the module"
                            % (obj.name, sym.name, obj.elf.get_section(shndx).name))
        value = sym["st_value"]
        thumb = self.arch.thumb and sym["st_info"]["type"] == "STT_FUNC" and value & 1
        # A reference to a static symbol is often made to its section: name what is in there.
        name = sym.name or "%s of %s (%s)" % (sec.name, obj.name, obj.names_in(shndx))
        return Target(name, sec.region, sec.offset + (value & ~1 if thumb else value), bool(thumb))

    # -- layout --------------------------------------------------------------------------

    def _layout(self):
        self.placed = []
        end = {"text": len(self.arch.entry_stub(0)), "bss": 0}
        for kind in ("text", "rodata", "bss"):
            for obj in self.objects:
                for sec in obj.sections.values():
                    if sec.kind != kind:
                        continue
                    if sec.align > GC_BLOCK_WORDS * self.arch.word:
                        raise LinkError("%s: %s needs %d-byte alignment, the loader gives %d"
                                        % (obj.name, sec.name, sec.align, GC_BLOCK_WORDS * self.arch.word))
                    sec.offset = _align(end[sec.region], sec.align)
                    end[sec.region] = sec.offset + sec.size
                    self.placed.append(sec)
        self.got_start = _align(end["text"], self.arch.word)
        self.image = bytearray(self.got_start)
        for sec in self.placed:
            if sec.data is not None:
                self.image[sec.offset:sec.offset + sec.size] = sec.data
        self.bss_size = end["bss"]

    # -- services for the relocation kinds of arm.py and x64.py -----------------------------

    def fail(self, sec, rel, why):
        sym = rel.symbol
        name = sym.name or sec.obj.elf.get_section(sym["st_shndx"]).name  # or a section symbol
        raise LinkError("%s: %s against %s at %s+0x%x: %s"
                        % (sec.obj.name, rel.type_name, name, sec.name, rel.offset, why))

    def text_target(self, sec, rel):
        """The target of a PC- or GOT-relative reference, which must lie in text."""
        t = self.resolve(sec.obj, rel.symbol)
        if t.region == "bss":
            self.fail(sec, rel, "BSS is allocated apart from text and reached only through the GOT: make "
                      "%s a non-static global (static zero-initialised variables are unsupported)" % t.name)
        if t.region == "ext":
            self.fail(sec, rel, "a firmware symbol is reachable only through the GOT or mp_fun_table")
        return t

    def got_entry(self, sec, rel):
        """Offset in text of the GOT slot holding the address of the relocation's symbol."""
        t = self.resolve(sec.obj, rel.symbol)
        if t.key() not in self.got_slots:
            offset = self.got_start + self.arch.word * len(self.got_slots)
            self.image += bytes(self.arch.word)
            self.got_slots[t.key()] = (offset, t)
            self.put_pointer(offset, t, 0)
        return self.got_slots[t.key()][0]

    def absolute(self, sec, rel, addend):
        """An absolute pointer (S + A, T on Thumb) in a relocation's field: the loader's job."""
        p = sec.offset + rel.offset
        if p % self.arch.word:
            self.fail(sec, rel, "pointer at an unaligned offset (the loader relocates whole words)")
        self.put_pointer(p, self.resolve(sec.obj, rel.symbol), addend)

    def put_pointer(self, offset, target, addend):
        """Store an absolute pointer at text `offset` (aligned) and have the loader relocate it."""
        if target.region == "ext":
            value, dest = addend, target.value
        else:
            value, dest = (target.value + addend) | target.thumb, target.region
        value &= (1 << 8 * self.arch.word) - 1
        self.image[offset:offset + self.arch.word] = value.to_bytes(self.arch.word, "little")
        self.loader_relocs.append((offset // self.arch.word, dest))

    # -- the link ------------------------------------------------------------------------

    def link(self):
        self._layout()
        entry = self.globals.get("mpy_init")
        if entry is None:
            raise LinkError("no mpy_init: the module's entry point is missing")
        entry = self.resolve(*entry)
        self.image[:len(self.arch.entry_stub(0))] = self.arch.entry_stub(entry.value)
        for obj in self.objects:
            for index, relocs in obj.relocs.items():
                sec = obj.sections[index]
                for rel in relocs:
                    self.arch.apply(self, sec, rel)
        symbols = {}
        for obj in self.objects:
            for sym in obj.symtab.iter_symbols():
                if sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT") and sym["st_shndx"] in obj.sections:
                    t = self.resolve(obj, sym)
                    symbols[sym.name] = (t.region, t.value)
        return Linked(self.arch, bytes(self.image), self.bss_size, sorted(self.loader_relocs), self.qstrs,
                      self.placed, symbols, sorted(self.got_slots.values(), key=lambda s: s[0]),
                      self.libgcc_members)


def _first_definition(archives, names):
    for name in sorted(names):
        for archive in archives:
            found = archive.member_defining(name)
            if found:
                return found
    return None


def _align(n, a):
    return (n + a - 1) // a * a
