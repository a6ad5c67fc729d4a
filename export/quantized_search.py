"""Nearest-code searches that survive TFLite quantisation (the quantised sources).

The exact search of `tfvqvae.layers.kmeans.nearest_code` (centred scores,
the two best re-ranked by their exact distance difference) is what the
SavedModel, TFLite float32 and ONNX run. Quantised TFLite gives every tensor
one scale, so its TFLite files are converted from a second SavedModel whose
``encode`` / ``reconstruct`` pick codes with a search built for that
(``SEARCH_FOR_MODE`` in `tfvqvae.export.tflite`):

``"scores"``: one matmul and an arg-max,

    k = argmax_j  (z − μ)·(e_j − μ) − ½‖e_j − μ‖²

(= argmin ‖z − e_j‖², μ the codebook mean; no gather of dynamic shape, which
the 16x8 calibrator refuses).

``"window"`` (int8): the scores shifted per position so that the best lies
just below a fixed window T, and clamped at 0:

    o_j = relu(T + (z − μ)·(e_j − μ) − ½‖e_j − μ‖² − ½‖z − μ‖²)
        = relu(T − ½‖z − e_j‖²)

computed as ONE fully connected layer on [z − μ, n/G, …, n/G] (n = ½‖z − μ‖²
split over G = 4 equal channels, which keeps the concatenation's int8 scale
near that of z − μ; of G = 1, 2, 4, 8 tried on the quick-start, MNIST and
CIFAR-10 runs, 4 was best or within a point of it) with weights
[e_j − μ, −1, …, −1]. Its int32 accumulator holds the exact
score; the requantised int8 output covers [0, T] instead of the whole range
of −½‖z − e_j‖² over all codes, so its step is T / 255 instead of
max ½‖z − e‖² / 255 (on the MNIST preset run: 20 / 255 instead of 208 / 255).
An error in n shifts every code of a position alike and leaves the arg-max
unchanged. T is 1.25 × the largest ½‖z − e_k‖² of the nearest codes over the
calibration images (`window_for`); a position whose every o_j is 0 (farther
than T from every code) takes the arg-max of the plain scores instead.

n is a matmul of (z − μ)² with a constant column (`half_squared_norm`), not
a ``reduce_sum``: TFLite's 16-bit SUM keeps its input's scale, so a sum of D
squares saturates at the largest single square; n then came out too small for
the positions farthest from μ, and their o_j saturated at the top of the
window (ties). The fully connected output has a scale of its own. The int8
SUM is requantised, but the matmul rounds n once instead of three times
(square, sum, halve) and kept more codes there too: 83.9 → 87.1 % on the
MNIST preset run (snapped).

``"split_window"`` (int16x8): the window in units of c = max|e − μ|, with
the codebook split so that the int8 weights hold it to 1 / 16 000 of c
instead of 1 / 254:

    v_j = (e_j − μ) / c,  hi_j = round(127 v_j) / 127,  lo_j = v_j − hi_j
    weights  [hi_j, R·lo_j, −1, …, −1]     (|hi| ≤ 1, |R·lo| ≤ R / 254 < 1)
    inputs   [z − μ, (z − μ) / R, n / (cG), …, n / (cG)]
    o_j = relu(T / c − ½‖z − e_j‖² / c)

Every row's largest |weight| is the 1 of the norm channels, so TFLite's
per-row int8 scale is 1 / 127 and hi and −1 are stored exactly; R·lo is
rounded to that step, an error of 1 / (254 R) in lo. R = 64
(`RESIDUAL_SCALE`): the residual input (z − μ) / R shares the concatenation's
scale, so a larger R rounds it more (in a probe on the MNIST preset run,
R = 16, 128 and 250 kept fewer codes than 64). G = ⌈max n / (c·max|z − μ|)⌉
over the calibration images (`norm_channels_for`) keeps the norm channels
inside the concatenation's range. With int16 activations the output step is
T / 32 767, and the plain window's int8 codebook (1 / 254 of a row) was the
limit: on the MNIST preset run int16x8 kept 96.8 % with "window", 98.2 %
with "scores" and 98.5 % with this search, as much as the exact search on
the int16 encoder's output (98.5 %); with snapped kernels 99.88 % against
99.96 % (bench/RESULTS.md section ``int8``). For int8 the better search
depends on the run (split_window: 93.9 / 82.2 / 82.9 %, window: 89.4 / 86.8 /
78.9 % on the quick-start, MNIST and CIFAR-10 runs); int8 keeps "window".

What limits the int8 file is mostly not the search: with the exact search run
in float on the int8 encoder's output, int8 kept 92.8 % and dynamic range
97.5 % of the MNIST preset's codes (bench/RESULTS.md section ``int8``). The
int8 weights and activations of the encoder move z across decision
boundaries; int16 activations move 0.04 % of them (snapped MNIST preset).
"""

