"""The exported functions, shared by every format: named inputs and outputs.

With B the (dynamic) batch size, (H, W, C) the run's image shape and (h, w)
each level's code map (``model.code_shapes((H, W))``)::

    encode       images float32 (B, H, W, C)            -> <level>_codes int32 (B, h, w)
    decode       <level>_codes int32 (B, h, w)           -> images float32 (B, H, W, C)

A level with a depth axis (``model.level_code_depths``: Q codes per position,
a residual or grouped quantiser) has codes int32 (B, h, w, Q) instead, in and
out; the checks below apply to every one of its B·h·w·Q codes.
    reconstruct  images float32 (B, H, W, C)            -> reconstructions float32 (B, H, W, C)
    sample       seed int64 (), temperature float32 (),
                 labels int32 (B,)  or  num_samples int32 ()
                                                         -> <level>_codes int32, images float32

``<level>`` is every level of the model, top first (the levels API:
``model.levels``): ``top`` for a VQVAE, ``top``, ``bottom`` for a VQVAE2,
``top``, ``middle``, ``bottom`` for a three-level `HierarchicalVQVAE`, and
so on (`tfvqvae.models.level_names`). Images are float32 in [0, 1]; the images that
come out are the decoder's output, not clipped (as ``model.decode``).

Checks inside the graphs. Each input's height, width and channels are
checked at run time (a signature called from Python accepts any shape
otherwise). A code outside [0, K) fails the ``decode`` call, never silently:
the SavedModel raises InvalidArgumentError "<level>_codes must lie in
[0, K)"; the TFLite and ONNX converters drop assertions, so the graph also
replaces every out-of-range code by K before the codebook lookup, and the
lookup (TFLite GATHER, onnxruntime Gather) fails on it. Without that step
ONNX would wrap negative codes around (Gather accepts -K..-1).

Input contracts, each an assertion in the SavedModel (InvalidArgumentError
with the message quoted):

* ``encode`` / ``reconstruct``: "images must hold at least one image
  (batch >= 1)"; "images must be finite (no NaN or Inf)". Values are not
  range-checked: images in [0, 255] give codes and images silently, as in
  any graph (the Python API refuses them).
* ``decode``: "<level>_codes must hold at least one code map (batch >= 1)";
  the code range, as above.
* ``sample``: "temperature must be positive and finite"; "labels must hold
  at least one label (one sample each)"; "labels must lie in [0, N)";
  "num_samples must be positive".

The TFLite and ONNX converters drop these assertions: there an empty batch
fails inside the runtime (an error of LiteRT / onnxruntime, not this
message; an int16x8 TFLite file returns empty outputs instead), and NaN / Inf pixels are NOT detected: ``encode`` returns in-range
codes chosen by the runtime's arg-min over NaN distances and ``reconstruct``
returns the (finite) images decoded from them, silently. Check
``np.isfinite(images).all()`` before calling a converted model.

``sample`` (SavedModel only) runs the library's one hierarchical sampler,
`tfvqvae.models.sampling.levels_sampler` (naive or cached), the graph twin of
`sample_levels` that ``tfvqvae sample`` runs: every level top first, each
level below the top given the codes just drawn for the level directly above,
level k with seed ``seed + 1000 * k``. The same seed and temperature give the
same codes and images as in Keras.
"""

import tensorflow as tf

from tfvqvae.models import sampling

# Seed of level i is seed + LEVEL_SEED_STRIDE * i (`sampling.sample_levels`).
LEVEL_SEED_STRIDE = sampling.LEVEL_SEED_STRIDE

SAMPLE_METHODS = ("cached", "naive")


def code_name(level):
    """The input / output name of a level's codes: ``<level>_codes``."""
    return f"{level}_codes"


def image_spec(image_shape, name="images"):
    """TensorSpec (None, H, W, C) float32 of the image inputs."""
    return tf.TensorSpec([None, *image_shape], tf.float32, name=name)


def code_specs(model, image_shape):
    """[TensorSpec (None, h, w) int32] of each level's codes, top first ((None, h, w, Q)
    for a level with a depth axis)."""
    shapes = model.code_shapes(tuple(image_shape[:2]))
    return [
        tf.TensorSpec([None, *shapes[level]], tf.int32, name=code_name(level))
        for level in model.levels
    ]


