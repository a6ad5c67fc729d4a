"""Code files: writing a dataset's code maps to sharded TFRecord files, and reading them back.

Algorithm 2 of VQ-VAE-2 (lines 1-7) encodes the training set once with the
trained VQ-VAE and fits the priors to the resulting code maps. This module
writes and reads those code maps:

    model --encode_levels--> {level: int32 (B, h, w) or (B, h, w, Q)}
          --write_codes--> codes-00000-of-000NN.tfrecord, codes-00001-of-000NN.tfrecord, ...
    codes.tfrecord (the base path)
          --load_codes--> tf.data.Dataset of {level: int32 (h, w) or (h, w, Q), "label": int32}

A split's codes are a set of shards beside a base path (``codes.tfrecord`` ->
``codes-00000-of-00004.tfrecord`` ...; names and the parallel writer in
`tfvqvae.data.code_shards`), each a complete code file with its own header
holding a contiguous range of the records; the single-file layout of earlier
releases (the base path itself) is still read. Every shard is written under
a temporary name in the same folder and the set renamed when all are
complete, so no half-written file ever carries a final name. The record
layout, the header checks and the model fingerprint live in
`tfvqvae.data.code_format`; their public names are re-exported here.

A level whose quantiser codes each position with Q indices (a depth axis:
`tfvqvae.ResidualVectorQuantizer`, `tfvqvae.GroupedVectorQuantizer`) is
stored with its shape (h, w, Q) (`tfvqvae.data.code_format`); every other
level as (h, w), exactly as before.

Readers check every header against what they expect (levels, codebook
sizes, code depths, code-map shapes, the fingerprint of the model that wrote it), that the
shards of a set agree and none is missing, and that every file is complete
before handing out a dataset, so a file from another model, a code map of
the wrong shape, a missing or truncated shard fails at once with a message
naming the file instead of half-way through training a prior.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae.data.code_format import _LABEL
from tfvqvae.data.code_format import _check_header
from tfvqvae.data.code_format import _first_line
from tfvqvae.data.code_format import _METADATA
from tfvqvae.data.code_format import _normalize_metadata
from tfvqvae.data.code_format import _parser
from tfvqvae.data.code_format import _SHARD_FIELDS
from tfvqvae.data.code_format import CODES_FORMAT
from tfvqvae.data.code_format import CODES_VERSION
from tfvqvae.data.code_format import expected_metadata
from tfvqvae.data.code_format import model_fingerprint
from tfvqvae.data.code_shards import _GLOB_CHARS
from tfvqvae.data.code_shards import _parse_shard
from tfvqvae.data.code_shards import MAX_SHARDS
from tfvqvae.data.code_shards import ShardWriter
from tfvqvae.data.code_shards import code_files
from tfvqvae.data.code_shards import default_num_shards
from tfvqvae.data.transform import normalize_size

__all__ = [
    "CODES_FORMAT",
    "CODES_VERSION",
    "code_files",
    "default_num_shards",
    "expected_metadata",
    "load_codes",
    "model_fingerprint",
    "read_code_metadata",
    "write_codes",
]

_EXPECTABLE = ("levels", "num_embeddings", "code_depths", "code_shapes", "model_fingerprint",
               "num_classes")
# Records parsed per step when verifying and streaming a file.
_PARSE_BATCH = 512
# Shards verified at once by `load_codes`.
_VERIFY_THREADS = 8
# Header fields compared across the shards of a set, the telling ones first.
_SET_FIELDS = ("model_fingerprint", "levels", "num_embeddings", "code_shapes", "num_classes",
               "format", "version", "source")


# ---------------------------------------------------------------------- header
def _read_header(path):
    """The checked (not normalized) header of one file, raising errors that name it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"code file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a tfvqvae code file: not a regular file")
    try:
        first = list(tf.data.TFRecordDataset(str(path)).take(1).as_numpy_iterator())
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(
            f"{path} is not a tfvqvae code file: it does not start with a TFRecord "
            f"({_first_line(error)})"
        ) from None
    if not first:
        raise ValueError(f"{path} is not a tfvqvae code file: it holds no records")
    try:
        example = tf.train.Example.FromString(first[0])
        values = example.features.feature[_METADATA].bytes_list.value
        metadata = json.loads(values[0].decode()) if values else None
    except Exception as error:  # protobuf DecodeError, UnicodeDecodeError, JSONDecodeError
        raise ValueError(
            f"{path} is not a tfvqvae code file: its first record is not a header "
            f"({type(error).__name__})"
        ) from None
    _check_header(path, metadata)
    return metadata