import contextlib

import numpy as np
import tensorflow as tf

from tfvqvae.layers.vector_quantizer import VectorQuantizer

SEARCHES = ("scores", "window", "split_window")
# G, the channels that carry ½‖z − μ‖² in the "window" search.
NORM_CHANNELS = 4
# R, the factor between the residual codebook channel and its input in "split_window".
RESIDUAL_SCALE = 64.0
# TFLite's symmetric int8 weights: q = round(w / s), s = max|w_row| / 127.
_INT8_STEPS = 127
# T = WINDOW_MARGIN · max over the calibration positions of ½‖z − e_nearest‖².
WINDOW_MARGIN = 1.25


def has_plain_codebook(quantizer):
    """True when ``indices`` is the Euclidean nearest row of ``quantizer.codebook``.

    A `VectorQuantizer` / `VectorQuantizerEMA` without cosine similarity or a
    ``codebook_dim`` of its own. Other quantisers (FSQ, LFQ, residual,
    grouped, cosine, projected codebooks) keep their own search in every
    export (`quantization_search` leaves them alone).
    """
    return (isinstance(quantizer, VectorQuantizer)
            and not getattr(quantizer, "use_cosine_similarity", False)
            and getattr(quantizer, "codebook_dim", quantizer.embedding_dim)
            == quantizer.embedding_dim)


def _centred_codebook(quantizer):
    codebook = np.asarray(quantizer.codebook, np.float64)
    centre = codebook.mean(axis=0)
    return centre, codebook - centre


def scores_search(quantizer):
    """``indices(inputs)`` by the plain scores' arg-max (see the module docstring)."""
    centre, centred = _centred_codebook(quantizer)
    dim = quantizer.embedding_dim
    mu = tf.constant(centre, tf.float32)
    # (K, D) with transpose_b: TFLite's FULLY_CONNECTED layout, quantised per code.
    weights = tf.constant(centred, tf.float32)
    bias = tf.constant(-0.5 * np.sum(centred**2, axis=1), tf.float32)

    def indices(inputs):
        z = tf.cast(inputs, tf.float32)
        flat = tf.reshape(z, [-1, dim]) - mu
        scores = tf.matmul(flat, weights, transpose_b=True) + bias
        return tf.reshape(tf.argmax(scores, axis=1, output_type=tf.int32), tf.shape(z)[:-1])

    return indices


def half_squared_norm(flat, scale=1.0):
    """``scale`` · ½‖x‖² of each row of ``flat`` (N, D) -> (N, 1), as one matmul.

    A matmul of x² with a constant column (a FULLY_CONNECTED op in TFLite),
    not ``tf.reduce_sum``: TFLite's quantised SUM gives its output its input's
    scale, so a sum of D squares saturates (module docstring).
    """
    dim = flat.shape[-1]
    column = tf.constant(np.full((dim, 1), 0.5 * scale), tf.float32)
    return tf.matmul(flat * flat, column)


def window_search(quantizer, window, norm_channels=NORM_CHANNELS):
    """``indices(inputs)`` by the clamped, shifted scores (see the module docstring).

    Args:
        quantizer: the level's `VectorQuantizer` / `VectorQuantizerEMA`.
        window: T > 0, in units of squared distance / 2.
        norm_channels: G ≥ 1, channels that carry ½‖z − μ‖² / G each.
            Defaults to `NORM_CHANNELS`.
    """
    if not (np.isfinite(window) and window > 0):
        raise ValueError(f"The search window must be positive and finite. Received: {window!r}")
    centre, centred = _centred_codebook(quantizer)
    groups = int(norm_channels)
    augmented = np.concatenate([centred, -np.ones((len(centred), groups))], axis=1)
    half_norms = 0.5 * np.sum(centred**2, axis=1)

    def layer_input(flat):  # (N, D + G), as the weights' rows (K, D + G)
        return tf.concat([flat] + [half_squared_norm(flat, 1.0 / groups)] * groups, 1)

    return _window_indices(centre, centred, layer_input, augmented, window - half_norms)


def _unit_scale(centred):
    """c = max|e − μ| of a centred codebook, 1 for a codebook of one point."""
    largest = float(np.abs(centred).max())
    return largest if largest > 0.0 else 1.0


