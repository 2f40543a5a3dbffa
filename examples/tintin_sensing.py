"""Tin-Tin's two sensing applications on SYNTHETIC data (no real data set is reachable here):
vibration-based bearing fault detection and spectrum sensing, trained on the device's mirror
with TinTin, against NITI and float32 PyTorch training of the same network.

THE DATA ARE SYNTHETIC, generated here with numpy from a fixed seed (generate_bearing,
generate_spectrum below); they imitate the structure of the paper's tasks, not their numbers:
- Bearing faults (4 classes: healthy, outer race, inner race, ball): 12 kHz accelerometer
  windows of 2,048 samples. Every window has shaft harmonics (shaft 20..35 Hz) and white noise;
  a fault adds an impulse train at its characteristic frequency (BPFO 3.585, BPFI 5.415,
  BSF 2.357 x shaft, the ratios of a 6205 bearing) ringing a 2.5..4 kHz resonance; inner-race
  impacts are amplitude-modulated at the shaft frequency, ball impacts at the cage frequency
  (0.398 x shaft). Impact strength and noise vary (signal-to-noise ratio from -12 to +3 dB), so
  some windows are hard. Features (computed once, on the host, as a sensor node's DSP would):
  the envelope spectrum (|analytic signal| of the 2..5 kHz band) at shaft orders 1/8 .. 8 in 64
  bins (order tracking: the shaft speed is known, as from a tachometer),
  as log(bin / median bin) clipped at 0 and scaled to int8 0..127 (exponent -7).
- Spectrum sensing (2 classes: signal present / noise only): 1,024 complex baseband samples;
  "present" adds a QPSK signal of random carrier (-0.4..0.4 of the band) and bandwidth
  (5..25 %) at an SNR of -15..0 dB; the noise power itself is uncertain by +-1.5 dB (which
  defeats a plain energy detector). Features: Welch power spectrum in 64 bins, in dB, minus its
  median, scaled to int8 (exponent -7 after clipping at +-127).

Network for both: Linear(64, 32) - ReLU - Linear(32, C), bias-free, initialised by PyTorch with
the seed; integer methods start from its int8 conversion. Batch 1, 2,000 training and 1,000 test
windows per task.

    python examples/tintin_sensing.py              # about a minute
Outputs (--out-dir, default examples/results/): tintin_sensing.md, tintin_sensing.json,
tintin_sensing.png (test accuracy per epoch).
"""
import argparse
import json
import os
import shlex
import sys
import time

from common import ROOT, shuffled_epochs  # first: the repository on sys.path, one BLAS thread

import numpy as np  # noqa: E402

import picotrain as pt  # noqa: E402

FS = 12000
N_FEAT = 64


# -------------------------------------------------------------- the data --
def _to_int8(f):
    """Features in [0, 1] (or [-1, 1]) -> int8 at exponent -7."""
    return np.clip(np.round(f * 128), -127, 127).astype(np.int8)


def generate_bearing(n, rng):
    """(features int8 (n, 64), labels (n,)): SYNTHETIC bearing vibration, 4 classes."""
    from scipy.signal import butter, hilbert, sosfiltfilt
    L = 2048
    t = np.arange(L) / FS
    feats = np.zeros((n, N_FEAT), np.int8)
    labels = rng.integers(0, 4, n)
    ratio = {1: 3.585, 2: 5.415, 3: 2.357}
    for i in range(n):
        fr = rng.uniform(20, 35)
        x = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * fr * t + rng.uniform(0, 6.3))
                for h in (1, 2, 3))
        c = labels[i]
        if c:
            ff = ratio[c] * fr
            fres = rng.uniform(2500, 4000)
            strength = rng.uniform(0.3, 1.5)
            imp = np.zeros(L)
            # impact times with a little jitter (slip), as real bearings have
            k = np.arange(0, int(t[-1] * ff) + 1)
            times = (k + rng.normal(0, 0.02, len(k))) / ff
            idx = (times * FS).astype(int)
            idx = idx[(idx >= 0) & (idx < L)]
            amp = np.ones(len(idx))
            if c == 2:
                amp = 1 + 0.8 * np.cos(2 * np.pi * fr * idx / FS)
            elif c == 3:
                amp = 1 + 0.8 * np.cos(2 * np.pi * 0.398 * fr * idx / FS)
            imp[idx] = amp * strength
            ring = np.exp(-t[:96] * 1500) * np.sin(2 * np.pi * fres * t[:96])
            x = x + np.convolve(imp, ring)[:L] * 3
        snr_db = rng.uniform(-12, 3)
        p = np.mean(x ** 2)
        x = x + rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), L)
        sos = butter(4, [2000, 5000], btype="band", fs=FS, output="sos")
        env = np.abs(hilbert(sosfiltfilt(sos, x)))
        env -= env.mean()
        spec = np.abs(np.fft.rfft(env * np.hanning(L)))
        freqs = np.fft.rfftfreq(L, 1 / FS)
        # order tracking (the shaft speed is known from a tachometer): the envelope spectrum
        # at orders 0.125 .. 8 of the shaft frequency, 64 bins
        f = np.interp(np.arange(1, N_FEAT + 1) * (8.0 / N_FEAT) * fr, freqs, spec)
        f = np.log(f / np.median(f))  # peaks over the envelope spectrum's floor
        feats[i] = _to_int8(np.clip(f, 0, None) / max(f.max(), 1e-9))
    return feats, labels.astype(np.uint8)


