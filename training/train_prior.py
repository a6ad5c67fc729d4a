"""Train a PixelCNN prior on extracted codes: the library behind ``tfvqvae train-prior``.

Algorithm 2 of VQ-VAE-2, lines 8-9, for any number of levels. The priors
form a chain over the run's levels, top first (``metadata["levels"]`` of the
code file): the top prior models p(top codes [| class]); the prior of every
lower level k models p(codes of level k | codes of level k − 1 [, class]),
conditioned on the level directly above only (bottom given top for VQ-VAE-2;
middle given top and bottom given middle for three levels), which is what
`tfvqvae.models.sampling.sample_levels` samples. A one-level VQVAE has only
the top prior. Inputs and outputs::

    RUN_DIR/model.keras, RUN_DIR/codes/codes-{train,test}.tfrecord (shards, or single files)
        -> RUN_DIR/prior-<level>/model.keras, checkpoints/, history.csv,
           metrics.json (test nll in nats and bits per code), config.json
"""

import dataclasses
import math
import time

import keras
import tensorflow as tf

import tfvqvae
from tfvqvae import atomic
from tfvqvae.data import epoch_batches
from tfvqvae.data import expected_metadata
from tfvqvae.data import load_codes
from tfvqvae.data.code_shards import existing_files
from tfvqvae.models.pixelcnn_prior import prior_inputs
from tfvqvae.run_folder import code_file
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import load_model
from tfvqvae.run_folder import metrics_file
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import prior_dir
from tfvqvae.training.config import PRIOR_PRESETS
from tfvqvae.training.config import PriorConfig
from tfvqvae.training.resumable import DEFAULT_BACKUP_EVERY
from tfvqvae.training.resumable import batch_distribution_options
from tfvqvae.training.resumable import fit_and_test
from tfvqvae.training.resumable import restore_or_build
from tfvqvae.training.resumable import start_run
from tfvqvae.training.resumable import steps_per_epoch_of
from tfvqvae.training.resumable import write_folder
from tfvqvae.training.train import backup_every_from_args
from tfvqvae.training.train import strategy_from_args


def _open_codes(run, split, model):
    """``load_codes`` of the split's code file or shards, checked against ``model``."""
    path = code_file(run, split)
    if not existing_files(path):
        raise FileNotFoundError(
            f"No code file at {path} (nor shards of it): run "
            f"`tfvqvae extract-codes --run {run}` first."
        )
    return load_codes(path, expect=expected_metadata(model))


def condition_level(level, metadata):
    """The level whose codes the prior of ``level`` is conditioned on: the one directly
    above it in ``metadata["levels"]`` (top first), or None for the top level.

    Raises:
        ValueError: ``level`` is not one of the code file's levels (the
            message names those it has).
    """
    levels = list(metadata["levels"])
    if level not in levels:
        raise ValueError(
            f"The codes have no {level!r} level: pass --level {' | '.join(levels)}. "
            f"Received: level={level!r}"
        )
    k = levels.index(level)
    return levels[k - 1] if k > 0 else None


def prior_options(config, metadata):
    """`PixelCNNPrior` arguments for ``config.level`` of a code file's ``metadata``.

    The prior of a level below the top is conditioned on the codes of the
    level directly above (`condition_level`). A level whose codes have a
    depth axis (a residual or grouped quantizer's, ``code_shapes`` (h, w, Q))
    gets a prior over (h, w, Q) maps, which predicts a position's Q codes in
    order (`tfvqvae.PixelCNNPrior`).

    Raises ValueError when the codes cannot give what ``config`` asks for.
    """
    level = config.level
    above = condition_level(level, metadata)
    num_classes = None
    if config.class_conditional:
        num_classes = metadata["num_classes"]
        if not num_classes:
            raise ValueError("--class-conditional needs labelled codes; these have no classes.")
    condition = {}
    if above is not None:
        condition = dict(
            condition_num_embeddings=metadata["num_embeddings"][above],
            condition_shape=metadata["code_shapes"][above],
        )
    return dict(
        num_embeddings=metadata["num_embeddings"][level],
        code_shape=metadata["code_shapes"][level],
        hidden_channels=config.hidden_channels,
        num_blocks=config.num_blocks,
        kernel_size=config.kernel_size,
        attention_every=config.attention_every,
        num_attention_heads=config.num_attention_heads,
        num_classes=num_classes,
        **condition,
    )


def build_prior(config, metadata):
    """The `PixelCNNPrior` for ``config.level`` of a code file's ``metadata``."""
    return tfvqvae.PixelCNNPrior(**prior_options(config, metadata))


