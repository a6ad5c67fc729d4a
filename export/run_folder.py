"""A ``tfvqvae train`` run folder, as the exporters read it.

    RUN/model.keras               the trained VQVAE / VQVAE2 / HierarchicalVQVAE (required)
    RUN/config.json               its TrainConfig: dataset, data_dir, image_size
    RUN/prior-<level>/model.keras the priors of ``tfvqvae train-prior`` (optional)

The layout and its loading belong to `tfvqvae.run_folder`; this module adds
what an export needs on top: the graphs' image shape and the check that each
prior fits its level (and, below the top, the level above it).

The exported graphs have a fixed image height and width: the run's
``image_size``, or the dataset's own size when the run did not resize.
"""

import dataclasses
from pathlib import Path

import numpy as np

from tfvqvae.models.autoencoder import QuantizedAutoencoder
from tfvqvae.models.pixelcnn_prior import PixelCNNPrior
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import load_model
from tfvqvae.run_folder import load_priors
from tfvqvae.run_folder import load_run_images
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import prior_dir
from tfvqvae.run_folder import read_run_config


@dataclasses.dataclass
class RunFolder:
    """A loaded run folder (see `load_run`).

    Attributes:
        path: the folder.
        name: its name (the default model name of an export).
        model: the trained `VQVAE` or `VQVAE2`.
        config: ``config.json`` as a dict (empty when the file is missing).
        image_shape: (H, W, C) of the exported graphs.
        priors: {level: `PixelCNNPrior`} of the priors found, top first.
        data_dir: the data folder images are read from (``config.json``'s
            unless overridden).
    """

    path: Path
    name: str
    model: QuantizedAutoencoder
    config: dict
    image_shape: tuple
    priors: dict
    data_dir: str | None = None

    @property
    def has_all_priors(self):
        """True when every level of the model has a prior (the sampler can be exported)."""
        return set(self.priors) == set(self.model.levels)

    @property
    def missing_priors(self):
        """Levels without a prior, top first."""
        return [level for level in self.model.levels if level not in self.priors]

    def images(self, split, count=None, seed=None):
        """float32 images (N, H, W, C) in [0, 1] of ``split``, resized like in training.

        Args:
            split: "train" or "test". "train" draws from the images the run
                trained on (the first ``max_train_examples`` when it was set).
            count: how many; None for all of them.
            seed: None takes the first ``count`` images; an int draws
                ``count`` of them at random (without replacement, in order).
        """
        dataset_name = self.config.get("dataset")
        if not dataset_name:
            raise ValueError(
                f"{config_file(self.path)} names no dataset: the run's images cannot be "
                "loaded (verification and int8 calibration need them)."
            )
        dataset = load_run_images(self.config, split, data_dir=self.data_dir)
        limit = self.config.get("max_train_examples") if split == "train" else None
        total = min(len(dataset), limit) if limit else len(dataset)
        count = total if count is None else min(int(count), total)
        if seed is None:
            indices = np.arange(count)
        else:
            indices = np.sort(np.random.default_rng(seed).choice(total, count, replace=False))
        height, width, _ = self.image_shape
        return dataset.images_at(indices, image_size=(height, width))


def _image_shape(model, config, image_size, data_dir, path):
    size = image_size if image_size is not None else config.get("image_size")
    if size is not None:
        if isinstance(size, int):
            height = width = size
        else:
            height, width = size
    else:
        if not config.get("dataset"):
            raise FileNotFoundError(
                f"{config_file(path)} is missing or names no dataset: pass image_size "
                "(--image-size) to fix the exported image size."
            )
        height, width, _ = load_run_images(config, "test", data_dir=data_dir).image_shape
    multiple = model.size_multiple
    if height % multiple or width % multiple:
        raise ValueError(
            f"Image height and width must be divisible by {multiple} for this "
            f"{type(model).__name__}. Received: image size {height}x{width}"
        )
    return int(height), int(width), int(model.image_channels)


def _check_prior(prior, level, model, image_shape, path):
    if not isinstance(prior, PixelCNNPrior):
        raise ValueError(f"{path} holds a {type(prior).__name__}, not a PixelCNNPrior.")
    shapes = model.code_shapes(image_shape[:2])
    expected = (model.level_num_embeddings[level], tuple(shapes[level]))
    found = (prior.num_embeddings, tuple(prior.code_shape))
    if found != expected:
        raise ValueError(
            f"The {level} prior at {path} models {found[0]} codes on a {found[1]} map, but "
            f"the model's {level} level has {expected[0]} codes on a {expected[1]} map at "
            f"image size {image_shape[0]}x{image_shape[1]}."
        )
    levels = list(model.levels)
    above = levels[levels.index(level) - 1] if levels.index(level) > 0 else None
    if prior.is_conditioned:  # the chain: each lower prior is given the level above it
        condition = (prior.condition_num_embeddings, tuple(prior.condition_shape))
        wanted = None if above is None else (
            model.level_num_embeddings[above], tuple(shapes[above]))
        if condition != wanted:
            where = ("the top level takes no condition map" if above is None else
                     f"the level above, {above}, has {wanted[0]} codes on a {wanted[1]} map")
            raise ValueError(
                f"The {level} prior at {path} is conditioned on {condition[0]} codes on a "
                f"{condition[1]} map, but {where}."
            )


def load_run(path, image_size=None, data_dir=None):
    """Loads a ``tfvqvae train`` run folder for export.

    Args:
        path: the run folder (``model.keras``, ``config.json``, optional
            ``prior-<level>/model.keras``).
        image_size: int or (H, W) of the exported graphs. Defaults to the
            run's ``image_size`` (or the dataset's size when it is None).
        data_dir: data folder for the run's images. Defaults to the run's
            ``data_dir``.

    Returns:
        A `RunFolder`.

    Raises:
        FileNotFoundError: the folder or its model.keras is missing.
        NotADirectoryError: ``path`` is a file.
        ValueError: model.keras is not a VQ-VAE, or a prior does not fit it.
    """
    path = Path(path)
    model = load_model(path, compile=False)
    config = read_run_config(path, missing_ok=True)
    data_dir = data_dir if data_dir is not None else config.get("data_dir")
    image_shape = _image_shape(model, config, image_size, data_dir, path)
    priors = load_priors(path, model.levels, required=False, compile=False)
    for level, prior in priors.items():
        _check_prior(prior, level, model, image_shape, model_file(prior_dir(path, level)))
    return RunFolder(
        path=path,
        name=path.resolve().name,
        model=model,
        config=config,
        image_shape=image_shape,
        priors=priors,
        data_dir=data_dir,
    )
