"""Runs exported artifacts on held-out images and compares them with Keras.

Per artifact (``savedmodel``, ``tflite-<mode>``, ``onnx``), on the same
images (the run's test split):

* agreement: % of code indices (every level) equal to Keras' ``encode``;
* max / mean |reconstruction − Keras reconstruction| (the ``reconstruct``
  signature against ``model.decode_levels(model.encode_levels(x))``);
* PSNR of the artifact's reconstruction against the input images, in dB;
* latency: milliseconds per image of ``reconstruct`` in batches, after one
  warm-up batch.

`check_agreement` applies the thresholds: float artifacts must reach
``min_agreement`` (100 % by default); quantised TFLite (dynamic range,
weight only, int8, int16x8) ``min_quantized_agreement``
(`MIN_QUANTIZED_AGREEMENT`, 99 %, by default; bench/RESULTS.md section
``int8`` has what each mode keeps). Any artifact, Keras included, fails when its reconstructions
hold a NaN or Inf value, or when its PSNR or differences from Keras are not
finite numbers: equal codes from a model whose outputs are NaN are no agreement.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf

from tfvqvae.metrics import psnr

QUANTIZED = ("tflite-dynamic_range", "tflite-weight_only", "tflite-int8", "tflite-int16x8")
# % of code indices a quantised file must share with Keras unless told otherwise.
MIN_QUANTIZED_AGREEMENT = 99.0


class KerasRunner:
    """The reference: the Keras model itself, NumPy in, NumPy out."""

    def __init__(self, model):
        self.model = model
        self.levels = tuple(model.levels)

    def encode(self, images):
        codes = self.model.encode_levels(tf.constant(images, tf.float32))
        return {level: codes[level].numpy() for level in self.levels}

    def decode(self, codes):
        return self.model.decode_levels({k: tf.constant(v) for k, v in codes.items()}).numpy()

    def reconstruct(self, images):
        return self.decode(self.encode(images))


class SavedModelRunner:
    """Runs an exported SavedModel's signatures (as TF Serving would call them)."""

    def __init__(self, path, levels):
        self.levels = tuple(levels)
        self._loaded = tf.saved_model.load(str(path))
        self._signatures = self._loaded.signatures

    def encode(self, images):
        out = self._signatures["encode"](images=tf.constant(images, tf.float32))
        return {level: out[f"{level}_codes"].numpy() for level in self.levels}

    def decode(self, codes):
        inputs = {f"{level}_codes": tf.constant(codes[level], tf.int32) for level in self.levels}
        return self._signatures["decode"](**inputs)["images"].numpy()

    def reconstruct(self, images):
        out = self._signatures["reconstruct"](images=tf.constant(images, tf.float32))
        return out["reconstructions"].numpy()


@dataclasses.dataclass
class VerifyRow:
    """One artifact's results (see the module docstring)."""

    artifact: str
    quantized: bool
    num_images: int
    agreement: float  # percent of code indices equal to Keras, all levels
    level_agreement: dict  # {level: percent}
    max_abs_diff: float
    mean_abs_diff: float
    psnr_db: float
    ms_per_image: float
    nonfinite: int = 0  # NaN or Inf values among the reconstructions
    num_values: int = 0  # values among the reconstructions


def _batches(array, batch_size):
    return [array[i : i + batch_size] for i in range(0, len(array), batch_size)]


def _timed_reconstruct(runner, images, batch_size):
    batches = _batches(images, batch_size)
    runner.reconstruct(batches[0])  # warm-up: tracing, allocation
    start = time.perf_counter()
    outputs = [runner.reconstruct(batch) for batch in batches]
    elapsed = time.perf_counter() - start
    return np.concatenate(outputs), 1000.0 * elapsed / len(images)


def _encode_all(runner, images, batch_size):
    parts = [runner.encode(batch) for batch in _batches(images, batch_size)]
    return {level: np.concatenate([p[level] for p in parts]) for level in runner.levels}


