"""Ancestral sampling from a `PixelCNNPrior`: naive, cached and compiled.

All three draw the code at (i, j) by the Gumbel-max trick,

    z_ij = argmax_k (logits_ijk / T + g_ijk),   g = −log(−log u),  u ~ U(0, 1)

with all the noise u drawn up front from ``seed`` (stateless), so the
samplers give the same maps whenever their logits agree. A prior over codes
with a depth axis (``code_shape`` (H, W, Q)) draws a position's Q codes in
order, z_ijq from its logits given z_ij,<q, each with its own noise g_ijq.

* naive: one full forward pass of the prior per position (H·W passes), as
  the keras.io example, TFP's PixelCNN and most PyTorch code do.
* cached (Ramachandran et al. 2017, "Fast Generation for Convolutional
  Autoregressive Models"): each block keeps the inputs its masked
  convolutions still need — the current row of its horizontal input and the
  last c + 1 rows of its vertical input — and each step computes only the
  new position: one matrix product per block for the horizontal convolution
  (the mask's visible taps), the gates, and for each attention block the
  position's key and value, added to caches that the query attends over.
  The vertical stack, which sees whole rows, advances one row when a row is
  complete. Everything runs inside one ``tf.function`` with nested
  ``tf.while_loop``s.
* compiled: the cached sampler's loops compiled by XLA (``jit_compile``), so
  a step's small ops are fused and no longer dispatched one by one; the
  noise is drawn outside XLA (whose stateless random numbers differ).

A hierarchy's priors form a chain, top first (`check_chain`): the top prior
is unconditioned (or class-conditioned) and each lower prior is conditioned
on the code map of the level directly above. `sample_levels` (eager) and
`levels_sampler` (inside a graph, for exporters) draw the levels top first,
level k with seed ``seed + LEVEL_SEED_STRIDE * k``, for 1, 2 or any number
of levels; both give the same codes.
"""

import numbers
import weakref

import tensorflow as tf

from tfvqvae.models.incremental import IncrementalPrior
from tfvqvae.validation import finite_float
from tfvqvae.validation import one_of

# The samplers, by name (``method``).
METHODS = ("cached", "compiled", "naive")

# Levels of a hierarchy are sampled with seeds seed + LEVEL_SEED_STRIDE * i
# (top first), so one seed fixes a whole sample.
LEVEL_SEED_STRIDE = 1000

# prior -> {(method, batch): traced sampler}; dies with the prior.
_COMPILED = weakref.WeakKeyDictionary()


def gumbel_noise(batch, height, width, num_embeddings, seed, depth=None):
    """g = −log(−log u), u ~ U(0, 1), shape (H, W, B, K) (or (H, W, B, Q, K)
    for a ``depth`` Q), fixed by ``seed``."""
    depth_axis = [] if depth is None else [depth]
    u = tf.random.stateless_uniform(
        [height, width, batch, *depth_axis, num_embeddings],
        seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)]),
        minval=1e-12,
        maxval=1.0,
    )
    return -tf.math.log(-tf.math.log(u))


def check_temperature(temperature):
    """``temperature`` as a Python float once it is a finite number > 0.

    A Python or NumPy real number, or a scalar tensor / array holding one.

    Raises:
        TypeError: not a real number (a string, None, a bool, a non-scalar):
            "`temperature` must be a finite number > 0. Received: ...".
        ValueError: 0, negative, NaN or Inf (Inf would make every draw
            uniform noise; NaN every code 0), in the same words.
    """
    value = temperature
    if not isinstance(value, numbers.Real):  # a scalar tensor or array
        try:
            if isinstance(value, (str, bytes)) or value is None:
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            value = None
    if value is None or isinstance(value, bool):
        raise TypeError(
            f"`temperature` must be a finite number > 0. Received: temperature={temperature!r}"
        )
    return finite_float("temperature", value, low=0, low_open=True)


def sample(prior, method, batch, labels, condition, temperature, seed):
    """Runs the ``method`` sampler, traced once per prior, method and batch size.

    Raises:
        ValueError: ``temperature`` is not a finite number > 0.
        TypeError: ``temperature`` is not a number (`check_temperature`).
    """
    temperature = check_temperature(temperature)
    cache = _COMPILED.setdefault(prior, {})
    key = (method, batch)
    if key not in cache:
        # NB: the traced function must not keep the prior alive, or the
        # weak-keyed cache would never let go of it.
        cache[key] = tf.function(sampler(weakref.proxy(prior), batch, method))
    return cache[key](
        _drop_none(labels),
        _drop_none(condition),
        tf.constant(temperature, tf.float32),
        tf.constant(seed, tf.int64),
    )


def sampler(prior, batch, method):
    """The ``method`` sampler of ``prior``: a function (labels, condition, temperature, seed).

    "naive" (`naive_sampler`), "cached" (`cached_sampler`) or "compiled"
    (the cached sampler's loops compiled by XLA); all three give the same
    maps for a seed.
    """
    one_of("method", method, METHODS)
    if method == "naive":
        return naive_sampler(prior, batch)
    return cached_sampler(prior, batch, jit_compile=method == "compiled")


