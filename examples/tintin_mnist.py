"""Tin-Tin on MNIST from scratch: TinTin (integer-only, on the mirror) vs float32 PyTorch training
of the same network vs NITI; accuracy, bytes of training memory, the update factor m and the
number of decomposition terms n.

Protocol: the reference tiny CNN (host_tools/models.py "tiny_cnn", bias-free) is initialised by
PyTorch with the seed; the float runs train that initialisation, the integer runs its int8
conversion (host_tools.convert), so every method starts from the same weights. Training data:
the `pretrain` split of the MNIST test set (7,952 images, docs/DATASETS.md; --limit cuts it),
shuffled per epoch with XorShift32(1000 + seed); test: the 1,024 upright `transfer-test` images.
Integer methods train at batch 1 (the device's setting) on the numpy mirror, which gives the
same bits as the Pico's kernels. Memory is counted the same way for every method: training
buffers (activations, errors, scratch, gradients: Trainer.nbytes) plus the weights; float32 is
the same buffer plan at 4 bytes a value, plus fp32 weights and fp32 gradients.

    python examples/tintin_mnist.py                       # ~10 minutes on 2 cores
    python examples/tintin_mnist.py --limit 1000 --epochs 1 --ms 2,3 --ns 4 --n-at 3 --jobs 1   # a smoke run

Outputs (--out-dir, default examples/results/): tintin_mnist.md (tables and the command),
tintin_mnist.json (every number), tintin_mnist.png (test accuracy per epoch; final accuracy vs m).
"""
import argparse
import json
import os
import shlex
import sys
import time

from common import ROOT, shuffled_epochs  # first: the repository on sys.path, one BLAS thread

import picotrain as pt  # noqa: E402

ARCH = "tiny_cnn"


def load(limit, mnist_dir):
    from host_tools import datasets
    tr = datasets.load_split("mnist", "pretrain", mnist_dir, limit=limit)
    te = datasets.load_split("mnist", "transfer-test", mnist_dir)
    return tr, te


def init_net(seed):
    import torch
    from host_tools import models
    torch.manual_seed(seed)
    return models.build(ARCH)


def int8_init(seed):
    from host_tools import convert, models
    return convert.convert(init_net(seed).eval(), models.input_shape(ARCH))


def float_memory(model):
    """float32 with picotrain's buffer plan: every buffer value 4 bytes, fp32 weights and
    fp32 gradients (batch 1)."""
    buf = sum(4 * n for _, _, n in model.plan(True))
    w = sum(l.weight.size for l in model.param_layers())
    return dict(buffers=buf, weights=4 * w, gradients=4 * w, total=buf + 8 * w)


def int_memory(trainer):
    w = sum(l.weight.size for l in trainer.model.param_layers())
    return dict(buffers=trainer.nbytes(), weights=w, total=trainer.nbytes() + w)


# --------------------------------------------------------------- the runs --
def run_float(cfg, opt):
    import numpy as np
    import torch
    from host_tools.pretrain import accuracy, to_input
    (xi, yi), (ti, tl) = load(cfg["limit"], cfg["mnist_dir"])
    torch.set_num_threads(1)
    net = init_net(cfg["seed"])
    x, y = to_input(xi), torch.from_numpy(yi.astype(np.int64))
    xt, yt = to_input(ti), torch.from_numpy(tl.astype(np.int64))
    bs = 32 if opt == "adam" else 1
    steps = cfg["epochs"] * ((len(x) + bs - 1) // bs)
    if opt == "adam":  # the project's pretraining recipe (host_tools/pretrain.py)
        o = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(o, steps)
    else:  # plain SGD at batch 1, the on-device setting
        o = torch.optim.SGD(net.parameters(), lr=0.01)
        sched = None
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1000 + cfg["seed"])
    epochs = []
    t0 = time.time()
    for ep in range(cfg["epochs"]):
        net.train()
        ok = 0
        for idx in torch.randperm(len(x), generator=gen).split(bs):
            out = net(x[idx])
            loss = loss_fn(out, y[idx])
            o.zero_grad()
            loss.backward()
            o.step()
            if sched is not None:
                sched.step()
            ok += (out.argmax(1) == y[idx]).sum().item()
        epochs.append(dict(epoch=ep + 1, train_acc=ok / len(x), test_acc=accuracy(net, xt, yt)))
    model = int8_init(cfg["seed"])
    return dict(epochs=epochs, seconds=round(time.time() - t0, 1), memory=float_memory(model))


