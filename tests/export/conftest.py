"""Tiny real runs on MNIST (../shared/data), their priors and exports, built once per session.

Two runs, trained 1 epoch on 1024 training images:

* ``vqvae_run``: a VQVAE at 28x28 (7x7 codes, K=32) with an unconditional
  top prior;
* ``vqvae2_run``: a VQVAE2 at 32x32 (4x4 top and 8x8 bottom codes, K=32
  each) with class-conditional top and bottom priors.

The priors are fitted for one epoch on the codes of the same training images
(what `tfvqvae train-prior` would write, without extracting the whole split).
Each run is exported once to every format (``vqvae_export``,
``vqvae2_export``); tests that need a fresh export make their own.
"""

import keras
import numpy as np
import pytest

import tfvqvae
from tfvqvae.data import load_dataset
from tfvqvae.export import export_run
from tfvqvae.export import load_run
from tfvqvae.training import TrainConfig
from tfvqvae.training import train

TINY = dict(
    dataset="mnist", max_train_examples=1024, epochs=1, batch_size=32, learning_rate=3e-3,
    num_embeddings=32, embedding_dim=8, hidden_channels=16, residual_channels=8,
    num_residual_layers=1, kmeans_init=True, restart_unused_after=5, grid_pairs=4,
)
NUM_TEST_IMAGES = 256


def _fit_priors(run_dir, class_conditional, shared_data):
    """Writes RUN/prior-<level>/model.keras for every level, fitted 1 epoch on training codes."""
    run = load_run(run_dir)
    model = run.model
    train_data = load_dataset("mnist", "train", data_dir=shared_data).take(1024)
    images = run.images("train", 1024)
    codes = {k: v.numpy() for k, v in model.encode_levels(images).items()}
    shapes = model.code_shapes(run.image_shape[:2])
    keras.utils.set_random_seed(0)
    for level in model.levels:
        extra = {}
        inputs = {"codes": codes[level]}
        if class_conditional:
            extra["num_classes"] = 10
            inputs["labels"] = np.asarray(train_data.labels)
        if level == "bottom":
            extra.update(condition_num_embeddings=model.level_num_embeddings["top"],
                         condition_shape=shapes["top"])
            inputs["condition"] = codes["top"]
        prior = tfvqvae.PixelCNNPrior(
            model.level_num_embeddings[level], shapes[level], hidden_channels=8,
            num_blocks=2, kernel_size=3, **extra,
        )
        prior.compile(optimizer=keras.optimizers.Adam(3e-3))
        prior.fit(inputs, batch_size=128, epochs=1, verbose=0)
        folder = run_dir / f"prior-{level}"
        folder.mkdir()
        prior.save(folder / "model.keras")


@pytest.fixture(scope="session")
def vqvae_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mnist-vqvae"
    train(TrainConfig(out=str(out), data_dir=str(shared_data), **TINY), verbose=0)
    _fit_priors(out, class_conditional=False, shared_data=shared_data)
    return out


@pytest.fixture(scope="session")
def vqvae2_run(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mnist-vqvae2"
    train(TrainConfig(out=str(out), data_dir=str(shared_data), model="vqvae2", image_size=32,
                      **TINY), verbose=0)
    _fit_priors(out, class_conditional=True, shared_data=shared_data)
    return out


@pytest.fixture(scope="session")
def vqvae_export(vqvae_run, tmp_path_factory):
    return export_run(vqvae_run, tmp_path_factory.mktemp("exports") / "vqvae",
                      formats="savedmodel,tflite,onnx")


@pytest.fixture(scope="session")
def vqvae2_export(vqvae2_run, tmp_path_factory):
    return export_run(vqvae2_run, tmp_path_factory.mktemp("exports") / "vqvae2",
                      formats="savedmodel,tflite,onnx", name="digits", version=3)


@pytest.fixture(scope="session")
def runs(vqvae_run, vqvae2_run, vqvae_export, vqvae2_export):
    """{"vqvae" | "vqvae2": (RunFolder, ExportResult, test images (256, H, W, 1))}."""
    loaded = {}
    for key, run_dir, result in (("vqvae", vqvae_run, vqvae_export),
                                 ("vqvae2", vqvae2_run, vqvae2_export)):
        run = load_run(run_dir)
        loaded[key] = (run, result, run.images("test", NUM_TEST_IMAGES))
    return loaded
