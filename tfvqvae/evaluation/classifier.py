"""The fixed classifier of the Classification Accuracy Score (CAS).

CAS (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional
Generative Models", arXiv:1905.10887) trains a classifier on image-class pairs
drawn from a model and tests it on the real test set; VQ-VAE-2 (Razavi et al.
2019, Table 2) reports it for ImageNet samples. The comparison between rows
(real training data, reconstructions, samples of the priors) is only fair
with one classifier and one training budget for every row, so both are fixed
here:

Architecture (:func:`build_classifier`), a small ResNet (residual blocks
with post-activation, He et al. 2016), ``float32`` throughout whatever the
global dtype policy::

    input (H, W, C) in [0, 1]  ->  x * 2 - 1
    stem      3x3 conv, 32 filters, stride 1  -> BN -> ReLU        (H,   W)
    block 1   residual block, 32 filters, stride 2                  (H/2, W/2)
    block 2   residual block, 64 filters, stride 2                  (H/4, W/4)
    block 3   residual block, 128 filters, stride 2                 (H/8, W/8)
    global average pool -> dense(num_classes): logits

    residual block(f, s): 3x3 conv f stride s -> BN -> ReLU -> 3x3 conv f -> BN,
    plus a shortcut (1x1 conv f stride s -> BN when the shape changes, else
    the identity), summed, then ReLU. Convolutions have no bias ("same"
    padding, He-normal initialisation); the dense layer is Glorot-uniform
    with a zero bias. BatchNormalization uses momentum 0.9 (its moving
    statistics settle within ~50 steps, so short test budgets work too).

The spatial sizes round up ("same" padding), so any H, W >= 1 works; the
net is meant for 8 x 8 to 32 x 32 (MNIST, Fashion-MNIST, CIFAR-10 scale). It
has 310 570 weights for 1 channel and 10 classes (311 146 for 3 channels).
Every initialiser is seeded from ``seed``, so the same seed gives the same
weights.

Training budget (:func:`train_classifier`), the same for every row whatever
its number of examples: :data:`CAS_STEPS` = 800 Adam steps on batches of
:data:`CAS_BATCH_SIZE` = 128, learning rate :data:`CAS_LEARNING_RATE` = 2e-3
decayed to 0 on a cosine over the steps, softmax cross-entropy, no
augmentation, no weight decay, no label smoothing.

Measured on this project's 2-core CPU (no GPU; TensorFlow 2.21), cores
shared with other jobs (load 7-9) unless said otherwise:

* one step at 32 x 32 x 1, batch 128: 0.14 s wall on nearly idle cores
  (load 2.5); 0.21-0.24 s of CPU time (both threads together), 0.25 s wall
  under load. Building and tracing: ~5 s.
* real MNIST at 32 x 32, 10 000 class-balanced training images, the full
  10 000 test images, default budget: top-1 98.69 %, top-5 99.99 %; 171 s
  of CPU time, i.e. ~90-110 s wall on two idle cores (290 s wall measured
  under load ~9). Earlier trials (BN momentum 0.99, ~125 s of CPU time
  each): this net at 600 steps 98.53 %, a half-width net (16/16/32/64
  filters) at 1500 steps 98.52 %.
* real CIFAR-10 (the 20 000 local training images, first 1000 test images),
  10 000 class-balanced training images, default budget: top-1 56.6 %,
  top-5 95.1 % (± 1.6 points: 1000 test images); 174 s of CPU time. Same
  earlier trials: this net at 600 steps 58.6 %, the half-width net at 1500
  steps 52.2 %, hence the width.
"""

from __future__ import annotations

import numpy as np

from tfvqvae.validation import integer, non_negative_int, positive_int

__all__ = [
    "CAS_BATCH_SIZE",
    "CAS_LEARNING_RATE",
    "CAS_STEPS",
    "CAS_WIDTHS",
    "build_classifier",
    "check_labelled_images",
    "check_num_classes",
    "train_classifier",
]

#: Optimizer steps of one CAS training run, the same for every row.
CAS_STEPS = 800
#: Examples per step; every batch is full (epochs are chained, see
#: :func:`train_classifier`).
CAS_BATCH_SIZE = 128
#: Adam's initial learning rate, decayed to 0 on a cosine over the steps.
CAS_LEARNING_RATE = 2e-3
#: Filters of the stem and of the three residual blocks (strides 1, 2, 2, 2).
CAS_WIDTHS = (32, 32, 64, 128)

