"""convert: PyTorch float -> picotrain int8; agreement, BatchNorm folding, errors."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import picotrain as pt  # noqa: E402
from host_tools import convert, datasets, pretrain  # noqa: E402


def float_predict(net, images):
    x = torch.from_numpy((images >> 1).astype(np.float32) / 128.0).reshape(len(images), 1, *images.shape[-2:])
    with torch.no_grad():
        return net(x).argmax(1).numpy()


@pytest.fixture(scope="module")
def digits_net():
    from host_tools import models
    ck = pretrain.pretrain(source="digits", seed=0, epochs=6)
    net = models.build(ck["arch"])
    net.load_state_dict(ck["state_dict"])
    return net.eval()


def test_int8_agrees_with_float(digits_net):
    images, labels = datasets.load_split("digits", "transfer-test")
    m = convert.convert(digits_net, (1, 8, 8))
    samples = datasets.to_samples(images, labels)
    ref = float_predict(digits_net, images)
    dyn = np.array([m.predict(x, dynamic=True) for x, _ in samples])
    pt.calibrate(m, samples)
    stat = np.array([m.predict(x) for x, _ in samples])
    # measured: 99-100% agreement dynamic, 98-100% static on these 256 digits
    assert (dyn == ref).mean() >= 0.97
    assert (stat == ref).mean() >= 0.95


def test_batchnorm_is_folded_and_bias_kept():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Linear(16, 3))
    net.train()
    for _ in range(3):  # give the BatchNorms real running statistics
        net(torch.rand(64, 1, 8, 8))
    net.eval()
    m = convert.convert(net, (1, 8, 8))
    assert [type(l).__name__ for l in m.layers] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear",
                                                    "ReLU", "Linear"]
    assert m.layers[0].bias is not None and m.layers[4].bias is not None
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 8, 8), dtype=np.uint8)
    ref = float_predict(net, images)
    got = np.array([m.predict(x, dynamic=True) for x, _ in datasets.to_samples(images, ref)])
    assert (got == ref).mean() >= 0.9  # random inputs, 3 classes: measured 0.97


@pytest.mark.parametrize("layer,msg", [
    (nn.Conv2d(1, 2, (3, 5)), "square kernels"),
    (nn.Conv2d(1, 2, 3, groups=1, dilation=2), "dilation"),
    (nn.AvgPool2d(2), r"layer 0 \(AvgPool2d\) is not supported"),
    (nn.Sigmoid(), r"layer 0 \(Sigmoid\) is not supported"),
])
def test_unsupported_layers_are_named(layer, msg):
    with pytest.raises(convert.UnsupportedLayer, match=msg):
        convert.convert(nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(2)), (1, 8, 8))


def test_batchnorm_without_a_layer_before_is_refused():
    with pytest.raises(convert.UnsupportedLayer, match="BatchNorm must directly follow"):
        convert.convert(nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 2)), (1, 8, 8))


def test_quantize_uses_full_range():
    q, e = convert.quantize(np.array([0.5, -0.25, 0.001]))
    assert q.max() <= 127 and q[0] >= 64 and 0.5 == pytest.approx(q[0] * 2.0 ** e, rel=0.01)


def test_cli_convert_calibrate_eval(tmp_path, digits_net, capsys):
    from host_tools import cli, models
    ck = str(tmp_path / "d.pt")
    torch.save({"arch": "tiny_cnn_digits", "state_dict": digits_net.state_dict(), "input_exp": -7}, ck)
    data = str(tmp_path / "d.pt8d")
    assert cli.main(["dataset", "--source", "digits", "--split", "transfer-train", "--angle", "30",
                     "--out", data]) is None
    model = str(tmp_path / "m.pt8")
    assert cli.main(["convert", ck, "--out", model]) is None
    assert cli.main(["calibrate", model, data, "--limit", "64"]) is None
    assert pt.load(model).static
    assert cli.main(["eval", model, data]) is None
    assert "accuracy" in capsys.readouterr().out
    assert cli.main(["convert", str(tmp_path / "missing.pt"), "--out", model]) == 2
    assert models.input_shape("tiny_cnn_digits") == (1, 8, 8)
