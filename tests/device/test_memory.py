"""memory_plan: the bytes a trainer will allocate, stated before it allocates them.

For every method (NITI, StaticNITI, PRIOT, PRIOTS with both selections and 16-bit
scores), batch 1 and > 1, freeze/head_only, and scores kept from a model file:
memory_plan == Trainer.nbytes() == the bytes of the buffers the trainer really holds
(found by walking the objects it references). The dry run allocates none of them and
leaves the model as it was; a trainer that cannot fit raises MemoryError naming bytes
needed and free, on CPython (free heap stubbed) and under the MicroPython unix port
with a small heap.
"""
import gc
import tracemalloc
from array import array

import pytest

import picotrain as pt
from picotrain import memory
from picotrain.rng import XorShift32

X = array("b", [(j * 7) % 100 for j in range(64)])


def model(seed=5, calibrated=True, bias=True):
    m = pt.Model([pt.Conv2d(1, 4, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Conv2d(4, 6, 3),
                  pt.ReLU(), pt.Flatten(), pt.Linear(24, 5, bias=bias)], (1, 8, 8))
    r = XorShift32(seed)
    for l in m.param_layers():
        l.weight.data = array("b", [r.below(81) - 40 for _ in range(l.weight.size)])
        l.weight.exp = -7
    if calibrated:
        pt.calibrate(m, [(X, 1), (array("b", reversed(X)), 3)])
        m._built = 0  # calibrate built training buffers; start as a freshly loaded model
    return m


CASES = [
    ("NITI", {}), ("NITI", {"batch": 4, "mu": 3}), ("NITI", {"head_only": True}),
    ("NITI", {"freeze": [0], "batch": 2}),
    ("StaticNITI", {}), ("StaticNITI", {"batch": 3}),
    ("PRIOT", {}), ("PRIOT", {"batch": 2}), ("PRIOT", {"score_bits": 16, "batch": 5}),
    ("PRIOT", {"head_only": True}),
    ("PRIOTS", {"p": 0.5}), ("PRIOTS", {"p": 0.3, "select": "weight", "batch": 2}),
    ("PRIOTS", {"p": 0.9, "score_bits": 16}),
]
# methods of other files (issue 5) state their buffers through _plan_nbytes: checked alike
EXTRA = [("TinTin", {}), ("TinTin", {"batch": 3}), ("FQT", {}), ("PartialFQT", {"batch": 2}),
         ("PartialFQT", {"head_only": True})]
BASE = list(CASES)
CASES += [(n, o) for n, o in EXTRA if hasattr(pt, n)]


def buffers(root, exclude_ids):
    """Bytes of every array/bytearray reachable from root through instances,
    lists, tuples and dicts, each counted once, except those in exclude_ids."""
    seen, total, stack = set(), 0, [root]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, (array, bytearray)):
            if id(o) not in exclude_ids:
                total += len(o) * (o.itemsize if isinstance(o, array) else 1)
            continue
        if isinstance(o, (list, tuple, set)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif hasattr(o, "__dict__") and not isinstance(o, type) and type(o).__module__.startswith("picotrain"):
            stack.extend(vars(o).values())
    return total


def held_before(m):
    """ids of the buffers the model owns before a trainer exists (weights, biases, scores)."""
    ids = set()
    for l in m.param_layers():
        for b in (l.weight.data, l.bias, l.scores, l.subset):
            if b is not None:
                ids.add(id(b))
    return ids


@pytest.mark.parametrize("name,opts", CASES, ids=["%s-%s" % (n, "-".join("%s%s" % kv for kv in o.items()))
                                                  for n, o in CASES])
def test_plan_equals_nbytes_equals_buffers(name, opts):
    m = model(bias=(name, opts) in BASE)  # TinTin trains bias-free networks
    plan = pt.memory_plan(m, name, detail=True, **opts)
    assert all(not l.frozen for l in m.param_layers())  # the dry run left freeze= undone
    assert m._built == 0
    before = held_before(m)
    t = getattr(pt, name)(m, **opts)
    assert plan["total"] == pt.memory_plan(m, getattr(pt, name), **opts) == t.nbytes()
    for i in range(3):
        t.step(X, i % 5)  # after a step the model reads the caller's x, not its placeholder
    new = buffers(t, before | {id(X)})
    kept = 0  # scores and subsets that existed before (none here) would count in nbytes
    assert new + kept == t.nbytes()
    assert plan["total"] == sum(v for k, v in plan.items() if k != "total")
    if name.startswith("PRIOT"):
        assert plan["scores"] > 0
    if opts.get("batch", 1) > 1:
        assert plan["gradients"] > 0


@pytest.mark.parametrize("name,opts", [("PRIOT", {}), ("PRIOTS", {"p": 0.4, "batch": 2})])
def test_scores_kept_from_a_model_file_count_once(tmp_path, name, opts):
    m = model()
    getattr(pt, name)(m, **opts).step(X, 2)
    m.save(str(tmp_path / "s.pt8"))
    m2 = pt.load(str(tmp_path / "s.pt8"))
    kept = sum(len(l.scores) * l.scores.itemsize + (len(l.subset) if l.subset is not None else 0)
               for l in m2.param_layers() if l.scores is not None)
    assert kept > 0
    plan = pt.memory_plan(m2, name, **opts)
    before = held_before(m2)
    t = getattr(pt, name)(m2, **opts)
    t.step(X, 1)
    assert plan == t.nbytes() == buffers(t, before | {id(X)}) + kept


def test_dry_run_allocates_no_buffer():
    big = pt.Model([pt.Flatten(), pt.Linear(784, 256), pt.ReLU(), pt.Linear(256, 10)], (1, 28, 28))
    for l in big.param_layers():
        l.shift = l.bshift = 8
        l.gbits = 12
    gc.collect()
    tracemalloc.start()
    try:
        n = pt.memory_plan(big, "PRIOT", batch=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 1_000_000  # scores 200 KB + gradients and scratch 3.2 MB + activations
    assert peak < 20_000, peak
    assert big._built == 0


def test_bad_options_raise_what_the_constructor_raises():
    m = model()
    for name, opts, msg in [("PRIOTS", {"p": 2.0}, "unscored fraction"), ("NITI", {"mu": 0}, "mu"),
                            ("PRIOT", {"score_bits": 4}, "score_bits"), ("NITI", {"batch": 0}, "batch"),
                            ("NITI", {"freeze": [1]}, "not a layer with parameters")]:
        with pytest.raises(ValueError, match=msg):
            pt.memory_plan(m, name, **opts)
        with pytest.raises(ValueError, match=msg):
            getattr(pt, name)(m, **opts)
    with pytest.raises(ValueError, match="needs static shifts"):
        pt.memory_plan(model(calibrated=False), "StaticNITI")
    with pytest.raises(ValueError, match="unknown training method 'Adam'"):
        pt.memory_plan(m, "Adam")


def test_a_method_states_its_buffers_and_nbytes_adds_them_up():
    class Plain(pt.NITI):  # inherits NITI's statement
        pass

    class Stated(pt.NITI):
        def _plan_nbytes(self):
            return {"gradients": 4 * sum(self.model.layers[i].grad_size() for i in self.train_idx),
                    "momentum": 123}

    m = model()
    assert pt.memory_plan(m, Plain) == Plain(m).nbytes() == pt.memory_plan(m, pt.NITI)
    m = model()
    plan = pt.memory_plan(m, Stated, detail=True)
    assert plan["momentum"] == 123 and plan["total"] == Stated(m).nbytes()


def test_memory_error_names_needed_and_free(monkeypatch):
    m = model()
    need = pt.memory_plan(m, "PRIOT", batch=2)
    monkeypatch.setattr(memory, "_free_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match=r"PRIOT needs %d bytes of training buffers \(\d+ still to allocate, "
                                          r"and about \d+ for the objects around them\) but only 1000 bytes "
                                          r"are free" % need):
        pt.PRIOT(m, batch=2)
    assert m._built == 0  # refused before allocating
    monkeypatch.setattr(memory, "_free_bytes", lambda: 10 * need)
    assert pt.PRIOT(m, batch=2).nbytes() == need
    # a second trainer on the same model reuses its buffers: only the method's are new
    monkeypatch.setattr(memory, "_free_bytes",
                        lambda: need - m.nbytes(training=True) + memory.allowance(m) + 100)
    pt.NITI(m, mu=3)


MP_PLAN = """
import gc
from array import array
import picotrain as pt
from picotrain.rng import XorShift32
X = array('b', [(j * 7) %% 100 for j in range(64)])
def model():
    m = pt.Model([pt.Conv2d(1, 4, 3, pad=1), pt.ReLU(), pt.MaxPool2d(2), pt.Conv2d(4, 6, 3),
                  pt.ReLU(), pt.Flatten(), pt.Linear(24, 5, bias=True)], (1, 8, 8))
    r = XorShift32(5)
    for l in m.param_layers():
        l.weight.data = array('b', [r.below(81) - 40 for _ in range(l.weight.size)])
        l.weight.exp = -7
    return m
cal = model()
pt.calibrate(cal, [(X, 1), (array('b', reversed(X)), 3)])
t = None
for name, opts in %r:
    t = None  # the previous trainer (and its model) go before measuring
    m = model()  # never built: the trainer allocates every buffer
    for a, b in zip(m.param_layers(), cal.param_layers()):
        a.shift, a.bshift, a.gbits = b.shift, b.bshift, b.gbits
    plan = pt.memory_plan(m, name, **opts)
    gc.collect()
    f0 = gc.mem_free()
    t = getattr(pt, name)(m, **opts)
    gc.collect()
    print(name, plan, t.nbytes(), f0 - gc.mem_free())
"""


def test_plan_on_micropython_equals_nbytes_and_heap_use(micropython):
    out = micropython(MP_PLAN % (BASE,))
    rows = [ln.split() for ln in out.splitlines()]
    assert [r[0] for r in rows] == [n for n, _ in BASE]
    for name, plan, nbytes, used in rows:
        plan, nbytes, used = int(plan), int(nbytes), int(used)
        assert plan == nbytes
        # the heap also holds the Tensor objects, lists and dicts around the buffers
        # (and the model's input placeholder), each rounded up to 32-byte GC blocks on x64:
        # the pre-flight check's allowance covers them
        assert plan <= used <= plan + memory.allowance(model()), (name, plan, used)


def test_memory_error_on_a_small_heap(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists():
        pytest.skip("no micropython unix port")
    script = """
import gc
import picotrain as pt
m = pt.Model([pt.Flatten(), pt.Linear(784, 64), pt.ReLU(), pt.Linear(64, 10)], (1, 28, 28))
for l in m.param_layers():
    l.shift = l.bshift = 8
    l.gbits = 12
print('plan', pt.memory_plan(m, 'PRIOT', batch=2))
try:
    pt.PRIOT(m, batch=2)
except MemoryError as e:
    print('MemoryError', e)
print('built', m._built)
"""
    dev = Path(__file__).resolve().parents[2] / "device"
    p = subprocess.run([str(exe), "-X", "heapsize=400k", "-c", script], capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=str(dev)), timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    plan = int(lines[0].split()[1])
    assert plan > 400_000
    assert lines[1].startswith("MemoryError PRIOT needs %d bytes of training buffers" % plan), lines
    assert "bytes are free after gc.collect()" in lines[1]
    assert lines[2] == "built 0"


def test_static_methods_plan_a_smaller_scratch_that_grows_for_dynamic_passes():
    """issue 8: static shifts fuse each convolution with its requantization, so StaticNITI,
    PRIOT and PRIOT-S plan an int32 scratch of only the backward pass and one output plane;
    a dynamic pass on the same model (forward(dynamic=True), calibrate) grows it first and
    gives the bits of a model built for dynamic passes from the start."""
    def acc_items(m, static):
        return [n for name, _, n in m.plan(True, static) if name == "acc"][0]
    dyn = memory.memory_plan(model(), "NITI", detail=True)["scratch"]
    for name in ("StaticNITI", "PRIOT", "PRIOTS"):
        assert memory.memory_plan(model(), name, detail=True)["scratch"] < dyn, name
    m = model()
    t = pt.PRIOT(m)
    t.step(X, 2)
    assert len(m.ws.acc) == acc_items(m, True) < acc_items(m, False)
    ref = model()  # the same weights and scores, never built for static passes only
    for lm, lr in zip(m.layers, ref.layers):
        if lm.has_params:
            lr.scores, lr.subset, lr.thr = array(lm.scores.typecode, lm.scores), lm.subset, lm.thr
    got, want = m.forward(X, dynamic=True), ref.forward(X, dynamic=True)
    assert len(m.ws.acc) == acc_items(m, False)
    assert (list(got.data), got.exp) == (list(want.data), want.exp)
    pt.calibrate(m, [(X, 1)])  # dynamic passes (with the error) over the grown scratch
