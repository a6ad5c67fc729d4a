"""The code-file record format, its header, and the fingerprint of a model.

A code file holds a dataset's discrete code maps for training priors
(Algorithm 2 of VQ-VAE-2, lines 1-7; `tfvqvae.data.codes` writes and reads
it). This module owns what a file *is*: the header fields and their checks,
the feature names, serializing and parsing of the records, and
`model_fingerprint`, which ties a file to the model that wrote it.

A split's codes are one file (the layout of tfvqvae up to 0.x's single-file
release, still read) or a set of shards, each a complete code file of a
contiguous range of the records (`tfvqvae.data.code_shards` names and finds
them). File layout (one TFRecord file, or one shard):

* record 0, the header: a ``tf.train.Example`` whose bytes feature
  ``metadata`` holds JSON::

      {"format": "tfvqvae-codes", "version": 1,
       "levels": ["top", "bottom"],
       "num_embeddings": {"top": 512, "bottom": 512},
       "code_shapes": {"top": [8, 8], "bottom": [16, 16]},   # [h, w, Q]: depth Q
       "num_classes": 10,              # or null
       "num_records": 50000,
       "model_fingerprint": "3f2a...",
       "source": {"dataset": "cifar10", "split": "train", "image_size": [32, 32]},
       # shards only (absent from single files):
       "shard_index": 0, "num_shards": 4, "total_records": 200000}

  In a shard, ``num_records`` counts the records of that shard and
  ``total_records`` those of the whole set; every other field is the same in
  all shards of a set. A shard is a valid code file on its own (readers that
  know no shards read it as a file of ``num_records`` records).

* records 1..N, one per image in dataset order: for each level an
  ``int64_list`` feature ``codes/<level>`` with the h*w codes of that level
  flattened row-major, and an ``int64`` feature ``label`` (-1 when the
  dataset is unlabelled).

Codes with a depth axis. A level whose model quantiser has a ``code_depth``
Q (`tfvqvae.ResidualVectorQuantizer`, `tfvqvae.GroupedVectorQuantizer`) has
Q codes per position: its ``code_shapes`` entry is ``[h, w, Q]`` and its
feature holds the h*w*Q codes of the (h, w, Q) map flattened row-major (a
position's Q codes next to each other, in depth order). The version stays 1:
a file without such a level is byte for byte what earlier releases wrote
(and still loads in them), and an earlier release refuses a file with one
by its header ("code_shapes must give [h, w] per level") instead of
misreading it.

Reference: Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2", NeurIPS 2019, https://arxiv.org/abs/1906.00446
"""

import hashlib
import json
import re

import keras
import numpy as np
import tensorflow as tf

from tfvqvae.data.transform import normalize_size
from tfvqvae.validation import is_int

__all__ = [
    "CODES_FORMAT",
    "CODES_VERSION",
    "expected_metadata",
    "model_fingerprint",
]

#: The ``format`` field of every code file header.
CODES_FORMAT = "tfvqvae-codes"
#: The header ``version`` this module writes and reads.
CODES_VERSION = 1

_LABEL = "label"
_METADATA = "metadata"


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
    model saved and loaded again keeps its fingerprint. A model without a
    codebook (every level a `FiniteScalarQuantizer` or `LookupFreeQuantizer`,
    whose codes depend on the encoder alone) hashes every weight instead.

    Args:
        model: a `VQVAE`, `VQVAE2` or any object with ``get_config()`` and
            ``weights``.

    Returns:
        The first 16 hex digits of the sha256 digest.

    Raises:
        ValueError: if ``model`` has no weights at all.
    """
    codebooks = _codebooks(model) or list(getattr(model, "weights", ()))
    if not codebooks:
        raise ValueError(
            f"Cannot fingerprint {type(model).__name__}: it has no weights "
            "(build it, e.g. by calling it on a batch, first)."
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
        A dict with ``levels``, ``num_embeddings``, ``code_depths`` ({level: Q
        or None}: the model's ``level_code_depths``; all None for a model
        without that attribute), ``model_fingerprint`` and, with
        ``image_size``, ``code_shapes`` ((h, w), or (h, w, Q) for a level with
        a depth axis).
    """
    depths = getattr(model, "level_code_depths", None) or {}
    expect = {
        "levels": tuple(model.levels),
        "num_embeddings": dict(model.level_num_embeddings),
        "code_depths": {level: depths.get(level) for level in model.levels},
        "model_fingerprint": model_fingerprint(model),
    }
    if image_size is not None:
        expect["code_shapes"] = dict(model.code_shapes(normalize_size(image_size)))
    return expect


