"""Readers for image datasets stored as local files.

* IDX (MNIST, Fashion-MNIST; ``.gz`` or plain) -- :func:`read_idx`,
  :func:`load_idx_folder`.
* CIFAR-10 binary version (``*.bin`` batches) -- :func:`load_cifar10_folder`.
* A folder of image files, optionally one sub-folder per class --
  :func:`load_image_folder`.
* A NumPy ``.npz`` archive -- :func:`load_npz`.

All return images as ``uint8`` in [0, 255] (``.npz`` may also hold float in
[0, 1]); :meth:`ImageDataset.to_tf_dataset` turns them into ``float32`` in
[0, 1].
"""

from __future__ import annotations

import gzip
import logging
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae.data.image_dataset import ImageDataset, from_numpy
from tfvqvae.data.image_ops import IMAGE_SUFFIXES, decode_image
from tfvqvae.data.transform import check_options, convert_channels, convert_image
from tfvqvae.validation import one_of

__all__ = [
    "read_idx",
    "load_idx_folder",
    "load_cifar10_folder",
    "load_image_folder",
    "load_npz",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")

# IDX type codes (third byte of the magic number) -> big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_CIFAR_RECORD_BYTES = 1 + 32 * 32 * 3
_IMAGE_SUFFIXES = IMAGE_SUFFIXES


def _check_split(split) -> str:
    return one_of("split", split, SPLITS)


def _existing_dir(directory) -> Path:
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"directory not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"not a directory: {path}")
    return path


def _read_bytes(path: Path) -> bytes:
    """Reads a file, transparently decompressing gzip (detected by its magic)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"corrupt or truncated gzip file {path}: {err}") from err


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzip-compressed or plain.

    The header is parsed generally: a big-endian 4-byte magic number whose
    first two bytes are zero, third byte the type code (0x08 ubyte, 0x09 byte,
    0x0B short, 0x0C int, 0x0D float, 0x0E double) and fourth byte the number
    of dimensions, then one big-endian ``uint32`` size per dimension. So
    images have magic 2051 (ubyte, 3 dims) and labels 2049 (ubyte, 1 dim).

    Args:
        path: File path; gzip is detected from the content, not the suffix.

    Returns:
        The array in native byte order with the shape from the header
        (``uint8`` arrays are read-only views of the file's bytes).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On a bad magic number or type code, or when the data size
            differs from what the header announces (truncated or padded file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"IDX file {path} is too short for a header: expected at least 4 bytes, "
            f"received {len(data)}"
        )
    magic = int.from_bytes(data[:4], "big")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"bad IDX magic number {magic} (0x{magic:08X}) in {path}: expected two zero "
            "bytes, a type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} and a non-zero number of dimensions "
            "(e.g. 2051 for images, 2049 for labels)"
        )
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise ValueError(
            f"IDX file {path} is truncated: expected a {header_bytes}-byte header, "
            f"received {len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header_bytes + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"IDX file {path} has the wrong size for its header shape {shape}: "
            f"expected {expected} bytes, received {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype, offset=header_bytes).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def _find_idx_file(directory: Path, prefix: str, kind: str, ndim: int) -> Path:
    """Finds e.g. ``train-images-idx3-ubyte`` with or without ``.gz`` / dot variant."""
    stems = (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte")
    candidates = [directory / (stem + ext) for stem in stems for ext in (".gz", "")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no IDX {kind} file for prefix {prefix!r} in {directory}: looked for "
        + ", ".join(c.name for c in candidates)
    )


def load_idx_folder(directory, split: str = "train", name: str | None = None) -> ImageDataset:
    """Loads an MNIST-style folder of IDX files.

    The folder holds ``train-images-idx3-ubyte(.gz)``,
    ``train-labels-idx1-ubyte(.gz)``, ``t10k-images-idx3-ubyte(.gz)`` and
    ``t10k-labels-idx1-ubyte(.gz)`` (MNIST and Fashion-MNIST layout).

    Args:
        directory: The folder.
        split: ``"train"`` or ``"test"`` (the ``t10k`` files).
        name: Dataset name; defaults to the folder's name.

    Returns:
        ``uint8`` images in [0, 255] of shape ``(N, rows, cols, 1)``, ``int64``
        labels, ``num_classes=10``.

    Raises:
        FileNotFoundError: If the folder or one of the two files is missing.
        ValueError: On a bad split, a bad or truncated file, or image and
            label counts that differ.
    """
    split = _check_split(split)
    directory = _existing_dir(directory)
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx_file(directory, prefix, "images", 3)
    labels_path = _find_idx_file(directory, prefix, "labels", 1)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} must hold uint8 images of shape (N, rows, cols); "
            f"received dtype {images.dtype} and shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path} must hold {images.shape[0]} labels (one per image); "
            f"received shape {labels.shape}"
        )
    logger.debug("read %d %s images from %s", images.shape[0], split, directory)
    return ImageDataset(
        images=images[..., np.newaxis],
        labels=labels,
        name=name or directory.resolve().name,
        num_classes=10,
    )


def load_cifar10_folder(directory, split: str = "train") -> ImageDataset:
    """Loads CIFAR-10 in its binary version (``*.bin`` batches).

    Each record is 3073 bytes: one label byte, then 1024 red, 1024 green and
    1024 blue bytes, each a 32 x 32 row-major plane. The train split is every
    ``data_batch_*.bin`` (sorted by name), the test split every
    ``test_batch*.bin``.

    Args:
        directory: The folder holding the batches.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``uint8`` images in [0, 255] of shape ``(N, 32, 32, 3)`` (HWC),
        ``int64`` labels, ``num_classes=10``.

    Raises:
        FileNotFoundError: If the folder or the split's batches are missing.
        ValueError: On a bad split or a file whose size is not a multiple of
            3073 bytes.
    """
    split = _check_split(split)
    directory = _existing_dir(directory)
    pattern = "data_batch_*.bin" if split == "train" else "test_batch*.bin"
    files = sorted(directory.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 {split} batches matching {pattern!r} in {directory}")
    images, labels = [], []
    for path in files:
        size = path.stat().st_size
        if size % _CIFAR_RECORD_BYTES:
            raise ValueError(
                f"CIFAR-10 batch {path} has {size} bytes, not a multiple of the "
                f"{_CIFAR_RECORD_BYTES}-byte record (truncated or not the binary version)"
            )
        records = np.fromfile(path, np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
        labels.append(records[:, 0])
        planes = records[:, 1:].reshape(-1, 3, 32, 32)
        images.append(np.ascontiguousarray(planes.transpose(0, 2, 3, 1)))
    logger.debug("read %d CIFAR-10 %s batches from %s", len(files), split, directory)
    return ImageDataset(
        images=np.concatenate(images) if len(images) > 1 else images[0],
        labels=np.concatenate(labels),
        name="cifar10",
        num_classes=10,
    )


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_image(path: Path) -> np.ndarray:
    """Decodes one image file to ``uint8`` ``(H, W, C)``, C in 1..4 (GIF: first frame)."""
    try:
        image = decode_image(tf.io.read_file(str(path)))
    except (tf.errors.OpError, OSError) as err:
        reason = getattr(err, "message", None) or str(err)
        # Drop TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix.
        reason = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:.*$", "", reason, flags=re.S)
        reason = " ".join(reason.split()) or type(err).__name__
        raise ValueError(f"Cannot read image file {path}: {reason}") from err
    return image.numpy()


def _describe_sizes(sizes: dict, directory: Path) -> str:
    """``"40x40 (a.png, b.png), 36x48 (c.png)"``: each size with up to two example files."""
    parts = []
    for (height, width), paths in list(sizes.items())[:4]:
        examples = ", ".join(str(p.relative_to(directory)) for p in paths[:2])
        more = f", +{len(paths) - 2} more" if len(paths) > 2 else ""
        parts.append(f"{height}x{width} ({examples}{more})")
    if len(sizes) > 4:
        parts.append(f"and {len(sizes) - 4} more sizes")
    return ", ".join(parts)


def load_image_folder(
    directory,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    crop: str = "none",
) -> ImageDataset:
    """Loads a whole folder of image files (PNG, JPEG, BMP, GIF, WebP) into memory.

    For small folders and tests; ``load_dataset("folder:PATH")`` streams a
    folder of any size instead (:func:`~tfvqvae.data.open_image_folder`),
    with the same images in the same order.

    Two layouts: one sub-folder per class (``root/<class>/*.png``; labels are
    the index of the class folder in sorted order, hidden folders ignored), or
    a flat folder of images (no labels). Files are read in sorted order; a GIF
    gives its first frame; 16-bit PNGs are scaled to 8 bits.

    Colour: alpha is dropped (not composited), so every image ends up grey
    (1 channel) or RGB (3). Without ``channels`` a folder mixing modes (L,
    LA, RGB, RGBA, palette) is unified to its widest mode: RGB when any file
    has colour (grey files replicated), else grey. Conversions follow
    :mod:`tfvqvae.data.transform` (luminance by ITU-R 601-2, as PIL's "L").

    Args:
        directory: The root folder.
        image_size: ``(height, width)`` or an int (square); when given every
            image is resized to it at load time (bilinear ``tf.image.resize``,
            antialiased when shrinking; rounded to ``uint8``). Without it all
            images must share one size.
        channels: ``1`` (grey) or ``3`` (RGB) to convert every image;
            ``None`` applies the widest-mode rule above.
        crop: ``"none"`` resizes the whole image (aspect ratio not kept);
            ``"center"`` first cuts the largest centred window of the target
            aspect ratio. Needs ``image_size`` when not ``"none"``.

    Returns:
        ``uint8`` images in [0, 255] of shape ``(N, H, W, C)`` with ``C`` 1 or
        3; labels and ``num_classes`` for the class layout, else ``None``.

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: If no image is found; on a bad ``image_size``,
            ``channels`` or ``crop``; on an unreadable file ("Cannot read image
            file PATH: reason"); or when images differ in size and no
            ``image_size`` is given (the message lists the sizes found with
            example files).
    """
    directory = _existing_dir(directory)
    target, channels, crop = check_options(image_size, channels, crop)

    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries: list[tuple[Path, int | None]] = []
    if class_dirs:
        for index, class_dir in enumerate(class_dirs):
            entries.extend((p, index) for p in _image_files(class_dir))
        stray = _image_files(directory)
        if stray and entries:
            logger.warning(
                "%s: %d image files beside the class folders are ignored", directory, len(stray)
            )
    if not entries:
        class_dirs = []
        entries = [(p, None) for p in _image_files(directory)]
    if not entries:
        raise ValueError(
            f"no image files ({', '.join(_IMAGE_SUFFIXES)}) found in {directory} "
            "or its class sub-folders"
        )

    images = []
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path, _ in entries:
        image = _read_image(path)
        # Alpha dropped; an explicit `channels` converts now, else the widest
        # mode is applied below (grey -> RGB commutes with resizing).
        image = convert_channels(image, channels or (3 if image.shape[-1] >= 3 else 1))
        if target is not None:
            image = convert_image(image, target, None, crop)
        sizes.setdefault(image.shape[:2], []).append(path)
        images.append(image)
    if len(sizes) > 1:
        raise ValueError(
            f"images in {directory} differ in size (height x width): "
            f"{_describe_sizes(sizes, directory)}; pass image_size=(height, width) "
            "(CLI: --image-size) to resize them when loading (crop='center' keeps "
            "their aspect ratio)"
        )
    if channels is None and len({image.shape[-1] for image in images}) > 1:
        images = [convert_channels(image, 3) for image in images]

    labels = None
    if class_dirs:
        labels = np.array([label for _, label in entries], np.int64)
    logger.debug("read %d images from %s", len(images), directory)
    return ImageDataset(
        images=np.stack(images),
        labels=labels,
        name=directory.resolve().name,
        num_classes=len(class_dirs) if class_dirs else None,
    )


def load_npz(path, split: str | None = None, name: str | None = None) -> ImageDataset:
    """Loads images (and optionally labels) from a NumPy ``.npz`` archive.

    Images are read from key ``images`` or ``x``, labels from ``labels`` or
    ``y`` when present. With ``split`` given, the split-suffixed keys
    (``images_<split>`` / ``x_<split>`` with labels ``labels_<split>`` /
    ``y_<split>``, the layout of Keras' ``mnist.npz``) are tried first; the
    unsuffixed keys count as the ``"train"`` split only.

    Args:
        path: The ``.npz`` file.
        split: Optional split name, e.g. ``"train"`` or ``"test"``.
        name: Dataset name; defaults to the file's stem.

    Returns:
        The dataset (``uint8`` in [0, 255] or ``float32`` in [0, 1]); see
        :func:`from_numpy` for accepted arrays.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable ``.npz``, no image key fits
            (the message lists the keys found), an array holds pickled
            objects (``dtype=object``; never loaded), float images lie
            outside [0, 1] (the message names the file and the range
            received), or the arrays are otherwise invalid.
        TypeError: On an unsupported image dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    # (image key, label keys that go with it), in order of preference.
    candidates = []
    if split is not None:
        candidates += [
            (f"images_{split}", (f"labels_{split}", f"y_{split}")),
            (f"x_{split}", (f"y_{split}", f"labels_{split}")),
        ]
    if split in (None, "train"):
        candidates += [("images", ("labels", "y")), ("x", ("y", "labels"))]
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"Cannot read npz file {path}: {' '.join(str(err).split())}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} is a single .npy array, not an .npz archive; save it with "
            "np.savez(path, images=...)"
        )
    with archive:
        keys = list(archive.files)
        found = next(((ik, lks) for ik, lks in candidates if ik in keys), None)
        if found is None:
            raise ValueError(
                f"{path} has no image array under any of {[c[0] for c in candidates]}; "
                f"keys found: {keys}"
            )
        image_key, label_key = found[0], next((k for k in found[1] if k in keys), None)
        arrays = {}
        for key in (image_key, label_key):
            if key is None:
                continue
            try:
                arrays[key] = archive[key]
            except ValueError as err:
                if "allow_pickle" not in str(err):
                    raise ValueError(f"Cannot read array {key!r} of {path}: {err}") from err
                raise ValueError(
                    f"array {key!r} of {path} holds pickled Python objects (dtype=object); "
                    "object arrays are not accepted (they could run code when loaded): "
                    "save numeric arrays, uint8 in [0, 255] or float in [0, 1]"
                ) from err
    images = arrays[image_key]
    labels = arrays.get(label_key) if label_key is not None else None
    if np.issubdtype(images.dtype, np.floating) and images.size:
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (lo >= 0.0 and hi <= 1.0):  # written so that NaN also fails
            hint = " (looks like [0, 255]: divide by 255 or store uint8)" if hi > 1.0 else ""
            raise ValueError(
                f"float images in {path} (key {image_key!r}) must lie in [0, 1], or be "
                f"stored as uint8 in [0, 255]; received min {lo} and max {hi}{hint}"
            )
    return from_numpy(images, labels, name=name or path.stem)
