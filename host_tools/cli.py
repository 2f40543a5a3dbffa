"""The `picotrain` command: one subcommand per host tool.

To add a subcommand, write its `cmd_<name>(args)` function and one
`add_parser` block in `build_parser`. A command returns an exit status (or
None for success); FileNotFoundError / ValueError it raises become a one-line
error and exit status 2. Heavy imports (torch, PIL) happen inside commands so
that `picotrain --help` and the data tools start fast and work without torch.
"""

import argparse
import sys

from host_tools import datasets
from host_tools.models import NAMES as MODEL_NAMES


def cmd_dataset(args):
    images, labels = datasets.load_split(args.source, args.split, args.mnist_dir,
                                         angle=args.angle, limit=args.limit)
    header = datasets.write_pt8d(args.out, images, labels)
    counts = " ".join(str(int((labels == c).sum())) for c in range(header.n_classes))
    print(f"wrote {args.out}: {header.count} {args.source} {args.split} images "
          f"{'x'.join(map(str, header.shape))}, rotated {args.angle:g} deg; "
          f"per class: {counts}")


def cmd_pretrain(args):
    from host_tools.pretrain import DEFAULT_MODEL, pretrain

    model = args.model or DEFAULT_MODEL[args.source]
    out = args.out or f"out/{model}.pt"
    ckpt = pretrain(model, args.source, args.epochs, args.seed, args.mnist_dir,
                    out=out, eval_angles=args.eval_angle)
    meta = ckpt["meta"]
    accs = ", ".join(f"{acc:.2%} at {angle:g} deg" for angle, acc in meta["test_accuracy"].items())
    print(f"{ckpt['arch']}: {meta['epochs']} epochs on {meta['n_train']} {meta['source']} images "
          f"in {meta['train_seconds']:.1f} s; held-out ({meta['test_split']}) accuracy {accs}; "
          f"saved {out}")


def _load_samples(path):
    """A .pt8d file as a list of (array('b'), label) in RAM (host side)."""
    from array import array
    from picotrain.data import Dataset
    with Dataset(path) as ds:
        out = []
        for i in range(len(ds)):
            x = array("b", bytes(ds.sample_size))
            label = ds.read(i, x)
            if label >= 0:
                out.append((x, label))
    return out


def cmd_convert(args):
    from host_tools.convert import convert_checkpoint
    m = convert_checkpoint(args.checkpoint)
    if args.calibrate:
        import picotrain as pt
        pt.calibrate(m, _load_samples(args.calibrate))
    m.save(args.out)
    print(m.summary())
    print(f"saved {args.out} ({m.nbytes()} B of inference buffers)")


def cmd_calibrate(args):
    import picotrain as pt
    m = pt.load(args.model)
    data = _load_samples(args.data)[: args.limit]
    shifts = pt.calibrate(m, data)
    m.save(args.out or args.model)
    for i, (s, b, g) in shifts.items():
        print(f"layer {i:2d} {m.layers[i]!r}: shift {s}, error shift {b}, gradient bits {g}")
    print(f"calibrated on {len(data)} samples; saved {args.out or args.model}")


def cmd_evaluate(args):
    import picotrain as pt
    m = pt.load(args.model)
    acc = pt.evaluate(m, _load_samples(args.data))
    print(f"{args.model} on {args.data}: accuracy {acc:.2%} ({pt.backend()} kernels)")
    if args.board:
        from host_tools.remote import remote_eval
        with _connect(args) as b:
            ok, n = remote_eval(b, args.model, args.data, stream=args.stream)
        print(f"on the board ({b.port}): {ok}/{n} = {ok / max(1, n):.2%}, the same as the host mirror")


# ------------------------------------------------------------- the board --
def _connect(args):
    from host_tools.board import connect
    return connect(args.port, timeout=args.timeout, log=print)


