# A fixed-seed training run on tinymodels.cnn(2024) (NITI, StaticNITI, PRIOT, PRIOTS, PRIOTS-w, TinTin, TinTin-b, FQT,
# PartialFQT, PartialFQT-b) that prints a digest of the final model.
# Runs unchanged on CPython (the mirror) and under the MicroPython unix port;
# tests compare the outputs. argv: method backend steps [cores]
import sys

import picotrain as pt
import tinymodels  # tests/device

method = sys.argv[1] if len(sys.argv) > 1 else "NITI"
backend = sys.argv[2] if len(sys.argv) > 2 else "python"
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 40
pt.use_backend(backend)
pt.use_cores(int(sys.argv[4]) if len(sys.argv) > 4 else 1, min_work=0)  # two: every call split, same bits

m, data = tinymodels.cnn(2024)
if method not in ("NITI", "TinTin", "TinTin-b", "FQT", "PartialFQT", "PartialFQT-b"):
    pt.calibrate(m, data)
if method == "StaticNITI":
    t = pt.StaticNITI(m, mu=3)
elif method == "PRIOT":
    t = pt.PRIOT(m, rate=3, seed=5)
elif method == "PRIOTS":
    t = pt.PRIOTS(m, p=0.6, select="random", rate=3, seed=5, batch=2)
elif method == "PRIOTS-w":
    t = pt.PRIOTS(m, p=0.3, select="weight", score_bits=16, rate=5, seed=5, mask_backward=True)
# issue 5: Tin-Tin and (partial-update) FQT
elif method == "TinTin":
    t = pt.TinTin(m, m=3, n=4)
elif method == "TinTin-b":
    t = pt.TinTin(m, m=5, n=2, batch=2)
elif method == "FQT":
    t = pt.FQT(m, lr=4)
elif method == "PartialFQT":
    t = pt.PartialFQT(m, budget=0.3, lr=4)
elif method == "PartialFQT-b":
    t = pt.PartialFQT(m, budget=0.5, lr=3, batch=3)
else:
    t = pt.NITI(m, mu=3)
losses = 0
for s in range(steps):
    x, y = data[s % len(data)]
    losses += t.step(x, y)[0]
crc = 0
import binascii
for l in m.param_layers():
    crc = binascii.crc32(bytes(l.weight.data), crc)
    if l.scores is not None:
        crc = binascii.crc32(bytes(l.scores), crc)
print("losses", losses, "acc", t.evaluate(data), "crc", crc & 0xFFFFFFFF)
if method.startswith("TinTin"):
    print("exps", [(l.weight.exp, l.weight.u, l.weight.d, l.w_rescales) for l in m.param_layers()])
print("w", bytes(m.layers[6].weight.data).hex())