def generate_spectrum(n, rng):
    """(features int8 (n, 64), labels (n,)): SYNTHETIC spectrum sensing, 2 classes."""
    from scipy.signal import welch
    L = 1024
    feats = np.zeros((n, N_FEAT), np.int8)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        npow = 10 ** (rng.uniform(-1.5, 1.5) / 10)
        x = np.sqrt(npow / 2) * (rng.normal(size=L) + 1j * rng.normal(size=L))
        if labels[i]:
            bw = rng.uniform(0.05, 0.25)
            sps = max(2, int(round(1 / bw)))
            sym = (rng.choice([-1, 1], L // sps + 2) + 1j * rng.choice([-1, 1], L // sps + 2)) / np.sqrt(2)
            s = np.repeat(sym, sps)[:L]
            s = np.convolve(s, np.hanning(sps) / np.hanning(sps).sum() * sps, "same")
            s /= np.sqrt(np.mean(np.abs(s) ** 2))
            fc = rng.uniform(-0.4, 0.4)
            snr = 10 ** (rng.uniform(-15, 0) / 10)
            x = x + np.sqrt(snr) * s * np.exp(2j * np.pi * fc * np.arange(L))
        f, p = welch(x, nperseg=N_FEAT, return_onesided=False, detrend=False)
        db = 10 * np.log10(np.fft.fftshift(p) + 1e-12)
        feats[i] = _to_int8((db - np.median(db)) / 8.0)
    return feats, labels.astype(np.uint8)


TASKS = {"bearing": (generate_bearing, 4), "spectrum": (generate_spectrum, 2)}


# ---------------------------------------------------------------- methods --
def make_net(seed, n_out):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEAT, 32, bias=False), nn.ReLU(), nn.Linear(32, n_out, bias=False))


def int8_model(seed, n_out):
    from host_tools import convert
    return convert.convert(make_net(seed, n_out).eval(), (N_FEAT,))


def samples(x, y):
    from array import array
    return [(array("b", x[i].tobytes()), int(y[i])) for i in range(len(y))]


def float_memory(model):
    buf = sum(4 * n for _, _, n in model.plan(True))
    w = sum(l.weight.size for l in model.param_layers())
    return buf + 8 * w


def methods(cfg):
    return ["float", "niti"] + ["tintin_m%d" % m for m in cfg["ms"]]


