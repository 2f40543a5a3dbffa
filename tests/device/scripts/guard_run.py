# Static NITI that collapses (issue 7): a tiny CNN pretrained with NITI on upright 8x8
# digits, calibrated on digits turned by 90 degrees, then trained there with static NITI
# (mu=3) until its weights outgrow the static shifts. Runs unchanged on CPython and under
# the MicroPython unix port, in a folder holding pre.pt8 and turned.pt8d
# (tests/device/test_guard.py writes them). argv: sat drop every epochs [checkpoint]
import sys

import picotrain as pt
from picotrain.checkpoint import Checkpoint
from picotrain.data import Dataset

sat, drop, every, epochs = [None if a == "-" else float(a) for a in sys.argv[1:5]]
ck = Checkpoint("ck", every=int(every), log=None) if len(sys.argv) > 5 else None
m = pt.load("pre.pt8")
data = Dataset("turned.pt8d")
t = pt.StaticNITI(m, mu=3)
guard = pt.Guard(sat=sat, drop=drop, every=0 if ck else int(every))


def log(line):
    # the collapse part of fit's line: the rest has times and free heap, which differ
    if "COLLAPSE" in line:
        print("log", line[line.index("COLLAPSE"):])


hist = t.fit(data, epochs=int(epochs), guard=guard, checkpoint=ck, log=log)
for row in hist:
    ev = row.get("collapse")
    print("row", row["epoch"], round(row["train_acc"] * 10000), round(row["sat"] * 1000000),
          "-" if ev is None else "%d:%d:%s" % (ev["epoch"], ev["sample"], ev["back_to"].replace(" ", "_")))
print("nbytes", t.nbytes(), guard.nbytes())
print("acc", round(pt.evaluate(m, data) * 10000))
m.save("after.pt8")
