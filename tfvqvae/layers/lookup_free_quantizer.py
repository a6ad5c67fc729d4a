"""Lookup-free quantisation (LFQ, MAGVIT-v2): the sign of each channel, with an entropy penalty.

Each of the D channels is quantised on its own to C_i = {−s, +s} (s is
``codebook_scale``, 1 in the paper), so the implied codebook is
{−s, +s}^D, K = 2^D codes, and no code is looked up (Yu et al. 2023,
section 3.1, equations (1)–(2)):

    q(z)_i = +s if z_i > 0 else −s                      (sign, with sign(0) = −1)
    index  = Σ_i 2^i · 1[z_i > 0]                       (channel 0 the least significant bit)
    output = z + sg[q(z) − z]                           (straight-through: identity gradient)

Entropy penalty (section 3.1), E[H(q(z))] − γ H(E[q(z)]), with q's soft
assignment over the K codes, softmax_c(−‖z − c‖² / τ). Since
‖z − c‖² = Σ_i (z_i − c_i)², that softmax is exactly a product of one
Bernoulli per channel:

    p_i(z)  = P(c_i = +s | z) = σ(4 s z_i / τ)
    H_b(p)  = −p ln p − (1 − p) ln(1 − p)                (nats)

    per-sample entropy  E[H(q(z))]  = mean_n Σ_i H_b(p_i(z_n))              (exact)
    codebook entropy    H(E[q(z)]) ≈ Σ_i H_b(m_i),  m_i = mean_n p_i(z_n)

    codebook_loss   = λ · (E[H(q(z))] − γ · Σ_i H_b(m_i))
    commitment_loss = β · mean (z − sg[q(z)])²           (mean over every element)

λ is ``entropy_cost``, γ ``diversity_gamma``, τ ``entropy_temperature``, β
``commitment_cost``. The codebook entropy is the paper's approximation "with
sub-groups of dimensions", here groups of one channel: the entropy of the
product of the per-channel marginals, an upper bound on the exact H(E[q(z)])
(equal when the channels are independent), maximal (D ln 2) when every
channel is positive half the time. Both terms cost O(D) per position, never
O(2^D). The means over positions n run over the global batch: under a
multi-replica strategy the sums are all-reduced (with their gradients), so
``codebook_loss`` on every replica is the single-device value.

There are no weights; the penalty is reported as the `QuantizerOutput`'s
``codebook_loss`` (it is what keeps the codebook in use). The layer has no
state a training step (finite or not) could change.

Reference: Yu et al., "Language Model Beats Diffusion — Tokenizer is Key to
Visual Generation", ICLR 2024, section 3.1, https://arxiv.org/abs/2310.05737
"""

import keras
import tensorflow as tf

from tfvqvae.layers.cross_replica import sum_across_replicas
from tfvqvae.layers.finite_scalar_quantizer import ProductQuantizer
from tfvqvae.validation import finite_float
from tfvqvae.validation import positive_int

# Codes 0 … 2^D − 1 are int32 (and K = 2^D is an int32 too): D <= 30.
MAX_EMBEDDING_DIM = 30


def binary_entropy(probs):
    """H_b(p) = −p ln p − (1 − p) ln(1 − p) in nats, with 0 ln 0 = 0 (float32)."""
    return -tf.math.xlogy(probs, probs) - tf.math.xlogy(1.0 - probs, 1.0 - probs)


def binary_entropy_from_logits(logits):
    """H_b(σ(a)) = σ(a)·softplus(−a) + σ(−a)·softplus(a): no log of 0, no cancellation."""
    return tf.sigmoid(logits) * tf.nn.softplus(-logits) + tf.sigmoid(-logits) * tf.nn.softplus(
        logits
    )


