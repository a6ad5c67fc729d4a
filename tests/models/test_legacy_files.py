"""Files saved by the release before `HierarchicalVQVAE` load and give the same outputs.

The files and their expected outputs are in ``tests/models/data`` (see its
README.md: written once by ``make_legacy_models.py`` with the old code).
Codes and sampled codes must be equal; float outputs equal to float32
rounding; the optimizer state comes back variable by variable.
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import tfvqvae
from tfvqvae.models.hierarchical import HierarchicalVQVAE

DATA = Path(__file__).resolve().parent / "data"
AUTOENCODERS = {
    "vqvae": (tfvqvae.VQVAE, ("top",)),
    "vqvae2_ema": (tfvqvae.VQVAE2, ("top", "bottom")),
    "vqvae2_plain": (tfvqvae.VQVAE2, ("top", "bottom")),
    "vqvae2_bf16": (tfvqvae.VQVAE2, ("top", "bottom")),
}


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def load(name):
    expected = dict(np.load(DATA / f"{name}.npz"))
    return keras.saving.load_model(DATA / f"{name}.keras"), expected


def assert_same_optimizer(model, expected):
    saved = [expected[f"optimizer_{i}"] for i in range(len(expected))
             if f"optimizer_{i}" in expected]
    variables = model.optimizer.variables
    assert len(variables) == len(saved)
    assert int(numpy(model.optimizer.iterations)) >= 1  # not a fresh optimizer
    for variable, value in zip(variables, saved):
        np.testing.assert_array_equal(numpy(variable), value, err_msg=variable.path)


@pytest.mark.parametrize("name", sorted(AUTOENCODERS))
def test_legacy_autoencoder(name):
    model, expected = load(name)
    cls, levels = AUTOENCODERS[name]
    assert type(model) is cls
    assert model.levels == levels
    if cls is tfvqvae.VQVAE2:
        assert isinstance(model, HierarchicalVQVAE) and model.num_levels == 2
    x = expected["images"]
    codes = model.encode_levels(x)
    for level in levels:
        np.testing.assert_array_equal(codes[level].numpy(), expected[f"codes_{level}"])
    # A bfloat16 model's outputs are bfloat16 (8 significant bits): CPUs with and
    # without native bf16 units (AVX512_BF16 / AMX, used by oneDNN) may round a
    # value differently, so allow 2 ulps of bfloat16 there (images lie in [0, 1],
    # where a bfloat16 ulp is at most 2**-8).
    tolerance = dict(rtol=0, atol=2 * 2.0**-8) if name.endswith("bf16") else dict(
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(numpy(model(x)), expected["reconstructions"], **tolerance)
    np.testing.assert_allclose(
        numpy(model.decode_levels(codes)), expected["decoded"], **tolerance)
    assert_same_optimizer(model, expected)
    if name.endswith("bf16"):
        assert model.dtype_policy.name == "mixed_bfloat16"
        for network in (model.bottom_encoder, model.top_encoder, model.decoder):
            assert network.compute_dtype == "bfloat16"
            for layer in network.layers:
                if not isinstance(layer, keras.layers.InputLayer):
                    assert layer.compute_dtype == "bfloat16", layer.name


@pytest.mark.parametrize("name", ["prior_top", "prior_bottom"])
def test_legacy_prior(name):
    prior, expected = load(name)
    assert type(prior) is tfvqvae.PixelCNNPrior
    inputs = {key[len("input_"):]: value for key, value in expected.items()
              if key.startswith("input_")}
    np.testing.assert_allclose(numpy(prior(inputs)), expected["logits"], rtol=1e-5, atol=1e-5)
    extra = {k: v for k, v in inputs.items() if k != "codes"}
    np.testing.assert_array_equal(prior.sample(2, seed=5, **extra).numpy(), expected["samples"])
    assert_same_optimizer(prior, expected)


def test_legacy_vqvae2_keeps_training():
    """The restored optimizer state fits the rebuilt weights: one more step runs."""
    model, expected = load("vqvae2_ema")
    steps = int(numpy(model.optimizer.iterations))
    history = model.fit(expected["images"], batch_size=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert int(numpy(model.optimizer.iterations)) == steps + 1
