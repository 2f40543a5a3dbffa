"""The README's main job runs end to end (shortened) and improves accuracy."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_runs_and_adapts(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "adapted.pt8"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py"), "--epochs", "3",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    m = re.search(r"accuracy ([\d.]+)% -> ([\d.]+)%", p.stdout)
    assert m, p.stdout
    before, after = float(m.group(1)), float(m.group(2))
    assert after > before + 3, p.stdout
    assert out.exists()
