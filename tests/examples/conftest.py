"""Running the example scripts as their users do: `python examples/<script> ...` from the
repository root."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_example():
    """run_example(script, args, timeout=300, env=None) -> its stdout; the test fails with the
    script's output when it exits non-zero."""
    def run(script, args, timeout=300, env=None):
        p = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True,
                           text=True, timeout=timeout, cwd=ROOT, env=env)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p.stdout
    return run


@pytest.fixture(scope="session")
def mnist_available():
    """Whether the MNIST test set is where host_tools.datasets looks for it."""
    from host_tools import datasets
    return (datasets.DEFAULT_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()


@pytest.fixture
def is_png():
    """is_png(path): the file starts with the PNG signature."""
    return lambda path: Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
