"""Direct rate–distortion of a trained hierarchy: VQ-VAE-2's Table 1.

Rate: the priors' negative log-likelihood of the code maps. For one image
with code maps z (one per level, top first) and a chain of priors (the top
one unconditioned or class-conditioned, every lower one conditioned on the
level directly above, as `tfvqvae.models.sampling.sample_levels` samples
them), the bits the priors spend on level ℓ are

    bits_ℓ(z) = Σ_{i,j} −log2 p_ℓ(z_ℓ,ij | z_ℓ,<ij [, class] [, z_{ℓ−1}])

(a sum over the level's h·w code positions), and the total rate of the
image is Σ_ℓ bits_ℓ(z): the length of an ideal entropy code of the image's
code maps under the priors. "bits/dim" in this package means bits per
*code position* (bits_ℓ / (h·w)), what the priors' ``bits_per_dim`` metric
logs while training and what VQ-VAE-2 reports for its priors (3.40 / 3.41
train / validation for the top prior, 3.45 / 3.45 for the bottom one on
ImageNet 256x256); it is not bits per image pixel. Beside it stands the
naive rate Σ_ℓ h·w·log2 K_ℓ, the bits of the code maps written with a
fixed-length code (a uniform prior).

Distortion: the decoder's reconstruction of the code path,
``model.decode_levels(model.encode_levels(x))`` (encode to integer codes,
decode them: what a receiver of the codes sees, and what VQ-VAE-2 calls the
"VQ decoder" MSE, 0.0047 / 0.0050 train / validation). ``model(x)`` gives the
same images up to float rounding (its straight-through latents
z_e + stop_gradient(z_q − z_e) equal z_q within ~1 ulp); the code path is
used. MSE is the mean over every pixel value (all channels) of images in
[0, 1], as the models' ``mse`` metric, accumulated in float64; PSNR is
10·log10(1 / MSE) dB (`tfvqvae.metrics.psnr`).

The library never imports ``tfvqvae.training``: the per-level prior inputs
are built here (`prior_input_batches`) the way
``tfvqvae.training.train_prior.prior_inputs`` builds them for training,
from what the prior itself says it reads (``num_classes``,
``is_conditioned``) and the hierarchy's level order.

Reference: Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity
Images with VQ-VAE-2", NeurIPS 2019, Table 1, https://arxiv.org/abs/1906.00446
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from tfvqvae.metrics import psnr
from tfvqvae.models.autoencoder import check_image_values
from tfvqvae.models.autoencoder import unpack_images
from tfvqvae.models.pixelcnn_prior import prior_inputs

__all__ = [
    "decoder_distortion",
    "naive_bits_per_image",
    "prior_bits_per_image",
    "prior_input_batches",
    "prior_rate",
    "rate_distortion",
    "rate_distortion_markdown",
]

_LN2 = math.log(2.0)
_SPLITS = ("train", "validation")


# --------------------------------------------------------------------- checks
def _count(name, value, allow_none=True):
    """A positive int (NumPy ints accepted) or None, else a ValueError naming the value."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_prior(prior, name="prior"):
    for attribute in ("num_embeddings", "code_shape", "num_classes", "is_conditioned",
                      "check_inputs"):
        if not hasattr(prior, attribute):
            raise TypeError(
                f"`{name}` must be a tfvqvae PixelCNNPrior (it has no `{attribute}`). "
                f"Received: {name} of type {type(prior).__name__}"
            )


