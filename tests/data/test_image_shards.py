"""TFRecord shards of encoded images: `write_image_shards` (tfvqvae prepare) and `ImageShards`.

References: the image files themselves (their bytes, decoded with
``tf.io.decode_image`` and converted by the NumPy ``transform.convert_images``),
``tf.train.Example`` parsed independently, ``np.var``, and properties of the
training order (same seed same batches, disjoint pipelines, resume = suffix).
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data.files import _read_image
from tfvqvae.data.image_shards import ImageShards
from tfvqvae.data.image_shards import open_image_shards
from tfvqvae.data.image_shards import write_image_shards
from tfvqvae.data.transform import convert_images

CLASSES = {"ant": ("png", 3, 7), "bee": ("jpg", 3, 6), "cat": ("png", 1, 5)}  # 18 files
SIZE = (12, 10)


def _encode(image, kind):
    return (tf.io.encode_png(image) if kind == "png" else tf.io.encode_jpeg(image)).numpy()


def _make_folder(root, classes=CLASSES, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    for name, (kind, channels, count) in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
            (root / name / f"{name}{i:02d}.{kind}").write_bytes(_encode(image, kind))
    return root


def _files(root):
    """{relative path: (bytes, class index)} of the folder, independently of the library."""
    found = {}
    for label, name in enumerate(sorted(CLASSES)):
        for path in sorted((root / name).iterdir()):
            found[f"{name}/{path.name}"] = (path.read_bytes(), label)
    return found


def _records(files):
    """Every record of ``files`` read one file after the other, parsed with tf.train.Example."""
    records = []
    for file in files:
        for raw in tf.data.TFRecordDataset(str(file)).as_numpy_iterator():
            feature = tf.train.Example.FromString(raw).features.feature
            records.append({key: (value.bytes_list.value[0] if value.bytes_list.value
                                  else value.int64_list.value[0])
                            for key, value in feature.items()})
    return records


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = _make_folder(tmp_path_factory.mktemp("folder") / "images")
    out = tmp_path_factory.mktemp("shards")
    entry = write_image_shards(root, out, num_shards=4, seed=3)
    files = _files(root)
    # The reference images: each file decoded and converted by the NumPy path (to RGB).
    reference = {name: convert_images(_read_image(root / name)[None], None, 3)[0]
                 for name in files}
    return root, out, entry, files, reference


def _identify(batch, reference):
    """The file names of a batch of float images, each matched by exact equality."""
    by_bytes = {image.tobytes(): name for name, image in reference.items()}
    pixels = np.rint(np.asarray(batch) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels.astype(np.float32) / 255, batch)
    return [by_bytes[image.tobytes()] for image in pixels]


def test_prepare_writes_every_file_once_in_shuffled_shards(prepared):
    root, out, entry, files, _ = prepared
    metadata = json.loads((out / "dataset.json").read_text())
    assert metadata["format"] == "tfvqvae-image-shards" and metadata["version"] == 1
    split = metadata["splits"]["train"]
    assert {k: v for k, v in entry.items() if k != "path"} == split
    assert split["num_shards"] == 4 and split["num_records"] == 18
    assert [s["file"] for s in split["shards"]] == [
        f"images-train-{k:05d}-of-00004.tfrecord" for k in range(4)]
    assert sorted(os.listdir(out)) == sorted(["dataset.json"] + [
        s["file"] for s in split["shards"]])  # no temporary left
    assert split["num_classes"] == 3 and split["class_names"] == ["ant", "bee", "cat"]
    assert split["labelled"] and split["channels"] == 3 and split["skipped"] == 0
    assert split["image_sizes"] == [[12, 10, 18]] and split["num_image_sizes"] == 1
    per_shard = [_records([out / s["file"]]) for s in split["shards"]]
    assert [len(r) for r in per_shard] == [s["num_records"] for s in split["shards"]]
    records = [r for shard in per_shard for r in shard]
    names = [r["image/filename"].decode() for r in records]
    assert sorted(names) == sorted(files)  # every file exactly once
    assert names != sorted(names)  # shuffled
    assert [r["image/index"] for r in records] == list(range(18))
    for record in records:
        name = record["image/filename"].decode()
        data, label = files[name]
        assert record["image/encoded"] == data  # the original bytes, not re-encoded
        assert record["image/class/label"] == label
        assert record["image/format"].decode() == name.rsplit(".", 1)[1]
        decoded = tf.io.decode_image(data).numpy()
        assert (record["image/height"], record["image/width"],
                record["image/channels"]) == decoded.shape
        np.testing.assert_array_equal(tf.io.decode_image(record["image/encoded"]).numpy(),
                                      decoded)


def test_prepare_order_is_a_function_of_the_seed(prepared, tmp_path):
    root, out, entry, _, _ = prepared
    again = write_image_shards(root, tmp_path / "same", num_shards=4, seed=3)
    other = write_image_shards(root, tmp_path / "other", num_shards=4, seed=4)
    for shard in entry["shards"]:
        assert (tmp_path / "same" / shard["file"]).read_bytes() == (
            out / shard["file"]).read_bytes()
    names = [[r["image/filename"] for r in _records(sorted(folder.glob("*.tfrecord")))]
             for folder in (out, tmp_path / "other")]
    assert sorted(names[0]) == sorted(names[1]) and names[0] != names[1]
    assert again["shards"] == entry["shards"] and other["num_records"] == 18


def test_a_second_split_is_added_and_a_prepared_split_is_kept(prepared, tmp_path):
    root, *_ = prepared
    write_image_shards(root, tmp_path, num_shards=2, split="train")
    shutil.copytree(root / "cat", tmp_path / "source" / "test")  # FOLDER/test: the test split
    write_image_shards(tmp_path / "source", tmp_path, num_shards=1, split="test")
    splits = json.loads((tmp_path / "dataset.json").read_text())["splits"]
    assert (splits["train"]["num_records"], splits["test"]["num_records"]) == (18, 5)
    assert splits["test"]["num_classes"] is None and not splits["test"]["labelled"]
    with pytest.raises(ValueError, match="already holds split 'train'.*--overwrite"):
        write_image_shards(root, tmp_path, num_shards=3)
    write_image_shards(root, tmp_path, num_shards=3, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("images-train-*")) == [
        f"images-train-{k:05d}-of-00003.tfrecord" for k in range(3)]  # old sharding gone
    assert open_image_shards(tmp_path, split="test").labelled is False
    assert len(open_image_shards(tmp_path)) == 18


def test_corrupt_file_fails_naming_it_or_is_skipped_and_counted(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        (flat / f"ok{i}.png").write_bytes(_encode(rng.integers(0, 256, (6, 6, 1), np.uint8),
                                                  "png"))
    (flat / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken\.png.*--skip-corrupt"):
        write_image_shards(flat, out, num_shards=2)
    assert os.listdir(out) == []  # nothing written, no temporary left
    entry = write_image_shards(flat, out, num_shards=2, skip_corrupt=True)
    assert entry["skipped"] == 1 and entry["skipped_files"] == ["broken.png"]
    assert entry["num_records"] == 5 and sum(s["num_records"] for s in entry["shards"]) == 5
    assert entry["num_classes"] is None and entry["channels"] == 1
    records = _records(sorted(out.glob("*.tfrecord")))
    assert sorted(r["image/filename"].decode() for r in records) == [
        f"ok{i}.png" for i in range(5)]
    assert {r["image/class/label"] for r in records} == {-1}
    source = open_image_shards(out)
    assert not source.labelled and source.image_shape == (6, 6, 1)
    with pytest.raises(ValueError, match="no labels"):
        source.to_tf_dataset(2, with_labels=True)


def test_missing_and_empty_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TFRecord file matches .*nothing-\\*"):
        open_image_shards(str(tmp_path / "nothing-*.tfrecord"))
    with pytest.raises(FileNotFoundError, match="no dataset.json in"):
        open_image_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        write_image_shards(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        write_image_shards(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="num_shards"):
        write_image_shards(_make_folder(tmp_path / "small", {"a": ("png", 3, 2)}),
                           tmp_path / "out", num_shards=3)


def test_mixed_sizes_need_image_size_and_match_the_numpy_conversion(tmp_path):
    root = _make_folder(tmp_path / "a", {"x": ("png", 3, 3)}, size=(9, 14), seed=5)
    _make_folder(tmp_path / "b", {"x": ("png", 3, 2)}, size=(16, 8), seed=6)
    for path in (tmp_path / "b" / "x").iterdir():
        path.rename(root / "x" / f"tall-{path.name}")
    entry = write_image_shards(root, tmp_path / "out", num_shards=2)
    assert entry["num_image_sizes"] == 2 and sorted(map(tuple, entry["image_sizes"])) == [
        (9, 14, 3), (16, 8, 2)]
    with pytest.raises(ValueError, match=r"differ in size.*image_size.*--image-size"):
        open_image_shards(tmp_path / "out")
    with pytest.raises(ValueError, match=r"differ in size.*--image-size"):  # bare pattern
        open_image_shards(str(tmp_path / "out" / "*.tfrecord"))
    source = open_image_shards(tmp_path / "out", image_size=8, channels=1, crop="center")
    assert source.image_shape == (8, 8, 1)
    names = [r["image/filename"].decode() for r in _records(source.files)]
    expected = np.stack([convert_images(_read_image(root / n)[None], (8, 8), 1, "center")[0]
                         for n in names]).astype(np.float32) / 255
    np.testing.assert_array_equal(source.as_float(), expected)  # shard order


def test_to_tf_dataset_take_and_variance_in_shard_order(prepared):
    _, out, _, _, reference = prepared
    source = open_image_shards(out)
    assert isinstance(source, ImageShards) and len(source) == 18
    assert source.image_shape == (12, 10, 3) and source.num_classes == 3
    assert source.class_names == ("ant", "bee", "cat")
    names = [r["image/filename"].decode() for r in _records(source.files)]
    expected = np.stack([reference[n] for n in names]).astype(np.float32) / 255
    images = source.as_float()
    np.testing.assert_array_equal(images, expected)
    batches = list(source.to_tf_dataset(5, with_labels=True))
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 3]
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.dtype == np.int64
    assert labels.tolist() == [sorted(CLASSES).index(n.split("/")[0]) for n in names]
    first = source.take(7)
    assert len(first) == 7 and first.counts[-1] <= source.counts[len(first.counts) - 1]
    np.testing.assert_array_equal(first.as_float(), expected[:7])
    assert source.pixel_variance() == pytest.approx(float(np.var(expected.astype(np.float64))),
                                                    rel=1e-12)
    shuffled = [_identify(b, reference) for b in source.to_tf_dataset(6, shuffle=True, seed=2)]
    assert sorted(sum(shuffled, [])) == sorted(reference)
    # pass 0 of a shuffled stream is epoch 0 of the training order
    epoch = [_identify(b, reference) for b in source.epochs_dataset(
        6, seed=2, first_epoch=0, epochs=1)]
    assert epoch == shuffled


def test_bare_pattern_counts_and_probes_the_records(prepared):
    _, out, _, _, _ = prepared
    folder = open_image_shards(out)
    pattern = open_image_shards(str(out / "images-train-*.tfrecord"))
    assert pattern.counts == folder.counts and pattern.files == folder.files
    assert pattern.num_classes == 3 and pattern.labelled
    assert pattern.image_shape == folder.image_shape
    np.testing.assert_array_equal(pattern.as_float(), folder.as_float())
    with pytest.raises(ValueError, match="split 'test'.*its splits: train"):
        open_image_shards(out, split="test")
    # A pattern is the train split, unless {split} says where the split's name goes:
    # the test set must never silently be the training shards.
    with pytest.raises(ValueError, match=r"names one set of files.*\{split\}"):
        open_image_shards(str(out / "images-train-*.tfrecord"), split="test")
    placeholder = open_image_shards(str(out / "images-{split}-*.tfrecord"))
    assert placeholder.files == folder.files
    with pytest.raises(FileNotFoundError, match="images-test-"):
        open_image_shards(str(out / "images-{split}-*.tfrecord"), split="test")


def test_prepare_refuses_a_split_its_folder_does_not_have(tmp_path):
    root = _make_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match=r"no 'test' sub-folder.*counts as the 'train' split"):
        write_image_shards(root, tmp_path / "out", split="test")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _epoch_names(source, reference, **kwargs):
    return [_identify(b, reference) for b in source.epochs_dataset(4, **kwargs)]


def test_training_order_depends_on_seed_and_epoch_only(prepared):
    _, out, _, files, reference = prepared
    source = open_image_shards(out)
    assert source.steps_per_epoch(4) == 4
    run = _epoch_names(source, reference, seed=1, first_epoch=0, epochs=3)
    assert run == _epoch_names(open_image_shards(out), reference, seed=1, first_epoch=0,
                               epochs=3)
    assert [len(b) for b in run] == [4] * 12
    epochs = [sum(run[4 * e:4 * e + 4], []) for e in range(3)]
    for names in epochs:  # all records but the remainder, each once
        assert len(set(names)) == 16 and set(names) <= set(files)
    assert epochs[0] != epochs[1] != epochs[2]
    assert _epoch_names(source, reference, seed=2, first_epoch=0, epochs=1) != run[:4]
    assert _epoch_names(source, reference, seed=1, first_epoch=2, epochs=3) == run[8:]
    labels = np.concatenate([y.numpy() for _, y in source.epochs_dataset(
        4, seed=1, first_epoch=0, epochs=3, with_labels=True)])
    assert labels.tolist() == [files[n][1] for n in sum(run, [])]


def test_resume_with_random_crops_and_flips_is_the_same_stream(prepared):
    _, out, _, _, _ = prepared
    source = open_image_shards(out, image_size=(8, 6), crop="random")
    assert source.image_shape == (8, 6, 3)

    def stream(**kwargs):
        return [b.numpy() for b in source.epochs_dataset(
            4, seed=9, epochs=2, random_flip=True, **kwargs)]

    full = stream(first_epoch=0)
    assert len(full) == 8
    for skip in (1, 5):
        resumed = stream(first_epoch=skip // 4, skip_batches=skip % 4)
        assert len(resumed) == len(full) - skip
        for a, b in zip(resumed, full[skip:]):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(  # the draws depend on the seed
        full, [b.numpy() for b in source.epochs_dataset(4, seed=9, first_epoch=0, epochs=2)]))


def test_two_pipelines_read_disjoint_shards_for_equal_steps(prepared):
    _, out, entry, _, reference = prepared
    source = open_image_shards(out)
    counts = [s["num_records"] for s in entry["shards"]]
    shares = [counts[0] + counts[2], counts[1] + counts[3]]
    steps = min(shares) // 2
    assert source.steps_per_epoch(4, 2) == steps
    by_shard = {}
    for k, shard in enumerate(entry["shards"]):
        for record in _records([out / shard["file"]]):
            by_shard[record["image/filename"].decode()] = k
    seen = []
    for k in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=k,
                                             num_replicas_in_sync=2)
        batches = [_identify(b, reference) for b in source.epochs_dataset(
            4, seed=0, first_epoch=0, epochs=1, input_context=context)]
        assert [len(b) for b in batches] == [2] * steps  # per-replica batches, equal steps
        names = sum(batches, [])
        assert {by_shard[n] % 2 for n in names} == {k}  # only its own shards: k::2
        if shares[k] == 2 * steps:
            assert sorted(names) == sorted(n for n, s in by_shard.items() if s % 2 == k)
        seen.append(set(names))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 4 * steps
    with pytest.raises(ValueError, match="4 shard.*fewer than the 8 input pipelines"):
        source.epochs_dataset(8, seed=0, first_epoch=0, epochs=1,
                              input_context=tf.distribute.InputContext(8, 0, 8))
