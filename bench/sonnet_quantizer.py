"""Sonnet 2's ``snt.nets.VectorQuantizerEMA`` as the quantiser of a tfvqvae model.

    from sonnet_quantizer import SonnetVectorQuantizerEMA   # bench/ on sys.path
    model = tfvqvae.VQVAE(quantizer=SonnetVectorQuantizerEMA(512, 64, decay=0.99))

`tfvqvae.VQVAE` / `VQVAE2` accept any `tfvqvae.VectorQuantizer` instance, so
the adapter subclasses `tfvqvae.VectorQuantizerEMA` and overrides
``quantize_with_losses`` (what the models' train and test steps call),
``indices``, ``lookup`` and ``distances`` (what ``encode`` / ``decode`` call)
to run DeepMind's module instead of ours. Only the benchmarks use it
(``bench/train_step_speed.py``, ``bench/cifar_quality.py``); it needs
``pip install dm-sonnet`` (2.0.2 was used).

What Sonnet's module does differently from ours (both are appendix A.1 of the
VQ-VAE paper with Laplace smoothing):

* its EMAs are zero-debiased (``snt.ExponentialMovingAverage``: hidden state
  starts at 0, average = hidden / (1 − γ^t)), so after the first step the
  codebook is exactly the batch means, and a code unused in the first batch
  becomes the zero vector; ours starts from N = 1, m = e (the initial code
  carries the weight of one vector);
* it forms the (N, K) one-hot matrix and a (D, N) x (N, K) matmul for the
  sums, where ours uses ``unsorted_segment_sum``;
* it has no k-means initialisation, no dead-code restarts and no
  cross-replica reduction of the statistics (use it on one device).

Sonnet creates its variables in its constructor, i.e. eagerly, outside any
traced train step. The adapter copies our initial codebook into it, so a
tfvqvae layer and its Sonnet twin built with the same seed start from the same
codes. The tfvqvae codebook variables of the parent class still exist (the
model's size checks read them) but are not used or updated. ``get_config`` is
inherited, so a saved model reloads as a plain tfvqvae layer: do not save
models that use the adapter and expect Sonnet back.
"""

import sonnet as snt
import tensorflow as tf

import tfvqvae
from tfvqvae.layers.vector_quantizer import QuantizerOutput


class SonnetVectorQuantizerEMA(tfvqvae.VectorQuantizerEMA):
    """A `tfvqvae.VectorQuantizerEMA` whose work is done by ``snt.nets.VectorQuantizerEMA``.

    Args:
        num_embeddings: K.
        embedding_dim: D.
        commitment_cost: β. Defaults to 0.25.
        decay: γ of Sonnet's EMAs. Defaults to 0.99.
        epsilon: Laplace smoothing ε. Defaults to 1e-5.
        seed: seed of the initial codebook (ours, copied into Sonnet's).
        **kwargs: base layer arguments (``name``).
    """

    def __init__(self, num_embeddings, embedding_dim, commitment_cost=0.25,
                 decay=0.99, epsilon=1e-5, seed=0, **kwargs):
        for option in ("kmeans_init", "restart_unused_after"):
            if kwargs.get(option):
                raise ValueError(f"Sonnet's VectorQuantizerEMA has no {option}.")
        super().__init__(num_embeddings, embedding_dim, commitment_cost=commitment_cost,
                         decay=decay, epsilon=epsilon, seed=seed, add_losses=False, **kwargs)
        # Created here, eagerly: its variables exist before any tf.function trace.
        self.sonnet = snt.nets.VectorQuantizerEMA(
            embedding_dim=embedding_dim,
            num_embeddings=num_embeddings,
            commitment_cost=commitment_cost,
            decay=decay,
            epsilon=epsilon,
        )

    def build(self, input_shape):
        super().build(input_shape)
        # Same starting codes as a tfvqvae layer with this seed. Sonnet stores (D, K).
        self.sonnet.embeddings.assign(tf.transpose(tf.convert_to_tensor(self.codebook)))

    @property
    def sonnet_codebook(self):
        """Sonnet's current codebook as (K, D)."""
        return tf.transpose(tf.convert_to_tensor(self.sonnet.embeddings))

    @property
    def sonnet_steps(self):
        """How many EMA updates Sonnet's module has applied."""
        return int(self.sonnet.ema_cluster_size._counter.numpy())

    def quantize_with_losses(self, inputs, training=False):
        inputs = self._check_inputs(inputs)
        if not isinstance(training, (bool, type(None))):
            raise TypeError("Sonnet's module needs a Python bool `training`.")
        z = tf.cast(inputs, tf.float32)
        out = self.sonnet(z, is_training=bool(training))
        if training:
            self.training_steps.assign_add(1.0)
        return QuantizerOutput(
            quantized=tf.cast(out["quantize"], inputs.dtype),
            indices=tf.cast(out["encoding_indices"], tf.int32),
            codebook_loss=tf.zeros([], tf.float32),  # EMA: no codebook term
            commitment_loss=out["loss"],  # β · mean ‖z_e − sg[e]‖²
            counts=tf.reduce_sum(out["encodings"], axis=0),
            perplexity=out["perplexity"],
        )

    def call(self, inputs, training=None):
        return self.quantize_with_losses(inputs, training=training).quantized

    def distances(self, inputs):
        inputs = self._check_inputs(inputs)
        flat = tf.reshape(tf.cast(inputs, tf.float32), [-1, self.embedding_dim])
        e = tf.convert_to_tensor(self.sonnet.embeddings)  # (D, K)
        d = (tf.reduce_sum(flat**2, 1, keepdims=True) - 2 * tf.matmul(flat, e)
             + tf.reduce_sum(e**2, 0, keepdims=True))
        return tf.reshape(d, tf.concat([tf.shape(inputs)[:-1], [self.num_embeddings]], 0))

    def indices(self, inputs):
        # Sonnet's own rule: argmax of −distances.
        return tf.cast(tf.argmax(-self.distances(inputs), axis=-1), tf.int32)

    def lookup(self, indices, validate=True):
        indices = tf.convert_to_tensor(indices)
        if validate:
            indices = self._check_range(indices)
        return self.sonnet.quantize(tf.cast(indices, tf.int32))


def check_same_indices(num_embeddings=512, embedding_dim=64, shape=(16, 8, 8), seed=0):
    """Our layer and the adapter on one codebook and one batch: fraction of equal indices.

    Returns ``(agreement, max |quantized difference|, |commitment difference|)``;
    the codebook is ours (copied into Sonnet at build), the inputs are normal
    with the codebook's scale.
    """
    ours = tfvqvae.VectorQuantizerEMA(num_embeddings, embedding_dim, seed=seed)
    theirs = SonnetVectorQuantizerEMA(num_embeddings, embedding_dim, seed=seed)
    ours.build((None, embedding_dim))
    theirs.build((None, embedding_dim))
    z = tf.random.stateless_normal((*shape, embedding_dim), (seed, 1), stddev=0.2)
    a = ours.quantize_with_losses(z, training=False)
    b = theirs.quantize_with_losses(z, training=False)
    agreement = float(tf.reduce_mean(tf.cast(tf.equal(a.indices, b.indices), tf.float32)))
    quantized = float(tf.reduce_max(tf.abs(a.quantized - b.quantized)))
    commitment = abs(float(a.commitment_loss - b.commitment_loss))
    return agreement, quantized, commitment