def _pipeline(dataset, config, metadata):
    """Test batches: every record, in file order."""
    above = condition_level(config.level, metadata)
    dataset = dataset.map(
        lambda r: prior_inputs(r, config.level, config.class_conditional, above),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def _epochs_pipeline(dataset, config, metadata, first_epoch, skip_batches, input_context=None,
                     steps_per_epoch=None):
    """Training batches of epochs ``first_epoch ..``, minus the first ``skip_batches``.

    The run's one resumable epoch order (`tfvqvae.data.epoch_batches`):
    epoch e's order is a function of (config.seed, e) alone, so a resumed
    process rebuilds the same batches; records are shuffled within blocks of
    10 000 (a file of at most one block is shuffled whole); the last partial
    batch is dropped (static shapes). With an ``input_context``
    (``distribute_datasets_from_function``) the batches are per replica, and
    input pipeline k of P takes every P-th record.
    """
    above = condition_level(config.level, metadata)
    inputs = dataset.map(
        lambda r: prior_inputs(r, config.level, config.class_conditional, above))
    if input_context is None:
        return epoch_batches(
            inputs, config.batch_size, seed=config.seed, first_epoch=first_epoch,
            epochs=config.epochs, skip_batches=skip_batches,
        ).prefetch(tf.data.AUTOTUNE)
    if input_context.num_input_pipelines > 1:
        inputs = inputs.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return epoch_batches(
        inputs, config.batch_size, seed=config.seed, first_epoch=first_epoch,
        epochs=config.epochs, skip_batches=skip_batches, input_context=input_context,
        steps_per_epoch=steps_per_epoch,
    ).prefetch(tf.data.AUTOTUNE)


def train_prior(config, resume=False, overwrite=False, callbacks=(), verbose="auto",
                strategy=None, backup_every=DEFAULT_BACKUP_EVERY):
    """Trains (or resumes) the prior of one level; returns its metrics dict.

    ``strategy``, ``backup_every`` and the batch semantics are those of
    `tfvqvae.training.train`: ``config.batch_size`` is the global batch, and
    the same call on an interrupted run resumes from its last backup.
    """
    start = time.perf_counter()
    model = load_model(config.run)
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

    test_ds = batch_distribution_options(_pipeline(test_codes, config, metadata))
    with write_folder(out, strategy) as write:
        atomic.write_json(config_file(write), dataclasses.asdict(config))
        test = fit_and_test(
            prior,
            lambda first, skip, input_context=None: _epochs_pipeline(
                train_codes, config, metadata, first, skip, input_context, steps_per_epoch),
            write, test_ds, steps_per_epoch=steps_per_epoch, epochs=config.epochs,
            initial_step=initial_step, backup_every=backup_every, callbacks=callbacks,
            verbose=verbose,
        )
        metrics = {
            "level": config.level,
            "epochs": config.epochs,
            "num_train_records": num_records,
            "code_shape": list(prior.code_shape),
            "code_depth": prior.code_depth,
            "num_embeddings": prior.num_embeddings,
            "replicas": strategy.num_replicas_in_sync,
            "test": {"nll_nats": test["nll"], "bits_per_dim": test["bits_per_dim"]},
            "uniform_bits_per_dim": math.log2(prior.num_embeddings),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        with atomic.atomic_path(model_file(write)) as temp:
            prior.save(temp)
        atomic.write_json(metrics_file(write), metrics)
    return metrics


def config_from_args(args):
    """The PriorConfig of parsed ``tfvqvae train-prior`` arguments (`tfvqvae_cli.parser`)."""
    run = args.run if args.run is not None else PriorConfig.run
    level = args.level if args.level is not None else PriorConfig.level
    return PriorConfig.from_args(args, PRIOR_PRESETS.get(args.preset),
                                 saved=config_file(prior_dir(run, level)))


def main(args):
    """Entry point of ``tfvqvae train-prior``."""
    config = config_from_args(args)
    metrics = train_prior(
        config, resume=args.resume, overwrite=args.overwrite,
        strategy=strategy_from_args(args), backup_every=backup_every_from_args(args),
    )
    test = metrics["test"]
    depth = metrics.get("code_depth")
    per_position = "" if depth is None else f", {depth} codes per position"
    print(
        f"{config.level} prior: test nll {test['nll_nats']:.4f} nats, "
        f"{test['bits_per_dim']:.4f} bits/dim (uniform: {metrics['uniform_bits_per_dim']:.2f}"
        f"{per_position}) ({metrics['wall_time_s']} s)"
    )
    print(f"wrote {prior_dir(config.run, config.level) / 'model.keras'}")
    return 0

