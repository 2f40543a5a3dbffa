"""Run picotrain kernel calls bare metal on the emulated RP2040 and check them bit for bit.

A *call* is (kernel API name, args) exactly as device/picotrain/kernels.py receives it
(record.py captures them from real training steps): buffers are array('b'/'h'/'i') or
bytearray, the rest ints or None. `run_call` builds the armv6m image of the C kernels
(natmod/kernels/*.c without binding.c, the module's own compiler flags) plus shims.c, places
every buffer in SRAM, calls the C function the binding would call, and returns the cycles,
the return value and every buffer after the call, so the caller can compare all of them
with what the Python mirror produced.

The binding's own work (argument checks, buffer lookups, pt_conv2d_dims) is not in these
cycles: it is MicroPython glue, estimated separately (glue.py).
"""

import importlib.util
import struct
import sys
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RP2040 = ROOT / "benchmarks" / "rp2040"
KERNELS = ROOT / "natmod" / "kernels"
SHIMS = Path(__file__).resolve().parent / "shims.c"
if str(RP2040) not in sys.path:
    sys.path.insert(0, str(RP2040))

import harness  # noqa: E402
from harness import Buf  # noqa: E402
from picotrain.kernels import RANGED, RANGED_SCRATCH  # noqa: E402  (kbench/__init__.py: this checkout's)


_BUILD = []


