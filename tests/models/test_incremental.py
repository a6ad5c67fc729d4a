"""IncrementalPrior: one position at a time gives the full forward pass's logits."""

import numpy as np
import pytest

from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tfvqvae import PixelCNNPrior
from tfvqvae.models.incremental import IncrementalPrior


@pytest.mark.parametrize("options", [
    dict(),
    dict(kernel_size=5, num_classes=3),
    dict(kernel_size=1),
    dict(attention_every=1, num_classes=3, condition_num_embeddings=5, condition_shape=(2, 3),
         condition_channels=4),
], ids=["plain", "k5-class", "k1", "attention-class-condition"])
def test_teacher_forced_logits_equal_the_forward_pass(options):
    prior = randomise(PixelCNNPrior(7, (4, 6), hidden_channels=8, num_blocks=3, **options),
                      seed=1)
    # Zero-initialised attention output would hide the attention path: open it.
    for layer in prior.attention.values():
        layer.output_projection.kernel.assign(
            np.random.default_rng(2).normal(size=layer.output_projection.kernel.shape) * 0.5)
    batch = 5
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 7, (batch, 4, 6)).astype(np.int32)
    extra = conditioning_inputs(prior, batch)
    expected = prior({"codes": codes, **extra}).numpy()  # (B, 4, 6, 7), full pass

    steps = IncrementalPrior(prior)
    context = steps.context(batch, extra.get("labels"), extra.get("condition"))
    state = steps.start(batch)
    found = np.zeros_like(expected)
    for i in range(4):
        for j in range(6):
            logits, state = steps.logits(context, state, i, j)
            found[:, i, j] = logits.numpy()
            state = steps.write(state, j, codes[:, i, j])
        state = steps.end_row(context, state, i)
    np.testing.assert_allclose(found, expected, atol=1e-4, rtol=1e-4)
    # Each position's logits depend only on the codes before it: change a later code.
    assert not np.allclose(expected[:, 0, 0], expected[:, 3, 5])
