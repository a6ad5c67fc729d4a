"""`tfvqvae extract-codes`: code files from a real (tiny) run folder, and the CLI."""

import json
import shutil

import tensorflow as tf

import keras
import numpy as np
import pytest

from tfvqvae.data import code_files
from tfvqvae.data import load_codes
from tfvqvae.data import load_digits
from tfvqvae.data import model_fingerprint
from tfvqvae.training import TrainConfig
from tfvqvae.training import cli
from tfvqvae.training import train
from tfvqvae.training.extract_codes import extract_codes

from tests.training.test_train import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("extract") / "run"
    train(TrainConfig(**{**TINY, "epochs": 1}, out=str(out)), verbose=0)
    return out


def file_bytes(paths):
    """{name: bytes} of every file of every split's code set."""
    return {f.name: f.read_bytes() for path in paths.values() for f in code_files(path)}


def to_single_file(path):
    """Turns a one-shard set into the single file the release before shards wrote:
    the same records at the base path, a header without shard fields."""
    (shard,) = code_files(path)
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    header = tf.train.Example.FromString(records[0])
    metadata = json.loads(header.features.feature["metadata"].bytes_list.value[0])
    for key in ("shard_index", "num_shards", "total_records"):
        del metadata[key]
    header.features.feature["metadata"].bytes_list.value[0] = json.dumps(metadata).encode()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in [header.SerializeToString(), *records[1:]]:
            writer.write(record)
    shard.unlink()


def codes_of(path):
    dataset, metadata = load_codes(path)
    rows = list(dataset.as_numpy_iterator())
    return np.stack([r["top"] for r in rows]), np.array([r["label"] for r in rows]), metadata


def test_extract_codes_writes_every_split(run_dir):
    paths = extract_codes(run_dir)
    assert list(paths) == ["train", "test"]
    assert paths == {s: run_dir / "codes" / f"codes-{s}.tfrecord" for s in ("train", "test")}

    model = keras.saving.load_model(run_dir / "model.keras")
    for split, size in (("train", 1500), ("test", 297)):
        data = load_digits(split)
        assert len(data) == size  # the whole split; max_train_examples limits training only
        codes, labels, metadata = codes_of(paths[split])
        np.testing.assert_array_equal(codes, model.encode(data.as_float()).numpy())
        np.testing.assert_array_equal(labels, data.labels)
        assert metadata["num_records"] == size
        assert metadata["model_fingerprint"] == model_fingerprint(model)
        assert metadata["code_shapes"] == {"top": (4, 4)}
        assert metadata["num_embeddings"] == {"top": TINY["num_embeddings"]}
        assert metadata["source"]["dataset"] == "digits"
        assert metadata["source"]["split"] == split

    # The same call again keeps this model's complete files (a killed
    # extraction finishes this way) and rewrites nothing.
    before = file_bytes(paths)
    again = extract_codes(run_dir)
    assert again == paths and again.kept == ("train", "test")
    assert file_bytes(paths) == before
    assert extract_codes(run_dir, overwrite=True) == paths
    # Same model, same images: the same bytes.
    assert file_bytes(paths) == before
    # Small splits: one shard each.
    assert sorted(p.name for p in paths["train"].parent.iterdir()) == [
        "codes-test-00000-of-00001.tfrecord", "codes-train-00000-of-00001.tfrecord"
    ]


def test_files_of_another_model_or_damaged_are_refused(run_dir, tmp_path):
    out = tmp_path / "codes"
    paths = extract_codes(run_dir, out=out)
    before = file_bytes(paths)
    # Another model: the same architecture with one codebook vector moved.
    model = keras.saving.load_model(run_dir / "model.keras")
    codebook = model.quantizer.codebook
    codebook.assign(codebook.numpy() + np.eye(*codebook.shape, dtype="float32"))
    other = tmp_path / "other.keras"
    model.save(other)
    with pytest.raises(FileExistsError, match="codes-train.tfrecord \\(written by another "
                       "model\\).*codes-test.tfrecord.*--overwrite"):
        extract_codes(run_dir, out=out, model_path=other)
    assert file_bytes(paths) == before
    # A damaged file is named and refused, the good one left alone.
    test_shard = out / "codes-test-00000-of-00001.tfrecord"
    test_shard.write_bytes(before[test_shard.name][:100])
    with pytest.raises(FileExistsError, match="codes-test.tfrecord \\(unreadable"):
        extract_codes(run_dir, out=out)
    train_shard = out / "codes-train-00000-of-00001.tfrecord"
    assert train_shard.read_bytes() == before[train_shard.name]
    # An incomplete set (one shard of two) is refused too, naming the missing shard.
    test_shard.rename(out / "codes-test-00001-of-00002.tfrecord")
    with pytest.raises(FileExistsError, match="codes-test.tfrecord \\(unreadable: code shard "
                       ".*codes-test-00000-of-00002.tfrecord is missing"):
        extract_codes(run_dir, out=out)
    assert extract_codes(run_dir, out=out, overwrite=True).kept == ()
    assert file_bytes(paths) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_num_shards_overwrite_and_single_files_of_earlier_releases(run_dir, tmp_path):
    out = tmp_path / "codes"
    single = extract_codes(run_dir, out=tmp_path / "single", splits="train")
    paths = extract_codes(run_dir, out=out, splits="train", num_shards=3)
    assert [f.name for f in code_files(paths["train"])] == [
        f"codes-train-0000{i}-of-00003.tfrecord" for i in range(3)]
    codes, labels, metadata = codes_of(paths["train"])
    want_codes, want_labels, want = codes_of(single["train"])
    np.testing.assert_array_equal(codes, want_codes)  # the same records, in the same order
    np.testing.assert_array_equal(labels, want_labels)
    assert metadata == {**want, "num_shards": 3}

    # Kept as they are unless told another count; --overwrite removes the stale shards.
    assert extract_codes(run_dir, out=out, splits="train").kept == ("train",)
    assert extract_codes(run_dir, out=out, splits="train", num_shards=3).kept == ("train",)
    with pytest.raises(FileExistsError, match=r"codes-train.tfrecord \(3 shard\(s\), not 2\)"):
        extract_codes(run_dir, out=out, splits="train", num_shards=2)
    assert extract_codes(run_dir, out=out, splits="train", num_shards=2, overwrite=True).kept == ()
    assert sorted(p.name for p in out.iterdir()) == [
        "codes-train-00000-of-00002.tfrecord", "codes-train-00001-of-00002.tfrecord"]
    np.testing.assert_array_equal(codes_of(paths["train"])[0], want_codes)

    # A single file of the release before shards, written by this model: kept and read.
    to_single_file(single["train"])
    assert [p.name for p in single["train"].parent.iterdir()] == ["codes-train.tfrecord"]
    assert extract_codes(run_dir, out=tmp_path / "single", splits="train").kept == ("train",)
    codes, _, metadata = codes_of(single["train"])
    np.testing.assert_array_equal(codes, want_codes)
    assert metadata == want
    # Replaced by shards with --overwrite.
    extract_codes(run_dir, out=tmp_path / "single", splits="train", overwrite=True)
    assert [p.name for p in single["train"].parent.iterdir()] == [
        "codes-train-00000-of-00001.tfrecord"]


