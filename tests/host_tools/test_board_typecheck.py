"""The device package type-checks against MicroPython's rp2 stubs (host_tools/typecheck.py),
and the check bites: a module the Pico lacks, a wrong argument count, an undefined name."""
import pytest

from host_tools import typecheck


def run(**kw):
    try:
        return typecheck.run(**kw)
    except typecheck.TypecheckUnavailable as e:
        pytest.skip(str(e))


def test_device_package_type_checks_against_the_rp2_stubs():
    rc, out = run()
    assert rc == 0, out


def test_the_check_finds_what_a_pico_does_not_have():
    rc, out = run(extra_files={"canary.py": (
        "import time\n"
        "import pathlib\n"            # CPython only
        "import picotrain.kernels as K\n"
        "def f(x):\n"
        "    time.sleep_ms()\n"       # rp2: sleep_ms(ms)
        "    K.argmax_s8(x, 3)\n"     # a kernel bound at run time: known to the check
        "    return undefined + 1\n")})
    assert rc == 1
    errors = sorted(line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line)
    assert errors == ['Cannot find implementation or library stub for module named "pathlib"  [import-not-found]',
                      'Name "undefined" is not defined  [name-defined]',
                      'Too few arguments for "sleep_ms"  [call-arg]']
