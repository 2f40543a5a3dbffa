"""picotrain.data: the .pt8d reader on CPython and under the MicroPython unix port."""

import binascii
import os
import struct
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.datasets import encode_header, encode_record, write_pt8d
from picotrain import data
from picotrain.data import ArrayDataset, Dataset, Header

N = 12
DEVICE_DIR = Path(__file__).resolve().parents[2] / "device"


@pytest.fixture
def images(tmp_path):
    """A 12-image file (pixels 0, 255 and both halves of the range); returns (path, x, y)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, 1, 5, 4), dtype=np.uint8)
    x[0, 0].flat[:] = np.arange(20) * 13  # include 0 and values >= 128
    x[1, 0].flat[:] = 255
    y = rng.integers(0, 10, N, dtype=np.uint8)
    path = tmp_path / "img.pt8d"
    write_pt8d(path, x, y)
    return path, x, y


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (N, 7), dtype=np.int8)
    x[0, :2] = (-128, 127)
    y = rng.integers(0, 3, N, dtype=np.uint8)
    path = tmp_path / "feat.pt8d"
    write_pt8d(path, x, y, exp=-5, n_classes=3)
    return path, x, y


def read_all(ds):
    out = []
    for x, y in ds.samples():
        out.append((bytes(x), y))
    return out


def test_crc16_is_ccitt_false():
    assert data.crc16(b"123456789") == 0x29B1


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_crc16_matches_binascii(blob, init):
    assert data.crc16(blob, init) == binascii.crc_hqx(blob, init)


def test_image_round_trip(images):
    path, x, y = images
    with Dataset(path) as ds:
        assert (len(ds), ds.shape, ds.exp, ds.n_classes, ds.kind) == (N, (1, 5, 4), -7, 10, 0)
        got = read_all(ds)
        assert ds.skipped == 0
    # the device input is pixel >> 1, as int8 (always 0..127)
    assert got == [((xi >> 1).astype(np.int8).tobytes(), int(yi)) for xi, yi in zip(x, y)]


def test_feature_round_trip(features):
    path, x, y = features
    with Dataset(path) as ds:
        assert (len(ds), ds.shape, ds.exp, ds.n_classes, ds.kind) == (N, (7,), -5, 3, 1)
        buf = ds.new_buffer()
        for i in range(N):
            assert ds.read(i, buf) == y[i]
            assert list(buf) == list(x[i])


def test_shuffled_order_and_array_dataset_agree(images):
    path, x, y = images
    from picotrain.rng import XorShift32

    order = XorShift32(3).shuffle(list(range(N)))
    with Dataset(path) as ds:
        from_file = [(bytes(a), b) for a, b in ds.samples(order)]
    xs = [array("b", (xi >> 1).tobytes()) for xi in x]
    mem = ArrayDataset(xs, [int(v) for v in y], (1, 5, 4), -7)
    assert (len(mem), mem.n_classes) == (N, max(y) + 1)
    assert [(bytes(a), b) for a, b in mem.samples(order)] == from_file
    assert [b for _, b in from_file] == [int(y[i]) for i in order]


def test_read_checks_index_and_buffer(images):
    with Dataset(images[0]) as ds:
        with pytest.raises(IndexError):
            ds.read(N, ds.new_buffer())
        with pytest.raises(ValueError):
            ds.read(0, array("b", bytes(3)))


def header_bytes(kind=0, exp=-7, n_classes=10, ndim=3, dims=(1, 2, 2), count=1, version=1):
    body = struct.pack(data.HEADER_FIELDS, data.MAGIC, version, kind, exp, n_classes, ndim,
                       *dims, count)
    return body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))


@pytest.mark.parametrize("cut", [0, 3, 4, 10, data.HEADER_SIZE - 1, data.HEADER_SIZE,
                                 data.HEADER_SIZE + 1, data.HEADER_SIZE + 30, -1])
def test_truncated_file_is_rejected(images, tmp_path, cut):
    blob = images[0].read_bytes()
    bad = tmp_path / "cut.pt8d"
    bad.write_bytes(blob[:cut])
    with pytest.raises(ValueError, match="truncated"):
        Dataset(bad)


@pytest.mark.parametrize("change, message", [
    (lambda b: b"PT8X" + b[4:], "magic"),
    (lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "version"),
    (lambda b: b[:15] + bytes([b[15] ^ 1]) + b[16:], "checksum"),  # count field
    (lambda b: b[:19] + bytes([b[19] ^ 0x80]) + b[20:], "checksum"),  # the CRC itself
    (lambda b: b + b"\x00", "unexpected bytes"),
])
def test_bad_file_is_rejected(images, tmp_path, change, message):
    bad = tmp_path / "bad.pt8d"
    bad.write_bytes(change(images[0].read_bytes()))
    with pytest.raises(ValueError, match=message):
        Dataset(bad)


@pytest.mark.parametrize("fields, message", [
    (dict(kind=2), "kind"),
    (dict(exp=-6), "exponent"),
    (dict(ndim=0), "dimensions"),
    (dict(ndim=4), "dimensions"),
    (dict(dims=(1, 0, 2)), "dimension 0"),
    (dict(n_classes=0), "n_classes"),
])
def test_header_fields_are_validated(tmp_path, fields, message):
    bad = tmp_path / "bad.pt8d"
    bad.write_bytes(header_bytes(**fields) + bytes(7))
    with pytest.raises(ValueError, match=message):
        Dataset(bad)


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 12])  # label, CRC low, CRC high, sample bytes
def test_corrupt_record_is_skipped_and_counted(images, tmp_path, offset):
    path, x, y = images
    blob = bytearray(path.read_bytes())
    h = Header(0, (1, 5, 4), -7, 10, N)
    blob[data.HEADER_SIZE + 2 * h.record_size + offset] ^= 0x10
    bad = tmp_path / "corrupt.pt8d"
    bad.write_bytes(blob)
    with Dataset(bad) as ds:
        assert ds.read(2, ds.new_buffer()) == -1
        assert ds.skipped == 1
        got = read_all(ds)
        assert ds.skipped == 2
    good = [((xi >> 1).tobytes(), int(yi)) for i, (xi, yi) in enumerate(zip(x, y)) if i != 2]
    assert got == good


def test_label_beyond_n_classes_is_corrupt(features, tmp_path):
    path, x, _ = features
    blob = bytearray(path.read_bytes())
    blob[data.HEADER_SIZE:data.HEADER_SIZE + 10] = encode_record(x[0], 5)  # 3 classes
    bad = tmp_path / "label.pt8d"
    bad.write_bytes(blob)
    with Dataset(bad) as ds:
        assert ds.read(0, ds.new_buffer()) == -1


def test_stream_records_decode_like_the_file(images):
    path, x, y = images
    header = data.parse_header(encode_header(Header(0, (1, 5, 4), -7, 10, N)))
    out = array("b", bytes(header.sample_size))
    for xi, yi in zip(x, y):
        rec = bytearray(encode_record(xi, int(yi)))
        assert data.decode_record(rec, out, header) == yi
        assert bytes(out) == (xi >> 1).tobytes()
        rec[-1] ^= 1
        assert data.decode_record(rec, out, header) == -1
    with pytest.raises(ValueError):
        data.decode_record(bytes(5), out, header)


# The same script runs on CPython and MicroPython: their outputs must match.
SCRIPT = """
import binascii
from picotrain.data import Dataset
from picotrain.rng import XorShift32
for path in {paths!r}:
    with Dataset(path) as ds:
        order = XorShift32(5).shuffle(list(range(len(ds))))
        for x, y in ds.samples(order):
            print(y, binascii.hexlify(x).decode())
        print("skipped", ds.skipped, ds.shape, ds.exp)
