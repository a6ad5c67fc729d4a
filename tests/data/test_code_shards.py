"""Sharded code files: names, order, headers, the checks that name a bad shard, the
single-file layout of earlier releases, and the vectorized record serializer."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import code_files
from tfvqvae.data import default_num_shards
from tfvqvae.data import load_codes
from tfvqvae.data import load_digits
from tfvqvae.data import model_fingerprint
from tfvqvae.data import read_code_metadata
from tfvqvae.data import write_codes
from tfvqvae.data.code_format import _record_example
from tfvqvae.data.code_format import _serialize_records
from tfvqvae.data.code_shards import estimated_record_bytes
from tfvqvae.data.code_shards import shard_path

from tests.data.test_codes import raw_records
from tests.data.test_codes import record_offsets
from tests.data.test_codes import tiny_model

SIZE = 297  # digits test split
SHARDS = 7  # 297 = 42 * 7 + 3: shards of 42 and 43 records, crossing batches of 64


@pytest.fixture(scope="module")
def digits_test():
    return load_digits("test")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return tiny_model()


@pytest.fixture(scope="module")
def reference(model, digits_test):
    """Codes by calling the model directly, no code file involved: int (297, 4, 4)."""
    return model.encode(digits_test.as_float()).numpy()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, model, digits_test):
    """A 7-shard set: (base path, read-only; tests that damage it copy it first)."""
    base = tmp_path_factory.mktemp("sharded") / "codes-test.tfrecord"
    write_codes(base, model, digits_test, batch_size=64, num_shards=SHARDS)
    return base


def copy_set(base, folder):
    folder.mkdir()
    for file in code_files(base):
        shutil.copy(file, folder / file.name)
    return folder / base.name


def rows(dataset):
    got = list(dataset.as_numpy_iterator())
    return np.stack([r["top"] for r in got]), np.array([r["label"] for r in got])


def header(path):
    return json.loads(raw_records(path)[0].features.feature["metadata"].bytes_list.value[0])


def write_legacy(path, model, data):
    """A code file in the single-file layout of the release before shards: one file at
    the split's own name, a header without shard fields, then one record per image."""
    codes = model.encode(data.as_float()).numpy()
    metadata = {
        "format": "tfvqvae-codes", "version": 1, "levels": ["top"],
        "num_embeddings": {"top": 16}, "code_shapes": {"top": [4, 4]}, "num_classes": 10,
        "num_records": len(data), "model_fingerprint": model_fingerprint(model),
        "source": {"dataset": data.name, "image_size": [8, 8], "split": "test"},
    }
    with tf.io.TFRecordWriter(str(path)) as writer:
        payload = json.dumps(metadata, sort_keys=True).encode()
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "metadata": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))
        })).SerializeToString())
        for i in range(len(data)):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "codes/top": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=codes[i].reshape(-1).tolist())),
                "label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(data.labels[i])])),
            })).SerializeToString())
    return codes


# --------------------------------------------------------------------- layout
def test_shards_concatenate_to_the_dataset_order(sharded, reference, digits_test, model,
                                                 tmp_path):
    files = code_files(sharded)
    assert [f.name for f in files] == [f"codes-test-{i:05d}-of-00007.tfrecord"
                                       for i in range(SHARDS)]
    assert sorted(os.listdir(sharded.parent)) == [f.name for f in files]  # no temporaries
    # Every shard is a complete file with its own header, holding a contiguous range.
    start = 0
    for index, file in enumerate(files):
        head = header(file)
        count = head["num_records"]
        assert count in (42, 43)
        assert (head["shard_index"], head["num_shards"], head["total_records"]) == (
            index, SHARDS, SIZE)
        assert head["model_fingerprint"] == model_fingerprint(model)
        examples = raw_records(file)[1:]
        assert len(examples) == count
        got = np.array([e.features.feature["codes/top"].int64_list.value for e in examples])
        np.testing.assert_array_equal(got.reshape(-1, 4, 4), reference[start:start + count])
        start += count
    assert start == SIZE

    # The same records in the same order as one shard; equal to direct encoding.
    single = tmp_path / "codes-test.tfrecord"
    write_codes(single, model, digits_test, batch_size=64, num_shards=1)
    (codes, labels), (codes_1, labels_1) = (rows(load_codes(p)[0]) for p in (sharded, single))
    np.testing.assert_array_equal(codes, reference)
    np.testing.assert_array_equal(labels, digits_test.labels)
    np.testing.assert_array_equal(codes_1, codes)
    np.testing.assert_array_equal(labels_1, labels)
    concatenated = [e for f in files for e in raw_records(f)[1:]]
    assert concatenated == raw_records(code_files(single)[0])[1:]


def test_every_handle_names_the_same_set(sharded):
    files = code_files(sharded)
    metadata = read_code_metadata(sharded)
    assert metadata["num_records"] == SIZE and metadata["num_shards"] == SHARDS
    assert "shard_index" not in metadata and "total_records" not in metadata
    dataset, _ = load_codes(sharded)
    assert int(dataset.cardinality()) == SIZE
    for handle in (files[0], files[4], sharded.parent / "codes-test-*.tfrecord",
                   sharded.parent / "codes-test-?????-of-00007.tfrecord"):
        assert code_files(handle) == files, handle
        assert read_code_metadata(handle) == metadata
    assert load_codes(files[3])[1] == metadata


