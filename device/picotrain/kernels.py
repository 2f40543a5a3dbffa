"""The kernel API: one set of names, three interchangeable backends.

    native  C compiled to a MicroPython .mpy (picotrain/_native.mpy)
    numpy   kernels_np.py, CPython only
    python  kernels_py.py, anywhere

Layers and methods call `kernels.NAME(...)` and never know which backend
runs; `use()` rebinds the names of this module. All backends give the same
bits (docs/NUMERICS.md, tests/device/test_kernels.py).
"""
import sys

NAMES = (
    "bitlen_s32", "requant_s32_s8", "bias_add_s32", "acc_add_s32",
    "fc_s8_s32", "fc_t_s8_s32", "outer_s8_s32",
    "conv2d_s8_s32_chw", "conv2d_t_s8_s32_chw", "conv2d_grad_s8_s32_chw",
    "relu_s8", "relu_bwd_s8", "maxpool2d_s8_chw", "maxpool2d_bwd_s8_chw",
    "argmax_s8", "softmax_xent_s8", "update_s8",
    # edge-popup (PRIOT): masks made on the fly from scores and a threshold
    "mask_s8", "fc_mask_s8_s32", "fc_t_mask_s8_s32",
    "conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw",
    "fc_score_s8", "conv2d_score_s8_chw", "score_update_s8",
)

_active = None
_fallbacks = ()


def _load(name):
    if name == "python":
        from . import kernels_py as mod
    elif name == "numpy":
        from . import kernels_np as mod
    elif name == "native":
        from . import _native as mod
    else:
        raise ValueError("unknown kernel backend %r (expected 'native', 'numpy' or 'python')" % (name,))
    return mod


def use(name="auto"):
    """Select the kernel backend; 'auto' takes the fastest that imports.

    Returns the name of the active backend. A native module that is missing
    a kernel gets that kernel from the pure-Python backend (reported by
    backend()); a native module that fails to import (another arch or mpy
    version) is reported and skipped rather than crashing the import.
    """
    global _active, _fallbacks
    if name == "auto":
        for cand in ("native", "numpy", "python"):
            try:
                mod = _load(cand)
            except ImportError:
                continue
            except (ValueError, OSError) as e:  # MicroPython: incompatible .mpy
                print("picotrain: native kernels not loaded (%s); falling back" % (e,))
                continue
            name = cand
            break
    else:
        mod = _load(name)
    from . import kernels_py
    g = globals()
    missing = []
    for k in NAMES:
        f = getattr(mod, k, None)
        if f is None:
            missing.append(k)
            f = getattr(kernels_py, k)
        g[k] = f
    _active = name
    _fallbacks = tuple(missing)
    return name


def backend():
    """Name of the active backend, with any kernels it borrows from 'python'."""
    if _fallbacks:
        return "%s (python for: %s)" % (_active, ", ".join(_fallbacks))
    return _active


def _initial():
    if sys.implementation.name == "cpython":
        import os
        return os.environ.get("PICOTRAIN_BACKEND", "auto")
    return "auto"


use(_initial())
