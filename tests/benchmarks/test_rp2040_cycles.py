"""The RP2040 cycle harness (benchmarks/rp2040): exact hand-counted timings of known loops,
and correct results from C kernels run bare metal on the emulated chip."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "rp2040"
ABI_KERNELS = Path(__file__).resolve().parent / "abi_kernels.c"

pytest.importorskip("rp2040py", reason="the rp2040py emulator is not installed")


def _load(name):
    # By path, under a distinct name: benchmarks/ is not a package, and "harness" is generic.
    spec = importlib.util.spec_from_file_location(f"rp2040_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
loops = _load("loops")
Buf = harness.Buf


def int8s(rng, n):
    """n random int8 values, the extremes included."""
    return [-128, 127, -128, -1][:n] + [rng.randint(-128, 127) for _ in range(n - 4)]


def as_bytes(values):
    return bytes(v & 0xFF for v in values)


@pytest.fixture(scope="module", autouse=True)
def loop_image():
    """The loops' image; building it first skips every test here if the toolchain is missing."""
    try:
        return harness.build([loops.SOURCE])
    except harness.ToolchainMissing as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("loop", loops.LOOPS, ids=lambda loop: loop.name)
@pytest.mark.parametrize("n", [1, 37])
def test_loop_costs_its_hand_count(loop_image, loop, n):
    args = [n, Buf(size=32)] if loop.buffer else [n]
    res = harness.run_image(loop_image, loop.name, args, trace=True)
    assert res.cycles == [loop.emulator(n)]
    if loop.trm_traceable:
        assert res.trm_cycles == [loop.trm(n)]


def test_dot_s8_value_and_cycles_per_mac():
    image = harness.build([BENCH / "dot_s8.c"])
    rng = random.Random(1)
    per_call = {}
    for n in (40, 300):
        a, b = int8s(rng, n), int8s(rng, n)
        res = harness.run_image(image, "dot_s8", [Buf(as_bytes(a)), Buf(as_bytes(b)), n],
                                trace=True)
        assert res.ret == sum(x * y for x, y in zip(a, b))
        assert res.buffers == [as_bytes(a), as_bytes(b)]
        # The loop has no PUSH/POP, so rp2040py and the TRM may differ only by the one
        # frame: 1 cycle per PUSH {.., lr} and per POP {.., pc} (see mb_call_frame).
        frame = sum(count for pc, (count, _) in res.profiles[0].items()
                    if image.halfword(pc) >> 8 in (0xB5, 0xBD))
        assert res.cycles[0] == res.trm_cycles[0] - frame
        per_call[n] = res.cycles[0]
    per_mac = (per_call[300] - per_call[40]) / (300 - 40)
    assert per_mac == int(per_mac)


def test_repeated_calls_cost_the_same():
    n = 64
    res = harness.run([BENCH / "dot_s8.c"], "dot_s8", [Buf(size=n), Buf(size=n), n], reps=3)
    assert len(res.cycles) == 3 and len(set(res.cycles)) == 1


def test_fc_output_buffer_is_bit_exact():
    rng = random.Random(2)
    n_in, n_out = 19, 5
    x, w = int8s(rng, n_in), int8s(rng, n_in * n_out)
    res = harness.run([ABI_KERNELS], "fc_s8_s32",
                      [Buf(as_bytes(x)), Buf(as_bytes(w)), Buf(size=4 * n_out), n_in, n_out])
    want = [sum(x[i] * w[o * n_in + i] for i in range(n_in)) for o in range(n_out)]
    out = res.buffers[2]
    assert [int.from_bytes(out[4 * o:4 * o + 4], "little", signed=True)
            for o in range(n_out)] == want


def test_stack_arguments_arrive_in_order():
    args = [5, -7, 11, 100000, -3, 2, 9, -40000, 1]
    res = harness.run([ABI_KERNELS], "weigh9", args)
    assert res.ret == sum(a * k for a, k in zip(args, (1, 3, 5, 7, 11, 13, 17, 19, 23)))


def test_out_of_bounds_write_is_reported():
    with pytest.raises(harness.HarnessError, match="outside its buffers"):
        harness.run([ABI_KERNELS], "write_past_end", [Buf(size=8), 8])


def test_trap_is_reported():
    with pytest.raises(harness.HarnessError, match="trap"):
        harness.run([ABI_KERNELS], "trap")
