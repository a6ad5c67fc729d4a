"""load_tfds through the real tfds.load path, offline via tfds.testing.mock_data."""

import threading

import numpy as np
import pytest

from tfvqvae.data import load_tfds

tfds = pytest.importorskip("tensorflow_datasets")


def test_mnist_mock_shapes_dtype_labels():
    with tfds.testing.mock_data(num_examples=37):
        ds = load_tfds("mnist", split="train")
    assert ds.name == "mnist"
    assert ds.images.shape == (37, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (37,) and ds.labels.dtype == np.int64
    assert ds.labels.min() >= 0 and ds.labels.max() < 10
    assert ds.num_classes == 10


def test_cifar10_mock_test_split_spans_several_read_batches():
    with tfds.testing.mock_data(num_examples=1030):
        ds = load_tfds("cifar10", split="test")
    assert ds.images.shape == (1030, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.num_classes == 10 and ds.labels.max() < 10


def test_missing_label_key_gives_unlabelled():
    with tfds.testing.mock_data(num_examples=4):
        ds = load_tfds("mnist", label_key="no_such_label")
    assert ds.labels is None and ds.num_classes is None


def test_missing_image_key():
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(ValueError, match="no image feature 'pixels'"):
            load_tfds("mnist", image_key="pixels")


def test_unknown_name_is_clear():
    # The real TFDS registry lookup: offline and immediate.
    with pytest.raises(
        ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'.*list_builders"
    ):
        load_tfds("no_such_dataset_xyz")


def test_not_prepared_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="'mnist' is not prepared"):
        load_tfds("mnist", data_dir=str(tmp_path), download=False)


def test_load_time_options_on_mock_data():
    with tfds.testing.mock_data(num_examples=3):
        ds = load_tfds("cifar10", split="test", image_size=16, channels=1)
    assert ds.images.shape == (3, 16, 16, 1) and ds.images.dtype == np.uint8


def test_probe_that_hangs_is_abandoned(monkeypatch):
    from tfvqvae.data import tfds_loader

    release = threading.Event()

    def hang(*args, **kwargs):  # a DNS lookup or connect that never answers
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(tfds_loader.socket, "create_connection", hang)
    monkeypatch.setattr(tfds_loader, "PROBE_TIMEOUT_S", 0.05)
    monkeypatch.setattr(tfds_loader, "PROBE_ADDRESS", ("probe.invalid", 443))
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    try:
        reason = tfds_loader.download_unreachable_reason()
    finally:
        release.set()
    assert reason == "probe.invalid:443 did not answer within 0.05 s"


def test_probe_success_and_proxy_address(monkeypatch):
    from tfvqvae.data import tfds_loader

    seen = []

    class Connection:
        def close(self):
            pass

    def connect(address, timeout):
        seen.append(address)
        return Connection()

    monkeypatch.setattr(tfds_loader.socket, "create_connection", connect)
    monkeypatch.setenv("https_proxy", "http://proxy.example:8080")
    assert tfds_loader.download_unreachable_reason() is None
    assert seen == [("proxy.example", 8080)]
