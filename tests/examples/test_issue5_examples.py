"""examples/tintin_mnist.py, tintin_sensing.py and partial_fqt.py run end to end (shortened) and
write their tables (with the command that made them), JSON and plots."""
import json

import pytest


def test_tintin_sensing_short_run(tmp_path, run_example, is_png):
    pytest.importorskip("torch")
    pytest.importorskip("scipy")
    run_example("tintin_sensing.py", ["--epochs", "1", "--n-train", "60", "--n-test", "40", "--out-dir", str(tmp_path)])
    md = (tmp_path / "tintin_sensing.md").read_text()
    assert "python examples/tintin_sensing.py --epochs 1" in md and "SYNTHETIC" in md
    for label in ("## bearing", "## spectrum", "float32 PyTorch", "NITI (mu=3)", "TinTin (m=5, n=4)", "TinTin (m=3, n=4)"):
        assert label in md
    blob = json.loads((tmp_path / "tintin_sensing.json").read_text())
    assert set(blob["results"]) == {"bearing", "spectrum"}
    assert is_png(tmp_path / "tintin_sensing.png")


def test_tintin_mnist_short_run(tmp_path, run_example, is_png, mnist_available):
    pytest.importorskip("torch")
    if not mnist_available:
        pytest.skip("MNIST not available")
    run_example("tintin_mnist.py", ["--limit", "120", "--epochs", "1", "--ms", "2,3", "--ns", "4", "--n-at", "3", "--jobs", "1",
                                    "--out-dir", str(tmp_path)])
    md = (tmp_path / "tintin_mnist.md").read_text()
    assert "python examples/tintin_mnist.py --limit 120" in md
    for label in ("float32 PyTorch, Adam", "NITI (mu=3)", "TinTin m=2 n=4", "TinTin m=3 n=4", "vs float32"):
        assert label in md
    blob = json.loads((tmp_path / "tintin_mnist.json").read_text())
    r = blob["results"]["tintin_m3"]
    assert all(v == [0, 0, 0] for v in r["saturated"])
    assert r["memory"]["total"] < blob["results"]["float_adam"]["memory"]["total"]
    assert is_png(tmp_path / "tintin_mnist.png")


def test_partial_fqt_short_run(tmp_path, run_example, is_png, mnist_available):
    pytest.importorskip("torch")
    if not mnist_available:
        pytest.skip("MNIST not available")
    run_example("partial_fqt.py", ["--limit", "40", "--epochs", "1", "--budgets", "0.25", "--seeds", "3", "--angles", "30",
                                   "--jobs", "1", "--pretrain-epochs", "1", "--mp-steps", "3", "--mp-steps-python", "1",
                                   "--rounds", "1", "--rounds-python", "1", "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(tmp_path)])
    md = (tmp_path / "partial_fqt.md").read_text()
    assert "python examples/partial_fqt.py --limit 40" in md
    for label in ("NITI (mu=3)", "FQT, full updates", "PartialFQT budget 25%", "MACs of one full FQT step"):
        assert label in md
    blob = json.loads((tmp_path / "partial_fqt.json").read_text())
    assert blob["macs"]["p0.25"]["total"] < blob["macs"]["fqt"]["total"]
    assert blob["nbytes"]["p0.25"] < blob["nbytes"]["fqt"]
    assert is_png(tmp_path / "partial_fqt.png")
