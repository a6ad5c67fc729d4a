"""Nearest-code search, row sampling and Lloyd's k-means for the quantisers."""

import tensorflow as tf

from tfvqvae.layers.cross_replica import replica_row_range
from tfvqvae.layers.cross_replica import sum_across_replicas


# Distance-block size for `nearest_code(..., block_rows=...)`: 2**22 float32
# scores (16 MiB), i.e. 512 rows of a K = 8192 codebook, 8192 rows of K = 512.
BLOCK_ELEMENTS = 1 << 22
# Blocks in flight at once (the while loop's parallel_iterations).
PARALLEL_BLOCKS = 2


def code_scores(flat, codebook):
    """‖e‖² − 2 z·e for every row of ``flat`` and every code: (N, K) float32.

    These are the squared distances less ‖z‖², which is the same for every
    code in a row and so never changes the argmin. Written as MatMul +
    BiasAdd with the −2 folded into the (K, D) codebook: grappler fuses the
    pair into one CPU kernel that adds ‖e‖² while it writes the product, so
    no elementwise pass runs over the (N, K) matrix. Multiplying by −2 is
    exact in floating point, so the scores are bit-for-bit those of
    ``‖e‖² − 2 · matmul(z, e)``.
    """
    return tf.nn.bias_add(
        tf.matmul(flat, -2.0 * codebook, transpose_b=True),
        tf.reduce_sum(tf.square(codebook), axis=1),
    )


def nearest_code(flat, codebook, block_rows=None):
    """Index of the nearest codebook row for each row of ``flat``.

    ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²; the argmin needs only ‖e‖² − 2 z·e
    (`code_scores`): one (N, D) x (D, K) matmul with a fused bias.

    Args:
        flat: float32 tensor (N, D).
        codebook: float32 tensor (K, D).
        block_rows: None (the default) computes the (N, K) scores in one
            matmul: the plain graph that TFLite and ONNX convert. An int
            processes ``flat`` in blocks of that many rows when N is larger
            (a `tf.while_loop`; the last block is zero-padded), so only a
            (block_rows, K) block of scores exists at a time: the 2 GiB of
            scores at N = 65536, K = 8192 become 16 MiB blocks with
            ``block_rows = BLOCK_ELEMENTS // K``, small enough for the
            last-level cache (about 20 % faster on CPU at that shape). A
            block's scores can differ from the one-matmul ones only by float32
            rounding, so the indices can differ only where two codes are that
            close to tied.

    Returns:
        int32 tensor (N,). `tf.argmin` with int32 output, which TFLite and
        ONNX convert (`keras.ops.argmin` does not).
    """
    if block_rows is None:
        scores = code_scores(flat, codebook)  # (N, K)
        return tf.argmin(scores, axis=-1, output_type=tf.int32)
    block_rows = int(block_rows)
    rows = flat.shape[0]
    if rows is not None and rows <= block_rows:
        return nearest_code(flat, codebook)
    if rows is not None:
        return _nearest_code_blocked(flat, codebook, block_rows)
    return tf.cond(
        tf.shape(flat)[0] > block_rows,
        lambda: _nearest_code_blocked(flat, codebook, block_rows),
        lambda: nearest_code(flat, codebook),
    )


def _nearest_code_blocked(flat, codebook, block_rows):
    """`nearest_code` over blocks of ``block_rows`` rows (last block zero-padded)."""
    n = tf.shape(flat)[0]
    num_blocks = (n + block_rows - 1) // block_rows
    # At least one block of rows even when N = 0: XLA compiles this branch of
    # the caller's tf.cond for every N and needs the slice to fit.
    padded = tf.pad(flat, [[0, tf.maximum(num_blocks, 1) * block_rows - n], [0, 0]])
    weights = -2.0 * codebook  # hoisted out of the loop; as in `code_scores`
    bias = tf.reduce_sum(tf.square(codebook), axis=1)

    def body(i, out):
        block = tf.slice(padded, tf.stack([i * block_rows, 0]), [block_rows, -1])
        scores = tf.nn.bias_add(tf.matmul(block, weights, transpose_b=True), bias)
        return i + 1, out.write(i, tf.argmin(scores, axis=-1, output_type=tf.int32))

    _, out = tf.while_loop(
        lambda i, _: i < num_blocks,
        body,
        (tf.constant(0), tf.TensorArray(tf.int32, num_blocks, element_shape=[block_rows])),
        parallel_iterations=PARALLEL_BLOCKS,
    )
    return tf.reshape(out.stack(), [-1])[:n]  # (num_blocks * block_rows,) -> (N,)


def segment_sum(values, indices, num_segments):
    """Sums of the rows of ``values`` (N, ...) grouped by ``indices`` (N,).

    The same numbers as `tf.math.unsorted_segment_sum` (both add the rows in
    index order; checked bit-for-bit on CPU and under XLA), written as
    `tf.scatter_nd`, whose CPU kernel is about twice as fast in a plain
    (non-XLA) graph. ``indices`` must lie in [0, num_segments) (argmin
    outputs do). Returns shape (num_segments,) + values.shape[1:].
    """
    shape = tf.concat([[num_segments], tf.shape(values)[1:]], axis=0)
    return tf.scatter_nd(indices[:, None], values, shape)


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
        counts = segment_sum(
            tf.ones_like(assignment, tf.float32), assignment, num_clusters
        )
        sums = segment_sum(flat, assignment, num_clusters)
        centroids = tf.where(
            counts[:, None] > 0,
            sums / tf.maximum(counts, 1.0)[:, None],
            centroids,
        )
    return centroids, counts
