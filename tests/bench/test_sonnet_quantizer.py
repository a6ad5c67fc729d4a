"""The Sonnet adapter of bench/sonnet_quantizer.py (skipped without dm-sonnet)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sonnet")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import tfvqvae  # noqa: E402
from sonnet_quantizer import SonnetVectorQuantizerEMA  # noqa: E402
from sonnet_quantizer import check_same_indices  # noqa: E402


def test_same_codebook_same_indices():
    agreement, quantized, commitment = check_same_indices(
        num_embeddings=64, embedding_dim=8, shape=(4, 8, 8))
    assert agreement == 1.0
    assert quantized == 0.0
    assert commitment < 1e-7


def test_starts_from_our_codebook():
    ours = tfvqvae.VectorQuantizerEMA(16, 4, seed=3, kmeans_init=False, restart_unused_after=None)
    theirs = SonnetVectorQuantizerEMA(16, 4, seed=3)
    ours.build((None, 4))
    theirs.build((None, 4))
    np.testing.assert_array_equal(ours.codebook.numpy(), theirs.sonnet_codebook.numpy())


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_updates_sonnets_ema_codebook(jit_compile):
    quantizer = SonnetVectorQuantizerEMA(16, 4, decay=0.9)
    model = tfvqvae.VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                          num_residual_layers=1, quantizer=quantizer)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    before = quantizer.sonnet_codebook.numpy()
    x = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
    history = model.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert quantizer.sonnet_steps == 2
    assert not np.allclose(quantizer.sonnet_codebook.numpy(), before)
    assert np.isfinite(history["loss"][0])
    assert "codebook_loss" not in history  # EMA: no trainable codebook
    assert not any("embeddings" in w.path for w in model.trainable_weights)
    # encode / decode use Sonnet's codebook
    codes = model.encode(x[:2])
    np.testing.assert_array_equal(
        model.quantizer.lookup(codes).numpy(),
        quantizer.sonnet_codebook.numpy()[codes.numpy()],
    )


def test_refuses_our_codebook_options():
    with pytest.raises(ValueError, match="kmeans_init"):
        SonnetVectorQuantizerEMA(16, 4, kmeans_init=True)