def _pick(logits, noise, temperature):
    return tf.argmax(logits / temperature + noise, axis=-1, output_type=tf.int32)


def naive_sampler(prior, batch):
    """A function (labels, condition, temperature, seed) → int32 (B, H, W[, Q]).

    H·W (·Q) full forward passes. ``batch`` may be an int or a scalar
    tensor; wrap the function in ``tf.function`` (as `sample` does, or an
    exporter).
    """
    height, width = prior.map_shape
    depth = prior.code_depth
    size = height * width * (depth or 1)

    def run(labels, condition, temperature, seed):
        noise = gumbel_noise(batch, height, width, prior.num_embeddings, seed, depth)
        inputs = {
            "labels": labels if prior.num_classes is not None else None,
            "condition": condition if prior.is_conditioned else None,
        }

        def step(position, codes):
            logits = prior({**inputs, "codes": codes})  # (B, H, W[, Q], K)
            if depth is None:
                i, j = position // width, position % width
                new = _pick(logits[:, i, j], noise[i, j], temperature)  # (B,)
            else:
                i, j, q = position // (width * depth), (position // depth) % width, position % depth
                new = _pick(logits[:, i, j, q], noise[i, j][:, q], temperature)
            spot = tf.reshape(tf.one_hot(position, size, dtype=tf.int32), [1, *prior.code_shape])
            codes = codes + spot * tf.reshape(new, [-1] + [1] * len(prior.code_shape))
            return position + 1, codes

        codes = tf.zeros([batch, *prior.code_shape], tf.int32)
        _, codes = tf.while_loop(lambda position, _: position < size, step, (0, codes))
        return codes

    return run


def _drop_none(value):
    return value if value is not None else tf.zeros([0], tf.int32)


def cached_sampler(prior, batch, jit_compile=False):
    """Like `naive_sampler`, with cached activations: the same maps, much faster.

    Per position each gated block does one matrix product for its horizontal
    convolution (`GatedBlock.horizontal_kernel`: the row's last c + 1 inputs,
    kept in a buffer) and its gates; an attention block adds the position's
    key and value to its caches (N = H·W rows each) and attends over them
    (`CausalSelfAttention.step`). The vertical stacks advance once per row.
    The steps are `tfvqvae.models.incremental.IncrementalPrior`'s, which the
    image codec shares.

    With ``jit_compile`` the two nested loops are compiled by XLA as one
    program (per-step ops fused, no per-op dispatch); the noise is drawn
    outside it, because XLA's stateless random numbers differ from the
    kernels', so all three samplers still see the same noise.
    """
    height, width = prior.map_shape
    depth = prior.code_depth
    incremental = IncrementalPrior(prior)

    def loop(noise, labels, condition, temperature):
        batch = tf.shape(noise)[2]
        context = incremental.context(batch, labels, condition)

        def row_step(i, codes, state):
            def column(j, row_codes, state):
                def pick(logits, q):  # q: the depth, None without a depth axis
                    return _pick(logits, noise[i, j] if q is None else noise[i, j][:, q],
                                 temperature)

                code, _, state = incremental.choose(context, state, i, j, pick)
                return j + 1, row_codes.write(j, code), incremental.write(state, j, code)

            _, row_codes, state = tf.while_loop(
                lambda j, *_: j < width,
                column,
                (0, tf.TensorArray(tf.int32, size=width), state),
            )
            codes = codes.write(i, row_codes.stack())  # (W, B[, Q])
            return i + 1, codes, incremental.end_row(context, state, i)

        _, codes, _ = tf.while_loop(
            lambda i, *_: i < height,
            row_step,
            (0, tf.TensorArray(tf.int32, size=height), incremental.start(batch)),
        )
        codes = codes.stack()  # (H, W, B[, Q])
        return tf.transpose(codes, [2, 0, 1] if depth is None else [2, 0, 1, 3])

    if jit_compile:
        loop = tf.function(loop, jit_compile=True, autograph=False)

    def run(labels, condition, temperature, seed):
        noise = gumbel_noise(batch, height, width, prior.num_embeddings, seed, depth)
        return loop(noise, labels, condition, temperature)

    return run


