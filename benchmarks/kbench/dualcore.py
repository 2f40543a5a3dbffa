"""Two cores: a step's kernels split as picotrain.use_cores(2) splits them (an estimate).

device/picotrain/cores.py cuts every call of a ranged kernel (picotrain.kernels.RANGED and
RANGED_SCRATCH, the fused static convolutions, whose worker half has a scratch of its own) with
at least two channels and an estimated work of cores.MIN_WORK multiply-accumulates or more
in two: the caller runs channels [0, count // 2) and the worker thread,
on the RP2040's second core, [count // 2, count), both through the kernel's range arguments
c0, c1 on the same whole-tensor buffers. rp2040py emulates core 0 only, so here both halves
run on the emulated core, one after the other, with exactly those arguments: half B starts
from the buffers half A left, so the end state is the one two cores leave, and it is checked
bit for bit against the whole call recorded on the mirror (every output buffer, and the
halves' saturation counts summed against the whole call's). A split call is taken to cost

    max(cycles of half A, cycles of half B)

of kernel time on two cores. The hand-off itself (the splitter's bytecode, the two `_thread`
locks, the worker's call) is interpreter work: it is counted in the glue, measured with
callgrind on the unix port running the step with two cores (kbench/glue.py), not here.

Not modelled: SRAM bank conflicts between the cores (the RP2040 stripes its four 64 kB banks
word by word, so two streams collide on a bank now and then, each collision costing one core
a cycle) and the wake-up latency of a lock on core 1 (a spin lock and an event, tens of
cycles).
"""

from array import array

from . import emu
from picotrain import cores
from picotrain.kernels import RANGED, RANGED_SCRATCH


def work(args, sizes, scale):
    """The work cores.py estimates for a call (kernels.RANGED): scale times the product of
    the arguments at positions sizes, in multiply-accumulates."""
    for p in sizes:
        scale *= args[p]
    return scale


def halves(name, args):
    """[args of the caller's half, args of the worker's half] as cores.py makes them, or None
    when the call is not split (not a ranged kernel, fewer than two channels, or less work
    than cores.MIN_WORK, use_cores' default). A fused convolution's worker half gets an
    int32 scratch of its own, as large as the caller's (Model.plan's "acc2")."""
    if name in RANGED:
        (n, ci, sizes, scale), scratch = RANGED[name], None
    elif name in RANGED_SCRATCH:
        n, ci, sizes, scale, scratch = RANGED_SCRATCH[name]
    else:
        return None
    count = args[ci]
    if count < 2 or work(args, sizes, scale) < cores.MIN_WORK:
        return None
    mid = count >> 1
    b = list(args[:n]) + [mid, count]
    if scratch is not None:
        b[scratch] = array("i", bytes(4 * len(args[scratch])))
    return [list(args[:n]) + [0, mid], b]


def _after(res, args):
    """args with every buffer replaced by its contents after the emulator's call res."""
    out = list(args)
    for pos, data in res.buffers.items():
        v = args[pos]
        out[pos] = bytearray(data) if isinstance(v, bytearray) else array(v.typecode, data)
    return out


def run(image, calls, log=print):
    """Per call: {"whole", "a", "b", "exact"} cycles ("a", "b" None when the call is not
    split); "exact": the two halves, run in turn, leave the whole call's bits."""
    out = []
    for c in calls:
        whole = emu.run_call(image, c.name, c.args).cycles
        h = halves(c.name, c.args)
        if h is None:
            out.append({"whole": whole, "a": None, "b": None, "exact": True})
            continue
        a = emu.run_call(image, c.name, h[0])
        b = emu.run_call(image, c.name, _after(a, h[1]))
        exact = not emu.check_call(b, c.name, c.after, None)
        if c.name in emu.RETURNS:
            exact &= ((a.ret + b.ret) & 0xFFFFFFFF) == (c.ret & 0xFFFFFFFF)
        if not exact:
            log("  two-core split NOT exact: %s %s" % (c.layer, c.name))
        out.append({"whole": whole, "a": a.cycles, "b": b.cycles, "exact": exact})
    return out