def _prior_inputs_of(batch):
    """The input dict of one batch: a dict, an ``(inputs, y)`` tuple or a bare code map."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], dict):
        batch = batch[0]
    if not isinstance(batch, dict):
        return {"codes": batch}
    unknown = sorted(set(batch) - {"codes", "labels", "condition"})
    if unknown:
        raise ValueError(
            "A prior batch is a dict with keys codes [, labels] [, condition]. "
            f"Received: keys {sorted(batch)}"
        )
    if "codes" not in batch:
        raise ValueError(f"A prior batch needs `codes`. Received: keys {sorted(batch)}")
    return batch


def _truncate(tensor, count):
    return None if tensor is None else tensor[:count]


# ----------------------------------------------------------------- the priors
def prior_input_batches(records, prior, level, levels, batch_size=64, max_examples=None):
    """Batches of ``prior``'s inputs from a code file's records, in record order.

    The same inputs as the prior gets in training
    (`tfvqvae.models.pixelcnn_prior.prior_inputs`): ``{"codes": record[level]}``, plus
    ``"labels": record["label"]`` when the prior is class-conditional
    (``prior.num_classes`` set) and ``"condition": record[<level above>]``
    when it is conditioned (``prior.is_conditioned``), the level above being
    the one before ``level`` in ``levels`` (top first).

    Args:
        records: unbatched ``tf.data.Dataset`` of code-file records
            ``{level: int32 (h, w), ..., "label": int32 ()}``, as
            `tfvqvae.data.load_codes` returns (its first element).
        prior: the `PixelCNNPrior` of ``level``.
        level: the level the prior models.
        levels: every level of the hierarchy, top first (``model.levels``
            or a code file's ``metadata["levels"]``).
        batch_size: records per batch. Defaults to 64.
        max_examples: keep only the first N records, or None for all.

    Returns:
        A batched ``tf.data.Dataset`` of dicts ``{"codes": int32 (B, h, w)
        [, "labels": int32 (B,)] [, "condition": int32 (B, h', w')]}``.

    Raises:
        ValueError: ``level`` not in ``levels``; a conditioned prior for the
            top level or an unconditioned one below it; a bad
            ``batch_size`` / ``max_examples`` (the message names the value).
    """
    _check_prior(prior)
    levels = list(levels)
    if level not in levels:
        raise ValueError(f"`level` must be one of {levels}. Received: level={level!r}")
    batch_size = _count("batch_size", batch_size, allow_none=False)
    max_examples = _count("max_examples", max_examples)
    index = levels.index(level)
    above = levels[index - 1] if index > 0 else None
    if prior.is_conditioned != (above is not None):
        raise ValueError(
            f"The prior of {level!r} must be conditioned on the level directly above "
            f"({above!r}) exactly when there is one. Received: a prior with "
            f"is_conditioned={prior.is_conditioned} for level {level!r} of {levels}"
        )
    labelled = prior.num_classes is not None

    def inputs(record):
        return prior_inputs(record, level, labelled, above)

    if max_examples is not None:
        records = records.take(max_examples)
    return records.map(inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
        batch_size).prefetch(tf.data.AUTOTUNE)


def _nats_function(prior):
    """A ``tf.function``: prior inputs -> float64 (B,) nats of each image's code map."""
    shape = tuple(prior.code_shape)  # (h, w), or (h, w, Q) with a depth axis
    signature = {"codes": tf.TensorSpec((None, *shape), tf.int32)}
    if prior.num_classes is not None:
        signature["labels"] = tf.TensorSpec((None,), tf.int32)
    if prior.is_conditioned:
        signature["condition"] = tf.TensorSpec((None, *prior.condition_shape), tf.int32)

    @tf.function(input_signature=[signature], autograph=False)
    def nats(inputs):
        logits = prior(inputs, training=False)  # float32 (B, h, w[, Q], K)
        per_code = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=inputs["codes"], logits=tf.cast(logits, tf.float32))
        return tf.reduce_sum(tf.cast(per_code, tf.float64), axis=list(range(1, 1 + len(shape))))

    return nats


