"""Datasets on the device: the .pt8d file format, read in place.

A .pt8d file is a 21-byte header followed by fixed-size records (one label
byte, a CRC-16 of that record, then the sample bytes). docs/DATASETS.md
describes it byte by byte. Reading never loads the file: `Dataset.read(i, out)`
seeks to record i and reads the sample straight into the caller's array('b'),
then checks the CRC and converts it to the network's int8 input in the same
buffer, so a training loop can read samples while holding
`micropython.heap_lock()`.

A record whose CRC (or label) is wrong is not fatal: `read` returns -1 and
counts it in `skipped`. It returns a code rather than raising because raising
allocates an exception object, which fails under heap_lock.

The same check-and-decode code serves samples that arrive over a stream
(`decode_record`), so a file and the serial link validate samples alike.
"""

import struct
import sys
from array import array

MAGIC = b"PT8D"
VERSION = 1
KIND_IMAGE = 0  # uint8 pixels; the network sees pixel >> 1 with exponent -7
KIND_FEATURES = 1  # int8 values, used as stored, with the header's exponent
IMAGE_EXP = -7

# magic, version, kind, exponent, classes, ndim, dims (3, unused = 0), count
HEADER_FIELDS = "<4sBBbBB3HI"
HEADER_CRC_OFFSET = struct.calcsize(HEADER_FIELDS)  # 19
HEADER_SIZE = HEADER_CRC_OFFSET + 2
RECORD_PREFIX = 3  # label (u8), then the record's CRC-16 (u16, little-endian)

# CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection,
# no final XOR (check value 0x29B1 for b"123456789"; CPython's binascii.crc_hqx
# computes the same CRC, which the host writer uses).
CRC_INIT = 0xFFFF


def _crc_table():
    table = array("H", range(256))
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = (c << 1) ^ 0x1021 if c & 0x8000 else c << 1
        table[i] = c & 0xFFFF
    return table


_CRC_TABLE = _crc_table()  # 512 bytes, built once at import


