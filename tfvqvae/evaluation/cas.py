"""Classification Accuracy Score (CAS): how useful a model's class-conditional images are.

Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional
Generative Models" (arXiv:1905.10887): train a classifier only on image-class
pairs from a source, then report its top-1 and top-5 accuracy on the *real*
test set. Rows of the VQ-VAE-2 table (Razavi et al. 2019, Table 2; ImageNet
top-1 / top-5: real data 73.09 / 91.47, VQ-VAE-2 samples 54.83 / 77.59):

* real training data (a class-balanced subset, :func:`balanced_subset`);
* the same images after reconstruction (encode + decode);
* class-conditional samples of the priors, drawn for
  :func:`balanced_labels` (every class equally often).

Every row uses the same fixed classifier and training budget
(:mod:`tfvqvae.evaluation.classifier`: ``CAS_STEPS`` steps of
``CAS_BATCH_SIZE``, whatever the row's number of examples), so rows differ
only by their training pairs.

Accuracies are percentages in [0, 100]. Top-k counts a row as correct when
fewer than k classes have a logit strictly larger than the true class's,
i.e. ties at the k-th place count as correct, as in ``tf.math.in_top_k``.
"""

from __future__ import annotations

import numpy as np

from tfvqvae.evaluation.classifier import (
    CAS_BATCH_SIZE,
    CAS_STEPS,
    check_label_range,
    check_labelled_images,
    check_num_classes,
    train_classifier,
)
from tfvqvae.validation import non_negative_int, positive_int

__all__ = [
    "EVAL_BATCH_SIZE",
    "balanced_labels",
    "balanced_subset",
    "classification_accuracy_score",
    "predict_logits",
    "top_k_accuracy",
]

#: Images per forward pass when evaluating a trained classifier.
EVAL_BATCH_SIZE = 500