def _set_metadata(files, headers):
    """The metadata of a set from its files' headers, after checking that they agree."""
    set_fields = {key: value for key, value in headers[0].items()
                  if key != "num_records" and key not in _SHARD_FIELDS}
    if len(files) == 1 and _parse_shard(files[0]) is None:  # the single-file layout
        header = headers[0]
        if header.get("num_shards", 1) != 1:
            raise ValueError(
                f"{files[0]} is shard {header['shard_index']} of {header['num_shards']} by its "
                "header, but not named as one: give the set's base path or a shard's own name"
            )
        return _normalize_metadata({**set_fields, "num_records": header["num_records"],
                                    "num_shards": 1})
    count = len(files)
    for index, (path, header) in enumerate(zip(files, headers)):
        if "num_shards" not in header:
            raise ValueError(f"code shard {path} has a single-file header (no shard_index, "
                             "num_shards): it is not a shard of a set")
        if (header["shard_index"], header["num_shards"]) != (index, count):
            raise ValueError(
                f"code shard {path} is shard {header['shard_index']} of "
                f"{header['num_shards']} by its header, {index} of {count} by its name"
            )
        keys = [key for key in _SET_FIELDS if key in set_fields or key in header]
        keys += sorted((set(set_fields) | set(header)) - set(keys) - {"num_records",
                                                                      *_SHARD_FIELDS})
        keys.append("total_records")
        for key in keys:
            found, wanted = header.get(key), headers[0].get(key)
            if found != wanted:
                raise ValueError(
                    f"code shard {path} does not belong with {files[0]}: its {key} is "
                    f"{found!r}, not {wanted!r} (a shard of another model or extraction?)"
                )
    total = sum(header["num_records"] for header in headers)
    if total != headers[0]["total_records"]:
        raise ValueError(
            f"the {count} shards of {files[0].name} hold {total} records by their headers, "
            f"which say the set has {headers[0]['total_records']}"
        )
    return _normalize_metadata({**set_fields, "num_records": total, "num_shards": count})


def _open(path):
    """``(files, headers, metadata)`` of the code file or shard set ``path`` names."""
    files = code_files(path)
    headers = [_read_header(file) for file in files]
    return files, headers, _set_metadata(files, headers)


def read_code_metadata(path):
    """Reads and validates the header(s) of a code file or shard set.

    Args:
        path: what `code_files` accepts: a set's base path (e.g.
            ``codes/codes-train.tfrecord``, which is also the single file of
            the earlier layout), any shard of a set, or a glob pattern.

    Returns:
        The header dict (see `tfvqvae.data.code_format`), with ``levels`` as a
        tuple and each ``code_shapes`` entry as an ``(h, w)`` (or, for a
        level with a depth axis, ``(h, w, Q)``) tuple, so they compare equal
        to ``model.levels`` and ``model.code_shapes(...)``; ``code_depths``
        ({level: Q or None}, from ``code_shapes``: equal to
        ``model.level_code_depths``);
        ``num_records`` is the set's total and ``num_shards`` its number of
        files (1 for a single file); no ``shard_index`` / ``total_records``.

    Raises:
        FileNotFoundError: if nothing exists at ``path``, or a shard of the
            set is missing (naming it).
        ValueError: naming the file, if one is not a tfvqvae code file, is of
            another version, or a shard disagrees with the first (another
            model's fingerprint, other levels or shapes, another set size);
            or if ``path`` names more than one set.
    """
    return _open(path)[2]


