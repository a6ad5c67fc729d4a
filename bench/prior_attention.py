"""Does causal self-attention in the top prior help, at equal training wall time?

    python bench/prior_attention.py [--datasets mnist,cifar10] [--seconds 150]
                                    [--attention-every 2,1] [--num-attention-heads 4]
                                    [--num-samples 10000] [--classifier-steps 800]
                                    [--temperature 1.0] [--data-dir ../shared/data]
                                    [--runs bench/scratch/evaluation]
                                    [--out bench/scratch/prior_attention]

Reuses the finished run folders of ``bench/evaluation.py`` (``--runs``: a
VQ-VAE-2 at 32x32, its code files and its class-conditional gated PixelCNN
priors). For each dataset, two new **top** priors are trained on the run's
top codes (4x4) with the settings of the run's ``prior-top/config.json``
(class-conditional, hidden channels, blocks, kernel, Adam learning rate,
batch, seed, the run's epoch order): ``plain`` (no attention) and one
``attention-every-N`` per N of ``--attention-every`` (`tfvqvae.PixelCNNPrior`
with ``attention_every`` = N: a causal self-attention block after every N-th
gated block except the last; with the runs' 4 blocks the default 2,1 gives
one attention block (after block 2) and three (after blocks 1, 2 and 3)).
Each trains for the same wall-clock budget ``--seconds``,
counted from the end of its first step (the first step's tracing and
shuffle-buffer fill is a one-off cost, reported apart) and checked after
every batch by a callback; the variants run back to back in one
process, in alternating order per dataset (plain first on the first dataset,
last on the next, ...), since the machine may be shared.

Measured per variant: optimizer steps done, training seconds (wall and this
process's CPU), the steady time per step (steps after the first), the test
NLL in bits per code on the test split's top codes (``prior.evaluate``), and
the generated-row classification accuracy score exactly as ``tfvqvae
evaluate`` computes it (`tfvqvae.training.evaluate`): the new top prior with
the run's bottom prior, ``--num-samples`` class-balanced samples
(`generate_class_balanced`, XLA-compiled sampler, seed 0), the fixed CAS
classifier trained for ``--classifier-steps`` steps (seed 0) and tested on
the real test split. The real row (and the run's own, longer-trained top
prior as a reference) come from the run's ``evaluation/evaluation.json``.

Claim tested: at equal training wall time, attention gives a lower test
bits/dim and a higher generated CAS than the plain gated prior. One seed
and one budget per variant, so no error bars: small differences (a fraction
of a CAS point, a few thousandths of a bit) may be noise.

Trained priors (``model.keras``) and per-variant results (``train.json``,
``cas-*.json``) are cached under ``--out/DATASET/VARIANT/``: a rerun with the
same settings neither retrains nor resamples. Writes the ``prior_attention``
section of bench/RESULTS.md.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _results import command_line  # noqa: E402
from _results import machine_line  # noqa: E402
from _results import markdown_table  # noqa: E402
from _results import write_section  # noqa: E402
from tfvqvae import atomic  # noqa: E402
from tfvqvae import run_folder  # noqa: E402
from tfvqvae.data import epoch_batches  # noqa: E402
from tfvqvae.data import expected_metadata  # noqa: E402
from tfvqvae.data import load_codes  # noqa: E402
from tfvqvae.evaluation.cas import classification_accuracy_score  # noqa: E402
from tfvqvae.evaluation.classifier import CAS_STEPS  # noqa: E402
from tfvqvae.models.pixelcnn_prior import prior_inputs  # noqa: E402
from tfvqvae.models.sampling import check_chain  # noqa: E402
from tfvqvae.training.config import PriorConfig  # noqa: E402
from tfvqvae.training.evaluate import DEFAULT_BATCH_SIZE  # noqa: E402
from tfvqvae.training.evaluate import real_test_set  # noqa: E402
from tfvqvae.training.evaluate import generate_class_balanced  # noqa: E402
from tfvqvae.training.train_prior import build_prior  # noqa: E402
from tfvqvae.training.train_prior import condition_level  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEFAULT_DATA = BENCH.parents[1] / "shared" / "data"
SEED = 0  # the sampler's and the classifier's, as bench/evaluation.py
MAX_EPOCHS = 1000  # far more than any budget reaches: the callback stops training


class TimeBudget(keras.callbacks.Callback):
    """Stops ``fit`` at the first batch end ``seconds`` or more after the first step
    ended (the first step, tracing the graph and filling the shuffle buffer, is
    a one-off cost outside the budget); records the steps, the first step's
    time and the non-finite (skipped) steps."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.steps = 0
        self.nonfinite = 0
        self.first_step_s = None
        self.losses = []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.steps += 1
        if self.first_step_s is None:  # tracing and filling the shuffle buffer
            self.first_step_s = now - self.start
            self.clock = now
        logs = logs or {}
        self.nonfinite += int(float(logs.get("nonfinite", 0.0)) > 0)
        if now - self.clock >= self.seconds:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float((logs or {}).get("bits_per_dim", float("nan"))))

    def on_train_end(self, logs=None):
        self.wall_s = time.perf_counter() - self.start
        self.budget_s = time.perf_counter() - self.clock  # the steps after the first
        self.cpu_s = time.process_time() - self.cpu_start


