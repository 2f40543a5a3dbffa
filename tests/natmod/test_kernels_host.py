"""Tier 3: the C kernels (natmod/kernels/*.c, without the MicroPython binding) compiled for the
host with AddressSanitizer + UndefinedBehaviorSanitizer, driven through ctypes against the
Python mirror (kernels_py and kernels_np) on random shapes and values with hypothesis.

The sanitizer runtime must come first in the process, so the property tests (class Sanitized
below) run in a child pytest with libasan preloaded and PYTHONMALLOC=malloc; any sanitizer
report aborts the child. Every buffer handed to C is a fresh malloc of exactly the bytes the
kernel may touch, so one byte too far is a heap-buffer-overflow. The deliberate-bug tests prove
that this set-up does catch an out-of-bounds read, an out-of-bounds write and undefined
behaviour inside a kernel.
"""
import copy
import ctypes
import os
import re
import shutil
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from picotrain import kernels, kernels_np as NP, kernels_py as PY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))
from test_kernels import ranged_call  # noqa: E402  (the cases of the range tests)

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "natmod" / "kernels"
CFLAGS = ["-std=c99", "-O1", "-g", "-fno-omit-frame-pointer", "-fPIC", "-shared", "-Wall", "-Wextra",
          "-Werror", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
SANITIZER_REPORT = re.compile(r"AddressSanitizer|LeakSanitizer|runtime error:")
SO = os.environ.get("PT_KERNELS_SO")  # set in the sanitized child only


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """(path of the sanitized kernel library, environment for a process that loads it)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    out = tmp_path_factory.mktemp("kernels_host") / "libpicotrain_kernels_san.so"
    sources = sorted(str(p) for p in KERNELS.glob("*.c") if p.name != "binding.c")
    p = subprocess.run(["gcc", *CFLAGS, "-I", str(KERNELS), *sources, "-o", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("gcc has no libasan.so")
    env = dict(os.environ, LD_PRELOAD=libasan, PYTHONMALLOC="malloc", PT_KERNELS_SO=str(out),
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "device"), str(Path(__file__).parent)]))
    return out, env


def run_sanitized(env, code):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))


def test_kernels_match_mirror_under_sanitizers(sanitized):
    _, env = sanitized
    # -s: a sanitizer report is written as the child dies, past pytest's output capture
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-s",
                        "-o", "python_classes=Sanitized", "-k", "Sanitized", __file__],
                       env=env, capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-8000:]
    assert not SANITIZER_REPORT.search(out), out[-8000:]
    n_tests = len([m for m in vars(Sanitized) if m.startswith("test_")])
    assert re.search(r"\b%d passed\b" % n_tests, out), out[-3000:]


# A harness that does not catch bugs proves nothing: three deliberate ones, each of which
# the sanitized child must abort on, with the right report.
HARNESS = """
import os, sys
sys.argv = ['x']
from array import array
from test_kernels_host import Heap, Dims, lib
import ctypes
"""


def test_out_of_bounds_write_is_caught(sanitized):
    _, env = sanitized
    # requant told n = 5 with a 4-item output: the kernel writes one byte past the block.
    p = run_sanitized(env, HARNESS + """
with Heap() as m:
    lib.pt_requant_s32_s8(m.buf(array('i', [1] * 5)), m.buf(array('b', [0] * 4)), 5, 0)
print('not caught')
""")
    assert p.returncode != 0 and "not caught" not in p.stdout
    assert "heap-buffer-overflow" in p.stderr and "WRITE of size 1" in p.stderr, p.stderr[-3000:]


def test_out_of_bounds_read_is_caught(sanitized):
    _, env = sanitized
    # fc told 3 x 4 weights while the buffer holds 11.
    p = run_sanitized(env, HARNESS + """
with Heap() as m:
    lib.pt_fc_s8_s32(m.buf(array('b', [1] * 3)), m.buf(array('b', [1] * 11)), m.buf(array('i', [0] * 4)), 3, 4,
                     0, 4)
print('not caught')
""")
    assert p.returncode != 0 and "not caught" not in p.stdout
    assert "heap-buffer-overflow" in p.stderr and "READ of size 1" in p.stderr, p.stderr[-3000:]


def test_undefined_behaviour_is_caught(sanitized):
    _, env = sanitized
    # A geometry whose output size overflows int32 (the binding refuses it): UBSan stops the
    # kernel at the overflowing multiplication, before the first write.
    p = run_sanitized(env, HARNESS + """
d = Dims()
assert lib.pt_conv2d_dims(ctypes.byref(d), 1, 30000, 30000, 4, 1, 1, 0) == 0
with Heap() as m:
    lib.pt_conv2d_s8_s32_chw(m.buf(array('b', [1])), m.buf(array('b', [1] * 4)), m.buf(array('i', [0])),
                             ctypes.byref(d), 0, 4)
print('not caught')
""")
    assert p.returncode != 0 and "not caught" not in p.stdout
    assert "runtime error: signed integer overflow" in p.stderr, p.stderr[-3000:]


# ----------------------------------------------- the child's ctypes driver --

i32, u32, vp = ctypes.c_int32, ctypes.c_uint32, ctypes.c_void_p


class Dims(ctypes.Structure):
    _fields_ = [(n, i32) for n in ("c_in", "h", "w", "c_out", "k", "stride", "pad", "oh", "ow")]


class Scores(ctypes.Structure):
    _fields_ = [("data", vp), ("subset", vp), ("s16", i32), ("edge0", u32)]


P = ctypes.POINTER
SIGS = {  # name: (restype, argtypes); vp = a buffer
    "pt_udiv_u32": (u32, [u32, u32]),
    "pt_bitlen_u32": (i32, [u32]),
    "pt_popcount_range": (u32, [vp, u32, u32]),
    "pt_mask_range_s8": (u32, [vp, vp, i32, u32, u32, vp, i32]),
    "pt_bitlen_s32": (i32, [vp, i32]),
    "pt_requant_s32_s8": (i32, [vp, vp, i32, i32]),
    "pt_bias_add_s32": (None, [vp, vp, i32, i32, i32]),
    "pt_acc_add_s32": (None, [vp, vp, i32, i32, i32]),
    "pt_fc_s8_s32": (None, [vp, vp, vp, i32, i32, i32, i32]),
    "pt_fc_t_s8_s32": (None, [vp, vp, vp, i32, i32]),
    "pt_outer_s8_s32": (None, [vp, vp, vp, i32, i32, i32, i32]),
    "pt_conv2d_dims": (ctypes.c_int, [P(Dims)] + [i32] * 7),
    "pt_conv2d_s8_s32_chw": (None, [vp, vp, vp, P(Dims), i32, i32]),
    "pt_conv2d_t_s8_s32_chw": (None, [vp, vp, vp, P(Dims), i32, i32]),
    "pt_conv2d_grad_s8_s32_chw": (None, [vp, vp, vp, P(Dims), i32, i32]),
    "pt_relu_s8": (None, [vp, i32]),
    "pt_relu_bwd_s8": (None, [vp, vp, i32]),
    "pt_maxpool2d_s8_chw": (None, [vp, vp, vp, i32, i32, i32, i32, i32]),
    "pt_maxpool2d_bwd_s8_chw": (None, [vp, vp, vp, i32, i32, i32, i32, vp]),
    "pt_argmax_s8": (i32, [vp, i32]),
    "pt_softmax_xent_s8": (i32, [vp, i32, i32, i32, vp, vp]),
    "pt_update_s8": (i32, [vp, vp, i32, i32, i32, i32]),
    "pt_update_outer_s8": (i32, [vp, vp, vp, i32, i32, i32, i32, i32]),
    "pt_rescale_s32_s8": (i32, [vp, vp, i32, u32, i32]),
    "pt_topk_abs_s32": (u32, [vp, i32, i32, vp]),
    "pt_mask_s8": (None, [vp, P(Scores), i32, vp, i32]),
    "pt_fc_mask_s8_s32": (None, [vp, vp, P(Scores), i32, vp, i32, i32, i32, i32]),
    "pt_fc_t_mask_s8_s32": (None, [vp, vp, P(Scores), i32, vp, i32, i32]),
    "pt_conv2d_mask_s8_s32_chw": (None, [vp, vp, P(Scores), i32, vp, P(Dims), i32, i32]),
    "pt_conv2d_t_mask_s8_s32_chw": (None, [vp, vp, P(Scores), i32, vp, P(Dims), i32, i32]),
    "pt_score_step": (i32, [P(Scores), u32, i32, i32, i32, i32]),
    "pt_fc_score_s8": (i32, [vp, vp, vp, P(Scores), i32, i32, i32, i32, i32, i32]),
    "pt_conv2d_score_s8_chw": (i32, [vp, vp, vp, P(Scores), i32, i32, P(Dims), i32, i32]),
    "pt_score_update_s8": (i32, [P(Scores), vp, vp, i32, i32, i32]),
    "pt_conv2d_mask_s8_s8_chw": (i32, [vp, vp, P(Scores), i32, vp, vp, i32, P(Dims), i32, vp, i32, i32, i32]),
}
lib = libc = None
if SO:  # only in the sanitized child (and the deliberate-bug scripts)
    lib = ctypes.CDLL(SO)
    libc = ctypes.CDLL(None)  # malloc/free: AddressSanitizer's, through LD_PRELOAD
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    for _name, (_res, _args) in SIGS.items():
        getattr(lib, _name).restype = _res
        getattr(lib, _name).argtypes = _args
    settings.register_profile("sanitized", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("sanitized")


class Heap:
    """Exact-size malloc copies of Python buffers; written back into them on exit."""

    def __init__(self):
        self.blocks = []

    def __enter__(self):
        return self

    def buf(self, obj):
        if obj is None:
            return None
        data = bytes(obj)
        p = libc.malloc(len(data))
        assert p, "malloc failed"
        ctypes.memmove(p, data, len(data))
        self.blocks.append((p, obj, len(data)))
        return p

    def scores(self, scores, subset):
        """A pt_scores_t; scores None gives data NULL (no mask), as the binding passes it."""
        return ctypes.byref(Scores(self.buf(scores), self.buf(subset) if scores is not None else None,
                                   1 if scores is not None and scores.typecode == "h" else 0))

    def __exit__(self, *exc):
        for p, obj, n in self.blocks:
            data = ctypes.string_at(p, n)
            if isinstance(obj, bytearray):
                obj[:] = data
            else:
                obj[:] = array(obj.typecode, data)
            libc.free(p)
        return False


def conv_range(g):
    """(geometry, c0, c1) of a conv kernel's trailing arguments, in kernels_py's order."""
    return g[:7], g[7] if len(g) > 7 else 0, g[8] if len(g) > 8 else None


def upto(c1, count):
    """The end of a channel range (None: the channel count), as the binding fills it in."""
    return count if c1 is None else c1


def dims(c_in, h, wd, c_out, k, stride, pad):
    d = Dims()
    assert lib.pt_conv2d_dims(ctypes.byref(d), c_in, h, wd, c_out, k, stride, pad) == 0
    return ctypes.byref(d)


class C:
    """The C kernels with the signatures of kernels_py (buffers updated in place)."""

    @staticmethod
    def bitlen_s32(acc, n):
        with Heap() as m:
            return lib.pt_bitlen_s32(m.buf(acc), n)

    @staticmethod
    def requant_s32_s8(acc, out, n, shift):
        with Heap() as m:
            return lib.pt_requant_s32_s8(m.buf(acc), m.buf(out), n, shift)

    @staticmethod
    def bias_add_s32(acc, bias, c, plane, d):
        with Heap() as m:
            lib.pt_bias_add_s32(m.buf(acc), m.buf(bias), c, plane, d)

    @staticmethod
    def acc_add_s32(acc, g, n, sa, sg):
        with Heap() as m:
            lib.pt_acc_add_s32(m.buf(acc), m.buf(g), n, sa, sg)

    @staticmethod
    def fc_s8_s32(x, w, out, n_in, n_out, c0=0, c1=None):
        with Heap() as m:
            lib.pt_fc_s8_s32(m.buf(x), m.buf(w), m.buf(out), n_in, n_out, c0, upto(c1, n_out))

    @staticmethod
    def fc_t_s8_s32(e, w, out, n_in, n_out):
        with Heap() as m:
            lib.pt_fc_t_s8_s32(m.buf(e), m.buf(w), m.buf(out), n_in, n_out)

    @staticmethod
    def outer_s8_s32(e, x, out, n_out, n_in, c0=0, c1=None):
        with Heap() as m:
            lib.pt_outer_s8_s32(m.buf(e), m.buf(x), m.buf(out), n_out, n_in, c0, upto(c1, n_out))

    @staticmethod
    def conv2d_s8_s32_chw(x, w, out, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            lib.pt_conv2d_s8_s32_chw(m.buf(x), m.buf(w), m.buf(out), dims(*g), c0, upto(c1, g[3]))

    @staticmethod
    def conv2d_t_s8_s32_chw(e, w, out, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            lib.pt_conv2d_t_s8_s32_chw(m.buf(e), m.buf(w), m.buf(out), dims(*g), c0, upto(c1, g[0]))

    @staticmethod
    def conv2d_grad_s8_s32_chw(e, x, out, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            lib.pt_conv2d_grad_s8_s32_chw(m.buf(e), m.buf(x), m.buf(out), dims(*g), c0, upto(c1, g[3]))

    @staticmethod
    def relu_s8(x, n):
        with Heap() as m:
            lib.pt_relu_s8(m.buf(x), n)

    @staticmethod
    def relu_bwd_s8(y, e, n):
        with Heap() as m:
            lib.pt_relu_bwd_s8(m.buf(y), m.buf(e), n)

    @staticmethod
    def maxpool2d_s8_chw(x, out, idx, c, h, wd, k, relu=0):
        with Heap() as m:
            lib.pt_maxpool2d_s8_chw(m.buf(x), m.buf(out), m.buf(idx), c, h, wd, k, relu)

    @staticmethod
    def maxpool2d_bwd_s8_chw(e, idx, out, c, h, wd, k, y=None):
        with Heap() as m:
            lib.pt_maxpool2d_bwd_s8_chw(m.buf(e), m.buf(idx), m.buf(out), c, h, wd, k, m.buf(y))

    @staticmethod
    def argmax_s8(x, n):
        with Heap() as m:
            return lib.pt_argmax_s8(m.buf(x), n)

    @staticmethod
    def softmax_xent_s8(z, n, exp, label, err, p):
        with Heap() as m:
            return lib.pt_softmax_xent_s8(m.buf(z), n, exp, label, m.buf(err), m.buf(p))

    @staticmethod
    def update_s8(w, g, n, shift, c0=0, c1=None):
        with Heap() as m:
            return lib.pt_update_s8(m.buf(w), m.buf(g), n, shift, c0, upto(c1, n))

    @staticmethod
    def update_outer_s8(e, x, w, n_out, n_in, mu, c0=0, c1=None):
        with Heap() as m:
            return lib.pt_update_outer_s8(m.buf(e), m.buf(x), m.buf(w), n_out, n_in, mu, c0, upto(c1, n_out))

    @staticmethod
    def rescale_s32_s8(acc, out, n, mul, shift):
        with Heap() as m:
            return lib.pt_rescale_s32_s8(m.buf(acc), m.buf(out), n, mul, shift)

    @staticmethod
    def topk_abs_s32(g, n, k, idx):
        with Heap() as m:
            return lib.pt_topk_abs_s32(m.buf(g), n, k, m.buf(idx))

    @staticmethod
    def mask_s8(w, scores, subset, thr, out, n):
        with Heap() as m:
            lib.pt_mask_s8(m.buf(w), m.scores(scores, subset), thr, m.buf(out), n)

    @staticmethod
    def fc_mask_s8_s32(x, w, scores, subset, thr, out, n_in, n_out, c0=0, c1=None):
        with Heap() as m:
            lib.pt_fc_mask_s8_s32(m.buf(x), m.buf(w), m.scores(scores, subset), thr, m.buf(out), n_in, n_out,
                                  c0, upto(c1, n_out))

    @staticmethod
    def fc_t_mask_s8_s32(e, w, scores, subset, thr, out, n_in, n_out):
        with Heap() as m:
            lib.pt_fc_t_mask_s8_s32(m.buf(e), m.buf(w), m.scores(scores, subset), thr, m.buf(out), n_in, n_out)

    @staticmethod
    def conv2d_mask_s8_s32_chw(x, w, scores, subset, thr, out, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            lib.pt_conv2d_mask_s8_s32_chw(m.buf(x), m.buf(w), m.scores(scores, subset), thr, m.buf(out),
                                          dims(*g), c0, upto(c1, g[3]))

    @staticmethod
    def conv2d_t_mask_s8_s32_chw(e, w, scores, subset, thr, out, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            lib.pt_conv2d_t_mask_s8_s32_chw(m.buf(e), m.buf(w), m.scores(scores, subset), thr, m.buf(out),
                                            dims(*g), c0, upto(c1, g[0]))

    @staticmethod
    def fc_score_s8(e, x, w, scores, subset, shift, smax, n_in, n_out, c0=0, c1=None):
        with Heap() as m:
            return lib.pt_fc_score_s8(m.buf(e), m.buf(x), m.buf(w), m.scores(scores, subset), shift, smax,
                                      n_in, n_out, c0, upto(c1, n_out))

    @staticmethod
    def conv2d_score_s8_chw(e, x, w, scores, subset, shift, smax, *g):
        g, c0, c1 = conv_range(g)
        with Heap() as m:
            return lib.pt_conv2d_score_s8_chw(m.buf(e), m.buf(x), m.buf(w), m.scores(scores, subset), shift,
                                              smax, dims(*g), c0, upto(c1, g[3]))

    @staticmethod
    def conv2d_mask_s8_s8_chw(x, w, scores, subset, thr, out, acc, c_in, h, wd, c_out, k, stride, pad,
                              shift, bias, d, c0=0, c1=None):
        with Heap() as m:
            return lib.pt_conv2d_mask_s8_s8_chw(m.buf(x), m.buf(w), m.scores(scores, subset), thr, m.buf(out),
                                                m.buf(acc), len(acc), dims(c_in, h, wd, c_out, k, stride, pad),
                                                shift, m.buf(bias), d, c0, c_out if c1 is None else c1)

    @staticmethod
    def score_update_s8(scores, subset, g, w, shift, smax, n):
        with Heap() as m:
            return lib.pt_score_update_s8(m.scores(scores, subset), m.buf(g), m.buf(w), shift, smax, n)


def same(name, *args, outs=(), numpy=True):
    """Run kernel `name` in C, kernels_py (and kernels_np) on copies; the results and the
    buffers at positions `outs` must agree. Returns (result, [out buffers]) of C."""
    got = []
    for mod in (C, PY, NP) if numpy else (C, PY):
        a = [copy.deepcopy(v) for v in args]
        r = getattr(mod, name)(*a)
        got.append((r, [bytes(a[k]) for k in outs]))
    for other, mod in zip(got[1:], ("kernels_py", "kernels_np")):
        assert got[0] == other, "%s: C differs from %s" % (name, mod)
    return got[0]


# -------------------------------------------------------------- strategies --

I32_MIN, I32_MAX = -2**31, 2**31 - 1
EDGES32 = [I32_MIN, I32_MIN + 1, I32_MAX, -1, 0, 1, 127, 128, -128, 2**24 - 1, 2**24, -2**24, -(2**24 - 1),
           2**30, -2**30, 2**31 - 2**14]
i8 = st.integers(-128, 127)
i32 = st.one_of(st.integers(I32_MIN, I32_MAX), st.sampled_from(EDGES32))
shifts = st.one_of(st.integers(-3, 34), st.sampled_from([0, 1, 31, 32, 33, 47, 48, 62, 63, 64]))


def a8(v):
    return array("b", v)


def a32(v):
    return array("i", v)


def lists(elem, n):
    return st.lists(elem, min_size=n, max_size=n)


def conv_case(data):
    c_in = data.draw(st.integers(0, 3))
    c_out = data.draw(st.integers(0, 3))
    k = data.draw(st.integers(1, 4))
    stride = data.draw(st.integers(1, 3))
    pad = data.draw(st.integers(0, k + 1))  # beyond pad < k too: kernels_py defines it
    h = data.draw(st.integers(max(0, k - 2 * pad), 7))
    wd = data.draw(st.integers(max(0, k - 2 * pad), 7))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    return (c_in, h, wd, c_out, k, stride, pad), oh, ow


def mask_case(data, n):
    """Scores int8 or int16, dense or compact over a subset (possibly empty), and a threshold
    that may keep everything or prune everything."""
    tc = data.draw(st.sampled_from("bh"))
    lim = 127 if tc == "b" else 32767
    lo = -128 if tc == "b" else -32768
    subset = None
    m = n
    if data.draw(st.booleans()):
        mode = data.draw(st.sampled_from(["random", "none", "all"]))
        bits = (data.draw(lists(st.booleans(), n)) if mode == "random" else [mode == "all"] * n)
        subset = bytearray((n + 7) // 8)
        for j, b in enumerate(bits):
            if b:
                subset[j >> 3] |= 1 << (j & 7)
        if n & 7 and data.draw(st.booleans()):
            subset[-1] |= 0xFF << (n & 7) & 0xFF  # bits past n must be ignored
        m = sum(bits)
    scores = array(tc, data.draw(lists(st.integers(lo, lim), m)))
    thr = data.draw(st.sampled_from([lo, -lim, 0, 1, lim, lim + 1]) | st.integers(lo, lim + 1))
    return scores, subset, thr, lim


class Sanitized:
    """The property tests, collected only in the sanitized child (python_classes=Sanitized)."""

    def test_compact_scores_never_read_past_the_bitmap(self):
        """A PRIOT-S row starting mid-byte (row 1 of 3-input rows, bits 3..5) in a one-byte
        bitmap: the compact index of input 1 needs bit 3 only, not the byte after it."""
        same("fc_score_s8", a8([1, 1]), a8([1, 1, 1]), a8([1] * 6), array("b", [0] * 6), bytearray([0x3F]),
             1, 127, 3, 2, outs=(3,))

    # ---------------------------------------------------------- channel ranges --

    @settings(max_examples=300)
    @given(st.sampled_from(sorted(kernels.RANGED)), st.data())
    def test_channel_ranges(self, name, data):
        """A random [c0, c1) of every ranged kernel (cases of tests/device/test_kernels.py):
        C writes exactly what kernels_py and kernels_np write, inside the range only."""
        args, pos, _ = ranged_call(data, name)
        count = args[kernels.RANGED[name][1]]
        c0 = data.draw(st.integers(0, count))
        same(name, *args, c0, data.draw(st.integers(c0, count) | st.none()), outs=(pos,))

    # ---------------------------------------------------------- scalar helpers --

    @given(st.integers(0, 2**32 - 1), st.integers(1, 2**32 - 1))
    def test_udiv(self, a, b):
        assert lib.pt_udiv_u32(a, b) == a // b

    @given(st.integers(0, 2**32 - 1))
    def test_bitlen_u32(self, x):
        assert lib.pt_bitlen_u32(x) == x.bit_length()

    # -------------------------------------------------------------- elementwise --

    @settings(max_examples=150)
    @given(st.lists(i32, max_size=40), shifts)
    def test_bitlen_and_requant(self, vals, shift):
        n = len(vals)
        same("bitlen_s32", a32(vals), n)
        r, (out,) = same("requant_s32_s8", a32(vals), a8([0] * n), n, shift, outs=(1,), numpy=0 <= shift <= 62)
        assert all(-127 <= v <= 127 for v in array("b", out))

    @settings(max_examples=150)
    @given(st.data())
    def test_bias_add(self, data):
        c = data.draw(st.integers(0, 4))
        plane = data.draw(st.integers(0, 6))
        acc = data.draw(lists(i32, c * plane))
        bias = data.draw(lists(i32, c))
        d = data.draw(st.one_of(st.integers(-64, 64), st.sampled_from([-33, -32, -31, 0, 1, 30, 31, 32, 33])))
        # numpy's int64 shifts stop at 63 bits: it mirrors only the small shifts
        same("bias_add_s32", a32(acc), a32(bias), c, plane, d, outs=(0,), numpy=-62 <= d <= 31)

    @settings(max_examples=150)
    @given(st.data())
    def test_acc_add(self, data):
        n = data.draw(st.integers(0, 20))
        acc = data.draw(lists(i32, n))
        g = data.draw(lists(i32, n))
        sa, sg = data.draw(shifts), data.draw(shifts)
        same("acc_add_s32", a32(acc), a32(g), n, sa, sg, outs=(0,), numpy=sa <= 62 and sg <= 62)

    @settings(max_examples=200)
    @given(st.data())
    def test_update(self, data):
        n = data.draw(st.integers(0, 30))
        w = data.draw(lists(i8, n))
        g = data.draw(lists(i32, n))
        shift = data.draw(shifts)
        r, (wo,) = same("update_s8", a8(w), a32(g), n, shift, outs=(0,), numpy=shift <= 62)
        assert all(-127 <= v <= 127 for v in array("b", wo))

    @settings(max_examples=300)
    @given(st.data())
    def test_update_outer(self, data):
        """Sparse rows and inputs (the list and its chunks of 64), -128 weights at
        every alignment (the word scan), and row ranges."""
        n_in = data.draw(st.integers(0, 150) | st.sampled_from([63, 64, 65, 128, 129]))
        n_out = data.draw(st.integers(0, 6))
        sparse = st.sampled_from([0, 0, 0, -128, 127, 1, -1]) | i8
        x = data.draw(lists(sparse, n_in))
        e = data.draw(lists(sparse, n_out))
        w = data.draw(lists(st.sampled_from([-128, -127, 127]) | i8, n_in * n_out))
        mu = data.draw(st.integers(0, 7))
        c0 = data.draw(st.integers(0, n_out))
        c1 = data.draw(st.integers(c0, n_out))
        same("update_outer_s8", a8(e), a8(x), a8(w), n_out, n_in, mu, c0, c1, outs=(2,))

    @settings(max_examples=400)
    @given(st.data())
    def test_rescale(self, data):
        """Every shift 0..62 and mul 0..65535: the fast 32-bit way, the early saturation and
        the two-limb way of rescale.c against the exact Python product."""
        n = data.draw(st.integers(0, 24))
        acc = data.draw(lists(i32 | st.integers(-2**16, 2**16) | st.integers(-2**8, 2**8), n))
        mul = data.draw(st.integers(0, 0xFFFF) | st.sampled_from([0, 1, 2, 3, 0x8000, 0xFFFF, 0xFFFE, 0x8001])
                        | st.builds(lambda m, s: m << s, st.integers(1, 255), st.integers(0, 8)))
        shift = data.draw(st.integers(0, 62) | st.sampled_from([0, 1, 16, 17, 23, 24, 31, 32, 47, 48, 62]))
        r, (out,) = same("rescale_s32_s8", a32(acc), a8([9] * n), n, mul, shift, outs=(1,))
        assert all(-127 <= v <= 127 for v in array("b", out))

    @settings(max_examples=300)
    @given(st.data())
    def test_topk_abs(self, data):
        n = data.draw(st.integers(0, 40))
        width = data.draw(st.sampled_from([1, 2, 8, 20, 31]))
        g = data.draw(lists(st.integers(-2**width, min(2**width, I32_MAX)) | st.sampled_from(EDGES32), n))
        k = data.draw(st.integers(0, n) | st.sampled_from([0, n]))
        r, (idx, gb) = same("topk_abs_s32", a32(g), n, k, a32([-1] * k), outs=(3, 0))
        assert gb == bytes(a32(g))  # g unchanged

    @given(st.lists(i8, max_size=60))
    def test_relu_and_backward(self, vals):
        n = len(vals)
        same("relu_s8", a8(vals), n, outs=(0,))
        same("relu_bwd_s8", a8(vals), a8(list(reversed(vals))), n, outs=(1,))

    # ------------------------------------------------------------------- linear --

    @settings(max_examples=150)
    @given(st.data())
    def test_fc_family(self, data):
        n_in = data.draw(st.integers(0, 17))
        n_out = data.draw(st.integers(0, 9))
        full = data.draw(st.booleans())  # all -128: the largest products
        x = [-128] * n_in if full else data.draw(lists(i8, n_in))
        e = [-128] * n_out if full else data.draw(lists(i8, n_out))
        w = [-128] * (n_in * n_out) if full else data.draw(lists(i8, n_in * n_out))
        same("fc_s8_s32", a8(x), a8(w), a32([7] * n_out), n_in, n_out, outs=(2,))
        same("fc_t_s8_s32", a8(e), a8(w), a32([7] * n_in), n_in, n_out, outs=(2,))
        same("outer_s8_s32", a8(e), a8(x), a32([7] * (n_in * n_out)), n_out, n_in, outs=(2,))

    # --------------------------------------------------------------------- conv --

    @settings(max_examples=120)
    @given(st.data())
    def test_conv_family(self, data):
        g, oh, ow = conv_case(data)
        c_in, h, wd, c_out, k, stride, pad = g
        full = data.draw(st.booleans())
        nx, nw, no = c_in * h * wd, c_out * c_in * k * k, c_out * oh * ow
        x = [-128] * nx if full else data.draw(lists(i8, nx))
        w = [-128] * nw if full else data.draw(lists(i8, nw))
        e = [-128] * no if full else data.draw(lists(i8, no))
        npy = c_in > 0 and c_out > 0  # kernels_np's reshapes need channels; kernels_py does not
        same("conv2d_s8_s32_chw", a8(x), a8(w), a32([7] * no), *g, outs=(2,), numpy=npy)
        same("conv2d_t_s8_s32_chw", a8(e), a8(w), a32([7] * nx), *g, outs=(2,), numpy=npy)
        same("conv2d_grad_s8_s32_chw", a8(e), a8(x), a32([7] * nw), *g, outs=(2,), numpy=npy)

    # ----------------------------------------------------------------- pooling --

    @settings(max_examples=120)
    @given(st.integers(0, 3), st.integers(0, 9), st.integers(0, 9), st.integers(1, 4), st.booleans(),
           st.integers(0, 1), st.data())
    def test_maxpool(self, c, h, wd, k, with_idx, relu, data):
        oh, ow = h // k, wd // k
        n = c * oh * ow
        x = data.draw(lists(st.integers(-3, 3) | i8, c * h * wd))  # many ties
        idx = bytearray(n) if with_idx else None
        _, (o,) = same("maxpool2d_s8_chw", a8(x), a8([9] * n), idx, c, h, wd, k, relu, outs=(1,))
        idx = bytearray(n)
        _, (o, idx) = same("maxpool2d_s8_chw", a8(x), a8([9] * n), idx, c, h, wd, k, relu, outs=(1, 2))
        e = data.draw(lists(i8, n))
        y = a8(o) if relu else data.draw(st.none() | lists(i8, n).map(a8))
        same("maxpool2d_bwd_s8_chw", a8(e), bytearray(idx), a8([9] * (c * h * wd)), c, h, wd, k, y, outs=(2,))

    # --------------------------------------------------------------------- loss --

    @settings(max_examples=150)
    @given(st.lists(i8, min_size=1, max_size=12), st.integers(-40, 40), st.data())
    def test_softmax_xent_and_argmax(self, z, exp, data):
        n = len(z)
        label = data.draw(st.integers(0, n - 1))
        same("softmax_xent_s8", a8(z), n, exp, label, a8([0] * n), a32([0] * n), outs=(4, 5))
        same("argmax_s8", a8(z), n)

    # --------------------------------------------------------- edge-popup (PRIOT) --

    @settings(max_examples=150)
    @given(st.data())
    def test_masked_fc_and_scores(self, data):
        n_in = data.draw(st.integers(0, 9))
        n_out = data.draw(st.integers(0, 6))
        n = n_in * n_out
        w = data.draw(lists(i8, n))
        x = data.draw(lists(i8, n_in))
        e = data.draw(lists(i8, n_out))
        scores, subset, thr, lim = mask_case(data, n)
        no_mask = data.draw(st.integers(0, 5)) == 0
        sc = None if no_mask else scores
        same("mask_s8", a8(w), sc, subset, thr, a8([9] * n), n, outs=(4,))
        same("fc_mask_s8_s32", a8(x), a8(w), sc, subset, thr, a32([7] * n_out), n_in, n_out, outs=(5,))
        same("fc_t_mask_s8_s32", a8(e), a8(w), sc, subset, thr, a32([7] * n_in), n_in, n_out, outs=(5,))
        shift = data.draw(shifts.filter(lambda s: s >= 0))
        smax = data.draw(st.sampled_from([0, 1, lim]) | st.integers(0, lim))
        ok = shift <= 62
        same("fc_score_s8", a8(e), a8(x), a8(w), array(scores.typecode, scores), subset, shift, smax, n_in, n_out,
             outs=(3,), numpy=ok)
        g = a32([0] * n)
        PY.outer_s8_s32(a8(e), a8(x), g, n_out, n_in)
        same("score_update_s8", array(scores.typecode, scores), subset, g, a8(w), shift, smax, n, outs=(0,),
             numpy=ok)

    @settings(max_examples=100)
    @given(st.data())
    def test_masked_conv_and_scores(self, data):
        g, oh, ow = conv_case(data)
        c_in, h, wd, c_out, k, stride, pad = g
        nx, nw, no = c_in * h * wd, c_out * c_in * k * k, c_out * oh * ow
        x = data.draw(lists(i8, nx))
        w = data.draw(lists(i8, nw))
        e = data.draw(lists(i8, no))
        scores, subset, thr, lim = mask_case(data, nw)
        npy = c_in > 0 and c_out > 0
        same("conv2d_mask_s8_s32_chw", a8(x), a8(w), scores, subset, thr, a32([7] * no), *g, outs=(5,), numpy=npy)
        same("conv2d_t_mask_s8_s32_chw", a8(e), a8(w), scores, subset, thr, a32([7] * nx), *g, outs=(5,),
             numpy=npy)
        shift = data.draw(shifts.filter(lambda s: s >= 0))
        smax = data.draw(st.integers(0, lim))
        same("conv2d_score_s8_chw", a8(e), a8(x), a8(w), scores, subset, shift, smax, *g, outs=(3,),
             numpy=npy and shift <= 62)

    @settings(max_examples=200)
    @given(st.data())
    def test_fused_conv_requant(self, data):
        """issue 8: conv + bias + requant in one kernel, a channel range, scratch of one plane or
        more (several channels a pass), every kind of mask; mostly-zero inputs take the sparse
        path, whose first pass keeps its lists in the last pass's output bytes for the others."""
        g, oh, ow = conv_case(data)
        c_in, h, wd, c_out, k, stride, pad = g
        nx, nw, no = c_in * h * wd, c_out * c_in * k * k, c_out * oh * ow
        x = data.draw(lists(i8, nx))
        keep = data.draw(st.sampled_from([1, 3, 9]))
        x = [v if j % keep == 0 else 0 for j, v in enumerate(x)]
        w = data.draw(lists(i8, nw))
        scores, subset, thr, _ = mask_case(data, nw) if data.draw(st.booleans()) else (None, None, 0, 0)
        bias = data.draw(st.none() | lists(i32, c_out))
        shift = data.draw(shifts.filter(lambda s: s <= 64))
        d = data.draw(st.integers(-64, 64))
        c0 = data.draw(st.integers(0, c_out))
        c1 = data.draw(st.none() | st.integers(c0, c_out))
        acc = a32([7] * max(1, oh * ow * data.draw(st.integers(1, c_out + 1))))
        same("conv2d_mask_s8_s8_chw", a8(x), a8(w), scores, subset, thr, a8([9] * no), acc, *g, shift,
             None if bias is None else a32(bias), d, c0, c1, outs=(5,),
             numpy=c_in > 0 and c_out > 0 and shift <= 62)

    @settings(max_examples=300)
    @given(st.data())
    def test_score_step_is_exact_for_every_int32_gradient(self, data):
        """g * w beyond int32 (|g| >= 2^24): the C kernel's 32-bit exact path."""
        n = data.draw(st.integers(1, 8))
        tc = data.draw(st.sampled_from("bh"))
        lim = 127 if tc == "b" else 32767
        big = st.one_of(st.integers(2**23, 2**31 - 1), st.integers(I32_MIN, -2**23), st.sampled_from(EDGES32))
        g = data.draw(lists(big, n))
        w = data.draw(lists(st.one_of(i8, st.sampled_from([-128, 127, -1, 1, 0])), n))
        scores = array(tc, data.draw(lists(st.integers(-lim - 1, lim), n)))
        shift = data.draw(st.one_of(st.integers(0, 64), st.sampled_from([16, 17, 24, 31, 32, 38, 39, 47, 48])))
        smax = data.draw(st.sampled_from([0, lim]) | st.integers(0, lim))
        same("score_update_s8", scores, None, a32(g), a8(w), shift, smax, n, outs=(0,), numpy=shift <= 62)

    @given(st.binary(max_size=24) | st.binary(min_size=120, max_size=300)
           | st.integers(1, 300).map(lambda n: b"\xff" * n), st.data())
    def test_popcount_range(self, bits, data):
        """Short ranges bit by bit; long ones (over 31 words: the word loop's byte
        sums are added up every 31 words, all ones is their largest) a word at a time."""
        j0 = data.draw(st.integers(0, 8 * len(bits)))
        n = data.draw(st.integers(0, 8 * len(bits) - j0))
        with Heap() as m:
            got = lib.pt_popcount_range(m.buf(bytearray(bits)), j0, n)
        assert got == sum((bits[j >> 3] >> (j & 7)) & 1 for j in range(j0, j0 + n))

    @given(st.binary(min_size=1, max_size=40), st.sampled_from("bh"), st.data())
    def test_mask_range_of_compact_scores(self, bits, tc, data):
        """pt_mask_range_s8 with compact scores, as the convolutions call it a channel at a
        time: edges j0 .. j0 + n of a view starting at bit edge0, at any alignment (the
        pruned edges found 32 at a time by pt_pruned_bits), w and out at any alignment
        (the copy a word at a time when both are 4-aligned); returns the next score index."""
        edge0 = data.draw(st.integers(0, 8 * len(bits) - 1))
        j0 = data.draw(st.integers(0, 8 * len(bits) - 1 - edge0))
        n = data.draw(st.integers(0, 8 * len(bits) - edge0 - j0))
        scored = [(bits[b >> 3] >> (b & 7)) & 1 for b in range(8 * len(bits))]
        m = sum(scored[edge0:])
        lim = 127 if tc == "b" else 32767
        scores = array(tc, data.draw(lists(st.integers(-lim - 1, lim), m)))
        thr = data.draw(st.integers(-lim, lim))
        w = data.draw(lists(i8, n))
        off = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
        si = si0 = sum(scored[edge0:edge0 + j0])
        want = []
        for t in range(n):
            keep = True
            if scored[edge0 + j0 + t]:
                keep = scores[si] >= thr
                si += 1
            want.append(w[t] if keep else 0)
        wb, ob = bytearray(off[0] + n), bytearray(off[1] + n)
        wb[off[0]:] = bytes(a8(w))
        with Heap() as h:
            sc = Scores(h.buf(scores) if m else None, h.buf(bytearray(bits)), 1 if tc == "h" else 0, edge0)
            pw, po = h.buf(wb), h.buf(ob)
            got_si = lib.pt_mask_range_s8(pw + off[0], ctypes.byref(sc), thr, j0, si0, po + off[1], n)
        assert (list(array("b", bytes(ob[off[1]:]))), got_si) == (want, si)
