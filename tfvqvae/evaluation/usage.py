"""Per-level codebook usage: code histograms, their summary, PNG bar charts and TensorBoard.

For one level with K codes and counts c_k (how often code k occurs in the
code maps of a dataset), with p_k = c_k / Σ c (the definitions of
`tfvqvae.metrics`, here in float64 NumPy):

* usage       100 · #{k : c_k > 0} / K          (percent of the codebook used)
* dead codes  K − #{k : c_k > 0}
* perplexity  exp(−Σ_k p_k ln p_k), 0 ln 0 = 0  (K for uniform use, 1 for one code)

A codebook whose usage falls well below 100 % or whose perplexity is far
below K has collapsed in part (van den Oord et al. 2017, Razavi et al. 2019
discuss codebook collapse; Dhariwal et al. 2020, Jukebox, report usage).

The charts are drawn with NumPy alone (no plotting library is a dependency):
`histogram_image` returns a uint8 RGB array, `write_usage_histograms` writes
one PNG per level (atomically, `tfvqvae.atomic`) and optionally TensorBoard
events: the counts as a histogram, the chart as an image, and the summary
as scalars.
"""

import math
import numbers
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvqvae import atomic

__all__ = [
    "BAR_COLOR",
    "DEAD_COLOR",
    "MARGIN",
    "code_counts",
    "code_counts_by_level",
    "histogram_image",
    "usage_summary",
    "write_usage_histograms",
]

# Chart layout (see `histogram_image`).
MARGIN = 4
BACKGROUND = (255, 255, 255)
BAR_COLOR = (31, 119, 180)
AXIS_COLOR = (128, 128, 128)
DEAD_COLOR = (214, 39, 40)
TEXT_COLOR = (0, 0, 0)
_DEAD_STRIP = 3
_TEXT_SCALE = 2
_ORDERS = ("index", "frequency")


# ---------------------------------------------------------------------- counts
def _num_embeddings(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"`num_embeddings` must be a positive integer. Received: num_embeddings={value!r}")
    return int(value)


def _is_one_array(codes):
    return isinstance(codes, (np.ndarray, np.generic)) or tf.is_tensor(codes)


def _count_batch(batch, k):
    array = np.asarray(batch)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"Codes must be integers. Received: codes with dtype={array.dtype}")
    array = array.ravel()
    if array.size == 0:
        return None
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= k:
        raise ValueError(f"Codes must lie in [0, {k}). Received: codes in [{low}, {high}]")
    return np.bincount(array.astype(np.int64), minlength=k).astype(np.int64)


def code_counts(codes, num_embeddings):
    """int64 (K,) histogram of one level's codes: counts[k] = #{codes equal to k}.

    Args:
        codes: one integer array of any shape (NumPy or tensor, e.g. code maps
            (N, h, w)), or an iterable of such batches (a list, a
            ``tf.data.Dataset`` such as ``records.map(lambda r: r["top"]).batch(4096)``).
        num_embeddings: K.

    Returns:
        int64 NumPy array (K,), summing to the number of codes.

    Raises:
        ValueError: K not a positive int; a code < 0 or >= K (the message
            gives the range received); no codes at all ("Received: 0 codes").
        TypeError: non-integer codes.
    """
    k = _num_embeddings(num_embeddings)
    counts = np.zeros(k, np.int64)
    batches = [codes] if _is_one_array(codes) else codes
    for batch in batches:
        found = _count_batch(batch, k)
        if found is not None:
            counts += found
    if not counts.any():
        raise ValueError("code_counts needs at least one code. Received: 0 codes")
    return counts


