#!/usr/bin/env python3
"""picotrain's kernels and whole training steps, in cycles, on an emulated RP2040.

    .venv/bin/python benchmarks/kernels.py          # writes benchmarks/RESULTS.md, step_ms.png and
                                                    # the table in README.md
    .venv/bin/python benchmarks/kernels.py --quick  # a small synthetic network, no files (< 1 min)

What it does:
1. The reference tiny CNN (host_tools.models "tiny_cnn": pretrained on MNIST, int8, static
   scales calibrated on rotated images) trains with every method for a pass over adaptation
   images on the host mirror; then every kernel call of one more training step is recorded
   with its inputs and the mirror's outputs (kbench/record.py).
2. Each recorded call runs bare metal on rp2040py, the armv6m build of natmod/kernels (the
   .mpy's compiler flags, code and data in SRAM as in MicroPython's heap), before (the
   kernels at BASELINE) and after (the working tree); every output buffer and return value
   is compared with the mirror's, bit for bit (kbench/emu.py). The same calls with dense
   operands (every zero of an activation or error replaced) give the data-independent cost.
3. A step is the sum of its kernel calls plus the MicroPython glue (kbench/glue.py: the
   binding's checks measured on the emulator, the interpreter counted with callgrind on the
   unix port and converted to M0+ cycles).
4. Memory per method from picotrain.memory_plan / Trainer.nbytes and the model's weights.
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kbench import dualcore, emu, glue, record  # noqa: E402
from picotrain import kernels_py as PY  # noqa: E402

CLOCK = 125_000_000
BASELINE = "53d3a77"  # the last commit before issue 8 touched natmod/kernels
COMMAND = ".venv/bin/python benchmarks/kernels.py"

# PRIOT paper, Table II (Raspberry Pi Pico at 125 MHz, tiny CNN): ms per sample, bytes.
PAPER = {
    "StaticNITI": (62.02, 80136),
    "PRIOT": (64.58, 138044),
    "PRIOT-S p=0.9": (52.77, 97672),  # the paper's "larger p" row
    "PRIOT-S p=0.5": (54.09, 102880),  # "smaller p"
}
TARGET_MS = {"StaticNITI": 26, "PRIOT": 28, "PRIOT-S p=0.9": 24, "PRIOT-S p=0.5": 24}
# The kernels whose work is multiply-accumulates (MAC counts; the rest count items).
MAC_KERNELS = {"fc_s8_s32", "fc_t_s8_s32", "outer_s8_s32", "fc_mask_s8_s32", "fc_t_mask_s8_s32",
               "fc_score_s8", "conv2d_s8_s32_chw", "conv2d_t_s8_s32_chw", "conv2d_grad_s8_s32_chw",
               "conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw", "conv2d_score_s8_chw",
               "conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw"}


def ms(cycles):
    return cycles / CLOCK * 1e3


# ------------------------------------------------------------------ sizes --

def _conv_geom(name, a):
    off = {"conv2d_s8_s32_chw": 3, "conv2d_t_s8_s32_chw": 3, "conv2d_grad_s8_s32_chw": 3,
           "conv2d_mask_s8_s32_chw": 6, "conv2d_t_mask_s8_s32_chw": 6, "conv2d_score_s8_chw": 7,
           "conv2d_s8_s8_chw": 4, "conv2d_mask_s8_s8_chw": 7}[name]
    return a[off:off + 7]


def _valid_taps(k, pad, stride, size, osize):
    """Sum over taps kk of the outputs whose input kk-th tap is inside the image."""
    tot = 0
    for kk in range(k):
        lo = max(0, -((kk - pad) // stride))
        hi = min(osize, (size - 1 + pad - kk) // stride + 1)
        tot += max(0, hi - lo)
    return tot


def work(name, a):
    """(multiply-accumulates or items, 'MAC' | 'item', shape text) of one call."""
    if name in ("fc_s8_s32", "fc_t_s8_s32", "fc_mask_s8_s32", "fc_t_mask_s8_s32"):
        n_in, n_out = a[-2], a[-1]
        return n_in * n_out, "MAC", "%d->%d" % (n_in, n_out)
    if name == "outer_s8_s32":
        return a[3] * a[4], "MAC", "%dx%d" % (a[3], a[4])
    if name == "update_outer_s8":
        return a[3] * a[4], "item", "%dx%d" % (a[3], a[4])
    if name == "fc_score_s8":
        return a[7] * a[8], "MAC", "%d->%d" % (a[7], a[8])
    if name.startswith("conv2d"):
        c_in, h, w, c_out, k, stride, pad = _conv_geom(name, a)
        oh = (h + 2 * pad - k) // stride + 1
        ow = (w + 2 * pad - k) // stride + 1
        macs = c_out * c_in * _valid_taps(k, pad, stride, h, oh) * _valid_taps(k, pad, stride, w, ow)
        return macs, "MAC", "%dx%dx%d k%d -> %dx%dx%d" % (c_in, h, w, k, c_out, oh, ow)
    if name in ("maxpool2d_s8_chw", "maxpool2d_bwd_s8_chw"):
        c, h, w, k = a[3:7]
        return c * h * w, "item", "%dx%dx%d /%d" % (c, h, w, k)
    if name in ("requant_s32_s8", "bitlen_s32", "relu_s8", "relu_bwd_s8", "update_s8", "argmax_s8",
                "softmax_xent_s8", "acc_add_s32", "score_update_s8", "mask_s8"):
        n = {"requant_s32_s8": 2, "bitlen_s32": 1, "relu_s8": 1, "relu_bwd_s8": 2, "update_s8": 2,
             "argmax_s8": 1, "softmax_xent_s8": 1, "acc_add_s32": 2, "score_update_s8": 6, "mask_s8": 5}[name]
        return a[n], "item", "n=%d" % a[n]
    return 0, "item", ""


def _sparse_operands(name):
    """Positions of the activation / error buffers whose zeros the kernels may skip."""
    return {"fc_s8_s32": (0,), "fc_mask_s8_s32": (0,), "fc_t_s8_s32": (0,), "fc_t_mask_s8_s32": (0,),
            "outer_s8_s32": (0, 1), "update_outer_s8": (0, 1), "fc_score_s8": (0, 1), "conv2d_s8_s32_chw": (0,),
            "conv2d_mask_s8_s32_chw": (0,), "conv2d_t_s8_s32_chw": (0,), "conv2d_t_mask_s8_s32_chw": (0,),
            "conv2d_grad_s8_s32_chw": (0, 1), "conv2d_score_s8_chw": (0, 1), "conv2d_s8_s8_chw": (0,),
            "conv2d_mask_s8_s8_chw": (0,)}.get(name, ())


def densify(name, args, seed=7):
    """The call with every zero of its activation / error operands replaced by a nonzero
    value of the same sign range (None when the kernel has no such operand)."""
    pos = _sparse_operands(name)
    if not pos:
        return None
    import random
    rng = random.Random(seed)
    out = [array(a.typecode, a) if isinstance(a, array) else (bytearray(a) if isinstance(a, bytearray) else a)
           for a in args]
    for p in pos:
        buf = out[p]
        neg = any(v < 0 for v in buf)
        for j in range(len(buf)):
            if buf[j] == 0:
                buf[j] = rng.choice([-3, -2, -1, 1, 2, 3] if neg else [1, 2, 3, 4])
    return out


def reference(name, args):
    """(after bytes per buffer position, return value) of the pure-Python kernel."""
    a = [copy.deepcopy(v) for v in args]
    ret = getattr(PY, name)(*a)
    return {i: bytes(v) for i, v in enumerate(a) if isinstance(v, (array, bytearray))}, ret


# ------------------------------------------------------------------ runs --

def baseline_image(rev):
    """The armv6m image of natmod/kernels at git revision rev (None if unavailable)."""
    try:
        names = subprocess.run(["git", "-C", str(emu.ROOT), "ls-tree", "--name-only", rev, "natmod/kernels/"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    tmp = Path(tempfile.mkdtemp(prefix="pt-baseline-"))
    for n in names:
        if n.endswith((".c", ".h")):
            data = subprocess.run(["git", "-C", str(emu.ROOT), "show", "%s:%s" % (rev, n)],
                                  capture_output=True, check=True).stdout
            (tmp / Path(n).name).write_bytes(data)
    return emu.build_image(tmp)


def _unfused_conv(c):
    """A fused conv + requant call (issue 8) as the calls it replaces: conv2d_(mask_)s8_s32_chw
    into a whole int32 map, bias_add_s32, requant_s32_s8 of its channels [c0, c1).
    Returns (steps, the output they leave, the fused call's)."""
    a = list(c.args)
    if c.name == "conv2d_s8_s8_chw":
        a = [a[0], a[1], None, None, 0, *a[2:]]
    x, w, sc, sub, thr = a[:5]
    geom = a[7:14]
    shift, bias, d = a[14:17]
    c_out = geom[3]
    c0 = a[17] if len(a) > 17 else 0
    c1 = a[18] if len(a) > 18 and a[18] is not None else c_out
    plane = PY.conv_out_size(geom[1], geom[4], geom[5], geom[6]) * PY.conv_out_size(geom[2], geom[4], geom[5], geom[6])
    acc = array("i", bytes(4 * c_out * plane))
    steps = [("conv2d_mask_s8_s32_chw", [x, w, sc, sub, thr, acc, *geom])]
    if bias is not None:
        steps.append(("bias_add_s32", [acc, bias, c_out, plane, d]))
    part = array("b", bytes((c1 - c0) * plane))
    # its input is the int32 map's channels [c0, c1), once the calls above have made it
    steps.append(("requant_s32_s8", [lambda: array("i", acc[c0 * plane:c1 * plane]), part, (c1 - c0) * plane, shift]))
    return steps, part, c.after[5 if c.name == "conv2d_mask_s8_s8_chw" else 2][c0 * plane:c1 * plane]


def _unfused_update(c):
    """A fused Linear update (update_outer_s8, a whole layer) as outer_s8_s32 into an int32
    gradient, bitlen_s32 and update_s8 by bitlen - mu."""
    e, x, w, n_out, n_in, mu = c.args[:6]
    n = n_out * n_in
    g = array("i", bytes(4 * n))  # the gradient, once the first call has made it
    w2 = array("b", w)
    steps = [("outer_s8_s32", [e, x, g, n_out, n_in]), ("bitlen_s32", [g, n]),
             ("update_s8", [w2, g, n, lambda: PY.bitlen_s32(g, n) - mu])]
    return steps, w2, c.after[2]


def _unfused_pool(c):
    """A rectified pool (a ReLU before it, pooled: relu = 1) as maxpool2d_s8_chw and
    relu_s8 on its output."""
    a = list(c.args[:7])
    out = array("b", a[1])
    ch, h, wd, k = a[3:7]
    steps = [("maxpool2d_s8_chw", [a[0], out, *a[2:7]])]
    if len(c.args) > 7 and c.args[7]:
        steps.append(("relu_s8", [out, ch * (h // k) * (wd // k)]))
    return steps, out, c.after[1]


def _unfused_pool_bwd(c):
    """The backward pass of a rectified pool (with y) as relu_bwd_s8 on a copy of its
    error, then maxpool2d_bwd_s8_chw."""
    a = list(c.args[:7])
    e = array("b", a[0])
    out = array("b", a[2])
    ch, h, wd, k = a[3:7]
    steps = []
    if len(c.args) > 7 and c.args[7] is not None:
        steps.append(("relu_bwd_s8", [c.args[7], e, ch * (h // k) * (wd // k)]))
    steps.append(("maxpool2d_bwd_s8_chw", [e, a[1], out, *a[3:7]]))
    return steps, out, c.after[2]


UNFUSED = {"conv2d_s8_s8_chw": _unfused_conv, "conv2d_mask_s8_s8_chw": _unfused_conv,
           "update_outer_s8": _unfused_update,
           "maxpool2d_s8_chw": _unfused_pool, "maxpool2d_bwd_s8_chw": _unfused_pool_bwd}


def run_unfused(image, c):
    """A fused call (issue 8: UNFUSED) run as the calls it replaces on `image` (the kernels
    before the fused one existed): (result with the summed cycles, differences from the
    recorded output)."""
    steps, out, want = UNFUSED[c.name](c)
    cycles, bad = 0, []
    for name, args in steps:
        args[:] = [a() if callable(a) else a for a in args]
        ref = [copy.deepcopy(v) for v in args]
        ret = getattr(PY, name)(*ref)
        res = emu.run_call(image, name, args)
        bad += emu.check_call(res, name, {i: bytes(v) for i, v in enumerate(ref) if isinstance(v, (array, bytearray))},
                              ret)
        cycles += res.cycles
        for i, v in enumerate(ref):  # the next call reads what this one wrote
            if isinstance(v, array):
                args[i][:] = v
    if bytes(out) != want:
        bad.append("the unfused calls' output differs from the fused call's")
    res.cycles = cycles
    return res, bad


def run_method(method, model_path, model, samples, images, dense=True, bind_image=None, dual=True, log=print):
    """Record one step of `method` and run every call on each image; a list of rows."""
    m = copy.deepcopy(model) if model is not None else record.load_model(model_path)
    trainer, calls = record.record_step(m, method, samples)
    rows = []
    for c in calls:
        macs, unit, shape = work(c.name, c.args)
        row = {"layer": c.layer, "kernel": c.name, "shape": shape, "work": macs, "unit": unit}
        for key, image in images.items():
            if key == "before" and c.name in UNFUSED:
                res, bad = run_unfused(image, c)
            else:
                res = emu.run_call(image, c.name, c.args)
                bad = emu.check_call(res, c.name, c.after, c.ret)
            row[key] = res.cycles
            row[key + "_exact"] = not bad
            row[key + "_stack"] = res.stack_bytes
            if bad:
                log("  NOT BIT-EXACT (%s) %s %s: %s" % (key, c.layer, c.name, bad))
        if dense:
            dargs = densify(c.name, c.args)
            if dargs is not None:
                after, ret = reference(c.name, dargs)
                res = emu.run_call(images["after"], c.name, dargs)
                row["dense"] = res.cycles
                row["dense_exact"] = not emu.check_call(res, c.name, after, ret)
        if bind_image is not None:
            row["binding"], _ = glue.binding_cycles(bind_image, c.name, c.args)
        rows.append(row)
    if dual:
        for row, run in zip(rows, dualcore.run(images["after"], calls, log=log)):
            row["dual"] = run
    return trainer, m, calls, rows


def memory(trainer, model):
    """Bytes by category: the trainer's buffers (picotrain.memory) and the model's weights."""
    detail = None
    try:
        from picotrain import memory as M
        detail = M.trainer_plan(trainer)
    except Exception:
        detail = None
    weights = sum(l.weight.size for l in model.layers if l.has_params)
    weights += sum(4 * len(l.bias) for l in model.layers if l.has_params and l.bias is not None)
    if detail is None:
        detail = {"total": trainer.nbytes()}
    out = {k: v for k, v in detail.items() if k != "total"}
    out["buffers"] = detail["total"]
    out["weights"] = weights
    out["total"] = detail["total"] + weights
    return out


# ---------------------------------------------------------------- report --

def fmt(n):
    return "{:,}".format(int(round(n)))


def kernel_table(rows, has_before):
    head = ["#", "layer, pass", "kernel", "shape", "MACs / items"]
    if has_before:
        head += ["before (cycles)"]
    head += ["after (cycles)", "after ms"]
    if has_before:
        head += ["speed-up"]
    head += ["after cyc/MAC", "dense operands cyc/MAC", "bit-exact"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i in (0, 4) or i >= 5 else "---"
                                                         for i in range(len(head))) + "|"]
    for i, r in enumerate(rows):
        per = ""
        dense = ""
        if r["work"]:
            per = "%.2f" % (r["after"] / r["work"])
            if "dense" in r:
                dense = "%.2f" % (r["dense"] / r["work"])
            if r["unit"] == "item":
                per += " /item"
                dense = dense and dense + " /item"
        exact = r.get("after_exact", False) and r.get("before_exact", True) and r.get("dense_exact", True)
        cells = [str(i + 1), r["layer"], "`%s`" % r["kernel"], r["shape"], fmt(r["work"])]
        if has_before:
            cells.append(fmt(r["before"]))
        cells += [fmt(r["after"]), "%.3f" % ms(r["after"])]
        if has_before:
            cells.append("%.1fx" % (r["before"] / r["after"]))
        cells += [per, dense, "yes" if exact else "**NO**"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def plot(path, results, paper):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [m for m in results if m in paper]
    x = range(len(names))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    kern = [results[m]["kernels_ms"] for m in names]
    gl = [results[m]["glue_ms"] for m in names]
    a1.bar([i - 0.2 for i in x], kern, 0.4, label="ours: kernels (emulated RP2040)", color="#2b7bba")
    a1.bar([i - 0.2 for i in x], gl, 0.4, bottom=kern, label="ours: MicroPython glue (estimate)", color="#9ecae1")
    a1.bar([i + 0.2 for i in x], [paper[m][0] for m in names], 0.4, label="PRIOT paper, Table II", color="#e6550d")
    if any(results[m].get("dual_ms") for m in names):
        a1.scatter([i - 0.2 for i in x], [results[m]["dual_ms"] for m in names], marker="v", color="k",
                   zorder=3, label="ours, two cores (estimate)")
    for i, m in enumerate(names):
        if m in TARGET_MS:
            a1.hlines(TARGET_MS[m], i - 0.42, i + 0.02, colors="k", linestyles="dashed", linewidth=1,
                      label="target (issue 8)" if i == 0 else None)
    a1.set_xticks(list(x), [n.replace("PRIOT-S ", "PRIOT-S\n") for n in names])
    a1.set_ylabel("ms per training sample at 125 MHz")
    a1.set_title("Training step, tiny CNN, batch 1")
    a1.legend(fontsize=8)
    a2.bar([i - 0.2 for i in x], [results[m]["memory"]["total"] / 1000 for m in names], 0.4,
           label="ours: weights + training buffers", color="#2b7bba")
    a2.bar([i + 0.2 for i in x], [paper[m][1] / 1000 for m in names], 0.4, label="PRIOT paper, Table II",
           color="#e6550d")
    a2.set_xticks(list(x), [n.replace("PRIOT-S ", "PRIOT-S\n") for n in names])
    a2.set_ylabel("kB of tensors")
    a2.set_title("Memory")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


README_START = "<!-- benchmarks/kernels.py: start -->"
README_END = "<!-- benchmarks/kernels.py: end -->"


def readme_table(results):
    """The README's summary: ms per sample and bytes per method, ours vs the paper."""
    L = ["| method | ms/sample, one core | two cores (estimate) | PRIOT paper (ms) | target (ms) | "
         "bytes of tensors | PRIOT paper (bytes) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        paper_ms, paper_b = PAPER.get(name, (None, None))
        L.append("| %s | %.1f | %s | %s | %s | %s | %s |" % (
            name, r["total_ms"], "%.1f" % r["dual_ms"] if r.get("dual_ms") else "",
            "%.2f" % paper_ms if paper_ms else "", "< %d" % TARGET_MS[name] if name in TARGET_MS else "",
            fmt(r["memory"]["total"]), fmt(paper_b) if paper_b else ""))
    return L


def write_readme(path, results):
    """Replace the block between the README's markers with the summary table."""
    text = path.read_text()
    a, b = text.find(README_START), text.find(README_END)
    if a < 0 or b < a:
        raise SystemExit("%s has no %s ... %s block to fill" % (path, README_START, README_END))
    block = "\n".join([README_START] + readme_table(results) + [README_END])
    path.write_text(text[:a] + block + text[b + len(README_END):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a small synthetic network (kbench.record.MINI_CNN), no baseline, no glue "
                         "measurement, prints the tables (for tests and a first look)")
    ap.add_argument("--methods", default=",".join(record.METHODS), help="comma-separated")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' kernels ('' for none)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense-operand runs")
    ap.add_argument("--no-glue", action="store_true", help="skip the callgrind measurement of the interpreter")
    ap.add_argument("--out", default=str(HERE), help="folder for RESULTS.md, step_ms.png, results.json")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--from-json", help="write the report from numbers saved with --json (no runs)")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        lines = report(saved["results"], saved["images"], saved["model"], args, saved["factor"], saved["seconds"])
        write_outputs(Path(args.out), lines, saved["results"], print)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    if args.quick:
        model, samples = record.synthetic_model(record.MINI_CNN, n=24)
        model_path, model_desc = None, "kbench.record.MINI_CNN (random weights, synthetic images)"
    elif record.mnist_available():
        model_path, samples = record.reference_model()
        model = None
        model_desc = ("tiny CNN (host_tools.models `tiny_cnn`), float-pretrained on upright MNIST, int8, "
                      "static scales calibrated on 256 MNIST images rotated by 45 degrees")
    else:
        model, samples = record.synthetic_model("tiny_cnn", n=64)
        model_path, model_desc = None, "tiny CNN with random weights (no MNIST here)"

    images = {"after": emu.build_image()}
    if args.baseline and not args.quick:
        b = baseline_image(args.baseline)
        if b is not None:
            images = {"before": b, **images}
    bind_image = emu.build_binding_image()
    results = {}
    for name in methods:
        log("%s: recording a step and running its kernels ..." % name)
        trainer, m, calls, rows = run_method(name, model_path, model, samples, images,
                                             dense=not args.no_dense, bind_image=bind_image, log=log)
        res = {"rows": rows, "calls": len(rows), "memory": memory(trainer, m)}
        for key in images:
            res[key] = sum(r[key] for r in rows)
            res[key + "_exact"] = all(r[key + "_exact"] for r in rows)
        res["dense_exact"] = all(r.get("dense_exact", True) for r in rows)
        res["binding"] = sum(r.get("binding", 0) for r in rows)
        res["stack"] = max(r["after_stack"] for r in rows)
        res["dual"] = dualcore.estimate(rows)
        results[name] = res

    factor = None
    vm = vm2 = {}
    why = glue.available()
    if not (args.quick or args.no_glue) and why is None and model_path is not None:
        log("glue: callgrind on the unix port ...")
        vm = glue.unix_step_counts(model_path, samples, methods, log=log)
        vm2 = glue.unix_step_counts(model_path, samples, methods, cores=2, log=log)
        sample_calls = [(r_c.name, r_c.args) for r_c in
                        record.record_step(record.load_model(model_path), "StaticNITI", samples[:8])[1]]
        factor = glue.c_factor(sample_calls, log=log)[0]
    for name, res in results.items():
        core = vm.get(name, {}).get("core")
        res["vm_x64"] = core
        res["factor"] = factor
        res["glue"] = res["binding"] + (factor * core if core is not None else 0)
        core2 = vm2.get(name, {}).get("core")
        res["glue2"] = res["binding"] + factor * core2 if core2 is not None else None
        res["kernels_ms"] = ms(res["after"])
        res["glue_ms"] = ms(res["glue"])
        res["total_ms"] = res["kernels_ms"] + res["glue_ms"]
        res["dual_ms"] = None
        if res["dual"]:
            res["dual_ms"] = ms(res["dual"]["cycles"] + (res["glue2"] if res["glue2"] is not None else res["glue"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "images": list(images), "model": model_desc,
                                               "factor": factor, "seconds": time.time() - t0}, default=str))
    lines = report(results, images, model_desc, args, factor, time.time() - t0)
    if args.quick:
        print("\n".join(lines))
    else:
        write_outputs(Path(args.out), lines, results, log)
    ok = all(r["after_exact"] and r.get("before_exact", True) and r["dense_exact"] for r in results.values())
    return 0 if ok else 1


def write_outputs(out, lines, results, log):
    """RESULTS.md and the plot in folder out; the README's table too when out is benchmarks/
    and every method of the paper was run."""
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    plot(out / "step_ms.png", results, PAPER)
    log("wrote %s and %s" % (out / "RESULTS.md", out / "step_ms.png"))
    if out.resolve() == HERE and set(PAPER) <= set(results):
        write_readme(HERE.parent / "README.md", results)
        log("updated the table in README.md")


def _scratch_saved(results):
    """', N bytes fewer than NITI's' for the report, when both kinds of method were run."""
    dyn = results.get("NITI")
    static = next((r for n, r in results.items() if n != "NITI"), None)
    if dyn is None or static is None:
        return ""
    return ": %s bytes fewer than NITI's" % fmt(dyn["memory"]["scratch"] - static["memory"]["scratch"])


def report(results, images, model_desc, args, factor, seconds):
    has_before = "before" in images
    gcc = subprocess.run(["arm-none-eabi-gcc", "-dumpversion"], capture_output=True, text=True).stdout.strip()
    L = ["# Kernel and training-step benchmarks on an emulated RP2040", "",
         "Generated by `%s`%s in %.0f s; do not edit by hand." % (
             COMMAND, " --quick" if args.quick else "", seconds), ""]
    L += ["Set-up: the armv6m build of `natmod/kernels` (arm-none-eabi-gcc %s with natmod/build.py's "
          "flags, `-Os -fpic`, Thumb-1 inline assembly for the inner loops), bare metal on rp2040py "
          "(benchmarks/rp2040: exact Cortex-M0+ timing except 2 cycles per call frame, see its "
          "README), code and data in SRAM as a native module's are in MicroPython's heap; 125 MHz, "
          "one core. Model: %s. Each method trains on the adaptation images, then every kernel "
          "call of the next training step is recorded on the host mirror and replayed here; every "
          "output buffer and return value is compared with the mirror's bit for bit (`bit-exact`)." %
          (gcc, model_desc), ""]
    if has_before:
        L += ["*before*: the kernels at commit %s (plain C, as issue 8 found them); *after*: the "
              "working tree. *dense operands*: the same call with every zero of its activations / "
              "errors replaced by a small nonzero value (the cost without data-dependent skipping), "
              "checked against kernels_py too." % args.baseline, ""]

    # ---- steps
    L += ["## Training step per method (batch 1, one sample)", ""]
    head = "| method | kernel calls |"
    if has_before:
        head += " kernels before (ms) |"
    head += (" kernels after (ms) | glue (ms, estimate) | **step (ms)** | two cores (ms, estimate) | "
             "PRIOT paper (ms) | target (ms) |")
    L += [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for name, r in results.items():
        cells = [name, str(r["calls"])]
        if has_before:
            cells.append("%.2f" % ms(r["before"]))
        paper = PAPER.get(name, (None,))[0]
        cells += ["%.2f" % r["kernels_ms"], "%.2f" % r["glue_ms"], "**%.2f**" % r["total_ms"],
                  "%.2f" % r["dual_ms"] if r["dual_ms"] else "",
                  "%.2f" % paper if paper else "(does not fit the Pico)" if name == "NITI" else "",
                  "< %d" % TARGET_MS[name] if name in TARGET_MS else ""]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    if factor:
        L += ["Glue = the binding's argument checks (measured on the emulator with the real binding.c, "
              "bind_driver.c) + the MicroPython interpreter: x64 instructions of MicroPython's own "
              "functions per step on the unix port under callgrind (%s) times %.2f M0+ cycles per x64 "
              "instruction (the ratio measured on our C kernels, -DPT_NO_ASM, emulator vs callgrind). "
              "The interpreter's C is branchier than kernel loops and a Pico runs it from XIP flash "
              "(cache misses not modelled): read the glue as -20 %% / +50 %%." %
              (", ".join("%s %s" % (n, fmt(r["vm_x64"])) for n, r in results.items() if r["vm_x64"]),
               factor), ""]
    # ---- memory
    L += ["## Memory per method (bytes of tensors)", ""]
    cats = ["weights", "scores", "subsets", "activations", "errors", "scratch", "gradients"]
    L += ["| method | " + " | ".join(cats) + " | **total** | PRIOT paper | training buffers only |",
          "|---|" + "---:|" * (len(cats) + 3)]
    for name, r in results.items():
        mem = r["memory"]
        paper = PAPER.get(name, (None, None))[1]
        L.append("| %s | %s | **%s** | %s | %s |" % (name, " | ".join(fmt(mem.get(c, 0)) for c in cats),
                                                     fmt(mem["total"]), fmt(paper) if paper else "",
                                                     fmt(mem["buffers"])))
    L += ["", "weights: the int8 weights of every layer (the model, in RAM once loaded); scores / "
          "subsets: PRIOT's int8 score per scored edge and PRIOT-S's bitmap; activations: every "
          "layer's int8 output (ReLU and Flatten share their input's); errors: the two ping-pong "
          "int8 error buffers; scratch: the shared int32 accumulator and the max-pool argmax "
          "indices (methods with static shifts fuse each convolution with its requantization, so "
          "their accumulator holds only an error to a layer's input and one output plane%s); "
          "gradients: NITI's int32 weight gradients of the convolutions (at batch 1 a Linear "
          "layer's update comes from its error and input, update_outer_s8, and PRIOT fuses the "
          "score step into the gradient: no buffer). The paper's Table II counts the same kinds of tensors "
          "(activations, gradients, weights, scores); it does not list its buffers one by one, so "
          "the split cannot be matched line by line. Kernel stack (not in the table): at most "
          "%s bytes per call (measured)." % (_scratch_saved(results), fmt(max(r["stack"] for r in results.values()))),
          ""]
    # ---- dual core
    if any(r["dual"] for r in results.values()):
        L += dualcore.report(results, ms)
    # ---- per kernel
    for name in ("StaticNITI", "PRIOT", "PRIOT-S p=0.5", "NITI"):
        if name not in results:
            continue
        L += ["## Per kernel: one %s step" % name, ""]
        L += kernel_table(results[name]["rows"], has_before)
        L.append("")
    return L


if __name__ == "__main__":
    sys.exit(main())
