"""``tfvqvae compress`` and ``tfvqvae decompress``: image files to codec files and back.

The library is `tfvqvae.codec.ImageCodec`; these commands read and write
files around it:

* ``compress --run RUN IMAGES... --out FOLDER [--labels L...]`` writes
  ``FOLDER/<image name>.tfvq`` per image (JPEG, PNG, BMP, GIF or WebP,
  converted to the model's channels);
* ``decompress FILES... --run RUN --out FOLDER`` writes
  ``FOLDER/<file name>.png`` per file, at the size the image had.

Every file is written to a temporary name and renamed, so a failure leaves
no half-written file; all inputs are read and checked before the first
output is written.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.codec import ImageCodec
from tfvqvae.data.image_ops import decode_image
from tfvqvae.data.image_ops import to_channels

__all__ = ["SUFFIX", "compress_files", "decompress_files", "main"]

SUFFIX = ".tfvq"


def _outputs(inputs, out, suffix, overwrite):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder.")
    paths, seen = [], {}
    for path in inputs:
        target = out / (Path(path).stem + suffix)
        if target in seen:
            raise ValueError(
                f"{path} and {seen[target]} would both be written to {target}: "
                "rename one of them.")
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists: pass --overwrite to replace it.")
        seen[target] = path
        paths.append(target)
    return paths


def _read_image(path, channels):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image at {path}")
    try:
        image = decode_image(tf.constant(path.read_bytes()))
        return to_channels(image, channels).numpy()
    except tf.errors.OpError as error:
        raise ValueError(f"{path} is not an image this codec reads (JPEG, PNG, BMP, GIF, "
                         f"WebP): {error.message.splitlines()[0]}") from None


def _labels(labels, count, codec):
    if codec.num_classes is not None and labels is None:
        raise ValueError(
            f"The run's priors are class-conditional ({codec.num_classes} classes): pass "
            "--labels, one for all images or one per image.")
    if codec.num_classes is None and labels is not None:
        raise ValueError("The run's priors are not class-conditional: drop --labels.")
    if labels is None:
        return None
    if len(labels) == 1:
        return np.full(count, labels[0], np.int64)
    if len(labels) != count:
        raise ValueError(
            f"--labels takes one label for all images or one per image ({count}). "
            f"Received: {len(labels)} labels")
    return np.asarray(labels, np.int64)


def compress_files(run, images, out, labels=None, overwrite=False):
    """Compresses image files into ``out``; returns [(output path, bytes written)].

    Images of one size are coded together (`ImageCodec.compress`).

    Raises:
        FileNotFoundError: a missing image or run.
        FileExistsError: an output exists and ``overwrite`` is off.
        ValueError: an unreadable image, two images with one name, bad labels.
    """
    codec = ImageCodec.from_run(run)
    targets = _outputs(images, out, SUFFIX, overwrite)
    pixels = [_read_image(path, codec.image_shape[2]) for path in images]
    labels = _labels(labels, len(images), codec)
    groups = {}
    for index, image in enumerate(pixels):
        groups.setdefault(image.shape, []).append(index)
    data = [None] * len(images)
    for members in groups.values():
        batch = np.stack([pixels[i] for i in members])
        found = codec.compress(batch, None if labels is None else labels[members])
        for index, file_bytes in zip(members, found):
            data[index] = file_bytes
    Path(out).mkdir(parents=True, exist_ok=True)
    for target, file_bytes in zip(targets, data):
        atomic.write_bytes(target, file_bytes)
    return [(target, len(file_bytes)) for target, file_bytes in zip(targets, data)]


def decompress_files(run, files, out, overwrite=False):
    """Decompresses codec files into PNGs in ``out``; returns their paths.

    Raises:
        FileNotFoundError: a missing file or run.
        FileExistsError: an output exists and ``overwrite`` is off.
        tfvqvae.codec.CodecError: a truncated, corrupted or foreign file.
    """
    from tfvqvae.codec.file_format import parse_header

    codec = ImageCodec.from_run(run)
    targets = _outputs(files, out, ".png", overwrite)
    data = []
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"No file at {path}")
        data.append(Path(path).read_bytes())
    groups = {}
    for index, (path, file_bytes) in enumerate(zip(files, data)):
        header = parse_header(file_bytes, str(path))
        groups.setdefault((header.height, header.width), []).append(index)
    images = [None] * len(files)
    for members in groups.values():
        decoded = codec.decompress([data[i] for i in members], [files[i] for i in members])
        for index, image in zip(members, decoded):
            images[index] = image
    Path(out).mkdir(parents=True, exist_ok=True)
    for target, image in zip(targets, images):
        pixels = np.round(image * 255.0).astype(np.uint8)
        atomic.write_bytes(target, tf.io.encode_png(pixels).numpy())
    return targets


def main(args):
    """Entry point of ``tfvqvae compress`` and ``tfvqvae decompress``."""
    if args.command == "compress":
        written = compress_files(args.run, args.images, args.out, args.labels, args.overwrite)
        total = sum(size for _, size in written)
        print(f"wrote {len(written)} file(s) to {args.out}: {total} bytes, "
              f"{total / max(len(written), 1):.1f} bytes per image")
    else:
        written = decompress_files(args.run, args.files, args.out, args.overwrite)
        print(f"wrote {len(written)} PNG(s) to {args.out}")
    return 0