def _checked_shape(tensor, expected, name):
    """``tensor`` once its shape after the batch axis is ``expected`` (checked at run time)."""
    expected = [int(size) for size in expected]
    shape_text = ", ".join(["batch", *map(str, expected)])
    check = tf.debugging.assert_equal(
        tf.shape(tensor)[1:],
        tf.constant(expected, tf.int32),
        message=f"{name} must have shape ({shape_text})",
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _non_empty(tensor, message):
    """``tensor`` once its batch axis holds at least one element (checked at run time)."""
    check = tf.debugging.assert_positive(tf.shape(tensor)[0], message=message)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _checked_images(images, image_shape):
    """Images checked for shape, a batch of at least one, and finite values."""
    images = _checked_shape(images, image_shape, "images")
    images = _non_empty(images, "images must hold at least one image (batch >= 1)")
    # NB: tf.debugging.Assert (not check_numerics, which TFLite has no kernel
    # for): the converters drop it, as the other assertions.
    finite = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(images)),
        ["images must be finite (no NaN or Inf). Received non-finite values:",
         tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(images)), tf.int32))],
    )
    with tf.control_dependencies([finite]):
        return tf.identity(images)


def _guarded_codes(codes, num_embeddings, name, tflite_only=False):
    """Codes checked to lie in [0, K); any that do not become K (see the module docstring).

    With ``tflite_only`` they are clipped to [-1, K] instead (MAXIMUM / MINIMUM:
    TFLite's 16x8 calibrator refuses SELECT_V2 on int32 codes); LiteRT's
    GATHER fails on -1 and on K alike, but onnxruntime's would wrap -1 round,
    so only sources converted to TFLite alone take this form.
    """
    valid = (codes >= 0) & (codes < num_embeddings)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [f"{name} must lie in [0, {num_embeddings}). Received min and max:",
         tf.reduce_min(codes), tf.reduce_max(codes)],
    )
    with tf.control_dependencies([check]):
        if tflite_only:
            return tf.minimum(tf.maximum(codes, -1), num_embeddings)
        # NB: not a clip. K is out of range for every runtime's gather, so a
        # converted graph (whose assertion was dropped) fails too.
        return tf.where(valid, codes, tf.constant(num_embeddings, codes.dtype))


def make_encode(model, image_shape):
    """encode(images) -> {<level>_codes: int32 (B, h, w) or (B, h, w, Q)}."""

    def encode(images):
        images = _checked_images(images, image_shape)
        codes = model.encode_levels(images)
        return {code_name(level): codes[level] for level in model.levels}

    return encode, [image_spec(image_shape)]


def make_decode(model, image_shape, tflite_only=False):
    """decode(<level>_codes, ...) -> {images: float32 (B, H, W, C)}.

    Each input is int32 (B, h, w), or (B, h, w, Q) for a level with a depth
    axis; its shape after the batch axis and the range of every code are
    checked (the module docstring).

    ``tflite_only``: the out-of-range guard for graphs converted to TFLite
    alone (`_guarded_codes`).
    """
    specs = code_specs(model, image_shape)
    num_embeddings = model.level_num_embeddings

    def decode(*codes):
        batch = tf.shape(codes[0])[0]
        checked = {}
        for level, spec, level_codes in zip(model.levels, specs, codes):
            name = code_name(level)
            level_codes = _checked_shape(level_codes, spec.shape[1:], name)
            level_codes = _non_empty(
                level_codes, f"{name} must hold at least one code map (batch >= 1)"
            )
            if len(codes) > 1:
                same_batch = tf.debugging.assert_equal(
                    tf.shape(level_codes)[0], batch,
                    message="All code maps must have the same batch size",
                )
                with tf.control_dependencies([same_batch]):
                    level_codes = tf.identity(level_codes)
            checked[level] = _guarded_codes(level_codes, num_embeddings[level], name,
                                            tflite_only)
        return {"images": model.decode_levels(checked)}

    return decode, specs


def make_reconstruct(model, image_shape):
    """reconstruct(images) -> {reconstructions: float32}: decode(encode(images))."""

    def reconstruct(images):
        images = _checked_images(images, image_shape)
        return {"reconstructions": model.decode_levels(model.encode_levels(images))}

    return reconstruct, [image_spec(image_shape)]


