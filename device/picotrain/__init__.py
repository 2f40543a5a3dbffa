"""picotrain: integer-only on-device training for MicroPython (and its CPython mirror).

    import picotrain
    m = picotrain.load("model.pt8")
    t = picotrain.NITI(m)
    t.fit(data, epochs=3)
    m.predict(x); m.save("model.pt8")

picotrain.backend() names the active kernel backend; picotrain.use_backend()
changes it; picotrain.use_cores(2) splits the big kernels across two cores.
"""
from .kernels import backend, use as use_backend  # noqa: F401
from .layers import Conv2d, Flatten, Linear, MaxPool2d, Model, ReLU, Tensor  # noqa: F401
from .memory import memory_plan  # noqa: F401
from .modelfile import ModelFileError, load  # noqa: F401
from .prune import PRIOT, PRIOTS, bake, pruned_fraction  # noqa: F401
from .rng import XorShift32  # noqa: F401
from .train import NITI, StaticNITI, Trainer, calibrate, evaluate  # noqa: F401
from .tintin import TinTin  # noqa: F401  (issue 5)
from .partial import FQT, PartialFQT  # noqa: F401  (issue 5)

__version__ = "0.1.0"


def Guard(*args, **options):
    """A collapse guard for fit(guard=...): picotrain.guard.Guard, whose code is
    loaded here, on first use, so that runs without one keep the heap it takes
    (5 KB on the x64 unix port, objects there being about twice a Pico's)."""
    from .guard import Guard as cls
    return cls(*args, **options)


def use_cores(*args, **kw):
    """picotrain.cores.use_cores, loaded on first use: one core needs none of it
    (a board's heap is tight)."""
    from .cores import use_cores
    return use_cores(*args, **kw)
