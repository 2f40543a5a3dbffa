"""Two cores: the gain of splitting a step's kernels across the RP2040's cores (an estimate).

rp2040py emulates core 0 only. Each recorded call is cut into two calls on disjoint parts of
its output (output channels, rows, input channels or items: `halves`); both halves run on
the emulated core, one after the other, and a split call is taken to cost

    max(cycles of half A, cycles of half B) + HANDOFF

on two cores, where HANDOFF is the cost of starting core 1 on half B and waiting for it. Small
calls (below MIN_SPLIT cycles) stay on core 0. The two halves are checked against the mirror
(kernels_np on the same half arguments) and their outputs put back together are checked
against the whole call's recorded outputs, so the split itself is exact.

Not modelled: SRAM bank conflicts between the cores (the RP2040 stripes its four 64 kB banks
word by word, so two streams collide on a bank now and then, each collision costing one core
a cycle), and the interpreter's own time (still one core).
"""

from array import array

from picotrain import kernels_np as NP

from . import emu

# A hand-off from core 0 to a native worker on core 1 (entered once from a _thread, waiting
# with WFE on a mailbox in SRAM): write the job (5 words), SEV, core 1 wakes and reads it;
# at the end core 1 writes a done word, SEV, core 0 wakes from WFE. About 100 cycles of
# instructions plus the wake-up latencies: 200 cycles is taken.
HANDOFF_NATIVE = 200
# The same through Python: _thread locks released/acquired on both sides plus the bytecode
# that hands the arguments over, about 25 us at 125 MHz (an assumption, not measured).
HANDOFF_PYTHON = 3000
MIN_SPLIT = 4 * HANDOFF_NATIVE


def _s8(v):
    return array("b", v)