def _crc_step(crc, byte):
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT-FALSE of a bytes-like object (continue from `crc`)."""
    for b in data:
        crc = _crc_step(crc, b)
    return crc


# _decode(src, off, dst, n, shift, crc): for each of the n sample bytes
# src[off:off + n], fold the raw byte into the CRC, then store it in dst as an
# int8: byte >> shift (shift 1 for images: 0..255 -> 0..127; shift 0 for
# features: the byte reinterpreted as two's complement). src may be dst (with
# off 0): each byte is read before it is overwritten. Returns the CRC.
# One pass does both jobs because on the Pico a per-byte loop is the cost.
if sys.implementation.name == "micropython":
    import micropython

    # Viper compiles to machine code: on the x64 unix port a 784-byte MNIST
    # record takes 4 us instead of 124 us as bytecode. It needs a port with
    # the native emitter (rp2, unix, esp32...), and mpy-cross needs -march
    # (armv6m for the Pico) to precompile this module.
    @micropython.viper
    def _decode(src, off: int, dst, n: int, shift: int, crc: int) -> int:
        s = ptr8(src)  # noqa: F821 (viper built-in)
        d = ptr8(dst)  # noqa: F821
        table = ptr16(_CRC_TABLE)  # noqa: F821
        for i in range(n):
            b = s[off + i]
            crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
            d[i] = b >> shift  # the low 8 bits are stored: int8 bit pattern
        return crc

else:

    def _decode(src, off, dst, n, shift, crc):
        table = _CRC_TABLE
        for i in range(n):
            b = src[off + i] & 0xFF  # array('b') yields signed values
            crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
            v = b >> shift
            dst[i] = v - ((v & 0x80) << 1)  # sign-extend the int8 bit pattern
        return crc


class Header:
    """What a .pt8d header says; constructing one validates it."""

    def __init__(self, kind, shape, exp, n_classes, count):
        if kind not in (KIND_IMAGE, KIND_FEATURES):
            raise ValueError("unknown sample kind %d" % kind)
        shape = tuple(shape)
        if not 1 <= len(shape) <= 3:
            raise ValueError("a sample has 1 to 3 dimensions, not %d" % len(shape))
        size = 1
        for d in shape:
            if not 1 <= d <= 0xFFFF:
                raise ValueError("dimension %d out of range 1..65535" % d)
            size *= d
        if not -128 <= exp <= 127:
            raise ValueError("exponent %d does not fit an int8" % exp)
        if kind == KIND_IMAGE and exp != IMAGE_EXP:
            raise ValueError("image files use exponent %d, not %d" % (IMAGE_EXP, exp))
        if not 1 <= n_classes <= 255:
            raise ValueError("n_classes %d out of range 1..255" % n_classes)
        if not 0 <= count <= 0xFFFFFFFF:
            raise ValueError("sample count %d out of range" % count)
        self.kind = kind
        self.shape = shape
        self.exp = exp
        self.n_classes = n_classes
        self.count = count
        self.sample_size = size
        self.record_size = RECORD_PREFIX + size
        self.shift = 1 if kind == KIND_IMAGE else 0

    def fields(self):
        """The values of HEADER_FIELDS, in order (the writer packs these)."""
        dims = self.shape + (0,) * (3 - len(self.shape))
        return (MAGIC, VERSION, self.kind, self.exp, self.n_classes,
                len(self.shape), dims[0], dims[1], dims[2], self.count)


def parse_header(buf):
    """Check and parse the HEADER_SIZE bytes at the start of a file or stream.

    Raises ValueError naming the problem: truncated, wrong magic, unsupported
    version, checksum mismatch, or a field out of range.
    """
    n = len(buf)
    # Each check needs only the bytes before it, so a short or foreign file gets
    # the most telling message its bytes allow.
    if n >= 4 and bytes(buf[:4]) != MAGIC:
        raise ValueError("not a .pt8d file: magic %r, expected %r" % (bytes(buf[:4]), MAGIC))
    if n >= 5 and buf[4] != VERSION:
        # Checked before the CRC: another version may lay its header out differently.
        raise ValueError("unsupported .pt8d version %d (this reader reads version %d)"
                         % (buf[4], VERSION))
    if n < HEADER_SIZE:
        raise ValueError("truncated .pt8d header: %d of %d bytes" % (n, HEADER_SIZE))
    stored = buf[HEADER_CRC_OFFSET] | (buf[HEADER_CRC_OFFSET + 1] << 8)
    computed = crc16(buf[:HEADER_CRC_OFFSET])
    if stored != computed:
        raise ValueError("corrupt .pt8d header: stored checksum 0x%04x, computed 0x%04x"
                         % (stored, computed))
    f = struct.unpack_from(HEADER_FIELDS, buf)
    ndim = f[5]
    if not 1 <= ndim <= 3:
        raise ValueError("a sample has 1 to 3 dimensions, not %d" % ndim)
    return Header(f[2], f[6:6 + ndim], f[3], f[4], f[9])


def _check(prefix, src, off, out, header):
    # prefix: the record's label and CRC bytes; src[off:]: its sample bytes.
    label = prefix[0]
    crc = _decode(src, off, out, header.sample_size, header.shift,
                  _crc_step(CRC_INIT, label))
    if crc != prefix[1] | (prefix[2] << 8) or label >= header.n_classes:
        return -1
    return label


def decode_record(buf, out, header):
    """Check one record (bytes as in a file: label, CRC, sample) and decode it.

    Writes the network input into `out` (array('b') of header.sample_size) and
    returns the label, or -1 if the record is corrupt. Allocates nothing.
    """
    if len(buf) != header.record_size or len(out) != header.sample_size:
        raise ValueError("record of %d bytes into %d: expected %d into %d"
                         % (len(buf), len(out), header.record_size, header.sample_size))
    return _check(buf, buf, RECORD_PREFIX, out, header)


class _Samples:
    """What both datasets share: the buffer, iteration and `with` support."""

    def new_buffer(self):
        """A zeroed array('b') the size of one sample, for read()."""
        return array("b", bytes(self.sample_size))

    def samples(self, order=None):
        """Yield (x, label) for each good sample, in `order` (default 0..n-1).

        x is one array('b') reused for every sample, and each item is the
        same 2-item list updated in place: unpack it (`for x, y in ...`), do
        not keep it. After the first item, iterating allocates nothing.
        Corrupt records are skipped (and counted in `skipped`). For a shuffled
        epoch: order = list(range(len(ds))); rng.shuffle(order), with
        picotrain.rng.XorShift32 (shuffling the same list again each epoch
        allocates nothing).
        """
        x = self.new_buffer()
        item = [x, 0]
        for i in range(len(self)) if order is None else order:
            label = self.read(i, x)
            if label >= 0:
                item[1] = label
                yield item

    def __iter__(self):
        # So a dataset can go straight to Trainer.epoch/fit and evaluate().
        return self.samples()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Dataset(_Samples):
    """A .pt8d file, read one record at a time into caller-owned buffers.

    Raises ValueError if the header is bad or the file size does not match
    it. Attributes: header, kind, shape, exp, n_classes, sample_size, and
    skipped (how many times read() met a corrupt record).
    """

    def __init__(self, path):
        f = open(path, "rb")
        try:
            h = parse_header(f.read(HEADER_SIZE))
            size = f.seek(0, 2)
            expected = HEADER_SIZE + h.count * h.record_size
            if size < expected:
                raise ValueError("truncated .pt8d file: %d records of %d bytes need %d "
                                 "bytes, file has %d" % (h.count, h.record_size, expected, size))
            if size > expected:
                raise ValueError("%d unexpected bytes after the %d records of the .pt8d file"
                                 % (size - expected, h.count))
        except Exception:
            f.close()
            raise
        self._f = f
        self._prefix = bytearray(RECORD_PREFIX)
        self.header = h
        self.kind = h.kind
        self.shape = h.shape
        self.exp = h.exp
        self.n_classes = h.n_classes
        self.sample_size = h.sample_size
        self.skipped = 0

    def __len__(self):
        return self.header.count

    def read(self, i, out):
        """Read record i into `out` as network input; return its label or -1.

        out: array('b') of exactly sample_size items. Allocates nothing.
        """
        h = self.header
        if not 0 <= i < h.count:
            raise IndexError("record %d of %d" % (i, h.count))
        if len(out) != h.sample_size:
            raise ValueError("buffer of %d, samples have %d" % (len(out), h.sample_size))
        f = self._f
        f.seek(HEADER_SIZE + i * h.record_size)
        if f.readinto(self._prefix) != RECORD_PREFIX or f.readinto(out) != h.sample_size:
            raise OSError("short read at record %d: the file changed since it was opened" % i)
        label = _check(self._prefix, out, 0, out, h)
        if label < 0:
            self.skipped += 1
        return label

    def close(self):
        self._f.close()


class ArrayDataset(_Samples):
    """Samples already in RAM, with the same interface as Dataset.

    xs: list of array('b') (network inputs, already int8), labels: ints,
    shape: the shape of one sample, exp: their exponent. n_classes defaults
    to max(labels) + 1.
    """

    def __init__(self, xs, labels, shape, exp, n_classes=None):
        if len(xs) != len(labels):
            raise ValueError("%d samples but %d labels" % (len(xs), len(labels)))
        size = 1
        for d in shape:
            size *= d
        for x in xs:
            if len(x) != size:
                raise ValueError("sample of %d values, shape needs %d" % (len(x), size))
        self.xs = xs
        self.labels = labels
        self.shape = tuple(shape)
        self.exp = exp
        self.n_classes = max(labels) + 1 if n_classes is None else n_classes
        self.kind = KIND_FEATURES
        self.sample_size = size
        self.skipped = 0  # nothing in RAM is corrupt; kept for the shared interface

    def __len__(self):
        return len(self.xs)

    def read(self, i, out):
        """Copy sample i into `out`; return its label. Allocates nothing."""
        if len(out) != self.sample_size:
            raise ValueError("buffer of %d, samples have %d" % (len(out), self.sample_size))
        x = self.xs[i]
        # An element loop, because slice assignment allocates on MicroPython.
        for j in range(self.sample_size):
            out[j] = x[j]
        return self.labels[i]

    def close(self):
        pass
