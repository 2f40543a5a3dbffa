"""Tier 4 for the kernels (issue 8): the armv6m build of natmod/kernels, bare metal on the
emulated RP2040 (benchmarks/rp2040 + benchmarks/kbench).

- The harness gives a hand-written loop exactly its count by construction.
- The Thumb-1 inline assembly of the armv6m build (which the host sanitizer and unix-port tests
  never run: they build the C loops) is bit-exact with kernels_py on seeded random calls, with
  int8 buffers at aligned and at odd addresses, and those calls do reach every assembly loop.
- The real binding.c runs on the emulator (bind_driver.c) and gives the mirror's bits.
- A small-shape run of benchmarks/kernels.py works and every call in it is bit-exact.
No timing thresholds: speed is what the benchmark reports, not what a test enforces.
"""

import bisect
import subprocess
import sys
import textwrap
from array import array
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "rp2040"))

pytest.importorskip("rp2040py", reason="the rp2040py emulator is not installed")
harness = pytest.importorskip("harness")

from kbench import emu, fuzz, glue  # noqa: E402
from picotrain import kernels_py as PY  # noqa: E402

# The Thumb-1 inline-assembly loops of the armv6m build.
ASM_LOOPS = ("gather5_rows", "scatter5_rows", "block4_k5", "dot4_list", "dot2_list_masked", "update_items", "idle_run",
             "update_list", "or_abs4", "requant3", "add_rows2", "score_steps_m0", "score_bits_s8", "score_bits_x_s8")


@pytest.fixture(scope="module")
def image():
    try:
        return emu.build_image()
    except harness.ToolchainMissing as e:
        pytest.skip(str(e))


LOOP_S = textwrap.dedent("""\
    .syntax unified
    .cpu cortex-m0plus
    .thumb
    @ r0 = n >= 1. Per iteration: muls 1 + muls 1 + adds 1 + subs 1 + bne 2 (taken) = 6,
    @ the last bne not taken (1); the window is blx 2 + the loop + bx lr 2: 6 n + 3.
    .global kc_loop
    .thumb_func
kc_loop:
1:  muls r1, r2
    muls r1, r2
    adds r3, #1
    subs r0, #1
    bne 1b
    bx lr
""")


@pytest.mark.parametrize("n", [1, 7, 100])
def test_harness_gives_a_hand_written_loop_its_count(tmp_path, n):
    src = tmp_path / "loop.S"
    src.write_text(LOOP_S)
    try:
        res = harness.run([src], "kc_loop", [n], trace=True)
    except harness.ToolchainMissing as e:
        pytest.skip(str(e))
    assert res.cycles == [6 * n + 3]
    assert res.trm_cycles == [6 * n + 3]


def _base(name):
    """A function's name without the suffix of a GCC clone (requant3.constprop.0)."""
    return name.split(".")[0]


def test_armv6m_build_has_the_assembly_loops(image):
    have = {_base(n) for n in image.functions}
    for name in ASM_LOOPS:
        assert name in have, name


def test_assembly_kernels_bit_exact_on_random_calls(image):
    cases = fuzz.calls(seed=8, n_conv=16, n_fc=8, n_elem=6)
    bad = fuzz.check(image, cases, aligns=(4, 1))
    assert not bad, ["%s align %d: %s" % (name, align, problems) for name, _, align, problems in bad[:10]]


def test_assembly_kernels_bit_exact_on_channel_ranges(image):
    """Two cores split calls by channel range: the halves run the same loops on views."""
    cases = fuzz.ranged(fuzz.calls(seed=9, n_conv=16, n_fc=8, n_elem=6), seed=9)
    bad = fuzz.check(image, cases, aligns=(4, 1))
    assert not bad, ["%s align %d: %s" % (name, align, problems) for name, _, align, problems in bad[:10]]


def test_random_calls_reach_every_assembly_loop(image):
    """The bit-exact test above means something only if its calls run the assembly."""
    funcs = sorted((a & ~1, _base(n)) for n, a in image.symbols.items() if n in image.functions)
    starts = [a for a, _ in funcs]
    hit = set()
    for name, args in fuzz.calls(seed=8, n_conv=16, n_fc=8, n_elem=2):
        entry, cargs, _ = emu._plan(name, args)
        res = harness.run_image(image, entry, cargs, trace=True)
        hit |= {funcs[bisect.bisect_right(starts, pc) - 1][1] for pc in res.profiles[0]}
    assert set(ASM_LOOPS) <= hit, set(ASM_LOOPS) - hit


def test_real_binding_runs_on_the_emulator_bit_exact():
    try:
        bind = emu.build_binding_image()
    except harness.ToolchainMissing as e:
        pytest.skip(str(e))
    x = array("b", [(j * 37) % 251 - 125 for j in range(300)])
    w = array("b", [(j * 53) % 241 - 120 for j in range(25 * 3 * 2)])
    args = [x[:3 * 10 * 10], w, array("i", [0] * (2 * 6 * 6)), 3, 10, 10, 2, 5, 1, 0]
    cycles, res = glue.binding_cycles(bind, "conv2d_s8_s32_chw", args)
    ref = [array(a.typecode, a) if isinstance(a, array) else a for a in args]
    PY.conv2d_s8_s32_chw(*ref)
    # kb_bind's buffers are the call's, in order: x, w, out
    assert res.buffers[3] == bytes(ref[2])
    assert cycles > 0


def test_small_shape_benchmark_runs_bit_exact():
    p = subprocess.run([sys.executable, str(BENCH / "kernels.py"), "--quick",
                        "--methods", "StaticNITI,PRIOT,PRIOT-S p=0.5"],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "## Training step per method" in out and "## Per kernel: one PRIOT step" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "` |" in line]
    assert len(rows) > 60
    assert all(line.rstrip().endswith("| yes |") for line in rows), [r for r in rows if "NO" in r][:5]
