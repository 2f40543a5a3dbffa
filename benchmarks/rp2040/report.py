"""Measure everything RESULTS.md reports and print it as Markdown:

    python benchmarks/rp2040/report.py > benchmarks/rp2040/RESULTS.md
"""

import random
import subprocess
from importlib.metadata import version

import harness
import loops
from harness import Buf

COMMAND = "python benchmarks/rp2040/report.py > benchmarks/rp2040/RESULTS.md"
LOOP_N = 100
DOT_SOURCE = harness.HERE / "dot_s8.c"
DOT_SIZES = (16, 64, 256, 1024)
DOT_LISTING_N = 256
DOT_CFLAGS = (("-Os",), ("-O2",))


def ms(cycles):
    return f"{cycles / harness.CLOCK_HZ * 1e3:.4g}"


def loop_section():
    image = harness.build([loops.SOURCE])
    yield f"## Hand-counted loops (loops.S), n = {LOOP_N} iterations per call"
    yield ""
    yield ("Cycles per call, BLX and return included. *TRM* is the count by construction "
           "(loops.S comments, loops.py); *TRM, traced* prices the instructions the emulator "
           "actually executed with `harness.trm_cycles`; *rp2040py* is the emulator's count.")
    yield ""
    yield "| loop | isolates | TRM formula | TRM | TRM, traced | rp2040py | rp2040py - TRM |"
    yield "|---|---|---|---:|---:|---:|---:|"
    for loop in loops.LOOPS:
        args = [LOOP_N, Buf(size=32)] if loop.buffer else [LOOP_N]
        res = harness.run_image(image, loop.name, args, trace=True)
        traced = res.trm_cycles[0] if loop.trm_traceable else "n/a (IOPORT)"
        yield (f"| `{loop.name}` | {loop.isolates} | {loop.per_iteration} n + {loop.fixed} | "
               f"{loop.trm(LOOP_N)} | {traced} | {res.cycles[0]} | "
               f"{res.cycles[0] - loop.trm(LOOP_N)} |")
    yield ""


def dot_runs(image, n, trace):
    rng = random.Random(n)
    a = [rng.randint(-128, 127) for _ in range(n)]
    b = [rng.randint(-128, 127) for _ in range(n)]
    res = harness.run_image(image, "dot_s8", [Buf(bytes(v & 0xFF for v in a)),
                                              Buf(bytes(v & 0xFF for v in b)), n], trace=trace)
    return res, res.ret == sum(x * y for x, y in zip(a, b))


def insn_cycles(image, pc):
    """TRM cycles of the instruction at pc as (not taken, taken)."""
    op = image.halfword(pc)
    op2 = image.halfword(pc + 2) if harness.is_wide(op) else 0
    return harness.trm_cycles(op, op2, False), harness.trm_cycles(op, op2, True)


def dot_section(cflags):
    image = harness.build([DOT_SOURCE], cflags)
    flags = " ".join(cflags)
    yield f"### `{flags}`"
    yield ""
    yield "| MACs per call | cycles per call | cycles per MAC | ms at 125 MHz | TRM, traced | result |"
    yield "|---:|---:|---:|---:|---:|---|"
    runs = {}
    for n in DOT_SIZES:
        res, ok = dot_runs(image, n, trace=True)
        runs[n] = res
        yield (f"| {n} | {res.cycles[0]} | {res.cycles[0] / n:.2f} | {ms(res.cycles[0])} | "
               f"{res.trm_cycles[0]} | {'correct' if ok else 'WRONG'} |")
    lo, hi = DOT_SIZES[-2], DOT_SIZES[-1]
    per_mac = (runs[hi].cycles[0] - runs[lo].cycles[0]) / (hi - lo)
    per_mac_trm = (runs[hi].trm_cycles[0] - runs[lo].trm_cycles[0]) / (hi - lo)
    fixed = runs[hi].cycles[0] - per_mac * hi
    yield ""
    yield (f"Marginal cost (n = {lo} to {hi}): **{per_mac:g} cycles per MAC** in rp2040py, "
           f"{per_mac_trm:g} by the TRM; fixed cost per call (BLX, prologue, epilogue, loop "
           f"exit): {fixed:g} cycles in rp2040py, stack {runs[hi].stack_bytes} bytes.")
    yield ""

    # The per-MAC hand count: the instructions whose execution count grows with n, priced
    # by the TRM for the way they went (a loop branch is taken once per MAC).
    p_lo, p_hi = runs[lo].profiles[0], runs[hi].profiles[0]
    terms = []
    listing = harness.disassemble(image, "dot_s8")
    for pc, text in listing:
        (e_lo, t_lo), (e_hi, t_hi) = p_lo.get(pc, (0, 0)), p_hi.get(pc, (0, 0))
        if e_hi == e_lo:
            continue
        not_taken, taken = insn_cycles(image, pc)
        taken_per = (t_hi - t_lo) / (hi - lo)
        execs_per = (e_hi - e_lo) / (hi - lo)
        cost = (execs_per - taken_per) * not_taken + taken_per * taken
        note = " (taken)" if taken_per and taken != not_taken else ""
        terms.append((text.split(" <")[0], note, cost))
    yield ("Hand count per MAC from the disassembly: "
           + " + ".join(f"`{t}`{note} {c:g}" for t, note, c in terms)
           + f" = **{sum(c for *_, c in terms):g}**.")
    yield ""
    if cflags != DOT_CFLAGS[0]:
        return
    res = runs[DOT_LISTING_N]
    yield f"Disassembly with one call's execution counts (n = {DOT_LISTING_N}):"
    yield ""
    yield "| address | instruction | TRM cycles | executed | taken |"
    yield "|---|---|---:|---:|---:|"
    for pc, text in listing:
        execs, taken = res.profiles[0].get(pc, (0, 0))
        not_taken_c, taken_c = insn_cycles(image, pc)
        price = f"{not_taken_c} / {taken_c}" if taken_c != not_taken_c else f"{not_taken_c}"
        yield f"| `{pc:08x}` | `{text}` | {price} | {execs} | {taken} |"
    yield ""


def main():
    gcc = subprocess.run(["arm-none-eabi-gcc", "-dumpversion"], capture_output=True,
                         text=True, check=True).stdout.strip()
    lines = [
        "# RP2040 cycle benchmarks (emulated, bare metal)",
        "",
        f"Generated by `{COMMAND}`; do not edit by hand.",
        "",
        f"arm-none-eabi-gcc {gcc}, `-mcpu=cortex-m0plus -mthumb`; rp2040py {version('rp2040py')}. "
        "Code, data and stack in SRAM, interrupts masked, one core. Cycle counts are "
        "rp2040py's; README.md says what its timing model covers and where it departs from "
        "the Cortex-M0+ TRM.",
        "",
        *loop_section(),
        "## int8 dot product (dot_s8.c)",
        "",
        "`int32_t dot_s8(const int8_t *a, const int8_t *b, int n)`, random int8 inputs; "
        "*result* compares the returned value with Python's.",
        "",
    ]
    for cflags in DOT_CFLAGS:
        lines += dot_section(cflags)
    print("\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
