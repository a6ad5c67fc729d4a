"""Encode a dataset with a trained model: the library behind ``tfvqvae extract-codes``.

Algorithm 2 of VQ-VAE-2, lines 1-7: every image of each split goes through
the trained encoder once, and the code maps land in code files that the priors
train on::

    RUN_DIR/model.keras + RUN_DIR/config.json  ->  RUN_DIR/codes/codes-train.tfrecord
                                                   RUN_DIR/codes/codes-test.tfrecord
                                                   (base paths of the shard sets)

The dataset, its data folder and the image size default to those the run was
trained with (``config.json``). The whole split is encoded: ``max_train_examples``
limits training only. A split's codes are shards beside the base path above
(``codes-train-00000-of-000NN.tfrecord``, ...; one for small datasets);
`code_file` names them for every reader. File format: `tfvqvae.data.codes`.
A level whose quantiser has a depth axis (residual or grouped: Q codes per
position) is written with its (h, w, Q) maps.
"""

from pathlib import Path

import tfvqvae  # noqa: F401  (importing tfvqvae registers the models for load_model)
from tfvqvae.data import code_files
from tfvqvae.data import model_fingerprint
from tfvqvae.data import read_code_metadata
from tfvqvae.data import write_codes
from tfvqvae.data.code_shards import existing_files
from tfvqvae.data.code_shards import temporary_files
from tfvqvae.killpoints import killpoint
from tfvqvae.run_folder import code_file_name
from tfvqvae.run_folder import codes_dir
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import load_keras_file
from tfvqvae.run_folder import load_run_images
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import read_config

DEFAULT_SPLITS = ("train", "test")


def _split_names(splits):
    if isinstance(splits, str):
        splits = splits.split(",")
    names = []
    for split in splits:
        split = str(split).strip()
        if split and split not in names:
            names.append(split)
    if not names:
        raise ValueError(
            f"No split to extract: pass e.g. --splits train,test. Received: {splits!r}"
        )
    for split in names:
        # NB: a split name becomes part of a file name.
        if "/" in split or "\\" in split or split.startswith("."):
            raise ValueError(f"Split names cannot hold path separators. Received: {split!r}")
    return names


