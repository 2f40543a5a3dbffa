"""picotrain's main job (`./run demo`): deploy picotrain, adapt a model ON THE BOARD with PRIOT, bring it back.

With a Pico on USB (MicroPython >= 1.24) it runs there; with none, on the virtual board
(the MicroPython unix port on a folder, host_tools/board/virtual.py), through the same
mpremote raw-REPL link. Steps:

1. a pretrained int8 model: a small CNN pretrained in float on upright 8x8 digits
   (PyTorch, host_tools/pretrain.py), converted and calibrated on the rotated adaptation set
   (or --model FILE.pt8 to bring your own, calibrated);
2. `deploy`: the device package compiled for the board (mpy-cross), its native kernels,
   the model and the datasets, each copied only if it differs from what the board has;
3. `train`: PRIOT for --epochs epochs on the board, with a progress bar fed by the board;
4. `pull` the trained model, evaluate it on the host mirror: the board's test count and
   the host's agree, and (--mirror) the model's bytes equal a host run's.

    python examples/remote_train.py                 # auto: a board on USB, else the virtual one
    python examples/remote_train.py --port /dev/ttyACM0 --epochs 30
    python examples/remote_train.py --port virtual:out/virtual-board --stream --mirror
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "device"))

import picotrain as pt  # noqa: E402
from picotrain.data import Dataset  # noqa: E402
from host_tools import datasets  # noqa: E402
from host_tools.board import connect  # noqa: E402
from host_tools.deploy import deploy  # noqa: E402
from host_tools.remote import remote_train  # noqa: E402

OPTIONS = {"PRIOT": {}, "PRIOTS": {"p": 0.5, "select": "weight"},  # PRIOT's defaults
           "StaticNITI": {"mu": 3}, "NITI": {"mu": 3}}


def prepare(out, angle, seed, model=None, log=print):
    """Host files for the job: (model.pt8, train.pt8d, test.pt8d) in out/."""
    os.makedirs(out, exist_ok=True)
    tr = datasets.load_split("digits", "transfer-train", angle=angle)
    te = datasets.load_split("digits", "transfer-test", angle=angle)
    train, test = os.path.join(out, "train.pt8d"), os.path.join(out, "test.pt8d")
    datasets.write_pt8d(train, *tr)
    datasets.write_pt8d(test, *te)
    if model is None:
        try:
            from host_tools import convert, models, pretrain
        except ImportError as e:
            raise SystemExit("pretraining needs PyTorch (%s): pip install torch, or pass --model FILE.pt8" % e)
        log("pretraining tiny_cnn_digits on upright digits (PyTorch, a few seconds)")
        ck = pretrain.pretrain(source="digits", seed=seed)
        net = models.build(ck["arch"])
        net.load_state_dict(ck["state_dict"])
        m = convert.convert(net.eval(), models.input_shape(ck["arch"]))
        pt.calibrate(m, datasets.to_samples(*tr))  # static scales, on the adaptation set
        model = os.path.join(out, "base.pt8")
        m.save(model)
    return model, train, test


def run(board, model, train, test, method="PRIOT", epochs=10, stream=False, mirror=False, seed=1,
        out="out/remote", log=print):
    """Deploy to `board`, train there, pull, check on the host; returns remote_train's result."""
    options = dict(OPTIONS.get(method, {}))
    if method.startswith("PRIOT"):
        options["seed"] = seed
    with Dataset(test) as ds:
        before = pt.evaluate(pt.load(model), ds)
    log("accuracy before training (host mirror): %.1f%%" % (100 * before))
    deploy(board, model=model, datasets=[] if stream else [train, test], log=log)
    r = remote_train(board, model, train, method, options, epochs=epochs, test=test, stream=stream,
                     mirror=mirror, out=os.path.join(out, "trained.pt8"), log=log)
    after = r["host_test_ok"] / r["host_test_n"]
    extra = ""
    m = pt.load(r["out"])
    if m.pruned:
        extra = ", %.1f%% of edges pruned" % (100 * pt.pruned_fraction(m))
    log("accuracy %.1f%% -> %.1f%% on rotated digits, trained on the board (%s, %d bytes of training "
        "buffers)%s" % (100 * before, 100 * after, method, r["nbytes"], extra))
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", help="serial port, socket://HOST:PORT or virtual[:FOLDER] (default: auto)")
    ap.add_argument("--model", help="a calibrated int8 model file (default: pretrain one with PyTorch)")
    ap.add_argument("--method", default="PRIOT", choices=sorted(OPTIONS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--angle", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stream", action="store_true", help="stream the samples instead of copying the datasets")
    ap.add_argument("--mirror", action="store_true", help="also train on the host and compare the model bytes")
    ap.add_argument("--out", default="out/remote")
    args = ap.parse_args(argv)
    t0 = time.time()
    model, train, test = prepare(args.out, args.angle, args.seed, args.model)
    with connect(args.port, log=print) as board:
        print("board: %s" % board.port + (" (virtual board in %s)" % board.virtual.folder if board.is_virtual else ""))
        run(board, model, train, test, args.method, args.epochs, args.stream, args.mirror, args.seed, args.out)
    print("done in %.0f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