def run(task, method, cfg, data):
    (xtr, ytr), (xte, yte) = data
    n_out = TASKS[task][1]
    epochs = []
    t0 = time.time()
    if method == "float":
        import torch
        torch.set_num_threads(1)
        net = make_net(cfg["seed"], n_out)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        x = torch.from_numpy(xtr.astype(np.float32) / 128)
        xt = torch.from_numpy(xte.astype(np.float32) / 128)
        y, yt = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
        gen = torch.Generator().manual_seed(1000 + cfg["seed"])
        for ep in range(cfg["epochs"]):
            ok = 0
            for j in torch.randperm(len(x), generator=gen).tolist():
                out = net(x[j:j + 1])
                loss = torch.nn.functional.cross_entropy(out, y[j:j + 1])
                opt.zero_grad()
                loss.backward()
                opt.step()
                ok += int(out.argmax(1).item() == y[j].item())
            with torch.no_grad():
                te = (net(xt).argmax(1) == yt).float().mean().item()
            epochs.append(dict(epoch=ep + 1, train_acc=ok / len(x), test_acc=te))
        mem = float_memory(int8_model(cfg["seed"], n_out))
    else:
        model = int8_model(cfg["seed"], n_out)
        if method.startswith("tintin_m"):
            t = pt.TinTin(model, m=int(method[len("tintin_m"):]), n=cfg["n"])
        else:
            t = pt.NITI(model, mu=cfg["mu"])
        train, test = samples(xtr, ytr), samples(xte, yte)
        for ep, tr, _ in shuffled_epochs(t, train, cfg["epochs"], cfg["seed"]):
            epochs.append(dict(epoch=ep, train_acc=tr, test_acc=t.evaluate(test)))
        mem = t.nbytes() + sum(l.weight.size for l in model.param_layers())
    return dict(epochs=epochs, memory=mem, seconds=round(time.time() - t0, 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ms", default="5,3", help="TinTin update factors m (one row each)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--mu", type=int, default=3)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "examples", "results"))
    a = ap.parse_args(argv)
    ms = [int(v) for v in a.ms.split(",") if v]
    cfg = dict(epochs=a.epochs, seed=a.seed, ms=ms, n=a.n, mu=a.mu, n_train=a.n_train, n_test=a.n_test)
    t0 = time.time()
    res = {}
    for task, (gen, _) in TASKS.items():
        rng = np.random.default_rng(12345 + a.seed)
        data = gen(a.n_train, rng), gen(a.n_test, rng)
        counts = np.bincount(data[0][1]).tolist()
        res[task] = dict(train_class_counts=counts)
        for method in methods(cfg):
            res[task][method] = run(task, method, cfg, data)
    cmd = "python examples/" + os.path.basename(__file__) + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    report(a, cfg, res, cmd, time.time() - t0)


LABELS = {"float": "float32 PyTorch (SGD, batch 1, lr 0.01)", "niti": "NITI (mu=%d)"}


def report(a, cfg, res, cmd, seconds):
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "tintin_sensing.json"), "w") as f:
        json.dump(dict(command=cmd, config=cfg, results=res), f, indent=1)
    lab = dict(LABELS, niti=LABELS["niti"] % cfg["mu"])
    for m in cfg["ms"]:
        lab["tintin_m%d" % m] = "TinTin (m=%d, n=%d)" % (m, cfg["n"])
    lines = ["# Tin-Tin's sensing tasks on SYNTHETIC data", "",
             "**The data are synthetic** (generated by the script; see its docstring): bearing-fault "
             "harmonics and impacts in noise (4 classes), and signal-present vs noise-only spectra (2 classes). "
             "They show the methods on the paper's kind of task, not the paper's numbers.", "",
             "Command: `%s` (%.0f s). MLP 64-32-C, %d training / %d test windows, %d epochs, batch 1, seed %d."
             % (cmd, seconds, cfg["n_train"], cfg["n_test"], cfg["epochs"], cfg["seed"]), ""]
    for task in TASKS:
        lines += ["## %s (train class counts %s)" % (task, res[task]["train_class_counts"]), "",
                  "| method | test acc per epoch (%) | best train-acc epoch's test (%) | memory B (buffers + weights) |",
                  "| --- | --- | --- | --- |"]
        for mth in methods(cfg):
            r = res[task][mth]
            ep = r["epochs"]
            best = max(range(len(ep)), key=lambda i: (ep[i]["train_acc"], -i))
            lines.append("| %s | %s | %.1f | %d |" % (lab[mth], " / ".join("%.1f" % (100 * e["test_acc"]) for e in ep),
                                                     100 * ep[best]["test_acc"], r["memory"]))
        lines.append("")
    with open(os.path.join(a.out_dir, "tintin_sensing.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, task in zip(axes, TASKS):
        for mth in methods(cfg):
            ep = res[task][mth]["epochs"]
            ax.plot([e["epoch"] for e in ep], [100 * e["test_acc"] for e in ep], marker="o", label=lab[mth])
        ax.set_title("%s (SYNTHETIC data)" % task)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out_dir, "tintin_sensing.png"), dpi=110)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
