"""The seeds' two evaluations of a run: the library behind ``tfvqvae evaluate``.

    tfvqvae evaluate --run DIR [--num-samples 10000] [--temperature 1.0] [--seed 0]

**Classification Accuracy Score** (CAS; Ravuri & Vinyals 2019, as VQ-VAE-2
reports it, Razavi et al. 2019 §5.2): the fixed classifier of
`tfvqvae.evaluation.classifier` is trained, with the same budget
(``--classifier-steps``), on three sets of ``--num-samples`` class-balanced
image–class pairs, and each is tested on the real test split:

* ``real``: training images of the run's dataset (a seeded class-balanced
  draw from the whole training split);
* ``reconstructed``: the same images encoded and decoded by the run's model;
* ``generated``: class-conditional samples from the run's priors (top prior
  given the class, each level below given the one above, then the decoder),
  ``--num-samples / C`` of each class, at ``--temperature``. Needs a
  class-conditional top prior (``train-prior --class-conditional``); without
  one the row says why it is missing.

**Rate–distortion** (VQ-VAE-2 Table 1): every prior's NLL on the codes of the
training and test splits (``codes/``, from ``extract-codes``), in bits per
code ("bits/dim") and bits per image; the decoder's MSE and PSNR on training
and test images; the total rate Σ_levels bits per image beside the naive
Σ_levels h·w·log2 K (`tfvqvae.evaluation.rate_distortion`).

Files, in ``RUN/evaluation/`` (names owned by `tfvqvae.run_folder`), each
written atomically: ``evaluation.json``::

    {"cas": {"real": {"top1": %, "top5": %, ...}, "reconstructed": {...},
             "generated": {...}},
     "rate_distortion": {...}, "codebook_usage": {level: {...}},
     "settings": {...}, "seconds": {...}}

``evaluation.md`` (both tables), ``samples-per-class.png`` (one row of
generated samples per class), ``codebook-usage-<level>.png`` and TensorBoard
events in ``logs/`` (per-level code histograms, the sample grid, scalars).
"""

import math
import time

import numpy as np
import tensorflow as tf

from tfvqvae import atomic
from tfvqvae import run_folder
from tfvqvae.data.code_format import expected_metadata
from tfvqvae.data.codes import load_codes
from tfvqvae.evaluation.cas import balanced_labels
from tfvqvae.evaluation.cas import classification_accuracy_score
from tfvqvae.evaluation.classifier import CAS_STEPS
from tfvqvae.evaluation.rate_distortion import rate_distortion
from tfvqvae.evaluation.rate_distortion import rate_distortion_markdown
from tfvqvae.evaluation.usage import code_counts_by_level
from tfvqvae.evaluation.usage import usage_summary
from tfvqvae.evaluation.usage import write_usage_histograms
from tfvqvae.models.sampling import LEVEL_SEED_STRIDE
from tfvqvae.models.sampling import check_chain
from tfvqvae.models.sampling import check_temperature
from tfvqvae.models.sampling import sample_levels
from tfvqvae.run_folder import class_samples_file
from tfvqvae.run_folder import code_file
from tfvqvae.run_folder import evaluation_dir
from tfvqvae.run_folder import evaluation_file
from tfvqvae.run_folder import evaluation_logs_dir
from tfvqvae.run_folder import evaluation_table_file
from tfvqvae.training.images import save_png
from tfvqvae.training.images import tile
from tfvqvae.validation import integer
from tfvqvae.validation import positive_int

DEFAULT_NUM_SAMPLES = 10000  # image-class pairs per CAS row
DEFAULT_BATCH_SIZE = 250  # images per encoding / sampling step
SAMPLES_PER_CLASS_SHOWN = 10  # columns of samples-per-class.png