def code_counts_by_level(records, num_embeddings, batch_size=4096):
    """{level: int64 (K,) counts} of a code file's records, in one pass.

    Args:
        records: unbatched records ``{level: int (h, w), ..., "label": ...}``
            (the dataset `tfvqvae.data.load_codes` returns), or an iterable of
            such dicts already batched.
        num_embeddings: {level: K} of the levels to count
            (``metadata["num_embeddings"]`` or ``model.level_num_embeddings``).
        batch_size: records per step when ``records`` is an unbatched
            ``tf.data.Dataset``. Defaults to 4096.

    Raises:
        ValueError: as `code_counts`, per level; a level missing from the
            records; a bad ``batch_size``.
    """
    if not isinstance(num_embeddings, dict) or not num_embeddings:
        raise ValueError(
            f"`num_embeddings` must be a non-empty dict {{level: K}}. "
            f"Received: num_embeddings={num_embeddings!r}")
    ks = {level: _num_embeddings(k) for level, k in num_embeddings.items()}
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    counts = {level: np.zeros(k, np.int64) for level, k in ks.items()}
    if isinstance(records, tf.data.Dataset) and not _is_batched(records, ks):
        records = records.batch(batch_size)
    for batch in records:
        for level, k in ks.items():
            if level not in batch:
                raise ValueError(
                    f"The records have no {level!r} codes. Received: keys {sorted(batch)}")
            found = _count_batch(batch[level], k)
            if found is not None:
                counts[level] += found
    for level, found in counts.items():
        if not found.any():
            raise ValueError(f"code_counts_by_level found no {level!r} codes. "
                             "Received: 0 codes")
    return counts


def _is_batched(dataset, levels):
    spec = dataset.element_spec
    level = next(iter(levels))
    return isinstance(spec, dict) and level in spec and spec[level].shape.rank == 3


# --------------------------------------------------------------------- summary
def _check_counts(counts):
    array = np.asarray(counts)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"`counts` must be numbers. Received: counts with dtype={array.dtype}")
    array = array.astype(np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"`counts` must be a non-empty vector (K,). Received: counts of shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.min() < 0:
        raise ValueError(
            "`counts` must be finite and >= 0. Received: counts in "
            f"[{np.nanmin(array)}, {np.nanmax(array)}]")
    if array.sum() == 0:
        raise ValueError("`counts` must count at least one code. Received: counts all 0")
    return array


def usage_summary(counts):
    """Usage, dead codes and perplexity of one level's (K,) code counts.

    Definitions of `tfvqvae.metrics` (``CodebookUsage``,
    ``perplexity_from_counts``), computed in float64.

    Returns:
        JSON-ready dict: ``usage`` (float, percent of the K codes used),
        ``dead_codes`` (int), ``perplexity`` (float, exp of the entropy in
        nats of p = counts / Σ counts), ``num_embeddings`` (K) and
        ``count`` (Σ counts). E.g. counts [3, 0, 1, 0] give usage 50.0,
        2 dead codes, perplexity exp(−(¾ ln ¾ + ¼ ln ¼)) ≈ 1.755.

    Raises:
        ValueError: counts not a non-empty vector, negative or non-finite
            values, or all zero.
        TypeError: non-numeric counts.
    """
    array = _check_counts(counts)
    k = array.size
    used = int(np.count_nonzero(array))
    total = float(array.sum())
    p = array[array > 0] / total
    entropy = float(-np.sum(p * np.log(p)))
    count = int(total) if float(total).is_integer() else total
    return {
        "usage": 100.0 * used / k,
        "dead_codes": k - used,
        "perplexity": math.exp(entropy),
        "num_embeddings": k,
        "count": count,
    }


# ----------------------------------------------------------------------- chart
# A 3x5 pixel font: enough for titles such as "top: K=512 used 97.3% ppl 412.5".
_GLYPHS = {
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "J": ("..#", "..#", "..#", "#.#", ".#."),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"), "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "#.#", "#.#", "#.#"), "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": (".#.", "#.#", "#.#", "#.#", ".#."), "P": ("##.", "#.#", "##.", "#..", "#.."),
    "Q": (".#.", "#.#", "#.#", "##.", ".##"), "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": (".##", "#..", ".#.", "..#", "##."), "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "#.#", "###", "#.#"), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."), "Z": ("###", "..#", ".#.", "#..", "###"),
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("##.", "..#", ".#.", "#..", "###"), "3": ("##.", "..#", ".#.", "..#", "##."),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "##.", "..#", "##."),
    "6": (".##", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "##."),
    " ": ("...", "...", "...", "...", "..."), ".": ("...", "...", "...", "...", ".#."),
    ",": ("...", "...", "...", ".#.", "#.."), ":": ("...", ".#.", "...", ".#.", "..."),
    "-": ("...", "...", "###", "...", "..."), "_": ("...", "...", "...", "...", "###"),
    "=": ("...", "###", "...", "###", "..."), "+": ("...", ".#.", "###", ".#.", "..."),
    "/": ("..#", "..#", ".#.", "#..", "#.."), "%": ("#.#", "..#", ".#.", "#..", "#.#"),
    "(": (".#.", "#..", "#..", "#..", ".#."), ")": (".#.", "..#", "..#", "..#", ".#."),
    "?": ("##.", "..#", ".#.", "...", ".#."),
}
_GLYPH_BITS = {c: np.array([[p == "#" for p in row] for row in rows]) for c, rows in
               _GLYPHS.items()}