def check_tflite_mode(model, mode):
    """Refuses a quantised TFLite mode with a re-built search for a model with a depth level.

    The int8 and int16x8 files convert from a SavedModel whose nearest-code
    search is rebuilt for quantisation (`tfvqvae.export.quantized_search`,
    ``SEARCH_FOR_MODE``); that search reads one (K, D) codebook per level and
    has no residual or grouped form yet. float32 and dynamic_range use the
    exact search and take every model.

    Args:
        model: the model to export.
        mode: a TFLite mode ("float32", "dynamic_range", "int8", "int16x8").

    Raises:
        ValueError: ``mode`` needs the rebuilt search and a level of
            ``model`` has a depth axis (one line naming the mode, the level
            and its depth).
    """
    from tfvqvae.export.tflite import SEARCH_FOR_MODE

    if SEARCH_FOR_MODE.get(mode) is None:
        return
    depths = getattr(model, "level_code_depths", {})
    for level, depth in depths.items():
        if depth is not None:
            raise ValueError(
                f"TFLite {mode} export does not support codes with a depth axis yet: level "
                f"{level!r} has {depth} codes per position (a residual or grouped quantizer); "
                f"export float32 or dynamic_range. Received: tflite mode {mode!r}"
            )


def sample_num_classes(priors):
    """The number of classes the priors are conditioned on, or None."""
    counts = {prior.num_classes for prior in priors.values()} - {None}
    if len(counts) > 1:
        raise ValueError(
            f"The priors are conditioned on different numbers of classes: {sorted(counts)}"
        )
    return counts.pop() if counts else None


def make_sample(model, priors, method="cached"):
    """sample(seed, temperature, labels | num_samples) -> codes of every level and images.

    Args:
        model: the VQVAE / VQVAE2 / HierarchicalVQVAE.
        priors: {level: PixelCNNPrior} for every level of ``model``: a chain
            (`sampling.check_chain`), the top prior unconditioned and each
            lower one conditioned on the level directly above.
        method: "cached" or "naive": which sampler runs inside the graph
            (both give the same codes). Defaults to "cached".

    Raises:
        ValueError: an unknown method, a level without a prior, or priors
            that do not form a chain.
    """
    if method not in SAMPLE_METHODS:
        raise ValueError(f"`method` must be 'cached' or 'naive'. Received: method={method!r}")
    missing = [level for level in model.levels if level not in priors]
    if missing:
        raise ValueError(f"The sample signature needs a prior for every level; missing: {missing}")
    chain = {level: priors[level] for level in model.levels}  # top first
    sampling.check_chain(chain)  # refused here, not while tracing
    num_classes = sample_num_classes(chain)
    empty = tf.zeros([0], tf.int32)

    def draw(seed, temperature, labels, batch):
        # NB: assert_positive alone lets Inf through.
        valid = tf.debugging.Assert(
            tf.math.is_finite(temperature) & (temperature > 0.0),
            ["temperature must be positive and finite. Received: temperature =",
             temperature],
        )
        with tf.control_dependencies([valid]):
            temperature = tf.identity(temperature)
        codes = sampling.levels_sampler(chain, batch, method)(labels, temperature, seed)
        outputs = {code_name(level): codes[level] for level in model.levels}
        outputs["images"] = model.decode_levels(codes)
        return outputs

    scalars = [
        tf.TensorSpec([], tf.int64, name="seed"),
        tf.TensorSpec([], tf.float32, name="temperature"),
    ]
    if num_classes is not None:

        def sample(seed, temperature, labels):
            message = f"labels must lie in [0, {num_classes})"
            in_range = [
                tf.debugging.assert_positive(
                    tf.size(labels),
                    message="labels must hold at least one label (one sample each)",
                ),
                tf.debugging.assert_non_negative(labels, message=message),
                tf.debugging.assert_less(labels, num_classes, message=message),
            ]
            with tf.control_dependencies(in_range):
                labels = tf.identity(labels)
            return draw(seed, temperature, labels, tf.shape(labels)[0])

        return sample, [*scalars, tf.TensorSpec([None], tf.int32, name="labels")]

    def sample(seed, temperature, num_samples):
        positive = tf.debugging.assert_positive(
            num_samples, message="num_samples must be positive"
        )
        with tf.control_dependencies([positive]):
            num_samples = tf.identity(num_samples)
        return draw(seed, temperature, empty, num_samples)

    return sample, [*scalars, tf.TensorSpec([], tf.int32, name="num_samples")]