# Salt that keeps the initialisers' seeds apart from the shuffling RNG's.
_INIT_SALT = 0xC1A5
_SHUFFLE_SALT = 0x5EED


def check_num_classes(num_classes):
    """Returns ``num_classes`` if it is a Python int >= 2, else raises ValueError."""
    if not (integer("num_classes", num_classes) >= 2):
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    return num_classes


def check_label_range(name, labels, num_classes):
    """Raises ValueError naming ``name`` unless every label lies in [0, num_classes)."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}). Received: min {low}, max {high}"
        )


def check_labelled_images(images, labels, num_classes, what="train"):
    """Checks an image-label set for CAS and returns it as (float32, int64) arrays.

    Args:
        images: ``(N, H, W, C)`` floating array (images in [0, 1]; the range
            itself is not checked, decoder outputs may overshoot a little).
        labels: ``(N,)`` integer array of class indices in ``[0, num_classes)``.
        num_classes: int >= 2.
        what: name of the set in messages (``"train"``, ``"test"``).

    Returns:
        ``(images, labels)``: ``images`` as ``float32`` (no copy when it
        already is), ``labels`` as ``int64``.

    Raises:
        ValueError: naming the set, the problem and the value received, when
            ``images`` is not a 4-D floating array with positive H, W, C, the
            set is empty, ``images`` holds NaN or ±Inf (their count is
            given), ``labels`` is not a 1-D integer array of the same length,
            or a label lies outside ``[0, num_classes)``.
    """
    check_num_classes(num_classes)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"`{what}_images` must be a 4-D floating array (N, H, W, C) in [0, 1]. "
            f"Received: shape {images.shape}, dtype {images.dtype}"
        )
    if images.shape[0] == 0:
        raise ValueError(
            f"`{what}_images` must hold at least one image. Received: shape {images.shape}"
        )
    if min(images.shape[1:]) < 1:
        raise ValueError(
            f"`{what}_images` must have positive H, W and C. Received: shape {images.shape}"
        )
    images = images.astype(np.float32, copy=False)
    bad = int(images.size - np.count_nonzero(np.isfinite(images)))
    if bad:
        raise ValueError(
            f"`{what}_images` must be finite. Received: {bad} NaN or infinite values "
            f"in shape {images.shape}"
        )
    if (
        labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.dtype == np.bool_
    ):
        raise ValueError(
            f"`{what}_labels` must be a 1-D integer array (N,). "
            f"Received: shape {labels.shape}, dtype {labels.dtype}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"`{what}_labels` must have one label per image ({images.shape[0]} images). "
            f"Received: {labels.shape[0]} labels"
        )
    check_label_range(f"{what}_labels", labels, num_classes)
    return images, labels.astype(np.int64, copy=False)


def _check_image_shape(image_shape):
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            "`image_shape` must be (H, W, C) with three positive integers. "
            f"Received: image_shape={image_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _layer_seeds(seed, count):
    """``count`` int32-range seeds derived from ``seed`` (one per initialiser)."""
    state = np.random.SeedSequence([seed, _INIT_SALT]).generate_state(count)
    return [int(s) & 0x7FFFFFFF for s in state]


def build_classifier(image_shape, num_classes, seed=0):
    """Builds the fixed CAS classifier (see the module docstring), uncompiled.

    Args:
        image_shape: ``(H, W, C)``, positive ints.
        num_classes: int >= 2, the number of logits.
        seed: non-negative int; every initialiser is seeded from it.
            Defaults to 0.

    Returns:
        A ``keras.Model`` named ``"cas_classifier"`` mapping ``float32``
        images ``(B, H, W, C)`` in [0, 1] to ``float32`` logits
        ``(B, num_classes)``. All layers are ``float32`` whatever the global
        dtype policy.

    Raises:
        ValueError: on a bad ``image_shape``, ``num_classes`` or ``seed``,
            naming the value received.
    """
    import keras
    from keras import layers

    image_shape = _check_image_shape(image_shape)
    check_num_classes(num_classes)
    non_negative_int("seed", seed)
    seeds = iter(_layer_seeds(seed, 16))
    dtype = "float32"

    def conv(x, filters, kernel, stride, name):
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
            dtype=dtype,
            name=name,
        )(x)

    def norm(x, name):
        return layers.BatchNormalization(momentum=0.9, dtype=dtype, name=name)(x)

    def block(x, filters, stride, name):
        y = conv(x, filters, 3, stride, f"{name}_conv1")
        y = layers.ReLU(dtype=dtype, name=f"{name}_relu1")(norm(y, f"{name}_bn1"))
        y = norm(conv(y, filters, 3, 1, f"{name}_conv2"), f"{name}_bn2")
        if stride != 1 or x.shape[-1] != filters:
            x = norm(conv(x, filters, 1, stride, f"{name}_proj"), f"{name}_proj_bn")
        x = layers.Add(dtype=dtype, name=f"{name}_add")([x, y])
        return layers.ReLU(dtype=dtype, name=f"{name}_out")(x)

    stem, *widths = CAS_WIDTHS
    inputs = keras.Input(image_shape, dtype="float32", name="images")
    x = layers.Rescaling(2.0, offset=-1.0, dtype=dtype, name="to_pm1")(inputs)
    x = conv(x, stem, 3, 1, "stem_conv")
    x = layers.ReLU(dtype=dtype, name="stem_relu")(norm(x, "stem_bn"))
    for index, filters in enumerate(widths, start=1):
        x = block(x, filters, 2, f"block{index}")
    x = layers.GlobalAveragePooling2D(dtype=dtype, name="pool")(x)
    logits = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
        dtype=dtype,
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name="cas_classifier")


def _batch_order(num_examples, steps, batch_size, seed):
    """Yields ``steps`` index batches of ``batch_size``: chained seeded epochs.

    Epoch e is a permutation of ``range(num_examples)`` drawn from one
    ``np.random.default_rng`` seeded by ``(seed, salt)``; the epochs are
    concatenated and cut into consecutive full batches, so a batch may span
    two epochs (and, when ``num_examples < batch_size``, hold an example
    more than once).
    """
    rng = np.random.default_rng([seed, _SHUFFLE_SALT])
    pending = np.empty((0,), np.int64)
    for _ in range(steps):
        while pending.shape[0] < batch_size:
            pending = np.concatenate([pending, rng.permutation(num_examples)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def train_classifier(
    images,
    labels,
    num_classes,
    steps=CAS_STEPS,
    batch_size=CAS_BATCH_SIZE,
    seed=0,
):
    """Trains the fixed CAS classifier on one row's image-class pairs.

    The budget is the same whatever the number of examples N: exactly
    ``steps`` Adam steps of ``batch_size`` examples (learning rate
    :data:`CAS_LEARNING_RATE`, cosine decay to 0 over ``steps``, softmax
    cross-entropy on logits). The order is NumPy's
    ``default_rng((seed, salt)).permutation(N)`` per epoch, epochs chained
    and cut into full batches (a batch can span two epochs); no augmentation.
    The initial weights come from ``build_classifier(..., seed=seed)``.
    Same data, same arguments: the same model, on the same machine.

    Args:
        images: ``(N, H, W, C)`` floating NumPy array, images in [0, 1].
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        num_classes: int >= 2.
        steps: positive int, optimizer steps. Defaults to :data:`CAS_STEPS`.
        batch_size: positive int. Defaults to :data:`CAS_BATCH_SIZE`.
        seed: non-negative int for the initial weights and the order.
            Defaults to 0.

    Returns:
        The trained ``keras.Model`` (uncompiled; call it with
        ``training=False`` to use the BatchNormalization moving statistics).

    Raises:
        ValueError: on bad inputs (see :func:`check_labelled_images`) or a
            ``steps``, ``batch_size`` or ``seed`` that is not a positive
            (for ``seed``: non-negative) Python int, naming the value.
        FloatingPointError: if the training loss becomes NaN or infinite.
    """
    import keras
    import tensorflow as tf

    images, labels = check_labelled_images(images, labels, num_classes, "train")
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    non_negative_int("seed", seed)

    model = build_classifier(images.shape[1:], num_classes, seed=seed)
    schedule = keras.optimizers.schedules.CosineDecay(CAS_LEARNING_RATE, steps)
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    losses = []
    for index in _batch_order(images.shape[0], steps, batch_size, seed):
        losses.append(train_step(images[index], labels[index]))
    final = np.array([float(loss) for loss in losses[-10:]])
    if not np.all(np.isfinite(final)):
        raise FloatingPointError(
            f"CAS classifier training diverged: last losses {final.tolist()}"
        )
    return model
