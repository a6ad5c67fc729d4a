"""Export a run folder to SavedModel, TFLite and ONNX: the library behind ``tfvqvae export``.

The SavedModel is always built first; TFLite and ONNX are converted from it.
Output folder (written whole under a temporary name beside it, then
renamed)::

    OUT/savedmodel/<name>/<version>/     SavedModel for TF Serving ("savedmodel")
    OUT/tflite/<mode>.tflite             float32, dynamic_range, weight_only, int8, int16x8
                                         ("tflite")
    OUT/onnx/{encode,decode,reconstruct}.onnx                         ("onnx")
    OUT/export.json                      what was written: formats, signatures,
                                         file sizes, versions of the tools

A ``tflite`` or ``onnx`` export without ``savedmodel`` still converts from a
SavedModel, built in the temporary folder and not kept.

Replacing an export with ``overwrite`` keeps the old or the new export under
OUT at every instant, and each export first cleans up what killed exports to
OUT left beside it (`tfvqvae.export._files`). A model or prior with a NaN or
Inf weight is refused before anything is written (`check_finite_weights`).
"""

import dataclasses
import json
import platform
import shutil
from importlib import metadata
from pathlib import Path

import keras
import tensorflow as tf

import tfvqvae
from tfvqvae import atomic
from tfvqvae.export import onnx as onnx_export
from tfvqvae.export import signatures
from tfvqvae.export import tflite as tflite_export
from tfvqvae.export._files import recover_stale
from tfvqvae.export._files import refuse_existing
from tfvqvae.export._files import size_on_disk
from tfvqvae.export._files import staged_dir
from tfvqvae.export._optional import require
from tfvqvae.export.quantized_search import quantization_search
from tfvqvae.export.run_folder import load_run
from tfvqvae.export.saved_model import SAMPLE_SIGNATURE
from tfvqvae.export.saved_model import export_saved_model
from tfvqvae.export.saved_model import serving_dir
from tfvqvae.export.verify import SavedModelRunner
from tfvqvae.export.verify import verify_runners
from tfvqvae.finite import describe_nonfinite
from tfvqvae.finite import nonfinite_weights
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import prior_dir

FORMATS = ("savedmodel", "tflite", "onnx")
MANIFEST = "export.json"


