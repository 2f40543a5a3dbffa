"""The picotrain model file (.pt8), version 1. Byte layout: docs/MODELFILE.md.

    magic "PT8M" | u8 version | u8 0 | u16 n_sections
    n_sections x ( 4-byte tag | u32 length | payload )
    u32 CRC-32 of every byte before it

All little-endian. Sections: ARCH (input and layers), PARM (one per layer
with parameters), SCOR and SUBS (PRIOT state), META (JSON text). Unknown
tags are skipped, so newer writers can add state older readers ignore.

Loading reads each weight straight into its final buffer while the CRC runs,
so a model costs its own size in RAM, not twice; nothing is returned unless
the CRC matches. Saving writes PATH.tmp and renames it over PATH, so an
interrupted save leaves the old file whole.
"""
import binascii
import os
import struct

from .layers import Conv2d, Flatten, Linear, MaxPool2d, Model, ReLU

MAGIC = b"PT8M"
VERSION = 1
KINDS = {1: Linear, 2: Conv2d, 3: ReLU, 4: MaxPool2d, 5: Flatten}
_STRUCT_ERROR = getattr(struct, "error", ValueError)  # MicroPython's struct raises ValueError
N_CFG = {1: 3, 2: 6, 3: 0, 4: 1, 5: 0}  # configuration values per layer kind
NO_SHIFT = 127  # stored for "not calibrated"
_PARM_HEAD = "<HbbbbBb"  # layer, w_exp, b_exp, shift, bshift, flags, gbits


# Sections of the methods of issue 5, read and written by their own modules
# (tintin.py, partial.py); imported only when a file or a model has them.
METHOD_TAGS = {b"TINT": "tintin", b"PFQT": "partial"}


def _method_module(name):
    if name == "tintin":
        from . import tintin as mod
    else:
        from . import partial as mod
    return mod


def _methods_with_state(model):
    out = []
    for l in model.layers:
        if l.has_params:
            if hasattr(l.weight, "u") and "tintin" not in out:
                out.append("tintin")
            if hasattr(l, "upd_count") and "partial" not in out:
                out.append("partial")
    return out


class ModelFileError(ValueError):
    """A model file that cannot be used: the message says why."""


class _Reader:
    def __init__(self, f, path, size):
        self.f, self.path, self.size = f, path, size
        self.crc = 0
        self.pos = 0

    def into(self, buf, nbytes, what):
        n = self.f.readinto(buf) if nbytes else 0
        if n is None or n < nbytes:
            raise ModelFileError("%s: truncated in %s (wanted %d bytes at offset %d, file has %d)"
                                 % (self.path, what, nbytes, self.pos, self.size))
        self.crc = binascii.crc32(buf, self.crc)
        self.pos += nbytes
        return buf

    def take(self, n, what):
        return self.into(bytearray(n), n, what)


def _shift_in(v):
    return None if v == NO_SHIFT else v


def _shift_out(v):
    return NO_SHIFT if v is None else v