# ---------------------------------------------------------------------- header
def _normalize_metadata(metadata):
    """JSON header -> the dict handed out: levels a tuple, code shapes tuples, and the
    derived ``code_depths`` {level: Q or None} (the third entry of a level's shape)."""
    metadata = dict(metadata)
    metadata["levels"] = tuple(metadata["levels"])
    metadata["num_embeddings"] = {k: int(v) for k, v in metadata["num_embeddings"].items()}
    metadata["code_shapes"] = {
        k: tuple(int(s) for s in v) for k, v in metadata["code_shapes"].items()
    }
    metadata["code_depths"] = {
        k: (v[2] if len(v) == 3 else None) for k, v in metadata["code_shapes"].items()
    }
    return metadata


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
        or not all(is_int(k, 1) for k in num_embeddings.values())
    ):
        raise bad(f"num_embeddings must give a positive K per level; received {num_embeddings!r}")
    shapes = metadata.get("code_shapes")
    if (
        not isinstance(shapes, dict)
        or set(shapes) != set(levels)
        or not all(
            isinstance(s, list) and len(s) in (2, 3) and all(is_int(d, 1) for d in s)
            for s in shapes.values()
        )
    ):
        raise bad(f"code_shapes must give [h, w] (or [h, w, Q]: Q codes per position) per "
                  f"level; received {shapes!r}")
    if not is_int(metadata.get("num_records"), 0):
        raise bad(f"num_records must be a count; received {metadata.get('num_records')!r}")
    num_classes = metadata.get("num_classes")
    if num_classes is not None and not is_int(num_classes, 1):
        raise bad(f"num_classes must be null or positive; received {num_classes!r}")
    if not isinstance(metadata.get("model_fingerprint"), str):
        raise bad("model_fingerprint is missing")
    shard_fields = [key for key in _SHARD_FIELDS if key in metadata]
    if shard_fields:
        index, count, total = (metadata.get(key) for key in _SHARD_FIELDS)
        if len(shard_fields) != len(_SHARD_FIELDS):
            raise bad(f"a shard header needs all of {list(_SHARD_FIELDS)}; it has {shard_fields}")
        if not is_int(count, 1) or not is_int(index, 0) or index >= count:
            raise bad(f"shard_index {index!r} of num_shards {count!r} is not a shard number")
        if not is_int(total, metadata["num_records"]):
            raise bad(f"total_records {total!r} is less than this shard's "
                      f"num_records {metadata['num_records']}")


#: Header fields of a shard, absent from a single-file header.
_SHARD_FIELDS = ("shard_index", "num_shards", "total_records")


def _header_example(metadata):
    payload = json.dumps(metadata, sort_keys=True).encode()
    feature = {_METADATA: tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))}
    return tf.train.Example(features=tf.train.Features(feature=feature))


