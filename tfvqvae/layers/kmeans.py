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

    Their float32 rounding error is about 2⁻²⁴ · √D · ‖z‖ ‖e‖ (D instead of
    √D at worst), so `nearest_code` passes both sides centred on the
    codebook mean.
    """
    return tf.nn.bias_add(
        tf.matmul(flat, -2.0 * codebook, transpose_b=True),
        tf.reduce_sum(tf.square(codebook), axis=1),
    )


def nearest_code(flat, codebook, block_rows=None):
    """Index of the nearest codebook row for each row of ``flat``.

    k = argmin_j ‖z − e_j‖² in two stages (equal fast scores, e.g. duplicate
    codes, go to the lowest index; other exact ties keep the fast choice):

    1. Fast scores: `code_scores` of z − μ and e − μ, where μ is the
       codebook mean (float32). Subtracting the same vector from both sides
       leaves every distance unchanged but removes the cancellation of
       ‖e‖² − 2 z·e when z and e lie far from the origin compared with the
       codebook's spread. One (N, D) x (D, K) matmul with a fused bias.
    2. Exact choice between the two best fast scores (argmin; argmin with
       the first masked): with u = e − z, their distances differ by
       ‖u_2‖² − ‖u_1‖² = (e_2 − e_1) · (u_2 + u_1), computed from the
       original values. Its float32 error is a few 2⁻²⁴ relative to
       ‖e_2 − e_1‖ ‖u_2 + u_1‖, so the sign, and with it the choice, is
       exact unless the two codes are that close to equidistant.

    The result equals the float64 argmin whenever the nearest code is among
    the two best fast scores, which holds unless two or more other codes
    lie within the fast scores' rounding of the nearest (about
    2⁻²⁴ · √D · ‖z − μ‖ ‖e − μ‖): whatever the offset of z and e from the
    origin and the norm of z − μ, and for pairs of near-duplicate codes,
    but not, for example, for three or more near-duplicates (closer to each
    other than that rounding) far from μ. Rows holding NaN get a valid
    index.

    Args:
        flat: float32 tensor (N, D).
        codebook: float32 tensor (K, D).
        block_rows: None (the default) computes the (N, K) scores in one
            matmul: the plain graph that TFLite and ONNX convert (built-in
            ops: MatMul, BiasAdd, ArgMin, Max, SelectV2, GatherV2, Sum). An
            int processes ``flat`` in blocks of that many rows when N is
            larger (a `tf.while_loop`; the last block is zero-padded), so
            only a (block_rows, K) block of scores exists at a time: the
            2 GiB of scores at N = 65536, K = 8192 become 16 MiB blocks with
            ``block_rows = BLOCK_ELEMENTS // K``, small enough for the
            last-level cache (about 20 % faster on CPU at that shape). Both
            forms choose between the same two codes with the same
            arithmetic.

    Returns:
        int32 tensor (N,). `tf.argmin` with int32 output, which TFLite and
        ONNX convert (`keras.ops.argmin` does not).
    """
    centre = tf.reduce_mean(codebook, axis=0)  # μ, (D,)
    centred = codebook - centre  # (K, D)

    def nearest(rows):
        return _rerank(rows, codebook, code_scores(rows - centre, centred))

    if block_rows is None:
        return nearest(flat)
    block_rows = int(block_rows)
    rows = flat.shape[0]
    if rows is not None and rows <= block_rows:
        return nearest(flat)
    if rows is not None:
        return _in_blocks(nearest, flat, block_rows)
    return tf.cond(
        tf.shape(flat)[0] > block_rows,
        lambda: _in_blocks(nearest, flat, block_rows),
        lambda: nearest(flat),
    )


def _rerank(flat, codebook, scores):
    """Exact choice between the two best ``scores`` (see `nearest_code`)."""
    first = tf.argmin(scores, axis=1, output_type=tf.int32)  # (N,)
    num_codes = codebook.shape[0]
    if num_codes == 1:
        return first
    # The runner-up: argmin again with the first pick masked by the row's
    # worst score (not inf, which would wreck the int8 TFLite ranges; one
    # more argmin pass is cheaper on CPU than `tf.math.top_k`, which made
    # the EMA training step at N = 65536, K = 512 about 2.5x slower). It
    # comes back equal to ``first`` only when every other code has the
    # worst score, and then ``first`` is 0: code 1 is a runner-up.
    worst = tf.reduce_max(scores, axis=1, keepdims=True)
    masked = tf.where(tf.range(num_codes) == first[:, None], worst, scores)
    second = tf.argmin(masked, axis=1, output_type=tf.int32)
    second = tf.where(tf.equal(second, first), first + 1, second)
    codes = tf.gather(codebook, tf.stack([first, second], axis=1))  # (N, 2, D)
    offsets = codes - flat[:, None, :]  # u = e − z
    # ‖u_2‖² − ‖u_1‖² = (e_2 − e_1) · (u_2 + u_1), without cancellation.
    excess = tf.reduce_sum(
        (codes[:, 1] - codes[:, 0]) * (offsets[:, 1] + offsets[:, 0]), axis=1
    )
    # The runner-up only when strictly nearer: exact ties (duplicate codes
    # tie in the fast scores too) keep argmin's lowest index, an int8 TFLite
    # excess rounded to 0 keeps the fast choice, a NaN row keeps ``first``.
    return tf.where(excess < 0.0, second, first)


def _in_blocks(nearest, flat, block_rows):
    """``nearest`` over blocks of ``block_rows`` rows (last block zero-padded)."""
    n = tf.shape(flat)[0]
    num_blocks = (n + block_rows - 1) // block_rows
    # At least one block of rows even when N = 0: XLA compiles this branch of
    # the caller's tf.cond for every N and needs the slice to fit.
    padded = tf.pad(flat, [[0, tf.maximum(num_blocks, 1) * block_rows - n], [0, 0]])

    def body(i, out):
        block = tf.slice(padded, tf.stack([i * block_rows, 0]), [block_rows, -1])
        return i + 1, out.write(i, nearest(block))

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