def top_k_accuracy(logits, labels, k):
    """Share of rows whose true label is among the ``k`` largest logits, in percent.

    A row counts as correct when fewer than ``k`` classes have a logit
    strictly larger than the true class's logit: ties straddling the k-th
    place are all "in the top k", the rule of ``tf.math.in_top_k``.
    Computed in NumPy.

    Args:
        logits: ``(M, K)`` finite floating array (logits or probabilities).
        labels: ``(M,)`` integer class indices in ``[0, K)``.
        k: positive int <= K.

    Returns:
        A Python float in [0, 100].

    Raises:
        ValueError: naming the value received, when ``logits`` is not a 2-D
            floating array with M >= 1 rows and K >= 2 columns, holds NaN or
            ±Inf (their count is given), ``labels`` is not a 1-D integer
            array of M labels in ``[0, K)``, or ``k`` is not an int in [1, K].
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(
            "`logits` must be a 2-D floating array (M, K). "
            f"Received: shape {logits.shape}, dtype {logits.dtype}"
        )
    if logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(
            f"`logits` must have at least one row and two classes. Received: shape {logits.shape}"
        )
    bad = int(logits.size - np.count_nonzero(np.isfinite(logits)))
    if bad:
        raise ValueError(
            f"`logits` must be finite. Received: {bad} NaN or infinite values "
            f"in shape {logits.shape}"
        )
    num_classes = logits.shape[1]
    if (
        labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.dtype == np.bool_
        or labels.shape[0] != logits.shape[0]
    ):
        raise ValueError(
            f"`labels` must be a 1-D integer array of {logits.shape[0]} labels. "
            f"Received: shape {labels.shape}, dtype {labels.dtype}"
        )
    check_label_range("labels", labels, num_classes)
    positive_int("k", k)
    if k > num_classes:
        raise ValueError(
            f"`k` must be at most the number of classes ({num_classes}). Received: k={k!r}"
        )
    target = logits[np.arange(logits.shape[0]), labels]
    larger = np.count_nonzero(logits > target[:, None], axis=1)
    return float(100.0 * np.count_nonzero(larger < k) / logits.shape[0])


def predict_logits(model, images, batch_size=EVAL_BATCH_SIZE):
    """The model's ``float32`` logits ``(M, K)`` for ``images``, ``batch_size`` at a time.

    Inference mode (``training=False``). The last batch is padded to full
    size (one traced graph; BatchNormalization at inference treats each
    image alone, so the padding changes nothing) and the padding dropped.

    Raises:
        ValueError: if ``images`` is not a non-empty 4-D array or
            ``batch_size`` not a positive int, naming the value.
    """
    import tensorflow as tf

    positive_int("batch_size", batch_size)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            "`images` must be a non-empty 4-D array (M, H, W, C). "
            f"Received: shape {images.shape}"
        )
    size = min(batch_size, images.shape[0])
    forward = tf.function(lambda x: model(x, training=False))
    parts = []
    for start in range(0, images.shape[0], size):
        batch = images[start : start + size]
        count = batch.shape[0]
        if count < size:
            pad = np.zeros((size - count,) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        parts.append(np.asarray(forward(batch))[:count])
    return np.concatenate(parts).astype(np.float32, copy=False)


def classification_accuracy_score(
    train_images,
    train_labels,
    test_images,
    test_labels,
    num_classes,
    steps=CAS_STEPS,
    batch_size=CAS_BATCH_SIZE,
    seed=0,
):
    """CAS of one row: train the fixed classifier on its pairs, test on real data.

    Trains :func:`~tfvqvae.evaluation.classifier.train_classifier` (the same
    architecture and budget for every row) on ``(train_images,
    train_labels)`` and reports top-1 and top-5 accuracy on ``(test_images,
    test_labels)``, evaluated :data:`EVAL_BATCH_SIZE` images at a time.

    Args:
        train_images: ``(N, H, W, C)`` floating array in [0, 1]: the row's
            images (real, reconstructed or sampled).
        train_labels: ``(N,)`` integer classes in ``[0, num_classes)``.
        test_images: ``(M, H, W, C)`` floating array in [0, 1], real test
            images of the same H, W, C.
        test_labels: ``(M,)`` integer classes in ``[0, num_classes)``.
        num_classes: int >= 2.
        steps: positive int, optimizer steps. Defaults to ``CAS_STEPS``.
        batch_size: positive int. Defaults to ``CAS_BATCH_SIZE``.
        seed: non-negative int for the classifier's weights and order.
            Defaults to 0.

    Returns:
        ``{"top1": float, "top5": float or None, "train_examples": N,
        "test_examples": M, "steps": steps}``, accuracies in percent;
        ``"top5"`` is None when ``num_classes <= 5`` (it would be 100).

    Raises:
        ValueError: on bad inputs, naming the set and the value received
            (see :func:`~tfvqvae.evaluation.classifier.check_labelled_images`),
            on test images of another (H, W, C) than the training images,
            or on a ``steps``, ``batch_size`` or ``seed`` that is not a
            positive (``seed``: non-negative) int.
        FloatingPointError: if training diverges.
    """
    train_images, train_labels = check_labelled_images(
        train_images, train_labels, num_classes, "train"
    )
    test_images, test_labels = check_labelled_images(
        test_images, test_labels, num_classes, "test"
    )
    if test_images.shape[1:] != train_images.shape[1:]:
        raise ValueError(
            "`test_images` must have the (H, W, C) of the training images "
            f"{train_images.shape[1:]}. Received: {test_images.shape[1:]}"
        )
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    non_negative_int("seed", seed)

    model = train_classifier(
        train_images, train_labels, num_classes, steps=steps, batch_size=batch_size, seed=seed
    )
    logits = predict_logits(model, test_images)
    return {
        "top1": top_k_accuracy(logits, test_labels, 1),
        "top5": top_k_accuracy(logits, test_labels, 5) if num_classes > 5 else None,
        "train_examples": int(train_images.shape[0]),
        "test_examples": int(test_images.shape[0]),
        "steps": steps,
    }


def _per_class_counts(num_samples, num_classes):
    counts = np.full(num_classes, num_samples // num_classes, np.int64)
    counts[: num_samples % num_classes] += 1
    return counts


def balanced_labels(num_samples, num_classes):
    """Class labels for class-balanced sampling: ``arange(num_samples) % num_classes``.

    Each class appears ``num_samples // num_classes`` times, the first
    ``num_samples % num_classes`` classes once more.

    Args:
        num_samples: positive int.
        num_classes: int >= 2.

    Returns:
        ``int32`` array ``(num_samples,)``: 0, 1, ..., K-1, 0, 1, ...

    Raises:
        ValueError: if ``num_samples`` is not a positive int or
            ``num_classes`` not an int >= 2, naming the value.
    """
    positive_int("num_samples", num_samples)
    check_num_classes(num_classes)
    return (np.arange(num_samples, dtype=np.int64) % num_classes).astype(np.int32)


def balanced_subset(labels, num_samples, num_classes, seed=0):
    """Indices of a class-balanced random subset of a labelled dataset.

    Class c gets the count it has in ``balanced_labels(num_samples,
    num_classes)``; its examples are drawn without replacement with one
    ``np.random.default_rng(seed)``, classes in order 0, 1, ...

    Args:
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        num_samples: positive int, the subset's size.
        num_classes: int >= 2.
        seed: non-negative int. Defaults to 0.

    Returns:
        ``int64`` array ``(num_samples,)`` of distinct indices into
        ``labels``, sorted ascending.

    Raises:
        ValueError: on a bad argument, naming the value received, or when a
            class has fewer examples than its share, e.g. "class 3 has 12
            examples; a balanced subset of 200 over 10 classes needs 20".
    """
    labels = np.asarray(labels)
    if (
        labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.dtype == np.bool_
        or labels.shape[0] == 0
    ):
        raise ValueError(
            "`labels` must be a non-empty 1-D integer array. "
            f"Received: shape {labels.shape}, dtype {labels.dtype}"
        )
    positive_int("num_samples", num_samples)
    check_num_classes(num_classes)
    non_negative_int("seed", seed)
    check_label_range("labels", labels, num_classes)
    counts = _per_class_counts(num_samples, num_classes)
    available = np.bincount(labels, minlength=num_classes)
    for c in range(num_classes):
        if available[c] < counts[c]:
            raise ValueError(
                f"class {c} has {available[c]} examples; a balanced subset of "
                f"{num_samples} over {num_classes} classes needs {counts[c]}"
            )
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=counts[c], replace=False)
        for c in range(num_classes)
    ]
    return np.sort(np.concatenate(chosen).astype(np.int64))
