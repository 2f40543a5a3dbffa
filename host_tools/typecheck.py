"""Type-check the device package against MicroPython's rp2 (Raspberry Pi Pico) stubs.

    python -m host_tools.typecheck          # exit 0 when clean; the errors otherwise

mypy runs over device/picotrain/ (kernels_np.py aside: numpy, CPython only) with the
stubs of PyPI `micropython-rp2-rpi-pico-stubs` (and its `micropython-stdlib-stubs`) as
the standard library, so `import`s, module functions and their argument counts are the
rp2 port's, not CPython's. Function bodies are checked (check_untyped_defs), with the
error codes that unannotated, duck-typed code cannot satisfy turned off: what is left
finds a module or function the Pico does not have, a call with the wrong number of
arguments, an undefined name. The kernel names that picotrain/kernels.py binds at
run time are declared in a stub generated from kernels.NAMES.

Deterministic and fast (a few seconds): no cache, the stub files copied into a temporary
folder from the installed distributions' file lists.
"""
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PKG = ROOT / "device" / "picotrain"
STUB_DISTS = ("micropython-rp2-rpi-pico-stubs", "micropython-stdlib-stubs")
HOST_ONLY = ("kernels_np.py",)
# What duck-typed code without annotations cannot satisfy (mixins, attributes set
# later, None-then-object fields, optional modules): off. Everything else is on.
DISABLED = ("attr-defined", "var-annotated", "assignment", "union-attr", "list-item", "call-overload",
            "no-redef", "misc", "arg-type", "index", "operator", "return-value", "has-type",
            "override", "func-returns-value", "import-untyped")
CONFIG = """\
[mypy]
python_version = 3.11
check_untyped_defs = True
follow_imports = silent
no_site_packages = True
warn_unused_configs = False
disable_error_code = %s

[mypy-_mpy_shed.*]
ignore_errors = True

# kernels.py looks for numpy (the CPython mirror) and falls back without it
[mypy-numpy]
ignore_missing_imports = True
"""


class TypecheckUnavailable(Exception):
    pass


def copy_stubs(dest):
    """The stub distributions' .pyi files (and stdlib/VERSIONS) into dest."""
    n = 0
    for name in STUB_DISTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise TypecheckUnavailable("%s is not installed (pip install micropython-rp2-rpi-pico-stubs)" % name)
        for f in dist.files or ():
            if f.suffix == ".pyi" or f.name == "VERSIONS":
                src = Path(dist.locate_file(f))
                out = Path(dest) / f
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out)
                n += 1
    if not (Path(dest) / "stdlib" / "VERSIONS").exists():
        raise TypecheckUnavailable("the stubs have no stdlib/ (micropython-stdlib-stubs)")
    return n


def kernels_stub():
    """picotrain/kernels.pyi: kernels.py plus the names use() binds at run time."""
    sys.path.insert(0, str(DEVICE_PKG.parent))
    try:
        from picotrain.kernels import NAMES
    finally:
        sys.path.pop(0)
    lines = ["from typing import Any", "", "NAMES: tuple[str, ...]", "ARCHS: tuple[str, ...]",
             "def native_mismatch() -> str | None: ...", "def use(name: str = ...) -> str: ...",
             "def backend() -> str: ...", ""]
    lines += ["def %s(*args: Any) -> Any: ..." % n for n in NAMES]
    return "\n".join(lines) + "\n"


def run(paths=None, extra_files=None):
    """(exit status, mypy's output) for the device package (or other files, copied in
    beside it: extra_files {name: text})."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        raise TypecheckUnavailable("mypy is not installed (pip install mypy)")
    with tempfile.TemporaryDirectory() as tmp:
        stubs = Path(tmp) / "stubs"
        copy_stubs(stubs)
        work = Path(tmp) / "work"
        pkg = work / "picotrain"
        pkg.mkdir(parents=True)
        for p in DEVICE_PKG.glob("*.py"):
            if p.name not in HOST_ONLY:
                shutil.copyfile(p, pkg / p.name)
        (pkg / "kernels.pyi").write_text(kernels_stub())
        targets = ["picotrain"]
        for name, text in (extra_files or {}).items():
            (work / name).write_text(text)
            targets.append(name)
        (work / "mypy.ini").write_text(CONFIG % ", ".join(DISABLED))
        env = dict(os.environ, MYPYPATH=str(stubs))
        p = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--custom-typeshed-dir",
                            str(stubs), "--no-incremental", "--cache-dir", os.devnull, "--no-error-summary",
                            *(paths or targets)], cwd=work, env=env, capture_output=True, text=True)
        out = (p.stdout + p.stderr).replace(str(work) + os.sep, "")
        return p.returncode, out


def main():
    try:
        rc, out = run()
    except TypecheckUnavailable as e:
        print("typecheck: %s" % e, file=sys.stderr)
        return 2
    if rc:
        print(out, end="")
        print("typecheck: device/picotrain does not type-check against MicroPython's rp2 stubs", file=sys.stderr)
    else:
        print("typecheck: device/picotrain type-checks against micropython-rp2-rpi-pico-stubs")
    return rc


if __name__ == "__main__":
    sys.exit(main())