def prior_bits_per_image(prior, batches, max_examples=None):
    """Bits each image's code map costs under ``prior``: Σ_ij −log2 p(z_ij | z_<ij, ·).

    With a depth axis (``prior.code_shape`` (h, w, Q)) the sum runs over
    every code: Σ_ijq −log2 p(z_ijq | z_<ij, z_ij,<q, ·).

    One forward pass per batch gives the logits (B, h, w, K) of every
    position given the codes before it in raster order (and the labels /
    conditioning map); −log p of the actual code is taken from them by a
    float32 log-softmax (``tf.nn.sparse_softmax_cross_entropy_with_logits``,
    the prior's own training loss: max-shifted, so stable for any logits;
    relative error ~1e-7 per position), and the h·w values of an image are
    summed in float64 and divided by ln 2. Only one batch of logits exists
    at a time: a float64 log-softmax would need 8·B·h·w·K bytes per batch
    (1 GiB for 64 maps of 64x64 with K = 512) for no gain at this precision.

    Every batch is checked eagerly by ``prior.check_inputs`` before the
    compiled forward pass (shapes, integer dtypes, values in range, labels /
    condition present exactly when the prior reads them).

    Args:
        prior: a `PixelCNNPrior`.
        batches: an iterable (e.g. a ``tf.data.Dataset``, or
            `prior_input_batches`) of dicts ``{"codes": int (B, h, w)
            [, "labels": int (B,)] [, "condition": int (B, h', w')]}``, or
            ``(dict, y)`` tuples (``y`` ignored), or bare int (B, h, w)
            code maps for a prior without conditioning. Batches of size 0
            are skipped.
        max_examples: stop after the first N images, or None for all.

    Returns:
        float64 NumPy array (N,): bits per image, in the order given.

    Raises:
        ValueError: no image at all ("Received: 0 examples"); a batch the
            prior refuses (wrong shape, codes outside [0, K): "codes must lie
            in [0, 512). Received: values in [-1, 7]", missing or unwanted
            labels / condition); unknown dict keys; a bad ``max_examples``.
        TypeError: not a prior; non-integer codes, labels or condition.
    """
    _check_prior(prior)
    max_examples = _count("max_examples", max_examples)
    nats = _nats_function(prior)
    chunks, seen = [], 0
    for batch in batches:
        if max_examples is not None and seen >= max_examples:
            break
        raw = _prior_inputs_of(batch)
        codes, labels, condition = prior.check_inputs(
            raw.get("codes"), raw.get("labels"), raw.get("condition"))
        size = int(codes.shape[0])
        if max_examples is not None and seen + size > max_examples:
            size = max_examples - seen
            codes, labels, condition = (_truncate(t, size) for t in (codes, labels, condition))
        if size == 0:
            continue
        inputs = {"codes": codes}
        if labels is not None:
            inputs["labels"] = labels
        if condition is not None:
            inputs["condition"] = condition
        chunks.append(nats(inputs).numpy())
        seen += size
    if not seen:
        raise ValueError(
            "prior_bits_per_image needs at least one code map. Received: 0 examples "
            f"in {type(batches).__name__} `batches`"
        )
    return np.concatenate(chunks) / _LN2


def prior_rate(prior, batches, max_examples=None):
    """Mean rate of ``prior`` over ``batches``, per code and per image.

    Args and errors: those of `prior_bits_per_image`.

    Returns:
        JSON-ready dict:

        * ``bits_per_dim``: mean bits per code (= ``bits_per_image`` /
          ``positions``); the priors' ``bits_per_dim`` metric, VQ-VAE-2's "NLL".
        * ``nats_per_dim``: the same in nats (the priors' ``nll``).
        * ``bits_per_image``: mean over images of Σ_ij −log2 p(z_ij | ·).
        * ``examples``: N, the images averaged over.
        * ``positions``: codes per image: h·w, or h·w·Q with a depth axis.
    """
    bits = prior_bits_per_image(prior, batches, max_examples)
    positions = math.prod(int(s) for s in prior.code_shape)
    per_image = float(np.mean(bits))
    return {
        "bits_per_dim": per_image / positions,
        "nats_per_dim": per_image / positions * _LN2,
        "bits_per_image": per_image,
        "examples": int(bits.shape[0]),
        "positions": positions,
    }


