"""Load-time image conversion: one size and one colour mode for a whole dataset.

Every loader reached through :func:`tfvqvae.data.load_dataset` accepts
``image_size``, ``channels`` and ``crop`` and applies them here, once, to the
in-memory arrays (image folders and TFDS datasets of varying size: image by
image, as they are read).

Resizing: bilinear ``tf.image.resize`` with ``antialias=True`` when the image
shrinks in either dimension (the filter :meth:`ImageDataset.to_tf_dataset`
uses), computed in ``float32``; ``uint8`` results are rounded to the nearest
integer and clipped to [0, 255], ``float32`` results clipped to [0, 1].

Cropping (``crop``):

* ``"none"``: the whole image is resized to ``(height, width)``; the aspect
  ratio is not kept.
* ``"center"``: the largest centred window of the target aspect ratio
  ``width / height`` is cut out first (offsets rounded down), then resized.

Colour (``channels``):

* Alpha is **dropped** (not composited): a 2-channel image is read as grey +
  alpha and keeps channel 0, a 4-channel image as RGBA and keeps channels 0-2,
  as PIL's ``convert("L")`` / ``convert("RGB")`` do.
* ``1``: RGB becomes luminance by ITU-R 601-2,
  ``L = 0.299 R + 0.587 G + 0.114 B``; for ``uint8`` with PIL's fixed-point
  rounding, ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, so the result
  equals ``PIL.Image.convert("L")``.
* ``3``: grey is replicated into R, G and B.
* ``None``: arrays keep their channels; an image folder is unified to its
  widest mode (RGB when any file has colour, else grey), alpha dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfvqvae.validation import one_of

__all__ = [
    "CROPS",
    "CHANNELS",
    "check_options",
    "convert_channels",
    "convert_image",
    "convert_images",
    "crop_window",
    "normalize_size",
    "transform_dataset",
]

#: Accepted values of ``crop``.
CROPS = ("none", "center")
#: Accepted values of ``channels`` (``None`` keeps the source's channels).
CHANNELS = (1, 3)

# Images resized per tf.image.resize call (bounds the float32 working copy).
_CHUNK = 1024
# ITU-R 601-2 luma weights: float, and PIL's 16-bit fixed point (sum 65536).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_LUMA_FIXED = np.array([19595, 38470, 7471], np.uint32)


def normalize_size(image_size) -> tuple[int, int]:
    """Turns ``image_size`` (an int, or a ``(height, width)`` pair) into ``(h, w)``.

    Raises:
        ValueError: Unless ``image_size`` is a positive int or a pair of
            positive ints (message: "`image_size` must be ... Received:
            image_size=...").
    """
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, (bool, np.bool_)):
        size = (image_size, image_size)
    elif isinstance(image_size, (Sequence, np.ndarray)) and not isinstance(image_size, str):
        size = tuple(image_size)
    else:
        size = ()
    if len(size) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s > 0
        for s in size
    ):
        raise ValueError(
            "`image_size` must be a positive int or a (height, width) pair of positive ints. "
            f"Received: image_size={image_size!r}"
        )
    return int(size[0]), int(size[1])


def check_options(image_size=None, channels=None, crop="none", streamed=False):
    """Validates the load-time options and returns ``(size or None, channels, crop)``.

    Args:
        image_size: ``None``, an int (square) or ``(height, width)``.
        channels: ``None``, ``1`` or ``3``.
        crop: ``"none"`` or ``"center"`` (or ``"random"`` with ``streamed``);
            ``"center"`` and ``"random"`` need ``image_size``.
        streamed: also accept ``"random"`` (the streamed sources' per-batch
            random window).

    Returns:
        ``((h, w) or None, channels, crop)``.

    Raises:
        ValueError: On any other value, naming the option and the value.
    """
    size = None if image_size is None else normalize_size(image_size)
    if channels is not None and (
        isinstance(channels, (bool, np.bool_)) or channels not in CHANNELS
    ):
        raise ValueError(
            "`channels` must be 1 (grey), 3 (RGB) or None (keep). "
            f"Received: channels={channels!r}"
        )
    one_of("crop", crop, CROPS + (("random",) if streamed else ()))
    if crop != "none" and size is None:
        raise ValueError(
            f"`crop={crop!r}` needs an image_size (CLI: --image-size) to take the aspect "
            "ratio from. Received: image_size=None"
        )
    return size, None if channels is None else int(channels), crop


def crop_window(height: int, width: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred window of ``target``'s aspect ratio inside ``height x width``.

    Args:
        height, width: The image size in pixels.
        target: ``(h, w)``; only the ratio ``w / h`` matters.

    Returns:
        ``(top, left, crop_height, crop_width)`` in pixels; the crop side is
        rounded to the nearest pixel (at least 1) and the offsets rounded down.
    """
    th, tw = target
    if width * th > height * tw:  # image wider than the target: cut the sides
        ch, cw = height, max(1, min(width, round(height * tw / th)))
    else:  # image taller (or same ratio): cut top and bottom
        ch, cw = max(1, min(height, round(width * th / tw))), width
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """Converts the last axis of ``images`` to ``channels`` (see the module notes).

    Args:
        images: ``(..., C)`` array, ``uint8`` in [0, 255] or ``float32`` in
            [0, 1], with ``C`` in 1 (grey), 2 (grey + alpha), 3 (RGB) or
            4 (RGBA).
        channels: ``1``, ``3`` or ``None`` (returns ``images`` unchanged).

    Returns:
        ``(..., channels)`` array of the same dtype (a view when only alpha is
        dropped).

    Raises:
        ValueError: When ``C`` is not 1 to 4 and ``channels`` is given.
    """
    if channels is None:
        return images
    c = images.shape[-1]
    if c not in (1, 2, 3, 4):
        raise ValueError(
            f"cannot convert {c}-channel images (shape {images.shape}) to channels={channels}: "
            "expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels"
        )
    if c in (2, 4):  # drop alpha
        images = images[..., : c - 1]
        c -= 1
    if c == channels:
        return images
    if channels == 3:  # grey -> RGB
        return np.repeat(images, 3, axis=-1)
    if images.dtype == np.uint8:  # RGB -> L, PIL's fixed-point rounding
        weighted = images.astype(np.uint32) @ _LUMA_FIXED + np.uint32(32768)
        return (weighted >> 16).astype(np.uint8)[..., np.newaxis]
    grey = images.astype(np.float32) @ _LUMA
    return np.clip(grey, 0.0, 1.0).astype(np.float32)[..., np.newaxis]


def _resize(images: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Resizes ``(N, H, W, C)`` images (already cropped) to ``target``, same dtype."""
    height, width = images.shape[1:3]
    antialias = target[0] < height or target[1] < width
    out = np.empty((images.shape[0], *target, images.shape[-1]), images.dtype)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = tf.convert_to_tensor(images[start : start + _CHUNK].astype(np.float32))
        resized = tf.image.resize(chunk, target, method="bilinear", antialias=antialias).numpy()
        if images.dtype == np.uint8:
            out[start : start + _CHUNK] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
        else:
            out[start : start + _CHUNK] = np.clip(resized, 0.0, 1.0)
    return out


def convert_images(
    images: np.ndarray,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    crop: str = "none",
) -> np.ndarray:
    """Converts a batch of same-sized images to one colour mode and size.

    Args:
        images: ``(N, H, W, C)`` array, ``uint8`` in [0, 255] or ``float32``
            in [0, 1].
        image_size: Target ``(height, width)`` from :func:`check_options`, or
            ``None`` to keep the size.
        channels: ``1``, ``3`` or ``None`` (keep).
        crop: ``"none"`` or ``"center"``.

    Returns:
        ``(N, height, width, channels)`` array of the input dtype (the input
        itself when nothing changes).

    Raises:
        ValueError: As :func:`convert_channels`.
    """
    images = convert_channels(images, channels)
    if image_size is None:
        return images
    height, width = images.shape[1:3]
    if crop == "center":
        top, left, ch, cw = crop_window(height, width, image_size)
        images = images[:, top : top + ch, left : left + cw]
        height, width = ch, cw
    if (height, width) == tuple(image_size):
        return images
    return _resize(images, tuple(image_size))


def convert_image(image: np.ndarray, image_size=None, channels=None, crop="none") -> np.ndarray:
    """:func:`convert_images` for one ``(H, W, C)`` image."""
    return convert_images(image[np.newaxis], image_size, channels, crop)[0]


def transform_dataset(dataset, image_size=None, channels=None, crop="none"):
    """Returns ``dataset`` with its images converted by :func:`convert_images`.

    Args:
        dataset: An :class:`~tfvqvae.data.ImageDataset`.
        image_size, channels, crop: As :func:`check_options` accepts them.

    Returns:
        A new dataset with the same labels, name and ``num_classes`` (or
        ``dataset`` itself when nothing changes).

    Raises:
        ValueError: On a bad option (:func:`check_options`) or channel count.
    """
    size, channels, crop = check_options(image_size, channels, crop)
    images = convert_images(dataset.images, size, channels, crop)
    if images is dataset.images:
        return dataset
    return dataclasses.replace(dataset, images=images)