def run_int(cfg, spec):
    from host_tools import datasets
    (xi, yi), (ti, tl) = load(cfg["limit"], cfg["mnist_dir"])
    train, test = datasets.to_samples(xi, yi), datasets.to_samples(ti, tl)
    model = int8_init(cfg["seed"])
    spec = dict(spec)
    cls = getattr(pt, spec.pop("method"))
    t = cls(model, **spec)
    epochs = []
    t0 = time.time()
    for ep, tr, dt in shuffled_epochs(t, train, cfg["epochs"], cfg["seed"]):
        epochs.append(dict(epoch=ep, train_acc=tr, test_acc=t.evaluate(test),
                           ms_per_step=round(1000 * dt / len(train), 3)))
    out = dict(epochs=epochs, seconds=round(time.time() - t0, 1), memory=int_memory(t))
    if isinstance(t, pt.TinTin):
        out["rescales"] = [l.w_rescales for l in model.param_layers()]
        out["exponents"] = [(l.weight.exp, l.weight.u, l.weight.d) for l in model.param_layers()]
        out["saturated"] = [[l.sat_fwd, l.sat_bwd, l.sat_upd] for l in model.param_layers()]
    return out


def _job(args):
    key, cfg, spec = args
    if spec["method"] == "float":
        return key, run_float(cfg, spec["opt"])
    return key, run_int(cfg, spec)


def rows(ms, ns, mu, n_at):
    out = [("float_adam", "float32 PyTorch, Adam batch 32", dict(method="float", opt="adam")),
           ("float_sgd", "float32 PyTorch, SGD batch 1 (lr 0.01)", dict(method="float", opt="sgd")),
           ("niti", "NITI (mu=%d)" % mu, dict(method="NITI", mu=mu))]
    for m in ms:
        out.append(("tintin_m%d" % m, "TinTin m=%d n=4" % m, dict(method="TinTin", m=m, n=4)))
    for n in ns:
        if n != 4 or n_at not in ms:
            out.append(("tintin_m%d_n%d" % (n_at, n), "TinTin m=%d n=%d" % (n_at, n), dict(method="TinTin", m=n_at, n=n)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="first N images of the pretrain split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ms", default="2,3,4,5,6", help="update factors m to compare")
    ap.add_argument("--ns", default="1,2,4", help="decomposition terms n to compare (at m = --n-at)")
    ap.add_argument("--n-at", type=int, default=5, help="the m at which n is varied")
    ap.add_argument("--mu", type=int, default=3, help="NITI's mu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mnist-dir", default=None)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "examples", "results"))
    ap.add_argument("--report-only", action="store_true",
                    help="re-render the table and plot from --out-dir/tintin_mnist.json (no training)")
    a = ap.parse_args(argv)
    if a.report_only:
        with open(os.path.join(a.out_dir, "tintin_mnist.json")) as f:
            blob = json.load(f)
        a.n_at = blob.get("n_at", a.n_at)
        report(a, blob["config"], [tuple(r) for r in blob["rows"]], blob["results"], blob["command"],
               blob.get("seconds", 0))
        return
    ms = [int(v) for v in a.ms.split(",") if v]
    ns = [int(v) for v in a.ns.split(",") if v]
    cfg = dict(epochs=a.epochs, limit=a.limit, seed=a.seed, mnist_dir=a.mnist_dir)
    table = rows(ms, ns, a.mu, a.n_at)
    t0 = time.time()
    jobs = [(k, cfg, spec) for k, _, spec in table]
    if a.jobs > 1:
        from multiprocessing import Pool
        with Pool(a.jobs) as pool:
            res = dict(pool.imap_unordered(_job, jobs))
    else:
        res = dict(_job(j) for j in jobs)
    cmd = "python examples/" + os.path.basename(__file__) + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    report(a, cfg, table, res, cmd, time.time() - t0)


