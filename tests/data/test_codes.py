"""Code files: write -> load equals direct encoding, the on-disk format, bad files."""

import json
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.data import ImageDataset
from tfvqvae.data import expected_metadata
from tfvqvae.data import from_numpy
from tfvqvae.data import load_codes
from tfvqvae.data import load_digits
from tfvqvae.data import model_fingerprint
from tfvqvae.data import read_code_metadata
from tfvqvae.data import write_codes
from tfvqvae.data.code_shards import shard_path


def tiny_model(seed=0, num_embeddings=16, **kwargs):
    options = dict(hidden_channels=16, residual_channels=8, num_residual_layers=1,
                   num_downsamples=1)
    options.update(kwargs)
    return tfvqvae.VQVAE(
        image_channels=1,
        quantizer=tfvqvae.VectorQuantizerEMA(num_embeddings, 4, decay=0.9, seed=seed, kmeans_init=False, restart_unused_after=None),
        **options,
    )


@pytest.fixture
def model():
    keras.utils.set_random_seed(1)
    return tiny_model()


@pytest.fixture(scope="module")
def digits_test():
    return load_digits("test")


def one_shard(base):
    """The one file of a set written with one shard."""
    return shard_path(base, 0, 1)


def records(dataset):
    return list(dataset.as_numpy_iterator())


