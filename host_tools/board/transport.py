"""Talking to a board: mpremote's SerialTransport (raw REPL, raw-paste mode) plus
the few things picotrain needs on top of it.

    b = Board("/dev/ttyACM0")          # or "socket://host:port", or a VirtualDevice's url
    b.info()                           # MicroPython version, mpy version and arch, free heap, flash
    b.exec("import picotrain")         # run code; a device traceback raises RemoteError
    b.hashes(["lib/picotrain/train.mpy"]); b.put("m.pt8", data); b.get("m.pt8")
    b.run(code, on_event=...)          # run code that talks back in "@pt ..." lines

A Board is built on mpremote used as a library (`mpremote.transport_serial.
SerialTransport`): pyserial opens the port (serial device, or any pyserial URL
such as socket://), mpremote enters the raw REPL and sends code in raw-paste
mode. Files go both ways through code run on the board: `put` sends the bytes
raw on the board's stdin, 1 KB per request of the board (flow control that
works on USB CDC, a UART and a pty alike), into PATH.tmp, checks a CRC-32, then
renames; `get` reads the board's base64 lines. Paths are relative to the
board's current directory, which is / after a boot (and the folder of a
virtual board).
"""
import ast
import binascii
import contextlib
import hashlib
import io
import socket
import time

from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport
from serial import SerialException

CHUNK = 1024


class BoardError(Exception):
    """Something about the board or the link, said in one line."""


class RemoteError(BoardError):
    """Code run on the board raised; .traceback is the board's traceback."""

    def __init__(self, traceback):
        self.traceback = traceback.strip()
        last = self.traceback.splitlines()[-1] if self.traceback else "error"
        super().__init__("on the board: %s" % last)


