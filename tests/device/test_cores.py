"""Two cores (device/picotrain/cores.py): the split kernels give one core's bits.

On CPython the worker is a real thread; under the MicroPython unix port too (its
threads run native code in parallel). Fixed-seed runs of every method with two
cores equal the one-core mirror bit for bit, and a two-core step allocates
nothing on MicroPython (the worker holding its own heap lock): test_micropython.py,
for one core and two. Here: the splitter hands the upper half to the worker,
and errors there reach the caller."""
import threading
from array import array

import pytest

import picotrain as pt
from picotrain import cores, kernels, kernels_py


@pytest.fixture
def two_cores():
    """use_cores(2) splitting every call for one test, one core again after it."""
    pt.use_cores(2, min_work=0)
    yield
    pt.use_cores(1)


def test_use_cores_reports_and_rebinds(two_cores):
    assert pt.backend().endswith(", 2 cores")
    assert kernels.conv2d_s8_s32_chw is not kernels_py.conv2d_s8_s32_chw
    pt.use_backend("python")  # a new backend keeps the two cores
    assert pt.backend() == "python, 2 cores"
    pt.use_cores(1)
    assert pt.backend() == "python"
    assert kernels.conv2d_s8_s32_chw is kernels_py.conv2d_s8_s32_chw
    with pytest.raises(ValueError, match=r"use_cores: n must be 1 or 2, got 3"):
        pt.use_cores(3)
    with pytest.raises(ValueError, match=r"use_cores: min_work must be an int >= 0, got -1"):
        pt.use_cores(2, min_work=-1)


def _recording(seen, fail_above=None):
    """A kernel of 5 arguments (the count last) recording (c0, c1, thread) per call."""
    def kernel(out, a, b, c, count, c0=0, c1=None):
        seen.append((c0, c1, threading.get_ident()))
        c1 = count if c1 is None else c1
        if fail_above is not None and c0 >= fail_above:
            raise IndexError("half [%d, %d) failed" % (c0, c1))
        for j in range(c0, c1):
            out[j] = j
        return c1 - c0
    return kernel


def test_splitter_hands_the_upper_half_to_the_worker(two_cores):
    seen = []
    split = cores._splitter(_recording(seen), 5, 4, (4,), 1)
    out = array("i", [-1] * 7)
    assert split(out, 0, 0, 0, 7) == 7  # the halves' counts are summed
    assert list(out) == list(range(7))
    assert sorted(s[:2] for s in seen) == [(0, 3), (3, 7)]
    mine = {s[2] for s in seen if s[0] == 0}
    assert mine == {threading.get_ident()} and {s[2] for s in seen if s[0] == 3} != mine
    seen.clear()
    assert split(out, 0, 0, 0, 7, 2, 5) == 3  # the caller's own range: one call, here
    assert seen == [(2, 5, threading.get_ident())]


def test_an_error_in_the_worker_reaches_the_caller(two_cores):
    seen = []
    split = cores._splitter(_recording(seen, fail_above=1), 5, 4, (4,), 1)
    out = array("i", [0] * 4)
    with pytest.raises(IndexError, match=r"half \[2, 4\) failed"):
        split(out, 0, 0, 0, 4)
    # nothing left over: the next call that succeeds returns normally
    assert cores._splitter(_recording(seen), 5, 4, (4,), 1)(out, 0, 0, 0, 4) == 4


def test_small_calls_stay_on_one_core(two_cores):
    """Work below min_work (here 7 channels x 3 = 21 < 22) is not worth a hand-off."""
    seen = []
    split = cores._splitter(_recording(seen), 5, 4, (4, 1), 1)
    pt.use_cores(2, min_work=22)
    assert split(array("i", [0] * 7), 3, 0, 0, 7) == 7
    assert seen == [(0, None, threading.get_ident())]
    pt.use_cores(2, min_work=21)
    seen.clear()
    assert split(array("i", [0] * 7), 3, 0, 0, 7) == 7
    assert sorted(s[:2] for s in seen) == [(0, 3), (3, 7)]


def test_an_error_in_the_worker_reaches_the_caller_under_micropython(micropython):
    """The worker holds its heap lock; its exception still reaches the caller, and the next call works."""
    out = micropython("""
from array import array
import picotrain as pt
from picotrain import kernels as K
pt.use_backend("python")
pt.use_cores(2, min_work=0)
x, w = array('b', [1, 2]), array('b', [1] * 8)
try:
    K.fc_s8_s32(x, w, array('i', [0] * 3), 2, 4)  # the worker's half [2, 4) writes out[3]: too short
    print("no error")
except Exception as e:
    print("raised", type(e).__name__)
out = array('i', [0] * 4)
K.fc_s8_s32(x, w, out, 2, 4)
print(list(out))
""")
    assert out.split("\n")[:2] == ["raised IndexError", "[3, 3, 3, 3]"]


def test_fused_static_convolutions_split_with_the_workers_own_scratch(two_cores, request):
    """StaticNITI's forward convolutions are fused with the requantization and
    write an int32 scratch: the worker's halves get one of their own (the
    pure-Python kernel shows it; numpy's leaves the scratch alone)."""
    from tinymodels import cnn
    pt.use_backend("python")
    request.addfinalizer(lambda: pt.use_backend("auto"))
    m, data = cnn(3)
    pt.calibrate(m, data)
    pt.StaticNITI(m)
    assert "acc2" in [name for name, _, _ in m.plan(True, static=True)]
    assert cores._job.scratch is m._acc2 and len(m._acc2) == len(m.ws.acc)
    before = bytes(m._acc2)
    two = bytes(m.forward(data[0][0], dynamic=False).data)
    assert bytes(m._acc2) != before  # the worker's halves ran in it
    pt.use_cores(1)
    assert bytes(m.forward(data[0][0], dynamic=False).data) == two
    assert "acc2" not in [name for name, _, _ in m.plan(True, static=True)]