def load(path):
    """Read a model file; raises ModelFileError naming what is wrong."""
    try:
        size = os.stat(path)[6]
    except OSError:
        raise ModelFileError("%s: no such model file" % path)
    with open(path, "rb") as f:
        r = _Reader(f, path, size)
        head = r.take(8, "header")
        if head[:4] != MAGIC:
            raise ModelFileError("%s: not a picotrain model file (magic %r, expected %r)"
                                 % (path, bytes(head[:4]), MAGIC))
        if head[4] != VERSION:
            raise ModelFileError("%s: model file version %d, this picotrain reads version %d"
                                 % (path, head[4], VERSION))
        n_sec = struct.unpack_from("<H", head, 6)[0]
        model = None
        seen = set()
        prune_secs, meta = [], None
        method_secs = []
        for _ in range(n_sec):
            sh = r.take(8, "section header")
            tag = bytes(sh[:4])
            length = struct.unpack_from("<I", sh, 4)[0]
            if length > size - r.pos - 4:
                raise ModelFileError("%s: section %r claims %d bytes, only %d left (truncated or corrupt)"
                                     % (path, tag, length, size - r.pos - 4))
            if tag == b"ARCH":
                if model is not None:
                    raise ModelFileError("%s: two ARCH sections" % path)
                model = _arch(r.take(length, "ARCH"), path, size)
            elif tag == b"PARM":
                if model is None:
                    raise ModelFileError("%s: PARM before ARCH" % path)
                seen.add(_parm(r, model, length, path))
            elif tag in (b"SCOR", b"SUBS"):
                # Kept raw; prune.py turns them into layer state once all is read.
                prune_secs.append((tag, r.take(length, tag.decode())))
            elif tag in METHOD_TAGS:
                # Tin-Tin / partial-update FQT state, handed to its module below
                method_secs.append((tag, r.take(length, tag.decode())))
            elif tag == b"META":
                meta = r.take(length, "META")
            else:
                r.take(length, "unknown section")
        crc = r.crc
        tail = bytearray(4)
        if f.readinto(tail) != 4:
            raise ModelFileError("%s: truncated (no checksum)" % path)
        if struct.unpack("<I", tail)[0] != crc & 0xFFFFFFFF:
            raise ModelFileError("%s: corrupt model file (CRC-32 mismatch)" % path)
        if f.read(1):
            raise ModelFileError("%s: trailing bytes after the checksum" % path)
    if model is None:
        raise ModelFileError("%s: no ARCH section" % path)
    for i, l in enumerate(model.layers):
        if l.has_params and i not in seen:
            raise ModelFileError("%s: layer %d (%r) has no PARM section" % (path, i, l))
    if meta is not None:
        import json
        try:
            model.meta = json.loads(bytes(meta).decode())
        except (ValueError, UnicodeError) as e:  # JSON errors are ValueErrors
            raise ModelFileError("%s: META section is not JSON text (%s)" % (path, e))
        if not isinstance(model.meta, dict):
            raise ModelFileError("%s: META section is not a JSON object" % path)
    for tag, mod in METHOD_TAGS.items():
        secs = [sec for sec in method_secs if sec[0] == tag]
        if secs:
            try:
                _method_module(mod).attach(model, secs)
            except ValueError as e:
                raise ModelFileError("%s: %s" % (path, e))
    if prune_secs:
        from .prune import attach
        try:
            attach(model, prune_secs)
        except ValueError as e:
            raise ModelFileError("%s: %s" % (path, e))
    return model


def _param_bytes(kind, cfg):
    """Bytes of weights and biases a layer's PARM must carry (0 for none)."""
    if kind == 1:
        return cfg[0] * cfg[1] + 4 * cfg[1] * (cfg[2] != 0)
    if kind == 2:
        return cfg[1] * cfg[0] * cfg[2] * cfg[2] + 4 * cfg[1] * (cfg[5] != 0)
    return 0


def _arch(b, path, size):
    try:
        nd = b[0]
        shape = struct.unpack_from("<%dH" % nd, b, 1)
        p = 1 + 2 * nd
        in_exp, n = struct.unpack_from("<bH", b, p)
        p += 3
        layers = []
        for _ in range(n):
            kind, nc = b[p], b[p + 1]
            cfg = struct.unpack_from("<%dH" % nc, b, p + 2)
            p += 2 + 2 * nc
            if kind not in KINDS:
                raise ModelFileError("%s: unknown layer kind %d" % (path, kind))
            if nc != N_CFG[kind]:
                raise ModelFileError("%s: layer %d of kind %d has %d configuration values, expected %d"
                                     % (path, len(layers), kind, nc, N_CFG[kind]))
            # Check sizes against the file before allocating anything for them.
            need = _param_bytes(kind, cfg)
            if need > size:
                raise ModelFileError("%s: layer %d (kind %d, %r) needs %d bytes of parameters, the file "
                                     "has %d" % (path, len(layers), kind, cfg, need, size))
            layers.append(KINDS[kind](*cfg))
    except (IndexError, TypeError, ValueError, _STRUCT_ERROR) as e:
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError("%s: malformed ARCH section (%s)" % (path, e))
    if p != len(b):
        raise ModelFileError("%s: ARCH section has %d stray bytes" % (path, len(b) - p))
    try:
        return Model(layers, shape, in_exp)
    except ValueError as e:
        raise ModelFileError("%s: %s" % (path, e))


