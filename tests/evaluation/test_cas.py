"""Classification Accuracy Score: top-k, class balance, the fixed classifier, toy generators.

References: top-k against NumPy argsort and hand-counted cases; class counts
by np.bincount; CAS rows against what a generator must give by construction
(the real pairs -> the real row exactly; labels independent of the images ->
chance; separable classes -> 100 %).
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import load_dataset
from tfvqvae.evaluation.cas import balanced_labels
from tfvqvae.evaluation.cas import balanced_subset
from tfvqvae.evaluation.cas import classification_accuracy_score
from tfvqvae.evaluation.cas import predict_logits
from tfvqvae.evaluation.cas import top_k_accuracy
from tfvqvae.evaluation.classifier import CAS_BATCH_SIZE
from tfvqvae.evaluation.classifier import CAS_STEPS
from tfvqvae.evaluation.classifier import _batch_order
from tfvqvae.evaluation.classifier import build_classifier
from tfvqvae.evaluation.classifier import train_classifier

STEPS = 60  # a test budget: enough for 8 x 8 digits and toy patterns
BATCH = 64


# ------------------------------------------------------------------ top-k
def reference_top_k(logits, labels, k):
    """Percent of rows whose label is among the last k of a stable argsort."""
    top = np.argsort(logits, axis=1, kind="stable")[:, -k:]
    return 100.0 * np.mean([label in row for label, row in zip(labels, top)])


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_matches_argsort_on_random_logits(k):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1000, 10)).astype(np.float32)  # no ties (a.s.)
    labels = rng.integers(0, 10, size=1000)
    got = top_k_accuracy(logits, labels, k)
    assert isinstance(got, float)
    assert got == pytest.approx(reference_top_k(logits, labels, k), abs=1e-9)
    # and with tf.math.in_top_k, the rule the docstring names
    in_top = tf.math.in_top_k(tf.constant(labels, tf.int32), tf.constant(logits), k)
    assert got == pytest.approx(100.0 * np.mean(in_top.numpy()), abs=1e-9)


def test_top_k_hand_counted():
    logits = np.array(
        [
            [0.1, 0.7, 0.2],  # order 1, 2, 0
            [0.5, 0.3, 0.2],  # order 0, 1, 2
            [0.2, 0.2, 0.6],  # order 2, then a tie of 0 and 1
            [0.3, 0.3, 0.3],  # all tied
        ],
        np.float64,
    )
    labels = np.array([2, 0, 1, 1])
    # k=1: row0 label 2 is 2nd (no), row1 yes, row2 label 1 is behind 2 (no),
    # row3 tie at the top -> counts (no logit strictly larger).
    assert top_k_accuracy(logits, labels, 1) == 50.0
    # k=2: row0 yes, row1 yes, row2 label 1 ties with 0 for 2nd place -> yes, row3 yes.
    assert top_k_accuracy(logits, labels, 2) == 100.0
    # labels 0, 1, 0, 2 at k=1: only row3 (all tied) counts.
    assert top_k_accuracy(logits, np.array([0, 1, 0, 2]), 1) == 25.0
    # the tie rule is tf.math.in_top_k's
    tf_in_top = tf.math.in_top_k(tf.constant(labels), tf.constant(logits, tf.float32), 1)
    assert tf_in_top.numpy().tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    "logits, labels, k, match",
    [
        (np.zeros((4,), np.float32), [0] * 4, 1, "2-D floating array (M, K). Received: shape (4,)"),
        (np.zeros((4, 3), np.int64), [0] * 4, 1, "Received: shape (4, 3), dtype int64"),
        (np.zeros((0, 3), np.float32), [], 1,
         "at least one row and two classes. Received: shape (0, 3)"),
        (np.zeros((2, 1), np.float32), [0, 0], 1, "Received: shape (2, 1)"),
        (np.array([[0.0, np.nan], [np.inf, 1.0]]), [0, 0], 1, "Received: 2 NaN or infinite values"),
        (np.zeros((2, 3)), [0, 1, 2], 1, "1-D integer array of 2 labels. Received: shape (3,)"),
        (np.zeros((2, 3)), [0.0, 1.0], 1, "Received: shape (2,), dtype float64"),
        (np.zeros((2, 3)), [0, 3], 1, "must lie in [0, 3). Received: min 0, max 3"),
        (np.zeros((2, 3)), [-1, 0], 1, "Received: min -1, max 0"),
        (np.zeros((2, 3)), [0, 1], 0, "Received: k=0"),
        (np.zeros((2, 3)), [0, 1], 4, "at most the number of classes (3). Received: k=4"),
    ],
)
def test_top_k_refuses(logits, labels, k, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        top_k_accuracy(logits, np.asarray(labels), k)


# ------------------------------------------------------------------ class balance
@pytest.mark.parametrize("num_samples, num_classes", [(100, 10), (103, 10), (7, 10), (5, 2)])
def test_balanced_labels_counts(num_samples, num_classes):
    labels = balanced_labels(num_samples, num_classes)
    assert labels.dtype == np.int32 and labels.shape == (num_samples,)
    counts = np.bincount(labels, minlength=num_classes)
    extra = num_samples % num_classes
    expected = [num_samples // num_classes + (c < extra) for c in range(num_classes)]
    assert counts.tolist() == expected


def test_balanced_subset_counts_unique_and_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=3000)
    indices = balanced_subset(labels, 1003, 10, seed=5)
    assert indices.dtype == np.int64 and indices.shape == (1003,)
    assert np.unique(indices).size == 1003  # distinct
    assert indices.min() >= 0 and indices.max() < 3000
    assert np.bincount(labels[indices], minlength=10).tolist() == [101] * 3 + [100] * 7
    assert np.bincount(labels[indices]).tolist() == np.bincount(balanced_labels(1003, 10)).tolist()
    np.testing.assert_array_equal(indices, balanced_subset(labels, 1003, 10, seed=5))
    assert not np.array_equal(indices, balanced_subset(labels, 1003, 10, seed=6))


def test_balanced_subset_takes_a_whole_class_when_needed():
    labels = np.array([0, 1, 1, 0, 2, 2, 1, 0, 2])
    indices = balanced_subset(labels, 9, 3)
    np.testing.assert_array_equal(indices, np.arange(9))


def test_balanced_subset_names_the_short_class():
    labels = np.array([0] * 50 + [1] * 50 + [2] * 12)
    with pytest.raises(ValueError, match="class 2 has 12 examples; a balanced subset of 60 over 3 classes needs 20"):
        balanced_subset(labels, 60, 3)
    with pytest.raises(ValueError, match="class 3 has 0 examples"):
        balanced_subset(labels, 8, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: balanced_labels(0, 10), "Received: num_samples=0"),
        (lambda: balanced_labels(10, 1), "integer >= 2. Received: num_classes=1"),
        (lambda: balanced_labels(10, 2.0), "Received: num_classes=2.0"),
        (lambda: balanced_subset([0, 1], 0, 2), "Received: num_samples=0"),
        (lambda: balanced_subset([0, 1], 2, 1), "Received: num_classes=1"),
        (lambda: balanced_subset([0, 1], 2, 2, seed=-1), "Received: seed=-1"),
        (lambda: balanced_subset([0, 5], 2, 2), "[0, 2). Received: min 0, max 5"),
        (lambda: balanced_subset([0.0, 1.0], 2, 2), "Received: shape (2,), dtype float64"),
        (lambda: balanced_subset([], 2, 2), "Received: shape (0,)"),
    ],
)
def test_balance_refuses(call, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        call()


# ------------------------------------------------------------------ the classifier
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (16, 16, 1), (8, 8, 1), (9, 13, 2)])
def test_classifier_maps_images_to_logits(shape):
    model = build_classifier(shape, 10)
    logits = model(np.random.default_rng(0).random((3,) + shape, dtype=np.float32), training=False)
    assert tuple(logits.shape) == (3, 10)
    assert logits.dtype == tf.float32


def test_classifier_documented_size_and_seeded_weights():
    assert build_classifier((32, 32, 1), 10).count_params() == 310570
    assert build_classifier((32, 32, 3), 10).count_params() == 311146
    first = build_classifier((16, 16, 1), 10, seed=3).get_weights()
    again = build_classifier((16, 16, 1), 10, seed=3).get_weights()
    other = build_classifier((16, 16, 1), 10, seed=4).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_classifier_stays_float32_under_a_mixed_policy():
    keras.config.set_dtype_policy("mixed_float16")  # conftest restores float32
    model = build_classifier((16, 16, 1), 4)
    out = model(np.zeros((2, 16, 16, 1), np.float32), training=False)
    assert out.dtype == tf.float32
    assert all(w.dtype == "float32" for w in model.weights)


@pytest.mark.parametrize("num_examples", [10, 128, 300])
def test_batch_order_is_chained_seeded_epochs(num_examples):
    steps, batch = 7, 128
    batches = list(_batch_order(num_examples, steps, batch, seed=2))
    assert len(batches) == steps and all(b.shape == (batch,) for b in batches)
    flat = np.concatenate(batches)
    full_epochs = flat.size // num_examples
    for e in range(full_epochs):  # every whole epoch is a permutation
        epoch = flat[e * num_examples : (e + 1) * num_examples]
        np.testing.assert_array_equal(np.sort(epoch), np.arange(num_examples))
    again = np.concatenate(list(_batch_order(num_examples, steps, batch, seed=2)))
    np.testing.assert_array_equal(flat, again)
    other = np.concatenate(list(_batch_order(num_examples, steps, batch, seed=3)))
    assert not np.array_equal(flat, other)


def test_default_budget():
    assert CAS_BATCH_SIZE == 128
    assert isinstance(CAS_STEPS, int) and CAS_STEPS > 0


# ------------------------------------------------------------------ input checks
GOOD = np.zeros((4, 8, 8, 1), np.float32)
LABELS = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(train_images=np.zeros((4, 8, 8), np.float32)),
         "`train_images` must be a 4-D floating array (N, H, W, C) in [0, 1]. Received: shape (4, 8, 8), dtype float32"),
        (dict(train_images=np.zeros((4, 8, 8, 1), np.uint8)),
         "Received: shape (4, 8, 8, 1), dtype uint8"),
        (dict(test_images=np.zeros((4, 8, 8, 1), np.int32)),
         "`test_images` must be a 4-D floating array (N, H, W, C) in [0, 1]. Received: shape (4, 8, 8, 1), dtype int32"),
        (dict(train_images=np.zeros((0, 8, 8, 1), np.float32), train_labels=np.zeros((0,), int)),
         "`train_images` must hold at least one image. Received: shape (0, 8, 8, 1)"),
        (dict(test_images=np.zeros((0, 8, 8, 1), np.float32), test_labels=np.zeros((0,), int)),
         "`test_images` must hold at least one image"),
        (dict(train_images=np.zeros((4, 0, 8, 1), np.float32)),
         "positive H, W and C. Received: shape (4, 0, 8, 1)"),
        (dict(train_images=np.where(np.arange(256).reshape(4, 8, 8, 1) < 3, np.nan, 0.0)),
         "`train_images` must be finite. Received: 3 NaN or infinite values in shape (4, 8, 8, 1)"),
        (dict(test_images=np.full((4, 8, 8, 1), np.inf, np.float32)),
         "`test_images` must be finite. Received: 256 NaN"),
        (dict(train_labels=np.array([0, 1, 0])),
         "`train_labels` must have one label per image (4 images). Received: 3 labels"),
        (dict(test_labels=np.array([0, 1, 0, 1, 1])),
         "`test_labels` must have one label per image (4 images). Received: 5 labels"),
        (dict(train_labels=np.array([0.0, 1.0, 0.0, 1.0])),
         "`train_labels` must be a 1-D integer array (N,). Received: shape (4,), dtype float64"),
        (dict(train_labels=np.array([[0, 1, 0, 1]])), "Received: shape (1, 4), dtype int64"),
        (dict(train_labels=np.array([0, 1, 2, 1])),
         "`train_labels` must lie in [0, 2). Received: min 0, max 2"),
        (dict(test_labels=np.array([0, -1, 0, 1])),
         "`test_labels` must lie in [0, 2). Received: min -1, max 1"),
        (dict(num_classes=1), "`num_classes` must be an integer >= 2. Received: num_classes=1"),
        (dict(num_classes=np.int64(2)), "Received: num_classes=np.int64(2)"),
        (dict(test_images=np.zeros((4, 8, 9, 1), np.float32)),
         "`test_images` must have the (H, W, C) of the training images (8, 8, 1). Received: (8, 9, 1)"),
        (dict(steps=0), "`steps` must be a positive integer. Received: steps=0"),
        (dict(steps=10.0), "Received: steps=10.0"),
        (dict(batch_size=0), "`batch_size` must be a positive integer. Received: batch_size=0"),
        (dict(batch_size=None), "Received: batch_size=None"),
        (dict(seed=-1), "`seed` must be a non-negative integer. Received: seed=-1"),
    ],
)
def test_cas_refuses(kwargs, match):
    args = dict(train_images=GOOD, train_labels=LABELS, test_images=GOOD, test_labels=LABELS,
                num_classes=2, steps=1, batch_size=2, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(match)):
        classification_accuracy_score(**args)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: train_classifier(GOOD, LABELS, 2, steps=-3), "Received: steps=-3"),
        (lambda: train_classifier(GOOD, LABELS, 2, batch_size=True), "Received: batch_size=True"),
        (lambda: train_classifier(GOOD[..., 0], LABELS, 2), "Received: shape (4, 8, 8)"),
        (lambda: build_classifier((8, 8), 10), "Received: image_shape=(8, 8)"),
        (lambda: build_classifier((8, 0, 1), 10), "Received: image_shape=(8, 0, 1)"),
        (lambda: build_classifier((8, 8, 1), 1), "Received: num_classes=1"),
        (lambda: build_classifier((8, 8, 1), 10, seed=1.5), "Received: seed=1.5"),
        (lambda: predict_logits(None, np.zeros((0, 8, 8, 1))), "Received: shape (0, 8, 8, 1)"),
        (lambda: predict_logits(None, GOOD, batch_size=0), "Received: batch_size=0"),
    ],
)
def test_classifier_refuses(call, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        call()


@pytest.mark.slow
def test_diverged_training_is_reported(monkeypatch):
    import tfvqvae.evaluation.classifier as classifier

    monkeypatch.setattr(classifier, "CAS_LEARNING_RATE", 1e30)
    images = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    with pytest.raises(FloatingPointError, match="diverged"):
        train_classifier(images, np.arange(16) % 2, 2, steps=5, batch_size=8)


def test_predict_logits_in_batches_equals_one_pass():
    model = build_classifier((8, 8, 1), 3)
    images = np.random.default_rng(0).random((23, 8, 8, 1), dtype=np.float32)
    whole = model(images, training=False).numpy()
    np.testing.assert_allclose(predict_logits(model, images, batch_size=5), whole, atol=1e-5)


# ------------------------------------------------------------------ toy generators
@pytest.fixture(scope="module")
def digits():
    """scikit-learn digits, 8 x 8: 1500 train, 297 test images, 10 classes."""
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return train.as_float(), train.labels, test.as_float(), test.labels


@pytest.mark.slow  # two classifier trainings (about 14 s); the toy classes below stay
def test_real_generator_gives_the_real_row_exactly(digits):
    """A 'generator' that returns the real pairs reproduces the real row to the last digit."""
    x_train, y_train, x_test, y_test = digits
    subset = balanced_subset(y_train, 1000, 10, seed=0)
    real = classification_accuracy_score(
        x_train[subset], y_train[subset], x_test, y_test, 10, steps=STEPS, batch_size=BATCH,
        seed=0)

    def real_generator(labels):  # returns, for the requested labels, the real images
        return x_train[subset], labels

    generated_images, generated_labels = real_generator(y_train[subset].copy())
    again = classification_accuracy_score(
        generated_images, generated_labels, x_test, y_test, 10, steps=STEPS, batch_size=BATCH,
        seed=0)
    assert again == real
    assert real["train_examples"] == 1000 and real["test_examples"] == 297
    assert real["steps"] == STEPS
    assert real["top1"] > 85.0  # it learned (digits are easy)
    assert real["top5"] >= real["top1"]


def test_separable_toy_classes_reach_100_percent():
    """Each class a fixed random binary pattern plus noise: perfectly learnable."""
    rng = np.random.default_rng(0)
    num_classes = 4
    patterns = rng.random((num_classes, 8, 8, 1)) < 0.5

    def generator(labels):
        noise = rng.normal(0.0, 0.1, size=(len(labels), 8, 8, 1))
        return np.clip(patterns[labels] * 0.8 + 0.1 + noise, 0.0, 1.0).astype(np.float32)

    train_labels = balanced_labels(400, num_classes)
    test_labels = rng.permutation(balanced_labels(200, num_classes))
    result = classification_accuracy_score(
        generator(train_labels), train_labels, generator(test_labels), test_labels,
        num_classes, steps=20, batch_size=BATCH, seed=0)
    assert result["top1"] == 100.0
    assert result["top5"] is None  # 4 classes: top-5 would be trivially 100


@pytest.mark.slow  # classifier training on real MNIST (about 15 s)
def test_labels_independent_of_images_give_chance(shared_data):
    """Shuffled labels: the classifier can only guess, top-1 ~ 100/K, top-5 ~ 500/K.

    Real MNIST (its test split at 8 x 8, halves kept apart): 2000
    class-balanced training images whose labels are permuted within each true
    class so that every (true class, new label) cell holds exactly 20 images
    (a plain random permutation leaves cells of 20 ± 4, and a classifier that
    recognises the digit then predicts, per digit, its most common shuffled
    label: top-1 jumps in steps of 10 points). Tested on 3000 class-balanced
    other images (300 per class).

    Band: independent guesses would give binomial sd 0.55 points (top-1,
    p = 0.1) and 0.91 (top-5, p = 0.5), but predictions of similar test images
    are correlated (clusters of look-alike digits share a guess), so the
    spread is wider: over 12 seeds of this set-up (shuffle and classifier)
    top-1 was 10.6 ± 1.9 (8.8 .. 15.0) and top-5 52.6 ± 5.1 (45.0 .. 60.6).
    The bands, 10 ± 6 and 50 ± 16, are about 3 such sd; the same data with
    the true labels (checked) reaches ~89 / ~98, far outside them.
    """
    mnist = load_dataset("mnist", "test", data_dir=shared_data, image_size=8)
    images, labels = mnist.as_float(), mnist.labels
    train = balanced_subset(labels[:5000], 2000, 10, seed=0)
    test = 5000 + balanced_subset(labels[5000:], 3000, 10, seed=0)
    rng = np.random.default_rng(0)
    shuffled = np.empty_like(labels[train])
    for c in range(10):
        where = np.flatnonzero(labels[train] == c)
        shuffled[where] = rng.permutation(balanced_labels(where.size, 10))
    # a permutation of the labels, independent of the true classes
    assert np.sort(shuffled).tolist() == np.sort(labels[train]).tolist()
    table = np.zeros((10, 10), int)
    np.add.at(table, (labels[train], shuffled), 1)
    assert (table == 20).all()

    chance = classification_accuracy_score(
        images[train], shuffled, images[test], labels[test], 10, steps=STEPS,
        batch_size=BATCH, seed=0)
    assert abs(chance["top1"] - 10.0) <= 6.0, chance
    assert abs(chance["top5"] - 50.0) <= 16.0, chance
    truth = classification_accuracy_score(
        images[train], labels[train], images[test], labels[test], 10, steps=STEPS,
        batch_size=BATCH, seed=0)
    assert truth["top1"] > 80.0 and truth["top5"] > 90.0, truth
