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
    "argmax_s8", "softmax_xent_s8", "update_s8", "update_outer_s8",
    # Tin-Tin (binary-decomposition rescale) and partial-update FQT (top-k)
    "rescale_s32_s8", "topk_abs_s32",
    # edge-popup (PRIOT): masks made on the fly from scores and a threshold
    "mask_s8", "fc_mask_s8_s32", "fc_t_mask_s8_s32",
    "conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw",
    "fc_score_s8", "conv2d_score_s8_chw", "score_update_s8",
    # issue 8: convolution fused with the static requantization (no int32 feature map)
    "conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw",
)

# The kernels that take a channel range, optional c0, c1 after their own
# arguments (kernels_py.check_range): name -> (number of their own arguments,
# position of the channel count among them, positions of the sizes whose
# product times the last number estimates the work in multiply-accumulates).
# cores.py splits these. A conv's work is taken as c_in*h*wd*c_out*k*k (the
# output plane as big as the input's); an update costs about 16 MACs an item,
# the linear layer's fused update about 2 (it only scans the rows' zero pairs).
_CONV = (3, 4, 5, 6, 7, 7)
RANGED = {
    "fc_s8_s32": (5, 4, (3, 4), 1), "outer_s8_s32": (5, 3, (3, 4), 1), "update_s8": (4, 2, (2,), 16),
    "update_outer_s8": (6, 3, (3, 4), 2),
    "fc_mask_s8_s32": (8, 7, (6, 7), 1), "fc_score_s8": (9, 8, (7, 8), 1),
    "conv2d_s8_s32_chw": (10, 6, _CONV, 1), "conv2d_t_s8_s32_chw": (10, 3, _CONV, 1),
    "conv2d_grad_s8_s32_chw": (10, 6, _CONV, 1),
    "conv2d_mask_s8_s32_chw": (13, 9, tuple(p + 3 for p in _CONV), 1),
    "conv2d_t_mask_s8_s32_chw": (13, 6, tuple(p + 3 for p in _CONV), 1),
    "conv2d_score_s8_chw": (14, 10, tuple(p + 4 for p in _CONV), 1),
}
# The fused conv + requantize (static shifts) take a range too, and an int32
# scratch that each core needs for itself: name -> RANGED's four fields, then
# the scratch's position. cores.py gives the worker's half the scratch that
# Model.build allocates for it (Model.plan's "acc2", with two cores only).
RANGED_SCRATCH = {
    "conv2d_s8_s8_chw": (14, 7, tuple(p + 1 for p in _CONV), 1, 3),
    "conv2d_mask_s8_s8_chw": (17, 10, tuple(p + 4 for p in _CONV), 1, 6),
}

_active = None
_fallbacks = ()
_cores = 1  # set by cores.use_cores

# mpy arch codes (py/persistentcode.h): what a native .mpy was built for.
ARCHS = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")


def _describe(v, flags):
    arch = flags >> 2
    return "%s, mpy %d.%d" % (ARCHS[arch] if arch < len(ARCHS) else "arch %d" % arch, v, flags & 3)


def native_mismatch():
    """Why picotrain/_native.mpy cannot load here, naming both sides (or None)."""
    try:
        sys_mpy = sys.implementation._mpy
    except AttributeError:
        return "this Python (%s) cannot load native .mpy modules" % sys.implementation.name
    path = __file__.rsplit("/", 1)[0] + "/_native.mpy"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    here = _describe(sys_mpy & 0xFF, sys_mpy >> 8)
    if len(head) < 4 or head[0] != 0x4D:
        return "%s is not a .mpy file (this MicroPython is %s)" % (path, here)
    there = _describe(head[1], head[2])
    if there != here:
        return "%s is built for %s; this MicroPython is %s" % (path, there, here)
    return None


def _load(name):
    if name == "python":
        from . import kernels_py as mod
    elif name == "numpy":
        from . import kernels_np as mod
    elif name == "native":
        try:
            from . import _native as mod
        except (ValueError, OSError) as e:  # MicroPython: incompatible .mpy
            why = native_mismatch() or str(e)
            raise ValueError("native kernels not loaded: " + why)
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
            except ValueError as e:
                print("picotrain: warning: %s; using the %s kernels" % (e, "numpy" if _has_numpy() else "pure-Python"))
                continue
            name = cand
            break
    else:
        mod = _load(name)
    from . import kernels_py
    # setattr, not globals()[k] = f: setattr interns the name. MicroPython's
    # parser leaves string literals longer than a few characters uninterned,
    # and one such key in this module's dict makes every later K.name lookup
    # compare strings instead of pointers (about twice as slow; 28 lookups a
    # training step).
    me = sys.modules[__name__]
    missing = []
    for k in NAMES:
        f = getattr(mod, k, None)
        if f is None:
            missing.append(k)
            f = getattr(kernels_py, k)
        setattr(me, k, f)
    _active = name
    _fallbacks = tuple(missing)
    if _cores > 1:
        from .cores import split_kernels
        split_kernels(me)
    return name


def _has_numpy():
    try:
        import numpy  # noqa: F401
        return True
    except ImportError:
        return False


def backend():
    """Name of the active backend, with any kernels it borrows from 'python'
    and the number of cores when it is not one."""
    name = _active
    if _fallbacks:
        name = "%s (python for: %s)" % (name, ", ".join(_fallbacks))
    if _cores > 1:
        name = "%s, %d cores" % (name, _cores)
    return name


def _initial():
    if sys.implementation.name == "cpython":
        import os
        return os.environ.get("PICOTRAIN_BACKEND", "auto")
    return "auto"


use(_initial())
