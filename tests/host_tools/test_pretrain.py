"""host_tools.models and host_tools.pretrain (torch tests skip without torch)."""

import importlib.util

import numpy as np
import pytest

from host_tools import cli, datasets, models
from picotrain.data import Dataset

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (pip install -e '.[torch]')")


def test_layer_specs_chain():
    assert models.NAMES == ("tiny_cnn", "tiny_cnn_digits")
    shapes = models.output_shapes("tiny_cnn")
    assert [shapes[i] for i in (0, 2, 3, 5, 6, 9)] == [
        (8, 24, 24), (8, 12, 12), (16, 8, 8), (16, 4, 4), (256,), (10,)]
    assert models.output_shapes("tiny_cnn_digits")[6] == (64,)
    specs = models.layer_specs("tiny_cnn")
    specs[0][1]["k"] = 99  # a copy: the registry is unchanged
    assert models.layer_specs("tiny_cnn")[0] == (
        "conv2d", dict(c_in=1, c_out=8, k=5, stride=1, pad=0))
    with pytest.raises(ValueError, match="unknown model"):
        models.layer_specs("resnet")


@needs_torch
@pytest.mark.parametrize("name", models.NAMES)
def test_build_matches_the_specs(name):
    import torch

    net = models.build(name)
    assert net(torch.zeros(2, *models.input_shape(name))).shape == (2, 10)
    weighted = [i for i, (kind, _) in enumerate(models.layer_specs(name))
                if kind in ("conv2d", "linear")]
    assert list(net.state_dict()) == [f"{i}.weight" for i in weighted]  # no biases


@needs_torch
def test_float_input_is_the_device_input():
    from host_tools.pretrain import to_input

    images = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    x = to_input(images)
    assert float(x.max()) == 127 / 128 and float(x.min()) == 0.0
    assert np.array_equal((x.numpy() * 128).astype(np.int8), (images >> 1).astype(np.int8))


@needs_torch
def test_pretrain_digits_reaches_a_sensible_accuracy(tmp_path):
    import torch

    from host_tools.pretrain import pretrain

    out = tmp_path / "digits.pt"
    ckpt = pretrain(source="digits", epochs=2, seed=0, out=out)
    assert ckpt["meta"]["test_accuracy"][0] > 0.8
    saved = torch.load(out)
    assert (saved["arch"], saved["input_exp"]) == ("tiny_cnn_digits", -7)
    again = pretrain(source="digits", epochs=2, seed=0)  # deterministic for a seed
    for key, value in saved["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key])


@needs_torch
def test_pretrained_model_agrees_with_the_pt8d_input(tmp_path):
    """The checkpoint classifies the device's int8 input (from a .pt8d file) as on the host."""
    import torch

    from host_tools.pretrain import pretrain

    ckpt = pretrain(source="digits", epochs=1, seed=1)
    net = models.build("tiny_cnn_digits")
    net.load_state_dict(ckpt["state_dict"])
    x, y = datasets.load_split("digits", "transfer-test", limit=64)
    path = tmp_path / "t.pt8d"
    datasets.write_pt8d(path, x, y)
    with Dataset(path) as ds:
        device_x = np.array([list(a) for a, _ in ds.samples()], np.float32) * 2.0 ** ds.exp
    from host_tools.pretrain import to_input

    host = to_input(x)
    assert torch.equal(torch.from_numpy(device_x).reshape(host.shape), host)


@needs_torch
def test_cli_pretrain(tmp_path, capsys):
    out = tmp_path / "m.pt"
    args = ["pretrain", "--source", "digits", "--epochs", "1", "--eval-angle", "30",
            "--out", str(out)]
    assert cli.main(args) is None
    printed = capsys.readouterr().out
    assert "tiny_cnn_digits: 1 epochs on 1285 digits images" in printed and "at 30 deg" in printed
    assert out.exists()


def test_cli_pretrain_rejects_a_mismatched_model(capsys):
    pytest.importorskip("torch")
    args = ["pretrain", "--source", "digits", "--model", "tiny_cnn", "--epochs", "1"]
    assert cli.main(args) == 2
    assert "takes (1, 28, 28) inputs" in capsys.readouterr().err