@keras.saving.register_keras_serializable(package="tfvqvae")
class LookupFreeQuantizer(ProductQuantizer):
    """Lookup-free quantiser: each channel to ±s by its sign, K = 2^D, entropy-regularised.

    A drop-in replacement for `VectorQuantizer` in the models
    (``VQVAE(quantizer=LookupFreeQuantizer(10))``: 1024 codes from a
    10-channel latent). The formulas, with the factorised entropy penalty,
    are in the module docstring.

    Computed in float32 under a mixed-precision policy; the output has the
    inputs' dtype (the layer's compute dtype inside a model).

    By default ``call`` registers ``codebook_loss + commitment_loss`` with
    ``add_loss``; the package's models call ``quantize_with_losses`` and add
    the terms in their ``train_step``.

    ``counts`` are a (2^D,) float32 vector per step (and the models' usage
    metric holds another), 4 · 2^D bytes each: 1 MiB at D = 18.

    Args:
        embedding_dim: D, channels of the inputs and bits of a code;
            1 <= D <= 30 (codes are int32).
        entropy_cost: λ >= 0, weight of the entropy penalty. Defaults to 0.1
            (a common choice; section 3.1 gives no value).
        commitment_cost: β >= 0, weight of the commitment loss. Defaults to
            0.25 (the VQ-VAE paper's β).
        diversity_gamma: γ >= 0, weight of the codebook entropy inside the
            penalty. Defaults to 1.0 (the paper's penalty).
        codebook_scale: s > 0, the value of each channel of a code (±s).
            Defaults to 1.0 (the paper's C_i = {−1, 1}).
        entropy_temperature: τ > 0 of the soft assignment
            softmax(−‖z − c‖² / τ). Defaults to 0.01.
        add_losses: register the loss terms with ``add_loss`` in ``call``.
            Defaults to True.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: float tensor (..., D).
        training: unused (no state; the losses are computed either way).

    Input shape:
        (..., D) with rank >= 2.

    Output shape:
        Same as the input (forward values ±s).

    Attributes:
        num_embeddings: K = 2^D.
        embedding_dim: D.

    Raises:
        ValueError: from the constructor, naming the argument and its value:
            ``embedding_dim`` not an int in [1, 30], a cost, γ, s or τ out of
            range or not finite ("`entropy_temperature` must be a finite
            number > 0. Received: entropy_temperature=0"). From a call:
            inputs of rank < 2 or whose last axis is not D.
        TypeError: from a call, for non-floating inputs.

    Example:

    >>> import numpy as np
    >>> lfq = LookupFreeQuantizer(embedding_dim=4)
    >>> lfq.num_embeddings
    16
    >>> lfq.indices(np.array([[0.3, -1.0, 2.0, 0.0]], "float32")).numpy()
    array([5], dtype=int32)

    Reference:
        Yu et al., "Language Model Beats Diffusion — Tokenizer is Key to
        Visual Generation", ICLR 2024, section 3.1,
        https://arxiv.org/abs/2310.05737
    """

    def __init__(
        self,
        embedding_dim,
        entropy_cost=0.1,
        commitment_cost=0.25,
        diversity_gamma=1.0,
        codebook_scale=1.0,
        entropy_temperature=0.01,
        add_losses=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        dim = positive_int("embedding_dim", embedding_dim)
        if dim > MAX_EMBEDDING_DIM:
            raise ValueError(
                f"`embedding_dim` must be at most {MAX_EMBEDDING_DIM}: the 2**embedding_dim "
                f"codes are int32. Received: embedding_dim={embedding_dim!r}"
            )
        self.entropy_cost = finite_float("entropy_cost", entropy_cost, low=0)
        self.commitment_cost = finite_float("commitment_cost", commitment_cost, low=0)
        self.diversity_gamma = finite_float("diversity_gamma", diversity_gamma, low=0)
        self.codebook_scale = finite_float("codebook_scale", codebook_scale, low=0, low_open=True)
        self.entropy_temperature = finite_float(
            "entropy_temperature", entropy_temperature, low=0, low_open=True
        )
        self.add_losses = bool(add_losses)
        self._init_product([2] * dim)

    def _quantize(self, z):
        positive = z > 0.0
        q = tf.where(positive, self.codebook_scale, -self.codebook_scale)
        return z + tf.stop_gradient(q - z), tf.cast(positive, tf.int32)

    def _digit_values(self, digits):
        return tf.where(digits > 0, self.codebook_scale, -self.codebook_scale)

    def _code_digits(self, codes):
        return tf.cast(codes > 0.0, tf.int32)

    def entropy_terms(self, inputs):
        """(per-sample entropy, codebook entropy) of the module docstring: float32 scalars, nats.

        Means over every position of ``inputs`` (of the global batch inside
        a multi-replica strategy); differentiable.

        Raises:
            TypeError / ValueError: as ``indices``.
        """
        z = tf.cast(self._check_inputs(inputs), tf.float32)
        return self._entropies(z)

    def _entropies(self, z):
        flat = tf.reshape(z, [-1, self.embedding_dim])  # (N, D)
        logits = (4.0 * self.codebook_scale / self.entropy_temperature) * flat  # 4 s z / τ
        probs = tf.sigmoid(logits)  # p_i(z_n), (N, D)
        # One all-reduce for all three sums; its gradient is the all-reduce of
        # the incoming gradients, so every replica's gradient is its share of
        # the single-device one.
        sums = sum_across_replicas(
            tf.concat(
                [
                    tf.reduce_sum(probs, axis=0),  # Σ_n p_i, (D,)
                    [tf.reduce_sum(binary_entropy_from_logits(logits))],  # Σ_n Σ_i H_b
                    [tf.cast(tf.shape(flat)[0], tf.float32)],  # N
                ],
                axis=0,
            )
        )
        count = tf.maximum(sums[-1], 1.0)
        per_sample = sums[-2] / count
        marginal = tf.clip_by_value(sums[:-2] / count, 0.0, 1.0)  # m_i
        return per_sample, tf.reduce_sum(binary_entropy(marginal))

    def _loss_terms(self, z, quantized):
        per_sample, codebook = self._entropies(z)
        codebook_loss = self.entropy_cost * (per_sample - self.diversity_gamma * codebook)
        commitment_loss = self.commitment_cost * tf.reduce_mean(
            tf.square(z - tf.stop_gradient(quantized))
        )
        return codebook_loss, commitment_loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedding_dim": self.embedding_dim,
                "entropy_cost": self.entropy_cost,
                "commitment_cost": self.commitment_cost,
                "diversity_gamma": self.diversity_gamma,
                "codebook_scale": self.codebook_scale,
                "entropy_temperature": self.entropy_temperature,
                "add_losses": self.add_losses,
            }
        )
        return config