def test_run_folder_names_the_shards(model, digits_test, tmp_path):
    from tfvqvae import run_folder

    run = tmp_path / "run"
    base = run_folder.code_file(run, "train")
    assert base == run / "codes" / "codes-train.tfrecord"
    write_codes(base, model, digits_test.take(10), num_shards=2)
    assert run_folder.code_shards(run, "train") == [
        run / "codes" / "codes-train-00000-of-00002.tfrecord",
        run / "codes" / "codes-train-00001-of-00002.tfrecord"]
    with pytest.raises(FileNotFoundError, match="codes-test.tfrecord"):
        run_folder.code_shards(run, "test")


def test_written_bytes_are_deterministic(sharded, model, digits_test, tmp_path):
    again = tmp_path / "codes-test.tfrecord"
    write_codes(again, model, digits_test, batch_size=64, num_shards=SHARDS)
    assert [f.read_bytes() for f in code_files(again)] == [
        f.read_bytes() for f in code_files(sharded)]


def test_more_shards_than_records(model, digits_test, tmp_path):
    base = tmp_path / "codes.tfrecord"
    data = digits_test.take(5)
    write_codes(base, model, data, batch_size=2, num_shards=8)
    files = code_files(base)
    assert [header(f)["num_records"] for f in files] == [0, 1, 0, 1, 1, 0, 1, 1]
    codes, labels = rows(load_codes(base)[0])
    np.testing.assert_array_equal(codes, model.encode(data.as_float()).numpy())
    np.testing.assert_array_equal(labels, data.labels)


def test_rewrite_removes_files_of_other_layouts(model, digits_test, tmp_path):
    base = tmp_path / "codes.tfrecord"
    data = digits_test.take(30)
    write_codes(base, model, data, num_shards=4)
    write_codes(base, model, data, num_shards=2)
    assert sorted(os.listdir(tmp_path)) == ["codes-00000-of-00002.tfrecord",
                                            "codes-00001-of-00002.tfrecord"]
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    write_legacy(base, model, data)
    write_codes(base, model, data, num_shards=3)
    assert sorted(os.listdir(tmp_path)) == [f"codes-0000{i}-of-00003.tfrecord"
                                            for i in range(3)]


def test_bad_arguments(model, digits_test, tmp_path):
    data = digits_test.take(3)
    for bad in (0, 100_000, 1.5, True, "2"):
        with pytest.raises(ValueError, match="`num_shards` must be None or an int"):
            write_codes(tmp_path / "codes.tfrecord", model, data, num_shards=bad)
    for name in ("codes-00000-of-00002.tfrecord", "codes-*.tfrecord"):
        with pytest.raises(ValueError, match="must be a base path"):
            write_codes(tmp_path / name, model, data)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ bad sets
def test_missing_shard_is_named(sharded, tmp_path):
    base = copy_set(sharded, tmp_path / "set")
    missing = shard_path(base, 5, SHARDS)
    missing.unlink()
    for handle in (base, shard_path(base, 0, SHARDS)):
        for read in (read_code_metadata, load_codes):
            with pytest.raises(FileNotFoundError, match=f"code shard {missing} is missing"):
                read(handle)
    with pytest.raises(FileNotFoundError, match="1 of the 7 shards"):
        load_codes(base)
    # Nothing at all: the base path and the shard names are named.
    with pytest.raises(FileNotFoundError, match=r"nope.tfrecord \(nor its shards "
                       r"nope-NNNNN-of-NNNNN.tfrecord\)"):
        load_codes(tmp_path / "nope.tfrecord")


def test_truncated_shard_is_named(sharded, tmp_path):
    base = copy_set(sharded, tmp_path / "set")
    cut = shard_path(base, 3, SHARDS)
    data = cut.read_bytes()
    read_code_metadata(base)  # headers intact: reading them is not enough
    cut.write_bytes(data[:record_offsets(cut)[-1]])  # one record short
    count = header(shard_path(sharded, 3, SHARDS))["num_records"]
    with pytest.raises(ValueError, match=f"code file {cut} is truncated.*says {count} records, "
                       f"the file holds {count - 1}"):
        load_codes(base)
    cut.write_bytes(data[:-5])  # cut inside the last record
    with pytest.raises(ValueError, match=f"code file {cut} is truncated or corrupt"):
        load_codes(base)


def test_shard_of_another_model_is_named(sharded, model, digits_test, tmp_path):
    other = tiny_model(seed=5)  # another codebook
    assert model_fingerprint(other) != model_fingerprint(model)
    other_base = tmp_path / "other" / "codes-test.tfrecord"
    write_codes(other_base, other, digits_test, batch_size=64, num_shards=SHARDS)
    base = copy_set(sharded, tmp_path / "set")
    foreign = shard_path(base, 2, SHARDS)
    shutil.copy(shard_path(other_base, 2, SHARDS), foreign)
    for read in (read_code_metadata, load_codes):
        with pytest.raises(ValueError, match=f"code shard {foreign} does not belong with "
                           f".*00000-of-00007.tfrecord: its model_fingerprint is "
                           f"'{model_fingerprint(other)}'"):
            read(base)


