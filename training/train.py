"""Train a VQ-VAE and write its artifacts: the library behind ``tfvqvae train``.

``--model vqvae2`` trains the two-level `tfvqvae.VQVAE2` instead, and
``--model hierarchical --levels L`` a `tfvqvae.HierarchicalVQVAE` with L code
levels (top, middle, bottom for L = 3). ``--quantizer`` picks every level's
quantiser (`build_quantizer`): ema, vq, fsq, lfq, rvq or grouped (the last two
code each position with Q indices: ``--num-quantizers`` / ``--num-groups``).

Output folder::

    config.json            the resolved TrainConfig
    checkpoints/           epoch-NNNN.keras + latest.json, every epoch
    logs/                  TensorBoard events (train and validation)
    history.csv            one line of metrics per epoch
    model.keras            the trained model (with --int8-kernels, its kernels
                           rounded to TFLite's int8 grid: tfvqvae.models.kernel_grid)
    reconstructions.png    test originals next to their reconstructions
    metrics.json           test MSE, PSNR, perplexity, usage %, dead codes (of
                           model.keras), and int8_kernels: the kernels rounded
                           (per level under "levels" for a model
                           with more than one level)

Every file is written atomically; ``--resume`` continues a killed run from its
last complete checkpoint.
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

import tfvqvae
from tfvqvae import atomic
from tfvqvae.distribute import build_strategy
from tfvqvae.distribute import num_input_pipelines
from tfvqvae.distribute import split_cpu
from tfvqvae.killpoints import killpoint
from tfvqvae.metrics import psnr
from tfvqvae.models.kernel_grid import snap_kernels
from tfvqvae.run_folder import checkpoints_dir
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import load_run_images
from tfvqvae.run_folder import logs_dir
from tfvqvae.run_folder import metrics_file
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import reconstructions_file
from tfvqvae.training.checkpoints import describe_latest
from tfvqvae.training.config import PRESETS
from tfvqvae.training.config import TrainConfig
from tfvqvae.training.images import save_reconstruction_grid
from tfvqvae.training.resumable import DEFAULT_BACKUP_EVERY
from tfvqvae.training.resumable import batch_distribution_options
from tfvqvae.training.resumable import fit_and_test
from tfvqvae.training.resumable import resolve_strategy
from tfvqvae.training.resumable import restore_or_build
from tfvqvae.training.resumable import start_run
from tfvqvae.training.resumable import steps_per_epoch_of
from tfvqvae.training.resumable import write_folder


def build_quantizer(config, seed):
    """The quantiser of one level from ``config.quantizer`` and its options, seeded with ``seed``.

    "ema" / "vq": `tfvqvae.VectorQuantizerEMA` / `tfvqvae.VectorQuantizer`;
    "fsq": `tfvqvae.FiniteScalarQuantizer` of ``config.fsq_levels``; "lfq":
    `tfvqvae.LookupFreeQuantizer` of ``config.embedding_dim`` bits; "rvq":
    `tfvqvae.ResidualVectorQuantizer` of ``config.num_quantizers`` stages;
    "grouped": `tfvqvae.GroupedVectorQuantizer` of ``config.num_groups`` heads
    (stages / heads EMA or gradient per ``config.stage_quantizer``).
    """
    quantizer = config.quantizer
    if quantizer == "fsq":
        return tfvqvae.FiniteScalarQuantizer([int(v) for v in config.fsq_levels.split(",")])
    if quantizer == "lfq":
        return tfvqvae.LookupFreeQuantizer(
            config.embedding_dim, entropy_cost=config.lfq_entropy_cost,
            commitment_cost=config.commitment_cost)
    ema = (config.stage_quantizer if quantizer in ("rvq", "grouped") else quantizer) == "ema"
    options = dict(
        num_embeddings=config.num_embeddings,
        embedding_dim=config.embedding_dim,
        commitment_cost=config.commitment_cost,
        kmeans_init=config.kmeans_init,
        restart_unused_after=config.restart_unused_after,
        seed=seed,
    )
    if ema:
        options["decay"] = config.decay
    else:
        options["codebook_cost"] = config.codebook_cost
    if quantizer == "rvq":
        return tfvqvae.ResidualVectorQuantizer(
            config.num_quantizers, ema=ema, shared_codebook=config.shared_codebook,
            quantizer_dropout=config.quantizer_dropout, **options)
    if quantizer == "grouped":
        return tfvqvae.GroupedVectorQuantizer(
            config.num_groups, ema=ema, shared_codebook=config.shared_codebook, **options)
    quantizer_class = tfvqvae.VectorQuantizerEMA if ema else tfvqvae.VectorQuantizer
    return quantizer_class(**options)


def build_model(config, data_variance=1.0, image_channels=1):
    """The model of ``config``: a `tfvqvae.VQVAE`, a `tfvqvae.VQVAE2` (``model="vqvae2"``)
    or a `tfvqvae.HierarchicalVQVAE` of ``config.levels`` levels (``model="hierarchical"``).

    Every level gets its own quantiser from the same settings (`build_quantizer`);
    level k (top = 0) is seeded with ``config.seed + k``.
    """
    sizes = dict(
        image_channels=image_channels,
        hidden_channels=config.hidden_channels,
        residual_channels=config.residual_channels,
        num_residual_layers=config.num_residual_layers,
        data_variance=data_variance,
    )

    def quantizers(count):
        return [build_quantizer(config, config.seed + k) for k in range(count)]

    if config.model == "vqvae2":
        top, bottom = quantizers(2)
        return tfvqvae.VQVAE2(top_quantizer=top, bottom_quantizer=bottom, **sizes)
    if config.model == "hierarchical":
        return tfvqvae.HierarchicalVQVAE(
            num_levels=config.levels, quantizers=quantizers(config.levels), **sizes
        )
    return tfvqvae.VQVAE(
        num_downsamples=config.num_downsamples, quantizer=build_quantizer(config, config.seed),
        **sizes
    )


def _image_shape(dataset, config):
    """(H, W, C) of the training images, once H and W fit the model (`TrainConfig.size_multiple`)."""
    height, width, channels = dataset.image_shape
    if config.image_size is not None:
        height = width = config.image_size
    multiple = config.size_multiple
    if not (height % multiple or width % multiple):
        return height, width, channels
    if config.model == "vqvae":
        reason = (f"divisible by 2 ** num_downsamples = {multiple}: pass --image-size "
                  "or change --num-downsamples.")
    elif config.model == "vqvae2":
        reason = (f"divisible by {multiple}, which --model vqvae2 needs (top codes at 1/8 of "
                  "the image): pass --image-size.")
    else:
        reason = (f"divisible by {multiple} = 2 ** (levels + 1), which --model hierarchical "
                  f"--levels {config.levels} needs (top codes at 1/{multiple} of the image): "
                  "pass --image-size or fewer --levels.")
    raise ValueError(
        f"Image size {height}x{width} of dataset {config.dataset!r} is not {reason}"
    )


def _test_metrics(model, test):
    """The ``"test"`` entry of metrics.json from ``evaluate``'s results.

    A one-level model (a VQVAE) keeps its flat keys; a model with several
    levels (VQVAE2, HierarchicalVQVAE) reports each level under
    ``levels[level]``, top first, with the same four names. A level with a
    depth axis adds ``code_depth`` (Q); its perplexity, usage and dead codes
    are means over its Q codebooks (`tfvqvae.models.autoencoder`).
    """
    metrics = {
        "mse": test["mse"],
        "psnr_db": psnr(test["mse"]),
        "normalized_mse": test["mse"] / model.reconstruction_variance,
    }

    depths = model.level_code_depths

    def level_metrics(prefix, level):
        values = {
            "perplexity": test[f"{prefix}perplexity"],
            "usage_percent": test[f"{prefix}usage"],
            "dead_codes": int(round(test[f"{prefix}dead_codes"])),
            "num_embeddings": model.level_num_embeddings[level],
        }
        if depths[level] is not None:  # Q codebooks: the three values are means over them
            values["code_depth"] = depths[level]
        return values

    if len(model.levels) == 1:
        metrics.update(level_metrics("", model.levels[0]))
    else:
        metrics["levels"] = {
            level: level_metrics(f"{level}_", level) for level in model.levels
        }
    return metrics


def train(config, resume=False, overwrite=False, callbacks=(), verbose="auto",
          strategy=None, backup_every=DEFAULT_BACKUP_EVERY):
    """Trains (or resumes) a VQ-VAE and writes the output folder.

    Args:
        config: a `TrainConfig`. On resume it must equal the saved
            ``config.json`` except for ``epochs`` (and ``out``).
        resume: continue from the newest checkpoint in ``config.out``. The
            same call on an interrupted run's folder resumes without it
            (or starts again, when it was killed before its first checkpoint).
        overwrite: delete a non-empty ``config.out`` first.
        callbacks: extra Keras callbacks for ``fit``.
        verbose: passed to ``fit`` (``"auto"`` shows the progress bar).
        strategy: None (the current ``tf.distribute`` strategy), a name for
            `tfvqvae.distribute.build_strategy` or a strategy.
            ``config.batch_size`` is the global batch: each of the R replicas
            gets ``batch_size / R`` images per step.
        backup_every: save a mid-epoch backup every this many steps (None:
            only at epoch ends); a killed run resumes from the newest.

    Returns:
        The metrics dict also written to ``metrics.json``.

    Raises:
        ValueError: a bad configuration or dataset, or ``resume`` with
            settings that differ from the saved ones (each is named).
        FileExistsError: ``config.out`` holds something else than this run.
        FloatingPointError: the run diverged (a NaN / Inf loss, gradient,
            weight or test metric); the message names the step and the
            newest good checkpoint, and no non-finite weights were saved.
        OSError: a file could not be written (a full disk); the message
            names it.
    """
    start = time.perf_counter()

    def load_data(config):  # every check on the data, before the folder is created
        train_data = load_run_images(config.to_dict(), "train")
        if config.max_train_examples is not None:
            train_data = train_data.take(config.max_train_examples)
        _, _, channels = _image_shape(train_data, config)
        steps = steps_per_epoch_of(len(train_data), config.batch_size, "images")
        pipelines = num_input_pipelines(strategy)
        if pipelines > 1:  # files sharded per worker: every worker takes as many steps
            steps = train_data.steps_per_epoch(config.batch_size, pipelines)
            if steps == 0:
                raise ValueError(
                    f"The training set's files do not give each of the {pipelines} workers "
                    f"one global batch of {config.batch_size}: lower --batch-size.")
        return train_data, load_run_images(config.to_dict(), "test"), channels, steps

    strategy = resolve_strategy(strategy)
    strategy, out, config, resume, data = start_run(
        config.out, config, resume, overwrite, strategy, check=load_data)
    train_data, test_data, channels, steps_per_epoch = data
    keras.utils.set_random_seed(config.seed)

    def build():
        variance = train_data.pixel_variance() if config.normalize_mse else 1.0
        return build_model(config, data_variance=variance, image_channels=channels)

    model, initial_step = restore_or_build(out, resume, steps_per_epoch, strategy, config, build)

    def make_dataset(first_epoch, skip_batches, input_context=None):
        return train_data.epochs_dataset(
            config.batch_size, seed=config.seed, first_epoch=first_epoch,
            epochs=config.epochs, skip_batches=skip_batches, random_flip=config.random_flip,
            input_context=input_context,
        )

    test_ds = batch_distribution_options(
        test_data.to_tf_dataset(config.batch_size)
    )
    with write_folder(out, strategy) as write:
        atomic.write_json(config_file(write), config.to_dict())
        test = fit_and_test(
            model, make_dataset, write, test_ds, steps_per_epoch=steps_per_epoch,
            epochs=config.epochs, initial_step=initial_step, backup_every=backup_every,
            callbacks=[keras.callbacks.TensorBoard(log_dir=str(logs_dir(write))), *callbacks],
            verbose=verbose,
        )
        snapped = []
        if config.int8_kernels:  # the checkpoints keep the float kernels
            snapped = snap_kernels(model)
            test = model.evaluate(test_ds, return_dict=True, verbose=0)
        metrics = {
            "dataset": config.dataset,
            "epochs": config.epochs,
            "num_train_images": len(train_data),
            "num_test_images": len(test_data),
            "replicas": strategy.num_replicas_in_sync,
            "test": _test_metrics(model, test),
            "int8_kernels": len(snapped),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        originals = next(iter(test_data.take(config.grid_pairs).to_tf_dataset(
            config.grid_pairs)))
        reconstructions = keras.ops.convert_to_numpy(model(originals, training=False))
        if not np.all(np.isfinite(reconstructions)):
            raise FloatingPointError(
                f"Training diverged: the final model's reconstructions hold NaN or Inf "
                f"(step {config.epochs * steps_per_epoch}); model.keras was not written. "
                f"{describe_latest(checkpoints_dir(write))}"
            )
        killpoint("train:final-save")
        with atomic.atomic_path(model_file(write)) as temp:
            model.save(temp)
        save_reconstruction_grid(reconstructions_file(write), originals.numpy(), reconstructions)
        atomic.write_json(metrics_file(write), metrics)
    return metrics


def strategy_from_args(args):
    """The strategy named by ``--strategy`` (and ``--cpu-replicas`` / ``--tpu``)."""
    devices = None
    if args.cpu_replicas is not None:
        if args.strategy != "mirrored":
            raise ValueError("--cpu-replicas only applies to --strategy mirrored")
        devices = split_cpu(args.cpu_replicas)
    if args.tpu is not None and args.strategy != "tpu":
        raise ValueError("--tpu only applies to --strategy tpu")
    return build_strategy(args.strategy, devices=devices, tpu=args.tpu)


def backup_every_from_args(args):
    if args.backup_every < 0:
        raise ValueError(f"--backup-every must be >= 0. Received: {args.backup_every}")
    return args.backup_every or None


def config_from_args(args):
    """The TrainConfig of parsed ``tfvqvae train`` arguments (`tfvqvae_cli.parser`)."""
    out = args.out
    if out is None:
        out = f"runs/{args.preset}" if args.preset else TrainConfig.out
    args = argparse.Namespace(**{**vars(args), "out": out})
    return TrainConfig.from_args(args, PRESETS.get(args.preset),
                                 saved=config_file(out))


def main(args):
    """Entry point of ``tfvqvae train`` (``args`` from `tfvqvae_cli.parser`)."""
    config = config_from_args(args)
    metrics = train(
        config, resume=args.resume, overwrite=args.overwrite,
        strategy=strategy_from_args(args), backup_every=backup_every_from_args(args),
    )
    out = Path(config.out)
    test = metrics["test"]
    levels = test.get("levels", {"": test})
    codes = "  ".join(
        f"{name + ' ' if name else ''}perplexity {level['perplexity']:.1f}  "
        f"usage {level['usage_percent']:.1f}%  dead codes {level['dead_codes']}"
        for name, level in levels.items()
    )
    print(
        f"test mse {test['mse']:.5f}  psnr {test['psnr_db']:.2f} dB  {codes}  "
        f"({metrics['wall_time_s']} s)"
    )
    print(f"wrote {model_file(out)}, {reconstructions_file(out)}, {metrics_file(out)}")
    return 0
