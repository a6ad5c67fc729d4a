"""XLA: every model's train step compiles with jit_compile=True (TPU readiness, on CPU)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae


def _images(n=32, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1), dtype=np.float32)


# "Without random codebook updates": the paper's layer unless a test asks for
# k-means or restarts (both on by default since issue 13).
PAPER = {"kmeans_init": False, "restart_unused_after": None}


def _vqvae(**quantizer):
    quantizer = {**PAPER, **quantizer}
    return tfvqvae.VQVAE(image_channels=1, hidden_channels=16, residual_channels=8,
                         num_residual_layers=1,
                         quantizer=tfvqvae.VectorQuantizerEMA(16, 4, decay=0.9, **quantizer))


def _vqvae2(**quantizer):
    quantizer = {**PAPER, **quantizer}
    return tfvqvae.VQVAE2(image_channels=1, hidden_channels=16, residual_channels=8,
                          num_residual_layers=1,
                          top_quantizer=tfvqvae.VectorQuantizerEMA(16, 4, **quantizer),
                          bottom_quantizer=tfvqvae.VectorQuantizer(16, 4, seed=1, **quantizer))


@pytest.mark.parametrize("build", [
    _vqvae, pytest.param(_vqvae2, marks=pytest.mark.slow),  # vqvae2: about 13 s
], ids=["vqvae", "vqvae2"])
def test_xla_step_equals_the_graph_step(build):
    """Without random codebook updates, one XLA step matches the plain graph step."""
    x = _images()
    runs = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        model.fit(x, batch_size=32, epochs=1, verbose=0, shuffle=False)
        runs.append(model)
    for a, b in zip(runs[0].weights, runs[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)


@pytest.mark.slow  # XLA compiles of k-means and restarts (30-50 s)
@pytest.mark.parametrize("build", [_vqvae, _vqvae2], ids=["vqvae", "vqvae2"])
def test_xla_compiles_kmeans_init_and_restarts(build):
    model = build(kmeans_init=True, kmeans_iterations=2, restart_unused_after=1)
    model.compile(optimizer="adam", jit_compile=True)
    history = model.fit(_images(), batch_size=16, epochs=2, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values())
    quantizer = model.quantizer if hasattr(model, "quantizer") else model.top_quantizer
    assert float(quantizer.training_steps) == 4.0
    # Restarts every step: no code stays unused for a whole step.
    key = "dead_codes" if "dead_codes" in history else "top_dead_codes"
    assert history[key][-1] < 16


@pytest.mark.slow  # default-suite time: the VQ-VAE's XLA step above stays
def test_xla_prior_step_equals_the_graph_step():
    rng = np.random.default_rng(1)
    data = {"codes": rng.integers(0, 16, (32, 4, 4)), "labels": rng.integers(0, 3, 32),
            "condition": rng.integers(0, 5, (32, 2, 2))}
    runs = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        prior = tfvqvae.PixelCNNPrior(16, (4, 4), hidden_channels=8, num_blocks=2,
                                      kernel_size=3, num_classes=3,
                                      condition_num_embeddings=5, condition_shape=(2, 2))
        prior.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        history = prior.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), epochs=1,
                            verbose=0).history
        runs.append((prior, history))
    (graph, h_graph), (xla, h_xla) = runs
    assert h_xla["nll"][0] == pytest.approx(h_graph["nll"][0], rel=1e-5)
    for a, b in zip(graph.weights, xla.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