# -------------------------------------------------------------------- decoder
def decoder_distortion(model, batches, max_examples=None):
    """MSE and PSNR of the code path ``model.decode_levels(model.encode_levels(x))``.

    Args:
        model: a trained `VQVAE`, `VQVAE2` or `HierarchicalVQVAE` (the levels
            API).
        batches: an iterable (e.g. ``ImageSource.to_tf_dataset(batch_size)``)
            of float images (B, H, W, C) in [0, 1], or of ``(images, labels)``
            tuples (labels ignored). Batches of size 0 are skipped.
        max_examples: stop after the first N images, or None for all.

    Returns:
        JSON-ready dict:

        * ``mse``: Σ (x − x̂)² / (N·H·W·C) over every pixel value, summed in
          float64 (x̂ unclipped, as the models' ``mse`` metric);
        * ``psnr``: 10·log10(1 / mse) in dB (inf for mse = 0);
        * ``examples``: N.

    Raises:
        ValueError: no image at all ("Received: 0 examples"); images of a
            wrong rank, channel count or size for the model, of another size
            or dtype than the first batch's, or with NaN /
            Inf or values far outside [0, 1] (the model's checks); a bad
            ``max_examples``.
        TypeError: non-float images.
    """
    max_examples = _count("max_examples", max_examples)
    kind = type(model).__name__

    def squared_errors(images):
        reconstruction = model.decode_levels(model.encode_levels(images))
        error = tf.cast(images, tf.float64) - tf.cast(reconstruction, tf.float64)
        return tf.reduce_sum(tf.square(error), axis=[1, 2, 3])

    compiled, image_shape = None, None  # one trace, for the first batch's image shape
    total, values, seen = 0.0, 0, 0
    for batch in batches:
        if max_examples is not None and seen >= max_examples:
            break
        images = tf.convert_to_tensor(unpack_images(batch))
        if not images.dtype.is_floating:
            raise TypeError(
                f"{kind} expects float images in [0, 1]. "
                f"Received: images with dtype={images.dtype.name}")
        if images.shape.rank != 4:
            raise ValueError(
                "decoder_distortion expects batches of images (batch, height, width, "
                f"channels). Received: images with shape={tuple(images.shape)}")
        size = int(images.shape[0])
        if max_examples is not None and seen + size > max_examples:
            size = max_examples - seen
            images = images[:size]
        if size == 0:
            continue
        check_image_values(images, kind)
        if compiled is None:
            image_shape = tuple(images.shape[1:])
            compiled = tf.function(squared_errors, autograph=False, input_signature=[
                tf.TensorSpec((None, *image_shape), images.dtype)])
        elif tuple(images.shape[1:]) != image_shape:
            raise ValueError(
                f"decoder_distortion expects images of one size: (batch, {image_shape}) "
                f"after the first batch. Received: images with shape={tuple(images.shape)}")
        total += float(np.sum(compiled(images).numpy()))
        values += int(np.prod(images.shape))
        seen += size
    if not seen:
        raise ValueError(
            "decoder_distortion needs at least one image. Received: 0 examples "
            f"in {type(batches).__name__} `batches`")
    mse = total / values
    return {"mse": mse, "psnr": psnr(mse), "examples": seen}


