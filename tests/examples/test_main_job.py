"""The README's main job (`./run demo` = examples/remote_train.py) runs end to end on the
virtual board with PyTorch pretraining, and improves accuracy."""
import os
import re

import pytest


def test_main_job_adapts_on_the_virtual_board(tmp_path, run_example):
    pytest.importorskip("torch")
    env = dict(os.environ)
    env.pop("PICOTRAIN_PORT", None)
    out = run_example("remote_train.py", ["--epochs", "3", "--port", "virtual:" + str(tmp_path / "board"),
                                          "--out", str(tmp_path / "out")], timeout=600, env=env)
    m = re.search(r"accuracy ([\d.]+)% -> ([\d.]+)%", out)
    assert m, out
    assert float(m.group(2)) > float(m.group(1)) + 3, out
    assert "on the board =" in out  # the board's and the host's test counts agree
