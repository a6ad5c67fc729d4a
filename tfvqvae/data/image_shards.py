"""TFRecord shards of encoded images: written by ``tfvqvae prepare``, streamed at any scale.

An image folder of millions of files is slow to open and to read on a
network file system; ``tfvqvae prepare --images FOLDER --out DIR``
(:func:`write_image_shards`) packs it once into a few large TFRecord files
holding the files' *original bytes*, already shuffled, and
:func:`open_image_shards` streams them at constant memory: only encoded
records are shuffled and skipped, images are decoded afterwards in parallel.

Layout of DIR (what :func:`write_image_shards` writes)::

    DIR/images-<split>-00000-of-00008.tfrecord   the records of split <split>, in
    ...                                          a random order drawn from --seed
    DIR/images-<split>-00007-of-00008.tfrecord
    DIR/dataset.json                             counts, classes, sizes (below)

Each record is a serialized ``tf.train.Example`` with these features (only
``image/encoded`` is required of shards written by other tools; the default
applies when a feature is missing):

=====================  ========  ===============================================
feature                type      meaning (default)
=====================  ========  ===============================================
``image/encoded``      bytes     the image file's bytes, not re-encoded (JPEG,
                                 PNG, BMP, GIF, WebP)
``image/format``       bytes     the file's suffix, lower case, no dot (``""``)
``image/class/label``  int64     class index, ``-1`` when unlabelled (``-1``)
``image/filename``     bytes     path relative to the image folder (``""``)
``image/height``       int64     height in pixels of the decoded image (``0``)
``image/width``        int64     width in pixels (``0``)
``image/channels``     int64     channels of the decoded file, 1 to 4 (``0``)
``image/index``        int64     the record's position in the split, in shard
                                 order: 0 .. N-1 (``-1``: a fingerprint of
                                 ``image/encoded`` keys the record instead)
=====================  ========  ===============================================

``dataset.json`` (written last, atomically; read by :func:`open_image_shards`)::

    {"format": "tfvqvae-image-shards", "version": 1,
     "splits": {"train": {
        "num_records": 1000, "num_shards": 8,
        "shards": [{"file": "images-train-00000-of-00008.tfrecord", "num_records": 125}, ...],
        "labelled": true, "num_classes": 10, "class_names": ["cat", ...],
        "image_sizes": [[64, 64, 990], [48, 64, 10]],   # [height, width, files], commonest first
        "num_image_sizes": 2,                           # distinct sizes (the list stops at 32)
        "channels": 3,                                  # 3 if any file has colour, else 1
        "skipped": 0, "skipped_files": [],              # unreadable files (--skip-corrupt)
        "seed": 0, "source": "/abs/path/to/FOLDER"}}}

Order of the training batches (:meth:`ImageShards.epochs_dataset`): the
input pipeline k of P owns the shards ``k::P`` (P = 1 without
distribution: all of them); epoch e reads its shards in a permutation drawn
from (seed, e), ``cycle_length`` (4) of them at a time, one record from each
in turn (a deterministic interleave), and permutes the records in blocks of
``shuffle_block`` (2048) encoded records
(:func:`tfvqvae.data.epochs.epoch_batches`), so epoch e's batches depend only
on (seed, e) and a resumed run skips *encoded* records. Random crops and
flips are seeded by (seed, epoch, ``image/index``). Every worker takes the
same number of steps: the fewest its shards allow (`ImageShards.steps_per_epoch`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae.data import image_ops
from tfvqvae.data.epochs import permutation
from tfvqvae.data.epochs import seed_pair
from tfvqvae.data.encoded_stream import DEFAULT_SHUFFLE_BLOCK
from tfvqvae.data.encoded_stream import EncodedImageStream
from tfvqvae.data.image_folder import list_image_files
from tfvqvae.data.transform import check_options
from tfvqvae.validation import integer
from tfvqvae.validation import positive_int

__all__ = [
    "DATASET_FILE",
    "DEFAULT_SHARD_SIZE_MB",
    "FORMAT",
    "FORMAT_VERSION",
    "ImageShards",
    "RECORD_FEATURES",
    "open_image_shards",
    "shard_name",
    "write_image_shards",
]

logger = logging.getLogger(__name__)

#: The metadata file of a prepared folder.
DATASET_FILE = "dataset.json"
#: ``dataset.json``'s "format" and "version".
FORMAT, FORMAT_VERSION = "tfvqvae-image-shards", 1
#: Shard size when neither ``num_shards`` nor ``shard_size_mb`` is given (MiB of files).
DEFAULT_SHARD_SIZE_MB = 128
#: Shards read at once, one record of each in turn.
DEFAULT_CYCLE_LENGTH = 4
#: Records decoded when a bare file pattern is opened, to learn the image size.
PROBE_RECORDS = 16
#: Image sizes listed in ``dataset.json`` (the commonest first).
LISTED_SIZES = 32
#: Skipped files named in ``dataset.json``.
LISTED_SKIPPED = 100
# Files decoded per step while preparing (amortises Python's per-element cost).
_PREPARE_BATCH = 64
# A fingerprint keys records without `image/index` (non-negative int64).
_HASH_BUCKETS = 2**62
# fold_in stream of the shard permutation (apart from the record permutation's seed).
_SHARD_STREAM = 7
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

#: The features of a record: name -> (dtype, default). See the module notes.
RECORD_FEATURES = {
    "image/encoded": (tf.string, None),
    "image/format": (tf.string, ""),
    "image/class/label": (tf.int64, -1),
    "image/filename": (tf.string, ""),
    "image/height": (tf.int64, 0),
    "image/width": (tf.int64, 0),
    "image/channels": (tf.int64, 0),
    "image/index": (tf.int64, -1),
}
_PARSE_SPEC = {
    name: tf.io.FixedLenFeature([], dtype, default_value=default)
    for name, (dtype, default) in RECORD_FEATURES.items()
}


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``images-<split>-<index:05d>-of-<num_shards:05d>.tfrecord``."""
    return f"images-{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _check_split_name(split) -> str:
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise ValueError(
            "`split` must be a name of letters, digits, '_', '-' or '.' (it becomes part "
            f"of the shard file names). Received: split={split!r}"
        )
    return split