def test_options_out_splits_model_and_image_size(run_dir, tmp_path):
    # A copy of the run whose config asks for 16x16 images (as --image-size would).
    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["image_size"] = 16
    (run / "config.json").write_text(json.dumps(config))
    model_path = tmp_path / "elsewhere.keras"
    shutil.copy(run_dir / "model.keras", model_path)

    paths = extract_codes(run, splits="test", out=tmp_path / "out", model_path=model_path)
    assert paths == {"test": tmp_path / "out" / "codes-test.tfrecord"}
    _, _, metadata = codes_of(paths["test"])
    assert metadata["code_shapes"] == {"top": (8, 8)}
    assert metadata["source"]["image_size"] == [16, 16]
    assert metadata["source"]["model"] == str(model_path)


def test_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "codes"
    assert cli.main(["extract-codes", "--run", str(run_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    # The file named is the one written (the shard), not the split's base name.
    assert lines[0].startswith(
        f"train: wrote 1500 records in 1 shard, {out / 'codes-train-00000-of-00001.tfrecord'}")
    assert str(out / "codes-test-00000-of-00001.tfrecord") in lines[1]
    assert "297 records" in lines[1]
    assert "top 4x4 (K=16)" in lines[1]

    assert cli.main(["extract-codes", "--run", str(run_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "test"]
    for line, split in zip(lines, ("train", "test")):
        assert line.startswith(f"{split}: kept ")
        assert str(out / f"codes-{split}-00000-of-00001.tfrecord") in line
    assert cli.main(["extract-codes", "--run", str(run_dir), "--out", str(out),
                     "--splits", "test", "--overwrite", "--num-shards", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and (
        f"297 records in 4 shards, {out / 'codes-test-00000-of-00004.tfrecord'} .. "
        "codes-test-00003-of-00004.tfrecord") in lines[0]
    assert len(code_files(out / "codes-test.tfrecord")) == 4


def test_cli_missing_inputs(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert cli.main(["extract-codes", "--run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "extract-codes" in err and str(missing) in err

    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "digits"}))
    assert cli.main(["extract-codes", "--run", str(run)]) == 2
    assert str(run / "model.keras") in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["extract-codes", "--run", str(empty)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli.main(["extract-codes", "--run", str(run), "--splits", " , "]) == 2
    assert "No split" in capsys.readouterr().err
    assert not (run / "codes").exists() and not (empty / "codes").exists()


@pytest.mark.skipif("model" not in TrainConfig.__dataclass_fields__,
                    reason="tfvqvae train --model vqvae2 not available yet")
@pytest.mark.slow  # trains a VQ-VAE-2 run (about 13 s)
def test_extract_codes_from_vqvae2_run(tmp_path):
    run = tmp_path / "run2"
    train(TrainConfig(**{**TINY, "epochs": 1, "model": "vqvae2", "num_downsamples": 2,
                         "image_size": 16}, out=str(run)), verbose=0)
    paths = extract_codes(run, splits="test")
    dataset, metadata = load_codes(paths["test"])
    assert metadata["levels"] == ("top", "bottom")
    assert metadata["code_shapes"] == {"top": (2, 2), "bottom": (4, 4)}
    assert metadata["num_records"] == 297

    model = keras.saving.load_model(run / "model.keras")
    assert metadata["model_fingerprint"] == model_fingerprint(model)
    images = load_digits("test").to_tf_dataset(297, image_size=16)
    expected = model.encode_levels(next(iter(images)))
    rows = list(dataset.as_numpy_iterator())
    for level in ("top", "bottom"):
        np.testing.assert_array_equal(np.stack([r[level] for r in rows]),
                                      expected[level].numpy())
