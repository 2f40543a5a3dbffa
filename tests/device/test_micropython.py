"""Tier 2: the same device package under the MicroPython unix port, bit for bit
with the CPython mirror; training steps under micropython.heap_lock()."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "scripts", "niti_run.py")
DEVICE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "device")


def cpython(*args):
    env = dict(os.environ, PYTHONPATH=DEVICE)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, check=True).stdout


@pytest.mark.parametrize("method", ["NITI", "StaticNITI", "PRIOT", "PRIOTS", "PRIOTS-w",
                                    "TinTin", "TinTin-b", "FQT", "PartialFQT", "PartialFQT-b"])  # issue 5: the last five
def test_fixed_seed_run_matches_mirror(micropython, method):
    mp = micropython(open(SCRIPT).read().replace("sys.argv", "ARGV").replace(
        "import sys\n", "import sys\nARGV = ['x', %r, 'python', '40']\n" % method))
    assert mp == cpython(method, "numpy", "40") == cpython(method, "python", "40")
    assert "crc" in mp


def test_step_allocates_nothing(locked_steps):
    cases, backend = locked_steps("python")
    assert backend == "python"
    assert cases == [(m, b) for m in ("NITI", "StaticNITI", "PRIOT", "PRIOTS", "TinTin", "FQT", "PartialFQT")
                     for b in (1, 2)]


def test_model_file_crosses_implementations(micropython, tmp_path):
    """Saved under MicroPython, loaded on CPython (and back), same bytes."""
    micropython("""
from array import array
import picotrain as pt
m = pt.Model([pt.Conv2d(1, 2, 3, bias=True), pt.Flatten(), pt.Linear(8, 3)], (1, 4, 4))
for l in m.param_layers():
    l.weight.data = array('b', [(j * 37) % 61 - 30 for j in range(l.weight.size)])
    l.weight.exp = -6
m.layers[0].bias[1] = -77777
m.layers[0].shift = 2
m.meta = {'k': 1}
m.save('mp.pt8')
m2 = pt.load('mp.pt8')
m2.save('mp2.pt8')
print(m2.predict(array('b', range(16))))
""", cwd=str(tmp_path))
    sys.path.insert(0, DEVICE)
    import picotrain as pt
    m = pt.load(str(tmp_path / "mp.pt8"))
    assert m.layers[0].bias[1] == -77777 and m.meta == {"k": 1}
    p = str(tmp_path / "cp.pt8")
    m.save(p)
    assert open(p, "rb").read() == (tmp_path / "mp.pt8").read_bytes() == (tmp_path / "mp2.pt8").read_bytes()