def extract_codes(
    run_dir,
    splits=DEFAULT_SPLITS,
    out=None,
    overwrite=False,
    model_path=None,
    dataset=None,
    data_dir=None,
    batch_size=256,
    num_shards=None,
):
    """Writes the shards of ``OUT/codes-<split>.tfrecord`` for each split.

    Args:
        run_dir: a ``tfvqvae train`` output folder.
        splits: split names, a sequence or a comma-separated string.
            Defaults to ``("train", "test")``.
        out: output folder. Defaults to ``run_dir/codes``.
        overwrite: replace existing code files (a set of another size or a
            single file of the earlier layout included). Without it the
            complete shard set (or single file) of a split written by the
            same model (same codebook fingerprint) from the same dataset is
            kept, so that a killed extraction finishes with the same call;
            any other existing file is an error and nothing is written.
        model_path: the model to encode with. Defaults to
            ``run_dir/model.keras``.
        dataset: dataset name. Defaults to the run's ``config.json``.
        data_dir: data folder. Defaults to the run's ``config.json``.
            (The image size always comes from ``config.json``: the size the
            model was trained at.)
        batch_size: images per encoding step. Defaults to 256.
        num_shards: files per split (`write_codes`). Defaults to shards of
            about 128 MB (`default_num_shards`). When given, kept files
            must have this many shards.

    Returns:
        A `CodeFiles`: ``{split: Path}`` of every split's base path (what
        `load_codes` opens), in the order of ``splits``; its ``kept`` names
        the splits left as they were.

    Raises:
        FileNotFoundError: if the run folder, the model or (when no dataset
            is given) ``config.json`` is missing.
        FileExistsError: if a code file exists, ``overwrite`` is false and the
            file is not this model's codes of this data (the reason is named).
        ValueError: on an empty or bad split list, or a file the model
            cannot encode.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run folder not found: {run_dir}")
    splits = _split_names(splits)
    config_path = config_file(run_dir)
    config = read_config(config_path) if config_path.is_file() else None
    if dataset is None:
        if config is None:
            raise FileNotFoundError(
                f"{config_path} not found: pass --dataset to say what to encode."
            )
        dataset = config.get("dataset")
    if data_dir is None and config is not None:
        data_dir = config.get("data_dir")
    image_size = config.get("image_size") if config is not None else None
    model_path = Path(model_path) if model_path is not None else model_file(run_dir)
    if not model_path.is_file():
        raise FileNotFoundError(
            f"Model not found: {model_path} (train the run to the end, or pass --model-file)"
        )

    out = Path(out) if out is not None else codes_dir(run_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"Output path exists and is not a folder: {out}")
    paths = {split: out / code_file_name(split) for split in splits}

    model = load_keras_file(model_path, "model", compile=False)
    fingerprint = model_fingerprint(model)
    sources = {
        split: {
            "dataset": dataset,
            "split": split,
            "data_dir": None if data_dir is None else str(data_dir),
            "model": str(model_path),
        }
        for split in splits
    }
    kept, refused = [], []
    for split, path in paths.items():
        if existing_files(path) and not overwrite:
            why = _why_not_reusable(path, fingerprint, sources[split], num_shards)
            if why is None:
                kept.append(split)
            else:
                refused.append(f"{path} ({why})")
    if refused:
        raise FileExistsError(
            f"Code file(s) exist: {'; '.join(refused)}; pass --overwrite to replace them."
        )

    images = {**(config or {}), "dataset": dataset, "data_dir": data_dir}
    out.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        # A killed extraction leaves its temporary files; clear ours only.
        for leftover in temporary_files(path):
            leftover.unlink()
    for split, path in paths.items():
        if split in kept:
            continue
        data = load_run_images(images, split)
        write_codes(
            path, model, data, batch_size=batch_size, image_size=image_size,
            source=sources[split], num_shards=num_shards,
        )
        killpoint("extract-codes:written")
    return CodeFiles(paths, kept=tuple(kept))


class CodeFiles(dict):
    """``{split: Path}`` of an extraction, with ``kept``: the splits whose files were
    already complete (same model and data) and were left as they were."""

    def __init__(self, paths, kept=()):
        super().__init__(paths)
        self.kept = tuple(kept)


def _why_not_reusable(path, fingerprint, source, num_shards=None):
    """None if the code files of ``path`` were written by this model from this data (and
    have ``num_shards`` shards, when given), else why not."""
    try:
        metadata = read_code_metadata(path)
    except (ValueError, OSError) as error:
        return f"unreadable: {error}"
    if metadata.get("model_fingerprint") != fingerprint:
        return "written by another model"
    if num_shards is not None and metadata["num_shards"] != num_shards:
        return f"{metadata['num_shards']} shard(s), not {num_shards}"
    written = metadata.get("source") or {}
    for key in ("dataset", "split", "data_dir"):
        if written.get(key) != source[key]:
            return f"its {key} is {written.get(key)!r}, not {source[key]!r}"
    return None


def main(args):
    """Entry point of ``tfvqvae extract-codes`` (``args`` from `tfvqvae_cli.parser`)."""
    paths = extract_codes(
        args.run,
        splits=args.splits,
        out=args.out,
        overwrite=args.overwrite,
        model_path=args.model_file,
        dataset=args.dataset,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        num_shards=getattr(args, "num_shards", None),
    )
    for split, path in paths.items():
        metadata = read_code_metadata(path)
        files = code_files(path)
        action = "kept" if split in paths.kept else "wrote"
        # (h, w) -> "top 4x4 (K=16)"; (h, w, Q) -> "top 4x4x2 (K=16, depth 2)"
        levels = ", ".join(
            f"{level} {'x'.join(map(str, shape))} (K={metadata['num_embeddings'][level]}"
            f"{'' if len(shape) == 2 else f', depth {shape[2]}'})"
            for level in metadata["levels"]
            for shape in [metadata["code_shapes"][level]]
        )
        if files == [path]:
            where = f"a single file, {path}"
        elif len(files) == 1:
            where = f"1 shard, {files[0]}"
        else:
            where = f"{len(files)} shards, {files[0]} .. {files[-1].name}"
        print(f"{split}: {action} {metadata['num_records']} records in {where}, "
              f"levels {levels}")
    return 0