def _parm(r, model, length, path):
    h = r.take(struct.calcsize(_PARM_HEAD), "PARM")
    i, w_exp, b_exp, shift, bshift, flags, gbits = struct.unpack(_PARM_HEAD, h)
    if i >= len(model.layers) or not model.layers[i].has_params:
        raise ModelFileError("%s: PARM for layer %d, which has no parameters" % (path, i))
    l = model.layers[i]
    nw = l.weight.size
    nb = len(l.bias) if l.bias is not None else 0
    if bool(flags & 2) != (l.bias is not None) or length != len(h) + nw + 4 * nb:
        raise ModelFileError("%s: PARM of layer %d (%r) is %d bytes, expected %d"
                             % (path, i, l, length, len(h) + nw + 4 * nb))
    r.into(l.weight.data, nw, "weights of layer %d" % i)
    if nb:
        r.into(l.bias, 4 * nb, "bias of layer %d" % i)
    l.weight.exp, l.b_exp = w_exp, b_exp
    l.shift, l.bshift, l.gbits = _shift_in(shift), _shift_in(bshift), _shift_in(gbits)
    l.frozen = bool(flags & 1)
    return i


def sections(model, extra=None):
    """The model as a list of (tag, [(buffer, nbytes), ...])."""
    arch = bytearray(struct.pack("<B", len(model.in_shape)))
    arch += struct.pack("<%dH" % len(model.in_shape), *model.in_shape)
    arch += struct.pack("<bH", model.in_exp, len(model.layers))
    for l in model.layers:
        cfg = [int(v) for v in l.config()]
        arch += struct.pack("<BB%dH" % len(cfg), l.kind, len(cfg), *cfg)
    out = [(b"ARCH", [(arch, len(arch))])]
    for i, l in enumerate(model.layers):
        if not l.has_params:
            continue
        flags = (1 if l.frozen else 0) | (2 if l.bias is not None else 0)
        head = struct.pack(_PARM_HEAD, i, l.weight.exp, l.b_exp, _shift_out(l.shift),
                           _shift_out(l.bshift), flags, _shift_out(l.gbits))
        chunks = [(head, len(head)), (l.weight.data, l.weight.size)]
        if l.bias is not None:
            chunks.append((l.bias, 4 * len(l.bias)))
        out.append((b"PARM", chunks))
    if model.pruned:
        from .prune import sections as prune_sections
        out += prune_sections(model)
    # Tin-Tin (TINT) and partial-update FQT (PFQT) state, when a layer has it
    for mod in _methods_with_state(model):
        out += _method_module(mod).sections(model)
    meta = dict(model.meta)
    if extra:
        meta.update(extra)
    if meta:
        import json
        # Keys sorted by hand: MicroPython dicts have no stable order and its
        # json.dumps has no sort_keys, and the same model must give the same bytes.
        text = ("{" + ", ".join(json.dumps(k) + ": " + json.dumps(meta[k]) for k in sorted(meta))
                + "}").encode()
        out.append((b"META", [(text, len(text))]))
    return out


def save(model, path, extra=None):
    """Write model to path atomically (PATH.tmp, then rename)."""
    secs = sections(model, extra)
    tmp = path + ".tmp"
    crc = 0
    with open(tmp, "wb") as f:
        def put(b):
            nonlocal crc
            f.write(b)
            crc = binascii.crc32(b, crc)
        put(MAGIC + struct.pack("<BBH", VERSION, 0, len(secs)))
        for tag, chunks in secs:
            put(tag + struct.pack("<I", sum(n for _, n in chunks)))
            for c, _ in chunks:
                put(c)
        f.write(struct.pack("<I", crc & 0xFFFFFFFF))
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT (and MicroPython's VfsFat) will not rename over a file.
        os.remove(path)
        os.rename(tmp, path)

