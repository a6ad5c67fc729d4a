"""The whole of Algorithms 1 and 2 in one command: ``tfvqvae pipeline``.

    train the VQ-VAE → extract codes → train a prior per level (top first, each
    conditioned on the level above) → sample images
    → export (SavedModel, TFLite, ONNX) → verify the exports against Keras

Each stage is the library function behind its own subcommand (`train`,
`extract_codes`, `train_prior`, `sample_images`), run in order on one run
folder; the README's quick start is ``tfvqvae pipeline --preset quickstart``.

A killed pipeline finishes with the same command: a finished training stage
(its ``metrics.json``, the same configuration and epochs) is kept, an
unfinished one resumes from its newest checkpoint like ``train`` does, code
files of this model are kept, and every stage after one that ran again is
redone (its inputs changed). Sampling, export and verification are quick and
always run again.
"""

import json
import time

from tfvqvae.distribute import in_multi_worker_mode
from tfvqvae.killpoints import killpoint
from tfvqvae.models import level_names
from tfvqvae.run_folder import export_dir
from tfvqvae.run_folder import metrics_file
from tfvqvae.run_folder import prior_dir
from tfvqvae.training.config import PRIOR_PRESETS
from tfvqvae.training.config import PriorConfig
from tfvqvae.training.extract_codes import extract_codes
from tfvqvae.training.resumable import DEFAULT_BACKUP_EVERY
from tfvqvae.training.resumable import resolve_strategy
from tfvqvae.training.resumable import run_status
from tfvqvae.training.sample import sample_images
from tfvqvae.training.train import backup_every_from_args
from tfvqvae.training.train import config_from_args
from tfvqvae.training.train import strategy_from_args
from tfvqvae.training.train import train
from tfvqvae.training.train_prior import train_prior


def model_levels(config):
    """The code levels, top first, of the model ``config`` trains (`level_names`):
    ("top",) for "vqvae", ("top", "bottom") for "vqvae2", ``level_names(levels)``
    for "hierarchical"; one prior is trained per level, in this order (each
    below the top conditioned on the level directly above)."""
    model = getattr(config, "model", "vqvae")
    count = {"vqvae": 1, "vqvae2": 2}.get(model, getattr(config, "levels", None))
    return level_names(count)


def finished_metrics(folder, config):
    """The saved ``metrics.json`` of a training stage that finished with ``config``, or None.

    Finished means: the folder holds this configuration (`run_status`),
    its ``metrics.json`` and ran ``config.epochs`` epochs.
    """
    status, _ = run_status(folder, config)
    if status != "finished":
        return None
    metrics = json.loads(metrics_file(folder).read_text())
    return metrics if metrics.get("epochs") == config.epochs else None


