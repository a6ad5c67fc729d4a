"""Codebook usage: counts (against np.bincount), the summary (by hand and against
tfvqvae.metrics), the NumPy bar chart (pixel columns against the counts) and the
PNG / TensorBoard files (read back with independent readers)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.evaluation.usage import AXIS_COLOR
from tfvqvae.evaluation.usage import BAR_COLOR
from tfvqvae.evaluation.usage import DEAD_COLOR
from tfvqvae.evaluation.usage import MARGIN
from tfvqvae.evaluation.usage import code_counts
from tfvqvae.evaluation.usage import code_counts_by_level
from tfvqvae.evaluation.usage import histogram_image
from tfvqvae.evaluation.usage import usage_summary
from tfvqvae.evaluation.usage import write_usage_histograms
from tfvqvae.metrics import CodebookUsage
from tfvqvae.metrics import perplexity_from_counts


# ------------------------------------------------------------------- counts
def test_code_counts_match_bincount():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 7, (20, 4, 4))
    expected = np.bincount(codes.ravel(), minlength=10)
    for given in (codes, codes.astype(np.int32), tf.constant(codes, tf.int32),
                  [codes[:5], codes[5:5], codes[5:]],
                  tf.data.Dataset.from_tensor_slices(codes.astype(np.int32)).batch(6)):
        counts = code_counts(given, 10)
        assert counts.dtype == np.int64 and counts.shape == (10,)
        np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("codes, k, error, message", [
    (np.array([0, 1]), 0, ValueError, "Received: num_embeddings=0"),
    (np.array([0, 1]), 2.0, ValueError, "Received: num_embeddings=2.0"),
    (np.array([0, -3, 1]), 4, ValueError, r"Received: codes in \[-3, 1\]"),
    (np.array([[0, 4], [1, 2]]), 4, ValueError, r"Received: codes in \[0, 4\]"),
    (np.zeros((0, 4, 4), np.int32), 4, ValueError, "Received: 0 codes"),
    ([], 4, ValueError, "Received: 0 codes"),
    (np.array([0.0, 1.0]), 4, TypeError, "dtype=float64"),
])
def test_code_counts_refuse_bad_input(codes, k, error, message):
    with pytest.raises(error, match=message):
        code_counts(codes, k)


def test_code_counts_by_level_of_records():
    rng = np.random.default_rng(1)
    records = {"top": rng.integers(0, 5, (9, 2, 2)).astype(np.int32),
               "bottom": rng.integers(0, 6, (9, 4, 4)).astype(np.int32),
               "label": np.zeros(9, np.int32)}
    dataset = tf.data.Dataset.from_tensor_slices(records)
    for given in (dataset, dataset.batch(4)):
        counts = code_counts_by_level(given, {"top": 5, "bottom": 6}, batch_size=4)
        np.testing.assert_array_equal(counts["top"], np.bincount(records["top"].ravel(),
                                                                 minlength=5))
        np.testing.assert_array_equal(counts["bottom"], np.bincount(records["bottom"].ravel(),
                                                                    minlength=6))
    with pytest.raises(ValueError, match=r"Received: codes in \[0, 5\]"):
        code_counts_by_level(dataset, {"bottom": 5})
    with pytest.raises(ValueError, match="no 'middle' codes"):
        code_counts_by_level(dataset, {"middle": 5})


# ------------------------------------------------------------------ summary
def test_usage_summary_by_hand():
    summary = usage_summary(np.array([3, 0, 1, 0]))
    assert summary["usage"] == 50.0
    assert summary["dead_codes"] == 2 and isinstance(summary["dead_codes"], int)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert summary["perplexity"] == pytest.approx(math.exp(entropy), rel=1e-12)
    assert summary["num_embeddings"] == 4 and summary["count"] == 4
    # Uniform use: perplexity K; one code: 1.
    assert usage_summary(np.full(8, 5))["perplexity"] == pytest.approx(8.0)
    assert usage_summary(np.array([0, 9, 0]))["perplexity"] == pytest.approx(1.0)


def test_usage_summary_agrees_with_tfvqvae_metrics():
    counts = np.random.default_rng(2).integers(0, 4, 32) * np.arange(32) % 11
    summary = usage_summary(counts)
    metric = CodebookUsage(32)
    metric.update_state(counts.astype(np.float32))
    result = {k: float(v) for k, v in metric.result().items()}
    assert summary["usage"] == pytest.approx(result["usage"])
    assert summary["dead_codes"] == result["dead_codes"]
    assert summary["perplexity"] == pytest.approx(float(perplexity_from_counts(counts)), rel=1e-5)


@pytest.mark.parametrize("counts, message", [
    (np.zeros(4), "counts all 0"),
    (np.array([1, -1]), r"Received: counts in \[-1.0, 1.0\]"),
    (np.array([1.0, np.nan]), "finite"),
    (np.ones((2, 2)), r"Received: counts of shape \(2, 2\)"),
    (np.array([]), r"Received: counts of shape \(0,\)"),
])
def test_usage_summary_refuses_bad_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        usage_summary(counts)


# -------------------------------------------------------------------- chart
def bar_heights(image, k, bar, title=False):
    """Rows of BAR_COLOR in the middle column of each code's bar."""
    columns = MARGIN + np.arange(k) * bar + bar // 2
    is_bar = np.all(image == BAR_COLOR, axis=-1)
    return is_bar[:, columns].sum(axis=0)