def parse_formats(formats):
    """Tuple of export formats from a sequence or a comma-separated string."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(str(f).lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"Unknown export format(s) {unknown}: choose from {', '.join(FORMATS)}. "
            f"Received: {formats!r}"
        )
    return formats


@dataclasses.dataclass
class ExportResult:
    """What `export_run` wrote.

    Attributes:
        out: the export folder.
        name, version: the SavedModel's model name and version.
        formats: the formats written.
        levels: the model's code levels, top first.
        image_shape: (H, W, C) of the exported graphs.
        artifacts: {artifact: Path}: "savedmodel" (the version folder),
            "tflite-<mode>" (files), "onnx" (the folder).
        sizes: {artifact: bytes on disk}; for "onnx" the sum of its files.
        signatures: the SavedModel's signature names.
        notes: things the user should know (e.g. why ``sample`` is missing).
    """

    out: Path
    name: str
    version: int
    formats: tuple
    levels: tuple
    image_shape: tuple
    artifacts: dict
    sizes: dict
    signatures: tuple
    notes: list

    @classmethod
    def load(cls, out):
        """The result of an earlier export, from ``OUT/export.json``."""
        out = Path(out)
        data = json.loads((out / MANIFEST).read_text())
        return cls(
            out=out,
            name=data["name"],
            version=data["version"],
            formats=tuple(data["formats"]),
            levels=tuple(data["levels"]),
            image_shape=tuple(data["image_shape"]),
            artifacts={k: out / v for k, v in data["artifacts"].items()},
            sizes=data["sizes"],
            signatures=tuple(data["signatures"]),
            notes=data["notes"],
        )


def _versions():
    versions = {"tfvqvae": tfvqvae.__version__, "tensorflow": tf.__version__,
                "keras": keras.__version__, "python": platform.python_version()}
    for distribution in ("tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:  # not installed, so not used either
            pass
    return versions


def _signature_table(run, with_sample):
    """{signature: {"inputs": {name: [dtype, shape]}, "outputs": ...}} for the manifest."""
    shape = list(run.image_shape)
    codes = {
        signatures.code_name(level): ["int32", [None, *size]]
        for level, size in run.model.code_shapes(run.image_shape[:2]).items()
    }
    images = {"images": ["float32", [None, *shape]]}
    table = {
        "encode": {"inputs": images, "outputs": codes},
        "decode": {"inputs": codes, "outputs": images},
        "reconstruct": {"inputs": images, "outputs": {"reconstructions": images["images"]}},
    }
    table["serving_default"] = table["reconstruct"]
    if with_sample:
        inputs = {"seed": ["int64", []], "temperature": ["float32", []]}
        if signatures.sample_num_classes(run.priors) is None:
            inputs["num_samples"] = ["int32", []]
        else:
            inputs["labels"] = ["int32", [None]]
        table[SAMPLE_SIGNATURE] = {"inputs": inputs, "outputs": {**codes, **images}}
    return table


def check_finite_weights(model, path):
    """Raises ValueError when a floating-point weight of ``model`` holds NaN or Inf.

    Every weight counts, trainable or not (the codebook, EMA statistics, ...).

    Args:
        model: a Keras model (a `VQVAE`, `VQVAE2`, `HierarchicalVQVAE` or `PixelCNNPrior`).
        path: the file it was loaded from, for the message.

    Raises:
        ValueError: one line naming ``path``, the first weight with a
            non-finite value, how many of its values are non-finite, and the
            total over all weights.
    """
    bad = nonfinite_weights(model, include_optimizer=False)
    if bad:
        raise ValueError(
            f"{path} has non-finite weights (NaN or Inf), refusing to export it: "
            f"{describe_nonfinite(bad)}; export a checkpoint from before the run diverged."
        )


def export_run(
    model_dir,
    out,
    formats=("savedmodel",),
    name=None,
    version=1,
    overwrite=False,
    tflite_modes=None,
    opset=17,
    calibration_images=200,
    sample="auto",
    sample_method="cached",
    image_size=None,
    data_dir=None,
):
    """Exports a ``tfvqvae train`` run folder; returns an `ExportResult`.

    Args:
        model_dir: the run folder (model.keras, config.json, prior-*/).
        out: the export folder; must not exist unless ``overwrite``.
        formats: any of "savedmodel", "tflite", "onnx" (a sequence or a
            comma-separated string). Defaults to ("savedmodel",).
        name: model name in ``OUT/savedmodel/<name>/<version>``. Defaults to
            the run folder's name.
        version: positive int. Defaults to 1.
        overwrite: replace an existing ``out``. Defaults to False.
        tflite_modes: TFLite modes to write (`tfvqvae.export.tflite.TFLITE_MODES`),
            or None for the defaults: float32, dynamic_range, weight_only and int8, less
            int8 for a model with a depth level (a note says so). Defaults
            to None.
        opset: ONNX opset (17 or 18). Defaults to 17.
        calibration_images: training images for int8 / int16x8 calibration, drawn at
            random (seed 0). Defaults to 200.
        sample: "auto" adds the ``sample`` signature when the run has a
            prior for every level (a note says why when it does not); True
            requires it; False leaves it out. Defaults to "auto".
        sample_method: "cached" or "naive". Defaults to "cached".
        image_size: image size of the graphs. Defaults to the run's.
        data_dir: data folder for calibration. Defaults to the run's.

    Raises:
        FileNotFoundError / NotADirectoryError: not a run folder.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        ValueError: an unknown format or mode, int16x8 for a multi-level model,
            int8 / int16x8 for a model with a depth level (residual, grouped),
            a bad name, version or opset;
            a NaN or Inf weight in the model or a prior (nothing is written).
        ImportError: a format's optional dependency is missing
            (``pip install "tfvqvae[export]"``).
    """
    formats = parse_formats(formats)
    defaults = tflite_modes is None
    if defaults:
        tflite_modes = tflite_export.DEFAULT_TFLITE_MODES
    modes = tflite_export.check_modes(tflite_modes) if "tflite" in formats else ()
    if "weight_only" in modes:  # fail before the slow work, not after it
        require("ai_edge_quantizer.quantizer", "TFLite weight_only export")
    if "onnx" in formats:
        onnx_export.check_opset(opset)
        require("tf2onnx", "ONNX export")  # fail before the slow work, not after it
        require("onnx", "ONNX export")
    if sample not in ("auto", True, False):
        raise ValueError(f"`sample` must be 'auto', True or False. Received: sample={sample!r}")
    if sample_method not in signatures.SAMPLE_METHODS:
        raise ValueError(
            "`sample_method` must be 'cached' or 'naive'. "
            f"Received: sample_method={sample_method!r}"
        )
    out = Path(out)
    recover_stale(out)  # what an export to ``out`` killed earlier left behind
    refuse_existing(out, overwrite, MANIFEST)  # before any slow work
    run = load_run(model_dir, image_size=image_size, data_dir=data_dir)
    notes, kept = [], []
    for mode in modes:
        try:
            tflite_export.check_mode_for_levels(mode, run.model.levels)
            signatures.check_tflite_mode(run.model, mode)
        except ValueError as error:
            if not defaults:  # asked for by name: refused
                raise
            notes.append(f"TFLite {mode} left out of the default modes: {error}")
        else:
            kept.append(mode)
    modes = tuple(kept)
    check_finite_weights(run.model, model_file(run.path))
    for level, prior in run.priors.items():
        check_finite_weights(prior, model_file(prior_dir(run.path, level)))
    resolved = out.resolve()
    if resolved == run.path.resolve() or resolved in run.path.resolve().parents:
        raise ValueError(f"--out must not be the run folder or hold it. Received: out={out}")
    name = run.name if name is None else name
    relative_sm = serving_dir(".", name, version)  # validates name and version

    priors = None
    if sample is not False:
        if run.has_all_priors:
            priors = run.priors
        elif sample is True:
            raise FileNotFoundError(
                f"The sample signature needs a prior for every level; {run.path} has none for "
                f"{run.missing_priors} (run `tfvqvae train-prior --run {run.path} --level "
                f"{run.missing_priors[0]}`)."
            )
        elif run.priors:
            notes.append(
                f"no `sample` signature: no prior for level(s) {run.missing_priors} "
                f"(priors found: {list(run.priors)})"
            )
    representative = None
    if any(mode in tflite_export.CALIBRATED_MODES for mode in modes):
        representative = run.images("train", calibration_images, seed=0)

    with staged_dir(out, overwrite=overwrite, marker=MANIFEST, label="export") as temp:
        saved_model = temp / relative_sm
        if "savedmodel" not in formats:
            saved_model = temp / "_source-savedmodel"
        export_saved_model(run.model, saved_model, run.image_shape, priors, sample_method)
        artifacts = {}
        if "savedmodel" in formats:
            artifacts["savedmodel"] = relative_sm
        sources = {None: saved_model}  # {search: the SavedModel quantised modes convert from}
        for mode in modes:
            search = tflite_export.SEARCH_FOR_MODE[mode]
            if search not in sources:
                sources[search] = temp / f"_source-{search}"
                with quantization_search(run.model, search, representative):
                    export_saved_model(run.model, sources[search], run.image_shape,
                                       tflite_only=True)
            path = Path("tflite") / f"{mode}.tflite"
            if mode == "weight_only" and "tflite-float32" in artifacts:  # convert once
                float_model = (temp / artifacts["tflite-float32"]).read_bytes()
                atomic.write_bytes(temp / path, tflite_export.weight_only(float_model))
            else:
                tflite_export.export_tflite(sources[search], temp / path, mode, representative)
            artifacts[f"tflite-{mode}"] = path
        for search, source in sources.items():
            if search is not None:
                shutil.rmtree(source)
        if "onnx" in formats:
            onnx_export.export_onnx(saved_model, temp / "onnx", opset=opset)
            artifacts["onnx"] = Path("onnx")
        if "savedmodel" not in formats:
            shutil.rmtree(saved_model)
        sizes = {key: size_on_disk(temp / path) for key, path in artifacts.items()}
        table = _signature_table(run, priors is not None)
        manifest = {
            "name": name,
            "version": version,
            "run": str(run.path.resolve()),
            "model": type(run.model).__name__,
            "image_shape": list(run.image_shape),
            "levels": list(run.model.levels),
            "num_embeddings": run.model.level_num_embeddings,
            "formats": list(formats),
            "artifacts": {key: str(path) for key, path in artifacts.items()},
            "sizes": sizes,
            "signatures": list(table),
            "signature_io": table,
            "tflite_signatures": list(tflite_export.TFLITE_SIGNATURES) if modes else [],
            "tflite_mode_signatures": {
                mode: list(tflite_export.MODE_SIGNATURES[mode]) for mode in modes},
            "onnx_opset": opset if "onnx" in formats else None,
            "sample_method": sample_method if priors is not None else None,
            "out_of_range_codes": (
                "decode fails: InvalidArgumentError (SavedModel), RuntimeError 'gather index "
                "out of bounds' (TFLite), onnxruntime Gather error (ONNX)"
            ),
            "notes": notes,
            "versions": _versions(),
        }
        atomic.write_json(temp / MANIFEST, manifest)
    return ExportResult(
        out=out,
        name=name,
        version=version,
        formats=formats,
        levels=tuple(run.model.levels),
        image_shape=tuple(run.image_shape),
        artifacts={key: out / path for key, path in artifacts.items()},
        sizes=sizes,
        signatures=tuple(table),
        notes=notes,
    )


def open_runners(result, num_threads=None):
    """{artifact: runner} for every artifact of an `ExportResult` (see `verify`)."""
    runners = {}
    for artifact, path in result.artifacts.items():
        if artifact == "savedmodel":
            runners[artifact] = SavedModelRunner(path, result.levels)
        elif artifact.startswith("tflite-"):
            runners[artifact] = tflite_export.TFLiteRunner(path, result.levels, num_threads)
        elif artifact == "onnx":
            runners[artifact] = onnx_export.ONNXRunner(path, result.levels, num_threads)
    return runners


def verify_export(result, model_dir, num_images=1000, batch_size=64, data_dir=None):
    """Runs every artifact of ``result`` on the run's test images; returns [`VerifyRow`].

    Args:
        result: an `ExportResult` (or an export folder with export.json).
        model_dir: the run folder the export came from (the Keras reference
            and the test images).
        num_images: the first this many test images. Defaults to 1000.
        batch_size: images per call. Defaults to 64.
        data_dir: data folder. Defaults to the run's.
    """
    if not isinstance(result, ExportResult):
        result = ExportResult.load(result)
    run = load_run(model_dir, image_size=result.image_shape[:2], data_dir=data_dir)
    images = run.images("test", num_images)
    return verify_runners(run.model, open_runners(result), images, batch_size)

