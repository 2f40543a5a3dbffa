"""Reproduce Table I of the PRIOT paper (Anada et al., arXiv 2503.16860) on our data.

Protocol (docs/DESIGN.md): pretrain the tiny CNN in float on upright MNIST (the
`pretrain` split of the 10,000-image MNIST test set), convert it to int8,
calibrate static scales on the rotated `transfer-train` split (1,024 images),
then adapt on that split with each method, integer-only, batch 1, and test on
the rotated `transfer-test` split (1,024 other images) after every epoch. The
number reported is the test accuracy at the epoch of best training accuracy
(training accuracy as measured during the epoch, the first such epoch on
ties), mean and sample standard deviation over seeds.

Seed s sets everything random in a run: the float pretraining (seed s), the
method's PRNG (picotrain.rng.XorShift32(s + 1): PRIOT score init, PRIOT-S
subset) and the shuffle of the training set before every epoch
(XorShift32(1000 + s)). Every method of one seed sees the same pretrained model,
the same calibration and the same sample order.

    python examples/priot_table.py                     # the full table (about an hour on 2 cores)
    python examples/priot_table.py --angles 45 --seeds 0 --epochs 5 --jobs 1
    python examples/priot_table.py --limit 64 --epochs 2 --seeds 0 --angles 30

Outputs (in --out-dir, default examples/results/): priot_table.md (the table,
the command, date and run time), priot_table.json (every per-epoch number),
priot_curves.png (mean test accuracy per epoch) and static_niti_saturation.png
(saturation counters per layer per epoch during static NITI: the collapse
signal of the paper's Figure 2). Each finished (method, angle, seed) run is
cached in --cache-dir (default out/priot_cache/, not in the repository), so an
interrupted run resumes where it stopped and a changed row reruns alone.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import shlex
import sys
import threading
import time

from common import ROOT, shuffled_epochs  # first: the repository on sys.path, one BLAS thread

import picotrain as pt  # noqa: E402

CACHE_VERSION = 1

# PRIOT settings used for the PRIOT and PRIOT-S rows (examples/priot_params.py
# justifies them; prune.py's own defaults may differ).
PRIOT_DEFAULTS = dict(threshold=0, init_span=32, rate=7, score_bits=8, mask_backward=False)
NITI_MU = 3

# The paper's Table I (Raspberry Pi Pico, tiny CNN, rotated MNIST, 10 seeds): (30 deg, 45 deg).
PAPER = {
    "before": (80.76, 52.25),
    "static_niti": (80.86, 51.95),
    "niti": (90.43, 90.72),
    "priot": (88.94, 85.70),
    "priots_random_hi": (80.35, 62.26),
    "priots_weight_hi": (80.05, 75.76),
    "priots_random_lo": (82.81, 69.80),
    "priots_weight_lo": (83.12, 82.05),
}


# ----------------------------------------------------------------- methods --
def make_rows(p_hi=0.9, p_lo=0.5, priot=None, mu=NITI_MU):
    """The table's trained rows: (key, label, spec). A spec is plain data
    (JSON), so it names the run in the cache and travels to worker processes."""
    kw = dict(PRIOT_DEFAULTS, **(priot or {}))
    rows = [
        ("static_niti", "static NITI (mu=%d)" % mu, dict(method="StaticNITI", mu=mu)),
        ("niti", "dynamic NITI (mu=%d)" % mu, dict(method="NITI", mu=mu)),
        ("priot", "PRIOT", dict(method="PRIOT", **kw)),
    ]
    for tag, p in (("hi", p_hi), ("lo", p_lo)):
        for sel in ("random", "weight"):
            rows.append(("priots_%s_%s" % (sel, tag), "PRIOT-S %s, p=%g" % ("random" if sel == "random" else "by weight", p),
                         dict(method="PRIOTS", p=p, select=sel, **kw)))
    return rows


def build_trainer(model, spec, seed):
    spec = dict(spec)
    name = spec.pop("method")
    cls = getattr(pt, name)
    if name in ("PRIOT", "PRIOTS"):
        spec["seed"] = seed + 1
    return cls(model, **spec)


# -------------------------------------------------------------------- data --
_DATA = {}


def get_data(source, split, angle, limit, mnist_dir):
    key = (source, split, angle, limit, mnist_dir)
    if key not in _DATA:
        from host_tools import datasets
        _DATA[key] = datasets.to_samples(*datasets.load_split(source, split, mnist_dir, angle=angle, limit=limit))
    return _DATA[key]


def _hash(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# ------------------------------------------------------------ preparation --
def prepare_seed(cfg, seed):
    """Pretrain (float) and convert; cached as an int8 model file per seed."""
    key = dict(v=CACHE_VERSION, what="pretrain", source=cfg["source"], seed=seed,
               pretrain_epochs=cfg["pretrain_epochs"])
    base = os.path.join(cfg["cache_dir"], "pre_" + _hash(key))
    if os.path.exists(base + ".json"):
        return base
    from host_tools import convert, models, pretrain
    ck = pretrain.pretrain(source=cfg["source"], seed=seed, epochs=cfg["pretrain_epochs"],
                           mnist_dir=cfg["mnist_dir"])
    net = models.build(ck["arch"])
    net.load_state_dict(ck["state_dict"])
    model = convert.convert(net.eval(), models.input_shape(ck["arch"]))
    model.save(base + ".pt8")
    meta = dict(key=key, arch=ck["arch"], float_upright=ck["meta"]["test_accuracy"][0],
                pretrain_seconds=ck["meta"]["train_seconds"])
    _write_json(base + ".json", meta)
    return base


# "all-samples": every sample votes on the backward scales, what picotrain.calibrate
# did before commit b9829ff (kept to show what that does: the report's last section).
CALIBRATIONS = {"library": lambda model, data: pt.calibrate(model, data),
                "all-samples": lambda model, data: pt.calibrate(model, data, all_samples=True)}


def prepare_angle(cfg, seed, angle):
    """Calibrate static scales on the rotated transfer-train data (as
    examples/demo.py does); accuracy before transfer. Cached per (seed, angle)."""
    pre = prepare_seed(cfg, seed)
    key = dict(v=CACHE_VERSION, what="calibrate", pre=os.path.basename(pre), angle=angle, limit=cfg["limit"])
    key["calibration"] = cfg.get("calibration", "library")
    base = os.path.join(cfg["cache_dir"], "cal_" + _hash(key))
    if os.path.exists(base + ".json"):
        with open(base + ".json") as f:
            return base, json.load(f)
    train = get_data(cfg["source"], "transfer-train", angle, cfg["limit"], cfg["mnist_dir"])
    test = get_data(cfg["source"], "transfer-test", angle, cfg["limit"], cfg["mnist_dir"])
    model = pt.load(pre + ".pt8")
    upright = get_data(cfg["source"], "transfer-test", 0, cfg["limit"], cfg["mnist_dir"])
    acc_upright = pt.evaluate(model, upright, dynamic=True)
    acc_dyn = pt.evaluate(model, test, dynamic=True)
    shifts = CALIBRATIONS[key["calibration"]](model, train)
    model.save(base + ".pt8")
    info = dict(key=key, seed=seed, angle=angle, before=pt.evaluate(model, test), before_dynamic=acc_dyn,
                upright_int8_dynamic=acc_upright, shifts={str(k): v for k, v in shifts.items()})
    _write_json(base + ".json", info)
    return base, info


# ---------------------------------------------------------------- one run --
def is_dynamic(spec):
    return getattr(pt, spec["method"]).dynamic


def run_key(cfg, row_key, spec, seed, angle):
    """What a run depends on. Static methods: the calibrated shifts themselves
    (so two calibration rules that agree share runs); dynamic methods train
    and test with dynamic shifts, which no calibration touches."""
    key = dict(v=CACHE_VERSION, source=cfg["source"], pretrain_epochs=cfg["pretrain_epochs"],
               limit=cfg["limit"], epochs=cfg["epochs"], spec=spec, seed=seed, angle=angle)
    if is_dynamic(spec):
        key["eval"] = "dynamic"
    else:
        key["cal"] = prepare_angle(cfg, seed, angle)[1]["shifts"]
    return key


def run_path(cfg, key):
    return os.path.join(cfg["cache_dir"], "run_" + _hash(key) + ".json")


def run_one(cfg, row_key, spec, seed, angle, progress=None):
    """Adapt one calibrated model with one method; per-epoch numbers. Cached."""
    key = run_key(cfg, row_key, spec, seed, angle)
    path = run_path(cfg, key)
    if os.path.exists(path):
        with open(path) as f:
            out = json.load(f)
        out["row"] = row_key  # the same spec may have been run under another name
        return out
    cal, info = prepare_angle(cfg, seed, angle)
    train = get_data(cfg["source"], "transfer-train", angle, cfg["limit"], cfg["mnist_dir"])
    test = get_data(cfg["source"], "transfer-test", angle, cfg["limit"], cfg["mnist_dir"])
    model = pt.load(cal + ".pt8")
    trainer = build_trainer(model, spec, seed)
    players = [(i, l) for i, l in enumerate(model.layers) if l.has_params]
    epochs = []
    t_start = time.time()

    def reset_sat():  # counters per epoch
        for _, l in players:
            l.sat_fwd = l.sat_bwd = l.sat_upd = 0
    reset_sat()
    for ep, tr, dt in shuffled_epochs(trainer, train, cfg["epochs"], seed):
        sat = {str(i): [l.sat_fwd, l.sat_bwd, l.sat_upd] for i, l in players}  # before testing touches sat_fwd
        te = trainer.evaluate(test)  # the way the method runs: static or dynamic shifts
        reset_sat()
        row = dict(epoch=ep, train_acc=tr, test_acc=te, seconds=round(dt, 3), sat=sat)
        if model.pruned:
            row["pruned"] = pt.pruned_fraction(model)
        epochs.append(row)
        if progress is not None:
            progress(1)
    best = best_epoch(epochs)
    before = info["before_dynamic"] if trainer.dynamic else info["before"]  # epoch 0, tested the same way
    out = dict(key=key, row=row_key, seed=seed, angle=angle, before=before,
               nbytes=trainer.nbytes(), epochs=epochs, best_epoch=best + 1,
               result=epochs[best]["test_acc"], seconds=round(time.time() - t_start, 2))
    _write_json(path, out)
    return out


def best_epoch(epochs):
    """Index of the epoch of best training accuracy (the first on ties)."""
    b = 0
    for i, e in enumerate(epochs):
        if e["train_acc"] > epochs[b]["train_acc"]:
            b = i
    return b


# -------------------------------------------------------------- the pool --
_QUEUE = None


def _init_worker(q):
    global _QUEUE
    _QUEUE = q


def _report(n):
    if _QUEUE is not None:
        _QUEUE.put(n)


def _job(args):
    _, cfg, i, row_key, spec, seed, angle = args
    return i, run_one(cfg, row_key, spec, seed, angle, progress=_report)


def run_jobs(cfg, prep, runs, jobs, desc="runs"):
    """prep: [(seed, angle)], runs: [(row_key, spec, seed, angle)] -> list of run results
    (in the order of runs). Uses `jobs` processes; one (jobs=1) runs in this process."""
    from tqdm import tqdm
    os.makedirs(cfg["cache_dir"], exist_ok=True)
    # Pretraining (a few seconds per seed) and calibration run here, first:
    # the runs' cache keys hold the calibrated shifts.
    for seed, angle in tqdm(sorted(set(prep) | {(r[2], r[3]) for r in runs}), desc="pretrain/calibrate",
                            disable=None, leave=False):
        prepare_angle(cfg, seed, angle)
    todo = [r for r in runs if not os.path.exists(run_path(cfg, run_key(cfg, r[0], r[1], r[2], r[3])))]
    total = len(todo) * cfg["epochs"]
    bar = tqdm(total=total, desc=desc, unit="epoch", disable=None, smoothing=0.05)
    bar.set_postfix(cached=len(runs) - len(todo), todo=len(todo))
    results = [None] * len(runs)
    n_done = [0]
    t0 = time.time()

    def done(i, out):
        # Without a terminal (nohup, CI) tqdm is off: one line per finished run instead.
        n_done[0] += 1
        if bar.disable:
            print("[%s %5.0f s] %d/%d %s %g deg seed %d: %.2f%% (epoch %d)"
                  % (desc, time.time() - t0, n_done[0], len(runs), out["row"], out["angle"], out["seed"],
                     100 * out["result"], out["best_epoch"]), flush=True)
    if jobs <= 1:
        global _QUEUE
        _QUEUE = None
        for i, r in enumerate(runs):
            results[i] = run_one(cfg, *r, progress=bar.update)
            done(i, results[i])
    else:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        q = ctx.Queue()

        def listen():
            while True:
                n = q.get()
                if n is None:
                    return
                bar.update(n)

        th = threading.Thread(target=listen, daemon=True)
        th.start()
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(q,)) as pool:
            for i, out in pool.imap_unordered(_job, [("run", cfg, i) + tuple(r) for i, r in enumerate(runs)]):
                results[i] = out
                done(i, out)
        q.put(None)
        th.join(timeout=5)
        q.close()
        q.join_thread()
    bar.close()
    return results


# ------------------------------------------------------------- reporting --
def mean_std(xs):
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))


def fmt(xs, scale=100.0):
    m, s = mean_std([scale * x for x in xs])
    if math.isnan(m):
        return "-"
    return "%.2f" % m if math.isnan(s) else "%.2f ± %.2f" % (m, s)


def _by(results, row, angle):
    return sorted((r for r in results if r["row"] == row and r["angle"] == angle), key=lambda r: r["seed"])


def curves_png(path, results, rows, angles, befores):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(angles), figsize=(6.2 * len(angles), 4.6), squeeze=False)
    for ax, angle in zip(axes[0], angles):
        for key, label, _ in rows:
            rs = _by(results, key, angle)
            if not rs:
                continue
            n_ep = min(len(r["epochs"]) for r in rs)
            xs = list(range(1, n_ep + 1))
            ms, ss = [], []
            for e in range(n_ep):
                m, s = mean_std([100 * r["epochs"][e]["test_acc"] for r in rs])
                ms.append(m)
                ss.append(0.0 if math.isnan(s) else s)
            b0 = [100 * r["before"] for r in rs]  # epoch 0: the calibrated model before transfer
            xs, ms, ss = [0] + xs, [sum(b0) / len(b0)] + ms, [mean_std(b0)[1] if len(b0) > 1 else 0.0] + ss
            line, = ax.plot(xs, ms, label=label, lw=1.6, ls="--" if key == "niti" else "-")
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)],
                            color=line.get_color(), alpha=0.12, lw=0)
        b = [100 * x for x in befores.get(angle, [])]
        if b:
            ax.axhline(sum(b) / len(b), color="k", ls=":", lw=1.2, label="before transfer (static)")
        nseeds = len({r["seed"] for r in results if r["angle"] == angle})
        ax.set_title("MNIST rotated %g°: test accuracy (mean ± std over %d seeds)" % (angle, nseeds), fontsize=10)
        ax.set_xlabel("epoch (0: before transfer)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


LAYER_NAMES = {0: "conv1", 3: "conv2", 7: "fc1", 9: "fc2"}
COUNTERS = ("sat_fwd", "sat_bwd", "sat_upd")


def sat_means(results, row, angle):
    """{layer: {counter: [mean per epoch]}} over seeds."""
    rs = _by(results, row, angle)
    if not rs:
        return {}
    n_ep = min(len(r["epochs"]) for r in rs)
    layers = sorted(rs[0]["epochs"][0]["sat"], key=int)
    out = {}
    for li in layers:
        out[li] = {}
        for k, cname in enumerate(COUNTERS):
            out[li][cname] = [sum(r["epochs"][e]["sat"][li][k] for r in rs) / len(rs) for e in range(n_ep)]
    return out


def saturation_png(path, results, angles, row="static_niti", compare="niti"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(angles), 4, figsize=(17, 3.6 * len(angles)), squeeze=False)
    for ai, angle in enumerate(angles):
        sm = sat_means(results, row, angle)
        cm = sat_means(results, compare, angle)
        for k, cname in enumerate(COUNTERS):
            ax = axes[ai][k]
            for j, (li, d) in enumerate(sm.items()):
                xs = range(1, len(d[cname]) + 1)
                line, = ax.plot(xs, d[cname], lw=1.6, label="%s static" % LAYER_NAMES.get(int(li), "layer " + li))
                if li in cm:
                    ax.plot(xs, cm[li][cname][:len(xs)], lw=1.0, ls=":", color=line.get_color(),
                            label="%s dynamic" % LAYER_NAMES.get(int(li), "layer " + li))
            ax.set_yscale("symlog", linthresh=10)
            ax.set_title("%g°: %s per epoch (mean over seeds)" % (angle, cname), fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if k == 0:
                ax.set_ylabel("saturated values")
        ax = axes[ai][3]
        for key, ls, label in ((row, "-", "static NITI"), (compare, ":", "dynamic NITI")):
            rs = _by(results, key, angle)
            if not rs:
                continue
            n_ep = min(len(r["epochs"]) for r in rs)
            for what, col in (("train_acc", "C0"), ("test_acc", "C3")):
                ys = [100 * sum(r["epochs"][e][what] for r in rs) / len(rs) for e in range(n_ep)]
                ax.plot(range(1, n_ep + 1), ys, ls=ls, color=col, label="%s %s" % (label, what.split("_")[0]))
        ax.set_title("%g°: accuracy (mean over seeds)" % angle, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Static NITI: values clipped at ±127 per layer per epoch (forward outputs, errors sent "
                 "back, weights clipped by updates); dotted: dynamic NITI", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pick_epochs(n):
    want = [1, 2, 3, 5, 10, 15, 20, 25, 30, n]
    return sorted({e for e in want if 1 <= e <= n})


def saturation_md(results, angles, row="static_niti"):
    lines = []
    for angle in angles:
        sm = sat_means(results, row, angle)
        if not sm:
            continue
        rs = _by(results, row, angle)
        n_ep = min(len(r["epochs"]) for r in rs)
        eps = pick_epochs(n_ep)
        lines.append("")
        lines.append("**%g°**, static NITI, mean over %d seeds (1,024 training samples per epoch):" % (angle, len(rs)))
        lines.append("")
        lines.append("| layer | counter | " + " | ".join("ep %d" % e for e in eps) + " |")
        lines.append("| --- | --- | " + " | ".join("---:" for _ in eps) + " |")
        for li, d in sm.items():
            for cname in COUNTERS:
                lines.append("| %s | %s | " % (LAYER_NAMES.get(int(li), li), cname)
                             + " | ".join("%.0f" % d[cname][e - 1] for e in eps) + " |")
        accs = []
        for what in ("train_acc", "test_acc"):
            accs.append("| all | %s (%%) | " % what.replace("_acc", " acc")
                        + " | ".join("%.1f" % (100 * sum(r["epochs"][e - 1][what] for r in rs) / len(rs)) for e in eps)
                        + " |")
        lines += accs
    return "\n".join(lines)


def reading(results, rows, befores, angles):
    """A few statements computed from the numbers (so they stay true for any run)."""
    keys = {k for k, _, _ in rows}
    out = ["## Reading the table", ""]

    def m(key, a, f=lambda r: r["result"]):
        xs = [100 * f(r) for r in _by(results, key, a)]
        return sum(xs) / len(xs) if xs else float("nan")

    for a in angles:
        b = 100 * sum(befores.get(a, [])) / max(1, len(befores.get(a, [])))
        parts = []
        if "niti" in keys and "priot" in keys:
            gap = m("niti", a) - b
            parts.append("PRIOT recovers %.0f%% of the gap between 'before' (%.1f) and dynamic NITI (%.1f): %.1f"
                         % (100 * (m("priot", a) - b) / gap if gap else float("nan"), b, m("niti", a), m("priot", a)))
        if "static_niti" in keys:
            rs = _by(results, "static_niti", a)
            if rs:
                bes = sorted(r["best_epoch"] for r in rs)
                parts.append("static NITI's best training accuracy comes early (epochs %s), so its entry is an early "
                             "model (test %.1f after epoch 1); it then degrades to %.1f at the last epoch: the "
                             "best-training-epoch protocol hides the collapse"
                             % ("/".join(map(str, bes)), m("static_niti", a, lambda r: r["epochs"][0]["test_acc"]),
                                m("static_niti", a, lambda r: r["epochs"][-1]["test_acc"])))
        for sel in ("random", "weight"):
            hi, lo = "priots_%s_hi" % sel, "priots_%s_lo" % sel
            if hi in keys and lo in keys:
                parts.append("PRIOT-S %s: %.1f (larger p) / %.1f (smaller p)" % (sel, m(hi, a), m(lo, a)))
        out.append("- **%g°**: " % a + "; ".join(parts) + ".")
    out.append("")
    return out


def _slim(run):
    """A run for the JSON report: its spec instead of the whole cache key."""
    r = {k: v for k, v in run.items() if k != "key"}
    r["spec"] = run["key"]["spec"]
    return r


def _shifts_txt(shifts):
    return ", ".join("%s: (%s)" % (LAYER_NAMES.get(int(i), i), ", ".join("-" if v is None else str(v) for v in t))
                     for i, t in sorted(shifts.items(), key=lambda kv: int(kv[0])))


def write_report(args, cfg, rows, results, befores, info, seconds, command):
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    angles = args.angles
    seeds = args.seeds
    md = []
    md.append("# PRIOT paper, Table I, on our data")
    md.append("")
    md.append("Produced by:")
    md.append("")
    md.append("```")
    md.append(command)
    md.append("```")
    md.append("")
    compute = sum(r["seconds"] for r in results)
    md.append("Run finished %s; %.0f s wall clock for this invocation (%s; runs found in the cache are "
              "not recomputed), %.0f s of compute in the %d runs (training and testing, summed over runs, "
              "from their cached records; pretraining and calibration not included). Backend: `%s` (the "
              "numpy mirror, bit-exact with the device kernels)."
              % (info["finished"], seconds, info["jobs_text"], compute, len(results), pt.backend()))
    md.append("")
    md.append("## Table")
    md.append("")
    n_tr = "1,024" if cfg["limit"] is None else str(cfg["limit"])
    md.append("Test accuracy (%%) at the epoch of best training accuracy, mean ± sample std over %d seeds "
              "(%s); %d epochs; %s %s-image rotated transfer-train / -test splits. Paper: Table I of "
              "arXiv 2503.16860 (10 seeds, on a Pico)."
              % (len(seeds), ", ".join(map(str, seeds)), cfg["epochs"], cfg["source"], n_tr))
    md.append("")
    head = "| method |" + "".join(" ours %g° | paper %g° |" % (a, a) for a in angles)
    md.append(head)
    md.append("|---" * (1 + 2 * len(angles)) + "|")

    def paper(key, angle):
        p = PAPER.get(key)
        if p is None or angle not in (30, 45) or cfg["source"] != "mnist":
            return "-"
        return "%.2f" % p[0 if angle == 30 else 1]

    line = "| before transfer (static scales) |"
    for a in angles:
        line += " %s | %s |" % (fmt(befores.get(a, [])), paper("before", a))
    md.append(line)
    for key, label, spec in rows:
        line = "| %s |" % label
        for a in angles:
            line += " %s | %s |" % (fmt([r["result"] for r in _by(results, key, a)]), paper(key, a))
        md.append(line)
    md.append("")
    md.append("Context (mean ± std over seeds): the accuracy at the last epoch, the best test accuracy of any "
              "epoch (an optimistic number the protocol does not use), the epoch of best training accuracy, "
              "the fraction of edges pruned at the end (PRIOT rows), the training buffers in bytes "
              "(`trainer.nbytes()`: the model's activations and errors plus the method's state), and seconds "
              "per training epoch on the numpy mirror (wall clock on a shared machine: only a rough guide).")
    md.append("")
    md.append("| method | angle | last epoch | best test (any epoch) | best-train epoch | pruned at end | "
              "buffers B | s / epoch |")
    md.append("|---|---|---|---|---|---|---|---|")
    for key, label, spec in rows:
        for a in angles:
            rs = _by(results, key, a)
            if not rs:
                continue
            last = fmt([r["epochs"][-1]["test_acc"] for r in rs])
            bestt = fmt([max(e["test_acc"] for e in r["epochs"]) for r in rs])
            be = mean_std([r["best_epoch"] for r in rs])
            pr = [r["epochs"][-1].get("pruned") for r in rs]
            prs = fmt(pr) + " %" if None not in pr else "-"
            sec = sum(e["seconds"] for r in rs for e in r["epochs"]) / sum(len(r["epochs"]) for r in rs)
            md.append("| %s | %g° | %s | %s | %.1f | %s | %d | %.2f |"
                      % (label, a, last, bestt, be[0], prs, rs[0]["nbytes"], sec))
    md.append("")
    md.append("![test accuracy per epoch](priot_curves.png)")
    md.append("")
    md += reading(results, rows, befores, angles)
    md.append("## What was run, and how it differs from the paper")
    md.append("")
    pk = dict(PRIOT_DEFAULTS, **cfg["priot"])
    md.append("- Model: `tiny_cnn` (conv 1→8 5x5, ReLU, pool, conv 8→16 5x5, ReLU, pool, fc 256→64, ReLU, "
              "fc 64→10; bias-free), pretrained in float (PyTorch, Adam, "
              "%s epochs) on the %s `pretrain` split (upright), converted to int8 with one power-of-two "
              "exponent per tensor." % (cfg["pretrain_epochs"] or "8 (default)", cfg["source"]))
    if cfg["calibration"] == "all-samples":
        md.append("- Static scales (static NITI, PRIOT, PRIOT-S and the 'before' row) are calibrated on the "
                  "rotated transfer-train images with every sample voting on the backward scales "
                  "(`--calibration all-samples`: picotrain.calibrate before commit b9829ff).")
    else:
        md.append("- Static scales (static NITI, PRIOT, PRIOT-S and the 'before' row) are calibrated on the "
                  "rotated transfer-train images with `picotrain.calibrate`: each layer's most frequent dynamic "
                  "shift (as the paper does), the backward scales (error shift `bshift`, gradient bit length "
                  "`gbits`) only over the samples that send the layer an error (commit b9829ff). Before that "
                  "fix every sample voted, and at 30° about half the samples (right with > ~99.6% confidence) "
                  "send an all-zero error, so `bshift = 0` and `gbits = 0` won for every layer; the last "
                  "section shows what that did.")
    md.append("- NITI rows: `mu=%d`, batch 1, no learning-rate schedule (the paper does not give its mu)."
              % cfg["mu"])
    md.append("- PRIOT / PRIOT-S: threshold %d, scores int%d initialised uniform in [threshold, threshold + %d), "
              "rate %d (largest score step about 2^rate), error to the input through %s. "
              "`examples/priot_params.py` (results in `priot_params.md`) is the evidence for these settings."
              % (pk["threshold"], pk["score_bits"], pk["init_span"], pk["rate"],
                 "W·M (masked)" if pk["mask_backward"] else "the unmasked W (the paper's reading)"))
    md.append("- PRIOT-S fractions: p = %g (most edges unscored: the paper's 'larger p' rows) and p = %g "
              "(the 'smaller p' rows). The paper's exact p values are not in our notes, so the paper's "
              "numbers beside these rows are for its own two values of p, matched by order only."
              % (cfg["p_hi"], cfg["p_lo"]))
    md.append("- %d seeds instead of the paper's 10; %d epochs (paper: 30); training order reshuffled every "
              "epoch with `picotrain.rng.XorShift32(1000 + seed)`; method PRNG `XorShift32(seed + 1)`; "
              "pretraining seed = seed. Runs on the CPython numpy mirror (bit-exact with the device "
              "kernels), not on a Pico, so no ms/sample column." % (len(seeds), cfg["epochs"]))
    md.append("- Std is the sample standard deviation (n - 1). 'Before transfer' uses the same calibrated "
              "static scales the static methods start from.")
    if cfg["limit"] is not None:
        md.append("- **Shortened run**: only the first %d images of each transfer split (`--limit`)." % cfg["limit"])
    md.append("")
    md.append("## Static NITI saturation (the paper's Figure 2 signal)")
    md.append("")
    md.append("Counts of values clipped to ±127 during each training epoch (counters reset every epoch; "
              "testing is not counted): `sat_fwd` layer outputs, `sat_bwd` errors sent to the layer's "
              "input, `sat_upd` weights clipped by an update. With static scales the shifts cannot follow "
              "the growing weights and activations, so outputs saturate; dynamic NITI (dotted in the "
              "plot) rescales every sample.")
    md.append(saturation_md(results, angles))
    md.append("")
    md.append("![static NITI saturation](static_niti_saturation.png)")
    md.append("")
    lib = info.get("compare")
    if lib:
        lrows, lres, lbef, lcal = lib
        md.append("## If every sample votes on the backward scales (calibrate before commit b9829ff)")
        md.append("")
        md.append("The same runs with static scales from the old rule (`--calibration all-samples`): samples "
                  "with an all-zero error vote for `bshift = 0`, `gbits = 0`. Calibrated (shift, bshift, "
                  "gbits) per layer, seed %d:" % seeds[0])
        md.append("")
        md.append("| angle | every sample votes | picotrain.calibrate (used above) |")
        md.append("|---|---|---|")
        for a in angles:
            k = "%g/%d" % (a, seeds[0])
            md.append("| %g° | %s | %s |" % (a, _shifts_txt(lcal[k]["shifts"]),
                                               _shifts_txt(info["calibration"][k]["shifts"])))
        md.append("")
        md.append("| method |" + "".join(" all samples %g° | calibrate %g° |" % (a, a) for a in angles))
        md.append("|---" * (1 + 2 * len(angles)) + "|")
        md.append("| before transfer (static scales) |" + "".join(
            " %s | %s |" % (fmt(lbef.get(a, [])), fmt(befores.get(a, []))) for a in angles))
        for key, label, spec in lrows:
            md.append("| %s |" % label + "".join(
                " %s | %s |" % (fmt([r["result"] for r in _by(lres, key, a)]),
                                fmt([r["result"] for r in _by(results, key, a)])) for a in angles))
        md.append("")
        md.append("Last-epoch test accuracy when every sample votes: " + "; ".join(
            "%s %g° %s" % (label, a, fmt([r["epochs"][-1]["test_acc"] for r in _by(lres, key, a)]))
            for key, label, _ in lrows for a in angles) + ".")
        md.append("")
    with open(os.path.join(out, "priot_table.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    blob = dict(command=command, finished=info["finished"], seconds=round(seconds, 1), backend=pt.backend(),
                config={k: v for k, v in cfg.items() if k != "cache_dir"}, paper=PAPER,
                rows=[dict(key=k, label=l, spec=s) for k, l, s in rows],
                before={str(a): befores.get(a, []) for a in angles},
                calibration=info["calibration"], runs=[_slim(r) for r in results])
    if info.get("compare"):
        blob["all_samples_calibration"] = dict(rows=[k for k, _, _ in info["compare"][0]],
                                               runs=[_slim(r) for r in info["compare"][1]],
                                           calibration=info["compare"][3])
    with open(os.path.join(out, "priot_table.json"), "w") as f:
        json.dump(blob, f, separators=(",", ":"))
    curves_png(os.path.join(out, "priot_curves.png"), results, rows, angles, befores)
    saturation_png(os.path.join(out, "static_niti_saturation.png"), results, angles)


# ------------------------------------------------------------------- main --
def parse_kv(text):
    """'rate=4,init_span=32' -> {'rate': 4, 'init_span': 32} (ints, floats, true/false)."""
    out = {}
    for part in filter(None, (text or "").split(",")):
        k, _, v = part.partition("=")
        k, v = k.strip(), v.strip()
        if v.lower() in ("true", "false"):
            out[k] = v.lower() == "true"
        else:
            try:
                out[k] = int(v)
            except ValueError:
                out[k] = float(v)
    return out


def base_parser(doc):
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--angles", type=float, nargs="+", default=[30.0, 45.0], help="rotations (degrees)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (one run each)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--limit", type=int, default=None,
                    help="use only the first N images of each transfer split (quick runs)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "examples", "results"))
    ap.add_argument("--cache-dir", default=os.path.join(ROOT, "out", "priot_cache"),
                    help="finished runs, pretrained and calibrated models (resume)")
    ap.add_argument("--source", choices=("mnist", "digits"), default="mnist")
    ap.add_argument("--mnist-dir", default=None, help="folder of the MNIST t10k files (default: ../shared/datasets/mnist)")
    ap.add_argument("--pretrain-epochs", type=int, default=None, help="float pretraining epochs (default: the source's)")
    ap.add_argument("--calibration", choices=tuple(CALIBRATIONS), default="library",
                    help="static scales: 'library' = picotrain.calibrate; 'all-samples' = every sample votes on "
                         "the backward scales (calibrate before commit b9829ff)")
    return ap


def make_cfg(args):
    return dict(source=args.source, mnist_dir=args.mnist_dir, limit=args.limit, epochs=args.epochs,
                pretrain_epochs=args.pretrain_epochs, cache_dir=os.path.abspath(args.cache_dir),
                calibration=args.calibration)


def _norm_angles(angles):
    return [int(a) if float(a).is_integer() else a for a in angles]


def main(argv=None):
    ap = base_parser(__doc__)
    ap.add_argument("--p", type=float, nargs=2, default=[0.9, 0.5], metavar=("P_HI", "P_LO"),
                    help="PRIOT-S unscored fractions: the larger and the smaller p")
    ap.add_argument("--priot", default="", help="PRIOT/PRIOT-S settings overriding %s, e.g. 'rate=5,init_span=16'"
                    % ",".join("%s=%s" % kv for kv in PRIOT_DEFAULTS.items()))
    ap.add_argument("--mu", type=int, default=NITI_MU, help="NITI / static NITI update bits")
    ap.add_argument("--rows", nargs="+", default=None, help="only these row keys (default: all)")
    ap.add_argument("--compare-rows", nargs="*", default=["static_niti", "priot"],
                    help="also run these rows with --calibration all-samples (the report's last section); "
                         "none to skip")
    args = ap.parse_args(argv)
    args.angles = _norm_angles(args.angles)
    command = "python examples/priot_table.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t0 = time.time()
    cfg = make_cfg(args)
    cfg["priot"] = parse_kv(args.priot)
    unknown = set(cfg["priot"]) - set(PRIOT_DEFAULTS)
    if unknown:
        ap.error("--priot: unknown setting(s) %s; known: %s" % (", ".join(sorted(unknown)), ", ".join(PRIOT_DEFAULTS)))
    cfg.update(p_hi=args.p[0], p_lo=args.p[1], mu=args.mu)
    rows = make_rows(args.p[0], args.p[1], cfg["priot"], args.mu)
    if args.rows:
        rows = [r for r in rows if r[0] in args.rows]
    # Every method over every (angle, seed); NITI rows first (their settings never change).
    runs = [(key, spec, seed, angle) for key, _, spec in rows for angle in args.angles for seed in args.seeds]
    prep = [(seed, angle) for angle in args.angles for seed in args.seeds]
    print("%d runs (%d methods x %d angles x %d seeds) of %d epochs; %d job(s); cache %s"
          % (len(runs), len(rows), len(args.angles), len(args.seeds), args.epochs, args.jobs, cfg["cache_dir"]))
    lib_rows = [r for r in rows if r[0] in (args.compare_rows or ()) and not is_dynamic(r[2])]
    lib_cfg = dict(cfg, calibration="all-samples")
    lib_runs = [(key, spec, seed, angle) for key, _, spec in lib_rows for angle in args.angles for seed in args.seeds]
    if cfg["calibration"] == "all-samples":
        lib_runs = []
    # run_jobs takes one cfg: the comparison runs go second.
    results = run_jobs(cfg, prep, runs, args.jobs, desc="table")
    lib_results = run_jobs(lib_cfg, prep, lib_runs, args.jobs, desc="all-samples calibration") if lib_runs else []

    def collect(c):
        befores, calib = {}, {}
        for angle in args.angles:
            for seed in args.seeds:
                _, inf = prepare_angle(c, seed, angle)
                befores.setdefault(angle, []).append(inf["before"])
                calib["%g/%d" % (angle, seed)] = inf
        return befores, calib

    befores, calib = collect(cfg)
    seconds = time.time() - t0
    info = dict(finished=datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), calibration=calib,
                jobs_text="%d worker process%s" % (args.jobs, "" if args.jobs == 1 else "es"))
    if lib_runs:
        lb, lc = collect(lib_cfg)
        info["compare"] = (lib_rows, lib_results, lb, lc)
    write_report(args, cfg, rows, results, befores, info, seconds, command)
    # A short summary on the terminal.
    for angle in args.angles:
        print("%g deg: before %s" % (angle, fmt(befores[angle])) + "".join(
            "; %s %s" % (key, fmt([r["result"] for r in _by(results, key, angle)])) for key, _, _ in rows))
    print("wrote %s/priot_table.md (.json, priot_curves.png, static_niti_saturation.png) in %.0f s"
          % (args.out_dir, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
