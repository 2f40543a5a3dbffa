"""Fuzzing the model-file reader: any bytes, and mutated files whose CRC is
made valid again (so the structural checks, not the checksum, must catch
them), load or raise ModelFileError; nothing else escapes, nothing hangs.

Longer run: PICOTRAIN_FUZZ_EXAMPLES=20000 pytest tests/reliability -k fuzz
"""
import binascii
import os
import struct
from array import array

from hypothesis import HealthCheck, given, settings, strategies as st

import picotrain as pt
from picotrain.modelfile import ModelFileError

N = int(os.environ.get("PICOTRAIN_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _model(with_subset):
    conv = pt.Conv2d(1, 2, 3, pad=1, bias=True)
    lin = pt.Linear(8, 3)
    m = pt.Model([conv, pt.ReLU(), pt.MaxPool2d(2), pt.Flatten(), lin], (1, 4, 4))
    for l in m.param_layers():
        l.weight.data = array("b", [(j * 29) % 200 - 100 for j in range(l.weight.size)])
        l.shift, l.bshift, l.gbits = 3, 4, 9
    m.meta = {"method": "PRIOTS", "epoch": 2}
    if with_subset:
        pt.PRIOTS(m, p=0.5, seed=3)
    else:
        pt.PRIOT(m, seed=3)
    return m


def _valid_bytes(tmp_path, with_subset):
    p = str(tmp_path / "v.pt8")
    _model(with_subset).save(p)
    return open(p, "rb").read()


def _load_bytes(tmp_path, data):
    p = tmp_path / "f.pt8"
    p.write_bytes(data)
    try:
        m = pt.load(str(p))
    except ModelFileError as e:
        assert str(e)  # a message naming the problem
        return None
    # whatever loads must be usable, or say it is too big for this memory
    try:
        x = array("b", bytes(m.in_size))
        m.predict(x)
    except MemoryError as e:
        assert "needs" in str(e) or m.in_size > 2 ** 28
    return m


def _fix_crc(body):
    return body + struct.pack("<I", binascii.crc32(body))


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    _load_bytes(tmp_path, data)
    _load_bytes(tmp_path, b"PT8M\x01\x00" + data)
    _load_bytes(tmp_path, _fix_crc(b"PT8M\x01\x00" + data))


@FUZZ
@given(st.booleans(), st.data())
def test_mutations_with_valid_crc(tmp_path, with_subset, data):
    body = bytearray(_valid_bytes(tmp_path, with_subset)[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(body) - 1)) if body else 0
        if op == "flip" and body:
            body[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and body:
            body[pos] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "cut":
            del body[pos:]
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del body[pos:pos + data.draw(st.integers(1, 8))]
    _load_bytes(tmp_path, _fix_crc(bytes(body)))


def test_the_unmutated_file_loads(tmp_path):
    for sub in (False, True):
        assert _load_bytes(tmp_path, _valid_bytes(tmp_path, sub)) is not None