def _class_balanced_real(source, num_samples, num_classes, seed, batch_size):
    """``num_samples`` training images and labels, class-balanced, drawn in a seeded order.

    Streams the split once in a seeded shuffled order and keeps each class's
    first ``num_samples // C`` (+1 for the first ``num_samples % C``
    classes) images, so it works for streamed sources too.

    Raises:
        ValueError: the split is unlabelled, or a class has too few images
            (naming the class and its count).
    """
    wanted = np.bincount(balanced_labels(num_samples, num_classes), minlength=num_classes)
    kept = {c: [] for c in range(num_classes)}
    have = np.zeros(num_classes, np.int64)
    for images, labels in source.to_tf_dataset(
            batch_size, shuffle=True, seed=seed, with_labels=True):
        images, labels = images.numpy(), labels.numpy()
        for image, label in zip(images, labels):
            if 0 <= label < num_classes and have[label] < wanted[label]:
                kept[int(label)].append(image)
                have[label] += 1
        if (have >= wanted).all():
            break
    short = np.flatnonzero(have < wanted)
    if len(short):
        c = int(short[0])
        raise ValueError(
            f"--num-samples {num_samples} needs {wanted[c]} training images of class {c} "
            f"(a class-balanced set); the training split has {have[c]}: pass a smaller "
            f"--num-samples. Received: num_samples={num_samples}"
        )
    order = balanced_labels(num_samples, num_classes)  # interleave classes: c0, c1, ...
    position = np.zeros(num_classes, np.int64)
    images = []
    for label in order:
        images.append(kept[int(label)][position[label]])
        position[label] += 1
    return np.stack(images).astype(np.float32), order.astype(np.int32)


