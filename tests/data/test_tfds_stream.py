"""open_tfds / TFDSImages: a TFDS split streamed as tf.data, never materialised.

Two kinds of data, both offline: ``tfds.testing.mock_data`` (random images for
the real "mnist" and "cifar10" features; its ``as_dataset`` ignores the split
string) and two tiny datasets really prepared by TFDS in a temporary
``data_dir`` (real files, ``info.splits`` counts, ``even_splits``). References:
the in-memory `load_tfds` (decoded by TFDS, converted by NumPy), the images as
generated, and properties of the training order.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data.tfds_loader import TFDSImages
from tfvqvae.data.tfds_loader import load_tfds
from tfvqvae.data.tfds_loader import open_tfds
from tfvqvae.data.transform import convert_images

tfds = pytest.importorskip("tensorflow_datasets")

TOY_SIZE = 50


def _toy_images(count=TOY_SIZE, shape=(8, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


class TfvqvaeToyImages(tfds.core.GeneratorBasedBuilder):
    """50 random 8x6 RGB images, label = index % 3 (registered as "tfvqvae_toy_images")."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 6, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, image in enumerate(_toy_images()):
            yield i, {"image": image, "label": i % 3}


class TfvqvaeToySizes(tfds.core.GeneratorBasedBuilder):
    """6 RGB images of two sizes, no label (registered as "tfvqvae_toy_sizes")."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3))}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        images = _toy_images(3, (5, 7, 3), seed=1) + _toy_images(3, (9, 4, 3), seed=2)
        for i, image in enumerate(images):
            yield i, {"image": image}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    folder = str(tmp_path_factory.mktemp("tfds"))
    for builder in (TfvqvaeToyImages, TfvqvaeToySizes):
        builder(data_dir=folder).download_and_prepare()
    return folder


def _identify(batch, reference):
    """Indices into ``reference`` (uint8 images) of a batch of float images, by equality."""
    by_bytes = {image.tobytes(): i for i, image in enumerate(reference)}
    pixels = np.rint(np.asarray(batch) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels.astype(np.float32) / 255, batch)
    return [by_bytes[image.tobytes()] for image in pixels]


def test_mock_mnist_is_streamed_with_the_right_batches(monkeypatch):
    from tensorflow_datasets.testing import mocking

    generated = []
    original = mocking.RandomFakeGenerator._generate_example

    def counting(self, rng):
        generated.append(1)
        return original(self, rng)

    monkeypatch.setattr(mocking.RandomFakeGenerator, "_generate_example", counting)
    with tfds.testing.mock_data(num_examples=23):
        source = open_tfds("mnist", split="train")
        assert generated == []  # opening reads no example: the count is the cardinality
        assert isinstance(source, TFDSImages) and len(source) == 23
        assert source.image_shape == (28, 28, 1) and source.num_classes == 10
        assert source.labelled
        batches = list(source.to_tf_dataset(8, with_labels=True))
    assert [x.shape for x, _ in batches] == [(8, 28, 28, 1), (8, 28, 28, 1), (7, 28, 28, 1)]
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0.2  # random pixels, not blank
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10


@pytest.mark.parametrize("name, options", [
    ("mnist", {}),
    ("cifar10", {"image_size": 12, "channels": 1, "crop": "center"}),
])
def test_stream_equals_in_memory_load_tfds_in_file_order(name, options):
    with tfds.testing.mock_data(num_examples=21):
        memory = load_tfds(name, split="test", **options)
        source = open_tfds(name, split="test", **options)
        images = source.as_float()
        labels = np.concatenate([y.numpy() for _, y in source.to_tf_dataset(
            8, with_labels=True)])
        first = source.take(5).as_float()
        variance = source.pixel_variance()
    expected = memory.images.astype(np.float32) / 255
    assert source.image_shape == memory.images.shape[1:]
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, memory.labels)
    np.testing.assert_array_equal(first, expected[:5])
    assert variance == pytest.approx(float(np.var(expected.astype(np.float64))), rel=1e-12)


def test_epochs_order_depends_only_on_seed_and_epoch():
    with tfds.testing.mock_data(num_examples=20):
        reference = load_tfds("cifar10").images
        source = open_tfds("cifar10")

        def run(seed=3, **kwargs):
            return [_identify(b, reference) for b in source.epochs_dataset(
                4, seed=seed, epochs=kwargs.pop("epochs", 3), **kwargs)]

        full = run(first_epoch=0)
        again = run(first_epoch=0)
        other_seed = run(seed=4, first_epoch=0, epochs=1)
        later = run(first_epoch=1)
        resumed = run(first_epoch=0, skip_batches=2)
    assert source.steps_per_epoch(4) == 5 and len(full) == 15
    assert full == again and later == full[5:] and resumed == full[2:]
    epochs = [sum(full[5 * e:5 * e + 5], []) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(20))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert sum(other_seed, []) != epochs[0]


def test_prepared_split_counts_and_even_split_pipelines(data_dir):
    source = open_tfds("tfvqvae_toy_images", data_dir=data_dir, download=False)
    assert len(source) == TOY_SIZE and source.num_classes == 3
    assert source.image_shape == (8, 6, 3)
    generated = _toy_images()
    # File order (TFDS shuffles examples when it writes them), from the in-memory loader.
    memory = load_tfds("tfvqvae_toy_images", data_dir=data_dir, download=False)
    in_files = _identify(memory.images.astype(np.float32) / 255, generated)
    assert sorted(in_files) == list(range(TOY_SIZE))
    np.testing.assert_array_equal(source.as_float(), memory.images.astype(np.float32) / 255)
    position = {index: p for p, index in enumerate(in_files)}
    assert source.steps_per_epoch(4, 2) == 12
    seen = []
    for k in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=k,
                                             num_replicas_in_sync=2)
        batches = list(source.epochs_dataset(4, seed=1, first_epoch=0, epochs=1,
                                             with_labels=True, input_context=context))
        assert [x.shape[0] for x, _ in batches] == [2] * 12  # equal steps
        indices = sum((_identify(x, generated) for x, _ in batches), [])
        labels = np.concatenate([y.numpy() for _, y in batches])
        assert labels.tolist() == [i % 3 for i in indices]
        # pipeline k reads the k-th half of the split, in file order
        assert all(25 * k <= position[i] < 25 * (k + 1) for i in indices)
        assert len(set(indices)) == 24
        seen.append(set(indices))
    assert not seen[0] & seen[1]
    small = source.take(10)  # a limited source splits its first examples among workers
    assert small.steps_per_epoch(4, 2) == 2
    np.testing.assert_array_equal(small.as_float(), memory.images[:10].astype(np.float32) / 255)


def test_images_of_several_sizes_need_image_size(data_dir):
    with pytest.raises(ValueError, match=r"differ in size.*image_size.*--image-size"):
        open_tfds("tfvqvae_toy_sizes", data_dir=data_dir, download=False)
    source = open_tfds("tfvqvae_toy_sizes", data_dir=data_dir, download=False,
                       image_size=4, crop="center")
    assert source.image_shape == (4, 4, 3) and not source.labelled
    assert source.num_classes is None
    memory = load_tfds("tfvqvae_toy_sizes", data_dir=data_dir, download=False,
                       image_size=4, crop="center")
    assert memory.labels is None
    images = source.as_float()
    np.testing.assert_array_equal(images, memory.images.astype(np.float32) / 255)
    generated = _toy_images(3, (5, 7, 3), seed=1) + _toy_images(3, (9, 4, 3), seed=2)
    expected = [convert_images(g[None], (4, 4), 3, "center")[0] for g in generated]
    assert sorted(_identify(images, expected)) == list(range(6))
    with pytest.raises(ValueError, match="no labels"):
        source.to_tf_dataset(2, with_labels=True)


def test_errors_are_those_of_load_tfds(tmp_path):
    with pytest.raises(FileNotFoundError, match="'mnist' is not prepared"):
        open_tfds("mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        open_tfds("no_such_dataset_xyz")
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError, match="no image feature 'pixels'"):
            open_tfds("mnist", image_key="pixels")
        assert not open_tfds("mnist", label_key="no_such_label").labelled