class Board:
    """A MicroPython board (or a virtual one) in the raw REPL."""

    def __init__(self, port, virtual=None, timeout=5.0, baudrate=115200, owns_virtual=False):
        self.port = port
        self.virtual = virtual
        self._owns_virtual = owns_virtual
        self._info = None
        quiet = io.StringIO()  # mpremote prints what it got when it fails; we say it better
        try:
            with contextlib.redirect_stdout(quiet):
                self.t = SerialTransport(port, baudrate=baudrate)
        except TransportError as e:
            raise BoardError("cannot open %s (%s)" % (port, e))
        sock = getattr(self.t.serial, "_socket", None)
        if sock is not None:  # socket:// — small writes must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with contextlib.redirect_stdout(quiet):
                self.t.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        except (TransportError, OSError) as e:
            self.t.close()
            raise BoardError("no MicroPython board answered on %s within %g s (no raw REPL prompt%s): "
                             "is MicroPython running on it, and is no other program (Thonny, a serial "
                             "terminal, another mpremote) using the port?"
                             % (port, timeout, "" if isinstance(e, TransportError) else ": %s" % e))

    def __repr__(self):
        return "Board(%r%s)" % (self.port, ", virtual" if self.virtual else "")

    @property
    def is_virtual(self):
        return self.virtual is not None

    # ------------------------------------------------------------ running --
    def exec(self, code, timeout=30):
        """Run code on the board; its output as text. A traceback raises RemoteError."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout)
        except (TransportError, SerialException, OSError) as e:
            raise BoardError("the board stopped answering on %s (%s)" % (self.port, e))
        if err:
            raise RemoteError(err.decode(errors="replace"))
        return out.decode(errors="replace").replace("\r\n", "\n")

    def eval(self, expr):
        return ast.literal_eval(self.exec("print(repr(%s))" % expr).strip())

    def run(self, code, on_event=None, echo=print, idle_timeout=None):
        """Run code that talks back: every output line starting with "@pt " goes
        to on_event(words) (words: the line split on spaces, without "@pt"),
        which may return bytes to send to the board's stdin; other lines go to
        echo. idle_timeout: seconds without any output before giving up
        (None: wait as long as it takes). Raises RemoteError on a traceback."""
        try:
            self.t.exec_raw_no_follow(code)
        except (TransportError, SerialException, OSError) as e:
            raise BoardError("the board stopped answering on %s (%s)" % (self.port, e))
        ser = self.t.serial
        old_timeout = ser.timeout
        ser.timeout = 0.05
        line, err, phase = bytearray(), bytearray(), 0  # phase 0: stdout, 1: stderr
        last = time.monotonic()
        try:
            while phase < 2:
                try:
                    data = ser.read(ser.in_waiting or 1)
                except (SerialException, OSError) as e:
                    raise BoardError("the link to the board on %s was lost (%s): unplugged, reset or "
                                     "powered off?" % (self.port, e))
                if not data:
                    if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                        raise BoardError("no output from the board for %g s" % idle_timeout)
                    continue
                last = time.monotonic()
                for c in data:
                    if c == 4:  # the raw REPL's end of stdout, then of stderr
                        phase += 1
                        continue
                    if phase == 1:
                        err.append(c)
                        continue
                    if c != 10:
                        line.append(c)
                        continue
                    text = line.decode(errors="replace").rstrip("\r")
                    line.clear()
                    if text.startswith("@pt "):
                        reply = on_event(text.split()[1:]) if on_event else None
                        if reply:
                            try:
                                ser.write(reply)
                            except (SerialException, OSError) as e:
                                raise BoardError("the link to the board on %s was lost (%s)" % (self.port, e))
                    elif echo:
                        echo(text)
            if line and echo:
                echo(line.decode(errors="replace").rstrip("\r"))
        finally:
            ser.timeout = old_timeout
        if err:
            raise RemoteError(err.decode(errors="replace"))

    def interrupt(self):
        """Ctrl-C: stop what runs on the board (KeyboardInterrupt there)."""
        if self.virtual is not None:
            self.virtual.interrupt()
        self.t.serial.write(b"\x03")

    def soft_reset(self):
        """A fresh VM (modules unloaded, heap cleared), back in the raw REPL."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.t.enter_raw_repl(soft_reset=True)
        except TransportError as e:
            raise BoardError("the board did not come back from a soft reset (%s)" % e)
        self._info = None

    def close(self):
        try:
            self.t.exit_raw_repl()
        except Exception:
            pass
        try:
            self.t.close()
        except Exception:
            pass
        if self._owns_virtual and self.virtual is not None:
            self.virtual.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --------------------------------------------------------------- facts --
    def info(self, refresh=False):
        """What the board is: name, version, mpy (version, sub-version, arch),
        machine, free heap, filesystem (block size, blocks, free blocks),
        whether hashlib.sha256 and binascii.crc32 are there."""
        if self._info is not None and not refresh:
            return self._info
        out = self.exec(INFO_CODE)
        d = ast.literal_eval(out.strip().splitlines()[-1])
        mpy = d.get("mpy")
        if mpy is not None:
            from picotrain.kernels import ARCHS
            arch = mpy >> 10
            d["mpy_version"] = (mpy & 0xFF, (mpy >> 8) & 3)
            d["arch"] = ARCHS[arch] if arch < len(ARCHS) else "arch%d" % arch
        else:
            d["mpy_version"], d["arch"] = None, None
        self._info = d
        return d

    # --------------------------------------------------------------- files --
    def hashes(self, paths):
        """{path: digest or None when missing}; the digest is "sha256:<size>:<hex>"
        where the board has hashlib.sha256, else "crc32:<size>:<hex>:<last 4 bytes>"
        (local_digest says why)."""
        out = {}
        paths = list(paths)
        for p in paths:
            if any(c.isspace() for c in p):
                raise ValueError("board paths with spaces are not supported: %r" % p)
        for i in range(0, len(paths), 32):
            part = paths[i:i + 32]
            text = self.exec(HASH_CODE + "for p in %r:\n    print('@h', p, _h(p))\n" % (part,), timeout=120)
            for ln in text.splitlines():
                w = ln.split()
                if len(w) == 3 and w[0] == "@h":
                    out[w[1]] = None if w[2] == "None" else w[2]
        missing = [p for p in paths if p not in out]
        if missing:
            raise BoardError("the board did not hash %s" % ", ".join(missing))
        return out

    def put(self, path, data, progress=None):
        """Write bytes to path on the board: PATH.tmp, checked, then renamed."""
        data = bytes(data)
        self.makedirs(path.rsplit("/", 1)[0] if "/" in path else "")
        pos = [0]

        def on_event(w):
            if w[0] == "more":
                k = int(w[1])
                chunk = data[pos[0]:pos[0] + k]
                pos[0] += len(chunk)
                if progress:
                    progress(pos[0], len(data))
                return chunk
            if w[0] == "crc":
                got = int(w[1])
                if got != binascii.crc32(data):
                    raise BoardError("%s: the board received different bytes (CRC-32 %08x, sent %08x)"
                                     % (path, got, binascii.crc32(data)))
            return None

        self.run(PUT_CODE + "_put(%r, %d)\n" % (path, len(data)), on_event=on_event, echo=None)

    def get(self, path):
        """Bytes of a file on the board."""
        lines = []
        self.run(GET_CODE + "_get(%r)\n" % path, echo=lines.append, idle_timeout=60)
        data = bytearray()
        size = crc = None
        for ln in lines:
            if ln.startswith("@end "):
                size, crc = map(int, ln.split()[1:3])
            elif ln.startswith("@missing"):
                raise FileNotFoundError("%s: no such file on the board" % path)
            elif ln:
                data += binascii.a2b_base64(ln)
        if size is None or size != len(data) or crc != binascii.crc32(data):
            raise BoardError("%s: the file came back damaged (%s bytes of %s)" % (path, len(data), size))
        return bytes(data)

    def makedirs(self, path):
        if path:
            self.exec(MKDIRS_CODE + "_mk(%r)\n" % path)

    def remove(self, path):
        self.exec("import os\ntry:\n    os.remove(%r)\nexcept OSError:\n    pass\n" % path)

    def listdir(self, path):
        """Names in a folder of the board ([] when there is no such folder);
        folders end with '/'."""
        out = self.exec("import os\ntry:\n    _l = [n + ('/' if k == 0x4000 else '') for n, k, *_ in "
                        "os.ilistdir(%r)]\nexcept OSError:\n    _l = []\nprint(repr(_l))" % (path or "."))
        return ast.literal_eval(out.strip().splitlines()[-1])


