"""picotrain's main job, on any machine: a PRIOT transfer demo.

Pretrain the tiny CNN in float on upright digits (scikit-learn's 8x8 set, so
no download is needed), convert it to int8, calibrate static scales, then
adapt it to rotated digits with PRIOT: integer-only training that prunes
edges of the frozen pretrained weights, exactly as it runs on a Pico. Prints
accuracy before and after, and saves the adapted model.

    ./run demo                      # defaults below
    ./run demo --angle 45 --method PRIOTS --epochs 15
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "device"))

import picotrain as pt  # noqa: E402
from host_tools import convert, datasets, pretrain  # noqa: E402

METHODS = {
    "PRIOT": lambda m, seed: pt.PRIOT(m, rate=4, seed=seed),
    "PRIOTS": lambda m, seed: pt.PRIOTS(m, p=0.5, select="weight", rate=4, seed=seed),
    "StaticNITI": lambda m, seed: pt.StaticNITI(m, mu=3),
    "NITI": lambda m, seed: pt.NITI(m, mu=3),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--angle", type=float, default=30.0, help="rotation of the target domain (degrees)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--method", choices=sorted(METHODS), default="PRIOT")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="out/demo_adapted.pt8")
    args = ap.parse_args(argv)
    t0 = time.time()

    print("1. pretrain tiny_cnn_digits in float on upright digits (PyTorch)")
    ck = pretrain.pretrain(source="digits", seed=args.seed)
    print("   float accuracy, upright held-out: %.1f%%" % (100 * ck["meta"]["test_accuracy"][0]))

    print("2. convert to int8 (picotrain model file)")
    from host_tools import models
    net = models.build(ck["arch"])
    net.load_state_dict(ck["state_dict"])
    model = convert.convert(net.eval(), models.input_shape(ck["arch"]))
    upright = datasets.to_samples(*datasets.load_split("digits", "transfer-test"))
    print("   int8 accuracy, upright held-out:  %.1f%%" % (100 * pt.evaluate(model, upright, dynamic=True)))

    print("3. target domain: digits rotated by %g degrees (256 to adapt on, 256 to test)" % args.angle)
    train = datasets.to_samples(*datasets.load_split("digits", "transfer-train", angle=args.angle))
    test = datasets.to_samples(*datasets.load_split("digits", "transfer-test", angle=args.angle))
    pt.calibrate(model, train)
    before = pt.evaluate(model, test)
    print("   static scales calibrated on the adaptation set; accuracy before transfer: %.1f%%"
          % (100 * before))

    print("4. adapt on the device's terms: %s, integer-only, batch 1 (%s kernels)"
          % (args.method, pt.backend()))
    trainer = METHODS[args.method](model, args.seed)
    print("   training memory: %d bytes of buffers" % trainer.nbytes())
    trainer.fit(train, epochs=args.epochs, test=test, log=lambda line: print("   " + line))

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    model.save(args.out)
    after = pt.evaluate(pt.load(args.out), test)
    extra = ""
    if model.pruned:
        extra = ", %.1f%% of edges pruned" % (100 * pt.pruned_fraction(model))
    print("5. saved %s and reloaded it: accuracy %.1f%% -> %.1f%% on rotated digits%s"
          % (args.out, 100 * before, 100 * after, extra))
    print("   done in %.0f s" % (time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