def real_test_set(source, batch_size, max_examples):
    """The real test images and labels (the first ``max_examples`` when given)."""
    if max_examples is not None:
        source = source.take(min(max_examples, len(source)))
    images, labels = [], []
    for x, y in source.to_tf_dataset(batch_size, with_labels=True):
        images.append(x.numpy())
        labels.append(y.numpy())
    if not images:
        raise ValueError(
            "The classification accuracy score needs test images; the run's test split "
            f"has none. Received: {len(source)} test images")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _reconstruct(model, images, batch_size):
    """encode → decode of ``images`` in batches, clipped to [0, 1]."""
    out = [
        np.clip(model.decode_levels(model.encode_levels(images[i:i + batch_size])).numpy(),
                0.0, 1.0)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def generate_class_balanced(model, priors, num_samples, num_classes, temperature, seed,
                            batch_size=DEFAULT_BATCH_SIZE):
    """Class-conditional samples: ``num_samples`` images, labels `balanced_labels`.

    Drawn in chunks of ``batch_size`` (the last one padded to a full chunk,
    so the sampler is traced once); chunk c samples level k with seed
    ``seed + LEVEL_SEED_STRIDE · (c·L + k)`` (`sample_levels` adds the
    ``LEVEL_SEED_STRIDE · k``), so no two draws share noise. The XLA-compiled
    sampler draws them (the codes of every sampler are the same).

    Returns:
        (float32 images (N, H, W, C) clipped to [0, 1], int32 labels (N,)).
    """
    labels = balanced_labels(num_samples, num_classes)
    levels = len(priors)
    images = []
    for c, start in enumerate(range(0, num_samples, batch_size)):
        chunk = labels[start:start + batch_size]
        padded = np.resize(chunk, batch_size) if len(chunk) < batch_size else chunk
        # "compiled": traced and compiled once (every chunk has batch_size), and
        # the same codes as the other samplers.
        codes = sample_levels(priors, batch_size, padded, temperature,
                              seed + LEVEL_SEED_STRIDE * c * levels, method="compiled")
        decoded = model.decode_levels(codes).numpy()[:len(chunk)]
        images.append(np.clip(decoded, 0.0, 1.0))
    return np.concatenate(images).astype(np.float32), labels.astype(np.int32)


def _per_class_grid(images, labels, num_classes, columns=SAMPLES_PER_CLASS_SHOWN):
    """One row per class: its first ``columns`` images (blank where there are fewer)."""
    rows = []
    blank = np.ones_like(images[0])
    for c in range(num_classes):
        picked = list(images[labels == c][:columns])
        rows.extend(picked + [blank] * (columns - len(picked)))
    return tile(np.stack(rows), columns=columns)


def _limit(dataset, max_examples):
    return dataset if max_examples is None else dataset.take(max_examples)


def _rate_distortion(run, model, priors, sources, batch_size, max_examples):
    """The seeds' Table 1 for this run (`rate_distortion`), and per-level code counts of
    each split's code file ({"train"|"validation": {level: int64 (K,)}})."""
    expect = expected_metadata(model)
    codes = {name: load_codes(code_file(run, split), expect=expect)[0]
             for split, name in (("train", "train"), ("test", "validation"))}
    result = rate_distortion(
        model, priors, codes["train"], codes["validation"], sources["train"],
        sources["test"], batch_size=batch_size, max_examples=max_examples)
    counts = {
        name: code_counts_by_level(_limit(records, max_examples), model.level_num_embeddings)
        for name, records in codes.items()}
    return result, counts


def _markdown(result):
    """evaluation.md: the CAS table and the rate-distortion table."""
    lines = ["# Evaluation", "", "## Classification Accuracy Score", ""]
    cas = result.get("cas")
    if not cas:
        lines.append("Not computed (--no-cas).")
    else:
        lines += ["| training data | top-1 % | top-5 % |", "| --- | ---: | ---: |"]
        names = {"real": "real data", "reconstructed": "real data after reconstructing",
                 "generated": "generated (class-conditional samples)"}
        for row, label in names.items():
            value = cas.get(row, {})
            if "top1" in value:
                top5 = "-" if value.get("top5") is None else f"{value['top5']:.2f}"
                lines.append(f"| {label} | {value['top1']:.2f} | {top5} |")
            else:
                lines.append(f"| {label} | - | - ({value.get('missing', 'not computed')}) |")
    lines += ["", "## Rate-distortion", "", rate_distortion_markdown(result["rate_distortion"])]
    return "\n".join(lines) + "\n"


def _write_logs(run, result, grid):
    """TensorBoard: per-level code histograms and usage (in `write_usage_histograms`),
    the CAS scalars and the sample grid."""
    writer = tf.summary.create_file_writer(str(evaluation_logs_dir(run)))
    with writer.as_default():
        for row, value in (result.get("cas") or {}).items():
            for key in ("top1", "top5"):
                if value.get(key) is not None:
                    tf.summary.scalar(f"cas/{row}_{key}", value[key], step=0)
        for level, rates in result["rate_distortion"]["priors"].items():
            for split in ("train", "validation"):
                rate = rates[split]
                tf.summary.scalar(f"rate/{level}_{split}_bits_per_dim", rate["bits_per_dim"],
                                  step=0)
        if grid is not None:
            tf.summary.image("samples_per_class", grid[None], step=0)
    writer.flush()
    writer.close()


def nonfinite_entries(value, path=""):
    """Dotted paths of the NaN / Inf floats inside nested dicts and lists."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_entries(v, f"{path}{k}.")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nonfinite_entries(v, f"{path}{i}.")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path[:-1]}={value}"]
    return []


def evaluate_run(run, num_samples=DEFAULT_NUM_SAMPLES, temperature=1.0, seed=0,
                 classifier_steps=CAS_STEPS, max_examples=None, batch_size=DEFAULT_BATCH_SIZE,
                 data_dir=None, cas=True, verbose=True):
    """Runs both evaluations on ``run`` and writes ``RUN/evaluation/`` (module docstring).

    Args:
        run: a run folder with ``model.keras``, ``config.json``, the code
            files of both splits (``codes/``) and a prior for every level.
        num_samples: image-class pairs per CAS row (class-balanced).
        temperature: the priors' softmax temperature for the generated row.
        seed: seed of the real subset, the sampler and the classifier.
        classifier_steps: the CAS classifier's training steps (every row).
        max_examples: at most this many images / code maps per split for the
            rate-distortion table and as the CAS test set (None: all).
        batch_size: images per encoding / sampling step.
        data_dir: overrides the run's ``data_dir``.
        cas: compute the CAS rows (the rate-distortion table always).
        verbose: print a line per stage.

    Returns:
        The dict written to ``evaluation.json``.

    Raises:
        FileNotFoundError: no model, config, code files or prior of a level
            (naming the command that makes it).
        ValueError: bad arguments (naming the received value), an
            unlabelled dataset with ``cas``, a class with too few training
            images for ``num_samples``.
    """
    num_samples = positive_int("num_samples", num_samples)
    temperature = check_temperature(temperature)
    seed = integer("seed", seed)
    classifier_steps = positive_int("classifier_steps", classifier_steps)
    batch_size = positive_int("batch_size", batch_size)
    if max_examples is not None:
        max_examples = positive_int("max_examples", max_examples)
    say = print if verbose else (lambda *a, **k: None)
    config = run_folder.read_run_config(run)
    model = run_folder.load_model(run, compile=False)
    priors = run_folder.load_priors(run, model.levels, compile=False)
    check_chain(priors)
    sources = {split: run_folder.load_run_images(config, split, data_dir)
               for split in ("train", "test")}
    seconds, result = {}, {"settings": {
        "num_samples": num_samples, "temperature": temperature, "seed": seed,
        "classifier_steps": classifier_steps, "max_examples": max_examples,
        "dataset": config["dataset"], "image_shape": list(sources["test"].image_shape)}}

    start = time.perf_counter()
    rate, counts = _rate_distortion(run, model, priors, sources, batch_size, max_examples)
    result["rate_distortion"] = rate
    result["codebook_usage"] = {
        split: {level: usage_summary(c) for level, c in by_level.items()}
        for split, by_level in counts.items()}
    seconds["rate_distortion"] = time.perf_counter() - start
    say(f"rate-distortion: total {rate['total_bits_per_image']['validation']:.1f} bits/image "
        f"(naive {rate['naive_bits_per_image']:.0f}), validation PSNR "
        f"{rate['decoder']['validation']['psnr']:.2f} dB ({seconds['rate_distortion']:.0f} s)")

    grid = None
    if cas:
        result["cas"], grid = _cas_rows(model, priors, sources, num_samples, temperature, seed,
                                        classifier_steps, max_examples, batch_size, seconds,
                                        say)
    result["seconds"] = seconds
    bad = nonfinite_entries(result)
    if bad:  # never a silent NaN in a results file: nothing is written
        raise FloatingPointError(
            f"The evaluation of {run} gave non-finite numbers, so nothing was written: "
            f"{', '.join(bad[:5])}")
    evaluation_dir(run).mkdir(parents=True, exist_ok=True)
    write_usage_histograms(evaluation_dir(run), counts["validation"],
                           logdir=evaluation_logs_dir(run))
    if grid is not None:
        save_png(class_samples_file(run), grid)
    _write_logs(run, result, grid)
    atomic.write_bytes(evaluation_table_file(run), _markdown(result).encode())
    atomic.write_json(evaluation_file(run), result)  # last: its presence means complete
    return result


def _cas_rows(model, priors, sources, num_samples, temperature, seed, classifier_steps,
              max_examples, batch_size, seconds, say):
    """The three CAS rows and the per-class sample grid (None without generated samples)."""
    train, test = sources["train"], sources["test"]
    num_classes = train.num_classes
    if not train.labelled or not num_classes:
        raise ValueError(
            "The classification accuracy score needs a labelled dataset; this run's "
            "training split has no class labels: pass --no-cas for the rate-distortion "
            "table alone.")
    test_images, test_labels = real_test_set(test, batch_size, max_examples)
    real_images, real_labels = _class_balanced_real(train, num_samples, num_classes, seed,
                                                    batch_size)

    def score(name, images, labels):
        start = time.perf_counter()
        value = classification_accuracy_score(
            images, labels, test_images, test_labels, num_classes,
            steps=classifier_steps, seed=seed)
        seconds[f"cas_{name}"] = time.perf_counter() - start
        say(f"CAS {name}: top-1 {value['top1']:.2f} %"
            + ("" if value.get("top5") is None else f", top-5 {value['top5']:.2f} %")
            + f" ({seconds[f'cas_{name}']:.0f} s)")
        return value

    rows = {"real": score("real", real_images, real_labels)}
    start = time.perf_counter()
    reconstructed = _reconstruct(model, real_images, batch_size)
    seconds["reconstruct"] = time.perf_counter() - start
    rows["reconstructed"] = score("reconstructed", reconstructed, real_labels)
    top = priors[model.levels[0]]
    if top.num_classes is None:
        rows["generated"] = {"missing": "the top prior is not class-conditional "
                                        "(train-prior --class-conditional)"}
        return rows, None
    if top.num_classes != num_classes:
        raise ValueError(
            f"The top prior has {top.num_classes} classes but the dataset has "
            f"{num_classes}. Received: a prior trained on other labels")
    start = time.perf_counter()
    generated, labels = generate_class_balanced(model, priors, num_samples, num_classes,
                                                temperature, seed, batch_size)
    seconds["sample"] = time.perf_counter() - start
    say(f"sampled {num_samples} images ({seconds['sample']:.0f} s)")
    rows["generated"] = score("generated", generated, labels)
    for row in rows.values():
        if "top1" in row and rows["real"]["top1"] > 0:
            row["relative_to_real"] = row["top1"] / rows["real"]["top1"]
    return rows, _per_class_grid(generated, labels, num_classes)


def main(args):
    """Entry point of ``tfvqvae evaluate``."""
    result = evaluate_run(
        args.run, args.num_samples, args.temperature, args.seed, args.classifier_steps,
        args.max_examples, args.batch_size, args.data_dir, args.cas)
    cas = result.get("cas", {}).get("generated", {})
    if "relative_to_real" in cas:
        print(f"generated CAS: {cas['relative_to_real']:.3f} of the real row's top-1")
    print(f"wrote {evaluation_file(args.run)} and {evaluation_table_file(args.run)}")
    return 0
