"""Cycle benchmarks of armv6m C code, bare metal on an emulated RP2040 (rp2040py).

    from harness import Buf, run            # with benchmarks/rp2040 on sys.path
    res = run(["dot_s8.c"], "dot_s8", [Buf(a), Buf(b), len(a)])
    res.cycles[0], res.ret                   # cycles of the call, int32 return value

The C sources are linked with startup.S, driver.S and link.ld into one SRAM image. The
runner loads it into a fresh emulated chip, places every Buf argument in SRAM, lets the
reset handler mask interrupts and the driver call the kernel `reps` times, then returns
the cycles of each call, r0/r1, and the buffers as the kernel left them (so the result can
be compared bit for bit with a Python reference).

Cycles are rp2040py's own instruction-level count (CortexM0Core.cycles), sampled at BKPT
marks around the call; README.md says what that model covers. With trace=True the runner
also records every instruction executed inside the call and prices it independently with
the Cortex-M0+ TRM table (`trm_cycles`), which is how the emulator's timing is checked.

CLI:  python benchmarks/rp2040/harness.py SOURCE.c... --entry FN --arg SPEC... (see --help)
"""

import argparse
import functools
import hashlib
import operator
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS_SOURCES = (HERE / "startup.S", HERE / "driver.S")
LINKER_SCRIPT = HERE / "link.ld"
ARCH_FLAGS = ("-mcpu=cortex-m0plus", "-mthumb")
DEFAULT_CFLAGS = ("-Os",)
CLOCK_HZ = 125_000_000  # the Pico's default clk_sys, which rp2040py also assumes

# Shared with startup.S / driver.S.
MARK_START, MARK_STOP, MARK_DONE, MARK_FAULT = 0xA0, 0xA1, 0xAD, 0xAF
CTL_FN, CTL_REPS, CTL_NARGS, CTL_R0, CTL_R1, CTL_ARGS = 0, 4, 8, 12, 16, 20
MAX_ARGS = 16

SRAM_BASE, SRAM_SIZE = 0x20000000, 264 * 1024
XIP_BASE, XIP_SIZE = 0x10000000, 16 * 1024 * 1024
# Free SRAM (arena between buffers, stack reserve) is filled with this before the run; any
# byte that differs afterwards was written by the kernel (out of bounds, or stack depth).
FILL = 0xA5
GUARD = 16  # filled bytes before and after every buffer, so overruns and underruns show
DEFAULT_MAX_INSTRUCTIONS = 50_000_000  # ~10 s untraced, ~30 s traced; stops a hung kernel
_CHUNK = 4096  # instructions stepped between checks for the "done" mark


class ToolchainMissing(RuntimeError):
    """arm-none-eabi-gcc (Debian: gcc-arm-none-eabi, libnewlib-arm-none-eabi) is not installed."""


class EmulatorMissing(RuntimeError):
    """The rp2040py package is not installed."""


class HarnessError(RuntimeError):
    """The kernel misbehaved: trapped, hung, touched memory it does not own, or bad input."""


class Buf:
    """A buffer argument: placed in SRAM, the kernel receives its address.

    Buf(data) copies any bytes-like object (bytes, bytearray, array.array, numpy array);
    Buf(size=n) is n zero bytes, e.g. for an output. `align` is the address alignment,
    `offset` bytes past it (offset=1: an odd address, for code that must cope with one)."""

    def __init__(self, data=None, *, size=None, align=4, offset=0):
        if (data is None) == (size is None):
            raise TypeError("give Buf either data or size")
        self.data = bytes(size) if data is None else bytes(memoryview(data).cast("B"))
        self.align = align
        self.offset = offset  # bytes past the aligned address (e.g. 1: an odd address)


@dataclass
class Result:
    cycles: list  # emulator cycles of each call: BLX + kernel + return
    r0: int  # r0/r1 after the last call, unsigned
    r1: int
    buffers: list  # bytes of each Buf argument, in order, after the last call
    stack_bytes: int  # deepest stack the kernel touched below SP at the call
    trm_cycles: list = None  # trace=True: TRM price of each call's executed instructions
    profiles: list = None  # trace=True: per call, {pc: (executions, times taken)}

    @property
    def ret(self):
        """r0 as the int32 a kernel returns."""
        return self.r0 - (1 << 32) if self.r0 & 0x80000000 else self.r0