def read_json(path):
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def prior_config(run, attention_every, heads):
    """The run's top-prior config, with ``attention_every`` (None: none) and ``heads``."""
    saved = json.loads((run_folder.prior_dir(run, "top") / "config.json").read_text())
    saved.update(run=str(run), attention_every=attention_every, num_attention_heads=heads)
    return PriorConfig.from_dict(saved)


def _inputs(records, config, metadata):
    above = condition_level(config.level, metadata)
    return records.map(lambda r: prior_inputs(r, config.level, config.class_conditional, above),
                       num_parallel_calls=tf.data.AUTOTUNE)


def train_variant(config, codes, seconds, folder):
    """Trains one top prior for ``seconds`` of wall time; saves it; returns its numbers."""
    train_codes, test_codes, metadata = codes
    steps_per_epoch = metadata["num_records"] // config.batch_size
    if config.max_train_examples is not None:
        raise ValueError("the run's top prior used max_train_examples; not supported here")
    keras.utils.set_random_seed(config.seed)
    prior = build_prior(config, metadata)
    prior.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  jit_compile=config.jit_compile)
    train_ds = epoch_batches(_inputs(train_codes, config, metadata), config.batch_size,
                             seed=config.seed, first_epoch=0, epochs=MAX_EPOCHS,
                             steps_per_epoch=steps_per_epoch).prefetch(tf.data.AUTOTUNE)
    test_ds = _inputs(test_codes, config, metadata).batch(config.batch_size).prefetch(
        tf.data.AUTOTUNE)
    budget = TimeBudget(seconds)
    prior.fit(train_ds, epochs=MAX_EPOCHS, steps_per_epoch=steps_per_epoch,
              callbacks=[budget], verbose=0, shuffle=False)
    steps = int(prior.optimizer.iterations.numpy())
    start = time.perf_counter()
    test = prior.evaluate(test_ds, return_dict=True, verbose=0)
    test_s = time.perf_counter() - start
    if not all(np.isfinite(float(v)) for v in test.values()):
        raise FloatingPointError(f"non-finite test metrics: {test}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(folder / "model.keras") as temp:
        prior.save(temp)
    steady = budget.budget_s / max(budget.steps - 1, 1)
    return {
        "config": dataclasses.asdict(config),
        "seconds_budget": seconds,
        "steps": steps,
        "callback_steps": budget.steps,
        "epochs": steps / steps_per_epoch,
        "nonfinite_steps": budget.nonfinite,
        "train_wall_s": budget.wall_s,
        "budget_wall_s": budget.budget_s,
        "train_cpu_s": budget.cpu_s,
        "first_step_s": budget.first_step_s,
        "steady_ms_per_step": 1000.0 * steady,
        "params": int(prior.count_params()),
        "attention_blocks": len(prior.attention_blocks),
        "test_bits_per_dim": float(test["bits_per_dim"]),
        "test_nll_nats": float(test["nll"]),
        "test_s": test_s,
    }


def cas_generated(run, top_prior, test_set, args):
    """The generated CAS row of ``tfvqvae evaluate`` with ``top_prior`` as the top prior."""
    model = run_folder.load_model(run, compile=False)
    priors = run_folder.load_priors(run, model.levels, compile=False)
    priors[model.levels[0]] = top_prior
    check_chain(priors)
    test_images, test_labels, num_classes = test_set
    start = time.perf_counter()
    generated, labels = generate_class_balanced(
        model, priors, args.num_samples, num_classes, args.temperature, SEED,
        DEFAULT_BATCH_SIZE)
    sample_s = time.perf_counter() - start
    start = time.perf_counter()
    value = classification_accuracy_score(
        generated, labels, test_images, test_labels, num_classes,
        steps=args.classifier_steps, seed=SEED)
    value.update(sample_s=sample_s, classifier_s=time.perf_counter() - start,
                 **cas_settings(args))
    return value


def cas_settings(args):
    return {"num_samples": args.num_samples, "classifier_steps": args.classifier_steps,
            "temperature": args.temperature, "seed": SEED}


def load_test_set(run, data_dir):
    """The real test split (images, labels, number of classes), as evaluate loads it."""
    config = run_folder.read_run_config(run)
    train = run_folder.load_run_images(config, "train", data_dir)
    test = run_folder.load_run_images(config, "test", data_dir)
    images, labels = real_test_set(test, DEFAULT_BATCH_SIZE, None)
    return images, labels, train.num_classes


def run_dataset(dataset, index, args):
    run = Path(args.runs) / dataset
    out = Path(args.out) / dataset
    model = run_folder.load_model(run, compile=False)
    expect = expected_metadata(model)
    train_codes, metadata = load_codes(run_folder.code_file(run, "train"), expect=expect)
    test_codes, _ = load_codes(run_folder.code_file(run, "test"), expect=expect)
    codes = (train_codes, test_codes, metadata)
    variants = variants_of(args)
    order = list(variants) if index % 2 == 0 else list(variants)[::-1]
    results = {}
    for position, name in enumerate(order):
        config = prior_config(run, variants[name], args.num_attention_heads)
        folder = out / name
        cached = read_json(folder / "train.json")
        if (cached is not None and cached["config"] == dataclasses.asdict(config)
                and cached["seconds_budget"] == args.seconds
                and (folder / "model.keras").is_file()):
            print(f"{dataset} {name}: kept {folder / 'train.json'}", flush=True)
        else:
            for stale in folder.glob("cas-*.json"):  # results of an older prior
                stale.unlink()
            print(f"{dataset} {name}: training for {args.seconds:g} s "
                  f"(attention_every={variants[name]})", flush=True)
            cached = train_variant(config, codes, args.seconds, folder)
            cached["order"] = position
            atomic.write_json(folder / "train.json", cached)
        print(f"{dataset} {name}: {cached['steps']} steps ({cached['epochs']:.2f} epochs) in "
              f"{cached['budget_wall_s']:.0f} s (+ first step {cached['first_step_s']:.1f} s), "
              f"{cached['steady_ms_per_step']:.1f} ms/step, "
              f"test {cached['test_bits_per_dim']:.4f} bits/dim, "
              f"{cached['nonfinite_steps']} non-finite steps", flush=True)
        results[name] = {"train": cached}
    test_set = None
    for name in order:
        folder = out / name
        key = "cas-n{num_samples}-s{classifier_steps}-t{temperature:g}.json".format(
            **cas_settings(args))
        cas = read_json(folder / key)
        if cas is None:
            if test_set is None:
                test_set = load_test_set(run, args.data_dir)
            prior = run_folder.load_keras_file(folder / "model.keras", "top prior",
                                               compile=False)
            print(f"{dataset} {name}: sampling {args.num_samples} images and training "
                  f"the CAS classifier ({args.classifier_steps} steps)", flush=True)
            cas = cas_generated(run, prior, test_set, args)
            atomic.write_json(folder / key, cas)
        top5 = "" if cas.get("top5") is None else f", top-5 {cas['top5']:.2f} %"
        print(f"{dataset} {name}: generated CAS top-1 {cas['top1']:.2f} %{top5} "
              f"(sampling {cas['sample_s']:.0f} s, classifier {cas['classifier_s']:.0f} s)",
              flush=True)
        results[name]["cas"] = cas
    evaluation = read_json(run_folder.evaluation_file(run))
    reference = {"top": read_json(run_folder.metrics_file(run_folder.prior_dir(run, "top"))),
                 "config": read_json(run_folder.config_file(run_folder.prior_dir(run, "top"))),
                 "evaluation": evaluation}
    return results, reference


def variants_of(args):
    """{variant name: attention_every}: "plain" (None) and one "attention-every-N" per N."""
    every = [int(n) for n in str(args.attention_every).split(",") if n.strip()]
    return {"plain": None, **{f"attention-every-{n}": n for n in every}}


def _standard_errors(results):
    """The binomial standard error of the variants' generated top-1 on the test images."""
    cas = [r["cas"] for r in results.values()]
    errors = [100.0 * math.sqrt(c["top1"] / 100 * (1 - c["top1"] / 100) / c["test_examples"])
              for c in cas]
    return (f"CAS tested on {cas[0]['test_examples']} real test images: binomial standard "
            f"error of a generated top-1 ≈ {min(errors):.2f}–{max(errors):.2f} points "
            "(the classifier's own seed-to-seed spread comes on top)")


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="mnist,cifar10")
    parser.add_argument("--seconds", type=float, default=150.0,
                        help="training wall time of each prior")
    parser.add_argument("--attention-every", default="2,1",
                        help="comma-separated N: one attention variant per N")
    parser.add_argument("--num-attention-heads", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--classifier-steps", type=int, default=CAS_STEPS)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--runs", default=str(BENCH / "scratch" / "evaluation"),
                        help="the run folders of bench/evaluation.py")
    parser.add_argument("--out", default=str(BENCH / "scratch" / "prior_attention"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    start = time.perf_counter()
    rows, speed_rows, notes, warnings = [], [], [], []
    work_s = 0.0
    for index, dataset in enumerate(datasets):
        results, reference = run_dataset(dataset, index, args)
        work_s += sum(r["train"]["train_wall_s"] + r["train"]["test_s"] + r["cas"]["sample_s"]
                      + r["cas"]["classifier_s"] for r in results.values())
        evaluation = reference["evaluation"] or {}
        real = (evaluation.get("cas") or {}).get("real")
        same = evaluation.get("settings", {})
        comparable = (real is not None and same.get("num_samples") == args.num_samples
                      and same.get("classifier_steps") == args.classifier_steps)
        real_top1 = real["top1"] if real else None
        for name in variants_of(args):
            train, cas = results[name]["train"], results[name]["cas"]
            label = ("no attention" if name == "plain" else
                     f"attention_every={train['config']['attention_every']} "
                     f"({train['attention_blocks']} block{'s' * (train['attention_blocks'] != 1)}, "
                     f"{train['config']['num_attention_heads']} heads)")
            rows.append([dataset, label, str(train["steps"]), f"{train['epochs']:.2f}",
                         f"{train['budget_wall_s']:.0f}", f"{train['test_bits_per_dim']:.4f}",
                         _fmt(cas["top1"]), _fmt(cas.get("top5")),
                         _fmt(cas["top1"] / real_top1, 3) if real_top1 else "-"])
            speed_rows.append([dataset, name, str(train["params"]),
                               f"{train['first_step_s']:.1f}",
                               f"{train['steady_ms_per_step']:.1f}",
                               f"{train['train_cpu_s'] / train['train_wall_s']:.2f}",
                               str(train["nonfinite_steps"]), str(train["order"] + 1)])
        top = reference["top"]
        gen = (evaluation.get("cas") or {}).get("generated")
        if top is not None:
            rows.append([dataset, f"reference: the run's top prior ({top['epochs']} epochs, "
                                  "no attention)", "-", str(top["epochs"]),
                         f"{top['wall_time_s']:.0f}", f"{top['test']['bits_per_dim']:.4f}",
                         _fmt(gen and gen.get("top1")), _fmt(gen and gen.get("top5")),
                         _fmt(gen["top1"] / real_top1, 3) if gen and real_top1 else "-"])
        config = reference["config"] or {}
        notes.append(
            f"- {dataset}: top codes {top['code_shape'][0]}x{top['code_shape'][1]}, K = "
            f"{top['num_embeddings']}, {top['num_train_records']} training records; prior "
            f"hidden {config.get('hidden_channels')}, {config.get('num_blocks')} blocks, kernel "
            f"{config.get('kernel_size')}, batch {config.get('batch_size')}, Adam "
            f"{config.get('learning_rate'):g}; real-data CAS top-1 "
            f"{_fmt(real_top1)} %{'' if comparable else ' (other CAS settings: ratio indicative only)'}; "
            f"{_standard_errors(results)}.")
        cores = {name: r["train"]["train_cpu_s"] / r["train"]["train_wall_s"]
                 for name, r in results.items()}
        if max(cores.values()) > 1.2 * min(cores.values()):
            warnings.append(
                f"- **{dataset}: uneven load.** The variants got "
                + ", ".join(f"{name} {c:.2f}" for name, c in cores.items())
                + " CPU seconds per wall second while training (other jobs on the "
                "machine came and went), so their steps at equal wall time reflect the "
                "load as well as the cost of attention; compare their steady ms/step "
                "with care.")
        finished = index == len(datasets) - 1
        lines = [
            "## Causal self-attention in the top prior, at equal training wall time",
            "",
            f"`{command_line()}` ({(time.perf_counter() - start) / 60:.1f} min wall for "
            f"this invocation; the trainings, test passes, sampling and CAS classifiers "
            f"reported took {work_s / 60:.1f} min, cached ones included; other jobs sharing "
            "the 2 cores)."
            f"{'' if finished else ' **Partial: later datasets still running.**'} "
            f"{machine_line()}.",
            "",
            f"Per dataset, {len(variants_of(args))} class-conditional top priors (no "
            "attention, and attention_every = "
            f"{' and '.join(str(n) for n in variants_of(args).values() if n)}) trained from "
            "scratch on the "
            "top codes of the `bench/evaluation.py` run, with the run's top-prior settings, "
            f"each for {args.seconds:g} s of wall time after its first step (the first step, "
            "graph tracing and the shuffle-buffer fill, is a one-off cost reported "
            "below), back to back "
            "in one process, alternating which goes first; then test bits/dim on the "
            "test split's top codes and the generated-row CAS of `tfvqvae evaluate` "
            "(this top prior + the run's bottom prior, "
            f"{args.num_samples} class-balanced samples at temperature "
            f"{args.temperature:g}, classifier {args.classifier_steps} steps, seed {SEED}; "
            "tested on the real test split). Generated / real: the generated top-1 over "
            "the real-data row of the run's `evaluation.json`. The reference row is the "
            "run's own top prior (trained longer) as evaluated there. Runs:",
            "",
            *notes,
            "",
            markdown_table(["dataset", "top prior", "steps", "epochs", "train s",
                            "test bits/dim", "CAS top-1 %", "CAS top-5 %",
                            "generated / real"], rows),
            "",
            "Training speed (steady ms/step: the steps after the first; CPU/wall: this "
            "process's CPU seconds per wall second while training, ≈ cores it got):",
            "",
            markdown_table(["dataset", "variant", "parameters", "first step s",
                            "steady ms/step", "CPU / wall", "non-finite steps",
                            "trained"], speed_rows),
            *([""] + warnings if warnings else []),
        ]
        markdown = "\n".join(lines)
        print(markdown, flush=True)
        if not args.no_write:
            write_section("prior_attention", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
