"""Parameter study for PRIOT's defaults: which settings should prune.py ship?

One angle, a few seeds, the protocol of examples/priot_table.py (same
pretrained models, calibration, shuffles and cache). Each group varies one
setting around a base configuration (--base, default: the table's settings):

    rate           largest score step about 2**rate (the step size)
    init_span      scores start uniform in [threshold, threshold + init_span)
    threshold      the score an edge needs to stay (scores are int8: +-127)
    score_bits     int8 vs int16 scores (int16: same rate, and rate + 8 with span * 256)
    mask_backward  error to the input through W (paper) or W * M
    priots         PRIOT-S (p = 0.5 and 0.9, by weight and random) at several rates
    grid           rate x init_span jointly
    niti_mu        static NITI at mu = 1, 2 (the table uses 3: is its collapse just a too-large step?)

    python examples/priot_params.py                       # default groups, 45 deg, 3 seeds, 15 epochs
    python examples/priot_params.py --groups rate --seeds 0 --epochs 8

Writes --out-dir/priot_params.md, priot_params.json and priot_params.png.
"""
import datetime
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import priot_table as T  # noqa: E402


def groups(base, names):
    """name -> [(label, spec)]; specs are full trainer specs (method + settings)."""
    def priot(**kw):
        return dict(method="PRIOT", **dict(base, **kw))

    g = {}
    g["rate"] = [("rate=%d" % r, priot(rate=r)) for r in (2, 3, 4, 5, 6, 7, 8)]
    g["init_span"] = [("init_span=%d" % s, priot(init_span=s)) for s in (1, 8, 32, 96)]
    g["threshold"] = [("threshold=%d" % t, priot(threshold=t)) for t in (-64, 0, 64)]
    # int16 scores: the same settings (only more headroom), and the same dynamics
    # scaled up by 2**k (k more bits of resolution: steps that round to 0 in
    # int8 count in int16); rate is capped at 14, so k = min(8, 14 - rate).
    k = min(8, 14 - base["rate"])
    g["score_bits"] = [
        ("int8", priot()),
        ("int16, same rate and span", priot(score_bits=16)),
        ("int16, rate+%d, span and threshold *%d" % (k, 1 << k),
         priot(score_bits=16, rate=base["rate"] + k, init_span=base["init_span"] << k,
               threshold=base["threshold"] * (1 << k))),
    ]
    g["mask_backward"] = [("error through W (paper)", priot(mask_backward=False)),
                          ("error through W*M", priot(mask_backward=True))]
    g["priots"] = [("PRIOT-S %s p=%g rate=%d" % (sel, p, r), dict(method="PRIOTS", p=p, select=sel, **dict(base, rate=r)))
                   for p in (0.5, 0.9) for sel in ("weight", "random") for r in (base["rate"] - 2, base["rate"])]
    # Not PRIOT: is static NITI's collapse just a too-large step? (the table uses mu=3)
    g["niti_mu"] = [("static NITI mu=%d" % mu, dict(method="StaticNITI", mu=mu)) for mu in (1, 2)]
    g["grid"] = [("rate=%d span=%d" % (r, s), priot(rate=r, init_span=s)) for r in (3, 4, 5) for s in (8, 32, 96)]
    return {n: g[n] for n in names}


def summarize(rs):
    return dict(
        result=T.fmt([r["result"] for r in rs]),
        result_mean=T.mean_std([100 * r["result"] for r in rs])[0],
        last=T.fmt([r["epochs"][-1]["test_acc"] for r in rs]),
        best=T.fmt([max(e["test_acc"] for e in r["epochs"]) for r in rs]),
        train=T.fmt([max(e["train_acc"] for e in r["epochs"]) for r in rs]),
        best_epoch=T.mean_std([r["best_epoch"] for r in rs])[0],
        pruned=T.fmt([r["epochs"][-1].get("pruned", 0.0) for r in rs]),
        sat_last=sum(sum(v[2] for v in r["epochs"][-1]["sat"].values()) for r in rs) / len(rs),
        sat_first=sum(sum(v[2] for v in r["epochs"][0]["sat"].values()) for r in rs) / len(rs),
    )