def _error_reason(err) -> str:
    """A TF error's message without its ``{{function_node ...}}`` / ``[Op:...]`` noise."""
    reason = getattr(err, "message", None) or str(err)
    reason = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:.*$", "", reason, flags=re.S)
    return " ".join(reason.split()) or type(err).__name__


def _int_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _example(contents, suffix, label, filename, shape, index) -> bytes:
    """One record of the layout in the module notes, serialized."""
    features = {
        "image/encoded": _bytes_feature(contents),
        "image/format": _bytes_feature(suffix.encode()),
        "image/class/label": _int_feature(label),
        "image/filename": _bytes_feature(filename.encode()),
        "image/height": _int_feature(shape[0]),
        "image/width": _int_feature(shape[1]),
        "image/channels": _int_feature(shape[2]),
        "image/index": _int_feature(index),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


# ---------------------------------------------------------------------- prepare
def _read_metadata(out_dir: Path):
    """The existing ``dataset.json`` of ``out_dir`` (an empty one when there is none)."""
    path = out_dir / DATASET_FILE
    if not path.exists():
        return {"format": FORMAT, "version": FORMAT_VERSION, "splits": {}}
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}); remove it or pick another "
                         "output folder") from err
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by `tfvqvae prepare` (no \"format\": "
                         f"{FORMAT!r}); pick another output folder")
    if metadata.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has version {metadata.get('version')!r}; this tfvqvae "
                         f"reads version {FORMAT_VERSION}")
    return metadata


def _shard_count(sizes, num_shards, shard_size_mb):
    """Shards for files of ``sizes`` bytes: given, or one per ``shard_size_mb`` MiB."""
    if num_shards is not None and shard_size_mb is not None:
        raise ValueError("pass num_shards (CLI: --shards) or shard_size_mb (CLI: "
                         f"--shard-size), not both. Received: num_shards={num_shards!r}, "
                         f"shard_size_mb={shard_size_mb!r}")
    if num_shards is not None:
        num_shards = positive_int("num_shards", num_shards)
        if num_shards > len(sizes):
            raise ValueError(f"`num_shards` must be at most the {len(sizes)} image files. "
                             f"Received: num_shards={num_shards}")
        return num_shards
    if shard_size_mb is None:
        shard_size_mb = DEFAULT_SHARD_SIZE_MB
    if isinstance(shard_size_mb, bool) or not isinstance(shard_size_mb, (int, float)) or not (
            math.isfinite(shard_size_mb) and shard_size_mb > 0):
        raise ValueError(f"`shard_size_mb` must be a positive number of MiB. Received: "
                         f"shard_size_mb={shard_size_mb!r}")
    wanted = math.ceil(sum(sizes) / (shard_size_mb * 2**20))
    return int(min(max(wanted, 1), len(sizes)))


