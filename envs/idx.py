"""Real data from local IDX files (MNIST, Fashion-MNIST, EMNIST, ...), never downloaded.

``load_idx_dataset(images_path, labels_path)`` reads the standard big-endian IDX format
(optionally gzipped). ``IDXFamily`` turns the arrays into a sprite family with the same
factor columns and variants as the procedural ones (class = label, style = example index,
position when moving), and ``register_idx_domain("mnist", ...)`` makes ``"mnist"``,
``"moving_mnist"``, ``"inverted_mnist"``... usable in streams and environments.

    register_idx_domain("mnist", "~/data/mnist")          # finds train-images-idx3-ubyte[.gz]
    stream = make_stream(["moving_garments", "mnist", "moving_mnist"], batch_size=64)
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .domains import register_family
from .families import SpriteFamily, resize_sprites, validate_image_args

__all__ = [
    "IDXDataset",
    "IDXFamily",
    "load_idx",
    "save_idx",
    "load_idx_dataset",
    "find_idx_files",
    "register_idx_domain",
]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}

_MISSING_HINT = (
    "vase_rl never downloads data: fetch the IDX files yourself (e.g. MNIST's train-images-idx3-ubyte.gz and "
    "train-labels-idx1-ubyte.gz) and pass their local paths"
)


class IDXDataset(NamedTuple):
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray | None  # (N,) int64


def _open(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def load_idx(path) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into a numpy array in native byte order."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}. {_MISSING_HINT}.")
    with _open(path) as fh:
        header = fh.read(4)
        if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in _DTYPES:
            raise ValueError(f"{path} is not an IDX file (bad magic number {header!r})")
        dtype = _DTYPES[header[2]]
        ndim = header[3]
        dims = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
        count = int(np.prod(dims)) if dims else 1
        raw = fh.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(
            f"{path} is truncated: expected {count} values of shape {dims}, got {len(raw) // dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def save_idx(path, array: np.ndarray) -> Path:
    """Write an array as an IDX file (gzipped when the name ends in .gz). Used by the tests."""
    path = Path(os.path.expanduser(str(path)))
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}; use uint8, int8, int16, int32, float32 or float64")
    data = arr.astype(native.newbyteorder(">") if native.itemsize > 1 else native).tobytes()
    header = bytes([0, 0, _CODES[native], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + data)
    return path


def load_idx_dataset(images_path, labels_path=None) -> IDXDataset:
    """Images (N, H, W) uint8 and optional labels (N,) int64 from local IDX files."""
    images = load_idx(images_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected an IDX image file of shape (N, H, W), got shape {images.shape}")
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise ValueError(f"{images_path}: image values must lie in [0, 255]")
        images = images.astype(np.uint8)
    labels = None
    if labels_path is not None:
        labels = load_idx(labels_path)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"{labels_path}: expected {len(images)} labels (one per image) in a 1-D IDX file, got shape {labels.shape}"
            )
        labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise ValueError(f"{labels_path}: labels must be non-negative")
    return IDXDataset(images, labels)


def find_idx_files(root, split: str = "train") -> tuple[Path, Path]:
    """Standard MNIST/Fashion-MNIST names in ``root``: ``{train|t10k}-{images-idx3|labels-idx1}-ubyte[.gz]``."""
    root = Path(os.path.expanduser(str(root)))
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test' (alias 't10k'), got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"IDX directory not found: {root}. {_MISSING_HINT}.")
    found = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        cands = [root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            present = sorted(p.name for p in root.iterdir())[:20]
            raise FileNotFoundError(f"missing IDX file {stem}[.gz] in {root} (found: {present}). {_MISSING_HINT}.")
        found.append(hit)
    return found[0], found[1]


class IDXFamily(SpriteFamily):
    """A family over a fixed set of images (e.g. MNIST), with the standard factor columns.

    Static: each image is resized to fill the frame, like the original dataset. Moving: it is
    shrunk to ``sprite_size`` of the frame (default 0.6) and placed uniformly. Class = label
    (0 when there are none), style = example index; scale and rotation are constant.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        image_size: int = 32,
        channels: int = 1,
        seed: int = 0,
        *,
        name: str = "idx",
        class_names: tuple[str, ...] | None = None,
        sprite_size: float | None = None,
        moving: bool = False,
        **variant,
    ):
        size, _ = validate_image_args(image_size, channels)
        images = np.asarray(images)
        if images.ndim != 3 or len(images) == 0 or images.dtype != np.uint8:
            raise ValueError(f"images must be a non-empty (N, H, W) uint8 array, got {images.dtype} {images.shape}")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(images),) or labels.min() < 0:
                raise ValueError(f"labels must be (N,) = ({len(images)},) non-negative integers, got {labels.shape}")
        frac = sprite_size if sprite_size is not None else (0.6 if moving else 1.0)
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"sprite_size is a fraction of the image side in (0, 1], got {sprite_size!r}")
        self.images = images
        self.labels_array = labels if labels is not None else np.zeros(len(images), dtype=np.int64)
        n_classes = int(self.labels_array.max()) + 1
        if class_names is None:
            class_names = tuple(str(i) for i in range(n_classes))
        if len(class_names) < n_classes:
            raise ValueError(f"{len(class_names)} class names for labels up to {n_classes - 1}")
        self._class_names = tuple(class_names)
        super().__init__(
            name, size, channels, seed, patch_size=max(4, int(round(frac * size))), moving=moving, **variant
        )
        self._resized: np.ndarray | None = None

    @classmethod
    def from_files(cls, images_path, labels_path=None, **kwargs) -> IDXFamily:
        data = load_idx_dataset(images_path, labels_path)
        return cls(data.images, data.labels, **kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    def _identity_values(self):
        return [np.arange(len(self._class_names)), np.arange(len(self.images)), np.ones(1), np.zeros(1)]

    def _sample_identity(self, n, rng):
        idx = np.zeros((n, 4), dtype=np.int64)
        idx[:, 1] = rng.integers(0, len(self.images), size=n)
        idx[:, 0] = self.labels_array[idx[:, 1]]
        return idx

    def _patches(self, idx):
        sel = idx[:, 1]
        p = self.patch_size
        if self._resized is None and len(self.images) * p * p <= 64 * 2**20:
            self._resized = resize_sprites(self.images, p)
        if self._resized is not None:
            return self._resized[sel]
        return resize_sprites(self.images[sel], p)


def register_idx_domain(
    name: str,
    images_path,
    labels_path=None,
    *,
    split: str = "train",
    class_names: tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> None:
    """Make ``name`` and its variants (``moving_<name>``, ``inverted_<name>``...) usable as domains.

    ``images_path`` is an IDX image file or a directory holding the standard file names (then
    ``split`` picks train or test and ``labels_path`` is found there too). The files are read
    once, now; a missing file raises FileNotFoundError naming it.
    """
    images_path = Path(os.path.expanduser(str(images_path)))
    if images_path.is_dir():
        images_path, found_labels = find_idx_files(images_path, split)
        labels_path = labels_path or found_labels
    data = load_idx_dataset(images_path, labels_path)

    def factory(image_size=32, channels=1, seed=0, name=name, **variant):
        return IDXFamily(
            data.images, data.labels, image_size, channels, seed, name=name, class_names=class_names, **variant
        )

    register_family(name, factory, overwrite=overwrite)