def _edges(sc, sub, edges):
    """(scores, subset) of the edges `edges` (a list of edge numbers, in order)."""
    if sc is None:
        return None, None
    if sub is None:
        return array(sc.typecode, [sc[j] for j in edges]), None
    # compact scores: the score of edge j is scores[#set bits before j]
    si, pos = 0, {}
    n = max(edges) + 1 if edges else 0
    for j in range(n):
        if (sub[j >> 3] >> (j & 7)) & 1:
            pos[j] = si
            si += 1
    bits = bytearray((len(edges) + 7) // 8)
    vals = []
    for t, j in enumerate(edges):
        if j in pos:
            bits[t >> 3] |= 1 << (t & 7)
            vals.append(sc[pos[j]])
    return array(sc.typecode, vals), bits


def _conv_parts(g):
    c_in, h, w, c_out, k, s, p = g
    oh = (h + 2 * p - k) // s + 1
    ow = (w + 2 * p - k) // s + 1
    return c_in, h, w, c_out, k, s, p, oh, ow


def halves(name, a):
    """[(args of half A, args of half B), how to put their outputs together] or None.

    The 'join' is a list of (position in the whole call's args, [(half, position in the
    half's args, start item, items)]) so that the whole output is the halves' outputs
    concatenated."""
    if name in ("conv2d_s8_s32_chw", "conv2d_mask_s8_s32_chw", "conv2d_score_s8_chw",
                "conv2d_grad_s8_s32_chw"):
        masked = name == "conv2d_mask_s8_s32_chw"
        off = {"conv2d_s8_s32_chw": 3, "conv2d_mask_s8_s32_chw": 6, "conv2d_score_s8_chw": 7,
               "conv2d_grad_s8_s32_chw": 3}[name]
        c_in, h, w, c_out, k, s, p, oh, ow = _conv_parts(a[off:off + 7])
        if c_out < 2:
            return None
        c1 = c_out // 2
        nco, plane = c_in * k * k, oh * ow
        parts = []
        for lo, hi in ((0, c1), (c1, c_out)):
            geom = [c_in, h, w, hi - lo, k, s, p]
            edges = list(range(lo * nco, hi * nco))
            if name == "conv2d_s8_s32_chw":
                parts.append([a[0], _s8(a[1][lo * nco:hi * nco]), array("i", bytes(4 * (hi - lo) * plane)), *geom])
            elif masked:
                sc, sub = _edges(a[2], a[3], edges)
                parts.append([a[0], _s8(a[1][lo * nco:hi * nco]), sc, sub, a[4],
                              array("i", bytes(4 * (hi - lo) * plane)), *geom])
            elif name == "conv2d_grad_s8_s32_chw":
                parts.append([_s8(a[0][lo * plane:hi * plane]), a[1], array("i", bytes(4 * (hi - lo) * nco)), *geom])
            else:
                sc, sub = _edges(a[3], a[4], edges)
                parts.append([_s8(a[0][lo * plane:hi * plane]), a[1], _s8(a[2][lo * nco:hi * nco]), sc, sub,
                              a[5], a[6], *geom])
        if name == "conv2d_s8_s32_chw":
            join = [(2, [(0, 2, 0, c1 * plane), (1, 2, 0, (c_out - c1) * plane)])]
        elif masked:
            join = [(5, [(0, 5, 0, c1 * plane), (1, 5, 0, (c_out - c1) * plane)])]
        elif name == "conv2d_grad_s8_s32_chw":
            join = [(2, [(0, 2, 0, c1 * nco), (1, 2, 0, (c_out - c1) * nco)])]
        else:
            join = [(3, "scores")]
        return parts, join
    if name in ("conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw"):
        # issue 8: the fused forward takes the output-channel range itself (c0, c1); each
        # half writes its channels of the one output and has a scratch of its own
        off = 4 if name == "conv2d_s8_s8_chw" else 7
        c_in, h, w, c_out, k, s, p, oh, ow = _conv_parts(a[off:off + 7])
        if c_out < 2:
            return None
        c1, plane, pos = c_out // 2, oh * ow, off - 2
        parts = []
        for lo, hi in ((0, c1), (c1, c_out)):
            b = list(a[:off + 10]) + [lo, hi]
            b[off - 1] = array("i", a[off - 1])
            parts.append(b)
        return parts, [(pos, [(0, pos, 0, c1 * plane), (1, pos, c1 * plane, (c_out - c1) * plane)])]
    if name in ("conv2d_t_s8_s32_chw", "conv2d_t_mask_s8_s32_chw"):
        masked = name == "conv2d_t_mask_s8_s32_chw"
        off = 6 if masked else 3
        c_in, h, w, c_out, k, s, p, oh, ow = _conv_parts(a[off:off + 7])
        if c_in < 2:
            return None
        c1, kk, hw = c_in // 2, k * k, h * w
        parts = []
        for lo, hi in ((0, c1), (c1, c_in)):
            edges = [(co * c_in + ci) * kk + t for co in range(c_out) for ci in range(lo, hi) for t in range(kk)]
            wsub = _s8([a[1][j] for j in edges])
            geom = [hi - lo, h, w, c_out, k, s, p]
            out = array("i", bytes(4 * (hi - lo) * hw))
            if masked:
                sc, sub = _edges(a[2], a[3], edges)
                parts.append([a[0], wsub, sc, sub, a[4], out, *geom])
            else:
                parts.append([a[0], wsub, out, *geom])
        pos = 5 if masked else 2
        return parts, [(pos, [(0, pos, 0, c1 * hw), (1, pos, 0, (c_in - c1) * hw)])]
    if name in ("fc_s8_s32", "fc_mask_s8_s32", "fc_score_s8", "outer_s8_s32"):
        if name == "outer_s8_s32":
            n_out, n_in = a[3], a[4]
        else:
            n_in, n_out = a[-2], a[-1]
        if n_out < 2:
            return None
        o1 = n_out // 2
        parts = []
        for lo, hi in ((0, o1), (o1, n_out)):
            ws = slice(lo * n_in, hi * n_in)
            if name == "fc_s8_s32":
                parts.append([a[0], _s8(a[1][ws]), array("i", bytes(4 * (hi - lo))), n_in, hi - lo])
            elif name == "fc_mask_s8_s32":
                sc, sub = _edges(a[2], a[3], list(range(lo * n_in, hi * n_in)))
                parts.append([a[0], _s8(a[1][ws]), sc, sub, a[4], array("i", bytes(4 * (hi - lo))), n_in, hi - lo])
            elif name == "outer_s8_s32":
                parts.append([_s8(a[0][lo:hi]), a[1], array("i", bytes(4 * (hi - lo) * n_in)), hi - lo, n_in])
            else:
                sc, sub = _edges(a[3], a[4], list(range(lo * n_in, hi * n_in)))
                parts.append([_s8(a[0][lo:hi]), a[1], _s8(a[2][ws]), sc, sub, a[5], a[6], n_in, hi - lo])
        if name == "fc_s8_s32":
            join = [(2, [(0, 2, 0, o1), (1, 2, 0, n_out - o1)])]
        elif name == "fc_mask_s8_s32":
            join = [(5, [(0, 5, 0, o1), (1, 5, 0, n_out - o1)])]
        elif name == "outer_s8_s32":
            join = [(2, [(0, 2, 0, o1 * n_in), (1, 2, 0, (n_out - o1) * n_in)])]
        else:
            join = [(3, "scores")]
        return parts, join
    if name == "fc_t_s8_s32":
        e, w, out, n_in, n_out = a
        if n_in < 2:
            return None
        i1 = n_in // 2
        parts = []
        for lo, hi in ((0, i1), (i1, n_in)):
            parts.append([e, _s8([w[o * n_in + i] for o in range(n_out) for i in range(lo, hi)]),
                          array("i", bytes(4 * (hi - lo))), hi - lo, n_out])
        return parts, [(2, [(0, 2, 0, i1), (1, 2, 0, n_in - i1)])]
    if name in ("requant_s32_s8", "relu_s8", "relu_bwd_s8", "update_s8", "bitlen_s32"):
        npos = {"requant_s32_s8": 2, "relu_s8": 1, "relu_bwd_s8": 2, "update_s8": 2, "bitlen_s32": 1}[name]
        n = a[npos]
        if n < 8:
            return None
        m = (n // 2) & ~3  # keep the second half 4-aligned like the first
        parts = []
        for lo, hi in ((0, m), (m, n)):
            b = [(array(v.typecode, v[lo:hi]) if isinstance(v, array) else v) for v in a]
            b[npos] = hi - lo
            parts.append(b)
        bufs = [i for i, v in enumerate(a) if isinstance(v, array)]
        return parts, [(i, [(0, i, 0, m), (1, i, 0, n - m)]) for i in bufs] if name != "bitlen_s32" else [(None, "max")]
    if name in ("maxpool2d_s8_chw", "maxpool2d_bwd_s8_chw"):
        c, h, w, k = a[3:7]
        if c < 2:
            return None
        c1, oh, ow = c // 2, h // k, w // k
        parts = []
        for lo, hi in ((0, c1), (c1, c)):
            if name == "maxpool2d_s8_chw":
                parts.append([_s8(a[0][lo * h * w:hi * h * w]), _s8(bytes((hi - lo) * oh * ow)),
                              bytearray((hi - lo) * oh * ow), hi - lo, h, w, k])
            else:
                parts.append([_s8(a[0][lo * oh * ow:hi * oh * ow]), bytearray(a[1][lo * oh * ow:hi * oh * ow]),
                              _s8(bytes((hi - lo) * h * w)), hi - lo, h, w, k])
        if name == "maxpool2d_s8_chw":
            join = [(1, [(0, 1, 0, c1 * oh * ow), (1, 1, 0, (c - c1) * oh * ow)]),
                    (2, [(0, 2, 0, c1 * oh * ow), (1, 2, 0, (c - c1) * oh * ow)])]
        else:
            join = [(2, [(0, 2, 0, c1 * h * w), (1, 2, 0, (c - c1) * h * w)])]
        return parts, join
    return None


def _itemsize(v):
    return 1 if isinstance(v, bytearray) else v.itemsize


def run(image, calls, log=print):
    """Per call: {"whole", "a", "b"} cycles (a, b None when the call is not split), with the
    split checked (halves against kernels_np, the joined output against the recorded one)."""
    out = []
    for c in calls:
        whole = emu.run_call(image, c.name, c.args).cycles
        h = halves(c.name, c.args)
        if h is None or whole < MIN_SPLIT:
            out.append({"whole": whole, "a": None, "b": None, "exact": True})
            continue
        parts, join = h
        cyc, got, exact = [], [], True
        for args in parts:
            res = emu.run_call(image, c.name, args)
            ref = [array(v.typecode, v) if isinstance(v, array) else (bytearray(v) if isinstance(v, bytearray) else v)
                   for v in args]
            ret = getattr(NP, c.name)(*ref)
            after = {i: bytes(v) for i, v in enumerate(ref) if isinstance(v, (array, bytearray))}
            exact &= not emu.check_call(res, c.name, after, ret)
            cyc.append(res.cycles)
            got.append((res, ret))
        for pos, how in join:
            if how == "scores":
                pieces = [got[t][0].buffers[3] for t in (0, 1)]
                if c.args[4] is None:  # dense scores: the two halves are consecutive
                    exact &= b"".join(pieces) == c.after[3]
            elif how == "max":
                exact &= max(g[1] for g in got) == c.ret
            else:
                size = _itemsize(c.args[pos])
                joined = b"".join(got[half][0].buffers[p][start * size:(start + n) * size]
                                  for half, p, start, n in how)
                exact &= joined == c.after[pos][:len(joined)]
        if not exact:
            log("  two-core split NOT exact: %s %s" % (c.layer, c.name))
        out.append({"whole": whole, "a": cyc[0], "b": cyc[1], "exact": exact})
    return out


def estimate_from(runs, handoff):
    """Cycles of the step's kernels on two cores, and the calls split."""
    total = split = 0
    for r in runs:
        if r["a"] is None:
            total += r["whole"]
            continue
        two = max(r["a"], r["b"]) + handoff
        if two < r["whole"]:
            total += two
            split += 1
        else:
            total += r["whole"]
    return total, split


def estimate(rows):
    """Attached to a method's results by kernels.py (rows carry the per-call runs)."""
    runs = [r["dual"] for r in rows if "dual" in r]
    if not runs:
        return None
    native, n_native = estimate_from(runs, HANDOFF_NATIVE)
    python, n_python = estimate_from(runs, HANDOFF_PYTHON)
    one = sum(r["whole"] for r in runs)
    return {"cycles": native, "split": n_native, "python": python, "split_python": n_python, "one": one,
            "exact": all(r["exact"] for r in runs)}


def report(results, ms):
    L = ["## Two cores (estimate)", "",
         "rp2040py emulates one core. Every call of the step is cut in two along its output "
         "(output channels of a forward pass and a gradient, input channels of an error pass, rows "
         "of a linear layer, items of an element-wise kernel); both halves run on the emulated core "
         "and a split call counts max(half A, half B) + a hand-off. Halves checked bit for bit "
         "(each against kernels_np, joined against the whole call): %s." % (
             "all exact" if all(r["dual"]["exact"] for r in results.values() if r["dual"]) else "**NOT all exact**"),
         "",
         "| method | kernels, one core (ms) | two cores, native hand-off %d cycles (ms) | calls split | "
         "two cores, Python `_thread` hand-off %d cycles (ms) | calls split | step with glue, two cores native (ms) |"
         % (HANDOFF_NATIVE, HANDOFF_PYTHON),
         "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        d = r["dual"]
        if not d:
            continue
        L.append("| %s | %.2f | %.2f | %d | %.2f | %d | %.2f |" % (
            name, ms(d["one"]), ms(d["cycles"]), d["split"], ms(d["python"]), d["split_python"],
            ms(d["cycles"]) + r["glue_ms"]))
    L += ["", "Hand-off, native: core 0 writes a job to a mailbox in SRAM and SEVs; a worker "
          "entered once on core 1 (from a `_thread`, native code: rp2's MicroPython has no GIL, "
          "so it runs alongside) leaves WFE, runs half B, writes a done word and SEVs; core 0 "
          "runs half A and WFEs until done. 200 cycles is an allowance, not a measurement. "
          "Python: the same with `_thread` locks and the arguments passed in a list, about 25 us "
          "(an assumption). Not counted: SRAM bank conflicts between the cores (striped banks: "
          "occasional one-cycle stalls), and the interpreter (one core throughout). Design for "
          "the device package: `picotrain.dual` would start the worker once, and the layers would "
          "call each big kernel on a channel range (the kernels would take `co0, co1` / `ci0, ci1` "
          "arguments rather than the re-packed weights used here to time the halves); not "
          "implemented.", ""]
    return L