"""


def test_micropython_reads_byte_for_byte_like_cpython(micropython, images, features, tmp_path):
    corrupt = tmp_path / "corrupt.pt8d"
    blob = bytearray(images[0].read_bytes())
    blob[-1] ^= 1
    corrupt.write_bytes(blob)
    script = SCRIPT.format(paths=[str(images[0]), str(features[0]), str(corrupt)])
    env = dict(os.environ, PYTHONPATH=str(DEVICE_DIR))
    cpython = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert cpython.count("\n") == 3 * N + 3 - 1 and "skipped 1" in cpython
    assert micropython(script) == cpython


HEAP_SCRIPT = """
import micropython
from array import array
from picotrain import data
from picotrain.data import ArrayDataset, Dataset

def main():
    labels = array("b", bytes(64))
    ds = Dataset({path!r})
    x = ds.new_buffer()
    rec = bytearray(ds.header.record_size)
    mem = ArrayDataset([array("b", bytes(ds.sample_size))], [4], ds.shape, ds.exp)
    it = ds.samples()
    next(it)  # the first item allocates the generator's buffer
    n = len(ds)
    count = 0
    micropython.heap_lock()
    try:
        for i in range(n):
            labels[i] = ds.read(i, x)
        for x2, y in it:
            count += 1
        labels[n] = data.decode_record(rec, x, ds.header)
        labels[n + 1] = mem.read(0, x)
    finally:
        micropython.heap_unlock()
    print(list(labels[:n + 2]), ds.skipped, count)

main()
"""


def test_micropython_reads_without_allocating(micropython, images, tmp_path):
    path, _, y = images
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # the last record is corrupt: skipping it must not allocate either
    corrupt = tmp_path / "corrupt.pt8d"
    corrupt.write_bytes(blob)
    out = micropython(HEAP_SCRIPT.format(path=str(corrupt)))
    expected = [int(v) for v in y[:-1]] + [-1, -1, 4]  # an all-zero record is corrupt
    # samples() yielded the N - 1 good records, the first before the lock
    assert out.strip() == "%s 2 %d" % (expected, N - 2)


ERRORS_SCRIPT = """
from picotrain.data import Dataset
for path in {paths!r}:
    try:
        Dataset(path)
        print("opened", path)
    except ValueError as e:
        print(e)
"""


def test_micropython_rejects_bad_files_like_cpython(micropython, images, tmp_path):
    blob = images[0].read_bytes()
    variants = [blob[:3], blob[:30], b"PT8X" + blob[4:], blob[:4] + b"\x07" + blob[5:],
                blob[:16] + b"\xff" + blob[17:], blob + b"\x00", header_bytes(kind=9)]
    paths = []
    for i, v in enumerate(variants):
        paths.append(str(tmp_path / ("bad%d.pt8d" % i)))
        (tmp_path / ("bad%d.pt8d" % i)).write_bytes(v)
    script = ERRORS_SCRIPT.format(paths=paths)
    env = dict(os.environ, PYTHONPATH=str(DEVICE_DIR))
    cpython = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert "opened" not in cpython and cpython.count("\n") == len(variants)
    assert micropython(script) == cpython
