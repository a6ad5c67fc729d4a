"""load_dataset dispatch by name."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import TFDSImages, DEFAULT_DATASET, load_dataset

# From shared/data/README.md.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_default_is_offline_digits():
    assert DEFAULT_DATASET == "digits"
    ds = load_dataset(DEFAULT_DATASET)
    assert ds.name == "digits" and len(ds) == 1500
    assert len(load_dataset("Digits", "test")) == 297


@pytest.mark.parametrize("sub", ["", "mnist"])
def test_mnist_from_local_idx(shared_data, sub):
    # data_dir may be the IDX folder itself or its parent.
    data_dir = shared_data / "mnist" if sub else shared_data
    ds = load_dataset("mnist", "test", data_dir=data_dir)
    assert ds.name == "mnist" and ds.images.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_fashion_mnist_from_local_idx(shared_data):
    ds = load_dataset("fashion_mnist", "test", data_dir=shared_data)
    assert ds.name == "fashion_mnist"
    assert np.bincount(ds.labels, minlength=10).tolist() == [1000] * 10


def test_cifar10_from_local_bins(shared_data):
    ds = load_dataset("cifar10", "test", data_dir=shared_data)
    assert ds.images.shape == (1000, 32, 32, 3)


def test_local_split_validated(shared_data):
    with pytest.raises(ValueError, match="'validation'"):
        load_dataset("mnist", "validation", data_dir=shared_data)
    with pytest.raises(ValueError, match="'train\\[:10%\\]'"):
        load_dataset("digits", "train[:10%]")


def test_falls_back_to_tfds_without_local_files(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        mnist = load_dataset("mnist", "train")
        fashion = load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
        cifar = load_dataset("cifar10", "train[:50%]")
        # Streamed, not converted to NumPy: the shapes come from the TFDS features.
        assert all(isinstance(d, TFDSImages) for d in (mnist, fashion, cifar))
        assert mnist.as_float().shape == (6, 28, 28, 1)
        assert fashion.as_float().shape == (6, 28, 28, 1)
        assert cifar.image_shape == (32, 32, 3)


def test_folder_prefix_with_split_subfolders(tmp_path):
    for split, value in (("train", 10), ("test", 20)):
        for cls in ("a", "b"):
            path = tmp_path / "imgs" / split / cls / "0.png"
            path.parent.mkdir(parents=True)
            path.write_bytes(tf.io.encode_png(np.full((3, 3, 1), value, np.uint8)).numpy())
    train = load_dataset(f"folder:{tmp_path / 'imgs'}")
    test = load_dataset(f"folder:{tmp_path / 'imgs'}", "test")
    assert train.labels.tolist() == [0, 1] and np.all(train.as_float() == np.float32(10 / 255))
    assert np.all(test.as_float() == np.float32(20 / 255))


def test_folder_prefix_plain_folder_is_train_only(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(
        tf.io.encode_png(np.zeros((2, 2, 3), np.uint8)).numpy()
    )
    assert len(load_dataset(f"folder:{tmp_path / 'flat'}")) == 1
    with pytest.raises(ValueError, match="no 'test' sub-folder"):
        load_dataset(f"folder:{tmp_path / 'flat'}", "test")


def test_npz_prefix(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 2]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.images.shape == (3, 4, 4, 1) and ds.labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", [None, "", "   "])
def test_empty_name(name):
    with pytest.raises(ValueError, match="non-empty string"):
        load_dataset(name)


def test_prefix_without_path():
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder:")


def test_unknown_name_goes_to_tfds_error():
    with pytest.raises(ValueError, match="'no_such_dataset_xyz'"):
        load_dataset("no_such_dataset_xyz")


# --- issue 10: load-time image_size / channels / crop on every source --------


def test_options_on_digits_float():
    ds = load_dataset("digits", "test", image_size=16, channels=3)
    assert ds.images.shape == (297, 16, 16, 3) and ds.images.dtype == np.float32
    assert ds.labels.shape == (297,) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.images[..., 0], ds.images[..., 2])
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0


def test_options_on_npz_hand_computed(tmp_path):
    # Rows [0, 0, 255, 255] shrink to [36, 219]: weights [3, 3, 1] / 7 and
    # [1, 3, 3] / 7 (antialiased bilinear at the border; see test_transform).
    images = np.tile(np.array([0, 0, 255, 255], np.uint8), (2, 4, 1))
    np.savez(tmp_path / "r.npz", images=images, labels=np.array([0, 1]))
    ds = load_dataset(f"npz:{tmp_path / 'r.npz'}", image_size=2, channels=3)
    assert ds.images.shape == (2, 2, 2, 3) and ds.labels.tolist() == [0, 1]
    assert np.all(ds.images[:, :, 0] == 36) and np.all(ds.images[:, :, 1] == 219)


def test_options_on_idx_match_pil(shared_data):
    pil = pytest.importorskip("PIL.Image")
    plain = load_dataset("mnist", "test", data_dir=shared_data)
    ds = load_dataset("mnist", "test", data_dir=shared_data, image_size=14, channels=3)
    assert ds.images.shape == (10000, 14, 14, 3) and ds.name == "mnist"
    np.testing.assert_array_equal(ds.labels, plain.labels)
    reference = pil.fromarray(plain.images[0, ..., 0], "L").resize(
        (14, 14), pil.Resampling.BILINEAR
    )
    difference = np.abs(ds.images[0, ..., 1].astype(int) - np.asarray(reference, int))
    assert difference.max() <= 1


def test_options_on_cifar_grey_matches_pil(shared_data):
    pil = pytest.importorskip("PIL.Image")
    plain = load_dataset("cifar10", "test", data_dir=shared_data)
    ds = load_dataset("cifar10", "test", data_dir=shared_data, channels=1)
    assert ds.images.shape == (1000, 32, 32, 1)
    for i in (0, 999):
        reference = np.asarray(pil.fromarray(plain.images[i], "RGB").convert("L"))
        np.testing.assert_array_equal(ds.images[i, ..., 0], reference)


def test_options_on_tfds_fallback():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        ds = load_dataset("mnist", "train", image_size=(8, 12), channels=3, crop="center")
        images = ds.as_float()
    assert ds.image_shape == (8, 12, 3) and images.shape == (5, 8, 12, 3)
    # uint8 values converted on the fly: x / 255 exactly, and grey replicated into RGB.
    np.testing.assert_array_equal(np.rint(images * 255) / 255, images)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 0}, "Received: image_size=0"),
        ({"channels": 2}, "Received: channels=2"),
        ({"crop": "centre", "image_size": 4}, "Received: crop='centre'"),
        ({"crop": "center"}, "needs an image_size"),
    ],
)
def test_bad_options_fail_before_loading(tmp_path, kwargs, message):
    # The folder does not exist: the option is checked first.
    with pytest.raises(ValueError, match=message):
        load_dataset(f"folder:{tmp_path / 'nowhere'}", **kwargs)


# --- issue 10: offline, no local files --------------------------------------

_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def offline(monkeypatch):
    """The download host is unreachable (the probe is replaced)."""
    from tfvqvae.data import tfds_loader

    monkeypatch.setattr(tfds_loader, "download_unreachable_reason",
                        lambda: "probe.example:443 is unreachable (test)")


@pytest.mark.parametrize("data_dir", [None, "empty"])
def test_offline_mnist_says_which_files_to_put_where(offline, tmp_path, data_dir):
    pytest.importorskip("tensorflow_datasets")
    data_dir = None if data_dir is None else str(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", data_dir=data_dir)
    message = str(info.value)
    assert message.startswith("mnist: no IDX files found ")
    assert all(name in message for name in _MNIST_FILES) and "DIR/mnist" in message
    assert "--data-dir" in message and "probe.example:443 is unreachable" in message
    assert (f"in data_dir={tmp_path}" if data_dir else "no data_dir given") in message
    assert "\n" not in message


def test_offline_cifar10_names_bin_batches(offline, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match=r"cifar10: .*data_batch_1\.bin.*test_batch\.bin"
                       r".*DIR/cifar-10-batches-bin.*--data-dir"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))


def test_download_false_never_probes(monkeypatch, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from tfvqvae.data import tfds_loader

    def probe():
        raise AssertionError("probed although download=False")

    monkeypatch.setattr(tfds_loader, "download_unreachable_reason", probe)
    with pytest.raises(FileNotFoundError, match="download=False.*pass download=True|"
                       "pass download=True.*download=False"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path), download=False)


def test_reachable_host_lets_tfds_download(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tfvqvae.data import tfds_loader

    calls = []

    class Downloaded(Exception):
        pass

    def fake_load(name, split, data_dir, download, with_info):
        calls.append((name, download))
        if not download:
            raise AssertionError(f"Dataset {name}: could not find data in {data_dir}.")
        raise Downloaded

    monkeypatch.setattr(tfds_loader, "download_unreachable_reason", lambda: None)
    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(Downloaded):
        load_dataset("mnist", data_dir=str(tmp_path))
    assert calls == [("mnist", False), ("mnist", True)]


def test_real_probe_and_tfds_path_fail_fast_on_a_closed_port(monkeypatch, tmp_path):
    # The real probe (a TCP connect) and the real tfds.load(download=False) on
    # an empty data_dir; the probe address is a local port nobody listens on,
    # so this fails at once on any machine, with or without a network.
    pytest.importorskip("tensorflow_datasets")
    import socket

    from tfvqvae.data import tfds_loader

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tfds_loader, "PROBE_ADDRESS", ("127.0.0.1", port))
    with pytest.raises(FileNotFoundError, match=rf"127\.0\.0\.1:{port} is unreachable"):
        load_dataset("mnist", "test", data_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing was downloaded