# ---------------------------------------------------------------- naive rate
def naive_bits_per_image(num_embeddings, code_shapes):
    """Σ_levels h·w·log2 K (h·w·Q·log2 K with a depth axis): the bits of one
    image's code maps under uniform priors.

    Args:
        num_embeddings: {level: K}, as ``model.level_num_embeddings`` or a
            code file's ``metadata["num_embeddings"]``.
        code_shapes: {level: (h, w) or (h, w, Q)}, as ``model.code_shapes(image_size)``
            or ``metadata["code_shapes"]`` (lists accepted); the same levels.

    Returns:
        Python float. E.g. K = 512 at 4x4 and 8x8: 80·9 = 720.0.

    Raises:
        ValueError: the two dicts name different levels; a K that is not a
            positive int; a shape that is not two positive ints (the message
            names the level and the value).
    """
    if not isinstance(num_embeddings, dict) or not isinstance(code_shapes, dict):
        raise ValueError(
            "`num_embeddings` and `code_shapes` must be dicts by level. Received: "
            f"{type(num_embeddings).__name__} and {type(code_shapes).__name__}")
    if set(num_embeddings) != set(code_shapes) or not num_embeddings:
        raise ValueError(
            "`num_embeddings` and `code_shapes` must name the same, non-empty set of levels. "
            f"Received: {sorted(num_embeddings)} and {sorted(code_shapes)}")
    total = 0.0
    for level, k in num_embeddings.items():
        k = _count(f"num_embeddings[{level!r}]", k, allow_none=False)
        shape = code_shapes[level]
        try:
            sizes = [int(s) for s in shape]
            valid = all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                        for s in shape) and len(sizes) in (2, 3) and min(sizes) > 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(
                f"`code_shapes[{level!r}]` must be (height, width) or (height, width, depth), "
                f"positive integers. Received: code_shapes[{level!r}]={shape!r}")
        total += math.prod(sizes) * math.log2(k)
    return total


# -------------------------------------------------------------- composition
def _split_dataset(name, codes):
    """A records dataset from a dataset or a ``(dataset, metadata)`` pair (load_codes)."""
    if codes is None:
        return None
    if isinstance(codes, tuple) and len(codes) == 2 and isinstance(codes[1], dict):
        codes = codes[0]
    if not isinstance(codes, tf.data.Dataset):
        raise TypeError(
            f"`{name}` must be the records tf.data.Dataset of tfvqvae.data.load_codes "
            f"(or its (dataset, metadata) pair), or None. Received: {type(codes).__name__}")
    return codes


def _image_batches(name, images, batch_size, image_size):
    if images is None:
        return None
    if hasattr(images, "to_tf_dataset"):
        return images.to_tf_dataset(batch_size, image_size=image_size)
    if image_size is not None:
        raise ValueError(
            f"`image_size` resizes image sources (objects with `to_tf_dataset`); `{name}` is "
            f"an iterable of batches, to be given at the right size. Received: "
            f"image_size={image_size!r}")
    return images


def _check_priors(model, priors):
    levels = tuple(model.levels)
    if not isinstance(priors, dict) or set(priors) != set(levels):
        received = sorted(priors) if isinstance(priors, dict) else type(priors).__name__
        raise ValueError(
            f"`priors` must be a dict with one prior per level of the model {list(levels)}. "
            f"Received: {received}")
    for index, level in enumerate(levels):
        prior = priors[level]
        _check_prior(prior, f"priors[{level!r}]")
        k = int(model.level_num_embeddings[level])
        if prior.num_embeddings != k:
            raise ValueError(
                f"The {level!r} prior models K={prior.num_embeddings} codes, the model's "
                f"{level!r} codebook has {k}. Received: priors[{level!r}].num_embeddings="
                f"{prior.num_embeddings}")
        if index == 0:
            if prior.is_conditioned:
                raise ValueError(
                    f"The top prior ({level!r}) must not be conditioned on a code map. "
                    f"Received: condition_shape={prior.condition_shape}")
            continue
        above = priors[levels[index - 1]]
        wanted = (above.num_embeddings, tuple(above.code_shape))
        found = (getattr(prior, "condition_num_embeddings", None),
                 tuple(prior.condition_shape) if prior.is_conditioned else None)
        if found != wanted:
            raise ValueError(
                f"The {level!r} prior must be conditioned on the {levels[index - 1]!r} codes "
                f"(K, shape) = {wanted}. Received: {found}")
    return levels


