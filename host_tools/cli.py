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

    p = sub.add_parser("eval", help="accuracy of a model file on a .pt8d file (host mirror)")
    p.add_argument("model", metavar="MODEL.pt8")
    p.add_argument("data", metavar="DATA.pt8d")
    p.set_defaults(func=cmd_evaluate)

    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"picotrain {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