# ---------------------------------------------------------------------- write
def write_codes(path, model, dataset, batch_size=256, image_size=None, source=None,
                num_shards=None):
    """Encodes every image of ``dataset`` and writes the codes as shards of ``path``.

    The images are encoded in order, ``batch_size`` at a time, by
    ``model.encode_levels`` inside one ``tf.function``, in the calling
    thread; a pool of threads serializes the records and writes them to the
    shards meanwhile (`tfvqvae.data.code_shards.ShardWriter`). Shard ``s`` of
    ``S`` holds records ``[s*N // S, (s+1)*N // S)``, so the shards read in
    index order give the dataset order. The shards appear under their names
    only once all are complete (written under temporary names beside them,
    then renamed); then any other files of ``path`` (the single file of the
    earlier layout, a set of another size) are removed. On any error nothing
    is left behind and existing files are untouched.

    Args:
        path: the set's base path (conventionally ``*.tfrecord``, e.g.
            `tfvqvae.run_folder.code_file`): ``codes.tfrecord`` gives
            ``codes-00000-of-000SS.tfrecord``, ... Files of it are replaced.
        model: a trained model with the levels API (`VQVAE`, `VQVAE2`,
            `HierarchicalVQVAE`; levels with a depth axis included).
        dataset: an `ImageDataset`.
        batch_size: images per encoding step. Defaults to 256.
        image_size: ``(H, W)`` or an int: resize the images to it first (as
            during training). Defaults to the dataset's own size.
        source: free-form JSON-able dict stored as the header's ``source``,
            on top of the defaults ``dataset`` (its name) and ``image_size``.
        num_shards: files to write, in [1, 99999]; shards may be empty when
            it exceeds the number of images. Defaults to
            `default_num_shards`: shards of about 128 MB, so one file up to
            that size (MNIST, CIFAR-10) and ~100 for ImageNet at 256x256.

    Returns:
        The header written, as `read_code_metadata` returns it.

    Raises:
        ValueError: if the model's code maps do not match its own
            ``code_shapes`` / ``level_num_embeddings`` (a model bug), the
            image size does not suit the model, ``num_shards`` is not a
            shard count or ``path`` is itself a shard's name or a pattern.
    """
    path = Path(path)
    if _parse_shard(path) is not None or any(c in path.name for c in _GLOB_CHARS):
        raise ValueError(f"`path` must be a base path such as codes-train.tfrecord, "
                         f"not a shard's name or a pattern. Received: path={str(path)!r}")
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer))
        or not 1 <= num_shards <= MAX_SHARDS
    ):
        raise ValueError(f"`num_shards` must be None or an int in [1, {MAX_SHARDS}]. "
                         f"Received: num_shards={num_shards!r}")
    height, width, channels = dataset.image_shape
    if image_size is not None:
        height, width = normalize_size(image_size)
    levels = tuple(model.levels)
    if not levels or _LABEL in levels or len(set(levels)) != len(levels):
        raise ValueError(
            f"model.levels must be distinct names other than 'label'; received {levels!r}"
        )
    num_embeddings = {level: int(model.level_num_embeddings[level]) for level in levels}
    code_shapes = {
        level: tuple(int(s) for s in model.code_shapes((height, width))[level]) for level in levels
    }
    if num_shards is None:
        num_shards = default_num_shards(len(dataset), code_shapes, num_embeddings)
    labelled = dataset.labels is not None
    metadata = {
        "format": CODES_FORMAT,
        "version": CODES_VERSION,
        "levels": list(levels),
        "num_embeddings": num_embeddings,
        "code_shapes": {level: list(shape) for level, shape in code_shapes.items()},
        "num_classes": dataset.num_classes,
        "num_records": len(dataset),
        "model_fingerprint": model_fingerprint(model),
        "source": {"dataset": dataset.name, "image_size": [height, width], **(source or {})},
    }

    # One trace for every batch size: the batch axis is left unknown.
    encode = tf.function(
        model.encode_levels,
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32)],
    )
    batches = dataset.to_tf_dataset(
        batch_size, with_labels=labelled, image_size=None if image_size is None else (height, width)
    )
    with ShardWriter(path, metadata, int(num_shards)) as writer:
        for batch in batches:
            images, labels = batch if labelled else (batch, None)
            codes = encode(images)
            count = int(images.shape[0])
            flat = {}
            for level in levels:
                array = np.asarray(codes[level])
                if array.shape != (count, *code_shapes[level]):
                    raise ValueError(
                        f"model.encode_levels gave {level!r} codes of shape {array.shape}; "
                        f"model.code_shapes promised {(count, *code_shapes[level])}"
                    )
                low, high = int(array.min()), int(array.max())
                if low < 0 or high >= num_embeddings[level]:
                    raise ValueError(
                        f"model.encode_levels gave {level!r} codes in [{low}, {high}], "
                        f"outside [0, {num_embeddings[level]})"
                    )
                # (B, h, w[, Q]) -> (B, h*w[*Q]), row-major
                flat[level] = array.reshape(count, -1)
            writer.add(flat, np.asarray(labels) if labels is not None else np.full(count, -1))
        if writer.written != len(dataset):
            raise ValueError(
                f"wrote {writer.written} code records for dataset {dataset.name!r} "
                f"of {len(dataset)} images"
            )
    return _normalize_metadata({**json.loads(json.dumps(metadata)), "num_shards": num_shards})


