# Training steps of every method under micropython.heap_lock(): a step must
# allocate nothing. Prints "<method> <batch> <prediction>" per case, then the
# backend. ARGV = [script, backend, cores] is set by the test before this text
# (two cores: the worker holds its own heap lock, so its halves are checked too).
import micropython
from array import array

import picotrain as pt

pt.use_backend(ARGV[1])  # noqa: F821 (defined by the test)
pt.use_cores(ARGV[2], min_work=0)  # noqa: F821 (two: every call split, however small)
x = array('b', [j * 7 for j in range(16)])


def fresh():
    m = pt.Model([pt.Conv2d(1, 2, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(8, 3)],
                 (1, 4, 4))
    for l in m.param_layers():
        l.weight.data = array('b', [(j * 37) % 61 - 30 for j in range(l.weight.size)])
    pt.calibrate(m, [(x, 1), (x, 2)])
    return m


def locked_steps(t, m):
    # Locals only: a module-level assignment would grow the globals dict.
    micropython.heap_lock()
    try:
        for i in range(4):
            t.step(x, i % 3)
        p = m.predict(x)
    finally:
        micropython.heap_unlock()
    return p


METHODS = (
    ("NITI", lambda m, b: pt.NITI(m, batch=b)),
    ("StaticNITI", lambda m, b: pt.StaticNITI(m, batch=b)),
    ("PRIOT", lambda m, b: pt.PRIOT(m, batch=b)),
    ("PRIOTS", lambda m, b: pt.PRIOTS(m, p=0.5, batch=b, mask_backward=True)),
    # issue 5
    ("TinTin", lambda m, b: pt.TinTin(m, m=3, n=4, batch=b)),
    ("FQT", lambda m, b: pt.FQT(m, lr=4, batch=b)),
    ("PartialFQT", lambda m, b: pt.PartialFQT(m, budget=0.5, lr=4, batch=b)),
)
for name, make in METHODS:
    for batch in (1, 2):
        m = fresh()
        t = make(m, batch)
        t.step(x, 1)
        print(name, batch, locked_steps(t, m))
print(pt.backend())
