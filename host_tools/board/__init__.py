"""Boards for picotrain's host tools: a real one over mpremote, or a virtual one.

    from host_tools.board import connect
    with connect() as b:          # the first Pico found on USB, else the virtual board
        print(b.info())

connect(port): port is a serial device (/dev/ttyACM0, COM5), any pyserial URL
(socket://host:port), "virtual" or "virtual:FOLDER" (the MicroPython unix port on a
folder: host_tools/board/virtual.py), a VirtualDevice, or None/"auto": $PICOTRAIN_PORT,
else the first USB serial port that looks like a MicroPython board, else the virtual
board in the default folder ($PICOTRAIN_VIRTUAL_BOARD, ~/.cache/picotrain/virtual-board).
A port that is given but where no board answers is an error (BoardError), never a
silent switch to the virtual board.
"""
import os

from .transport import Board, BoardError, RemoteError, digest_size, local_digest  # noqa: F401
from .virtual import VirtualDevice, default_folder  # noqa: F401

# USB vendor ids of MicroPython boards: Raspberry Pi (the Pico's MicroPython is
# 2E8A:0005) and MicroPython's own (F055), used by boards with TinyUSB stacks.
BOARD_VIDS = (0x2E8A, 0xF055)


def find_ports():
    """Serial ports that look like MicroPython boards, best first."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return []
    found = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        if p.vid in BOARD_VIDS or "MicroPython" in (p.manufacturer or "") + (p.description or ""):
            found.append(p.device)
    return found


def connect(port=None, timeout=5.0, log=None, **virtual):
    """A Board in the raw REPL (see the module's doc). virtual: keywords for a
    VirtualDevice made here (folder, flash, heap); closing the Board stops it."""
    if isinstance(port, VirtualDevice):
        return Board(port.url, virtual=port, timeout=timeout)
    port = port or os.environ.get("PICOTRAIN_PORT") or "auto"
    if port == "auto":
        ports = find_ports()
        if ports:
            port = ports[0]
            if log and len(ports) > 1:
                log("several boards found (%s); using %s (choose with --port)" % (", ".join(ports), port))
        else:
            port = "virtual"
            if log:
                log("no board found on USB: using the virtual board (MicroPython unix port) in %s"
                    % (virtual.get("folder") or default_folder()))
    if port == "virtual" or port.startswith("virtual:"):
        folder = port[len("virtual:"):] or virtual.pop("folder", None)
        virtual.pop("folder", None)
        vd = VirtualDevice(folder, **virtual)
        try:
            return Board(vd.url, virtual=vd, timeout=timeout, owns_virtual=True)
        except Exception:
            vd.close()
            raise
    return Board(port, timeout=timeout)
