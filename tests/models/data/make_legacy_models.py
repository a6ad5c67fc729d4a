"""Writes the legacy ``.keras`` files and their expected outputs (run once).

The files in this folder were saved by the models as they were *before* the
levels were generalised (`HierarchicalVQVAE`): ``test_legacy_files.py``
loads them with the current code and checks that codes, reconstructions,
prior logits, samples and optimizer state are still the saved ones. Run it
again only to add a case, and only at the revision named in README.md:

    python tests/models/data/make_legacy_models.py

Each model is tiny (a few thousand weights), compiled with Adam and fitted
for one step so its optimizer state is saved too.
"""

import os
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfvqvae  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = dict(image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1)


def images(n, seed):
    return np.random.default_rng(seed).random((n, 16, 16, 1), dtype=np.float32)


def optimizer_arrays(model):
    return {f"optimizer_{i}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(model.optimizer.variables)}


def save_autoencoder(name, model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images(8, seed=1), batch_size=8, epochs=1, verbose=0)
    x = images(2, seed=2)
    codes = model.encode_levels(x)
    arrays = {"images": x, "reconstructions": keras.ops.convert_to_numpy(model(x))}
    arrays.update({f"codes_{level}": c.numpy() for level, c in codes.items()})
    arrays["decoded"] = keras.ops.convert_to_numpy(model.decode_levels(codes))
    arrays.update(optimizer_arrays(model))
    model.save(HERE / f"{name}.keras")
    np.savez(HERE / f"{name}.npz", **arrays)


def save_prior(name, prior, inputs):
    prior.compile(optimizer=keras.optimizers.Adam(1e-3))
    prior.fit(inputs, batch_size=4, epochs=1, verbose=0)
    rng = np.random.default_rng(3)
    fixed = {"codes": rng.integers(0, prior.num_embeddings, (2, *prior.code_shape)).astype(np.int32)}
    extra = {}
    if prior.num_classes is not None:
        fixed["labels"] = extra["labels"] = np.array([0, 1], np.int32)
    if prior.is_conditioned:
        fixed["condition"] = extra["condition"] = rng.integers(
            0, prior.condition_num_embeddings, (2, *prior.condition_shape)).astype(np.int32)
    arrays = {f"input_{k}": v for k, v in fixed.items()}
    arrays["logits"] = keras.ops.convert_to_numpy(prior(fixed))
    arrays["samples"] = prior.sample(2, seed=5, **extra).numpy()
    arrays.update(optimizer_arrays(prior))
    prior.save(HERE / f"{name}.keras")
    np.savez(HERE / f"{name}.npz", **arrays)


def main():
    keras.utils.set_random_seed(0)
    save_autoencoder("vqvae", tfvqvae.VQVAE(
        **SIZES, quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9)))
    keras.utils.set_random_seed(0)
    save_autoencoder("vqvae2_ema", tfvqvae.VQVAE2(
        **SIZES,
        top_quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, seed=0),
        bottom_quantizer=tfvqvae.VectorQuantizerEMA(6, 3, decay=0.9, seed=1)))
    keras.utils.set_random_seed(0)
    save_autoencoder("vqvae2_plain", tfvqvae.VQVAE2(
        **SIZES,
        top_quantizer=tfvqvae.VectorQuantizer(8, 4, seed=0),
        bottom_quantizer=tfvqvae.VectorQuantizer(6, 3, seed=1)))
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        save_autoencoder("vqvae2_bf16", tfvqvae.VQVAE2(
            **SIZES,
            top_quantizer=tfvqvae.VectorQuantizerEMA(8, 4, decay=0.9, seed=0),
            bottom_quantizer=tfvqvae.VectorQuantizer(6, 3, seed=1)))
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(4)
    top = rng.integers(0, 8, (8, 2, 2)).astype(np.int32)
    bottom = rng.integers(0, 6, (8, 4, 4)).astype(np.int32)
    keras.utils.set_random_seed(0)
    save_prior("prior_top", tfvqvae.PixelCNNPrior(
        num_embeddings=8, code_shape=(2, 2), hidden_channels=8, num_blocks=2,
        kernel_size=3, num_classes=2), {"codes": top, "labels": np.arange(8) % 2})
    keras.utils.set_random_seed(0)
    save_prior("prior_bottom", tfvqvae.PixelCNNPrior(
        num_embeddings=6, code_shape=(4, 4), hidden_channels=8, num_blocks=2,
        kernel_size=3, condition_num_embeddings=8, condition_shape=(2, 2),
        condition_channels=4), {"codes": bottom, "condition": top})
    revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    for path in sorted(HERE.glob("*.keras")):
        print(f"{path.name}: {path.stat().st_size} bytes")
    print(f"revision {revision}, keras {keras.__version__}")


if __name__ == "__main__":
    main()