_TEXT_HEIGHT = 5 * _TEXT_SCALE


def _draw_text(image, text, top, left):
    """Draws ``text`` (upper-cased; unknown characters as "?") into ``image``, clipped."""
    x = left
    for char in str(text).upper():
        bits = _GLYPH_BITS.get(char, _GLYPH_BITS["?"])
        bits = bits.repeat(_TEXT_SCALE, axis=0).repeat(_TEXT_SCALE, axis=1)
        h, w = bits.shape
        room = image.shape[1] - MARGIN - x
        if room <= 0:
            break
        region = image[top:top + h, x:x + min(w, room)]
        region[bits[:, :min(w, room)]] = TEXT_COLOR
        x += w + _TEXT_SCALE


def histogram_image(counts, title=None, height=128, width=512, order="index"):
    """A bar chart of one level's (K,) code counts, as a uint8 (rows, columns, 3) RGB array.

    Layout, top to bottom: a ``MARGIN``-pixel border; the ``title`` (if
    any) in a 3x5 pixel font scaled 2x, upper-cased, clipped to the width,
    then a ``MARGIN`` gap; the plot area of ``height`` rows; one
    ``AXIS_COLOR`` row (the baseline); a 3-row strip where every dead code
    (count 0) is marked in ``DEAD_COLOR``; the border. Left to right: the
    border, then code k's bar in columns ``MARGIN + k·b`` to
    ``MARGIN + (k+1)·b − 1`` with b = max(1, width // K) (so the plot is
    K·b pixels wide: ``width`` rounded down to a multiple of K, or K when
    K > width), then the border.

    Code k's bar (``BAR_COLOR`` on white) rises from the baseline by
    ``round(counts[k] / max(counts) · height)`` rows (NumPy's round-half-
    to-even): heights are proportional to the counts, the most used code
    filling the plot; a rarely used code may round to no bar, but only
    dead codes get the red mark.

    Args:
        counts: (K,) non-negative counts (`code_counts`).
        title: text above the chart, or None.
        height: rows of the plot area. Defaults to 128.
        width: wanted plot width in pixels (see above). Defaults to 512.
        order: "index" (bars by code index) or "frequency" (most used first:
            the rank-frequency curve). Defaults to "index".

    Returns:
        uint8 NumPy array (rows, columns, 3).

    Raises:
        ValueError: bad counts (see `usage_summary`), ``height`` / ``width``
            not positive ints, an unknown ``order``.
    """
    array = _check_counts(counts)
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if order not in _ORDERS:
        raise ValueError(f"`order` must be one of {_ORDERS}. Received: order={order!r}")
    if order == "frequency":
        array = -np.sort(-array, kind="stable")
    k = array.size
    bar = max(1, int(width) // k)
    plot_width = k * bar
    title_rows = 0 if title is None else _TEXT_HEIGHT + MARGIN
    rows = MARGIN + title_rows + height + 1 + _DEAD_STRIP + MARGIN
    columns = MARGIN + plot_width + MARGIN
    image = np.empty((rows, columns, 3), np.uint8)
    image[...] = BACKGROUND
    if title is not None:
        _draw_text(image, title, MARGIN, MARGIN)

    plot_top = MARGIN + title_rows
    baseline = plot_top + height  # the axis row
    bars = np.round(array / array.max() * height).astype(np.int64)
    # Column c of the plot belongs to code c // bar; a row r of the plot is
    # filled when it lies within the bar's height above the baseline.
    column_heights = np.repeat(bars, bar)
    depth = baseline - np.arange(plot_top, baseline)[:, None]  # 1 .. height, per row
    filled = depth <= column_heights[None, :]
    plot = image[plot_top:baseline, MARGIN:MARGIN + plot_width]
    plot[filled] = BAR_COLOR
    image[baseline, MARGIN:MARGIN + plot_width] = AXIS_COLOR
    dead = np.repeat(array == 0, bar)
    strip = image[baseline + 1:baseline + 1 + _DEAD_STRIP, MARGIN:MARGIN + plot_width]
    strip[:, dead] = DEAD_COLOR
    return image


def _check_level_name(level):
    name = str(level)
    if not name or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ValueError(
            "Level names go into file names: no '/', '\\' or empty names. "
            f"Received: level={level!r}")
    return name


def write_usage_histograms(folder, counts_by_level, logdir=None, step=0, order="index",
                           height=128, width=512):
    """Writes one usage chart per level as PNG (and, optionally, TensorBoard events).

    Files: ``folder/codebook-usage-<level>.png``, each written atomically
    (a temporary name in the same folder, then renamed), the chart of
    `histogram_image` titled with the level's `usage_summary`.

    TensorBoard (when ``logdir`` is given; one event file added to it), per
    level and at ``step``:

    * ``codebook_usage/<level>``: the counts as a histogram, one bucket
      [k, k+1) per code k holding counts[k] (written from the counts, so no
      code list is rebuilt; the "histograms" plugin's (K, 3) tensor of left
      edge, right edge, count);
    * ``codebook_usage/<level>/chart``: the PNG's image;
    * ``codebook_usage/<level>/usage``, ``.../dead_codes``,
      ``.../perplexity``: scalars.

    Args:
        folder: where the PNGs go (created if needed).
        counts_by_level: {level: (K,) counts} (`code_counts_by_level`).
        logdir: TensorBoard log folder, or None for PNGs only.
        step: the events' step. Defaults to 0.
        order, height, width: as `histogram_image`.

    Returns:
        {level: Path of its PNG}, in the order of ``counts_by_level``.

    Raises:
        ValueError: an empty dict, a level name unfit for a file name, bad
            counts (see `usage_summary`), or a bad chart argument.
    """
    if not isinstance(counts_by_level, dict) or not counts_by_level:
        raise ValueError(
            "`counts_by_level` must be a non-empty dict {level: counts}. "
            f"Received: {type(counts_by_level).__name__} {counts_by_level!r:.80}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise ValueError(f"`step` must be an integer. Received: step={step!r}")
    folder = Path(folder)
    charts, summaries, paths = {}, {}, {}
    for level, counts in counts_by_level.items():
        name = _check_level_name(level)
        summary = usage_summary(counts)
        summaries[level] = summary
        title = (f"{name}: K={summary['num_embeddings']} used {summary['usage']:.1f}% "
                 f"dead {summary['dead_codes']} perplexity {summary['perplexity']:.1f}")
        charts[level] = histogram_image(counts, title=title, height=height, width=width,
                                        order=order)
    for level, chart in charts.items():
        path = folder / f"codebook-usage-{_check_level_name(level)}.png"
        atomic.write_bytes(path, tf.io.encode_png(chart).numpy())
        paths[level] = path
    if logdir is not None:
        _write_events(Path(logdir), counts_by_level, charts, summaries, int(step))
    return paths


def _write_events(logdir, counts_by_level, charts, summaries, step):
    from tensorboard.plugins.histogram import metadata as histogram_metadata

    writer = tf.summary.create_file_writer(str(logdir))
    try:
        with writer.as_default():
            for level, counts in counts_by_level.items():
                tag = f"codebook_usage/{level}"
                array = np.asarray(counts, np.float64)
                edges = np.arange(array.size + 1, dtype=np.float64)
                buckets = np.stack([edges[:-1], edges[1:], array], axis=1)
                summary = summaries[level]
                tf.summary.write(
                    tag, tf.constant(buckets, tf.float64), step=step,
                    metadata=histogram_metadata.create_summary_metadata(
                        display_name=tag,
                        description=f"Uses of each of the {array.size} codes of level {level}"),
                )
                tf.summary.image(f"{tag}/chart", charts[level][None], step=step)
                tf.summary.scalar(f"{tag}/usage", summary["usage"], step=step)
                tf.summary.scalar(f"{tag}/dead_codes", summary["dead_codes"], step=step)
                tf.summary.scalar(f"{tag}/perplexity", summary["perplexity"], step=step)
        writer.flush()
    finally:
        writer.close()