def test_histogram_bars_are_proportional_to_the_counts():
    counts = np.array([40, 0, 10, 25, 3, 0, 17, 33])
    height = 80
    image = histogram_image(counts, height=height, width=64)
    bar = 64 // 8
    assert image.dtype == np.uint8
    assert image.shape == (MARGIN + height + 1 + 3 + MARGIN, MARGIN + 8 * bar + MARGIN, 3)
    expected = np.round(counts / 40 * height)  # 80, 0, 20, 50, 6, 0, 34, 66
    np.testing.assert_array_equal(bar_heights(image, 8, bar), expected)
    # Every column of a bar has its height; the bars stand on the axis row.
    is_bar = np.all(image == BAR_COLOR, axis=-1)
    np.testing.assert_array_equal(is_bar.sum(axis=0)[MARGIN:MARGIN + 64],
                                  np.repeat(expected, bar))
    axis_row = MARGIN + height
    assert np.all(image[axis_row, MARGIN:MARGIN + 64] == AXIS_COLOR)
    assert np.all(is_bar[axis_row - 1, MARGIN:MARGIN + bar])  # code 0's bar reaches the axis
    # Dead codes (1 and 5) and only they are marked below the axis.
    dead = np.all(image[axis_row + 1] == DEAD_COLOR, axis=-1)[MARGIN:MARGIN + 64]
    np.testing.assert_array_equal(dead, np.repeat(counts == 0, bar))


def test_histogram_frequency_order_title_and_narrow_width():
    counts = np.array([5, 20, 0, 10])
    image = histogram_image(counts, height=20, width=4, order="frequency")
    np.testing.assert_array_equal(bar_heights(image, 4, 1), [20, 10, 5, 0])
    titled = histogram_image(counts, title="top: K=4 used 75%", height=20, width=4)
    assert titled.shape[0] > image.shape[0]
    assert np.any(np.all(titled[:titled.shape[0] - image.shape[0] + MARGIN] == 0, axis=-1))
    # More codes than the width: one column per code.
    wide = histogram_image(np.arange(1, 301), height=10, width=100)
    assert wide.shape[1] == MARGIN + 300 + MARGIN
    with pytest.raises(ValueError, match="Received: order='sorted'"):
        histogram_image(counts, order="sorted")
    with pytest.raises(ValueError, match="Received: height=0"):
        histogram_image(counts, height=0)


# -------------------------------------------------------------------- files
def read_events(logdir):
    """{tag: (plugin name, ndarray)} of every summary value in the logdir's event files."""
    found = {}
    for path in sorted(tf.io.gfile.glob(str(logdir / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[value.tag] = (value.metadata.plugin_data.plugin_name,
                                    tf.make_ndarray(value.tensor), event.step)
    return found


def test_write_usage_histograms_png_and_tensorboard(tmp_path):
    counts = {"top": np.array([3, 0, 1, 0]), "bottom": np.array([2, 2, 5, 1, 0, 7])}
    paths = write_usage_histograms(tmp_path / "charts", counts, logdir=tmp_path / "logs",
                                   step=7, height=30, width=60)
    assert list(paths) == ["top", "bottom"]
    assert paths["top"] == tmp_path / "charts" / "codebook-usage-top.png"
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == [
        "codebook-usage-bottom.png", "codebook-usage-top.png"]
    from PIL import Image  # an independent PNG reader

    for level, path in paths.items():
        png = np.asarray(Image.open(path).convert("RGB"))
        k = len(counts[level])
        bar = 60 // k
        np.testing.assert_array_equal(bar_heights(png, k, bar),
                                      np.round(counts[level] / counts[level].max() * 30))

    events = read_events(tmp_path / "logs")
    for level, level_counts in counts.items():
        tag = f"codebook_usage/{level}"
        plugin, tensor, step = events[tag]
        assert plugin == "histograms" and step == 7
        k = len(level_counts)
        np.testing.assert_array_equal(tensor[:, 0], np.arange(k))
        np.testing.assert_array_equal(tensor[:, 1], np.arange(1, k + 1))
        np.testing.assert_array_equal(tensor[:, 2], level_counts)
        assert events[f"{tag}/chart"][0] == "images"
        summary = usage_summary(level_counts)
        for name in ("usage", "dead_codes", "perplexity"):
            plugin, value, _ = events[f"{tag}/{name}"]
            assert plugin == "scalars"
            assert float(value) == pytest.approx(summary[name], rel=1e-6)
    assert events["codebook_usage/top/usage"][1] == 50.0


def test_write_usage_histograms_without_logdir_and_bad_input(tmp_path):
    paths = write_usage_histograms(tmp_path, {"top": np.array([1, 2])})
    assert paths == {"top": tmp_path / "codebook-usage-top.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codebook-usage-top.png"]
    with pytest.raises(ValueError, match="Received: level='a/b'"):
        write_usage_histograms(tmp_path, {"a/b": np.array([1, 2])})
    with pytest.raises(ValueError, match="counts all 0"):
        write_usage_histograms(tmp_path, {"top": np.array([0, 0])})
    with pytest.raises(ValueError, match="non-empty dict"):
        write_usage_histograms(tmp_path, {})
