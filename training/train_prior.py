"""Train a PixelCNN prior on extracted codes: the library behind ``tfvqvae train-prior``.

Algorithm 2 of VQ-VAE-2, lines 8-9: the top prior models p(top codes
[| class]); the bottom prior models p(bottom codes | top codes [, class]).
A one-level VQVAE has only the top prior. Inputs and outputs::

    RUN_DIR/model.keras, RUN_DIR/codes/codes-{train,test}.tfrecord
        -> RUN_DIR/prior-<level>/model.keras, checkpoints/, history.csv,
           metrics.json (test nll in nats and bits per code), config.json
"""

import dataclasses
import math
import time
from pathlib import Path

import keras
import tensorflow as tf

import tfvqvae
from tfvqvae import atomic
from tfvqvae.data import expected_metadata
from tfvqvae.data import load_codes
from tfvqvae.run_folder import load_keras_file
from tfvqvae.run_folder import prior_dir
from tfvqvae.training.checkpoints import check_finite_result
from tfvqvae.training.config import PRIOR_PRESETS
from tfvqvae.training.config import PriorConfig
from tfvqvae.training.extract_codes import code_file_name
from tfvqvae.training.resumable import DEFAULT_BACKUP_EVERY
from tfvqvae.training.resumable import batch_distribution_options
from tfvqvae.training.resumable import restore_or_build
from tfvqvae.training.resumable import resumable_fit
from tfvqvae.training.resumable import start_run
from tfvqvae.training.resumable import steps_per_epoch_of
from tfvqvae.training.resumable import write_folder
from tfvqvae.training.train import backup_every_from_args
from tfvqvae.training.train import strategy_from_args


def load_vqvae(run):
    """The trained VQ-VAE of a run folder (``RUN/model.keras``)."""
    path = Path(run) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"No trained model at {path}: run `tfvqvae train --out {run}` first.")
    return load_keras_file(path, "model")


def _open_codes(run, split, model):
    path = Path(run) / "codes" / code_file_name(split)
    if not path.is_file():
        raise FileNotFoundError(
            f"No code file at {path}: run `tfvqvae extract-codes --run {run}` first."
        )
    return load_codes(path, expect=expected_metadata(model))


def prior_options(config, metadata):
    """`PixelCNNPrior` arguments for ``config.level`` of a code file's ``metadata``.

    Raises ValueError when the codes cannot give what ``config`` asks for.
    """
    level = config.level
    if level not in metadata["levels"]:
        raise ValueError(
            f"The codes have levels {list(metadata['levels'])}; there is no {level!r} level "
            "(a one-level VQVAE has only 'top')."
        )
    num_classes = None
    if config.class_conditional:
        num_classes = metadata["num_classes"]
        if not num_classes:
            raise ValueError("--class-conditional needs labelled codes; these have no classes.")
    condition = {}
    if level == "bottom":
        condition = dict(
            condition_num_embeddings=metadata["num_embeddings"]["top"],
            condition_shape=metadata["code_shapes"]["top"],
        )
    return dict(
        num_embeddings=metadata["num_embeddings"][level],
        code_shape=metadata["code_shapes"][level],
        hidden_channels=config.hidden_channels,
        num_blocks=config.num_blocks,
        kernel_size=config.kernel_size,
        num_classes=num_classes,
        **condition,
    )


def build_prior(config, metadata):
    """The `PixelCNNPrior` for ``config.level`` of a code file's ``metadata``."""
    return tfvqvae.PixelCNNPrior(**prior_options(config, metadata))


def prior_inputs(record, level, class_conditional):
    """A code-file record -> the prior's input dict."""
    inputs = {"codes": record[level]}
    if class_conditional:
        inputs["labels"] = record["label"]
    if level == "bottom":
        inputs["condition"] = record["top"]
    return inputs


