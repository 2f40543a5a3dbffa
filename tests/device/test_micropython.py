"""Tier 2: the same device package under the MicroPython unix port, bit for bit
with the CPython mirror; training steps under micropython.heap_lock()."""
import pytest


METHODS = ["NITI", "StaticNITI", "PRIOT", "PRIOTS", "PRIOTS-w",
           "TinTin", "TinTin-b", "FQT", "PartialFQT", "PartialFQT-b"]  # issue 5: the last five


@pytest.mark.parametrize("cores", [1, 2])  # issue 8: two cores (cores.py), every call split
@pytest.mark.parametrize("method", METHODS)
def test_fixed_seed_run_matches_mirror(niti_run, method, cores):
    """The unix port, and both CPython backends, give the one-core numpy mirror's bits."""
    on = () if cores == 1 else (str(cores),)
    one = niti_run.cpython(method, "numpy", "40")
    assert niti_run.micropython(method, "python", "40", *on) == one
    assert niti_run.cpython(method, "python", "40", *on) == one
    assert niti_run.cpython(method, "numpy", "40", *on) == one
    assert "crc" in one


@pytest.mark.parametrize("cores", [1, 2])
def test_step_allocates_nothing(locked_steps, cores):
    cases, backend = locked_steps("python", cores=cores)
    assert backend == "python" + ("" if cores == 1 else ", %d cores" % cores)
    assert cases == [(m, b) for m in ("NITI", "StaticNITI", "PRIOT", "PRIOTS", "TinTin", "FQT", "PartialFQT")
                     for b in (1, 2)]


def test_step_holds_the_heap_lock_and_always_releases_it(step_lock):
    """issue 8: Trainer.step (and TinTin's) runs under micropython.heap_lock(): an
    allocation in it raises MemoryError; an exception, KeyboardInterrupt included,
    leaves the heap unlocked; a bad buffer still gets the kernel's own error."""
    cases, backend = step_lock("python")
    assert backend == "python"
    for method in ("NITI", "PRIOTS", "TinTin"):
        assert cases[method + "-allocates"] == (0, "MemoryError memory allocation failed, heap is locked")
        assert cases[method + "-interrupted"] == (0, "KeyboardInterrupt")
        assert cases[method + "-short-weights"][0] == 0
        assert cases[method + "-short-weights"][1].startswith("IndexError")  # kernels_py's own
        assert cases[method + "-mended"] == (0, "-")


def test_model_file_crosses_implementations(micropython, tmp_path):
    """Saved under MicroPython, loaded on CPython (and back), same bytes."""
    micropython("""
from array import array
import picotrain as pt
m = pt.Model([pt.Conv2d(1, 2, 3, bias=True), pt.Flatten(), pt.Linear(8, 3)], (1, 4, 4))
for l in m.param_layers():
    l.weight.data = array('b', [(j * 37) % 61 - 30 for j in range(l.weight.size)])
    l.weight.exp = -6
m.layers[0].bias[1] = -77777
m.layers[0].shift = 2
m.meta = {'k': 1}
m.save('mp.pt8')
m2 = pt.load('mp.pt8')
m2.save('mp2.pt8')
print(m2.predict(array('b', range(16))))
""", cwd=str(tmp_path))
    import picotrain as pt  # the mirror (tests/conftest.py puts device/ on sys.path)
    m = pt.load(str(tmp_path / "mp.pt8"))
    assert m.layers[0].bias[1] == -77777 and m.meta == {"k": 1}
    p = str(tmp_path / "cp.pt8")
    m.save(p)
    assert open(p, "rb").read() == (tmp_path / "mp.pt8").read_bytes() == (tmp_path / "mp2.pt8").read_bytes()