def _decoded_files(paths):
    """``(positions, contents, shapes)`` batches of the readable ones of ``paths``, in order.

    Files are read and decoded in a parallel, order-keeping ``tf.data`` map;
    an unreadable file is dropped (``ignore_errors``): its position is
    missing from the stream.
    """
    def load(position, path):
        contents = tf.io.read_file(path)
        shape = tf.shape(image_ops.decode_image(contents), out_type=tf.int64)
        return position, contents, shape

    files = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                                tf.constant(paths)))
    files = files.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    files = files.ignore_errors().batch(_PREPARE_BATCH).prefetch(2)
    for positions, contents, shapes in files.as_numpy_iterator():
        yield positions, contents, shapes


def _why_unreadable(path) -> str:
    try:
        image_ops.decode_image(tf.io.read_file(path))
    except (tf.errors.OpError, OSError) as err:
        return _error_reason(err)
    return "unreadable"  # pragma: no cover - it failed in the pipeline


def write_image_shards(source_folder, out_dir, *, split="train", num_shards=None,
                       shard_size_mb=None, seed=0, skip_corrupt=False, overwrite=False):
    """Packs an image folder into shuffled TFRecord shards (the library behind ``tfvqvae prepare``).

    Lists the folder as :func:`~tfvqvae.data.open_image_folder` does (one
    sub-folder per class, or a flat folder without labels), decodes every
    file once to validate it (in a parallel ``tf.data`` map), and writes the
    files' original bytes in a random order drawn from ``seed``, as records
    of the layout of the module notes, into
    ``out_dir/images-<split>-KKKKK-of-NNNNN.tfrecord``; then ``dataset.json``.
    Every file lands in one temporary file beside its final name; nothing is
    renamed into place before all files were read, and ``dataset.json`` is
    written last: a failed or killed run leaves the folder as it was (apart
    from a stale temporary, which the next run removes).

    Args:
        source_folder: the image folder; ``source_folder/<split>`` is used
            when that folder exists (as ``load_dataset("folder:...")``
            does), else ``source_folder`` itself.
        out_dir: output folder (created). Other splits already in its
            ``dataset.json`` are kept.
        split: split name (letters, digits, ``_``, ``-``, ``.``); defaults
            to ``"train"``.
        num_shards: number of shards, at most the number of files.
        shard_size_mb: target shard size in MiB of files (2**20 bytes), when
            ``num_shards`` is not given. Defaults to `DEFAULT_SHARD_SIZE_MB`
            (128). For distributed training, have at least as many shards as
            workers (input pipelines).
        seed: int, seeds the record order. Defaults to 0.
        skip_corrupt: skip unreadable files (counted in ``dataset.json``)
            instead of failing.
        overwrite: replace the split when ``dataset.json`` already lists it.

    Returns:
        The split's entry of ``dataset.json`` (a dict: ``num_records``,
        ``num_shards``, ``shards``, ``num_classes``, ``image_sizes``,
        ``skipped``, ... see the module notes) plus ``"path"``, the
        ``dataset.json`` written.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: it is a file.
        ValueError: no image file in it; an unreadable file without
            ``skip_corrupt`` ("Cannot read image file PATH: REASON"); no
            readable file at all; a bad option; the split already prepared
            without ``overwrite``; an ``out_dir/dataset.json`` of another
            format.
        OSError: on a write error (naming the file).
    """
    split = _check_split_name(split)
    seed = integer("seed", int(seed) if isinstance(seed, np.integer) else seed)
    source = Path(source_folder)
    if not source.exists():
        raise FileNotFoundError(f"image folder not found: {source}")
    if not source.is_dir():
        raise NotADirectoryError(f"not a directory: {source}")
    if (source / split).is_dir():
        source = source / split
    elif split != "train":
        raise ValueError(
            f"image folder {source} has no {split!r} sub-folder; split {split!r} needs "
            f"{source / split} (the folder itself counts as the 'train' split)")
    paths, labels, classes = list_image_files(source)
    if not paths:
        raise ValueError(f"no image files ({', '.join(image_ops.IMAGE_SUFFIXES)}) found in "
                         f"{source} or its class sub-folders")
    sizes = [os.path.getsize(p) for p in paths]
    shards = _shard_count(sizes, num_shards, shard_size_mb)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(out)
    metadata = _read_metadata(out)
    if split in metadata["splits"] and not overwrite:
        raise ValueError(f"{out / DATASET_FILE} already holds split {split!r}; pass "
                         "overwrite=True (CLI: --overwrite) to replace it")

    n = len(paths)
    order = np.random.default_rng(seed).permutation(n)
    ordered = [paths[i] for i in order]
    names = [shard_name(split, k, shards) for k in range(shards)]
    temps = [out / f"{atomic.TEMP_MARKER}{os.getpid()}-{name}" for name in names]
    counts = [0] * shards
    size_counts = collections.Counter()
    widest, skipped, written = 1, [], 0
    writer, current = None, -1
    try:
        expected = 0
        for positions, contents, shapes in _decoded_files(ordered):
            for position, data, shape in zip(positions, contents, shapes):
                missing = ordered[expected:position]
                if missing and not skip_corrupt:
                    raise ValueError(
                        f"Cannot read image file {missing[0]}: {_why_unreadable(missing[0])}; "
                        "pass skip_corrupt=True (CLI: --skip-corrupt) to skip such files")
                skipped.extend(missing)
                expected = int(position) + 1
                shard = int(position) * shards // n
                if shard != current:  # positions only grow: one open writer at a time
                    if writer is not None:
                        writer.close()
                    for k in range(current + 1, shard):  # shards left empty by skipping
                        tf.io.TFRecordWriter(str(temps[k])).close()
                    writer, current = tf.io.TFRecordWriter(str(temps[shard])), shard
                path = ordered[position]
                suffix = os.path.splitext(path)[1].lower().lstrip(".")
                label = -1 if labels is None else int(labels[order[position]])
                relative = Path(os.path.relpath(path, source)).as_posix()
                writer.write(_example(data, suffix, label, relative, shape, written))
                counts[shard] += 1
                written += 1
                size_counts[(int(shape[0]), int(shape[1]))] += 1
                widest = max(widest, 3 if shape[2] >= 3 else 1)
                if written % 10_000 == 0:
                    logger.info("prepare %s: %d of %d files written", split, written, n)
        missing = ordered[expected:]
        if missing and not skip_corrupt:
            raise ValueError(
                f"Cannot read image file {missing[0]}: {_why_unreadable(missing[0])}; "
                "pass skip_corrupt=True (CLI: --skip-corrupt) to skip such files")
        skipped.extend(missing)
        if writer is not None:
            writer.close()
            writer = None
        for k in range(current + 1, shards):
            tf.io.TFRecordWriter(str(temps[k])).close()
        if not written:
            raise ValueError(f"none of the {n} image files of {source} can be read")
        for path in skipped:
            logger.warning("prepare %s: skipped unreadable image file %s", split, path)
        # Nothing of the split is visible under final names until dataset.json lists it:
        # drop the split from dataset.json first, then rename, then list it again.
        if split in metadata["splits"]:
            del metadata["splits"][split]
            atomic.write_json(out / DATASET_FILE, metadata)
        for temp, name in zip(temps, names):
            os.replace(temp, out / name)
    except OSError as err:
        if err.errno is None or str(out) in str(err):
            raise
        raise type(err)(err.errno, f"Could not write shards into {out}: "
                                   f"{err.strerror or err}") from err
    finally:
        if writer is not None:
            writer.close()
        for temp in temps:
            if temp.exists():
                temp.unlink()
    pattern = re.compile(rf"^images-{re.escape(split)}-\d{{5}}-of-\d{{5}}\.tfrecord$")
    for stale in out.iterdir():  # shards of an earlier, different sharding of this split
        if pattern.match(stale.name) and stale.name not in names:
            stale.unlink()
    entry = {
        "num_records": written,
        "num_shards": shards,
        "shards": [{"file": name, "num_records": c} for name, c in zip(names, counts)],
        "labelled": labels is not None,
        "num_classes": len(classes) or None,
        "class_names": list(classes),
        "image_sizes": [[h, w, c] for (h, w), c in size_counts.most_common(LISTED_SIZES)],
        "num_image_sizes": len(size_counts),
        "channels": widest,
        "skipped": len(skipped),
        "skipped_files": [Path(os.path.relpath(p, source)).as_posix()
                          for p in skipped[:LISTED_SKIPPED]],
        "seed": seed,
        "source": str(source.resolve()),
    }
    metadata["splits"][split] = entry
    atomic.write_json(out / DATASET_FILE, metadata)
    logger.info("prepare %s: %d records in %d shards in %s (%d skipped)", split, written,
                shards, out, len(skipped))
    return {**entry, "path": str(out / DATASET_FILE)}