def _calibration_vectors(vectors, what):
    """``vectors`` as float64 (N, D), N ≥ 1, all finite; else a ValueError naming ``what``."""
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or len(vectors) == 0 or not np.isfinite(vectors).all():
        raise ValueError(
            f"{what} needs finite encoder outputs of at least one calibration image. "
            f"Received: shape {vectors.shape}")
    return vectors


def split_codebook(quantizer, residual_scale=RESIDUAL_SCALE):
    """(c, hi, lo) of the "split_window" search (module docstring).

    c = max|e − μ| (1 for a codebook of one point), v = (e − μ) / c,
    hi = round(127 v) / 127 (on TFLite's int8 grid of step 1 / 127), lo = v − hi
    (|lo| ≤ 1 / 254). hi and lo are float64 (K, D); hi + lo = v.
    """
    if not (np.isfinite(residual_scale) and 1.0 <= residual_scale < 2 * _INT8_STEPS):
        raise ValueError("The residual scale R must lie in [1, 254) so that |R·lo| < 1. "
                         f"Received: {residual_scale!r}")
    _, centred = _centred_codebook(quantizer)
    scale = _unit_scale(centred)
    unit = centred / scale
    hi = np.round(_INT8_STEPS * unit) / _INT8_STEPS
    return scale, hi, unit - hi


def norm_channels_for(quantizer, vectors):
    """G of the "split_window" search: ⌈max n / (c · max|z − μ|)⌉, at least 1.

    n = ½‖z − μ‖² over the calibration vectors ``vectors`` (float (N, D));
    c as in `split_codebook`. The G norm channels n / (cG) then stay inside
    the range of z − μ, which sets the concatenation's scale.
    """
    vectors = _calibration_vectors(vectors, "The norm channels")
    centre, centred = _centred_codebook(quantizer)
    scale = _unit_scale(centred)
    flat = vectors - centre
    largest = float(np.abs(flat).max())
    if largest == 0.0:
        return 1
    half_norm = 0.5 * float(np.max(np.sum(flat**2, axis=1)))
    return max(1, int(np.ceil(half_norm / (scale * largest))))


def split_window_search(quantizer, window, norm_channels, residual_scale=RESIDUAL_SCALE):
    """``indices(inputs)`` by the split-codebook window (see the module docstring).

    Args:
        quantizer: the level's `VectorQuantizer` / `VectorQuantizerEMA`.
        window: T > 0, in units of squared distance / 2 (`window_for`).
        norm_channels: G ≥ 1 (`norm_channels_for`).
        residual_scale: R in [1, 254). Defaults to `RESIDUAL_SCALE`.

    Raises:
        ValueError: a window that is not positive and finite, or R out of range.
    """
    if not (np.isfinite(window) and window > 0):
        raise ValueError(f"The search window must be positive and finite. Received: {window!r}")
    centre, centred = _centred_codebook(quantizer)
    scale, hi, lo = split_codebook(quantizer, residual_scale)
    groups = int(norm_channels)
    # (K, 2D + G): the largest |weight| of every row is 1 (the norm channels).
    weights = np.concatenate([hi, residual_scale * lo, -np.ones((len(centred), groups))], axis=1)
    half_norms = 0.5 * np.sum(centred**2, axis=1)

    def layer_input(flat):  # (N, 2D + G)
        share = half_squared_norm(flat, 1.0 / (scale * groups))
        return tf.concat([flat, flat / residual_scale] + [share] * groups, 1)

    return _window_indices(centre, centred, layer_input, weights, (window - half_norms) / scale)


def _window_indices(centre, centred, layer_input, weights, bias):
    """``indices(inputs)`` of a window search (module docstring).

    The arg-max of o = relu(layer_input(z − μ) · weightsᵀ + bias), one fully
    connected layer; a position whose every o_j is 0 (farther than T from
    every code) takes the arg-max of the plain scores instead.
    """
    dim = centred.shape[1]
    mu = tf.constant(centre, tf.float32)
    weights = tf.constant(weights, tf.float32)  # (K, ·): TFLite's FULLY_CONNECTED layout
    bias = tf.constant(bias, tf.float32)
    plain_weights = tf.constant(centred, tf.float32)
    plain_bias = tf.constant(-0.5 * np.sum(centred**2, axis=1), tf.float32)

    def indices(inputs):
        z = tf.cast(inputs, tf.float32)
        flat = tf.reshape(z, [-1, dim]) - mu
        clamped = tf.nn.relu(tf.matmul(layer_input(flat), weights, transpose_b=True) + bias)
        best = tf.argmax(clamped, axis=1, output_type=tf.int32)
        plain = tf.argmax(tf.matmul(flat, plain_weights, transpose_b=True) + plain_bias,
                          axis=1, output_type=tf.int32)
        chosen = tf.where(tf.reduce_max(clamped, axis=1) > 0.0, best, plain)
        return tf.reshape(chosen, tf.shape(z)[:-1])

    return indices