def test_renamed_or_mixed_shards_are_refused(sharded, model, digits_test, tmp_path):
    base = copy_set(sharded, tmp_path / "set")
    # Shard 1 copied over shard 4: its header says 1.
    shutil.copy(shard_path(base, 1, SHARDS), shard_path(base, 4, SHARDS))
    with pytest.raises(ValueError, match=f"{shard_path(base, 4, SHARDS)} is shard 1 of 7 by "
                       "its header, 4 of 7 by its name"):
        read_code_metadata(base)
    # A stale shard of a set of another size beside the set.
    base = copy_set(sharded, tmp_path / "mixed")
    write_codes(tmp_path / "two" / base.name, model, digits_test.take(4), num_shards=2)
    shutil.copy(shard_path(tmp_path / "two" / base.name, 1, 2), shard_path(base, 1, 2))
    with pytest.raises(ValueError, match="shards of 2 different sets .*1 of 2 shard.*7 of 7"):
        read_code_metadata(base)
    with pytest.raises(ValueError, match="matches more than one"):
        read_code_metadata(base.parent / "codes-test-*.tfrecord")
    # A single file and shards of the same base side by side.
    base = copy_set(sharded, tmp_path / "both")
    write_legacy(base, model, digits_test.take(3))
    with pytest.raises(ValueError, match="and shards of it .*lie side by side"):
        load_codes(base)
    # A shard renamed to a single file's name.
    lone = tmp_path / "lone.tfrecord"
    shutil.copy(shard_path(sharded, 0, SHARDS), lone)
    with pytest.raises(ValueError, match=f"{lone} is shard 0 of 7 by its header, but not named"):
        load_codes(lone)


# ------------------------------------------------------------- earlier layout
def test_single_file_of_the_earlier_release_still_reads(model, digits_test, tmp_path):
    base = tmp_path / "codes-test.tfrecord"
    codes = write_legacy(base, model, digits_test)
    assert code_files(base) == [base]
    dataset, metadata = load_codes(base, expect={"model_fingerprint": model_fingerprint(model)})
    got, labels = rows(dataset)
    np.testing.assert_array_equal(got, codes)
    np.testing.assert_array_equal(labels, digits_test.labels)
    assert metadata["num_records"] == SIZE and metadata["num_shards"] == 1
    assert read_code_metadata(base) == metadata
    # Truncation is still caught.
    base.write_bytes(base.read_bytes()[:record_offsets(base)[-1]])
    with pytest.raises(ValueError, match=f"{base} is truncated.*holds {SIZE - 1}"):
        load_codes(base)


# -------------------------------------------------------------------- format
def test_vectorized_records_parse_as_the_protobuf_messages():
    """Independent reference: protobuf's own tf.train.Example of the same values."""
    rng = np.random.default_rng(0)
    for k in (1, 2, 128, 129, 512, 16384, 16385, 2**40):
        top = rng.integers(0, k, (6, 6))
        top[0] = k - 1  # the widest varint
        top[1] = 0
        bottom = rng.integers(0, k, (6, 20))
        labels = rng.integers(-1, 10, 6)
        labels[0] = -1  # ten bytes as a varint
        records = _serialize_records({"top": top, "bottom": bottom}, labels)
        assert len(records) == 6
        for i, record in enumerate(records):
            expected = _record_example({"top": top[i].tolist(), "bottom": bottom[i].tolist()},
                                       int(labels[i]))
            assert tf.train.Example.FromString(record) == expected, (k, i)
            assert len(record) == len(expected.SerializeToString())
    assert _serialize_records({"top": np.zeros((0, 4), np.int64)}, np.zeros(0)) == []


def test_default_shard_count():
    # MNIST / CIFAR-10 size: one file.
    assert default_num_shards(60_000, {"top": (7, 7)}, {"top": 512}) == 1
    assert default_num_shards(50_000, {"top": (8, 8), "bottom": (16, 16)},
                              {"top": 512, "bottom": 512}) == 1
    # ImageNet at 256x256 with VQ-VAE-2 codes: ~100 shards of ~13 000 records, ~128 MB.
    shapes, ks = {"top": (32, 32), "bottom": (64, 64)}, {"top": 512, "bottom": 512}
    shards = default_num_shards(1_281_167, shapes, ks)
    assert 80 <= shards <= 120
    # The estimate is close to the bytes written: 3/4 of codes in [0, 512) take 2 bytes.
    codes = np.random.default_rng(0).integers(0, 512, (20, 32 * 32 + 64 * 64))
    records = _serialize_records({"top": codes[:, :1024], "bottom": codes[:, 1024:]},
                                 np.zeros(20))
    actual = np.mean([len(r) for r in records]) + 12  # + TFRecord framing
    assert 0.85 < estimated_record_bytes(shapes, ks) / actual < 1.2
    assert default_num_shards(0, shapes, ks) == 1