def report(a, cfg, table, res, cmd, seconds):
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "tintin_mnist.json"), "w") as f:
        json.dump(dict(command=cmd, config=cfg, rows=[(k, label, spec) for k, label, spec in table], results=res,
                       n_at=a.n_at, seconds=seconds), f, indent=1)
    fmem = res["float_adam"]["memory"]["total"]
    lines = ["# Tin-Tin on MNIST from scratch", "",
             "Command: `%s` (%.0f s). Tiny CNN (%s), trained on the MNIST `pretrain` split (%s images), "
             "tested on the 1,024 upright `transfer-test` images, %d epoch(s), seed %d; every method starts "
             "from the same PyTorch initialisation (int8 methods: its conversion)."
             % (cmd, seconds, ARCH, cfg["limit"] or "7,952", cfg["epochs"], cfg["seed"]), "",
             "| method | test acc per epoch (%) | final test (%) | memory B (buffers + weights) | vs float32 | ms/step (mirror) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k, label, spec in table:
        r = res[k]
        accs = " / ".join("%.1f" % (100 * e["test_acc"]) for e in r["epochs"])
        mem = r["memory"]["total"]
        ms = r["epochs"][-1].get("ms_per_step")
        lines.append("| %s | %s | %.2f | %d | %+.0f%% | %s |" % (
            label, accs, 100 * r["epochs"][-1]["test_acc"], mem, 100 * (mem / fmem - 1),
            "%.2f" % ms if ms is not None else "(torch)"))
    lines += ["", "Memory detail (bytes):", "", "| method | buffers | weights | total |", "| --- | --- | --- | --- |"]
    for k in ("float_adam", "niti", "tintin_m%d" % a.n_at):
        if k in res:
            mm = res[k]["memory"]
            label = [lb for kk, lb, _ in table if kk == k][0]
            if k.startswith("float"):
                lines.append("| float32 (any optimiser at batch 1; Adam adds 2 x fp32 weights) | %d (incl. fp32 gradients %d) | %d | %d |"
                             % (mm["buffers"] + mm["gradients"], mm["gradients"], mm["weights"], mm["total"]))
            else:
                lines.append("| %s | %d | %d | %d |" % (label, mm["buffers"], mm["weights"], mm["total"]))
    lines += ["", "Notes: the step of TinTin is normalised: every update moves a layer's largest weight by up to "
              "dmax = (127 >> m) + 1 units of a range kept at 127 - dmax (m=2: 32 of 95, m=3: 16 of 111, m=4: 8, "
              "m=5: 4, m=6: 2), whatever the size of the error; NITI's mu=3 step is at most 7 units of 127. "
              "A run that ends at 10.16%% predicts one class for every image (collapsed). TinTin's extra memory "
              "over NITI is its int8 scratch for the aligned gradient (the largest layer's weight count) and the "
              "360-byte factor table."]
    tt = [k for k, _, _ in table if k.startswith("tintin")]
    if tt:
        lines += ["", "TinTin weight rescales per layer (overflow handling) and final weight exponents (S, U, D):", ""]
        for k in tt:
            lines.append("- %s: rescales %s, exponents %s, saturations (fwd, bwd, upd) %s"
                         % (k, res[k]["rescales"], res[k]["exponents"], res[k]["saturated"]))
    with open(os.path.join(a.out_dir, "tintin_mnist.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(a, table, res)
    print("\n".join(lines))


def plot(a, table, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for k, label, _ in table:
        ep = res[k]["epochs"]
        ax1.plot([e["epoch"] for e in ep], [100 * e["test_acc"] for e in ep], marker="o", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("MNIST from scratch (tiny CNN)")
    ax1.legend(fontsize=7)
    ms = sorted(int(k[len("tintin_m"):]) for k, _, _ in table if k.startswith("tintin_m") and "_n" not in k)
    ns = sorted((int(k.split("_n")[1]), k) for k, _, _ in table if "_n" in k)
    if ms:
        ax2.plot(ms, [100 * res["tintin_m%d" % m]["epochs"][-1]["test_acc"] for m in ms], marker="o", label="TinTin")
        ax2.axhline(100 * res["niti"]["epochs"][-1]["test_acc"], color="gray", ls="--", label="NITI")
        ax2.axhline(100 * res["float_sgd"]["epochs"][-1]["test_acc"], color="k", ls=":", label="float32 SGD b1")
        ax2.set_xlabel("update factor m (step ~ 2**-m of the weight range)")
        ax2.set_ylabel("final test accuracy (%)")
        ax2.set_title("effect of m")
        ax2.legend(fontsize=7)
    pts = sorted([(n, k) for n, k in ns] + ([(4, "tintin_m%d" % a.n_at)] if "tintin_m%d" % a.n_at in res else []))
    if pts:
        ax3.plot([n for n, _ in pts], [100 * res[k]["epochs"][-1]["test_acc"] for _, k in pts], marker="o")
        ax3.set_xlabel("n: terms of the binary decomposition (m=%d)" % a.n_at)
        ax3.set_ylabel("final test accuracy (%)")
        ax3.set_title("effect of n (n=1: power-of-two levels only)")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out_dir, "tintin_mnist.png"), dpi=110)


if __name__ == "__main__":
    main()
