#!/usr/bin/env python3
"""Peak heap of a full PRIOT training run under the MicroPython unix port, measured.

    .venv/bin/python benchmarks/peak_heap.py            # writes benchmarks/PEAK_HEAP.md
    .venv/bin/python benchmarks/peak_heap.py --quick    # fewer samples, printed only

The device package (compiled by mpy-cross, as `picotrain deploy` sends it to a board) and
its native kernels (the x64 .mpy) run on the unix port
(`.venv/bin/micropython`) on the tiny CNN the cycle benchmark uses (kbench.record: MNIST
pretrained, calibrated on rotated images), reading a rotated-MNIST dataset file in place
(picotrain.data.Dataset). The script loads the model, builds a PRIOT trainer and trains one
epoch, and reports:

- gc.mem_alloc() after a gc.collect() at each stage (live heap: after import, after loading
  the model, after building the trainer, after the epoch);
- the least gc.mem_free() seen, sampled before every step without collecting (garbage
  included, as the board would see it);
- micropython.mem_peak(): the most bytes the runtime ever had allocated (MICROPY_MEM_STATS;
  blocks the collector frees are not subtracted, so it over-counts across collections; and
  under a step's heap_lock every frame MicroPython tries to put on the heap counts although
  the attempt fails and the frame goes on the C stack: about 4 KB a step);
- the smallest heap (-X heapsize, searched to 1 KB) in which the same run completes: the
  measured peak requirement.

The unix port is a 64-bit build: every object header and pointer is twice a Pico's, so
these numbers are an upper bound for the RP2040's MicroPython (the tensors are the same
bytes on both).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from kbench import emu, record  # noqa: E402

MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
COMMAND = ".venv/bin/python benchmarks/peak_heap.py"

RUN = r'''
import gc, micropython, sys
gc.collect()
stage = {"start": gc.mem_alloc()}
import picotrain as pt
from picotrain.data import Dataset
gc.collect()
stage["import"] = gc.mem_alloc()
m = pt.load(DIR + "/model.pt8")
gc.collect()
stage["model"] = gc.mem_alloc()
t = pt.PRIOT(m, **KW)
gc.collect()
stage["trainer"] = gc.mem_alloc()
low = gc.mem_free()
n = ok = 0
with Dataset(DIR + "/data.pt8d") as data:
    for x, label in data:
        f = gc.mem_free()
        if f < low:
            low = f
        ok += t.step(x, label)[1]
        n += 1
gc.collect()
stage["epoch"] = gc.mem_alloc()
print("RESULT", pt.backend(), n, ok, t.nbytes(), low, micropython.mem_peak(),
      " ".join("%s=%d" % (k, stage[k]) for k in ("start", "import", "model", "trainer", "epoch")))
'''


def setup(tmp, n):
    """A folder holding picotrain/ (+ _native.mpy), model.pt8, data.pt8d, run.py."""
    from host_tools import datasets, deploy
    model_path, samples = record.reference_model()
    pkg = tmp / "path" / "picotrain"
    pkg.mkdir(parents=True)
    for name, data in deploy.compile_package("x64").items():
        (pkg / Path(name).name).write_bytes(data)
    build = emu.natmod_build()
    mpy, _ = build.build_module(ROOT / "natmod" / "kernels", "x64", build.micropython_dir(), tmp / "build")
    shutil.copy(mpy, pkg / "_native.mpy")
    shutil.copy(model_path, tmp / "model.pt8")
    xs, ys = datasets.load_split("mnist", "transfer-train", angle=45.0, limit=n)
    datasets.write_pt8d(tmp / "data.pt8d", xs, ys)
    (tmp / "run.py").write_text("DIR = %r\nKW = %r\n" % (str(tmp), record.PRIOT_KW) + RUN)
    return model_path


def run(tmp, heap):
    p = subprocess.run([str(MICROPYTHON), "-X", "heapsize=%d" % heap, str(tmp / "run.py")],
                       capture_output=True, text=True, timeout=1800,
                       env={"MICROPYPATH": str(tmp / "path"), "PATH": "/usr/bin:/bin"})
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            return line.split()[1:]
    return None


def smallest_heap(tmp, hi):
    """The least -X heapsize (to 1 KB) in which the run completes."""
    lo = 0
    while hi - lo > 1024:
        mid = (lo + hi) // 2 // 1024 * 1024
        if run(tmp, mid) is not None:
            hi = mid
        else:
            lo = mid
    return hi


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=256, help="images in the epoch")
    ap.add_argument("--quick", action="store_true", help="64 samples, print only")
    args = ap.parse_args(argv)
    n = 64 if args.quick else args.samples
    with tempfile.TemporaryDirectory(prefix="pt-heap-") as t:
        tmp = Path(t)
        setup(tmp, n)
        big = 2 * 1024 * 1024
        res = run(tmp, big)
        if res is None:
            raise SystemExit("the PRIOT run failed with a %d-byte heap" % big)
        backend, steps, ok, nbytes, low, peak = res[0], int(res[1]), int(res[2]), int(res[3]), int(res[4]), \
            int(res[5])
        stages = dict(kv.split("=") for kv in res[6:])
        need = smallest_heap(tmp, big)
    lines = [
        "# Peak heap of a PRIOT training run (MicroPython unix port)",
        "",
        "Generated by `%s`; do not edit by hand. What is measured and how: the docstring of "
        "`benchmarks/peak_heap.py`." % COMMAND,
        "",
        "Run: the tiny CNN (MNIST-pretrained, int8, calibrated on rotated images), `PRIOT(%s)`, one epoch of "
        "%d rotated-MNIST images read in place from a dataset file, backend `%s`, %d / %d right."
        % (", ".join("%s=%r" % kv for kv in record.PRIOT_KW.items()), steps, backend, ok, steps),
        "",
        "| stage | live heap after gc.collect() (bytes) |",
        "|---|---:|",
    ]
    for k, what in (("start", "interpreter started"), ("import", "`import picotrain` (.mpy files and the "
                    "native module loaded)"), ("model", "model loaded"), ("trainer", "PRIOT trainer built"),
                    ("epoch", "after the epoch")):
        lines.append("| %s | %s |" % (what, "{:,}".format(int(stages[k]))))
    lines += [
        "",
        "| figure | bytes |",
        "|---|---:|",
        "| training buffers (`Trainer.nbytes()`) | %s |" % "{:,}".format(nbytes),
        "| least free heap seen before a step (2 MB heap) | %s |" % "{:,}".format(low),
        "| most heap ever used, 2 MB heap - least free | %s |" % "{:,}".format(big - low),
        "| `micropython.mem_peak()` (an over-count: collected garbage, and the frames a locked step "
        "failed to allocate) | %s |" % "{:,}".format(peak),
        "| **smallest heap in which the whole run completes** (`-X heapsize`, to 1 KB) | **%s** |"
        % "{:,}".format(need),
        "",
        "The unix port is 64-bit: object headers and pointers are twice a Pico's, so the Python objects "
        "(compiled package, model and trainer objects) weigh less on the RP2040; the tensors are the same bytes.",
    ]
    text = "\n".join(lines) + "\n"
    if args.quick:
        print(text)
    else:
        (HERE / "PEAK_HEAP.md").write_text(text)
        print(text)
        print("wrote", HERE / "PEAK_HEAP.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