# ----------------------------------------------------------------------- read
def _check_expect(path, metadata, expect):
    """Raises ValueError naming the key and both values where ``expect`` disagrees."""
    unknown = sorted(set(expect) - set(_EXPECTABLE))
    if unknown:
        raise ValueError(f"Unknown `expect` keys {unknown}; known keys: {list(_EXPECTABLE)}")

    def mismatch(key, wanted, found):
        return ValueError(
            f"code file {path} does not match: {key} expected {wanted!r}, received {found!r} "
            "(was it written by another model, or for another image size?)"
        )

    for key in _EXPECTABLE:
        if key not in expect:
            continue
        wanted, found = expect[key], metadata[key]
        if key == "levels":
            if tuple(wanted) != found:
                raise mismatch(key, tuple(wanted), found)
        elif key in ("num_embeddings", "code_depths", "code_shapes"):
            # Only the levels named in `expect` are compared: a prior of one
            # level need not know the others.
            for level, value in dict(wanted).items():
                if key == "num_embeddings":
                    value = int(value)
                elif key == "code_depths":
                    value = None if value is None else int(value)
                else:
                    value = tuple(int(s) for s in value)
                if level not in found:
                    raise mismatch(f"{key}[{level!r}]", value, "no such level")
                if found[level] != value:
                    raise mismatch(f"{key}[{level!r}]", value, found[level])
        elif wanted != found:
            raise mismatch(key, wanted, found)