def _options(pairs):
    """--set k=v ... -> {k: v}, v a Python literal when it reads as one."""
    import ast
    out = {}
    for kv in pairs or ():
        k, sep, v = kv.partition("=")
        if not sep or not k.isidentifier():
            raise ValueError(f"--set wants NAME=VALUE, got {kv!r}")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def cmd_board(args):
    from host_tools.board import VirtualDevice
    if args.serve:
        import time
        with VirtualDevice(args.serve_dir, serial_pty=True) as vd:
            print(f"virtual board on {vd.url} and {vd.pty_path}, filesystem {vd.folder}")
            print("(e.g. mpremote connect %s; Ctrl-C stops it)" % vd.url, flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                return 0
    with _connect(args) as b:
        i = b.info()
        print(f"port: {b.port}{' (virtual board: ' + str(b.virtual.folder) + ')' if b.is_virtual else ''}")
        print(f"MicroPython {'.'.join(map(str, i['version']))}, mpy "
              f"{'%d.%d' % tuple(i['mpy_version']) if i['mpy_version'] else '?'}, arch {i['arch']}: {i['machine']}")
        fs = i.get("statvfs")
        if fs:
            print(f"filesystem: {fs[2] * fs[1]} bytes, {fs[4] * fs[1]} free; heap free {i['mem_free']} bytes")
        print("picotrain:", b.exec("try:\n import picotrain\n print(picotrain.__version__, picotrain.backend())\n"
                                   "except ImportError:\n print('not deployed')").strip())


def cmd_deploy(args):
    from host_tools.deploy import deploy
    with _connect(args) as b:
        deploy(b, model=args.model, datasets=args.dataset, native=not args.no_native,
               compile=not args.source, force=args.force)


def cmd_train(args):
    from host_tools.remote import remote_train
    with _connect(args) as b:
        remote_train(b, args.model, args.data, args.method, _options(args.set), epochs=args.epochs,
                     test=args.test, stream=args.stream, shuffle=args.shuffle,
                     checkpoint_every=args.checkpoint_every, resume=args.resume, out=args.out,
                     save=args.save, mirror=args.mirror, bar=not args.no_bar)


def cmd_pull(args):
    from host_tools.remote import pull
    with _connect(args) as b:
        data = pull(b, args.file, args.out or args.file)
    print(f"pulled {args.file} ({len(data)} B) to {args.out or args.file}")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="picotrain", description="Host tools for picotrain (on-device int8 training).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_source_args(p):
        p.add_argument("--source", choices=datasets.SOURCES, default="mnist",
                       help="mnist (the 10,000-image test set) or digits (scikit-learn 8x8)")
        p.add_argument("--mnist-dir", default=datasets.DEFAULT_MNIST_DIR,
                       help="folder with t10k-*-ubyte.gz (default: %(default)s)")

    p = sub.add_parser("dataset", help="write a split of MNIST or digits as a .pt8d file",
                       description="Write one split (docs/DATASETS.md) as a .pt8d file.")
    add_source_args(p)
    p.add_argument("--split", choices=datasets.SPLITS, required=True)
    p.add_argument("--angle", type=float, default=0.0,
                   help="rotate counter-clockwise by this many degrees")
    p.add_argument("--limit", type=int, help="keep only the split's first N images")
    p.add_argument("--out", required=True, metavar="FILE.pt8d")
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("pretrain", help="float-pretrain a reference model (PyTorch)",
                       description="Pretrain on the upright pretrain split; report held-out "
                                   "accuracy on the transfer-test split.")
    add_source_args(p)
    p.add_argument("--model", choices=MODEL_NAMES,
                   help="default: tiny_cnn for mnist, tiny_cnn_digits for digits")
    p.add_argument("--epochs", type=int,
                   help="default: the source's setting in host_tools.pretrain.DEFAULTS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-angle", type=float, action="append", default=[],
                   help="also report held-out accuracy at this rotation (repeatable)")
    p.add_argument("--out", metavar="FILE.pt", help="default: out/MODEL.pt")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("convert", help="PyTorch checkpoint -> picotrain model file (.pt8)",
                       description="Convert a `picotrain pretrain` checkpoint to int8 (BatchNorm folded); "
                                   "optionally calibrate static shifts on a .pt8d file.")
    p.add_argument("checkpoint")
    p.add_argument("--calibrate", metavar="DATA.pt8d", help="calibrate static shifts on these samples")
    p.add_argument("--out", required=True, metavar="FILE.pt8")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("calibrate", help="static shifts (most frequent dynamic shift per layer)",
                       description="Run the dynamic passes over labelled samples and keep each "
                                   "layer's most frequent shift (the PRIOT paper's static scales).")
    p.add_argument("model", metavar="MODEL.pt8")
    p.add_argument("data", metavar="DATA.pt8d")
    p.add_argument("--limit", type=int, help="use only the first N samples")
    p.add_argument("--out", metavar="FILE.pt8", help="default: overwrite MODEL.pt8")
    p.set_defaults(func=cmd_calibrate)

    def add_board_args(p):
        p.add_argument("--port", help="serial port, socket://HOST:PORT, 'virtual' or 'virtual:FOLDER' "
                                      "(default: $PICOTRAIN_PORT, else the first board on USB, else the "
                                      "virtual board)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the board (default 5)")

    p = sub.add_parser("eval", help="accuracy of a model file on a .pt8d file (host mirror; --board: also "
                                    "on the board, checked equal)")
    p.add_argument("model", metavar="MODEL.pt8")
    p.add_argument("data", metavar="DATA.pt8d")
    p.add_argument("--board", action="store_true", help="also evaluate on the board and compare")
    p.add_argument("--stream", action="store_true", help="stream the samples to the board instead of copying the file")
    add_board_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("board", help="which board the tools use, and what it runs (--serve: run the virtual board)",
                       description="Describe the board (port, MicroPython version, arch, flash, heap, "
                                   "picotrain), or serve the virtual board for mpremote and other tools.")
    add_board_args(p)
    p.add_argument("--serve", action="store_true", help="run the virtual board until Ctrl-C, printing its address")
    p.add_argument("--serve-dir", metavar="FOLDER", help="the virtual board's filesystem (default: the usual one)")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("deploy", help="put picotrain (compiled .mpy + native kernels), a model and datasets on a board",
                       description="Compile device/picotrain with mpy-cross for the board's arch, add the "
                                   "native kernels for it, and copy what differs (docs/BOARD.md). Checks the "
                                   "board's MicroPython version and free flash before writing anything.")
    add_board_args(p)
    p.add_argument("--model", metavar="FILE.pt8", help="also copy this model file (to the board's root)")
    p.add_argument("--dataset", metavar="FILE.pt8d", action="append", default=[],
                   help="also copy this dataset (repeatable)")
    p.add_argument("--no-native", action="store_true", help="leave out the native kernels (pure-Python kernels)")
    p.add_argument("--source", action="store_true", help="copy the .py sources instead of compiling them")
    p.add_argument("--force", action="store_true", help="copy every file, even those already identical")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("train", help="train a model on the board, with a progress bar; pull it back and check it",
                       description="Copy the model (and the data, unless --stream) to the board, train there, "
                                   "pull the trained model and evaluate it on the host mirror: the board's and "
                                   "the host's test counts must agree (--mirror: also the model's bytes).")
    add_board_args(p)
    p.add_argument("model", metavar="MODEL.pt8")
    p.add_argument("data", metavar="TRAIN.pt8d")
    p.add_argument("--method", default="PRIOT", help="NITI, StaticNITI, PRIOT, PRIOTS, ... (default PRIOT)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a method option, e.g. --set rate=4 --set batch=8 (repeatable)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--test", metavar="TEST.pt8d", help="test set: accuracy on the board and on the host mirror")
    p.add_argument("--stream", action="store_true", help="send the samples over the link instead of copying the files")
    p.add_argument("--shuffle", type=int, metavar="SEED", help="a new sample order each epoch from this seed")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="checkpoint every N samples on the board (and every epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the board's last good checkpoint")
    p.add_argument("--save", metavar="NAME", help="name of the trained model on the board (default MODEL-METHOD.pt8)")
    p.add_argument("--out", metavar="FILE.pt8", help="where to pull it (default out/NAME)")
    p.add_argument("--mirror", action="store_true", help="also train on the host mirror and compare the bytes")
    p.add_argument("--no-bar", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pull", help="copy a file from the board to the host")
    add_board_args(p)
    p.add_argument("file", metavar="NAME", help="path on the board (relative to /)")
    p.add_argument("--out", metavar="FILE", help="default: the same name here")
    p.set_defaults(func=cmd_pull)

    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"picotrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the board's and deployment's own errors: one line, no traceback
        from host_tools.board import BoardError
        from host_tools.deploy import DeployError
        if not isinstance(e, (BoardError, DeployError)):
            raise
        print(f"picotrain {args.command}: error: {e}", file=sys.stderr)
        if getattr(e, "traceback", None):
            print(e.traceback, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
