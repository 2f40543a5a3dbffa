"""The model file: round trip, every bad-file case, atomic save."""
import struct
from array import array

import pytest

import picotrain as pt
from picotrain.modelfile import ModelFileError


def sample_model():
    conv = pt.Conv2d(1, 2, 3, stride=1, pad=1, bias=True)
    lin = pt.Linear(8, 3)
    m = pt.Model([conv, pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), lin], (1, 4, 4), in_exp=-7)
    conv.weight.data = array("b", [(7 * j) % 255 - 127 for j in range(18)])
    conv.weight.exp = -6
    conv.bias = array("i", [123456, -99])
    conv.b_exp = -13
    conv.shift, conv.bshift = 3, None
    lin.weight.data = array("b", [j - 12 for j in range(24)])
    lin.weight.exp = -8
    lin.shift, lin.bshift = 5, 4
    lin.frozen = True
    m.meta = {"method": "NITI", "epochs": 3}
    return m


def test_round_trip(tmp_path):
    m = sample_model()
    p = str(tmp_path / "m.pt8")
    m.save(p)
    m2 = pt.load(p)
    assert m2.in_shape == (1, 4, 4) and m2.in_exp == -7
    assert [repr(l) for l in m2.layers] == [repr(l) for l in m.layers]
    for a, b in zip(m.param_layers(), m2.param_layers()):
        assert list(a.weight.data) == list(b.weight.data)
        assert (a.weight.exp, a.b_exp, a.shift, a.bshift, a.frozen) == \
               (b.weight.exp, b.b_exp, b.shift, b.bshift, b.frozen)
        assert (list(a.bias) if a.bias else None) == (list(b.bias) if b.bias else None)
    assert m2.meta == {"method": "NITI", "epochs": 3}
    x = array("b", range(16))
    assert list(m.forward(x).data) == list(m2.forward(x).data)
    # saving again gives the same bytes
    p2 = str(tmp_path / "m2.pt8")
    m2.save(p2)
    assert open(p, "rb").read() == open(p2, "rb").read()


def write(tmp_path, data, name="bad.pt8"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def good_bytes(tmp_path):
    p = str(tmp_path / "good.pt8")
    sample_model().save(p)
    return open(p, "rb").read()


def test_every_truncation_is_reported(tmp_path):
    data = good_bytes(tmp_path)
    for cut in range(len(data)):
        p = write(tmp_path, data[:cut])
        with pytest.raises(ModelFileError, match="truncated|no checksum|not a picotrain|CRC|claims"):
            pt.load(p)


def test_bad_magic_version_crc(tmp_path):
    data = good_bytes(tmp_path)
    with pytest.raises(ModelFileError, match="not a picotrain model file"):
        pt.load(write(tmp_path, b"XXXX" + data[4:]))
    with pytest.raises(ModelFileError, match="version 9, this picotrain reads version 1"):
        pt.load(write(tmp_path, data[:4] + b"\x09" + data[5:]))
    for pos in (20, len(data) // 2, len(data) - 6):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(ModelFileError):
            pt.load(write(tmp_path, bytes(bad)))
    with pytest.raises(ModelFileError, match="trailing"):
        pt.load(write(tmp_path, data + b"\0"))
    with pytest.raises(ModelFileError, match="no such model file"):
        pt.load(str(tmp_path / "missing.pt8"))


def test_bit_flip_in_weights_is_a_crc_error(tmp_path):
    data = bytearray(good_bytes(tmp_path))
    data[-10] ^= 1  # inside the last PARM payload
    with pytest.raises(ModelFileError, match="CRC-32 mismatch"):
        pt.load(write(tmp_path, bytes(data)))


def test_inconsistent_arch_is_named(tmp_path):
    """A structurally valid file whose layers do not chain (CRC recomputed)."""
    import binascii
    arch = struct.pack("<BHb", 1, 5, -7) + struct.pack("<H", 1) + struct.pack("<BB3H", 1, 3, 6, 2, 0)
    body = b"PT8M" + struct.pack("<BBH", 1, 0, 1) + b"ARCH" + struct.pack("<I", len(arch)) + arch
    data = body + struct.pack("<I", binascii.crc32(body))
    with pytest.raises(ModelFileError, match="does not chain"):
        pt.load(write(tmp_path, data))


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    p = str(tmp_path / "m.pt8")
    m = sample_model()
    m.save(p)
    before = open(p, "rb").read()
    m.param_layers()[0].weight.data[0] = 1

    import picotrain.modelfile as mf
    real_open = open

    class Dying:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += 1
            if self.n == 4:
                raise OSError("power lost")
            return self.f.write(b)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(mf, "open", lambda path, mode="r": Dying(real_open(path, mode)), raising=False)
    with pytest.raises(OSError, match="power lost"):
        m.save(p)
    monkeypatch.undo()
    assert open(p, "rb").read() == before
    pt.load(p)
