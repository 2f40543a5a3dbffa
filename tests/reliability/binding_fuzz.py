"""Coverage-guided fuzzing of the native bindings: libFuzzer over natmod/kernels/binding.c and
the kernels, built for the host with clang -fsanitize=fuzzer,address,undefined (the harness and
its rules: binding_fuzz.c).

    .venv/bin/python tests/reliability/binding_fuzz.py --seconds 600   # the long run (docs/RELIABILITY.md)
    .venv/bin/python tests/reliability/binding_fuzz.py --runs 20000    # what CI runs (test_fuzz_binding.py)

A crash leaves its input as crash-* in the working folder (replay: the executable with that
file as argument). Needs clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev;
./run setup installs them) and the x64 build of the kernels' qstr header (made on demand).
"""
import argparse
import hashlib
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "natmod" / "kernels"
HARNESS = Path(__file__).resolve().with_name("binding_fuzz.c")
OUT = ROOT / "natmod" / "build" / "fuzz"
SANITIZE = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]


def clang():
    """The clang on PATH (or a versioned one), None when there is none."""
    for name in ("clang", "clang-14", "clang-15", "clang-16"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _qstr_table(config):
    """C source of mp_native_qstr_table (index i -> 1000 + i, QSTR_BASE in the harness) and
    the names of the module's qstrs, from the generated qstr header."""
    own = {int(i): name for name, i in re.findall(r"#define MP_QSTR_(\w+) \(mp_native_qstr_table\[(\d+)\]\)",
                                                   config.read_text())}
    n = max(own) + 1
    names = ", ".join('"%s"' % own.get(i, "?") for i in range(n))
    return ("#include <stdint.h>\n"
            "const uint16_t mp_native_qstr_table[%d] = {%s};\n" % (n, ", ".join(str(1000 + i) for i in range(n)))
            + "const char *const fuzz_qstr_names[] = {%s};\n" % names
            + "const int fuzz_qstr_count = %d;\n" % n)


def build(binding_dir=KERNELS, out=OUT):
    """Compile the harness with binding_dir/binding.c and the kernels; returns the executable.
    Reused while its sources are unchanged."""
    b = runpy.run_path(str(ROOT / "natmod" / "build.py"))  # its functions and flags (a script, not a module)
    mpy_dir = b["micropython_dir"]()
    config = b["config_header"](KERNELS, "x64", mpy_dir)
    kernels = sorted(p for p in KERNELS.glob("*.c") if p.name != "binding.c")
    sources = [HARNESS, Path(binding_dir) / "binding.c", *kernels, *KERNELS.glob("*.h")]
    # natmod/build.py's flags, but the fuzzer's optimisation, and warnings not fatal (the
    # harness's stand-ins leave parts of MicroPython's headers unused); its gcc-only
    # CFLAGS_EXTRA keeps a module free of libc calls, which a host program has
    flags = [f for f in b["CFLAGS"] if f not in ("-Werror", "-Os")]
    flags += ["-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_DOUBLE", "-Wno-typedef-redefinition", "-I%s" % binding_dir, "-I%s" % KERNELS,
              "-I%s" % mpy_dir, "-DMP_CONFIGFILE=<%s>" % config] + SANITIZE
    key = hashlib.sha1(" ".join(flags).encode())
    for p in sources:
        key.update(p.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    exe = out / ("binding_fuzz-" + key.hexdigest()[:12])
    if exe.exists():
        return exe
    cc = clang()
    if cc is None:
        raise RuntimeError("clang not found: install Debian clang and libclang-rt-14-dev (./run setup does)")
    table = out / "qstr_table.c"
    table.write_text(_qstr_table(config))
    cmd = [cc, *flags, str(HARNESS), str(table), *map(str, kernels), "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError("building the fuzzer failed:\n%s\n%s" % (" ".join(cmd), p.stderr))
    return exe


def run(exe, runs=None, seconds=None, corpus=None, seed=1, cwd=None):
    """Run the fuzzer (a fixed number of runs, or for some seconds); returns (exit code, the
    output, its figures: runs, seconds, coverage, features, corpus size, functions)."""
    args = [str(exe), "-seed=%d" % seed, "-timeout=10", "-rss_limit_mb=2048", "-max_len=2048", "-use_value_profile=1",
            "-print_final_stats=1"]
    if runs is not None:
        args.append("-runs=%d" % runs)
    if seconds is not None:
        args.append("-max_total_time=%d" % seconds)
    with tempfile.TemporaryDirectory(prefix="pt-fuzz-") as tmp:
        args.append(str(corpus or tmp))
        p = subprocess.run(args, capture_output=True, text=True, cwd=cwd or tmp)
    out = p.stdout + p.stderr
    return p.returncode, out, figures(out)


def figures(out):
    """The run's figures from libFuzzer's output."""
    def last(pattern, cast=int):
        found = re.findall(pattern, out)
        return cast(found[-1]) if found else None
    return {"runs": last(r"stat::number_of_executed_units: (\d+)"),
            "seconds": last(r"Done \d+ runs in (\d+) second"),
            "coverage": last(r"cov: (\d+)"), "features": last(r"ft: (\d+)"),
            "corpus": last(r"corp: (\d+)"), "functions": last(r"binding_fuzz: (\d+) functions"),
            "crashes": len(re.findall(r"==\d+==ERROR|binding_fuzz: .*\(in ", out))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, help="stop after this many inputs")
    ap.add_argument("--seconds", type=int, help="stop after this long")
    ap.add_argument("--corpus", help="corpus folder to grow and reuse (default: a fresh temporary one)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.runs is None and args.seconds is None:
        ap.error("give --runs or --seconds")
    exe = build()
    if args.corpus:
        Path(args.corpus).mkdir(parents=True, exist_ok=True)
    rc, out, fig = run(exe, args.runs, args.seconds, args.corpus, args.seed, cwd=Path.cwd())
    tail = [line for line in out.splitlines() if line.startswith(("#", "stat::", "Done", "binding_fuzz", "=="))]
    print("\n".join(tail[-12:]))
    print("figures: %s, exit code %d" % (fig, rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