def rate_distortion(model, priors, train_codes=None, validation_codes=None,
                    train_images=None, validation_images=None, *, batch_size=64,
                    image_size=None, max_examples=None):
    """VQ-VAE-2's Table 1 for one run: every prior's NLL and the decoder's MSE, both splits.

    Args:
        model: the trained autoencoder (levels API: ``levels``,
            ``level_num_embeddings``, ``encode_levels``, ``decode_levels``).
        priors: {level: `PixelCNNPrior`} for every level of the model: the top
            one unconditioned (or class-conditional), each lower one
            conditioned on the level directly above (the chain
            ``tfvqvae train-prior`` trains). Checked against the model and
            each other (K, conditioning K and shape).
        train_codes, validation_codes: the records of a code file (what
            `tfvqvae.data.load_codes` returns: the dataset, or the
            ``(dataset, metadata)`` pair), or None to skip that split's
            priors. Inputs per level: `prior_input_batches`.
        train_images, validation_images: image sources with
            ``to_tf_dataset(batch_size, image_size=...)`` (an `ImageSource`),
            or iterables of image batches, or None to skip that split's
            decoder row. Give the images at the size the codes were
            extracted at (``image_size``, e.g. a code file's
            ``metadata["source"]["image_size"]``).
        batch_size: images / code maps per forward pass. Defaults to 64.
        image_size: (H, W) to resize image sources to, or None (their own
            size).
        max_examples: evaluate only the first N records / images of each
            split (e.g. a subset of a large training set), or None for all.

    Returns:
        JSON-ready dict (level keys are the level names, top first)::

            {"levels": ["top", "bottom"],
             "priors": {level: {"train": prior_rate | None,
                                "validation": prior_rate | None,
                                "num_embeddings": K, "code_shape": [h, w]}},
             "decoder": {"train": decoder_distortion | None, "validation": ...},
             "total_bits_per_image": {"train": Σ_levels bits_per_image | None,
                                      "validation": ...},
             "total_bits_per_dim": {"train": Σ bits / Σ h·w | None, "validation": ...},
             "naive_bits_per_image": Σ_levels h·w·log2 K,
             "positions": Σ_levels h·w}

        (`prior_rate` and `decoder_distortion` give the inner dicts.)

    Raises:
        ValueError: priors missing or extra for a level, or not forming the
            model's chain; codes the priors refuse; empty splits; bad
            ``batch_size`` / ``max_examples`` / ``image_size``.
        TypeError: codes that are not a records dataset.
    """
    batch_size = _count("batch_size", batch_size, allow_none=False)
    max_examples = _count("max_examples", max_examples)
    levels = _check_priors(model, priors)
    codes = {"train": _split_dataset("train_codes", train_codes),
             "validation": _split_dataset("validation_codes", validation_codes)}
    images = {"train": _image_batches("train_images", train_images, batch_size, image_size),
              "validation": _image_batches("validation_images", validation_images,
                                           batch_size, image_size)}

    result_priors = {}
    for level in levels:
        prior = priors[level]
        entry = {"num_embeddings": int(prior.num_embeddings),
                 "code_shape": [int(s) for s in prior.code_shape]}
        for split in _SPLITS:
            entry[split] = None if codes[split] is None else prior_rate(
                prior, prior_input_batches(codes[split], prior, level, levels, batch_size,
                                           max_examples))
        result_priors[level] = entry

    positions = sum(math.prod(entry["code_shape"]) for entry in result_priors.values())
    totals, per_dim = {}, {}
    for split in _SPLITS:
        if codes[split] is None:
            totals[split] = per_dim[split] = None
        else:
            totals[split] = float(sum(result_priors[level][split]["bits_per_image"]
                                      for level in levels))
            per_dim[split] = totals[split] / positions
    decoder = {split: None if images[split] is None
               else decoder_distortion(model, images[split], max_examples)
               for split in _SPLITS}
    naive = naive_bits_per_image(
        {level: priors[level].num_embeddings for level in levels},
        {level: tuple(priors[level].code_shape) for level in levels})
    return {
        "levels": list(levels),
        "priors": result_priors,
        "decoder": decoder,
        "total_bits_per_image": totals,
        "total_bits_per_dim": per_dim,
        "naive_bits_per_image": naive,
        "positions": positions,
    }