def plot(path, table, angle):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(table)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax, name in zip([a for r in axes for a in r], names):
        for label, rs, _ in table[name]:
            n_ep = min(len(r["epochs"]) for r in rs)
            ys = [100 * sum(r["epochs"][e]["test_acc"] for r in rs) / len(rs) for e in range(n_ep)]
            ax.plot(range(1, n_ep + 1), ys, label=label, lw=1.4)
        ax.set_title("%s (%g°, mean test accuracy over seeds)" % (name, angle), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in [a for r in axes for a in r][len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = T.base_parser(__doc__)
    ap.set_defaults(angles=[45.0], seeds=[0, 1, 2], epochs=15)
    ap.add_argument("--groups", nargs="+", default=["rate", "priots", "init_span", "threshold", "score_bits",
                                                    "mask_backward", "niti_mu"],
                    help="groups to run: rate priots init_span threshold score_bits mask_backward niti_mu grid")
    ap.add_argument("--name", default="priot_params", help="output file stem in --out-dir")
    ap.add_argument("--base", default="", help="base settings overriding %s"
                    % ",".join("%s=%s" % kv for kv in T.PRIOT_DEFAULTS.items()))
    args = ap.parse_args(argv)
    args.angles = T._norm_angles(args.angles)
    if len(args.angles) != 1:
        ap.error("the study uses one angle")
    angle = args.angles[0]
    command = "python examples/priot_params.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    t0 = time.time()
    cfg = T.make_cfg(args)
    base = dict(T.PRIOT_DEFAULTS, **T.parse_kv(args.base))
    grp = groups(base, args.groups)
    # Same spec in two groups runs once (the cache key is the spec).
    runs, seen = [], set()
    for name, cfgs in grp.items():
        for label, spec in cfgs:
            for seed in args.seeds:
                k = json.dumps([spec, seed], sort_keys=True)
                if k not in seen:
                    seen.add(k)
                    runs.append((label, spec, seed, angle))
    print("%d runs (%d settings x %d seeds) of %d epochs at %g deg; %d job(s)"
          % (len(runs), len(runs) // len(args.seeds), len(args.seeds), args.epochs, angle, args.jobs))
    outs = T.run_jobs(cfg, [(s, angle) for s in args.seeds], runs, args.jobs, desc="params")
    by = {json.dumps([r[1], r[2]], sort_keys=True): o for r, o in zip(runs, outs)}
    table = {}
    for name, cfgs in grp.items():
        table[name] = []
        for label, spec in cfgs:
            rs = [by[json.dumps([spec, s], sort_keys=True)] for s in args.seeds]
            table[name].append((label, rs, spec))
    befores = [T.prepare_angle(cfg, s, angle)[1]["before"] for s in args.seeds]
    seconds = time.time() - t0

    os.makedirs(args.out_dir, exist_ok=True)
    md = ["# PRIOT parameter study", "", "Produced by:", "", "```", command, "```", "",
          "Run finished %s; %.0f s wall clock for this invocation with %d worker process(es) (cached runs are "
          "not recomputed; %.0f s of compute in the runs, from their records). %s, rotated %g°, seeds %s, "
          "%d epochs, batch 1, numpy mirror, static scales calibrated as in priot_table.md (`--calibration %s`). "
          "Base settings: %s. Before transfer (static scales): %s %%."
          % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), seconds, args.jobs,
             sum(o["seconds"] for o in outs), cfg["source"], angle,
             ", ".join(map(str, args.seeds)), args.epochs, cfg["calibration"],
             ", ".join("%s=%s" % kv for kv in base.items()), T.fmt(befores)),
          "",
          "Columns: **result** = test accuracy at the epoch of best training accuracy (the table's protocol), "
          "mean ± sample std over seeds; last = test accuracy at the last epoch; best test = best of any "
          "epoch; best train = best training accuracy; epoch = mean epoch of best training accuracy; "
          "pruned = fraction of scored edges' layers pruned at the end; score sat = scores clipped at the "
          "int range in the first / last epoch (all layers, mean over seeds).", ""]
    for name, entries in table.items():
        md.append("## %s" % name)
        md.append("")
        if name == "niti_mu":
            md.append("Not PRIOT: static NITI at smaller update steps (the table uses mu=3). 'pruned' does not "
                      "apply; the sat column counts weights clipped by updates. Compare result (best-training "
                      "epoch) with last: a smaller mu delays the collapse, it does not prevent it.")
            md.append("")
        md.append("| setting | result | last | best test | best train | epoch | pruned % | score sat ep 1 / last |")
        md.append("|---|---|---|---|---|---|---|---|")
        best_mean = max(summarize(rs)["result_mean"] for _, rs, _ in entries)
        for label, rs, spec in entries:
            s = summarize(rs)
            res = ("**%s**" % s["result"]) if s["result_mean"] == best_mean else s["result"]
            md.append("| %s | %s | %s | %s | %s | %.1f | %s | %.0f / %.0f |"
                      % (label, res, s["last"], s["best"], s["train"], s["best_epoch"], s["pruned"],
                         s["sat_first"], s["sat_last"]))
        md.append("")
    md.append("![test accuracy per epoch per setting](%s.png)" % args.name)
    md.append("")
    with open(os.path.join(args.out_dir, args.name + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    blob = dict(command=command, seconds=round(seconds, 1), angle=angle, seeds=args.seeds, epochs=args.epochs,
                base=base, before=befores,
                groups={n: [dict(label=l, spec=sp, runs=[T._slim(r) for r in rs]) for l, rs, sp in e]
                        for n, e in table.items()})
    with open(os.path.join(args.out_dir, args.name + ".json"), "w") as f:
        json.dump(blob, f, separators=(",", ":"))
    plot(os.path.join(args.out_dir, args.name + ".png"), table, angle)
    for name, entries in table.items():
        print(name + ": " + "; ".join("%s %s" % (l, summarize(rs)["result"]) for l, rs, _ in entries))
    print("wrote %s/%s.md in %.0f s" % (args.out_dir, args.name, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
