"""Per-image TensorFlow ops for a streaming input pipeline (``tf.data`` maps).

Graph-mode twins of the NumPy load-time conversion in
:mod:`tfvqvae.data.transform` (its module notes give the rules): tensors in
and out, no Python side effects, and **bit-identical** ``uint8`` results to
``transform.convert_images`` on the image ``files._read_image`` decodes, so a
streamed folder equals the in-memory one element by element. Images are
``(H, W, C)`` ``uint8`` in [0, 255]; ``C`` may be unknown statically.

Randomness is stateless (``tf.random.stateless_*``): each draw is a function
of a ``(2,)`` int32/int64 seed only, which :func:`element_seed` derives from
the run seed, the epoch and the example's index, so a resumed run redraws the
same crops and flips.

WebP: ``tf.io.decode_image`` decodes still WebP (lossy, lossless, alpha,
``VP8X`` with ICC/EXIF) on TensorFlow 2.21. Its *animated* WebP path is
broken when the ``VP8X`` header lacks the alpha flag (what encoders write for
opaque animations): the decoder writes RGBA frames into an RGB buffer (heap
corruption, wrong pixels or a crashed process). :func:`decode_image` sets the
alpha flag in that case and keeps R, G, B of the first frame.
"""

from __future__ import annotations

import tensorflow as tf

from tfvqvae.data.transform import normalize_size
from tfvqvae.validation import one_of

__all__ = [
    "IMAGE_SUFFIXES", "STREAM_CROPS", "convert", "crop_window", "decode_image", "element_seed",
    "random_flip", "random_window", "resize", "to_channels", "to_float", "widest_channels",
]  # fmt: skip

#: File suffixes :func:`decode_image` reads (JPEG, PNG, BMP, GIF, WebP).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: Accepted values of ``crop`` in :func:`convert`.
STREAM_CROPS = ("none", "center", "random")

_LUMA_FIXED = (19595, 38470, 7471)  # ITU-R 601-2 in PIL's fixed point (sum 2**16)
_BYTES = [bytes([i]) for i in range(256)]  # one-byte strings, to rewrite a header byte
_WEBP_ANIMATION, _WEBP_ALPHA = 0x02, 0x10  # VP8X flag bits


