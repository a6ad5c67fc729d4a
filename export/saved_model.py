"""SavedModel export for TF Serving: the source the other formats convert from.

Layout (what TF Serving's ``--model_base_path`` expects)::

    OUT/savedmodel/<name>/<version>/saved_model.pb
                                    variables/

Signatures (`tfvqvae.export.signatures` lists inputs and outputs): ``encode``,
``decode``, ``reconstruct``, ``serving_default`` (= ``reconstruct``), and
``sample`` when the run has a prior for every level. The graphs use
TensorFlow ops only: loading the export needs neither tfvqvae nor Keras
(``tf.saved_model.load``, ``saved_model_cli run``, TF Serving).

Serving it (no TF Serving binary ships with this package)::

    docker run -p 8501:8501 \\
        -v "$PWD/OUT/savedmodel/NAME:/models/NAME" -e MODEL_NAME=NAME tensorflow/serving
    curl -d '{"signature_name": "encode", "instances": [...]}' \\
        http://localhost:8501/v1/models/NAME:predict
    curl -d '{"signature_name": "sample", "inputs": {"seed": 3, "temperature": 1.0,
              "labels": [0, 1, 2]}}' http://localhost:8501/v1/models/NAME:predict

(``sample`` has scalar inputs, so it takes the columnar "inputs" form.)

and without a server::

    saved_model_cli show --dir OUT/savedmodel/NAME/1 --all
    saved_model_cli run --dir OUT/savedmodel/NAME/1 --tag_set serve \\
        --signature_def encode --inputs images=images.npy --outdir codes/
"""

import re
from pathlib import Path

import keras

from tfvqvae.export import signatures
from tfvqvae.export._files import staged_dir
from tfvqvae.validation import positive_int

SERVING_SIGNATURES = ("encode", "decode", "reconstruct", "serving_default")
SAMPLE_SIGNATURE = "sample"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def serving_dir(out, name, version=1):
    """``OUT/savedmodel/<name>/<version>``, the folder TF Serving loads a version from.

    Raises:
        ValueError: ``name`` is not a plain folder name, or ``version`` is
            not a positive integer (TF Serving reads versions as integers).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            "The model name must be a plain folder name (letters, digits, '.', '_', '-'). "
            f"Received: name={name!r}"
        )
    positive_int("version", version)
    return Path(out) / "savedmodel" / name / str(version)


def build_archive(model, image_shape, priors=None, sample_method="cached", tflite_only=False):
    """The `keras.export.ExportArchive` with every endpoint of the export.

    Args:
        model: a `VQVAE`, `VQVAE2` or `HierarchicalVQVAE` (any number of levels).
        image_shape: (H, W, C) of the images the graphs take.
        priors: {level: `PixelCNNPrior`} for every level, to add ``sample``;
            None or {} for none.
        sample_method: "cached" or "naive", the sampler inside ``sample``.
        tflite_only: a source for quantised TFLite only (its decode guard:
            `signatures.make_decode`).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    image_shape = tuple(int(size) for size in image_shape)
    makers = {
        "encode": signatures.make_encode,
        "decode": signatures.make_decode,
        "reconstruct": signatures.make_reconstruct,
    }
    for name, make in makers.items():
        if name == "decode":
            fn, specs = make(model, image_shape, tflite_only)
        else:
            fn, specs = make(model, image_shape)
        archive.add_endpoint(name, fn, input_signature=specs)
    fn, specs = signatures.make_reconstruct(model, image_shape)
    archive.add_endpoint("serving_default", fn, input_signature=specs)
    if priors:
        fn, specs = signatures.make_sample(model, priors, sample_method)
        for prior in priors.values():
            archive.track(prior)
        archive.add_endpoint(SAMPLE_SIGNATURE, fn, input_signature=specs)
    return archive


def export_saved_model(
    model, export_dir, image_shape, priors=None, sample_method="cached", overwrite=False,
    tflite_only=False,
):
    """Writes the SavedModel to ``export_dir``, whole or not at all.

    Args:
        model: a `VQVAE`, `VQVAE2` or `HierarchicalVQVAE` (any number of levels).
        export_dir: the folder to create (for TF Serving,
            `serving_dir(out, name, version)`).
        image_shape: (H, W, C) of the images the graphs take.
        priors: {level: `PixelCNNPrior`} for every level to add the
            ``sample`` signature. Defaults to None (no sampler).
        sample_method: "cached" or "naive". Defaults to "cached".
        overwrite: replace an existing ``export_dir``. Defaults to False
            (FileExistsError).
        tflite_only: a source converted to TFLite alone (`signatures.make_decode`).
            Defaults to False.

    Returns:
        ``export_dir`` as a Path.
    """
    export_dir = Path(export_dir)
    archive = build_archive(model, image_shape, priors, sample_method, tflite_only)
    with staged_dir(export_dir, overwrite=overwrite) as temp:
        archive.write_out(str(temp), verbose=False)
    return export_dir