def _encoder_outputs(model, images, quantizers, batch_size=64):
    """{level: float64 (N, D)} of the vectors ``quantizers`` ({level: quantiser}) receive."""
    captured = {level: [] for level in quantizers}
    originals = {level: q.indices for level, q in quantizers.items()}

    def recorder(level):
        def indices(inputs):
            captured[level].append(np.asarray(inputs, np.float64).reshape(
                -1, quantizers[level].embedding_dim))
            return originals[level](inputs)
        return indices

    try:
        for level, quantizer in quantizers.items():
            object.__setattr__(quantizer, "indices", recorder(level))
        for start in range(0, len(images), batch_size):
            model.encode_levels(tf.constant(images[start:start + batch_size], tf.float32))
    finally:
        for quantizer in quantizers.values():
            quantizer.__dict__.pop("indices", None)
    return {level: np.concatenate(parts) for level, parts in captured.items()}


def window_for(quantizer, vectors, margin=WINDOW_MARGIN):
    """T of the "window" search for a level, from its encoder outputs.

    T = ``margin`` · max_n ½‖z_n − e_nearest‖² (float, squared distance / 2).

    Args:
        quantizer: the level's quantiser.
        vectors: float (N, D) encoder outputs of calibration images, N ≥ 1.
        margin: > 1. Defaults to `WINDOW_MARGIN`.
    """
    vectors = _calibration_vectors(vectors, "The search window")
    centre, centred = _centred_codebook(quantizer)
    flat = vectors - centre
    nearest = np.full(len(flat), np.inf)
    for start in range(0, len(flat), 4096):
        block = flat[start:start + 4096]
        d = (np.sum(block**2, 1)[:, None] - 2.0 * block @ centred.T
             + np.sum(centred**2, 1)[None, :])
        nearest[start:start + 4096] = np.maximum(d.min(axis=1), 0.0)
    window = margin * 0.5 * float(nearest.max())
    if window <= 0.0:  # every vector on a code: any positive window separates them
        window = margin * 0.5 * float(np.min(np.sum(centred**2, 1)[np.sum(centred**2, 1) > 0],
                                             initial=1.0))
    return window


@contextlib.contextmanager
def quantization_search(model, search, calibration_images=None):
    """Inside the block, the model's quantisers pick codes with ``search``.

    Used while tracing the quantised TFLite source (`tfvqvae.export.tflite`);
    each quantiser's own ``indices`` is back when the block ends. Levels whose
    quantiser has no plain codebook (`has_plain_codebook`) keep their own search.

    Args:
        model: a `VQVAE`, `VQVAE2` or `HierarchicalVQVAE`.
        search: "scores", "window" or "split_window" (module docstring).
        calibration_images: float32 (N, H, W, C) in [0, 1]; required for
            "window" and "split_window" (they set each level's T and G).

    Raises:
        ValueError: an unknown search, or a window search without images.
    """
    if search not in SEARCHES:
        raise ValueError(f"`search` must be one of {SEARCHES}. Received: search={search!r}")
    quantizers = {level: q for level, q in model._level_quantizers().items()
                  if has_plain_codebook(q)}
    if search in ("window", "split_window"):
        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError(f"The {search!r} search needs calibration images.")
        vectors = _encoder_outputs(model, np.asarray(calibration_images, np.float32),
                                   quantizers)

        def build(quantizer, level_vectors):
            window = window_for(quantizer, level_vectors)
            if search == "window":
                return window_search(quantizer, window)
            return split_window_search(quantizer, window,
                                       norm_channels_for(quantizer, level_vectors))

        searches = {level: build(q, vectors[level]) for level, q in quantizers.items()}
    else:
        searches = {level: scores_search(q) for level, q in quantizers.items()}
    try:
        for level, quantizer in quantizers.items():
            # An instance attribute shadows the method for this block only
            # (object.__setattr__: not tracked by Keras).
            object.__setattr__(quantizer, "indices", searches[level])
        yield
    finally:
        for quantizer in quantizers.values():
            quantizer.__dict__.pop("indices", None)