def run_pipeline(config, prior_options=None, num_samples=16, seed=0, overwrite=False,
                 verbose="auto", export_formats=("savedmodel", "tflite", "onnx"),
                 strategy=None, backup_every=DEFAULT_BACKUP_EVERY, resume=False):
    """Runs every stage on ``config.out``; returns a summary dict.

    Args:
        config: the `TrainConfig` of the VQ-VAE.
        prior_options: `PriorConfig` fields (except ``run`` and ``level``)
            shared by the priors of every level.
        num_samples: images in the samples grid.
        seed: sampling seed.
        overwrite: start the run folder afresh.
        verbose: Keras verbosity of the training stages.
        export_formats: formats exported to ``OUT/export`` and verified
            against Keras; empty to skip the export.
        strategy: the training stages' strategy (None, a name or a
            ``tf.distribute.Strategy``); one process only, since extraction,
            sampling and export run here too.
        backup_every: steps between mid-epoch backups of the training stages.
        resume: continue the VQ-VAE's run even when the folder is not
            recognised as the same command's (``train``'s ``--resume``: only
            ``epochs`` may differ). Without it, the same command continues a
            killed pipeline anyway (see the module docstring).

    The priors take ``config``'s ``mixed_precision`` and ``jit_compile``
    unless ``prior_options`` sets them.

    Returns:
        ``{"vqvae": test metrics, "codes": {split: path}, "prior_<level>":
        test metrics, "samples": png path, "export": {artifact: ...}, "export_notes": [str],
        "stages_kept": [names of the finished stages that were kept],
        "wall_time_s": seconds}``.
    """
    start = time.perf_counter()
    if export_formats:
        from tfvqvae.export.exporter import parse_formats

        export_formats = parse_formats(export_formats)  # refused here, before any training
    strategy = resolve_strategy(strategy)
    if in_multi_worker_mode(strategy):
        raise ValueError(
            "pipeline runs in one process; for multi-worker training run "
            "`tfvqvae train` / `train-prior` on every worker, then the other stages."
        )
    levels = model_levels(config)
    options = {"mixed_precision": config.mixed_precision,
               "jit_compile": config.jit_compile, **(prior_options or {})}
    prior_configs = [PriorConfig(run=config.out, level=level, seed=config.seed, **options)
                     for level in levels]  # refused here, before any training
    kept = []
    killpoint("pipeline:train")
    done = None if overwrite else finished_metrics(config.out, config)
    if done is not None:
        summary = {"vqvae": done["test"]}
        kept.append("vqvae")
    else:
        summary = {"vqvae": train(config, overwrite=overwrite, resume=resume, verbose=verbose,
                                  strategy=strategy, backup_every=backup_every)["test"]}
    redo = done is None  # every stage after one that ran is redone
    killpoint("pipeline:extract-codes")
    paths = extract_codes(config.out, overwrite=redo)
    if len(paths.kept) == len(paths):
        kept.append("codes")
    redo = redo or len(paths.kept) < len(paths)
    summary["codes"] = {split: str(path) for split, path in paths.items()}
    for prior_config in prior_configs:
        killpoint(f"pipeline:prior-{prior_config.level}")
        done = None if redo else finished_metrics(
            prior_dir(config.out, prior_config.level), prior_config)
        if done is not None:
            summary[f"prior_{prior_config.level}"] = done["test"]
            kept.append(prior_dir(config.out, prior_config.level).name)
            continue
        summary[f"prior_{prior_config.level}"] = train_prior(
            prior_config, overwrite=redo, verbose=verbose,
            strategy=strategy, backup_every=backup_every,
        )["test"]
        redo = True
    killpoint("pipeline:sample")
    _, _, png = sample_images(config.out, num_samples=num_samples, seed=seed)
    summary["samples"] = str(png)
    if export_formats:
        from tfvqvae.export import export_run
        from tfvqvae.export import verify_export

        killpoint("pipeline:export")
        result = export_run(config.out, export_dir(config.out), formats=export_formats,
                            overwrite=True)
        summary["export"] = {
            row.artifact: {"agreement_percent": row.agreement, "psnr_db": row.psnr_db}
            for row in verify_export(result, config.out, num_images=256)
        }
        summary["export_notes"] = list(result.notes)
    summary["stages_kept"] = kept
    summary["wall_time_s"] = round(time.perf_counter() - start, 1)
    return summary


def main(args):
    """Entry point of ``tfvqvae pipeline`` (options: train's, plus --prior-* for the priors)."""
    config = config_from_args(args)
    prior_options = PriorConfig.options_from_args(
        args, PRIOR_PRESETS.get(args.preset), prefix="prior_")
    formats = tuple(f for f in args.export_formats.split(",") if f.strip())
    summary = run_pipeline(config, prior_options, args.num_samples, args.sample_seed,
                           overwrite=args.overwrite, resume=args.resume,
                           export_formats=formats,
                           strategy=strategy_from_args(args),
                           backup_every=backup_every_from_args(args))
    vq = summary["vqvae"]
    if summary["stages_kept"]:
        print(f"kept the finished stages: {', '.join(summary['stages_kept'])}")
    print(f"VQ-VAE test mse {vq['mse']:.5f}, psnr {vq['psnr_db']:.2f} dB")
    for key, value in summary.items():
        if key.startswith("prior_"):
            print(f"{key[6:]} prior: test {value['bits_per_dim']:.3f} bits/dim")
    for note in summary.get("export_notes", []):
        print(f"export note: {note}")
    for artifact, row in summary.get("export", {}).items():
        print(f"export {artifact}: {row['agreement_percent']:.2f} % codes equal to Keras, "
              f"PSNR {row['psnr_db']:.2f} dB")
    print(f"wrote {config.out}/ (model.keras, reconstructions.png, codes/, prior-*/, "
          f"{summary['samples']}, export/) in {summary['wall_time_s']} s")
    return 0