# ---------------------------------------------------------------------- reading
def _split_of(folder: Path, split):
    """The split's entry of ``folder/dataset.json``."""
    path = folder / DATASET_FILE
    metadata = _read_metadata(folder)
    splits = metadata.get("splits") or {}
    if split not in splits:
        raise ValueError(f"{path} has no split {split!r}; its splits: "
                         f"{', '.join(sorted(splits)) or 'none'} (write one with `tfvqvae "
                         f"prepare --images FOLDER --out {folder} --split {split}`)")
    entry = splits[split]
    files = [str(folder / shard["file"]) for shard in entry["shards"]]
    for file in files:
        if not tf.io.gfile.exists(file):
            raise FileNotFoundError(f"shard {file} listed in {path} is missing")
    sizes = {(h, w): [] for h, w, _ in entry["image_sizes"]}
    return (files, [int(s["num_records"]) for s in entry["shards"]], bool(entry["labelled"]),
            entry.get("num_classes"), tuple(entry.get("class_names") or ()), sizes,
            int(entry["num_image_sizes"]), int(entry["channels"]))


def _count_records(files):
    """``(records per file, the largest label)``: one parallel pass over the files."""
    def count(file):
        records = tf.data.TFRecordDataset(file).batch(1024).map(
            lambda s: tf.io.parse_example(s, {"image/class/label": _PARSE_SPEC[
                "image/class/label"]})["image/class/label"])
        return records.reduce(
            (tf.constant(0, tf.int64), tf.constant(-1, tf.int64)),
            lambda acc, labels: (acc[0] + tf.size(labels, out_type=tf.int64),
                                 tf.maximum(acc[1], tf.reduce_max(
                                     tf.concat([labels, [-1]], 0)))))

    counted = tf.data.Dataset.from_tensor_slices(files).map(
        count, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
        results = list(counted.as_numpy_iterator())
    except tf.errors.OpError as err:
        raise ValueError(f"cannot read the TFRecord files {files[0]}...: {_error_reason(err)} "
                         "(expected tf.train.Example records with image/encoded, see "
                         "tfvqvae.data.image_shards)") from err
    return [int(c) for c, _ in results], max(int(m) for _, m in results)


def _probe_records(files):
    """Decodes the first `PROBE_RECORDS` records: ``{(h, w): [names]}``, widest channels."""
    records = tf.data.TFRecordDataset(files).take(PROBE_RECORDS)
    sizes, widest = {}, 1
    try:
        for serialized in records:
            parsed = tf.io.parse_single_example(serialized, _PARSE_SPEC)
            name = parsed["image/filename"].numpy().decode() or f"record {len(sizes)}"
            image = image_ops.decode_image(parsed["image/encoded"])
            sizes.setdefault(tuple(int(d) for d in image.shape[:2]), []).append(name)
            widest = max(widest, 3 if image.shape[2] >= 3 else 1)
    except tf.errors.OpError as err:
        raise ValueError(f"cannot read the records of {files[0]}: {_error_reason(err)} "
                         "(expected tf.train.Example records with image/encoded, see "
                         "tfvqvae.data.image_shards)") from err
    return sizes, widest


def open_image_shards(path, image_size=None, channels=None, crop="none", *, split="train",
                      shuffle_block=DEFAULT_SHUFFLE_BLOCK,
                      cycle_length=DEFAULT_CYCLE_LENGTH) -> ImageShards:
    """Opens TFRecord shards of encoded images (the module's layout) as an :class:`ImageShards`.

    Args:
        path: a folder written by ``tfvqvae prepare`` (its ``dataset.json``
            gives the shards of ``split``, their counts, classes and image
            sizes; the path of ``dataset.json`` itself works too), or a
            glob pattern (``tf.io.gfile.glob``; or one file) of TFRecord
            files in that layout, where ``{split}`` stands for the split's
            name (a pattern without it is the "train" split only): then one
            pass over the files counts their
            records (and their largest label: ``num_classes`` is that plus
            one), and the first `PROBE_RECORDS` records are decoded to
            learn the image size and colour mode.
        image_size: ``None`` (keep: all images must share one size), an int
            (square) or ``(height, width)`` in pixels.
        channels: ``1``, ``3`` or ``None``: the widest mode of the files
            (RGB when any has colour, else grey). Alpha is dropped.
        crop: ``"none"``, ``"center"`` or ``"random"`` (training batches cut
            the ``center`` window's size at a random place; every other
            pipeline cuts the centre). ``center``/``random`` need
            ``image_size``.
        split: the split of a prepared folder, or the name put in for
            ``{split}`` in a pattern. Defaults to ``"train"``.
        shuffle_block: encoded records permuted together in training order.
            Defaults to 2048.
        cycle_length: shards read at once in training order. Defaults to 4.

    Raises:
        FileNotFoundError: no file matches the pattern (the message names
            it); a folder without ``dataset.json``; a shard it lists is
            missing.
        ValueError: a bad option; an unknown split (or a split other than
            "train" for a pattern without ``{split}``); images of different
            sizes without ``image_size`` (naming ``image_size`` and
            ``--image-size``); files that are not TFRecords of that layout.
    """
    random_crop = crop == "random"
    size, channels, crop = check_options(image_size, channels, crop, streamed=True)
    shuffle_block = positive_int("shuffle_block", shuffle_block)
    cycle_length = positive_int("cycle_length", cycle_length)
    text = os.fspath(path)
    folder = Path(text)
    if folder.name == DATASET_FILE and folder.is_file():
        folder = folder.parent
    if folder.is_dir():
        if not (folder / DATASET_FILE).exists():
            raise FileNotFoundError(
                f"no {DATASET_FILE} in {folder}: pass a folder written by `tfvqvae prepare` "
                f"or a glob pattern of TFRecord files (e.g. {folder}/*.tfrecord)")
        (files, counts, labelled, num_classes, class_names, sizes, num_sizes,
         widest) = _split_of(folder, split)
        name = folder.resolve().name if split == "train" else f"{folder.resolve().name}/{split}"
        where = f"{folder} (split {split!r})"
    else:
        if "{split}" in text:
            text = text.replace("{split}", split)
        elif split != "train":
            raise ValueError(
                f"the pattern {text!r} names one set of files, the 'train' split: for split "
                f"{split!r} write {{split}} where the split's name goes (e.g. "
                "DIR/images-{split}-*.tfrecord) or pass the folder `tfvqvae prepare` wrote")
        files = sorted(tf.io.gfile.glob(text))
        if not files:
            raise FileNotFoundError(f"no TFRecord file matches {text!r}")
        counts, largest = _count_records(files)
        if not sum(counts):
            raise ValueError(f"the TFRecord files matching {text!r} hold no record")
        sizes, widest = _probe_records(files)
        num_sizes = len(sizes)
        labelled, num_classes, class_names = largest >= 0, (largest + 1) or None, ()
        name, where = Path(files[0]).parent.name or text, repr(text)
    if size is None and num_sizes > 1:
        listed = ", ".join(f"{h}x{w}" + (f" ({', '.join(found[:2])})" if found else "")
                           for (h, w), found in list(sizes.items())[:4])
        raise ValueError(
            f"images of {where} differ in size (height x width): {listed}; pass "
            "image_size=(height, width) (CLI: --image-size) to resize them when loading "
            "(crop='center' keeps their aspect ratio)")
    return ImageShards(
        files=tuple(files), counts=tuple(counts), name=name,
        num_classes=num_classes if labelled else None, class_names=class_names,
        has_labels=labelled, size=size or next(iter(sizes)), resize=size is not None,
        channels=channels or widest, crop="random" if random_crop else crop,
        shuffle_block=shuffle_block, cycle_length=cycle_length)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageShards(EncodedImageStream):
    """Streamed TFRecord shards of encoded images (module notes); made by `open_image_shards`.

    Attributes:
        files: the shard paths, in order.
        counts: records read from each shard (all of them, or fewer after
            `take`).
        name: a short name for messages.
        num_classes: the number of classes, or None.
        class_names: class names (``dataset.json``), else empty.
        has_labels: whether records carry labels (``image/class/label`` >= 0).
        size: ``(height, width)`` of the yielded images.
        resize: whether images are converted to ``size`` (else each must
            already have it).
        channels: 1 or 3.
        crop: ``"none"``, ``"center"`` or ``"random"``.
        shuffle_block: encoded records permuted together in training order.
        cycle_length: shards read at once in training order.
    """

    files: tuple[str, ...]
    counts: tuple[int, ...]
    name: str
    num_classes: int | None
    class_names: tuple[str, ...]
    has_labels: bool
    size: tuple[int, int]
    resize: bool
    channels: int
    crop: str
    shuffle_block: int = DEFAULT_SHUFFLE_BLOCK
    cycle_length: int = DEFAULT_CYCLE_LENGTH

    def __len__(self):
        return int(sum(self.counts))

    def __repr__(self):
        return (f"ImageShards(name={self.name!r}, num_examples={len(self)}, "
                f"num_shards={len(self.files)}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes})")

    @property
    def labelled(self):
        return self.has_labels

    def take(self, n):
        """The first ``n`` records in shard order (shards after them dropped)."""
        n = positive_int("n", int(n) if isinstance(n, np.integer) else n)
        files, counts, left = [], [], n
        for file, count in zip(self.files, self.counts):
            if left <= 0:
                break
            files.append(file)
            counts.append(min(count, left))
            left -= counts[-1]
        return dataclasses.replace(self, files=tuple(files), counts=tuple(counts))

    # ---------------------------------------------------------------- hooks
    def _pipeline_counts(self, pipelines):
        if pipelines > len(self.files):
            raise ValueError(
                f"Dataset {self.name!r} has {len(self.files)} shard(s), fewer than the "
                f"{pipelines} input pipelines (each worker reads its own shards): prepare it "
                f"with at least {pipelines} shards (tfvqvae prepare --shards N)")
        return [sum(self.counts[k::pipelines]) for k in range(pipelines)]

    def _read(self, files, counts):
        """The records of ``(files, counts)`` datasets, ``cycle_length`` files at a time."""
        pairs = tf.data.Dataset.from_tensor_slices((files, counts))
        return pairs.interleave(
            lambda file, count: tf.data.TFRecordDataset(file).take(count),
            cycle_length=self.cycle_length, block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _ordered_records(self):
        pairs = tf.data.Dataset.from_tensor_slices(
            (list(self.files), tf.constant(self.counts, tf.int64)))
        return pairs.flat_map(lambda file, count: tf.data.TFRecordDataset(file).take(count))

    def _epoch_records(self, pipeline_id, pipelines, seed):
        self._pipeline_counts(pipelines)  # enough shards
        files = tf.constant(list(self.files[pipeline_id::pipelines]))
        counts = tf.constant(self.counts[pipeline_id::pipelines], tf.int64)
        size = len(self.files[pipeline_id::pipelines])

        def records(epoch):
            shard_seed = tf.random.experimental.stateless_fold_in(
                seed_pair(seed, epoch), tf.constant(_SHARD_STREAM, tf.int64))
            order = permutation(size, shard_seed)
            return self._read(tf.gather(files, order), tf.gather(counts, order))

        return records

    def _parse(self, record):
        parsed = tf.io.parse_single_example(record, _PARSE_SPEC)
        contents = parsed["image/encoded"]
        key = tf.where(parsed["image/index"] >= 0, parsed["image/index"],
                       tf.strings.to_hash_bucket_fast(contents, _HASH_BUCKETS))
        what = tf.where(tf.strings.length(parsed["image/filename"]) > 0,
                        parsed["image/filename"],
                        tf.strings.join(["record ", tf.strings.as_string(key)]))
        return contents, parsed["image/class/label"], key, what