@dataclass(frozen=True)
class Image:
    elf: bytes
    segments: tuple  # (load address, bytes)
    symbols: dict  # name -> address (functions carry the Thumb bit)
    functions: frozenset

    def halfword(self, addr):
        """The 16 bits the image loads at `addr` (e.g. an opcode from a profile's pc)."""
        for base, data in self.segments:
            if base <= addr <= base + len(data) - 2:
                return int.from_bytes(data[addr - base:addr - base + 2], "little")
        raise KeyError(f"{addr:#x} is not in the image")


_images = {}


_INSTALL = "Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise ToolchainMissing(f"{name} not found ({_INSTALL})")
    return path


@functools.lru_cache(maxsize=None)
def _compiler():
    cc = _tool("arm-none-eabi-gcc")
    # gcc prints the bare name back when it cannot find the file.
    specs = subprocess.run([cc, "-print-file-name=nano.specs"], capture_output=True,
                           text=True, check=True).stdout.strip()
    if not Path(specs).is_absolute():
        raise ToolchainMissing(f"newlib-nano for arm-none-eabi not found ({_INSTALL})")
    return cc


def build(sources, cflags=DEFAULT_CFLAGS):
    """Compile and link C/assembly `sources` with the harness into an SRAM image.

    `cflags` apply to the kernel sources (default -Os); the architecture flags are fixed.
    Images are cached per process by the content of every input and the flags."""
    cc = _compiler()
    sources = [Path(s).resolve() for s in sources]
    inputs = [*HARNESS_SOURCES, LINKER_SCRIPT, *sources]
    key = hashlib.sha256(repr((list(cflags), [str(p) for p in inputs])).encode()
                         + b"".join(p.read_bytes() for p in inputs)).hexdigest()
    if key not in _images:
        includes = sorted({f"-I{p.parent}" for p in sources})
        with tempfile.TemporaryDirectory(prefix="rp2040-bench-") as tmp:
            elf_path = Path(tmp) / "image.elf"
            cmd = [cc, *ARCH_FLAGS, "-std=c99", *cflags, *includes, *map(str, HARNESS_SOURCES),
                   *map(str, sources), "-nostartfiles", "--specs=nano.specs",
                   "-T", str(LINKER_SCRIPT), "-Wl,--no-warn-rwx-segments", "-o", str(elf_path)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise HarnessError("build failed:\n" + " ".join(cmd) + "\n" + proc.stderr)
            _images[key] = _parse_elf(elf_path.read_bytes())
    return _images[key]


def _parse_elf(elf):
    from elftools.elf.elffile import ELFFile

    f = ELFFile(BytesIO(elf))
    segments = tuple((s["p_paddr"], s.data()) for s in f.iter_segments()
                     if s["p_type"] == "PT_LOAD" and s["p_filesz"])
    symbols, functions = {}, set()
    for sym in f.get_section_by_name(".symtab").iter_symbols():
        if sym.name:
            symbols[sym.name] = sym["st_value"]
            if sym["st_info"]["type"] == "STT_FUNC":
                functions.add(sym.name)
    return Image(elf, segments, symbols, frozenset(functions))


def disassemble(image, symbol):
    """[(address, instruction text)] of one function, from arm-none-eabi-objdump."""
    objdump = _tool("arm-none-eabi-objdump")
    with tempfile.NamedTemporaryFile(suffix=".elf") as f:
        f.write(image.elf)
        f.flush()
        out = subprocess.run([objdump, "-d", f"--disassemble={symbol}", f.name],
                             capture_output=True, text=True, check=True).stdout
    listing = []
    for line in out.splitlines():
        parts = line.split("\t")
        # "20000110:\t56e6      \tldrsb\tr6, [r4, r3]"
        if len(parts) >= 3 and parts[0].strip().endswith(":"):
            listing.append((int(parts[0].strip()[:-1], 16), " ".join(p.strip() for p in parts[2:])))
    return listing


def is_wide(op):
    """True if the halfword `op` starts a 32-bit Thumb instruction."""
    return op >> 11 in (0b11101, 0b11110, 0b11111)


def trm_cycles(op, op2, taken):
    """Cycles of one armv6m instruction per the Cortex-M0+ TRM (ARM DDI 0484, table 3.1).

    Zero wait states and the fast (1-cycle) multiplier, as on the RP2040. Loads and stores
    are priced at 2, i.e. not to the single-cycle IO port (SIO), which the table gives 1.
    N in 1+N / 3+N counts every register in the list, LR and PC included. BKPT is 0: it
    only ever appears here as the harness's own timing mark."""
    if is_wide(op):
        return 3  # BL, and MSR/MRS/DMB/DSB/ISB, are all 3
    if op >> 14 == 0b00 or op >> 10 == 0b010000:
        return 1  # shifts, add/sub/mov/cmp, and the ALU group (MULS included)
    if op >> 10 == 0b010001:  # high-register ADD/CMP/MOV, BX/BLX
        kind, rd = (op >> 8) & 3, ((op >> 4) & 8) | (op & 7)
        return 2 if kind == 3 or (kind != 1 and rd == 15) else 1
    if op >> 11 == 0b01001 or op >> 12 in (0b0101, 0b0110, 0b0111, 0b1000, 0b1001):
        return 2  # LDR literal, and every load/store with register or immediate offset
    if op >> 12 == 0b1010:
        return 1  # ADR, ADD Rd, SP, #imm
    if op >> 12 == 0b1011:
        regs = bin(op & 0x1FF).count("1")
        if op >> 9 == 0b1011010:
            return 1 + regs  # PUSH, LR included
        if op >> 9 == 0b1011110:
            return 3 + regs if op & 0x100 else 1 + regs  # POP, with PC: a branch
        if op >> 8 == 0xBE:
            return 0
        return 2 if op in (0xBF20, 0xBF30) else 1  # WFE/WFI; SP adjust, extends, REV, CPS, hints
    if op >> 12 == 0b1100:
        return 1 + bin(op & 0xFF).count("1")  # LDM/STM
    if op >> 12 == 0b1101 and (op >> 8) & 0xF < 0xE:
        return 2 if taken else 1  # B<cond>
    if op >> 11 == 0b11100:
        return 2  # B
    raise ValueError(f"no TRM timing for opcode {op:#06x} (UDF/SVC do not return)")


class _StrictLogger:
    """rp2040py logs, and carries on after, what real silicon would fault on or what this
    harness never expects (unaligned word reads, unmapped addresses, unimplemented opcodes)."""

    def debug(self, component, message):
        pass

    info = debug

    def warning(self, component, message):
        raise HarnessError(f"emulator: [{component}] {message}")

    error = warning


class _Marks:
    """on_break handler: turns the driver's BKPT marks into per-call cycle counts."""

    def __init__(self, core):
        self.core = core
        self.cycles, self.counters = [], []
        self.timing = self.done = False
        self.start = self.sp_at_call = None

    def __call__(self, code):
        now = self.core.cycles  # rp2040py adds the BKPT's own cycle after this call
        if code == MARK_START:
            self.timing, self.start, self.sp_at_call = True, now, self.core.sp
            self.counters.append(Counter())
        elif code == MARK_STOP:
            self.timing = False
            self.cycles.append(now - self.start - 1)  # minus the start mark's one cycle
        elif code == MARK_DONE:
            self.done = True
        elif code == MARK_FAULT:
            raise HarnessError("the core took a fault (NMI/HardFault vector)")
        else:
            raise HarnessError(f"kernel executed BKPT/UDF #{code} (a trap)")


def _emulator():
    try:
        from rp2040py.rp2040 import RP2040
    except ImportError as e:
        raise EmulatorMissing("rp2040py is not installed (pip install rp2040py)") from e
    return RP2040


def run_image(image, entry, args=(), *, reps=1, trace=False,
              max_instructions=DEFAULT_MAX_INSTRUCTIONS):
    """Call function `entry` of `image` `reps` times with `args` (ints and Bufs).

    Calls run back to back on the same buffers, as in a training loop: a kernel that
    updates its inputs sees its own updates on the next call."""
    if entry not in image.functions:
        raise HarnessError(f"{entry!r} is not a function in the image")
    if len(args) > MAX_ARGS:
        raise HarnessError(f"at most {MAX_ARGS} arguments")
    if reps < 1:
        raise HarnessError("reps must be at least 1")
    sym = image.symbols
    chip = _emulator()()
    chip.logger = _StrictLogger()
    for addr, data in image.segments:
        if SRAM_BASE <= addr < SRAM_BASE + SRAM_SIZE:
            chip.sram[addr - SRAM_BASE:addr - SRAM_BASE + len(data)] = data
        elif XIP_BASE <= addr < XIP_BASE + XIP_SIZE:
            chip.flash[addr - XIP_BASE:addr - XIP_BASE + len(data)] = data
        else:
            raise HarnessError(f"segment at {addr:#x} is neither SRAM nor XIP flash")

    free_lo = sym["__arena_start"] - SRAM_BASE
    stack_lo, stack_hi = sym["__stack_limit"] - SRAM_BASE, sym["__stack_top"] - SRAM_BASE
    chip.sram[free_lo:stack_hi] = bytes([FILL]) * (stack_hi - free_lo)
    words, placed = [], []
    at = free_lo + GUARD
    for a in args:
        if isinstance(a, Buf):
            at = -(-at // a.align) * a.align + a.offset
            chip.sram[at:at + len(a.data)] = a.data
            placed.append((at, len(a.data)))
            words.append(SRAM_BASE + at)
            at += len(a.data) + GUARD
        else:
            try:
                words.append(operator.index(a) & 0xFFFFFFFF)
            except TypeError:
                raise TypeError(f"argument {a!r}: give an int or a Buf") from None
    if at > stack_lo:
        raise HarnessError(f"buffers need {at - stack_lo} bytes more SRAM than there is")

    ctl = sym["bench_ctl"]
    for offset, value in ((CTL_FN, sym[entry] | 1), (CTL_REPS, reps), (CTL_NARGS, len(words))):
        chip.write_uint32(ctl + offset, value)
    for i, w in enumerate(words):
        chip.write_uint32(ctl + CTL_ARGS + 4 * i, w)

    core = chip.core
    marks = _Marks(core)
    chip.on_break = marks
    vectors = sym["__vectors"]
    core.sp = chip.read_uint32(vectors)  # what the core does on reset
    core.pc = chip.read_uint32(vectors + 4) & ~1
    _step_until_done(core, marks, trace, max_instructions)

    gaps = [free_lo, *(x for a, n in placed for x in (a, a + n)), stack_lo]
    for lo, hi in zip(gaps[::2], gaps[1::2]):
        if chip.sram[lo:hi] != bytes([FILL]) * (hi - lo):
            raise HarnessError("the kernel wrote SRAM outside its buffers (out of bounds, or "
                               "more than the stack reserve in link.ld)")
    stack = bytes(chip.sram[stack_lo:stack_hi])
    untouched = len(stack) - len(stack.lstrip(bytes([FILL])))
    deepest = SRAM_BASE + stack_lo + untouched
    result = Result(cycles=marks.cycles,
                    r0=chip.read_uint32(ctl + CTL_R0), r1=chip.read_uint32(ctl + CTL_R1),
                    buffers=[bytes(chip.sram[a:a + n]) for a, n in placed],
                    stack_bytes=max(0, (marks.sp_at_call or deepest) - deepest))
    if trace:
        summaries = [_trace_summary(chip, c) for c in marks.counters]
        result.profiles = [profile for profile, _ in summaries]
        result.trm_cycles = [total for _, total in summaries]
    return result


def _step_until_done(core, marks, trace, max_instructions):
    step = core.execute_instruction
    executed = 0
    if trace:
        regs = core.registers
        while not marks.done and executed < max_instructions:
            pc = regs[15]
            step()
            if marks.timing:
                marks.counters[-1][pc, regs[15]] += 1
            executed += 1
    else:
        # Stepping past the "done" mark is harmless: the driver parks in a branch-to-self.
        while not marks.done and executed < max_instructions:
            for _ in range(_CHUNK):
                step()
            executed += _CHUNK
    if not marks.done:
        raise HarnessError(f"not done after {executed} instructions: the kernel hangs, or "
                           "needs a larger max_instructions")


def _trace_summary(chip, counter):
    """({pc: (executions, times taken)}, TRM cycles) of one call's (pc, next pc) counts."""
    profile, total = {}, 0
    for (pc, next_pc), n in counter.items():
        op = chip.read_uint16(pc)
        wide = is_wide(op)
        taken = next_pc != pc + (4 if wide else 2)
        total += n * trm_cycles(op, chip.read_uint16(pc + 2) if wide else 0, taken)
        execs, times_taken = profile.get(pc, (0, 0))
        profile[pc] = (execs + n, times_taken + (n if taken else 0))
    return profile, total


def run(sources, entry, args=(), *, cflags=DEFAULT_CFLAGS, **options):
    """build(sources, cflags), then run_image(...) with `options` (reps, trace, ...)."""
    return run_image(build(sources, cflags), entry, args, **options)


def _parse_arg(spec):
    kind, _, rest = spec.partition(":")
    if not rest:
        return int(spec, 0)
    if kind == "zeros":
        return Buf(size=int(rest, 0))
    if kind == "rand":
        n, _, seed = rest.partition(":")
        return Buf(random.Random(int(seed or 0)).randbytes(int(n, 0)))
    if kind == "hex":
        return Buf(bytes.fromhex(rest))
    raise argparse.ArgumentTypeError(f"bad argument spec {spec!r}")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Cycles of one C function, bare metal on an emulated RP2040.",
        epilog="argument specs: an int (e.g. 256, 0x10, --arg=-3); zeros:N (N zero bytes); "
               "rand:N[:SEED] (N random bytes); hex:00ff.. (those bytes). Buffers are passed "
               "by address and printed after the run.")
    p.add_argument("sources", nargs="+", type=Path, help="C or assembly files")
    p.add_argument("--entry", required=True, help="function to call")
    p.add_argument("--arg", action="append", default=[], type=_parse_arg, metavar="SPEC")
    p.add_argument("--reps", type=int, default=1, help="calls, back to back (default 1)")
    p.add_argument("--macs", type=int, help="MACs per call, to report cycles per MAC")
    p.add_argument("--cflags", default=" ".join(DEFAULT_CFLAGS),
                   help="compiler flags for the sources (default: %(default)s)")
    p.add_argument("--trace", action="store_true",
                   help="also price every executed instruction with the Cortex-M0+ TRM table")
    p.add_argument("--disasm", action="store_true", help="print the function's disassembly")
    a = p.parse_args(argv)
    try:
        image = build(a.sources, tuple(a.cflags.split()))
        res = run_image(image, a.entry, a.arg, reps=a.reps, trace=a.trace)
    except (ToolchainMissing, EmulatorMissing, HarnessError) as e:
        sys.exit(f"error: {e}")
    if a.disasm:
        for addr, text in disassemble(image, a.entry):
            print(f"  {addr:08x}  {text}")
    first = res.cycles[0]
    same = "" if len(set(res.cycles)) == 1 else f"  (each call: {res.cycles})"
    print(f"{a.entry}: {first} cycles per call, {first / CLOCK_HZ * 1e3:.4g} ms at "
          f"{CLOCK_HZ // 1_000_000} MHz{same}")
    if a.macs:
        print(f"  {first / a.macs:.2f} cycles per MAC ({a.macs} MACs per call)")
    if a.trace:
        print(f"  TRM price of the executed instructions: {res.trm_cycles[0]} cycles")
    print(f"  returned r0 = {res.ret} ({res.r0:#010x}), r1 = {res.r1:#010x}; "
          f"stack {res.stack_bytes} bytes")
    for i, data in enumerate(res.buffers):
        more = " ..." if len(data) > 64 else ""
        print(f"  buffer {i} ({len(data)} bytes): {data[:64].hex()}{more}")


if __name__ == "__main__":
    main()