def raw_records(path):
    """Every record of a TFRecord file as a tf.train.Example (reads without tfvqvae)."""
    return [tf.train.Example.FromString(r)
            for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def record_offsets(path):
    """Byte offsets where each TFRecord record starts (framing: u64 length, u32 crc,
    data, u32 crc)."""
    data = path.read_bytes()
    offsets, position = [], 0
    while position < len(data):
        offsets.append(position)
        (length,) = struct.unpack("<Q", data[position:position + 8])
        position += 8 + 4 + length + 4
    return offsets


def write_raw(path, metadata, rows):
    """A code file built by hand, following the documented format."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        header = {"metadata": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[json.dumps(metadata).encode()]))}
        writer.write(tf.train.Example(
            features=tf.train.Features(feature=header)).SerializeToString())
        for row in rows:
            feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                       for name, values in row.items()}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


HAND_HEADER = {
    "format": "tfvqvae-codes", "version": 1, "levels": ["top"],
    "num_embeddings": {"top": 4}, "code_shapes": {"top": [2, 3]}, "num_classes": 3,
    "num_records": 2, "model_fingerprint": "abc", "source": {},
}


# ------------------------------------------------------------------ round trip
def test_write_load_equals_encode_levels(tmp_path, model, digits_test):
    path = tmp_path / "codes.tfrecord"
    # 297 images in batches of 64: the last batch is smaller.
    written = write_codes(path, model, digits_test, batch_size=64,
                          source={"split": "test", "note": "x"})
    dataset, metadata = load_codes(path)

    expected = model.encode_levels(digits_test.as_float())["top"].numpy()
    got = records(dataset)
    assert len(got) == len(digits_test) == 297
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), expected)
    np.testing.assert_array_equal([r["label"] for r in got], digits_test.labels)
    assert dataset.element_spec["top"] == tf.TensorSpec((4, 4), tf.int32)
    assert dataset.element_spec["label"] == tf.TensorSpec((), tf.int32)

    assert metadata == written == read_code_metadata(path)
    assert metadata["format"] == "tfvqvae-codes" and metadata["version"] == 1
    assert metadata["levels"] == model.levels == ("top",)
    assert metadata["num_embeddings"] == {"top": 16}
    assert metadata["code_shapes"] == model.code_shapes((8, 8)) == {"top": (4, 4)}
    assert metadata["num_classes"] == 10 and metadata["num_records"] == 297
    assert metadata["num_shards"] == 1  # a small dataset: one shard
    assert metadata["model_fingerprint"] == model_fingerprint(model)
    assert metadata["source"] == {"dataset": "digits", "image_size": [8, 8],
                                  "split": "test", "note": "x"}
    # One shard, no temporary file left.
    assert os.listdir(tmp_path) == ["codes-00000-of-00001.tfrecord"]


def test_on_disk_format(tmp_path, model, digits_test):
    """Read back with plain TensorFlow: header JSON, then one record per image."""
    data = digits_test.take(5)
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, data)
    examples = raw_records(one_shard(path))
    assert len(examples) == 1 + 5

    header = examples[0].features.feature
    assert set(header) == {"metadata"}
    metadata = json.loads(header["metadata"].bytes_list.value[0])
    assert metadata == {
        "format": "tfvqvae-codes", "version": 1, "levels": ["top"],
        "num_embeddings": {"top": 16}, "code_shapes": {"top": [4, 4]},
        "num_classes": 10, "num_records": 5, "model_fingerprint": model_fingerprint(model),
        "source": {"dataset": "digits", "image_size": [8, 8]},
        "shard_index": 0, "num_shards": 1, "total_records": 5,
    }
    codes = model.encode(data.as_float()).numpy()
    for i, example in enumerate(examples[1:]):
        feature = example.features.feature
        assert set(feature) == {"codes/top", "label"}
        assert list(feature["codes/top"].int64_list.value) == codes[i].reshape(-1).tolist()
        assert list(feature["label"].int64_list.value) == [data.labels[i]]


def test_unlabelled_resized_images(tmp_path, model):
    images = np.random.default_rng(0).integers(0, 256, (7, 12, 12, 1), dtype=np.uint8)
    data = from_numpy(images)
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, data, batch_size=3, image_size=8)
    dataset, metadata = load_codes(path)

    resized = tf.clip_by_value(tf.image.resize(images / 255.0, (8, 8), antialias=True), 0, 1)
    expected = model.encode(tf.cast(resized, tf.float32)).numpy()
    got = records(dataset)
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), expected)
    assert [int(r["label"]) for r in got] == [-1] * 7
    assert metadata["num_classes"] is None and metadata["num_records"] == 7
    assert metadata["source"]["image_size"] == [8, 8]
    assert metadata["code_shapes"] == {"top": (4, 4)}


class TwoLevelStub:
    """The levels API of a two-level model, with codes a NumPy reference can compute.

    top: mean of each 4x4 block times 5, floored (K=5); bottom: mean of each
    2x2 block times 7, floored (K=7).
    """

    levels = ("top", "bottom")
    level_num_embeddings = {"top": 5, "bottom": 7}

    def __init__(self):
        self.weights = [
            keras.Variable(np.arange(10, dtype=np.float32).reshape(5, 2), name="codebook"),
            keras.Variable(np.ones((7, 2), np.float32), name="codebook"),
        ]

    def get_config(self):
        return {"name": "stub"}

    def code_shapes(self, image_size):
        h, w = image_size
        return {"top": (h // 4, w // 4), "bottom": (h // 2, w // 2)}

    def encode_levels(self, images):
        def level(factor, k):
            pooled = tf.nn.avg_pool2d(images, factor, factor, "VALID")[..., 0]
            return tf.minimum(tf.cast(tf.floor(pooled * k), tf.int32), k - 1)

        return {"top": level(4, 5), "bottom": level(2, 7)}


def block_codes(images, factor, k):
    n, h, w = images.shape[:3]
    blocks = images[..., 0].reshape(n, h // factor, factor, w // factor, factor).mean((2, 4))
    return np.minimum(np.floor(blocks * k).astype(np.int64), k - 1)


def test_two_level_model(tmp_path, digits_test):
    stub = TwoLevelStub()
    data = digits_test.take(70)
    path = tmp_path / "codes.tfrecord"
    write_codes(path, stub, data, batch_size=32)
    dataset, metadata = load_codes(path, expect=expected_metadata(stub, 8))
    assert metadata["levels"] == ("top", "bottom")
    assert metadata["num_embeddings"] == {"top": 5, "bottom": 7}
    assert metadata["code_shapes"] == {"top": (2, 2), "bottom": (4, 4)}

    got = records(dataset)
    images = data.as_float().astype(np.float64)
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), block_codes(images, 4, 5))
    np.testing.assert_array_equal(np.stack([r["bottom"] for r in got]),
                                  block_codes(images, 2, 7))
    np.testing.assert_array_equal([r["label"] for r in got], data.labels)
    feature = raw_records(one_shard(path))[1].features.feature
    assert set(feature) == {"codes/top", "codes/bottom", "label"}
    # A prior of one level may name only that level.
    load_codes(path, expect={"code_shapes": {"bottom": (4, 4)}, "num_embeddings": {"top": 5}})


@pytest.mark.skipif(not hasattr(tfvqvae, "VQVAE2"), reason="tfvqvae.VQVAE2 not available yet")
def test_vqvae2_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizerEMA(24, 6, decay=0.9, kmeans_init=False, restart_unused_after=None),
    )
    data = from_numpy(np.random.default_rng(0).random((10, 16, 16, 1), np.float32),
                      labels=np.arange(10) % 3, num_classes=3)
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, data, batch_size=4)
    dataset, metadata = load_codes(path, expect=expected_metadata(model, 16))
    assert metadata["levels"] == model.levels == ("top", "bottom")
    assert metadata["num_embeddings"] == {"top": 16, "bottom": 24}
    assert metadata["code_shapes"] == {"top": (2, 2), "bottom": (4, 4)}
    top, bottom = model.encode(data.as_float())
    got = records(dataset)
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), top.numpy())
    np.testing.assert_array_equal(np.stack([r["bottom"] for r in got]), bottom.numpy())
    np.testing.assert_array_equal([r["label"] for r in got], np.arange(10) % 3)

    # Both codebooks enter the fingerprint.
    fingerprint = model_fingerprint(model)
    model.bottom_quantizer.codebook.assign(model.bottom_quantizer.codebook + 1e-3)
    assert model_fingerprint(model) != fingerprint
    with pytest.raises(ValueError, match="model_fingerprint expected"):
        load_codes(path, expect=expected_metadata(model))


# ----------------------------------------------------------------- fingerprint
def test_fingerprint_identifies_trained_model(tmp_path, model):
    fingerprint = model_fingerprint(model)
    assert isinstance(fingerprint, str) and len(fingerprint) == 16
    int(fingerprint, 16)
    assert model_fingerprint(model) == fingerprint

    model.save(tmp_path / "model.keras")
    assert model_fingerprint(keras.saving.load_model(tmp_path / "model.keras")) == fingerprint

    keras.utils.set_random_seed(2)
    assert model_fingerprint(tiny_model()) != fingerprint  # same config, other codebook
    codebook = model.quantizer.codebook
    codebook.assign(codebook + 1e-3)
    assert model_fingerprint(model) != fingerprint
    with pytest.raises(ValueError, match="has no weights"):
        model_fingerprint(object())


def test_fingerprint_of_a_model_without_codebook_hashes_its_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                          quantizer=tfvqvae.FiniteScalarQuantizer([5, 3]))
    model(np.zeros((1, 8, 8, 1), np.float32))
    assert not [w for w in model.weights if w.name == "codebook"]
    fingerprint = model_fingerprint(model)
    model.save(tmp_path / "model.keras")
    assert model_fingerprint(keras.saving.load_model(tmp_path / "model.keras")) == fingerprint
    kernel = model.encoder.weights[0]
    kernel.assign(kernel + 1e-3)  # other encoder, other codes
    assert model_fingerprint(model) != fingerprint


# ------------------------------------------------------------------- bad files
@pytest.fixture
def code_file(tmp_path, model, digits_test):
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, digits_test.take(40))
    return one_shard(path)  # its one file


def test_truncated_file_is_named(tmp_path, code_file):
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(code_file.read_bytes()[:-5])
    read_code_metadata(cut)  # the header itself is intact
    with pytest.raises(ValueError, match=f"{cut}.* is truncated or corrupt"):
        load_codes(cut)

    # Cut at a record boundary: every record reads, but one is missing.
    whole = tmp_path / "whole-records.tfrecord"
    whole.write_bytes(code_file.read_bytes()[:record_offsets(code_file)[-1]])
    with pytest.raises(ValueError, match=f"{whole}.*truncated.*40 records.*holds 39"):
        load_codes(whole)

    # A flipped byte in a record fails its checksum.
    data = bytearray(code_file.read_bytes())
    data[record_offsets(code_file)[5] + 20] ^= 0xFF
    flipped = tmp_path / "flipped.tfrecord"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{flipped}.*truncated or corrupt"):
        load_codes(flipped)


def test_not_a_code_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a TFRecord at all\n")
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    other = tmp_path / "other.tfrecord"
    write_raw(other, {"format": "something-else"}, [])
    no_header = tmp_path / "no-header.tfrecord"
    with tf.io.TFRecordWriter(str(no_header)) as writer:
        writer.write(b"\x00\x01 not a protobuf \xff")
    for path in (text, empty, other, no_header, tmp_path):
        with pytest.raises(ValueError, match=f"{path} is not a .*tfvqvae code file"):
            load_codes(path)
    newer = tmp_path / "newer.tfrecord"
    write_raw(newer, {**HAND_HEADER, "version": 2}, [])
    with pytest.raises(ValueError, match="unsupported code file version 2"):
        read_code_metadata(newer)
    bad_shape = tmp_path / "bad-shape.tfrecord"
    write_raw(bad_shape, {**HAND_HEADER, "code_shapes": {"top": [2]}}, [])
    with pytest.raises(ValueError, match="code_shapes"):
        read_code_metadata(bad_shape)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.tfrecord"
    with pytest.raises(FileNotFoundError, match="nope.tfrecord"):
        read_code_metadata(missing)
    with pytest.raises(FileNotFoundError, match="nope.tfrecord"):
        load_codes(missing)


def test_hand_written_file_reads_and_bad_codes_are_caught(tmp_path):
    good = tmp_path / "good.tfrecord"
    write_raw(good, HAND_HEADER, [{"codes/top": [0, 1, 2, 3, 0, 1], "label": [2]},
                                  {"codes/top": [3, 3, 3, 3, 3, 3], "label": [0]}])
    dataset, _ = load_codes(good)
    got = records(dataset)
    np.testing.assert_array_equal(got[0]["top"], [[0, 1, 2], [3, 0, 1]])
    assert [int(r["label"]) for r in got] == [2, 0]

    for name, row, match in [
        ("big", {"codes/top": [0, 1, 2, 4, 0, 1]},
         r"'top' codes lie in \[0, 4\], outside \[0, 4\)"),
        ("negative", {"codes/top": [0, -1, 2, 3, 0, 1]}, r"\[-1, 3\], outside \[0, 4\)"),
        ("short", {"codes/top": [0, 1, 2]}, "does not match the header"),
        ("label", {"codes/top": [0] * 6, "label": [3]}, r"labels lie in \[0, 3\]"),
    ]:
        path = tmp_path / f"{name}.tfrecord"
        write_raw(path, HAND_HEADER, [{"codes/top": [0] * 6, "label": [0]},
                                      {"label": [1], **row}])
        with pytest.raises(ValueError, match=f"{path}.*corrupt.*{match}"):
            load_codes(path)


def test_expect_mismatch_names_key_and_values(tmp_path, code_file, model):
    fingerprint = model_fingerprint(model)
    load_codes(code_file, expect=expected_metadata(model, (8, 8)))  # matches

    keras.utils.set_random_seed(3)
    other = tiny_model()
    other_fingerprint = model_fingerprint(other)
    cases = [
        ({"num_embeddings": {"top": 32}}, r"num_embeddings\['top'\] expected 32, received 16"),
        ({"code_shapes": {"top": (8, 8)}},
         r"code_shapes\['top'\] expected \(8, 8\), received \(4, 4\)"),
        ({"code_shapes": {"bottom": (8, 8)}},
         r"code_shapes\['bottom'\] expected \(8, 8\), received 'no such level'"),
        ({"levels": ["top", "bottom"]},
         r"levels expected \('top', 'bottom'\), received \('top',\)"),
        (expected_metadata(other, 8),
         f"model_fingerprint expected '{other_fingerprint}', received '{fingerprint}'"),
        ({"num_classes": 5}, "num_classes expected 5, received 10"),
    ]
    for expect, match in cases:
        with pytest.raises(ValueError, match=f"{code_file}.*{match}"):
            load_codes(code_file, expect=expect)
    with pytest.raises(ValueError, match="Unknown `expect` keys \\['levle'\\]"):
        load_codes(code_file, expect={"levle": ["top"]})
    # A model built for 16x16 images expects other code shapes.
    with pytest.raises(ValueError, match=r"code_shapes\['top'\] expected \(8, 8\)"):
        load_codes(code_file, expect=expected_metadata(model, 16))


# -------------------------------------------------------------- atomic writes
class FailingDataset(ImageDataset):
    """Yields one batch, then fails: a write killed half-way."""

    def to_tf_dataset(self, batch_size, **kwargs):
        def batches():
            yield from super(FailingDataset, self).to_tf_dataset(batch_size, **kwargs).take(1)
            raise RuntimeError("killed half-way")

        return batches()


def test_failed_write_leaves_nothing(tmp_path, model, digits_test):
    data = FailingDataset(images=digits_test.images, labels=digits_test.labels,
                          name="digits", num_classes=10)
    path = tmp_path / "codes" / "codes.tfrecord"
    for num_shards in (1, 3):
        with pytest.raises(RuntimeError, match="killed half-way"):
            write_codes(path, model, data, batch_size=16, num_shards=num_shards)
        assert os.listdir(path.parent) == []

    # Existing files are left as they were, whatever the new set's size.
    write_codes(path, model, digits_test.take(3))
    before = one_shard(path).read_bytes()
    for num_shards in (1, 3):
        with pytest.raises(RuntimeError, match="killed half-way"):
            write_codes(path, model, data, batch_size=16, num_shards=num_shards)
        assert one_shard(path).read_bytes() == before
        assert os.listdir(path.parent) == ["codes-00000-of-00001.tfrecord"]


def test_model_that_breaks_its_promise_is_refused(tmp_path, digits_test):
    class Liar(TwoLevelStub):
        def code_shapes(self, image_size):
            return {"top": (3, 3), "bottom": (4, 4)}

    class OutOfRange(TwoLevelStub):
        level_num_embeddings = {"top": 2, "bottom": 7}

    path = tmp_path / "codes.tfrecord"
    with pytest.raises(ValueError, match=r"'top' codes of shape \(10, 2, 2\).*\(10, 3, 3\)"):
        write_codes(path, Liar(), digits_test.take(10))
    with pytest.raises(ValueError, match=r"'top' codes in \[.*outside \[0, 2\)"):
        write_codes(path, OutOfRange(), digits_test.take(10), num_shards=2)
    assert os.listdir(tmp_path) == []
