"""Code files: writing a dataset's code maps to one TFRecord file, and reading them back.

Algorithm 2 of VQ-VAE-2 (lines 1-7) encodes the training set once with the
trained VQ-VAE and fits the priors to the resulting code maps. This module
writes and reads those code maps:

    model --encode_levels--> {level: int32 (B, h, w)} --write_codes--> codes.tfrecord
    codes.tfrecord --load_codes--> tf.data.Dataset of {level: int32 (h, w), "label": int32}

The file is written atomically: a temporary name in the same folder, renamed
when complete, so no half-written file ever carries the final name. Its layout
(a JSON header record, then one record per image), the header checks and the
model fingerprint live in `tfvqvae.data.code_format`; their public names are
re-exported here.

Readers check the header against what they expect (levels, codebook sizes,
code-map shapes, the fingerprint of the model that wrote it) and verify the
file is complete before handing out a dataset, so a file from another model, a
code map of the wrong shape or a truncated file fails at once with a message
naming the file instead of half-way through training a prior.
"""

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae.atomic import atomic_path
from tfvqvae.data.code_format import _LABEL
from tfvqvae.data.code_format import _check_header
from tfvqvae.data.code_format import _first_line
from tfvqvae.data.code_format import _header_example
from tfvqvae.data.code_format import _METADATA
from tfvqvae.data.code_format import _normalize_metadata
from tfvqvae.data.code_format import _parser
from tfvqvae.data.code_format import _record_example
from tfvqvae.data.code_format import CODES_FORMAT
from tfvqvae.data.code_format import CODES_VERSION
from tfvqvae.data.code_format import expected_metadata
from tfvqvae.data.code_format import model_fingerprint
from tfvqvae.data.transform import normalize_size

__all__ = [
    "CODES_FORMAT",
    "CODES_VERSION",
    "expected_metadata",
    "load_codes",
    "model_fingerprint",
    "read_code_metadata",
    "write_codes",
]

_EXPECTABLE = ("levels", "num_embeddings", "code_shapes", "model_fingerprint", "num_classes")
# Records parsed per step when verifying and streaming a file.
_PARSE_BATCH = 512


# ---------------------------------------------------------------------- header
def read_code_metadata(path):
    """Reads and validates the header of a code file.

    Args:
        path: the code file.

    Returns:
        The header dict (see `tfvqvae.data.code_format`), with ``levels`` as a
        tuple and each ``code_shapes`` entry as an ``(h, w)`` tuple, so they
        compare equal to ``model.levels`` and ``model.code_shapes(...)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a tfvqvae code file (naming it), or is
            of another version.
    """
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
    return _normalize_metadata(metadata)


# ---------------------------------------------------------------------- write
def write_codes(path, model, dataset, batch_size=256, image_size=None, source=None):
    """Encodes every image of ``dataset`` and writes the codes to ``path``.

    The images are encoded in order, ``batch_size`` at a time, by
    ``model.encode_levels`` inside one ``tf.function``. The file appears under
    ``path`` only once complete (written under a temporary name beside it,
    then renamed); on any error nothing is left behind and an existing file at
    ``path`` is untouched.

    Args:
        path: the code file to write (conventionally ``*.tfrecord``);
            replaced if it exists.
        model: a trained model with the levels API (`VQVAE`, `VQVAE2`).
        dataset: an `ImageDataset`.
        batch_size: images per encoding step. Defaults to 256.
        image_size: ``(H, W)`` or an int: resize the images to it first (as
            during training). Defaults to the dataset's own size.
        source: free-form JSON-able dict stored as the header's ``source``,
            on top of the defaults ``dataset`` (its name) and ``image_size``.

    Returns:
        The header written, as `read_code_metadata` returns it.

    Raises:
        ValueError: if the model's code maps do not match its own
            ``code_shapes`` / ``level_num_embeddings`` (a model bug), or the
            image size does not suit the model.
    """
    path = Path(path)
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
    written = 0
    with atomic_path(path) as temp:
        with tf.io.TFRecordWriter(str(temp)) as writer:
            writer.write(_header_example(metadata).SerializeToString())
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
                    # (B, h, w) -> (B, h*w), row-major
                    flat[level] = array.reshape(count, -1).astype(np.int64).tolist()
                label_values = (
                    np.asarray(labels).tolist() if labels is not None else [-1] * count
                )
                for i in range(count):
                    example = _record_example(
                        {level: flat[level][i] for level in levels}, label_values[i]
                    )
                    writer.write(example.SerializeToString())
                written += count
        if written != len(dataset):
            raise ValueError(
                f"wrote {written} code records for dataset {dataset.name!r} "
                f"of {len(dataset)} images"
            )
        # NB: TFRecordWriter flushes but does not fsync; do it before the rename.
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
    return _normalize_metadata(json.loads(json.dumps(metadata)))


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
        elif key in ("num_embeddings", "code_shapes"):
            # Only the levels named in `expect` are compared: a prior of one
            # level need not know the others.
            for level, value in dict(wanted).items():
                value = int(value) if key == "num_embeddings" else tuple(int(s) for s in value)
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
    """Opens a code file as a ``tf.data.Dataset`` after checking it.

    Checks, in order: the header (`read_code_metadata`); ``expect`` against
    the header; then the whole file is read once to count its records, check
    the count against the header's ``num_records`` and the codes against
    [0, K) of their level.

    Args:
        path: the code file.
        expect: optional dict with any of ``levels``, ``num_embeddings``
            ({level: K}), ``code_shapes`` ({level: (h, w)}),
            ``model_fingerprint`` and ``num_classes``; `expected_metadata`
            builds one from a model. For ``num_embeddings`` and
            ``code_shapes`` only the levels given are compared.

    Returns:
        ``(dataset, metadata)``: ``dataset`` yields, unbatched and in file
        order, dicts ``{level: int32 (h, w), ..., "label": int32 ()}`` (label
        -1 for unlabelled images); ``metadata`` is the header.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if it is not a code file, disagrees with
            ``expect`` (naming the key, expected and received values), is
            truncated or corrupt, or holds codes outside [0, K).
    """
    path = Path(path)
    metadata = read_code_metadata(path)
    if expect:
        _check_expect(path, metadata, expect)
    _verify(path, metadata)
    dataset = (
        tf.data.TFRecordDataset(str(path))
        .skip(1)
        .batch(_PARSE_BATCH)
        .map(_parser(metadata), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
        # The count was just verified; knowing it spares Keras an epoch of
        # unknown length ("ran out of data" warnings).
        .apply(tf.data.experimental.assert_cardinality(metadata["num_records"]))
    )
    return dataset, metadata
