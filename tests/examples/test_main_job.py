"""The README's main job (`./run demo` = examples/remote_train.py) runs end to end on the
virtual board with PyTorch pretraining, and improves accuracy."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_main_job_adapts_on_the_virtual_board(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ)
    env.pop("PICOTRAIN_PORT", None)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "remote_train.py"), "--epochs", "3",
                        "--port", "virtual:" + str(tmp_path / "board"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = re.search(r"accuracy ([\d.]+)% -> ([\d.]+)%", p.stdout)
    assert m, p.stdout
    assert float(m.group(2)) > float(m.group(1)) + 3, p.stdout
    assert "on the board =" in p.stdout  # the board's and the host's test counts agree
