"""Fuzzing the dataset readers: .pt8d files (picotrain.data.Dataset) and the record stream
that trains over the link (picotrain.link.StreamDataset).

Files: random bytes, and valid files mutated (bit flips, byte sets, cuts, insertions,
deletions) with the header CRC and every record's CRC recomputed, so that the structural
checks, not the checksums, must catch what is wrong. A file opens or raises ValueError; once
open, every record reads as an independent decoder of the format says: its label and sample,
or -1 and one more in `skipped` (a bad label or CRC). Streams: random bytes, and the frames
of a valid file with junk, lost bytes, flips and a cut; the reader raises only ValueError
(at the header), yields only well-formed records, and ends (a finite stream that stops is a
silent host).

Longer run: PICOTRAIN_FUZZ_EXAMPLES=4000 pytest tests/reliability/test_fuzz_dataset.py
"""
import binascii
import io
import os
import struct
from array import array

from hypothesis import HealthCheck, given, settings, strategies as st

from picotrain import data as D
from picotrain.link import FRAME_END, FRAME_HEADER, FRAME_RECORD, StreamDataset

N = int(os.environ.get("PICOTRAIN_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def crc16(b, crc=0xFFFF):
    return binascii.crc_hqx(b, crc)


def valid_file(kind, shape, n_classes, records):
    """A .pt8d file, written here from docs/DATASETS.md (not with the library)."""
    exp = -7 if kind == 0 else -5
    dims = list(shape) + [0] * (3 - len(shape))
    head = struct.pack("<4sBBbBB3HI", b"PT8D", 1, kind, exp, n_classes, len(shape), *dims, len(records))
    out = head + struct.pack("<H", crc16(head))
    for label, sample in records:
        out += struct.pack("<BH", label, crc16(sample, crc16(bytes([label])))) + sample
    return out


@st.composite
def files(draw):
    kind = draw(st.sampled_from([0, 1]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    size = 1
    for d in shape:
        size *= d
    n_classes = draw(st.integers(1, 12))
    records = draw(st.lists(st.tuples(st.integers(0, n_classes - 1), st.binary(min_size=size, max_size=size)),
                            max_size=6))
    return valid_file(kind, shape, n_classes, records)


def mutate(draw, body):
    body = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[pos] = draw(st.sampled_from([0, 1, 2, 3, 4, 0x7F, 0x80, 0xF9, 0xFF]))
        elif op == "cut":
            del body[pos:]
        elif op == "insert":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del body[pos:pos + draw(st.integers(1, 8))]
    return bytes(body)


def header_fields(b):
    """(kind, exp, n_classes, shape, count) when the 21-byte header is sound, else None."""
    if len(b) < 21 or b[:4] != b"PT8D" or b[4] != 1 or crc16(b[:19]) != struct.unpack_from("<H", b, 19)[0]:
        return None
    kind, exp, n_classes, ndim, d0, d1, d2, count = struct.unpack_from("<BbBB3HI", b, 5)
    shape = (d0, d1, d2)[:ndim]
    if kind not in (0, 1) or not 1 <= ndim <= 3 or 0 in shape or n_classes == 0 or (kind == 0 and exp != -7):
        return None
    return kind, exp, n_classes, shape, count


def recompute_crcs(b):
    """b with the header CRC and each whole record's CRC made valid again (as far as the
    header's own fields say where records are)."""
    b = bytearray(b)
    if len(b) < 21:
        return bytes(b)
    b[19:21] = struct.pack("<H", crc16(bytes(b[:19])))
    f = header_fields(b)
    if f is not None:
        size = 1
        for d in f[3]:
            size *= d
        pos = 21
        while pos + 3 + size <= len(b):
            b[pos + 1:pos + 3] = struct.pack("<H", crc16(bytes(b[pos + 3:pos + 3 + size]), crc16(bytes(b[pos:pos + 1]))))
            pos += 3 + size
    return bytes(b)


def expected(b):
    """[(label or -1, network input)] per record, or None when the file must be refused."""
    f = header_fields(b)
    if f is None:
        return None
    kind, exp, n_classes, shape, count = f
    size = 1
    for d in shape:
        size *= d
    if len(b) != 21 + count * (3 + size):
        return None
    out = []
    for i in range(count):
        r = b[21 + i * (3 + size):21 + (i + 1) * (3 + size)]
        sample = r[3:]
        good = r[0] < n_classes and crc16(sample, crc16(r[:1])) == struct.unpack_from("<H", r, 1)[0]
        x = [(v >> 1) if kind == 0 else v - 256 * (v > 127) for v in sample]
        out.append((r[0] if good else -1, x))
    return out


def check_file(tmp_path, b):
    p = tmp_path / "f.pt8d"
    p.write_bytes(b)
    want = expected(b)
    try:
        ds = D.Dataset(str(p))
    except ValueError as e:
        assert str(e) and want is None, (e, want)
        return
    assert want is not None, "opened a file the format does not allow"
    with ds:
        x = ds.new_buffer()
        got = []
        for i in range(len(ds)):
            label = ds.read(i, x)
            got.append((label, list(x)))
        assert got == want
        assert ds.skipped == sum(1 for label, _ in want if label < 0)
        assert [(label, list(s)) for s, label in ds] == [r for r in want if r[0] >= 0]


@FUZZ
@given(b=st.binary(max_size=120))
def test_random_bytes_as_a_file(tmp_path, b):
    check_file(tmp_path, b)
    check_file(tmp_path, recompute_crcs(b"PT8D\x01" + b))


@FUZZ
@given(st.data())
def test_mutated_files_with_valid_crcs(tmp_path, data):
    body = data.draw(files())
    check_file(tmp_path, body)
    check_file(tmp_path, recompute_crcs(mutate(data.draw, body)))


def read_stream(b):
    """(labels yielded, skipped, lost, requests) of a StreamDataset over the bytes b, or the
    ValueError it raised at the header."""
    asked = []
    try:
        sd = StreamDataset(0, reader=io.BytesIO(b), out=lambda *words: asked.append(words))
    except ValueError as e:
        assert str(e)
        return e
    labels = []
    for x, label in sd.iterate(0):
        assert 0 <= label < sd.n_classes and len(x) == sd.sample_size
        labels.append(label)
    assert len(asked) <= len(b) + 2  # a window asked for is answered by bytes, or the epoch ends
    return labels, sd.skipped, sd.lost, len(asked)


@FUZZ
@given(b=st.binary(max_size=200))
def test_random_bytes_as_a_stream(b):
    read_stream(b)
    read_stream(bytes([FRAME_HEADER]) + b)


@FUZZ
@given(st.data())
def test_mutated_streams(data):
    f = data.draw(files())
    recs = expected(f)
    size = (len(f) - 21) // len(recs) if recs else 0
    frames = bytes([FRAME_HEADER]) + f[:21]
    for i in range(len(recs)):
        frames += bytes([FRAME_RECORD]) + f[21 + i * size:21 + (i + 1) * size]
    labels, skipped, lost, _ = read_stream(frames + bytes([FRAME_END]))
    assert labels == [label for label, _ in recs if label >= 0] and lost == 0
    read_stream(mutate(data.draw, frames))


def test_a_silent_host_ends_the_epoch():
    """A header that promises 2**32 - 1 records, then silence: one window is asked for, then
    the epoch ends with everything counted as lost (it asked window after window before)."""
    head = valid_file(1, (2,), 3, [])[:15] + struct.pack("<I", 0xFFFFFFFF)  # the count field
    head += struct.pack("<H", crc16(head))
    labels, skipped, lost, asked = read_stream(bytes([FRAME_HEADER]) + head)
    assert (labels, skipped, lost, asked) == ([], 0, 0xFFFFFFFF, 2)


def test_decode_record_refuses_wrong_sizes():
    h = D.parse_header(valid_file(1, (4,), 2, [])[:21])
    try:
        D.decode_record(bytes(6), array("b", bytes(4)), h)
    except ValueError as e:
        assert "expected 7 into 4" in str(e)
    else:
        raise AssertionError("a 6-byte record was decoded")
