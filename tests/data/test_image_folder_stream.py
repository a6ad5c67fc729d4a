"""The streamed image folder: equal to the in-memory dataset, sharded per worker, strict
about bad files.

References: the IDX / CIFAR-10 arrays read into memory (`load_dataset` of the
files in ../shared/data), written out as PNG files; NumPy for the variance;
the files' own pixel values for which worker read what.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import ImageDataset, load_dataset
from tfvqvae.data.image_folder import ImageFolder, open_image_folder, unreadable_file_error

from tests.training.test_fault_tolerance import _env, _free_ports, _wait_for_cluster

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _write_folder(root, images, labels=None, suffix=".png"):
    """Image i as root/(class)/iiiii.png, so sorted order is index order."""
    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        folder = root if labels is None else root / f"class{labels[i]}"
        folder.mkdir(exist_ok=True)
        data = tf.io.encode_png(image) if suffix == ".png" else tf.io.encode_jpeg(image)
        (folder / f"{i:05d}{suffix}").write_bytes(data.numpy())
    return root


def _in_memory(name, count):
    data_dir = SHARED_DATA / ("cifar10" if name == "cifar10" else name)
    if not data_dir.is_dir():
        data_dir = SHARED_DATA
    dataset = load_dataset(name, "test", data_dir=str(data_dir))
    return dataset.take(count)


def _batches(dataset):
    return [b.numpy() if not isinstance(b, tuple) else tuple(t.numpy() for t in b)
            for b in dataset]


@pytest.fixture(scope="module", params=["mnist", "cifar10"])
def twins(request, tmp_path_factory):
    """(in-memory dataset, the same images as a streamed flat folder of PNG files)."""
    memory = _in_memory(request.param, 200)
    root = _write_folder(tmp_path_factory.mktemp(request.param) / "images", memory.images)
    return memory, load_dataset(f"folder:{root}")


def test_streamed_folder_equals_the_in_memory_dataset_element_by_element(twins):
    memory, folder = twins
    assert isinstance(folder, ImageFolder) and len(folder) == len(memory)
    assert folder.image_shape == memory.image_shape
    for options in (dict(), dict(random_flip=True), dict(skip_batches=3, random_flip=True)):
        got = _batches(folder.epochs_dataset(32, seed=5, first_epoch=1, epochs=3, **options))
        want = _batches(memory.epochs_dataset(32, seed=5, first_epoch=1, epochs=3, **options))
        assert len(got) == len(want) == 2 * (200 // 32) - options.get("skip_batches", 0)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate(_batches(folder.to_tf_dataset(64))),
                                  memory.as_float())


def test_resumed_stream_is_the_tail_of_the_uninterrupted_one(twins):
    _, folder = twins
    whole = _batches(folder.epochs_dataset(16, seed=2, first_epoch=0, epochs=2))
    per_epoch = 200 // 16
    for skip in (1, 5, per_epoch - 1):
        tail = _batches(folder.epochs_dataset(16, seed=2, first_epoch=0, epochs=2,
                                              skip_batches=skip))
        assert len(tail) == len(whole) - skip
        for a, b in zip(tail, whole[skip:]):
            np.testing.assert_array_equal(a, b)
    second = _batches(folder.epochs_dataset(16, seed=2, first_epoch=1, epochs=2))
    for a, b in zip(second, whole[per_epoch:]):
        np.testing.assert_array_equal(a, b)


def test_pixel_variance_is_numpys_over_a_bounded_sample(twins):
    memory, folder = twins
    np.testing.assert_allclose(folder.pixel_variance(), np.var(memory.as_float(), dtype=np.float64),
                               rtol=1e-9)
    sample = folder.pixel_variance(max_examples=50)
    order = tf.random.experimental.stateless_shuffle(tf.range(200, dtype=tf.int64),
                                                     seed=[0, 0]).numpy()[:50]
    np.testing.assert_allclose(
        sample, np.var(memory.as_float()[order].astype(np.float64)), rtol=1e-9)


def test_input_pipelines_read_disjoint_files_that_make_up_the_epoch(tmp_path):
    values = np.arange(96, dtype=np.uint8)
    root = _write_folder(tmp_path / "ids", np.broadcast_to(values[:, None, None, None],
                                                           (96, 4, 4, 1)).copy())
    folder = load_dataset(f"folder:{root}")
    whole = _batches(folder.epochs_dataset(24, seed=3, first_epoch=0, epochs=1))
    shares = [
        _batches(folder.epochs_dataset(
            24, seed=3, first_epoch=0, epochs=1,
            input_context=tf.distribute.InputContext(2, k, 4)))
        for k in range(2)
    ]
    ids = [{int(v) for batch in share for v in np.rint(batch[:, 0, 0, 0] * 255)} for share in shares]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == set(range(96))
    # Two replicas per pipeline: per-replica batches of 6; step s of pipeline k is
    # slice k of global batch s.
    for step, batch in enumerate(whole):
        halves = [np.concatenate(share[2 * step:2 * step + 2]) for share in shares]
        np.testing.assert_array_equal(np.concatenate(halves), batch)


@pytest.mark.slow  # a two-process cluster on 127.0.0.1 (about 15 s)
def test_two_workers_on_localhost_see_disjoint_files_whose_union_is_the_epoch(tmp_path):
    values = np.arange(64, dtype=np.uint8) * 3  # distinct pixel values: image i holds 3 i
    root = _write_folder(tmp_path / "ids", np.broadcast_to(values[:, None, None, None],
                                                           (64, 4, 4, 1)).copy())
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    outs = [tmp_path / f"worker{k}.json" for k in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("folder_worker.py")), str(root),
             str(out)],
            env=_env(TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                           "task": {"type": "worker", "index": k}})),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for k, out in enumerate(outs)
    ]
    errors = _wait_for_cluster(processes, stop_after_first_exit=False)
    assert [p.returncode for p in processes] == [0, 0], [e[-2000:] for e in errors]
    seen = [json.loads(out.read_text()) for out in outs]
    assert all(s["replicas"] == 2 for s in seen)
    files = [{v // 3 for step in s["steps"] for v in step} for s in seen]
    assert all(len(step) == 8 for s in seen for step in s["steps"])  # 16 / 2 replicas
    assert len(seen[0]["steps"]) == len(seen[1]["steps"]) == 4
    assert not files[0] & files[1]
    assert files[0] | files[1] == set(range(64))


def test_unreadable_file_is_named_or_skipped_and_counted(tmp_path, capfd, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (40, 6, 6, 1), dtype=np.uint8)
    root = _write_folder(tmp_path / "bad", images)
    (root / "00013.png").write_bytes(b"not an image at all")
    # Among the files decoded at opening it is named at once ...
    with pytest.raises(ValueError, match=r"Cannot read image file .*00013\.png: Unknown image"):
        load_dataset(f"folder:{root}")
    # ... and elsewhere when the pipeline reaches it.
    monkeypatch.setattr("tfvqvae.data.image_folder.PROBE_FILES", 2)
    folder = load_dataset(f"folder:{root}")
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _batches(folder.epochs_dataset(8, seed=0, first_epoch=0, epochs=1))
    error = unreadable_file_error(caught.value)
    assert isinstance(error, ValueError) and str(root / "00013.png") in str(error)
    assert "--skip-corrupt" in str(error)
    with pytest.raises(ValueError, match="00013.png"):
        folder.pixel_variance()

    skipping = load_dataset(f"folder:{root}", skip_corrupt=True)
    batches = _batches(skipping.epochs_dataset(8, seed=0, first_epoch=0, epochs=1))
    assert len(batches) == 5 and all(b.shape == (8, 6, 6, 1) for b in batches)
    seen = {bytes(np.rint(image * 255).astype(np.uint8)) for batch in batches for image in batch}
    readable = {bytes(image) for i, image in enumerate(images) if i != 13}
    assert seen <= readable and len(seen) >= 38  # every batch filled up from its own images
    err = capfd.readouterr().err
    assert "skipped 1 unreadable image file(s)" in err and "00013.png" in err
    # Outside training (evaluation, code extraction) the file is left out, not replaced.
    evaluated = np.concatenate(_batches(skipping.to_tf_dataset(8)))
    assert len(evaluated) == 39
    np.testing.assert_array_equal(np.rint(evaluated * 255).astype(np.uint8),
                                  np.delete(images, 13, axis=0))


def test_a_size_the_probe_missed_names_the_file_and_image_size(tmp_path, monkeypatch):
    monkeypatch.setattr("tfvqvae.data.image_folder.PROBE_FILES", 2)
    images = np.zeros((9, 8, 8, 1), np.uint8)
    root = _write_folder(tmp_path / "sizes", images)
    (root / "00004.png").write_bytes(tf.io.encode_png(np.zeros((5, 7, 1), np.uint8)).numpy())
    folder = load_dataset(f"folder:{root}")  # probes files 0 and 8 only
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _batches(folder.to_tf_dataset(4))
    message = str(unreadable_file_error(caught.value))
    assert "00004.png is 5x7, not the 8x8 of the other images in its folder" in message
    assert "--image-size" in message and "\\'" not in message
    # Skipping unreadable files does not skip a readable file of another size.
    skipping = load_dataset(f"folder:{root}", skip_corrupt=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="00004.png is 5x7"):
        _batches(skipping.epochs_dataset(3, seed=0, first_epoch=0, epochs=1))
    resized = load_dataset(f"folder:{root}", image_size=8)
    assert np.concatenate(_batches(resized.to_tf_dataset(4))).shape == (9, 8, 8, 1)


def test_probed_sizes_that_differ_name_image_size(tmp_path):
    _write_folder(tmp_path / "m", [np.zeros((4, 4, 1), np.uint8), np.zeros((6, 4, 1), np.uint8)])
    with pytest.raises(ValueError, match=r"differ in size .*4x4.*6x4.*--image-size"):
        load_dataset(f"folder:{tmp_path / 'm'}")


def test_empty_folder_and_missing_folder_fail_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match="not found"):
        open_image_folder(tmp_path / "nope")


def test_class_folders_give_labels_and_jpeg_decodes(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    root = _write_folder(tmp_path / "classes", images, labels, suffix=".jpg")
    folder = load_dataset(f"folder:{root}")
    assert folder.num_classes == 3 and folder.labelled
    x, y = np.concatenate([b[0] for b in _batches(folder.to_tf_dataset(5, with_labels=True))]), \
        np.concatenate([b[1] for b in _batches(folder.to_tf_dataset(5, with_labels=True))])
    # Sorted order: class folder first, then name.
    order = np.argsort(labels, kind="stable")
    np.testing.assert_array_equal(y, labels[order])
    decoded = np.stack([tf.io.decode_jpeg(tf.io.encode_jpeg(images[i])).numpy() for i in order])
    np.testing.assert_array_equal(np.rint(x * 255).astype(np.uint8), decoded)


def test_random_crop_is_seeded_by_seed_epoch_and_image(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (16, 12, 20, 3), dtype=np.uint8)  # wider than square
    root = _write_folder(tmp_path / "wide", images)
    crops = load_dataset(f"folder:{root}", image_size=8, crop="random")
    centre = load_dataset(f"folder:{root}", image_size=8, crop="center")
    a = _batches(crops.epochs_dataset(4, seed=1, first_epoch=0, epochs=2))
    b = _batches(crops.epochs_dataset(4, seed=1, first_epoch=0, epochs=2))
    c = _batches(centre.epochs_dataset(4, seed=1, first_epoch=0, epochs=2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    # Evaluation cuts the centre.
    np.testing.assert_array_equal(np.concatenate(_batches(crops.to_tf_dataset(16))),
                                  np.concatenate(_batches(centre.to_tf_dataset(16))))


def test_random_crop_of_an_in_memory_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="crop='random'.*streamed"):
        load_dataset("digits", image_size=8, crop="random")
    root = _write_folder(tmp_path / "f", np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match=r"`crop='random'` needs an image_size"):
        load_dataset(f"folder:{root}", crop="random")


def test_images_at_reads_those_files(twins):
    memory, folder = twins
    picks = np.array([0, 7, 8, 150, 199])
    np.testing.assert_array_equal(folder.images_at(picks), memory.as_float()[picks])
    assert isinstance(memory, ImageDataset)