def digest_size(digest):
    """The file size a digest of hashes() records."""
    return int(digest.split(":")[1])


def local_digest(data, kind):
    """The digest hashes() would give for these bytes, of the kind the board uses.

    Without sha256 it is the size, the CRC-32 of all but the last 4 bytes, and
    those 4 bytes: a file that ends with the CRC-32 of what precedes it (every
    .pt8 model file) has the same CRC-32 as any other such file of its size."""
    if kind.startswith("sha256"):
        return "sha256:%d:%s" % (len(data), hashlib.sha256(data).hexdigest())
    body = max(0, len(data) - 4)
    return "crc32:%d:%08x:%s" % (len(data), binascii.crc32(data[:body]), bytes(data[body:]).hex())


INFO_CODE = """\
import sys, os, gc
gc.collect()
_i = sys.implementation
try:
    _fs = tuple(os.statvfs('/'))
except Exception:
    _fs = None
try:
    _m = os.uname()[4]
except Exception:
    _m = getattr(_i, '_machine', sys.platform)
try:
    import hashlib
    _sha = hasattr(hashlib, 'sha256')
except ImportError:
    _sha = False
try:
    import binascii
    _crc = hasattr(binascii, 'crc32')
except ImportError:
    _crc = False
print(repr({'name': _i.name, 'version': tuple(_i.version[:3]), 'mpy': getattr(_i, '_mpy', None),
            'machine': _m, 'platform': sys.platform, 'mem_free': gc.mem_free(),
            'statvfs': _fs, 'sha256': _sha, 'crc32': _crc}))
"""

HASH_CODE = """\
import os, binascii
try:
    import hashlib
    _H = hashlib.sha256
except (ImportError, AttributeError):
    _H = None
_b = bytearray(512)
_v = memoryview(_b)
def _h(p):
    try:
        n = os.stat(p)[6]
        f = open(p, 'rb')
    except OSError:
        return None
    h = _H() if _H else None
    c = 0
    left = n if h else max(0, n - 4)
    with f:
        while left:
            k = f.readinto(_v[:min(left, 512)])
            if not k:
                break
            if h:
                h.update(_v[:k])
            else:
                c = binascii.crc32(_v[:k], c)
            left -= k
        if h:
            return 'sha256:%d:' % n + binascii.hexlify(h.digest()).decode()
        return 'crc32:%d:%08x:' % (n, c & 0xffffffff) + binascii.hexlify(f.read(4)).decode()
"""

PUT_CODE = """\
import sys, os, binascii
try:
    from micropython import kbd_intr
except ImportError:
    kbd_intr = None
def _put(path, size):
    r = getattr(sys.stdin, 'buffer', sys.stdin)
    b = bytearray(%d)
    v = memoryview(b)
    c = 0
    left = size
    if kbd_intr:
        kbd_intr(-1)  # the bytes are data: 0x03 must not interrupt
    try:
        with open(path + '.tmp', 'wb') as f:
            while left:
                k = min(left, len(b))
                print('@pt more', k)
                got = 0
                while got < k:
                    n = r.readinto(v[got:k])
                    if n:
                        got += n
                f.write(v[:k])
                c = binascii.crc32(v[:k], c)
                left -= k
    finally:
        if kbd_intr:
            kbd_intr(3)
    print('@pt crc', c & 0xffffffff)
    try:
        os.rename(path + '.tmp', path)
    except OSError:
        os.remove(path)  # FAT will not rename over a file
        os.rename(path + '.tmp', path)
""" % CHUNK

GET_CODE = """\
import sys, binascii
def _get(p):
    try:
        f = open(p, 'rb')
    except OSError:
        print('@missing')
        return
    w = getattr(sys.stdout, 'buffer', sys.stdout).write
    b = bytearray(570)
    v = memoryview(b)
    n = c = 0
    with f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            w(binascii.b2a_base64(v[:k]))
            c = binascii.crc32(v[:k], c)
            n += k
    print('@end', n, c & 0xffffffff)
"""

MKDIRS_CODE = """\
import os
def _mk(p):
    d = ''
    for part in p.split('/'):
        if not part:
            continue
        d = d + '/' + part if d else part
        try:
            os.mkdir(d)
        except OSError:
            pass
"""