def estimate(rows):
    """The kernels of a step on one and on two cores (cycles), from the rows kernels.py made
    (each carries its call's run under "dual"), and the number of calls split."""
    runs = [r["dual"] for r in rows if "dual" in r]
    if not runs:
        return None
    split = [r for r in runs if r["a"] is not None]
    return {"one": sum(r["whole"] for r in runs),
            "cycles": sum(max(r["a"], r["b"]) if r["a"] is not None else r["whole"] for r in runs),
            "split": len(split),
            "halves_over_whole": sum(r["a"] + r["b"] - r["whole"] for r in split),
            "exact": all(r["exact"] for r in runs)}


def report(results, ms):
    """The RESULTS.md section; results[method] holds "dual" (estimate()), the glue with one
    and with two cores ("glue", "glue2", cycles), "total_ms" and "dual_ms" (the step on two cores)."""
    rows = [(name, r) for name, r in results.items() if r["dual"]]
    exact = all(r["dual"]["exact"] for _, r in rows)
    measured = all(r.get("glue2") is not None for _, r in rows)
    L = ["## Two cores (estimate)", "",
         "`picotrain.use_cores(2)` (device/picotrain/cores.py) starts one worker thread, which "
         "MicroPython runs on the RP2040's second core, and splits every call of the big kernels "
         "(`kernels.RANGED`: conv forward, masked forward, error to the input, weight gradient and "
         "score step; linear forward, masked forward, score step, outer product and NITI's fused "
         "update; the NITI update; and `kernels.RANGED_SCRATCH`: the static methods' convolutions fused with the "
         "requantization, the worker's half in an int32 scratch of its own) with at least two channels and an estimated work of at least %s multiply-accumulates "
         "(`cores.MIN_WORK`, `use_cores`' default): the caller computes channels [0, c/2), the worker "
         "[c/2, c), through the kernels' range arguments `c0, c1`. rp2040py emulates one core, so "
         "both halves of every split call ran here on the emulated core, one after the other, "
         "with the real range arguments; half B on the buffers half A left, and the end state was "
         "compared with the whole call on the mirror: %s." % (
             "{:,}".format(cores.MIN_WORK),
             "bit-exact for every call of every method" if exact else "**NOT all bit-exact**"),
         "",
         "| method | calls split | kernels, one core (ms) | kernels, two cores (ms) | hand-off per split "
         "call (cycles) | glue, one core (ms) | glue, two cores (ms) | **step, one core (ms)** | "
         "**step, two cores (ms)** | speed-up |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        d = r["dual"]
        glue2 = r.get("glue2")
        two = r["dual_ms"]
        hand = (glue2 - r["glue"]) / d["split"] if glue2 is not None and d["split"] else None
        L.append("| %s | %d | %.2f | %.2f | %s | %.2f | %s | %.2f | **%.2f** | %.2fx |" % (
            name, d["split"], ms(d["one"]), ms(d["cycles"]), "%.0f" % hand if hand is not None else "",
            ms(r["glue"]), "%.2f" % ms(glue2) if glue2 is not None else "", r["total_ms"], two,
            r["total_ms"] / two))
    L += ["", "What is measured: every kernel half's cycles (emulator, armv6m build, bit-exact as said); "
          "the interpreter's instructions per step with one and with two cores (callgrind on the unix "
          "port, both threads counted, the steps under `micropython.heap_lock()`). What is estimated: "
          "the kernel time of a split call is taken as max(half A, half B), as if the two halves ran "
          "at once on the two cores; the interpreter's instructions become M0+ cycles by the glue's "
          "factor above; *hand-off per split call* is (glue with two cores - glue with one core) / "
          "calls split: the splitters' bytecode (every call of a ranged kernel passes through one, "
          "split or not), the locks and the worker's call, all of it counted as if serial although "
          "the worker's share overlaps the caller's. Not modelled: SRAM bank "
          "conflicts between the cores (striped banks: occasional one-cycle stalls) and the wake-up "
          "latency of a lock on core 1.", ""]
    if not measured:
        L += ["The glue with two cores was not measured in this run (no callgrind): the two-core "
              "step above uses the one-core glue, so it leaves the hand-off out.", ""]
    L += ["The sums of the halves exceed the whole calls by %s cycles in all (each half lists its own "
          "nonzero inputs or errors and pays its own set-up)." % ", ".join(
              "%s %d" % (name, r["dual"]["halves_over_whole"]) for name, r in rows), ""]
    return L
