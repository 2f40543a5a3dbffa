"""Coverage-guided fuzzing of the native bindings (binding_fuzz.c, binding_fuzz.py): a short
libFuzzer run over the real natmod/kernels/binding.c under ASan and UBSan finds nothing, and
the same harness does find bugs planted in a copy of binding.c.

Longer run: .venv/bin/python tests/reliability/binding_fuzz.py --seconds 900 (docs/RELIABILITY.md).
"""
import os
import re

import pytest

import binding_fuzz as F

RUNS = int(os.environ.get("PICOTRAIN_FUZZ_RUNS", "50000"))


@pytest.fixture(scope="module")
def have_clang():
    if F.clang() is None:
        if os.environ.get("CI"):
            pytest.fail("clang is missing on CI: ./run setup installs clang and libclang-rt-14-dev")
        pytest.skip("clang is not installed (Debian clang and libclang-rt-14-dev; ./run setup installs them)")


def test_short_run_finds_nothing(have_clang):
    rc, out, fig = F.run(F.build(), runs=RUNS)
    assert rc == 0, out[-3000:]
    assert fig["runs"] == RUNS and fig["crashes"] == 0
    assert fig["functions"] >= 27  # every kernel of the module table, found by mpy_init


# Each mutation removes one check of binding.c; the harness must catch the consequence. An
# access past a buffer's end is a heap-buffer-overflow, or a use-after-poison when it hits the
# poisoned byte the harness puts after every buffer.
PLANTED = {
    "length": ("if (items < (size_t)need) {", "if (0) {",
               r"AddressSanitizer: (heap-buffer-overflow|use-after-poison)"),
    "alignment": ("if ((uintptr_t)bi.buf & align) {", "if (0) {", r"runtime error: .*misaligned address"),
    "message": ('"%s: %s must be in [%d, %d], got %d", 5, it', '"%s: %s must be in [%d, %d], got %d", 4, it',
                r"binding_fuzz: message format"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_planted_bug_is_caught(have_clang, bug, tmp_path):
    old, new, report = PLANTED[bug]
    text = (F.KERNELS / "binding.c").read_text()
    assert text.count(old) == 1, "binding.c changed: update the planted bug %r" % bug
    (tmp_path / "binding.c").write_text(text.replace(old, new))
    rc, out, fig = F.run(F.build(tmp_path, tmp_path / "build"), runs=500000, cwd=str(tmp_path))
    assert rc != 0 and re.search(report, out), out[-3000:]
    assert re.search(r"crash-[0-9a-f]+", out)  # libFuzzer kept the input that shows it