def verify_runner(name, runner, images, reference_codes, reference_images, batch_size=64):
    """A `VerifyRow` for one runner against the Keras references."""
    codes = _encode_all(runner, images, batch_size)
    reconstructions, ms = _timed_reconstruct(runner, images, batch_size)
    equal = {level: codes[level] == reference_codes[level] for level in reference_codes}
    total = sum(e.size for e in equal.values())
    reconstructions = np.asarray(reconstructions, np.float64)
    diff = np.abs(reconstructions - reference_images)
    mse = float(np.mean((reconstructions - images) ** 2))
    nonfinite = int(reconstructions.size - np.count_nonzero(np.isfinite(reconstructions)))
    return VerifyRow(
        artifact=name,
        quantized=name in QUANTIZED,
        num_images=len(images),
        agreement=100.0 * sum(int(e.sum()) for e in equal.values()) / total,
        level_agreement={level: 100.0 * float(e.mean()) for level, e in equal.items()},
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        # psnr() raises on an infinite MSE; NaN marks it unmeasurable (and fails the check).
        psnr_db=psnr(mse) if math.isfinite(mse) else math.nan,
        ms_per_image=ms,
        nonfinite=nonfinite,
        num_values=int(reconstructions.size),
    )


def verify_runners(model, runners, images, batch_size=64):
    """[`VerifyRow`]: "keras" first, then each of ``runners`` ({artifact: runner})."""
    images = np.asarray(images, np.float32)
    keras_runner = KerasRunner(model)
    reference_codes = _encode_all(keras_runner, images, batch_size)
    reference_images = np.concatenate(
        [keras_runner.decode({k: v[i : i + batch_size] for k, v in reference_codes.items()})
         for i in range(0, len(images), batch_size)]
    ).astype(np.float64)
    rows = [verify_runner("keras", keras_runner, images, reference_codes, reference_images,
                          batch_size)]
    for name, runner in runners.items():
        rows.append(verify_runner(name, runner, images, reference_codes, reference_images,
                                  batch_size))
    return rows


def check_agreement(rows, min_agreement=100.0,
                    min_quantized_agreement=MIN_QUANTIZED_AGREEMENT):
    """One-line messages for the rows that fail (empty when all pass).

    A row fails when its code agreement is below its threshold
    (``min_quantized_agreement`` for quantised TFLite, ``min_agreement`` for
    the rest), or, whatever its agreement, when its reconstructions hold NaN
    or Inf values, its max or mean difference from Keras is NaN or Inf (Keras'
    own reconstructions are not finite), or its PSNR is NaN or -Inf (+Inf, a
    reconstruction equal to its input, passes).
    """
    failures = []
    for row in rows:
        if row.nonfinite:
            of = f" of {row.num_values}" if row.num_values else ""
            failures.append(f"{row.artifact}: {row.nonfinite}{of} reconstruction values are "
                            "NaN or Inf")
            continue
        unmeasured = [
            f"{label} {value}"
            for label, value, allowed in (("PSNR", row.psnr_db, math.inf),
                                          ("max abs diff", row.max_abs_diff, None),
                                          ("mean abs diff", row.mean_abs_diff, None))
            if not math.isfinite(value) and value != allowed
        ]
        if unmeasured:
            failures.append(
                f"{row.artifact}: non-finite comparison with Keras ({', '.join(unmeasured)})"
            )
            continue
        threshold = min_quantized_agreement if row.quantized else min_agreement
        if row.agreement < threshold:
            hint = ""
            if row.quantized:
                hint = ("; write the modes that reach it (--tflite-modes), snap the model's "
                        "kernels to the int8 grid (tfvqvae.models.kernel_grid) before "
                        "exporting weight_only, or accept less with --min-quantized-agreement")
            failures.append(
                f"{row.artifact}: {row.agreement:.3f} % of code indices equal to Keras, "
                f"below the required {threshold:g} %{hint}"
            )
    return failures


def format_table(rows):
    """The rows as a markdown table."""
    lines = [
        "| artifact | indices equal to Keras | max abs diff | mean abs diff | PSNR vs input (dB) "
        "| ms / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        levels = ""
        if len(row.level_agreement) > 1:
            levels = " (" + ", ".join(
                f"{level} {value:.2f}" for level, value in row.level_agreement.items()
            ) + ")"
        lines.append(
            f"| {row.artifact} | {row.agreement:.2f} %{levels} | {row.max_abs_diff:.2e} | "
            f"{row.mean_abs_diff:.2e} | {row.psnr_db:.2f} | {row.ms_per_image:.3f} |"
        )
    return "\n".join(lines)