def _verify(path, metadata):
    """Reads the whole file once: record count, code range and labels."""
    parse = _parser(metadata)
    levels = metadata["levels"]
    count = 0
    low = {level: None for level in levels}
    high = {level: None for level in levels}
    label_low = label_high = None
    records = tf.data.TFRecordDataset(str(path)).skip(1).batch(_PARSE_BATCH)
    try:
        for serialized in records:
            batch = parse(serialized)
            count += int(serialized.shape[0])
            for level in levels:
                codes = batch[level]
                lo, hi = int(tf.reduce_min(codes)), int(tf.reduce_max(codes))
                low[level] = lo if low[level] is None else min(low[level], lo)
                high[level] = hi if high[level] is None else max(high[level], hi)
            labels = batch[_LABEL]
            lo, hi = int(tf.reduce_min(labels)), int(tf.reduce_max(labels))
            label_low = lo if label_low is None else min(label_low, lo)
            label_high = hi if label_high is None else max(label_high, hi)
    except tf.errors.DataLossError as error:
        raise ValueError(
            f"code file {path} is truncated or corrupt: {_first_line(error)} "
            f"(the header says {metadata['num_records']} records)"
        ) from None
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"code file {path} is truncated or corrupt: a record does not match the header "
            f"({_first_line(error)})"
        ) from None
    if count != metadata["num_records"]:
        raise ValueError(
            f"code file {path} is truncated or corrupt: the header says "
            f"{metadata['num_records']} records, the file holds {count}"
        )
    for level in levels:
        k = metadata["num_embeddings"][level]
        if count and (low[level] < 0 or high[level] >= k):
            raise ValueError(
                f"code file {path} is corrupt: {level!r} codes lie in "
                f"[{low[level]}, {high[level]}], outside [0, {k})"
            )
    num_classes = metadata["num_classes"]
    upper = num_classes if num_classes is not None else np.iinfo(np.int32).max
    if count and (label_low < -1 or label_high >= upper):
        raise ValueError(
            f"code file {path} is corrupt: labels lie in [{label_low}, {label_high}], "
            f"outside [-1, {upper})"
        )


def load_codes(path, expect=None):
    """Opens a code file or shard set as one ``tf.data.Dataset`` after checking it.

    Checks, in order: every header and that the shards agree
    (`read_code_metadata`); ``expect`` against them; then every file is read
    once (several shards at a time) to count its records, check the count
    against its header's ``num_records`` and the codes against [0, K) of
    their level. Nothing is held in memory: the dataset streams the files.

    Args:
        path: what `code_files` accepts: a set's base path (e.g.
            ``codes/codes-train.tfrecord``, also the single file of the
            earlier layout), any shard of a set, or a glob pattern.
        expect: optional dict with any of ``levels``, ``num_embeddings``
            ({level: K}), ``code_depths`` ({level: Q or None}),
            ``code_shapes`` ({level: (h, w) or (h, w, Q)}),
            ``model_fingerprint`` and ``num_classes``; `expected_metadata`
            builds one from a model. For ``num_embeddings``, ``code_depths``
            and ``code_shapes`` only the levels given are compared.

    Returns:
        ``(dataset, metadata)``: ``dataset`` yields, unbatched, in shard order
        and file order within a shard (the order written: the dataset's),
        dicts ``{level: int32 (h, w) or (h, w, Q), ..., "label": int32 ()}`` (label -1
        for unlabelled images), and knows its cardinality; ``metadata`` is
        what `read_code_metadata` returns.

    Raises:
        FileNotFoundError: if nothing exists at ``path`` or a shard is
            missing (naming it).
        ValueError: naming the file, if it is not a code file, a shard
            disagrees with the others, the set disagrees with ``expect``
            (naming the key, expected and received values), a file is
            truncated or corrupt, or holds codes outside [0, K).
    """
    files, headers, metadata = _open(path)
    if expect:
        _check_expect(path, metadata, expect)
    headers = [_normalize_metadata(header) for header in headers]
    if len(files) == 1:
        _verify(files[0], headers[0])
    else:
        with ThreadPoolExecutor(min(_VERIFY_THREADS, len(files))) as pool:
            checks = [pool.submit(_verify, file, header) for file, header in zip(files, headers)]
            for check in checks:  # the first bad shard by index is reported
                check.result()
    dataset = (
        tf.data.Dataset.from_tensor_slices([str(file) for file in files])
        .flat_map(lambda file: tf.data.TFRecordDataset(file).skip(1))  # one file after another
        .batch(_PARSE_BATCH)
        .map(_parser(metadata), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
        # The count was just verified; knowing it spares Keras an epoch of
        # unknown length ("ran out of data" warnings).
        .apply(tf.data.experimental.assert_cardinality(metadata["num_records"]))
    )
    return dataset, metadata
