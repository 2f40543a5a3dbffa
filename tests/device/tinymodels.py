"""Small models and data shared by the method tests (imported by test modules here)."""
from array import array

import picotrain as pt
from picotrain.rng import XorShift32

X = array("b", [64, -32])


def tiny(shift=None):
    """Linear(2, 2) with the weights of the hand-worked steps in NUMERICS.md
    (shift: its static forward and error shifts, None for uncalibrated)."""
    lin = pt.Linear(2, 2)
    lin.weight.data = array("b", [10, -20, 30, 5])
    lin.weight.exp = -7
    lin.shift = lin.bshift = shift
    return pt.Model([lin], (2,), in_exp=-7)


def cnn(seed):
    """A two-conv model on 8x8 inputs and 20 learnable samples (a bright square per class)."""
    r = XorShift32(seed)
    m = pt.Model([pt.Conv2d(1, 4, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Conv2d(4, 6, 3), pt.ReLU(),
                  pt.Flatten(), pt.Linear(24, 5)], (1, 8, 8))
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(81) - 40 for _ in range(l.weight.size)])
        l.weight.exp = -7
    data = []
    for _ in range(20):
        label = r.below(5)
        x = array("b", [r.below(30) for _ in range(64)])
        for dy in range(3):
            for dx in range(3):
                x[(label + dy) * 8 + label + dx] = 100 + r.below(27)
        data.append((x, label))
    return m, data


def separable():
    """Linear(3, 8) -> ReLU -> Linear(8, 2) with small random weights, and 200
    samples of a 2-class linearly separable task (a + b > 0)."""
    r = XorShift32(7)
    data = []
    for _ in range(200):
        a, b = r.below(201) - 100, r.below(201) - 100
        data.append((array("b", [a, b, 50]), 1 if a + b > 0 else 0))
    m = pt.Model([pt.Linear(3, 8), pt.ReLU(), pt.Linear(8, 2)], (3,))
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(61) - 30 for _ in range(l.weight.size)])
        l.weight.exp = -7
    return m, data
