"""`ImageCodec`: images to files whose size is the learned prior's rate.

A code map costs h·w·log2 K bits written with a fixed-length code, but only
−log2 P(z) under the learned prior. The codec writes an image as:

1. its 8-bit pixels, resized to the model's image size as the run's input
   pipeline resizes (`tfvqvae.data.image_ops.resize`) when its size differs
   (the whole image: a run's ``crop`` is not applied, since a codec keeps
   every pixel);
2. its code maps, ``model.encode_levels`` (VQ-VAE-2's encoder), top first;
3. range coded (`tfvqvae.codec.entropy`), the class label first when the
   priors are class-conditional (uniform: log2(num_classes) bits), then each
   level's map in raster order under its prior:
   p(z_ij | z_<ij [, class] [, z_above]), the prior of each level below the
   top conditioned on the level above (VQ-VAE-2's Algorithm 2 chain); a
   level whose positions hold Q codes (residual / grouped quantizers) codes
   them in order at each position, p(z_ijq | z_<ij, z_ij,<q, ·);
4. behind an 8-byte header (`tfvqvae.codec.file_format`).

Decoding rebuilds each distribution autoregressively with the cached
sampler's machinery (`tfvqvae.models.incremental.IncrementalPrior`): the
encoder runs the very same steps on the image's own codes (teacher forcing),
so both sides quantise bit-identical float64 probabilities. The steps run on
the CPU, in batches of exactly `CODING_BATCH` maps. A file decodes with the
TensorFlow version and build, CPU type and ``TF_ENABLE_ONEDNN_OPTS`` setting
that wrote it (measured: a file written with oneDNN on fails its checksum
with it off); a checksum of the code maps in every file makes a decode on a
runtime whose floats differ fail loudly (`CodecError`) instead of returning
another image. Decoded maps
go through ``model.decode_levels``, clipped to [0, 1], mapped back to the
stored size by the least-squares inverse of the resize
(`tfvqvae.codec.resampling`) and rounded to 8 bits.

References: van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete
Representation Learning", NeurIPS 2017, https://arxiv.org/abs/1711.00937;
Razavi, van den Oord, Vinyals, "Generating Diverse High-Fidelity Images with
VQ-VAE-2", NeurIPS 2019, https://arxiv.org/abs/1906.00446.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfvqvae.codec import entropy
from tfvqvae.codec.file_format import HEADER_BYTES
from tfvqvae.codec.file_format import MAX_LEVELS
from tfvqvae.codec.file_format import MAX_SIDE
from tfvqvae.codec.file_format import CodecError
from tfvqvae.codec.file_format import Header
from tfvqvae.codec.file_format import checksum
from tfvqvae.codec.file_format import fingerprint
from tfvqvae.codec.file_format import pack_header
from tfvqvae.codec.file_format import parse_header
from tfvqvae.codec.resampling import inverse_resize
from tfvqvae.codec.resampling import resize_batch
from tfvqvae.evaluation.rate_distortion import prior_bits_per_image
from tfvqvae.models.incremental import IncrementalPrior
from tfvqvae.models.sampling import check_chain

__all__ = ["ImageCodec"]

# Maps per incremental pass, padded when fewer. TensorFlow's CPU kernels give
# a map the same floats at any slot of a batch of one size, whatever the other
# maps, but not across batch sizes (measured: a map coded in a batch of 64 and
# decoded alone missed its checksum). Encoder and decoder therefore always run
# batches of exactly this many maps; it is part of the format.
CODING_BATCH = 64


class _LevelSteps:
    """The incremental steps of one level's prior, each traced once per batch size.

    One call per position: `_first` gives the logits at (0, 0); `_next`
    writes the code chosen at (i, j), ends the row when j is its last
    column, and gives the logits at the next position. Encoder and decoder
    call exactly these functions, so they compute the same floats. For a
    prior with a depth axis the position calls give the summed skips
    instead, and `_depth_logits` / `_depth_add` (one trace per depth) give
    the logits of depth q given the codes chosen at the depths before.
    """

    def __init__(self, prior):
        self.prior = prior
        self.height, self.width = (int(s) for s in prior.map_shape)
        self.depth = prior.code_depth
        self.steps = IncrementalPrior(prior)
        self._context = tf.function(self.steps.context, autograph=False)
        self._first = tf.function(self._first_logits, autograph=False)
        self._next = tf.function(self._next_logits, autograph=False)
        self._depth_logits = tf.function(prior.depth_step_logits, autograph=False)
        self._depth_add = tf.function(
            lambda before, q, code: before + prior.depth_code_features(q, code), autograph=False)

    def _position(self, context, state, i, j):
        if self.depth is None:
            return self.steps.logits(context, state, i, j)
        return self.steps.features(context, state, i, j)

    def _first_logits(self, context, batch):
        return self._position(context, self.steps.start(batch), 0, 0)

    def _next_logits(self, context, state, i, j, code, row_end):
        state = self.steps.write(state, j, code)
        if row_end:  # a Python bool: one trace each way
            state = self.steps.end_row(context, state, i)
            return self._position(context, state, i + 1, 0)
        return self._position(context, state, i, j + 1)

    def run(self, labels, condition, choose):
        """Walks the map in raster order: int32 (B, h, w[, Q]) of the codes ``choose`` picks.

        B = `CODING_BATCH`; ``labels`` (B,) and ``condition`` (B, h', w'[, Q'])
        are padded to it (or None). ``choose(spot, logits)`` gets the float32
        (B, K) logits at ``spot`` = (i, j) (or (i, j, q), depth q after the
        depths before it) given the codes chosen before, and returns int (B,)
        codes.
        """
        with tf.device("/CPU:0"):  # the floats of files: the same kernels on every machine
            return self._run(labels, condition, choose)

    def _run(self, labels, condition, choose):
        batch = CODING_BATCH
        size = tf.constant(batch, tf.int32)
        context = self._context(size, labels, condition)
        logits, state = self._first(context, size)
        codes = np.zeros((batch, *self.prior.code_shape), np.int32)
        last = (self.height - 1, self.width - 1)
        for i in range(self.height):
            for j in range(self.width):
                if self.depth is None:
                    codes[:, i, j] = choose((i, j), logits.numpy())
                else:  # ``logits`` holds the position's summed skips
                    before = tf.zeros_like(logits)
                    for q in range(self.depth):
                        codes[:, i, j, q] = choose(
                            (i, j, q), self._depth_logits(logits, q, before).numpy())
                        if q + 1 < self.depth:
                            before = self._depth_add(before, q, tf.constant(codes[:, i, j, q]))
                if (i, j) != last:
                    logits, state = self._next(
                        context, state, tf.constant(i, tf.int32), tf.constant(j, tf.int32),
                        tf.constant(codes[:, i, j]), j == self.width - 1)
        return codes


def _names(files, names):
    if names is None:
        return [f"File {index}" for index in range(len(files))]
    names = [str(name) for name in names]
    if len(names) != len(files):
        raise ValueError(f"`names` must name each of the {len(files)} files. "
                         f"Received: {len(names)} names")
    return names


def _pad(array):
    """``array`` with zero rows appended up to `CODING_BATCH` (None stays None)."""
    if array is None:
        return None
    array = np.asarray(array, np.int32)
    return np.concatenate([array, np.zeros((CODING_BATCH - len(array), *array.shape[1:]),
                                           np.int32)])


class ImageCodec:
    """Lossy image compression with a trained VQ-VAE and its priors.

    Args:
        model: a trained `VQVAE`, `VQVAE2` or `HierarchicalVQVAE`.
        priors: {level: `PixelCNNPrior`} for every level of the model, top
            first (each lower prior conditioned on the level above).
        image_size: (H, W) the model was trained at, or None to read it off
            the top prior's code map.

    Attributes:
        levels: the model's levels, top first.
        image_shape: (H, W, C) the images are coded at.
        num_classes: the priors' number of classes (labels are then
            required), or None.
        fingerprint: the model's 8-bit fingerprint (`file_format.fingerprint`).

    Raises:
        ValueError: a level without a prior, priors that do not form the
            model's chain or do not fit its code maps, more than 8 levels.
        ImportError: ``constriction`` is not installed.
    """

    def __init__(self, model, priors, image_size=None):
        entropy.require_constriction()
        self.model = model
        self.levels = tuple(model.levels)
        missing = [level for level in self.levels if level not in priors]
        if missing:
            raise ValueError(
                f"The codec needs a prior for every level of the model {list(self.levels)}. "
                f"Received: no prior for {missing}")
        if len(self.levels) > MAX_LEVELS:
            raise ValueError(
                f"The codec codes at most {MAX_LEVELS} levels. Received: a model with "
                f"{len(self.levels)}")
        self.priors = {level: priors[level] for level in self.levels}
        check_chain(self.priors)
        height, width = self._image_size(image_size)
        self.image_shape = (height, width, int(model.image_channels))
        shapes = model.code_shapes((height, width))
        for level, prior in self.priors.items():
            found = (int(prior.num_embeddings), tuple(int(s) for s in prior.code_shape))
            wanted = (int(model.level_num_embeddings[level]), tuple(shapes[level]))
            if found != wanted:
                raise ValueError(
                    f"The {level} prior models {found[0]} codes on a {found[1]} map, but the "
                    f"model's {level} level has {wanted[0]} codes on a {wanted[1]} map at "
                    f"{height}x{width}.")
        classes = {prior.num_classes for prior in self.priors.values()} - {None}
        self.num_classes = classes.pop() if classes else None
        self.fingerprint = fingerprint([model, *self.priors.values()])
        self._steps = {level: _LevelSteps(prior) for level, prior in self.priors.items()}

    def _image_size(self, image_size):
        if image_size is not None:
            if isinstance(image_size, int):
                image_size = (image_size, image_size)
            return tuple(int(s) for s in image_size)
        multiple = int(self.model.size_multiple)
        top = self.levels[0]
        factor = multiple // self.model.code_shapes((multiple, multiple))[top][0]
        h, w = self.priors[top].map_shape
        return int(h) * factor, int(w) * factor

    @classmethod
    def from_run(cls, run):
        """The codec of a run folder: ``RUN/model.keras`` and ``RUN/prior-<level>/``.

        Raises:
            FileNotFoundError: no run, or a level without a trained prior.
            ValueError: files that cannot be loaded, or priors that do not fit.
        """
        from tfvqvae.run_folder import load_model
        from tfvqvae.run_folder import load_priors
        from tfvqvae.run_folder import read_run_config

        model = load_model(run, compile=False)
        priors = load_priors(run, model.levels, compile=False)
        size = read_run_config(run, missing_ok=True).get("image_size")
        return cls(model, priors, image_size=size)

    # ---------------------------------------------------------------- input
    def _pixels(self, images):
        """uint8 (N, H, W, C) of ``images`` (uint8, or float in [0, 1] rounded to 8 bits)."""
        array = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
        if array.ndim >= 1 and array.shape[0] == 0 and array.ndim != 4:  # e.g. []
            return np.zeros((0, 1, 1, self.image_shape[2]), np.uint8)
        if array.ndim != 4:
            raise ValueError(
                "The codec takes a batch of images (N, height, width, channels): add a "
                "channel axis (images[..., None]) for grayscale maps or a batch axis "
                f"(images[None]) for one image. Received: shape {array.shape}")
        count, height, width, channels = array.shape
        if channels != self.image_shape[2]:
            raise ValueError(
                f"The model codes images with {self.image_shape[2]} channel(s). "
                f"Received: shape {array.shape}")
        if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise ValueError(
                f"The codec stores images of 1 to {MAX_SIDE} pixels a side. "
                f"Received: shape {array.shape}")
        if array.dtype == np.uint8:
            return array
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                "The codec takes uint8 images or float images in [0, 1]. "
                f"Received: dtype {array.dtype}")
        if count and not np.all(np.isfinite(array)):
            raise ValueError(
                "The codec takes finite images in [0, 1]. Received: "
                f"{int(np.sum(~np.isfinite(array)))} NaN or Inf value(s)")
        if count and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                "The codec takes float images in [0, 1] (divide [0, 255] pixels by 255). "
                f"Received: values in [{array.min():.4g}, {array.max():.4g}]")
        return np.round(array.astype(np.float64) * 255).astype(np.uint8)

    def _labels(self, labels, count):
        if count == 0 and (labels is None or np.size(labels) == 0):  # no images, no labels
            return None if self.num_classes is None else np.zeros(0, np.int32)
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(
                    "These priors are not class-conditional: pass labels=None. "
                    f"Received: labels of shape {np.shape(labels)}")
            return None
        if labels is None:
            raise ValueError(
                f"These priors are class-conditional ({self.num_classes} classes): pass one "
                "label per image. Received: labels=None")
        array = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
        if count == 0 and array.shape == (0,):
            return np.zeros(0, np.int32)
        if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"`labels` must be {count} integers, one per image. Received: "
                f"shape {array.shape}, dtype {array.dtype}")
        if count and (array.min() < 0 or array.max() >= self.num_classes):
            raise ValueError(
                f"Labels must lie in [0, {self.num_classes}). Received: values in "
                f"[{array.min()}, {array.max()}]")
        return array.astype(np.int32)

    def _model_input(self, pixels):
        """float32 (N, H, W, C) in [0, 1] at the model's size (`resize_batch`)."""
        return tf.cast(resize_batch(pixels, self.image_shape[:2]), tf.float32) / 255.0

    def _chunks(self, count):
        return [(start, min(start + CODING_BATCH, count))
                for start in range(0, count, CODING_BATCH)]

    # ------------------------------------------------------------- encoding
    def encode_codes(self, images):
        """{level: int32 (N, h, w) or (N, h, w, Q)} code maps of ``images``, top first.

        What `compress` codes. ``images``: uint8 (N, H, W, C), or float in [0, 1].
        """
        pixels = self._pixels(images)
        codes = {level: [] for level in self.levels}
        for start, stop in self._chunks(len(pixels)):
            found = self.model.encode_levels(self._model_input(pixels[start:stop]))
            for level in self.levels:
                codes[level].append(np.asarray(found[level], np.int32))
        return {level: (np.concatenate(codes[level]) if codes[level] else
                        np.zeros((0, *self.priors[level].code_shape), np.int32))
                for level in self.levels}

    def _teacher_forced(self, level, codes, labels, condition):
        """float64 (B, h, w[, Q], K) probabilities of ``codes`` under ``level``'s prior,
        incrementally.

        B ≤ `CODING_BATCH` maps, padded to it for the pass.
        """
        steps = self._steps[level]
        batch = len(codes)
        codes, labels, condition = (_pad(a) for a in (codes, labels, condition))
        probs = np.zeros((batch, *steps.prior.code_shape, steps.prior.num_embeddings))

        def choose(spot, logits):
            probs[(slice(None), *spot)] = entropy.probabilities(logits[:batch])
            return codes[(slice(None), *spot)]

        steps.run(labels, condition, choose)
        return probs

    def compress(self, images, labels=None):
        """One file's bytes per image.

        Args:
            images: uint8 (N, H, W, C) pixels, or float (N, H, W, C) in
                [0, 1] (rounded to 8 bits); any H, W from 1 to 4096 (resized
                to the model's size; the decoder gives back H x W); C the
                model's channels.
            labels: int (N,) classes in [0, num_classes) when the priors are
                class-conditional, else None.

        Returns:
            list of N ``bytes``: an 8-byte header, then the payload.

        Raises:
            ValueError: a wrong rank, channel count or size, NaN / Inf or
                values outside [0, 1], labels missing, unwanted, of the
                wrong shape or out of range.
            TypeError: images neither uint8 nor float.
        """
        pixels = self._pixels(images)
        count, height, width, _ = pixels.shape
        labels = self._labels(labels, count)
        files = []
        codes = self.encode_codes(pixels)
        for start, stop in self._chunks(count):
            chunk_labels = None if labels is None else labels[start:stop]
            maps, probs, above = [], [], None
            for level in self.levels:
                level_codes = codes[level][start:stop]
                probs.append(self._teacher_forced(level, level_codes, chunk_labels, above))
                maps.append(level_codes)
                above = level_codes
            for b in range(stop - start):
                label = None if labels is None else int(chunk_labels[b])
                header = Header(levels=len(self.levels), labelled=label is not None, height=height,
                                width=width, fingerprint=self.fingerprint)
                messages = [] if label is None else [
                    (np.array([label], np.int32), entropy.uniform(self.num_classes))]
                for level_codes, level_probs in zip(maps, probs):
                    k = level_probs.shape[-1]
                    messages.append((level_codes[b].reshape(-1),
                                     level_probs[b].reshape(-1, k)))
                payload = entropy.encode(messages)
                header = dataclasses.replace(header, checksum=checksum(
                    header, label, [level_codes[b] for level_codes in maps], len(payload)))
                files.append(pack_header(header) + payload)
        return files

    # ------------------------------------------------------------- decoding
    def _headers(self, files, names):
        if isinstance(files, (bytes, bytearray)) or not hasattr(files, "__len__"):
            raise TypeError(
                "`decompress` takes a list of files' bytes (one per image). Received: "
                f"{type(files).__name__} (wrap one file's bytes in a list; make a list of a "
                "generator)")
        headers = []
        for index, data in enumerate(files):
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"{names[index]} is not bytes. Received: {type(data).__name__}")
            header = parse_header(data, names[index])
            if header.fingerprint != self.fingerprint:
                raise CodecError(
                    f"{names[index]} was written by another model (fingerprint "
                    f"0x{header.fingerprint:02X}; this codec's model is "
                    f"0x{self.fingerprint:02X}).")
            if header.levels != len(self.levels) or header.labelled != (
                    self.num_classes is not None):
                raise CodecError(
                    f"{names[index]} codes {header.levels} level(s) "
                    f"{'with' if header.labelled else 'without'} a label; this codec's model "
                    f"has {len(self.levels)} level(s) and "
                    f"{'class-conditional' if self.num_classes else 'unconditional'} priors.")
            headers.append(header)
        return headers

    def decode_codes(self, files, names=None):
        """({level: int32 (N, h, w[, Q])}, labels int32 (N,) or None) of the files.

        Every level, top first, as decoded; each file's checksum verified.
        Files of any image sizes. ``names``: what error messages call the
        files (default "File 0", "File 1", ...).

        Raises:
            CodecError: a truncated or corrupted file, one from another model
                or a newer format, or a checksum that the decoded maps miss.
            TypeError: not a list of bytes.
        """
        names = _names(files, names)
        headers = self._headers(files, names)
        count = len(headers)
        codes = {level: np.zeros((count, *self._steps[level].prior.code_shape), np.int32)
                 for level in self.levels}
        labels = np.zeros(count, np.int32) if self.num_classes is not None else None
        for start, stop in self._chunks(count):
            self._decode_chunk(files, headers, names, list(range(start, stop)), codes, labels)
        return codes, labels

    def _decode_chunk(self, files, headers, names, indices, codes, labels):
        """Decodes files[indices] (≤ `CODING_BATCH`) into codes[level][indices], labels[indices]."""
        batch = len(indices)
        decoders = []
        for index in indices:
            data = files[index]
            try:
                decoders.append(entropy.decoder(data[HEADER_BYTES:]))
            except Exception as error:
                raise CodecError(f"{names[index]} has a corrupted payload: {error}") from error
        model = entropy.categorical()

        def decoded(index, decoder, probs):
            try:
                return int(decoder.decode(model, probs[None])[0])
            except Exception as error:  # constriction ran out of data
                raise CodecError(
                    f"{names[index]} is truncated or corrupted: the range decoder stopped "
                    f"({error}).") from error

        chunk_labels = None
        if self.num_classes is not None:
            uniform = entropy.uniform(self.num_classes)[0]
            chunk_labels = np.array([decoded(index, decoder, uniform)
                                     for index, decoder in zip(indices, decoders)], np.int32)
            labels[indices] = chunk_labels

        def choose(spot, logits):
            probs = entropy.probabilities(logits[:batch])
            found = [decoded(index, decoder, p)
                     for index, decoder, p in zip(indices, decoders, probs)]
            return found + [0] * (CODING_BATCH - batch)

        above = None
        for level in self.levels:
            above = self._steps[level].run(_pad(chunk_labels), above, choose)
            codes[level][indices] = above[:batch]
        for index in indices:
            label = None if chunk_labels is None else int(labels[index])
            found = checksum(headers[index], label, [codes[level][index] for level in self.levels],
                             len(files[index]) - HEADER_BYTES)
            if found != headers[index].checksum:
                raise CodecError(
                    f"{names[index]} does not decode to the code maps it was written with "
                    f"(checksum 0x{found:04X}, stored 0x{headers[index].checksum:04X}): it is "
                    "truncated, extended or altered, comes from another model, or was written "
                    "by a runtime that computes the priors' floats differently (another "
                    "TensorFlow version or build, CPU type, or TF_ENABLE_ONEDNN_OPTS setting).")

    def decompress(self, files, names=None):
        """float32 images (N, H, W, C) in [0, 1] (8-bit values) from files' bytes.

        All files must store one image size (decompress files of other sizes
        in separate calls, or use `decode_codes`). ``names``: what error
        messages call the files (default "File 0", "File 1", ...).

        Raises:
            CodecError: see `decode_codes`.
            ValueError: files of different image sizes.
            TypeError: not a list of bytes.
        """
        names = _names(files, names)
        headers = self._headers(files, names)
        sizes = sorted({(h.height, h.width) for h in headers})
        if len(sizes) > 1:
            raise ValueError(
                "`decompress` returns one array: pass files of one image size. "
                f"Received: sizes {sizes}")
        if not headers:
            return np.zeros((0, *self.image_shape), np.float32)
        codes, _ = self.decode_codes(files, names)
        images = []
        for start, stop in self._chunks(len(headers)):
            decoded = self.model.decode_levels({level: codes[level][start:stop]
                                                for level in self.levels})
            decoded = np.clip(np.asarray(decoded, np.float64), 0.0, 1.0)
            if sizes[0] != self.image_shape[:2]:
                decoded = np.clip(inverse_resize(decoded, sizes[0]), 0.0, 1.0)
            images.append(np.round(decoded * 255.0) / 255.0)
        return np.concatenate(images).astype(np.float32)

    # ----------------------------------------------------------------- rate
    def rate_bits(self, images, labels=None):
        """float64 (N,) Σ −log2 P(z) of each image under the priors, in bits.

        The ideal code length of what `compress` stores: the label's
        log2(num_classes) bits when the priors are class-conditional, plus
        each coded level's Σ_ij −log2 p(z_ij | z_<ij [, class] [, z_above])
        (`tfvqvae.evaluation.prior_bits_per_image`: the priors' full forward
        pass, not the incremental one). A file's payload is this plus the
        coder's quantisation loss and flush.

        Args and errors: those of `compress`.
        """
        pixels = self._pixels(images)
        labels = self._labels(labels, len(pixels))
        bits = np.zeros(len(pixels))
        if not len(pixels):
            return bits
        if labels is not None:
            bits += math.log2(self.num_classes)
        codes = self.encode_codes(pixels)
        above = None
        for level in self.levels:
            batches = []
            for start, stop in self._chunks(len(pixels)):
                inputs = {"codes": codes[level][start:stop]}
                if self.priors[level].num_classes is not None:
                    inputs["labels"] = labels[start:stop]
                if self.priors[level].is_conditioned:
                    inputs["condition"] = above[start:stop]
                batches.append(inputs)
            if batches:
                bits += prior_bits_per_image(self.priors[level], batches)
            above = codes[level]
        return bits
