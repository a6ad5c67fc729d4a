"""Code files: the discrete code maps of a dataset, as one TFRecord file.

Algorithm 2 of VQ-VAE-2 (lines 1-7) encodes the training set once with the
trained VQ-VAE and fits the priors to the resulting code maps. This module
writes and reads those code maps:

    model --encode_levels--> {level: int32 (B, h, w)} --write_codes--> codes.tfrecord
    codes.tfrecord --load_codes--> tf.data.Dataset of {level: int32 (h, w), "label": int32}

File layout (one TFRecord file, written atomically: a temporary name in the
same folder, renamed when complete, so no half-written file ever carries the
final name):

* record 0, the header: a ``tf.train.Example`` whose bytes feature
  ``metadata`` holds JSON::

      {"format": "tfvqvae-codes", "version": 1,
       "levels": ["top", "bottom"],
       "num_embeddings": {"top": 512, "bottom": 512},
       "code_shapes": {"top": [8, 8], "bottom": [16, 16]},
       "num_classes": 10,              # or null
       "num_records": 50000,
       "model_fingerprint": "3f2a...",
       "source": {"dataset": "cifar10", "split": "train", "image_size": [32, 32]}}

* records 1..N, one per image in dataset order: for each level an
  ``int64_list`` feature ``codes/<level>`` with the h*w codes of that level
  flattened row-major, and an ``int64`` feature ``label`` (-1 when the
  dataset is unlabelled).

Readers check the header against what they expect (levels, codebook sizes,
code-map shapes, the fingerprint of the model that wrote it) and verify the
file is complete before handing out a dataset, so a file from another model, a
code map of the wrong shape or a truncated file fails at once with a message
naming the file instead of half-way through training a prior.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfvqvae.atomic import atomic_path
from tfvqvae.data.image_dataset import _normalize_size

__all__ = [
    "CODES_FORMAT",
    "CODES_VERSION",
    "expected_metadata",
    "load_codes",
    "model_fingerprint",
    "read_code_metadata",
    "write_codes",
]

#: The ``format`` field of every code file header.
CODES_FORMAT = "tfvqvae-codes"
#: The header ``version`` this module writes and reads.
CODES_VERSION = 1

_LABEL = "label"
_METADATA = "metadata"
_EXPECTABLE = ("levels", "num_embeddings", "code_shapes", "model_fingerprint", "num_classes")
# Records parsed per step when verifying and streaming a file.
_PARSE_BATCH = 512


def _feature_name(level):
    return f"codes/{level}"


def _first_line(error):
    """The gist of a TensorFlow error, without the op and function names around it."""
    lines = (error.message or "").strip().splitlines()
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", lines[0]) if lines else ""
    line = re.sub(r"\s*\[Op:\w+\].*$", "", line).strip()
    return line or type(error).__name__


# ----------------------------------------------------------------- fingerprint
def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    # NB: no repr(): it may hold a memory address, which changes every run.
    return f"<{type(value).__qualname__}>"


def _codebooks(model):
    """The codebook variables of ``model`` (every weight named ``codebook``), in weight order."""
    return [w for w in getattr(model, "weights", ()) if w.name == "codebook"]


def model_fingerprint(model):
    """A short hex digest that identifies a trained model.

    sha256 over the model's class name, its ``get_config()`` as sorted JSON
    and the bytes (with shape and dtype) of every quantizer codebook, in the
    model's weight order. Two models of the same architecture trained
    differently have different codebooks and so different fingerprints; a
    model saved and loaded again keeps its fingerprint.

    Args:
        model: a `VQVAE`, `VQVAE2` or any object with ``get_config()`` and
            codebook weights (variables named ``codebook`` in ``weights``).

    Returns:
        The first 16 hex digits of the sha256 digest.

    Raises:
        ValueError: if ``model`` has no codebook weights.
    """
    codebooks = _codebooks(model)
    if not codebooks:
        raise ValueError(
            f"Cannot fingerprint {type(model).__name__}: it has no codebook weights "
            "(variables named 'codebook' in `model.weights`)."
        )
    digest = hashlib.sha256()
    digest.update(type(model).__name__.encode())
    config = json.dumps(model.get_config(), sort_keys=True, default=_json_default)
    digest.update(b"\0" + config.encode())
    for codebook in codebooks:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(codebook))
        digest.update(f"\0{array.dtype.str}{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def expected_metadata(model, image_size=None):
    """What a code file written by ``model`` must say: an ``expect`` for `load_codes`.

    Args:
        model: a model with the levels API.
        image_size: ``(H, W)`` or an int; when given, ``code_shapes`` is
            included too.

    Returns:
        A dict with ``levels``, ``num_embeddings``, ``model_fingerprint`` and,
        with ``image_size``, ``code_shapes``.
    """
    expect = {
        "levels": tuple(model.levels),
        "num_embeddings": dict(model.level_num_embeddings),
        "model_fingerprint": model_fingerprint(model),
    }
    if image_size is not None:
        expect["code_shapes"] = dict(model.code_shapes(_normalize_size(image_size)))
    return expect


# ---------------------------------------------------------------------- header
def _normalize_metadata(metadata):
    """JSON header -> the dict handed out: levels a tuple, code shapes tuples."""
    metadata = dict(metadata)
    metadata["levels"] = tuple(metadata["levels"])
    metadata["num_embeddings"] = {k: int(v) for k, v in metadata["num_embeddings"].items()}
    metadata["code_shapes"] = {
        k: tuple(int(s) for s in v) for k, v in metadata["code_shapes"].items()
    }
    return metadata


def _is_count(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_header(path, metadata):
    """Raises ValueError naming ``path`` unless ``metadata`` is a valid version-1 header."""

    def bad(why):
        return ValueError(f"{path} is not a valid tfvqvae code file: {why}")

    if not isinstance(metadata, dict) or metadata.get("format") != CODES_FORMAT:
        raise bad(f"its header has no format {CODES_FORMAT!r}")
    if metadata.get("version") != CODES_VERSION:
        raise ValueError(
            f"{path}: unsupported code file version {metadata.get('version')!r}; "
            f"this tfvqvae reads version {CODES_VERSION}"
        )
    levels = metadata.get("levels")
    if (
        not isinstance(levels, list)
        or not levels
        or not all(isinstance(level, str) and level for level in levels)
        or len(set(levels)) != len(levels)
        or _LABEL in levels
    ):
        raise bad(f"levels must be a list of distinct names; received {levels!r}")
    num_embeddings = metadata.get("num_embeddings")
    if (
        not isinstance(num_embeddings, dict)
        or set(num_embeddings) != set(levels)
        or not all(_is_count(k, 1) for k in num_embeddings.values())
    ):
        raise bad(f"num_embeddings must give a positive K per level; received {num_embeddings!r}")
    shapes = metadata.get("code_shapes")
    if (
        not isinstance(shapes, dict)
        or set(shapes) != set(levels)
        or not all(
            isinstance(s, list) and len(s) == 2 and all(_is_count(d, 1) for d in s)
            for s in shapes.values()
        )
    ):
        raise bad(f"code_shapes must give [h, w] per level; received {shapes!r}")
    if not _is_count(metadata.get("num_records"), 0):
        raise bad(f"num_records must be a count; received {metadata.get('num_records')!r}")
    num_classes = metadata.get("num_classes")
    if num_classes is not None and not _is_count(num_classes, 1):
        raise bad(f"num_classes must be null or positive; received {num_classes!r}")
    if not isinstance(metadata.get("model_fingerprint"), str):
        raise bad("model_fingerprint is missing")


def _header_example(metadata):
    payload = json.dumps(metadata, sort_keys=True).encode()
    feature = {_METADATA: tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))}
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_code_metadata(path):
    """Reads and validates the header of a code file.

    Args:
        path: the code file.

    Returns:
        The header dict (see the module docstring), with ``levels`` as a
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
        height, width = _normalize_size(image_size)
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
                    feature = {
                        _feature_name(level): tf.train.Feature(
                            int64_list=tf.train.Int64List(value=flat[level][i])
                        )
                        for level in levels
                    }
                    feature[_LABEL] = tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[label_values[i]])
                    )
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
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
def _parser(metadata):
    """A function parsing a batch of serialized records into {level: (B, h, w), label: (B,)}."""
    shapes = metadata["code_shapes"]
    spec = {
        _feature_name(level): tf.io.FixedLenFeature([h * w], tf.int64)
        for level, (h, w) in shapes.items()
    }
    spec[_LABEL] = tf.io.FixedLenFeature([], tf.int64)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        out = {}
        for level in metadata["levels"]:
            h, w = shapes[level]
            # (B, h*w) -> (B, h, w)
            out[level] = tf.reshape(tf.cast(parsed[_feature_name(level)], tf.int32), [-1, h, w])
        out[_LABEL] = tf.cast(parsed[_LABEL], tf.int32)
        return out

    return parse


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
