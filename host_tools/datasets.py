"""Host-side datasets: MNIST (IDX), scikit-learn's 8x8 digits, rotation, the
fixed pretrain / transfer splits, and writing .pt8d files for the device.

Images are numpy uint8 arrays shaped (N, C, H, W), labels uint8 (N,).
docs/DATASETS.md states every rule used here (split, scaling, rotation).
"""

import binascii
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from picotrain import data as pt8d
from picotrain.rng import XorShift32

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_DIR = (REPO_ROOT / ".." / "shared" / "datasets" / "mnist").resolve()
MNIST_IMAGES = "t10k-images-idx3-ubyte"
MNIST_LABELS = "t10k-labels-idx1-ubyte"

SOURCES = ("mnist", "digits")
SPLITS = ("pretrain", "transfer-train", "transfer-test")
# Per source: (images in the source, transfer-train size, transfer-test size);
# pretraining gets the rest. MNIST's 1,024 + 1,024 is the PRIOT protocol.
SPLIT_SIZES = {"mnist": (10000, 1024, 1024), "digits": (1797, 256, 256)}
# The split is a fixed permutation from the library's PRNG, the same on every
# machine and numpy version. A permutation rather than file order because the
# first 5,000 MNIST test images are cleaner than the last 5,000.
SPLIT_SEED = 1


def read_idx(path):
    """Read an IDX file of unsigned bytes (gzip-compressed if named *.gz)."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # bad magic, truncated, corrupt
            raise ValueError(f"{path}: not a valid gzip file ({e})") from e
    # Magic: two zero bytes, type 0x08 (unsigned byte), number of dimensions.
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    expected = int(np.prod(dims))
    if len(raw) - start != expected:
        raise ValueError(f"{path}: IDX dimensions {dims} need {expected} bytes of data, "
                         f"found {len(raw) - start}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _mnist_file(folder, stem):
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"MNIST not found: {folder} has no {stem}.gz (the 10,000-image MNIST test set in "
        f"IDX format, see docs/DATASETS.md). Pass the folder with --mnist-dir, "
        f"or use --source digits.")


def load_mnist(folder=None):
    """The MNIST test set from `folder`: images (N, 1, 28, 28) and labels."""
    folder = Path(folder) if folder is not None else DEFAULT_MNIST_DIR
    images = read_idx(_mnist_file(folder, MNIST_IMAGES))
    labels = read_idx(_mnist_file(folder, MNIST_LABELS))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{folder}: MNIST images should be N x 28 x 28, not {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{folder}: {len(images)} images but labels shaped {labels.shape}")
    if labels.max(initial=0) > 9:
        raise ValueError(f"{folder}: MNIST label {labels.max()} is not a digit")
    return images[:, None], labels


def load_digits():
    """scikit-learn's bundled 8x8 digits: images (1797, 1, 8, 8) and labels.

    Pixels 0..16 are scaled to 0..255 with rounding: (v * 255 + 8) // 16.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    images = (d.images.astype(np.int64) * 255 + 8) // 16
    return images.astype(np.uint8)[:, None], d.target.astype(np.uint8)


def rotate(images, angle):
    """Rotate (N, C, H, W) uint8 images by `angle` degrees counter-clockwise.

    Each channel is rotated about its centre by PIL's Image.rotate with
    bilinear resampling, keeping the size; corners that come from outside the
    image are 0 (background). Multiples of 90 degrees are exact.
    """
    from PIL import Image

    out = np.empty_like(images)
    for i in tqdm(range(len(images)), desc=f"rotate {angle:g} deg", unit="img",
                  disable=None, leave=False):
        for c in range(images.shape[1]):
            img = Image.fromarray(images[i, c])
            out[i, c] = np.asarray(img.rotate(angle, resample=Image.Resampling.BILINEAR,
                                              fillcolor=0))
    return out


def split_indices(source, split):
    """Indices into the source's images for one split, in permutation order."""
    if source not in SPLIT_SIZES:
        raise ValueError(f"unknown source {source!r}; choose from {SOURCES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    n, n_train, n_test = SPLIT_SIZES[source]
    order = XorShift32(SPLIT_SEED).shuffle(list(range(n)))
    n_pre = n - n_train - n_test
    bounds = {"pretrain": (0, n_pre),
              "transfer-train": (n_pre, n_pre + n_train),
              "transfer-test": (n_pre + n_train, n)}
    lo, hi = bounds[split]
    return order[lo:hi]


def load_split(source, split, mnist_dir=None, angle=0, limit=None):
    """One split of a source, optionally rotated and cut to its first `limit` images."""
    images, labels = load_mnist(mnist_dir) if source == "mnist" else load_digits()
    n = SPLIT_SIZES[source][0]
    if len(images) != n:
        raise ValueError(f"the {source} split rule needs its {n} images, found {len(images)}")
    idx = split_indices(source, split)[:limit]
    images, labels = images[idx], labels[idx]
    if angle:
        images = rotate(images, angle)
    return images, labels


def encode_header(header):
    """The .pt8d header bytes for a picotrain.data.Header."""
    body = struct.pack(pt8d.HEADER_FIELDS, *header.fields())
    return body + struct.pack("<H", binascii.crc_hqx(body, pt8d.CRC_INIT))


def encode_record(sample, label):
    """One .pt8d record: label, CRC-16 of label + sample bytes, sample bytes.

    sample: uint8 pixels or int8 features (numpy array or array('b')); this
    is also the unit to send over a stream to picotrain.data.decode_record.
    """
    sample = np.asarray(sample)
    if sample.dtype not in (np.uint8, np.int8):
        raise TypeError(f"samples are uint8 images or int8 features, not {sample.dtype}")
    payload = sample.tobytes()
    # binascii.crc_hqx is CRC-16/CCITT-FALSE, the CRC picotrain.data checks.
    crc = binascii.crc_hqx(payload, binascii.crc_hqx(bytes([label]), pt8d.CRC_INIT))
    return struct.pack("<BH", label, crc) + payload


def write_pt8d(path, samples, labels, exp=None, n_classes=10):
    """Write samples (N, ...) and labels to a .pt8d file; return its Header.

    uint8 samples are images (the device feeds pixel >> 1 with exponent -7);
    int8 samples are features and need their exponent `exp`.
    """
    samples = np.asarray(samples)
    labels = np.asarray(labels)
    if samples.dtype == np.uint8:
        kind, exp = pt8d.KIND_IMAGE, pt8d.IMAGE_EXP if exp is None else exp
    elif samples.dtype == np.int8:
        if exp is None:
            raise ValueError("int8 features need their exponent (exp)")
        kind = pt8d.KIND_FEATURES
    else:
        raise TypeError(f"samples are uint8 images or int8 features, not {samples.dtype}")
    if len(labels) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(labels)} labels")
    if len(labels) and not (labels.min() >= 0 and labels.max() < n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}")
    header = pt8d.Header(kind, samples.shape[1:], int(exp), n_classes, len(samples))
    with open(path, "wb") as f:
        f.write(encode_header(header))
        for x, y in tqdm(zip(samples, labels), total=len(samples), desc=f"write {Path(path).name}",
                         unit="sample", disable=None, leave=False):
            f.write(encode_record(x, int(y)))
    return header


def to_samples(images, labels):
    """uint8 images -> [(array('b') network input, label)] for the mirror:
    int8 = pixel >> 1 (exponent -7), the rule of picotrain.data."""
    from array import array
    flat = (np.asarray(images).reshape(len(images), -1) >> 1).astype(np.int8)
    return [(array("b", flat[i].tobytes()), int(labels[i])) for i in range(len(labels))]