# ----------------------------------------------------------------------- records
def _record_example(codes, label):
    """One image's record: ``codes`` {level: h*w (or h*w*Q) ints, row-major}, ``label``
    (-1: none)."""
    feature = {
        _feature_name(level): tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        for level, values in codes.items()
    }
    feature[_LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _varint(value):
    """The protobuf varint of one int64 (negative values as their uint64 two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _packed_varints(values):
    """int (B, n), all >= 0 -> (the B packed rows' bytes concatenated, int64 (B,) byte counts)."""
    values = np.asarray(values)
    values = values.astype(np.int32 if values.size and values.max() < 2**31 else np.int64)
    count, n = values.shape
    top = int(values.max()) if values.size else 0
    width = max(1, (top.bit_length() + 6) // 7)  # bytes of the largest varint
    if width == 1:  # every code < 128: one byte each (K <= 128)
        return values.astype(np.uint8).tobytes(), np.full(count, n, np.int64)
    # Byte j of a varint: bits 7j..7j+6, with 0x80 when more bytes follow.
    more = np.empty((count, n, width), bool)  # more[..., j]: byte j+1 exists
    for j in range(width):
        more[..., j] = (values >> (7 * (j + 1))) != 0
    groups = np.empty((count, n, width), np.uint8)
    for j in range(width):
        groups[..., j] = ((values >> (7 * j)) & 0x7F) | (more[..., j].astype(np.uint8) << 7)
    present = np.empty((count, n, width), bool)  # byte j is written
    present[..., 0] = True
    present[..., 1:] = more[..., :-1]
    lengths = present.sum(axis=(1, 2), dtype=np.int64)
    return groups[present].tobytes(), lengths


def _serialize_records(codes, labels):
    """The serialized records of a batch, as `_record_example` would give them, vectorized.

    Builds the ``tf.train.Example`` wire format directly (Example.features ->
    Features.feature map entries in the order of ``codes``, then ``label`` ->
    Feature.int64_list -> packed Int64List.value): about 50 times faster
    than building the messages one by one in Python, which matters for
    ImageNet-size code maps (thousands of codes per record).

    Args:
        codes: ``{level: int (B, h*w)}``, every code >= 0, flattened row-major.
        labels: int (B,), -1 for unlabelled images.

    Returns:
        A list of B ``bytes``, one serialized ``tf.train.Example`` per image.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    count = labels.shape[0]
    if not count:
        return []

    def length_delimited(tag, payload_length):
        return bytes([tag]) + _varint(payload_length)

    def entry(key, packed_payload_length):
        """The bytes of a map entry ``key`` up to its packed values (which follow)."""
        int64_list = length_delimited(0x0A, packed_payload_length)  # Int64List.value, packed
        feature = length_delimited(0x1A, len(int64_list) + packed_payload_length)  # int64_list
        key_bytes = key.encode()
        body = (length_delimited(0x0A, len(key_bytes)) + key_bytes  # entry.key
                + length_delimited(0x12, len(feature) + len(int64_list) + packed_payload_length)
                + feature + int64_list)
        head = length_delimited(0x0A, len(body) + packed_payload_length)  # Features.feature
        return head + body

    packed = {}
    for level, values in codes.items():
        values = np.asarray(values).reshape(count, -1)
        data, lengths = _packed_varints(values)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        packed[_feature_name(level)] = (data, offsets, lengths.tolist())
    records = []
    for i in range(count):
        parts = []
        for name, (data, offsets, lengths) in packed.items():
            parts.append(entry(name, lengths[i]))
            parts.append(data[offsets[i]:offsets[i + 1]])
        label = _varint(int(labels[i]))
        parts.append(entry(_LABEL, len(label)))
        parts.append(label)
        features = b"".join(parts)
        records.append(b"\x0a" + _varint(len(features)) + features)  # Example.features
    return records


def _parser(metadata):
    """A function parsing a batch of serialized records into {level: (B, *shape), label: (B,)}
    (shape (h, w), or (h, w, Q) for a level with a depth axis)."""
    shapes = {level: tuple(int(s) for s in shape)
              for level, shape in metadata["code_shapes"].items()}
    spec = {
        _feature_name(level): tf.io.FixedLenFeature([int(np.prod(shape))], tf.int64)
        for level, shape in shapes.items()
    }
    spec[_LABEL] = tf.io.FixedLenFeature([], tf.int64)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        out = {}
        for level in metadata["levels"]:
            # (B, h*w[*Q]) -> (B, h, w[, Q]), row-major
            out[level] = tf.reshape(tf.cast(parsed[_feature_name(level)], tf.int32),
                                    [-1, *shapes[level]])
        out[_LABEL] = tf.cast(parsed[_LABEL], tf.int32)
        return out

    return parse
