# Trainer.step holds micropython.heap_lock() (issue 8): an allocation in a step
# raises MemoryError, the heap is unlocked again however a step ends, and a
# kernel's argument error keeps its text. Prints "<case> <lock depth after>
# <exception and message, or ->" per case, then the backend. ARGV = [script,
# backend] is set before this text.
import micropython
from array import array

import picotrain as pt

pt.use_backend(ARGV[1])  # noqa: F821 (defined by the test)
x = array('b', [j * 7 for j in range(16)])


def fresh(make):
    m = pt.Model([pt.Conv2d(1, 2, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), pt.Linear(8, 3)],
                 (1, 4, 4))
    for l in m.param_layers():
        l.weight.data = array('b', [(j * 37) % 61 - 30 for j in range(l.weight.size)])
    pt.calibrate(m, [(x, 1), (x, 2)])
    t = make(m)
    t.step(x, 1)
    return m, t


def depth():
    micropython.heap_lock()
    return micropython.heap_unlock()


def case(name, t):
    try:
        t.step(x, 2)
        what = "-"
    except BaseException as e:  # noqa: B036 (KeyboardInterrupt is a case)
        what = "%s %s" % (type(e).__name__, e)
    print(name, depth(), what)


def allocates(i, layer, e, xx):
    return [i, layer, e, xx]


def interrupted(i, layer, e, xx):
    raise KeyboardInterrupt


for method, make in (("NITI", lambda m: pt.NITI(m)), ("PRIOTS", lambda m: pt.PRIOTS(m, p=0.5)),
                     ("TinTin", lambda m: pt.TinTin(m, m=3, n=4))):
    m, t = fresh(make)
    t._grad = allocates
    case(method + "-allocates", t)
    t._grad = interrupted
    case(method + "-interrupted", t)
    m, t = fresh(make)
    good = m.layers[4].weight.data
    m.layers[4].weight.data = array('b', bytes(5))
    case(method + "-short-weights", t)
    m.layers[4].weight.data = good
    case(method + "-mended", t)
print(pt.backend())