# ------------------------------------------------------------------- report
_DASH = "–"


def _fmt(value, spec):
    if value is None:
        return _DASH
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _get(entry, split, key):
    found = None if entry is None else entry.get(split)
    return None if found is None else found[key]


def rate_distortion_markdown(result):
    """A Markdown table of a `rate_distortion` result, laid out as VQ-VAE-2's Table 1.

    One row per prior (top first: train and validation NLL in bits/dim,
    i.e. bits per code position, and in bits per image), a "VQ decoder" row
    (train and validation MSE and PSNR), a "Total" row (Σ over the priors;
    bits/dim there is Σ bits / Σ h·w) and a "Naive" row (Σ h·w·log2 K,
    uniform priors). Missing values (a split not evaluated) show as "–";
    of the keys `rate_distortion` writes, ``total_bits_per_dim``,
    ``positions`` and the priors' ``code_shape`` / ``num_embeddings`` are
    optional (without them the rows say less).

    Returns:
        str, ending with a newline.

    Raises:
        ValueError: ``result`` lacks the keys `rate_distortion` writes.
    """
    missing = [key for key in ("levels", "priors", "decoder", "total_bits_per_image",
                               "naive_bits_per_image") if key not in result]
    if missing:
        raise ValueError(f"Not a rate_distortion result: missing {missing}. "
                         f"Received: keys {sorted(result)}")
    header = ["", "Train NLL (bits/dim)", "Validation NLL (bits/dim)",
              "Train NLL (bits/image)", "Validation NLL (bits/image)",
              "Train MSE", "Validation MSE", "Train PSNR (dB)", "Validation PSNR (dB)"]
    rows = []
    for level in result["levels"]:
        entry = result["priors"].get(level) or {}
        name = str(level)[:1].upper() + str(level)[1:] + " prior"
        if "code_shape" in entry and "num_embeddings" in entry:
            shape = "x".join(str(s) for s in entry["code_shape"])
            name += f" ({shape}, K={entry['num_embeddings']})"
        rows.append([name,
                     _fmt(_get(entry, "train", "bits_per_dim"), ".4f"),
                     _fmt(_get(entry, "validation", "bits_per_dim"), ".4f"),
                     _fmt(_get(entry, "train", "bits_per_image"), ".1f"),
                     _fmt(_get(entry, "validation", "bits_per_image"), ".1f"),
                     _DASH, _DASH, _DASH, _DASH])
    decoder = result["decoder"]
    rows.append(["VQ decoder", _DASH, _DASH, _DASH, _DASH,
                 _fmt(_get(decoder, "train", "mse"), ".4g"),
                 _fmt(_get(decoder, "validation", "mse"), ".4g"),
                 _fmt(_get(decoder, "train", "psnr"), ".2f"),
                 _fmt(_get(decoder, "validation", "psnr"), ".2f")])
    totals = result["total_bits_per_image"]
    per_dim = result.get("total_bits_per_dim") or {}
    rows.append(["Total (Σ priors)",
                 _fmt(per_dim.get("train"), ".4f"), _fmt(per_dim.get("validation"), ".4f"),
                 _fmt(totals.get("train"), ".1f"), _fmt(totals.get("validation"), ".1f"),
                 _DASH, _DASH, _DASH, _DASH])
    naive = result["naive_bits_per_image"]
    positions = result.get("positions")
    naive_dim = _fmt(naive / positions, ".4f") if positions else _DASH
    rows.append(["Naive (Σ h·w·log2 K)", naive_dim, naive_dim,
                 _fmt(naive, ".1f"), _fmt(naive, ".1f"), _DASH, _DASH, _DASH, _DASH])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
