"""Long runs on the MicroPython unix port: thousands of steps, no heap growth.

Longer soak: PICOTRAIN_SOAK_STEPS=200000 pytest tests/reliability -k soak -s
(prints the figures recorded in docs/RELIABILITY.md).
"""
import os

STEPS = int(os.environ.get("PICOTRAIN_SOAK_STEPS", "3000"))

SCRIPT = """
import gc, micropython
from array import array
import picotrain as pt
from picotrain.rng import XorShift32

r = XorShift32(77)
def fresh():
    m = pt.Model([pt.Conv2d(1, 3, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(12, 4)], (1, 4, 4))
    for l in m.param_layers():
        l.weight.data = array('b', [r.below(81) - 40 for _ in range(l.weight.size)])
    return m
data = [(array('b', [r.below(128) for _ in range(16)]), r.below(4)) for _ in range(16)]

def soak(t, steps):
    # the whole run with the heap locked: any allocation raises MemoryError
    micropython.heap_lock()
    try:
        for i in range(steps):
            x, y = data[i & 15]
            t.step(x, y)
    finally:
        micropython.heap_unlock()

for name in ('NITI', 'StaticNITI', 'PRIOT', 'PRIOTS'):
    m = fresh()
    pt.calibrate(m, data)
    t = {'NITI': lambda: pt.NITI(m, mu=3), 'StaticNITI': lambda: pt.StaticNITI(m, mu=3),
         'PRIOT': lambda: pt.PRIOT(m, rate=3), 'PRIOTS': lambda: pt.PRIOTS(m, p=0.5, batch=4)}[name]()
    t.step(data[0][0], data[0][1])
    gc.collect()
    before = gc.mem_free()
    soak(t, STEPS)
    for e in range(20):   # epochs outside the lock: what they allocate must be collectable
        t.epoch(data)
    gc.collect()
    after = gc.mem_free()
    print(name, STEPS, before, after)
"""


def test_soak_no_heap_growth(micropython):
    out = micropython("STEPS = %d\n" % STEPS + SCRIPT, timeout=1200)
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows] == ["NITI", "StaticNITI", "PRIOT", "PRIOTS"]
    for name, steps, before, after in rows:
        print("soak %s: %s steps, heap free %s -> %s" % (name, steps, before, after))
        assert int(after) >= int(before), (name, before, after)
