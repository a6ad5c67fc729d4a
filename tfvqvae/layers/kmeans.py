"""Nearest-code search, row sampling and Lloyd's k-means for the quantisers."""

import tensorflow as tf

from tfvqvae.layers.cross_replica import replica_row_range
from tfvqvae.layers.cross_replica import sum_across_replicas


def nearest_code(flat, codebook):
    """Index of the nearest codebook row for each row of ``flat``.

    ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖². NB: ‖z‖² is the same for every code in a
    row, so the argmin needs only ‖e‖² − 2 z·e: one (N, D) x (D, K) matmul.

    Args:
        flat: float32 tensor (N, D).
        codebook: float32 tensor (K, D).

    Returns:
        int32 tensor (N,). `tf.argmin` with int32 output, which TFLite and
        ONNX convert (`keras.ops.argmin` does not).
    """
    scores = tf.reduce_sum(tf.square(codebook), axis=1) - 2.0 * tf.matmul(
        flat, codebook, transpose_b=True
    )  # (N, K)
    return tf.argmin(scores, axis=-1, output_type=tf.int32)


def sample_rows(flat, num_rows, seed):
    """``num_rows`` rows drawn without replacement from the *global* batch.

    Inside a multi-replica strategy ``flat`` is this replica's share of the
    global batch (replica 0 holds its first rows, and so on). Every replica
    draws the same global row numbers from the same stateless seed, keeps the
    rows it holds and zeros the others, and a sum across replicas assembles
    the draw: the result equals a single device's draw on the whole batch.
    Rows are cycled when the batch has fewer than ``num_rows``.

    Args:
        flat: (N_local, D) tensor.
        num_rows: Python int.
        seed: int32 tensor of shape (2,) for the stateless generator.
    """
    local_size = tf.shape(flat)[0]
    offset, global_size = replica_row_range(local_size)
    order = tf.argsort(tf.random.stateless_uniform([global_size], seed=seed))
    picks = tf.gather(order, tf.range(num_rows) % global_size) - offset
    held = (picks >= 0) & (picks < local_size)
    rows = tf.gather(flat, tf.clip_by_value(picks, 0, local_size - 1))
    return sum_across_replicas(tf.where(held[:, None], rows, tf.zeros_like(rows)))


def kmeans_plus_plus(flat, num_clusters, seed):
    """k-means++ seeding: K rows of ``flat``, each drawn with probability ∝ D².

    D is a row's distance to the nearest centre chosen so far (Arthur and
    Vassilvitskii, 2007); the first centre is uniform. Rows already chosen
    have D = 0 and are not drawn again unless every row is (then the draw
    is uniform).
    """
    # NB: written so XLA compiles it inside the training step's tf.cond
    # (TF 2.21 crashes compiling the stateless_split + dynamic-index form):
    # the i-th draw's seed is (seed[0], seed[1] + i), rows are gathered.
    n = tf.shape(flat)[0]
    first = tf.random.stateless_uniform([], seed, maxval=n, dtype=tf.int32)
    centre = tf.gather(flat, first)
    centroids = tf.tensor_scatter_nd_update(
        tf.zeros([num_clusters, tf.shape(flat)[1]], flat.dtype), [[0]], centre[None]
    )
    nearest = tf.reduce_sum(tf.square(flat - centre), axis=1)  # D² per row, (N,)

    def draw(i, centroids, nearest):
        weights = tf.where(tf.reduce_sum(nearest) > 0, nearest, tf.ones_like(nearest))
        pick = tf.random.stateless_categorical(
            tf.math.log(weights)[None], 1, tf.stack([seed[0], seed[1] + i]), dtype=tf.int32
        )[0, 0]
        centre = tf.gather(flat, pick)
        centroids = tf.tensor_scatter_nd_update(centroids, [[i]], centre[None])
        nearest = tf.minimum(nearest, tf.reduce_sum(tf.square(flat - centre), axis=1))
        return i + 1, centroids, nearest

    _, centroids, _ = tf.while_loop(
        lambda i, *_: i < num_clusters,
        draw,
        (tf.constant(1), centroids, nearest),
        maximum_iterations=num_clusters - 1,
    )
    return centroids


def kmeans(flat, num_clusters, iterations, seed):
    """Runs Lloyd's algorithm on ``flat`` (N, D) and returns (centroids, counts).

    Seeded with k-means++. A cluster that ends an iteration empty keeps its
    centroid. Purely local: under a strategy, pass the gathered global batch.

    Args:
        flat: float32 (N, D).
        num_clusters: K.
        iterations: number of assign/update rounds.
        seed: int32 (2,) stateless seed.

    Returns:
        centroids (K, D) float32 and the counts (K,) of the final assignment.
    """
    centroids = kmeans_plus_plus(flat, num_clusters, seed)
    counts = tf.zeros([num_clusters], tf.float32)
    for _ in range(iterations):
        assignment = nearest_code(flat, centroids)
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(assignment, tf.float32), assignment, num_clusters
        )
        sums = tf.math.unsorted_segment_sum(flat, assignment, num_clusters)
        centroids = tf.where(
            counts[:, None] > 0,
            sums / tf.maximum(counts, 1.0)[:, None],
            centroids,
        )
    return centroids, counts