def natmod_build():
    """natmod/build.py as a module (a script, not in a package), loaded once."""
    if not _BUILD:
        spec = importlib.util.spec_from_file_location("picotrain_natmod_build", ROOT / "natmod" / "build.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _BUILD.append(mod)
    return _BUILD[0]


def module_cflags():
    """The compiler flags natmod/build.py gives every kernel file (the .mpy's code)."""
    mod = natmod_build()
    # -D flags only matter to binding.c (MicroPython headers), which is not built here.
    flags = [f for f in mod.CFLAGS + mod.CFLAGS_EXTRA if not f.startswith("-D") or f == "-DNDEBUG"]
    # An assembler warning in the inline assembly is an error here (e.g. an LDM register
    # list out of ascending order loads the registers in another order than written).
    return tuple(flags + ["-Wa,--fatal-warnings"])


def kernel_sources(folder=KERNELS):
    return sorted(p for p in Path(folder).glob("*.c") if p.name != "binding.c")


def build_image(folder=KERNELS, cflags=None):
    """The SRAM image of the C kernels in `folder` (+ shims), cached by content."""
    return harness.build([*kernel_sources(folder), SHIMS], tuple(cflags or module_cflags()))


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def _shift(v):  # binding.c: get_shift clamps to [-64, 64] (no result changes)
    return _clamp(v, -64, 64)


def _thr(v):
    return _clamp(v, -32768, 32768)


def conv_dims(c_in, h, wd, c_out, k, stride, pad):
    """pt_conv2d_dims_t as pt_conv2d_dims fills it, packed as 9 int32."""
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    return struct.pack("<9i", c_in, h, wd, c_out, k, stride, pad, oh, ow)


def _range(name, a):
    """[c0, c1]: the channel range of a call of kernel `name` with arguments a (absent: the
    whole range, as the kernels' defaults); kernels.RANGED and RANGED_SCRATCH say where its
    own arguments end and which one is the channel count."""
    n, ci = (RANGED.get(name) or RANGED_SCRATCH[name])[:2]
    c0 = a[n] if len(a) > n else 0
    c1 = a[n + 1] if len(a) > n + 1 and a[n + 1] is not None else a[ci]
    return [c0, c1]


def _opt(a, i):
    """Optional argument i of a call (None when it was left out)."""
    return a[i] if len(a) > i else None


def is_buffer(v):
    return isinstance(v, (array, bytearray, bytes))


def _s16(scores):
    return 1 if getattr(scores, "typecode", "b") == "h" else 0


# name -> function(args) -> (C entry, [harness args], {position in args: position in C args})
def _plan(name, a):
    """The C call for kernel `name` with the mirror's arguments `a`."""
    B = _BUF
    if name == "bitlen_s32":
        return "pt_bitlen_s32", [B(a[0]), a[1]], {0: 0}
    if name == "requant_s32_s8":
        return "pt_requant_s32_s8", [B(a[0]), B(a[1]), a[2], _shift(a[3])], {0: 0, 1: 1}
    if name == "bias_add_s32":
        return "pt_bias_add_s32", [B(a[0]), B(a[1]), a[2], a[3], _shift(a[4])], {0: 0, 1: 1}
    if name == "acc_add_s32":
        return "pt_acc_add_s32", [B(a[0]), B(a[1]), a[2], _shift(a[3]), _shift(a[4])], {0: 0, 1: 1}
    if name == "fc_t_s8_s32":
        return "pt_" + name, [B(a[0]), B(a[1]), B(a[2]), a[3], a[4]], {0: 0, 1: 1, 2: 2}
    if name in ("fc_s8_s32", "outer_s8_s32"):
        return "pt_" + name, [B(a[0]), B(a[1]), B(a[2]), a[3], a[4], *_range(name, a)], {0: 0, 1: 1, 2: 2}
    if name in ("conv2d_s8_s32_chw", "conv2d_t_s8_s32_chw", "conv2d_grad_s8_s32_chw"):
        return "pt_" + name, [B(a[0]), B(a[1]), B(a[2]), Buf(conv_dims(*a[3:10])), *_range(name, a)], \
            {0: 0, 1: 1, 2: 2}
    if name == "relu_s8":
        return "pt_relu_s8", [B(a[0]), a[1]], {0: 0}
    if name == "relu_bwd_s8":
        return "pt_relu_bwd_s8", [B(a[0]), B(a[1]), a[2]], {0: 0, 1: 1}
    if name == "maxpool2d_s8_chw":
        idx = B(a[2]) if a[2] is not None else 0
        m = {0: 0, 1: 1, 2: 2} if a[2] is not None else {0: 0, 1: 1}
        return "pt_maxpool2d_s8_chw", [B(a[0]), B(a[1]), idx, *a[3:7], _opt(a, 7) or 0], m
    if name == "maxpool2d_bwd_s8_chw":
        y = B(a[7]) if _opt(a, 7) is not None else 0
        return "pt_maxpool2d_bwd_s8_chw", [B(a[0]), B(a[1]), B(a[2]), *a[3:7], y], {0: 0, 1: 1, 2: 2}
    if name == "argmax_s8":
        return "pt_argmax_s8", [B(a[0]), a[1]], {0: 0}
    if name == "softmax_xent_s8":
        return "pt_softmax_xent_s8", [B(a[0]), a[1], _shift(a[2]), a[3], B(a[4]), B(a[5])], {0: 0, 4: 4, 5: 5}
    if name == "update_s8":
        return "pt_update_s8", [B(a[0]), B(a[1]), a[2], _shift(a[3]), *_range(name, a)], {0: 0, 1: 1}
    if name == "update_outer_s8":
        return "pt_update_outer_s8", [B(a[0]), B(a[1]), B(a[2]), a[3], a[4], a[5], *_range(name, a)], \
            {0: 0, 1: 1, 2: 2}
    if name == "rescale_s32_s8":
        return "pt_rescale_s32_s8", [B(a[0]), B(a[1]), a[2], a[3], a[4]], {0: 0, 1: 1}
    if name == "topk_abs_s32":
        return "pt_topk_abs_s32", [B(a[0]), a[1], a[2], B(a[3])], {0: 0, 3: 3}
    # edge-popup: scores (a[sc]) may be None (no mask) for the forward kernels
    if name == "mask_s8":
        sc, sub = a[1], a[2]
        args = [B(a[0]), B(sc) if sc is not None else 0, B(sub) if sc is not None and sub is not None else 0,
                _s16(sc), _thr(a[3]), B(a[4]), a[5]]
        return "kb_mask_s8", args, _bufmap(args, {0: 0, 1: 1, 2: 2, 4: 5})
    if name in ("fc_mask_s8_s32", "fc_t_mask_s8_s32"):
        sc, sub = a[2], a[3]
        args = [B(a[0]), B(a[1]), B(sc) if sc is not None else 0,
                B(sub) if sc is not None and sub is not None else 0, _s16(sc), _thr(a[4]), B(a[5]), a[6], a[7]]
        if name == "fc_mask_s8_s32":
            args += _range(name, a)
        return "kb_" + name, args, _bufmap(args, {0: 0, 1: 1, 2: 2, 3: 3, 5: 6})
    if name in ("conv2d_mask_s8_s32_chw", "conv2d_t_mask_s8_s32_chw"):
        sc, sub = a[2], a[3]
        args = [B(a[0]), B(a[1]), B(sc) if sc is not None else 0,
                B(sub) if sc is not None and sub is not None else 0, _s16(sc), _thr(a[4]), B(a[5]),
                Buf(conv_dims(*a[6:13])), *_range(name, a)]
        return "kb_" + name, args, _bufmap(args, {0: 0, 1: 1, 2: 2, 3: 3, 5: 6})
    if name in ("conv2d_s8_s8_chw", "conv2d_mask_s8_s8_chw"):
        if name == "conv2d_s8_s8_chw":
            a = [a[0], a[1], None, None, 0, *a[2:]]
        sc, sub = a[2], a[3]
        c0, c1 = _range("conv2d_mask_s8_s8_chw", a)
        args = [B(a[0]), B(a[1]), B(sc) if sc is not None else 0,
                B(sub) if sc is not None and sub is not None else 0, _s16(sc), _thr(a[4]), B(a[5]), B(a[6]),
                len(a[6]), Buf(conv_dims(*a[7:14])), _shift(a[14]), B(a[15]) if a[15] is not None else 0,
                _shift(a[16]), c0, c1]
        # acc (args[6]) is scratch: its contents afterwards are not compared
        m = {0: 0, 1: 1, 2: 2, 3: 3, 5: 6} if name == "conv2d_mask_s8_s8_chw" else {0: 0, 1: 1, 2: 6}
        return "kb_conv2d_mask_s8_s8_chw", args, _bufmap(args, m)
    if name == "fc_score_s8":
        args = [B(a[0]), B(a[1]), B(a[2]), B(a[3]), B(a[4]) if a[4] is not None else 0, _s16(a[3]),
                _shift(a[5]), a[6], a[7], a[8], *_range(name, a)]
        return "kb_fc_score_s8", args, _bufmap(args, {0: 0, 1: 1, 2: 2, 3: 3, 4: 4})
    if name == "conv2d_score_s8_chw":
        args = [B(a[0]), B(a[1]), B(a[2]), B(a[3]), B(a[4]) if a[4] is not None else 0, _s16(a[3]),
                _shift(a[5]), a[6], Buf(conv_dims(*a[7:14])), *_range(name, a)]
        return "kb_conv2d_score_s8_chw", args, _bufmap(args, {0: 0, 1: 1, 2: 2, 3: 3, 4: 4})
    if name == "score_update_s8":
        args = [B(a[0]), B(a[1]) if a[1] is not None else 0, _s16(a[0]), B(a[2]), B(a[3]),
                _shift(a[4]), a[5], a[6]]
        return "kb_score_update_s8", args, _bufmap(args, {0: 0, 1: 1, 2: 3, 3: 4})
    raise KeyError("no C entry for kernel %r" % name)


def _bufmap(cargs, m):
    """Keep only the pairs whose C argument really is a Buf (None scores/subsets become 0)."""
    return {k: v for k, v in m.items() if isinstance(cargs[v], Buf)}


_offset = [0]  # run_call(align=1) places int8/uint8 buffers at odd addresses


def _BUF(v):
    data = bytes(v) if not isinstance(v, bytes) else v
    byte_items = isinstance(v, (bytes, bytearray)) or getattr(v, "typecode", "b") in "bB"
    return Buf(data, offset=_offset[0] if byte_items else 0)


def _harness_index(cargs, pos):
    """Index of C argument `pos` among the Bufs (harness returns Buf contents in order)."""
    return sum(1 for v in cargs[:pos] if isinstance(v, Buf))


class CallResult:
    def __init__(self, cycles, ret, buffers):
        self.cycles = cycles  # BLX + kernel (+ shim) + return
        self.ret = ret  # int32 r0
        self.buffers = buffers  # {position in the mirror's args: bytes after the call}


def run_call(image, name, args, trace=False, align=4):
    """Run one recorded call on the emulator; buffers are not modified. align=1 puts the
    int8 / uint8 buffers at odd addresses (int16 / int32 stay aligned, as the binding
    requires)."""
    _offset[0] = 1 if align == 1 else 0
    try:
        entry, cargs, bufpos = _plan(name, args)
    finally:
        _offset[0] = 0
    res = harness.run_image(image, entry, cargs, trace=trace)
    out = {p: res.buffers[_harness_index(cargs, c)] for p, c in bufpos.items()}
    r = CallResult(res.cycles[0], res.ret, out)
    r.trm_cycles = res.trm_cycles[0] if trace else None
    r.stack_bytes = res.stack_bytes
    return r


RETURNS = {"bitlen_s32", "requant_s32_s8", "argmax_s8", "softmax_xent_s8", "update_s8", "update_outer_s8",
           "rescale_s32_s8", "fc_score_s8", "conv2d_score_s8_chw", "score_update_s8", "conv2d_s8_s8_chw",
           "conv2d_mask_s8_s8_chw"}


def check_call(res, name, after, ret):
    """Differences between an emulator run and the mirror's outputs ([] when bit-exact).
    after: {arg position: bytes after the mirror's call}; ret: the mirror's return value."""
    bad = []
    for p, data in after.items():
        if p in res.buffers and res.buffers[p] != data:
            got = res.buffers[p]
            first = next(i for i in range(min(len(got), len(data))) if got[i] != data[i]) \
                if len(got) == len(data) else -1
            bad.append("argument %d differs (first byte %d)" % (p, first))
    if name in RETURNS and ret is not None and (ret & 0xFFFFFFFF) != (res.ret & 0xFFFFFFFF):
        bad.append("returned %d, mirror %d" % (res.ret, ret))
    return bad


# ------------------------------------------------------------------ binding --

def binding_cflags():
    """Flags to compile binding.c as natmod/build.py does (dynruntime mode, the module's
    generated config header), for bind_driver.c."""
    mod = natmod_build()
    mpy_dir = mod.micropython_dir()
    config = mod.config_header(KERNELS, "armv6m", mpy_dir)  # its qstrs are binding.c's
    flags = [f for f in mod.CFLAGS + mod.CFLAGS_EXTRA if f != "-Werror"]
    return tuple(flags + ["-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT", "-I%s" % mpy_dir,
                          "-DMP_CONFIGFILE=<%s>" % config, "-Wno-unused-function"])


def build_binding_image(folder=KERNELS):
    """The kernels plus the binding (through bind_driver.c) for the emulator."""
    return harness.build([*kernel_sources(folder), SHIMS, Path(__file__).resolve().parent / "bind_driver.c"],
                         binding_cflags())