# ------------------------------------------------------------------ chains
def check_chain(priors):
    """``priors`` as a list of (level, prior), top first, checked as a chain.

    Args:
        priors: {level: PixelCNNPrior}, top first (a dict keeps its order),
            or a list of priors (levels named 0, 1, …).

    Raises:
        ValueError: no prior; the top prior is conditioned on a code map; a
            lower prior's conditioning map (``condition_shape``,
            ``condition_num_embeddings``) is not the code map of the level
            directly above; the priors disagree on ``num_classes``.

    A lower prior without spatial conditioning is allowed and sampled on its
    own (given the labels, if class-conditional).
    """
    items = list(priors.items()) if isinstance(priors, dict) else list(enumerate(priors))
    if not items:
        raise ValueError("Sampling a hierarchy needs at least one prior. Received: none")
    top_level, top = items[0]
    if top.is_conditioned:
        raise ValueError(
            f"The top prior ({top_level!r}) must not be conditioned on a code map: "
            f"nothing lies above it. Received: condition_shape={top.condition_shape}"
        )
    for (above_level, above), (level, prior) in zip(items, items[1:]):
        if prior.is_conditioned and (
            tuple(prior.condition_shape) != tuple(above.code_shape)
            or prior.condition_num_embeddings != above.num_embeddings
        ):
            raise ValueError(
                f"The {level!r} prior must be conditioned on the level directly above "
                f"({above_level!r}: shape {tuple(above.code_shape)}, "
                f"{above.num_embeddings} codes). Received: condition_shape="
                f"{tuple(prior.condition_shape)}, condition_num_embeddings="
                f"{prior.condition_num_embeddings}"
            )
    classes = {p.num_classes for _, p in items} - {None}
    if len(classes) > 1:
        raise ValueError(
            f"The priors are conditioned on different numbers of classes: {sorted(classes)}"
        )
    return items


def sample_levels(priors, num_samples=None, labels=None, temperature=1.0, seed=0,
                  method="cached", given=None):
    """Ancestral sampling of a chain of priors: {level: int32 (B, h, w[, Q])}, top first.

    Level k (top = 0) is drawn by its prior's ``sample`` with seed
    ``seed + LEVEL_SEED_STRIDE * k``, given ``labels`` when the prior is
    class-conditional and the codes just drawn for level k − 1 when it is
    conditioned on a code map (Algorithm 2 of VQ-VAE-2, for any number of
    levels). The same seed gives the same codes. With ``given``, the top
    levels are not drawn but taken as they are (an image's own codes), and
    only the levels below them are sampled: what the kept levels determine,
    completed by the priors.

    Args:
        priors: {level: PixelCNNPrior}, top first (see `check_chain`).
        num_samples: B; may be omitted when ``labels`` or ``given`` give it.
        labels: int (B,) classes, for class-conditional priors.
        temperature: a finite number > 0. Defaults to 1.0.
        seed: int. Defaults to 0.
        method: "cached", "compiled" or "naive" (`sampler`). Defaults to "cached".
        given: None, or {level: int (B, h, w[, Q]) codes} for the first levels of
            the chain (top, then the one below, ...). Defaults to None.

    Raises:
        ValueError: a broken chain (`check_chain`), ``given`` levels that are
            not the top of the chain, or the prior's own refusals (method,
            temperature, labels, number of samples, code shapes and range;
            see `PixelCNNPrior.sample` and `PixelCNNPrior.check_inputs`).
        TypeError: a temperature that is not a number, non-integer labels.
    """
    chain = list(check_chain(priors))
    if given is not None and not isinstance(given, dict):
        raise TypeError(
            "`given` must be a dict {level: codes} for the top levels, top first. "
            f"Received: given of type {type(given).__name__}"
        )
    given = dict(given or {})
    names = [level for level, _ in chain]
    if list(given) != names[:len(given)]:
        raise ValueError(
            f"`given` must hold the top levels of the chain {names}, top first. "
            f"Received: given levels {list(given)}"
        )
    codes = {}
    above = None
    for k, (level, prior) in enumerate(chain):
        if level in given:  # checked like the prior's own codes, named as given
            codes[level] = tf.cast(prior._check_map(
                f"given[{level!r}]", given[level], prior.code_shape, prior.num_embeddings),
                tf.int32)
            if num_samples is None:
                num_samples = int(codes[level].shape[0])
            above = codes[level]
            continue
        codes[level] = prior.sample(
            num_samples,
            labels=labels if prior.num_classes is not None else None,
            condition=above if prior.is_conditioned else None,
            temperature=temperature,
            seed=int(seed) + LEVEL_SEED_STRIDE * k,
            method=method,
        )
        above = codes[level]
    return codes


def levels_sampler(priors, batch, method="cached"):
    """A function (labels, temperature, seed) → {level: int32 (B, h, w[, Q])}, for graphs.

    The graph-mode twin of `sample_levels` (the same codes for the same
    seed): wrap it in ``tf.function`` (an exporter's signature does).
    ``labels`` is an int32 (B,) tensor, or an empty one when no prior is
    class-conditional; ``batch`` an int or a scalar tensor; ``seed`` an
    int64 scalar. The temperature is not checked here (a tensor inside a
    graph): an exporter checks it in the graph.

    Raises:
        ValueError: an unknown ``method`` ("`method` must be one of
            ('cached', 'compiled', 'naive'). Received: method=..."), or a broken chain
            (`check_chain`).
    """
    one_of("method", method, METHODS)
    chain = [(level, prior, sampler(prior, batch, method)) for level, prior in check_chain(priors)]
    empty = tf.zeros([0], tf.int32)

    def run(labels, temperature, seed):
        codes, above = {}, empty
        for k, (level, prior, draw) in enumerate(chain):
            codes[level] = draw(
                labels if prior.num_classes is not None else empty,
                above if prior.is_conditioned else empty,
                temperature,
                seed + LEVEL_SEED_STRIDE * k,
            )
            above = codes[level]
        return codes

    return run