def decode_image(contents):
    """Decodes one encoded image (JPEG, PNG, BMP, GIF, WebP) to ``uint8`` ``(H, W, C)``.

    As ``tf.io.decode_image(contents, channels=0, dtype=tf.uint8,
    expand_animations=False)``: ``C`` is the file's own count (1 to 4; GIF
    and WebP give 3 or 4), a GIF or animated WebP gives its first frame, a
    16-bit PNG is scaled to 8 bits. Opaque animated WebP is routed around
    TensorFlow's decoder bug (module notes) and gives 3 channels.

    Args:
        contents: Scalar ``tf.string``, the file's bytes.

    Raises:
        tf.errors.InvalidArgumentError: At run time, on an unknown format or
            a corrupt file.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    padded = tf.strings.join([tf.strings.substr(contents, 0, 21), "\0" * 21])
    head = tf.strings.substr(padded, 0, 21)  # the first 21 bytes, zero-padded
    flags = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 20, 1), tf.uint8)[0], tf.int32)
    opaque_animation = (
        tf.equal(tf.strings.substr(head, 0, 4), "RIFF")
        & tf.equal(tf.strings.substr(head, 8, 8), "WEBPVP8X")
        & tf.equal(tf.bitwise.bitwise_and(flags, _WEBP_ANIMATION | _WEBP_ALPHA), _WEBP_ANIMATION)
    )

    def decode(data):
        return tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)

    def decode_opaque_animation():
        rest = tf.strings.substr(contents, 21, tf.strings.length(contents) - 21)
        flag_byte = tf.gather(tf.constant(_BYTES), tf.bitwise.bitwise_or(flags, _WEBP_ALPHA))
        patched = tf.strings.join([tf.strings.substr(contents, 0, 20), flag_byte, rest])
        return decode(patched)[..., :3]

    return tf.cond(opaque_animation, decode_opaque_animation, lambda: decode(contents))


def _check_channels(image):
    """``image`` after a run-time check that its channel count is 1 to 4."""
    count = tf.shape(image)[-1]
    message = "expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels, got"
    check = tf.debugging.Assert((count >= 1) & (count <= 4), [message, count])
    with tf.control_dependencies([check]):
        return tf.identity(image)


def widest_channels(image):
    """Drops alpha only: ``(H, W, C)`` to ``(H, W, 1)`` for C in 1, 2 and ``(H, W, 3)`` for 3, 4.

    For the ``channels=None`` ("keep") mode of an image folder; the channel
    dim is static when ``C`` is.

    Raises:
        ValueError: When a static ``C`` is not 1 to 4.
        tf.errors.InvalidArgumentError: At run time unless ``C`` is 1 to 4.
    """
    static = image.shape[-1]
    if static is not None:
        if static not in (1, 2, 3, 4):
            raise ValueError(f"expected 1 to 4 channels, got shape {image.shape}")
        return image[..., : 1 if static <= 2 else 3]
    image = _check_channels(image)
    return image[..., : tf.where(tf.shape(image)[-1] <= 2, 1, 3)]


def to_channels(image, channels: int):
    """Converts ``(H, W, C)`` ``uint8`` (C in 1..4, maybe dynamic) to ``(H, W, channels)``.

    As ``transform.convert_channels``: alpha is dropped (2 -> grey, 4 -> RGB);
    ``channels=3`` replicates grey; ``channels=1`` takes ITU-R 601-2 luma in
    PIL's fixed point, ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, equal to
    ``PIL.Image.convert("L")`` (grey stays grey: the weights sum to 2**16).

    ``channels`` is a static Python int, 1 or 3, and so is the output's channel dim.

    Raises:
        ValueError: When ``channels`` is not 1 or 3.
        tf.errors.InvalidArgumentError: At run time unless ``C`` is 1 to 4.
    """
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    image = _check_channels(image)
    # R, G, B: channels 0-2 of RGB(A), channel 0 three times for grey (+ alpha).
    index = tf.where(tf.shape(image)[-1] >= 3, tf.constant([0, 1, 2]), tf.constant([0, 0, 0]))
    rgb = tf.gather(image, index, axis=-1)
    if channels == 3:
        return rgb
    wide = tf.cast(rgb, tf.int32)  # at most 65536 * 255 + 32768 < 2**31
    weighted = sum(wide[..., i : i + 1] * w for i, w in enumerate(_LUMA_FIXED)) + 32768
    return tf.cast(tf.bitwise.right_shift(weighted, 16), tf.uint8)


def crop_window(height, width, target):
    """``transform.crop_window`` in TensorFlow: the largest centred window of ``target``'s ratio.

    Args:
        height, width: Scalar int tensors or ints (any shape broadcasts), pixels.
        target: ``(h, w)`` ints or an int tensor; only ``w / h`` matters.

    Returns:
        ``(top, left, crop_height, crop_width)``, scalar ``int32`` pixels: the
        crop side is the float64 quotient rounded half to even (Python's
        ``round`` and ``tf.round`` agree), clipped to [1, side]; the offsets
        are rounded down. Products in int64.
    """
    h, w = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
    th, tw = tf.cast(target[0], tf.int64), tf.cast(target[1], tf.int64)

    def side(num, den, limit):  # max(1, min(limit, round(num / den)))
        rounded = tf.cast(tf.round(tf.cast(num, tf.float64) / tf.cast(den, tf.float64)), tf.int64)
        return tf.maximum(tf.constant(1, tf.int64), tf.minimum(limit, rounded))

    wider = w * th > h * tw  # image wider than the target: cut the sides
    ch = tf.where(wider, h, side(w * th, tw, h))
    cw = tf.where(wider, side(h * tw, th, w), w)
    window = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    return tuple(tf.cast(v, tf.int32) for v in window)


def random_window(height, width, target, seed):
    """A window of :func:`crop_window`'s size at a uniformly random offset.

    ``height, width, target`` as :func:`crop_window`; ``seed`` a ``(2,)``
    int32/int64 stateless seed. Returns ``(top, left, crop_height,
    crop_width)``, scalar ``int32``, with ``top`` uniform in ``[0, height -
    crop_height]`` and ``left`` in ``[0, width - crop_width]`` (a full-range
    int64 ``tf.random.stateless_uniform`` draw modulo the count; bias < 2**-40).
    """
    _, _, ch, cw = crop_window(height, width, target)
    h, w = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    counts = tf.cast(tf.stack([h - ch + 1, w - cw + 1]), tf.int64)
    draw = tf.random.stateless_uniform([2], seed, minval=None, maxval=None, dtype=tf.int64)
    offsets = tf.cast(tf.math.floormod(draw, counts), tf.int32)
    return offsets[0], offsets[1], ch, cw


def resize(image, target):
    """Resizes ``uint8`` ``(H, W, C)`` to ``target`` exactly as ``transform._resize``.

    Bilinear ``tf.image.resize`` in ``float32``, ``antialias=True`` only when
    the image shrinks in either dimension; then rounded half to even,
    clipped to [0, 255] and cast to ``uint8``. ``target`` is a static
    ``(h, w)`` (or an int: square); returns ``(h, w, C)`` with static ``h, w``.
    """
    target = normalize_size(target)
    x = tf.cast(image, tf.float32)
    size = tf.shape(image)
    shrinks = (target[0] < size[0]) | (target[1] < size[1])
    resized = tf.cond(
        shrinks,
        lambda: tf.image.resize(x, target, "bilinear", antialias=True),
        lambda: tf.image.resize(x, target, "bilinear", antialias=False),
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def convert(image, image_size=None, channels=None, crop="none", seed=None):
    """One image to one colour mode and size, in ``transform.convert_images``' order.

    Channels first (:func:`to_channels`; ``None`` keeps them, alpha too), then
    the crop window (``"center"``: :func:`crop_window`; ``"random"``:
    :func:`random_window` from ``seed``), then :func:`resize` only when the
    (cropped) size differs from ``image_size``.

    Args:
        image: ``uint8`` ``(H, W, C)``.
        image_size: ``None`` (keep the size), an int or a static ``(h, w)``.
        channels: ``None``, 1 or 3.
        crop: ``"none"``, ``"center"`` or ``"random"``.
        seed: ``(2,)`` stateless seed, needed by ``crop="random"`` only.

    Returns:
        ``uint8`` ``(h, w, channels)``; ``h, w`` static when ``image_size`` is given.

    Raises:
        ValueError: On a bad option, a crop without ``image_size`` or
            ``crop="random"`` without ``seed``.
    """
    one_of("crop", crop, STREAM_CROPS)
    if crop != "none" and image_size is None:
        raise ValueError(f"`crop={crop!r}` needs an image_size. Received: image_size=None")
    if crop == "random" and seed is None:
        raise ValueError("`crop='random'` needs a stateless `seed`. Received: seed=None")
    if channels is not None:
        image = to_channels(image, channels)
    if image_size is None:
        return image
    target = normalize_size(image_size)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if crop != "none":
        window = crop_window if crop == "center" else lambda h, w, t: random_window(h, w, t, seed)
        top, left, height, width = window(height, width, target)
        image = image[top : top + height, left : left + width]
    same = tf.equal(height, target[0]) & tf.equal(width, target[1])
    image = tf.cond(same, lambda: tf.identity(image), lambda: resize(image, target))
    return tf.ensure_shape(image, [*target, image.shape[-1]])


def random_flip(image, seed):
    """Flips ``(H, W, C)`` left-right when ``tf.random.stateless_uniform([], seed) < 0.5``.

    ``image``: any dtype ``(H, W, C)``; ``seed``: ``(2,)`` int32/int64
    stateless seed (the same seed, the same flip).
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: tf.identity(image))


def element_seed(seed, epoch, index, stream: int = 0):
    """The stateless seed of one example: a function of the run seed, epoch, index only.

    ``fold_in(fold_in([seed, epoch], index), stream)`` with
    ``tf.random.experimental.stateless_fold_in`` (all int64). Nothing else
    (no op-level or global seed, no iteration order) enters, so a resumed
    run redraws exactly. Give each use of randomness its own ``stream``
    (e.g. 0 for the crop, 1 for the flip) so their draws are independent.

    ``seed, epoch, index``: scalar ints or int tensors (within int64);
    ``stream``: an int naming the use. Returns a ``(2,)`` ``int64`` seed.
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    folded = tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))
    return tf.random.experimental.stateless_fold_in(folded, tf.constant(stream, tf.int64))


def to_float(image):
    """``uint8`` to ``float32`` in [0, 1]: ``x / 255`` (as ``ImageDataset`` does)."""
    return tf.cast(image, tf.float32) / 255.0
