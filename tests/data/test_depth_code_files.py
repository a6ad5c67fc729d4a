"""Code files of models whose levels have a depth axis; files of earlier releases still read.

Right values: the codes the model's ``encode_levels`` gives, read back record
by record with plain TensorFlow (the documented row-major (h, w, Q) layout);
block-mean codes recomputed with NumPy for the legacy file.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.data import expected_metadata
from tfvqvae.data import load_codes
from tfvqvae.data import load_digits
from tfvqvae.data import read_code_metadata
from tfvqvae.data import write_codes
from tfvqvae.data.code_shards import estimated_record_bytes
from tfvqvae.data.code_shards import shard_path

LEGACY = Path(__file__).resolve().parent / "legacy" / "codes.tfrecord"
SIZES = dict(image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1)


def quantizer(kind, k=16, d=4, depth=3):
    options = dict(kmeans_init=False, restart_unused_after=None)
    if kind == "rvq":
        return tfvqvae.ResidualVectorQuantizer(depth, k, d, **options)
    if kind == "grouped":
        return tfvqvae.GroupedVectorQuantizer(depth, k, d, **options)
    return tfvqvae.VectorQuantizerEMA(k, d, **options)


def one_level(kind, **kwargs):
    keras.utils.set_random_seed(0)
    return tfvqvae.VQVAE(num_downsamples=1, quantizer=quantizer(kind, **kwargs), **SIZES)


@pytest.fixture(scope="module")
def digits():
    return load_digits("test").take(40)


def records(dataset):
    return list(dataset.as_numpy_iterator())


def raw_records(path):
    return [tf.train.Example.FromString(r)
            for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def test_rvq_codes_round_trip_with_their_depth(tmp_path, digits):
    model = one_level("rvq")
    path = tmp_path / "codes.tfrecord"
    written = write_codes(path, model, digits, batch_size=16)
    dataset, metadata = load_codes(path, expect=expected_metadata(model, 8))
    expected = model.encode_levels(digits.as_float())["top"].numpy()
    assert expected.shape == (40, 4, 4, 3)
    got = records(dataset)
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), expected)
    np.testing.assert_array_equal([r["label"] for r in got], digits.labels)
    assert dataset.element_spec["top"] == tf.TensorSpec((4, 4, 3), tf.int32)
    assert metadata == written == read_code_metadata(path)
    assert metadata["code_shapes"] == model.code_shapes((8, 8)) == {"top": (4, 4, 3)}
    assert metadata["code_depths"] == model.level_code_depths == {"top": 3}
    assert metadata["version"] == 1

    # On disk: the header says [h, w, Q]; a record holds the h*w*Q codes row-major,
    # a position's Q codes side by side.
    examples = raw_records(shard_path(path, 0, 1))
    header = json.loads(examples[0].features.feature["metadata"].bytes_list.value[0])
    assert header["code_shapes"] == {"top": [4, 4, 3]}
    for i in (0, 39):
        values = np.asarray(examples[1 + i].features.feature["codes/top"].int64_list.value)
        assert values.shape == (48,)
        np.testing.assert_array_equal(values[:3], expected[i, 0, 0])
        np.testing.assert_array_equal(values.reshape(4, 4, 3), expected[i])


def test_two_levels_of_different_depths_in_two_shards(tmp_path, digits):
    keras.utils.set_random_seed(1)
    model = tfvqvae.VQVAE2(top_quantizer=quantizer("grouped", depth=2),
                           bottom_quantizer=quantizer("vq", k=300), **SIZES)
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, digits, batch_size=16, image_size=16, num_shards=2)
    dataset, metadata = load_codes(path, expect=expected_metadata(model, 16))
    assert metadata["num_shards"] == 2
    assert metadata["code_shapes"] == {"top": (2, 2, 2), "bottom": (4, 4)}
    assert metadata["code_depths"] == {"top": 2, "bottom": None}
    expected = model.encode_levels(digits.images_at(np.arange(40), image_size=(16, 16)))
    got = records(dataset)
    for level in ("top", "bottom"):
        np.testing.assert_array_equal(np.stack([r[level] for r in got]), expected[level].numpy())


def test_a_file_of_another_depth_is_refused_by_name(tmp_path, digits):
    scalar, depth = one_level("vq"), one_level("rvq")
    path = tmp_path / "codes.tfrecord"
    write_codes(path, scalar, digits)
    with pytest.raises(ValueError, match=r"code_depths\['top'\] expected 3, received None"):
        load_codes(path, expect=expected_metadata(depth))
    other = tmp_path / "other.tfrecord"
    write_codes(other, depth, digits)
    with pytest.raises(ValueError, match=r"code_depths\['top'\] expected None, received 3"):
        load_codes(other, expect=expected_metadata(scalar))
    two = one_level("rvq", depth=2)
    with pytest.raises(ValueError, match=r"code_shapes\['top'\] expected \(4, 4, 2\), "
                                         r"received \(4, 4, 3\)"):
        load_codes(other, expect={"code_shapes": two.code_shapes((8, 8))})
    assert expected_metadata(depth)["code_depths"] == {"top": 3}
    assert expected_metadata(scalar)["code_depths"] == {"top": None}


def test_bad_depth_headers_and_records_are_refused(tmp_path, digits):
    model = one_level("rvq")
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, digits.take(3))
    shard = shard_path(path, 0, 1)
    examples = raw_records(shard)
    metadata = json.loads(examples[0].features.feature["metadata"].bytes_list.value[0])

    def rewrite(target, header, rows):
        with tf.io.TFRecordWriter(str(target)) as writer:
            feature = {"metadata": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[json.dumps(header).encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
            for row in rows:
                writer.write(row.SerializeToString())

    for shape in ([4, 4, 0], [4, 4, 3, 1]):
        bad = tmp_path / f"bad-{len(shape)}.tfrecord"
        rewrite(bad, {**metadata, "code_shapes": {"top": shape}}, examples[1:])
        with pytest.raises(ValueError, match=r"code_shapes must give \[h, w\] \(or \[h, w, Q\]"):
            read_code_metadata(bad)
    # The header says depth 2; the records hold 3 codes per position.
    wrong = tmp_path / "wrong.tfrecord"
    rewrite(wrong, {**metadata, "code_shapes": {"top": [4, 4, 2]}}, examples[1:])
    with pytest.raises(ValueError, match="a record does not match the header"):
        load_codes(wrong)


def test_estimated_record_bytes_count_every_code_of_the_depth():
    # 24 + len("top") bytes of framing, one byte per code (K - 1 < 128), 32 for the record.
    assert estimated_record_bytes({"top": (4, 4, 3)}, {"top": 16}) == 32 + 27 + 48
    assert estimated_record_bytes({"top": (4, 4)}, {"top": 300}) == 32 + 27 + 16 * 2


# ------------------------------------------------------------- earlier releases
def block_codes(images, factor, k):
    n, h, w = images.shape[:3]
    blocks = images[..., 0].reshape(n, h // factor, factor, w // factor, factor).mean((2, 4))
    return np.minimum(np.floor(blocks.astype(np.float32) * k).astype(np.int64), k - 1)


def test_a_code_file_of_the_release_before_depth_axes_still_loads():
    """tests/data/legacy/README.md: written by the earlier release's write_codes."""
    metadata = read_code_metadata(LEGACY)
    assert metadata["levels"] == ("top", "bottom")
    assert metadata["code_shapes"] == {"top": (2, 2), "bottom": (4, 4)}
    assert metadata["code_depths"] == {"top": None, "bottom": None}
    assert metadata["num_records"] == 6 and metadata["version"] == 1
    expect = {"levels": ("top", "bottom"), "num_embeddings": {"top": 5, "bottom": 300},
              "code_depths": {"top": None, "bottom": None},
              "code_shapes": {"top": (2, 2), "bottom": (4, 4)}, "num_classes": 10}
    dataset, _ = load_codes(LEGACY, expect=expect)
    got = records(dataset)
    data = load_digits("test").take(6)
    images = data.as_float()
    np.testing.assert_array_equal(np.stack([r["top"] for r in got]), block_codes(images, 4, 5))
    np.testing.assert_array_equal(np.stack([r["bottom"] for r in got]),
                                  block_codes(images, 2, 300))
    np.testing.assert_array_equal([r["label"] for r in got], data.labels)
    assert max(int(r["bottom"].max()) for r in got) > 127  # two-byte varints were read
    with pytest.raises(ValueError, match=r"code_depths\['top'\] expected 2, received None"):
        load_codes(LEGACY, expect={"code_depths": {"top": 2}})


def test_a_scalar_model_still_writes_the_earlier_header(tmp_path, digits):
    """No new field in the header of a file without a depth axis: earlier releases read it."""
    model = one_level("vq")
    path = tmp_path / "codes.tfrecord"
    write_codes(path, model, digits.take(2))
    header = json.loads(raw_records(shard_path(path, 0, 1))[0].features.feature[
        "metadata"].bytes_list.value[0])
    legacy = json.loads(raw_records(LEGACY.with_name("codes-00000-of-00001.tfrecord"))[0]
                        .features.feature["metadata"].bytes_list.value[0])
    assert set(header) == set(legacy)
    assert header["code_shapes"] == {"top": [4, 4]} and header["version"] == 1
