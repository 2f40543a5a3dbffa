"""examples/priot_table.py and priot_params.py run end to end (shortened) and write
their table, JSON and plots; a second invocation resumes from the cache."""
import json
import os
import re

import pytest


def test_priot_table_short_run(tmp_path, run_example, is_png, mnist_available):
    pytest.importorskip("torch")
    out, cache = tmp_path / "results", tmp_path / "cache"
    source = "mnist" if mnist_available else "digits"
    args = ["--source", source, "--limit", "48", "--epochs", "2", "--seeds", "3", "--angles", "30",
            "--jobs", "1", "--pretrain-epochs", "1", "--out-dir", str(out), "--cache-dir", str(cache)]
    run_example("priot_table.py", args, timeout=120)

    md = (out / "priot_table.md").read_text()
    assert "python examples/priot_table.py --source" in md  # the exact command at the top
    assert re.search(r"Run finished \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; \d+ s", md)
    for label in ("before transfer (static scales)", "static NITI (mu=3)", "dynamic NITI (mu=3)", "| PRIOT |",
                  "PRIOT-S random, p=0.9", "PRIOT-S by weight, p=0.9", "PRIOT-S random, p=0.5",
                  "PRIOT-S by weight, p=0.5"):
        assert label in md, label
    assert "| before transfer (static scales) | " in md
    assert "sat_fwd" in md and "sat_bwd" in md and "sat_upd" in md
    assert "## Reading the table" in md and "## If every sample votes on the backward scales" in md
    for png in ("priot_curves.png", "static_niti_saturation.png"):
        assert is_png(out / png)

    blob = json.loads((out / "priot_table.json").read_text())
    assert len(blob["runs"]) == 7
    assert {r["row"] for r in blob["all_samples_calibration"]["runs"]} == {"static_niti", "priot"}
    for r in blob["runs"]:
        assert len(r["epochs"]) == 2 and r["seed"] == 3 and r["angle"] == 30
        e = r["epochs"][r["best_epoch"] - 1]
        assert r["result"] == e["test_acc"]
        assert e["train_acc"] == max(x["train_acc"] for x in r["epochs"])
        assert set(e["sat"]) == {"0", "3", "7", "9"} and all(len(v) == 3 for v in e["sat"].values())
    static = [r for r in blob["runs"] if r["row"] == "static_niti"][0]
    assert sum(v[0] for v in static["epochs"][0]["sat"].values()) > 0  # static scales saturate at once

    # Resume: every run comes from the cache, the same numbers come out.
    cached = sorted(os.listdir(cache))
    run_example("priot_table.py", args, timeout=120)
    assert sorted(os.listdir(cache)) == cached
    blob2 = json.loads((out / "priot_table.json").read_text())
    assert [r["result"] for r in blob2["runs"]] == [r["result"] for r in blob["runs"]]


def test_priot_params_short_run(tmp_path, run_example, is_png, mnist_available):
    pytest.importorskip("torch")
    out, cache = tmp_path / "results", tmp_path / "cache"
    source = "mnist" if mnist_available else "digits"
    run_example("priot_params.py", ["--source", source, "--limit", "32", "--epochs", "1", "--seeds", "3",
                                    "--angles", "45", "--groups", "mask_backward", "--jobs", "1", "--pretrain-epochs", "1",
                                    "--out-dir", str(out), "--cache-dir", str(cache)], timeout=120)
    md = (out / "priot_params.md").read_text()
    assert "## mask_backward" in md and "error through W*M" in md
    assert is_png(out / "priot_params.png")