def _pipeline(dataset, config):
    """Test batches: every record, in file order."""
    dataset = dataset.map(
        lambda r: prior_inputs(r, config.level, config.class_conditional),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def _epochs_pipeline(dataset, config, num_records, first_epoch, skip_batches):
    """Training batches of epochs ``first_epoch ..``, minus the first ``skip_batches``.

    Epoch e shuffles the records (buffer of up to 10 000) with a seed that
    depends only on (config.seed, e), so a resumed process rebuilds the same
    batches; the last partial batch is dropped (static shapes).
    """
    buffer = min(num_records, 10_000)
    inputs = dataset.map(lambda r: prior_inputs(r, config.level, config.class_conditional))

    def epoch(e):  # a Python seed per epoch: tf.data's shuffle takes no tensor seed here
        seed = (config.seed * 1_000_003 + e) % 2**63
        return inputs.shuffle(buffer, seed=seed, reshuffle_each_iteration=False).batch(
            config.batch_size, drop_remainder=True
        )

    batches = epoch(first_epoch)
    for e in range(first_epoch + 1, config.epochs):
        batches = batches.concatenate(epoch(e))
    return batches.skip(skip_batches).prefetch(tf.data.AUTOTUNE)


def train_prior(config, resume=False, overwrite=False, callbacks=(), verbose="auto",
                strategy=None, backup_every=DEFAULT_BACKUP_EVERY):
    """Trains (or resumes) the prior of one level; returns its metrics dict.

    ``strategy``, ``backup_every`` and the batch semantics are those of
    `tfvqvae.training.train`: ``config.batch_size`` is the global batch, and
    the same call on an interrupted run resumes from its last backup.
    """
    start = time.perf_counter()
    model = load_vqvae(config.run)
    train_codes, metadata = _open_codes(config.run, "train", model)
    test_codes, _ = _open_codes(config.run, "test", model)

    def check(config):  # before the prior's folder is created
        prior_options(config, metadata)
        count = metadata["num_records"]
        if config.max_train_examples is not None:
            count = min(count, config.max_train_examples)
        return count, steps_per_epoch_of(count, config.batch_size, "code records")

    strategy, out, config, resume, (num_records, steps_per_epoch) = start_run(
        prior_dir(config.run, config.level), config, resume, overwrite, strategy, check=check
    )
    if config.max_train_examples is not None:  # the first N records: the same on resume
        train_codes = train_codes.take(num_records)
    keras.utils.set_random_seed(config.seed)
    prior, initial_step = restore_or_build(
        out, resume, steps_per_epoch, strategy, config, lambda: build_prior(config, metadata)
    )

    test_ds = batch_distribution_options(_pipeline(test_codes, config))
    with write_folder(out, strategy) as write:
        atomic.write_json(write / "config.json", dataclasses.asdict(config))
        resumable_fit(
            prior,
            lambda first, skip: _epochs_pipeline(train_codes, config, num_records, first, skip),
            steps_per_epoch=steps_per_epoch,
            epochs=config.epochs,
            initial_step=initial_step,
            checkpoint_dir=write / "checkpoints",
            backup_every=backup_every,
            history_csv=write / "history.csv",
            callbacks=callbacks,
            validation_data=test_ds,
            verbose=verbose,
        )
        test = prior.evaluate(test_ds, return_dict=True, verbose=0)
        check_finite_result(prior, test, write / "checkpoints",
                            step=config.epochs * steps_per_epoch)
        metrics = {
            "level": config.level,
            "epochs": config.epochs,
            "num_train_records": num_records,
            "code_shape": list(prior.code_shape),
            "num_embeddings": prior.num_embeddings,
            "replicas": strategy.num_replicas_in_sync,
            "test": {"nll_nats": test["nll"], "bits_per_dim": test["bits_per_dim"]},
            "uniform_bits_per_dim": math.log2(prior.num_embeddings),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        with atomic.atomic_path(write / "model.keras") as temp:
            prior.save(temp)
        atomic.write_json(write / "metrics.json", metrics)
    return metrics


def config_from_args(args):
    """The PriorConfig of parsed ``tfvqvae train-prior`` arguments (`tfvqvae_cli.parser`)."""
    run = args.run if args.run is not None else PriorConfig.run
    level = args.level if args.level is not None else PriorConfig.level
    return PriorConfig.from_args(args, PRIOR_PRESETS.get(args.preset),
                                 saved=prior_dir(run, level) / "config.json")


def main(args):
    """Entry point of ``tfvqvae train-prior``."""
    config = config_from_args(args)
    metrics = train_prior(
        config, resume=args.resume, overwrite=args.overwrite,
        strategy=strategy_from_args(args), backup_every=backup_every_from_args(args),
    )
    test = metrics["test"]
    print(
        f"{config.level} prior: test nll {test['nll_nats']:.4f} nats, "
        f"{test['bits_per_dim']:.4f} bits/dim (uniform: {metrics['uniform_bits_per_dim']:.2f}) "
        f"({metrics['wall_time_s']} s)"
    )
    print(f"wrote {prior_dir(config.run, config.level) / 'model.keras'}")
    return 0

