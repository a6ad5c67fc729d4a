"""Export of a model whose codes have a depth axis: a tiny untrained RVQ VQVAE.

Signatures take and give (B, h, w, Q) codes; SavedModel, TFLite float32 and
ONNX must give 100 % of Keras' codes (and Keras' codes are the NumPy
residual search on the encoder's output); the out-of-range guard holds for
every one of the B·h·w·Q codes; quantised modes whose search is rebuilt
(int8, int16x8) are refused by `signatures.check_tflite_mode`. The run has a
prior over its (4, 4, Q) maps, so the SavedModel's ``sample`` signature must
draw what the library's sampler draws in Keras.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.export import export_run
from tfvqvae.export import open_runners
from tfvqvae.export import signatures
from tfvqvae.export import verify_export
from tfvqvae.export.verify import KerasRunner
from tfvqvae.training.sample import load_priors
from tfvqvae.training.sample import sample_codes

from tests.models.prior_helpers import randomise

IMAGE_SIZE = 16
K, D, Q = 8, 4, 3
FLOAT_ARTIFACTS = ("savedmodel", "tflite-float32", "onnx")


def _model():
    keras.utils.set_random_seed(0)
    model = tfvqvae.VQVAE(
        image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1,
        quantizer=tfvqvae.ResidualVectorQuantizer(Q, K, D, kmeans_init=False,
                                                  restart_unused_after=None))
    # Codebooks spread over the encoder's outputs (an untrained model's default
    # codebook is far from them), so that every stage chooses among several codes.
    z = model.encoder(np.random.default_rng(1).random((8, IMAGE_SIZE, IMAGE_SIZE, 1),
                                                      dtype=np.float32)).numpy()
    spread = np.random.default_rng(2).standard_normal((Q, K, D)) * z.std()
    for i, stage in enumerate(model.quantizer.quantizers):
        stage.codebook.assign((spread[i] + (z.mean() if i == 0 else 0.0)).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    run = root / "run"
    run.mkdir()
    model = _model()
    model.save(run / "model.keras")
    # A prior over the (4, 4, Q) code maps, random weights: the sample signature.
    (run / "prior-top").mkdir()
    prior = randomise(tfvqvae.PixelCNNPrior(K, (4, 4, Q), hidden_channels=8, num_blocks=2,
                                            kernel_size=3), seed=3)
    prior.save(run / "prior-top" / "model.keras")
    # The offline digits (scikit-learn's), resized to 16x16: --verify's test images.
    (run / "config.json").write_text(json.dumps({"dataset": "digits",
                                                 "image_size": IMAGE_SIZE}))
    result = export_run(run, root / "export", formats="savedmodel,tflite,onnx",
                        tflite_modes="float32,dynamic_range")
    return run, result


def residual_codes(z, quantizer):
    residual, codes = np.asarray(z, np.float64), []
    for stage in quantizer.quantizers:
        book = np.asarray(stage.codebook, np.float64)
        k = ((residual[..., None, :] - book) ** 2).sum(-1).argmin(-1)
        codes.append(k)
        residual = residual - book[k]
    return np.stack(codes, -1)


def test_float_formats_give_every_code_of_keras(depth_run):
    run, result = depth_run
    rows = {row.artifact: row for row in verify_export(result, run, num_images=64)}
    assert set(rows) == {"keras", *FLOAT_ARTIFACTS, "tflite-dynamic_range"}
    for artifact in FLOAT_ARTIFACTS:
        assert rows[artifact].agreement == 100.0, artifact
        assert rows[artifact].max_abs_diff < 1e-5, artifact
    # Measured 100 % on this model; the quantised weights may move a code or two.
    assert rows["tflite-dynamic_range"].agreement >= 95.0

    from tfvqvae.export.run_folder import load_run

    loaded = load_run(run)
    images = loaded.images("test", 16)
    keras_codes = KerasRunner(loaded.model).encode(images)["top"]
    assert keras_codes.shape == (16, 4, 4, Q) and keras_codes.dtype == np.int32
    z = loaded.model.encoder(images).numpy()
    np.testing.assert_array_equal(keras_codes, residual_codes(z, loaded.model.quantizer))
    for stage in range(Q):  # every stage really chooses
        assert len(np.unique(keras_codes[..., stage])) > 2
    reference = KerasRunner(loaded.model).decode({"top": keras_codes})
    for artifact, runner in open_runners(result).items():
        codes = runner.encode(images)["top"]
        assert codes.dtype == np.int32
        np.testing.assert_array_equal(codes, keras_codes, err_msg=artifact)
        if artifact in FLOAT_ARTIFACTS:
            np.testing.assert_allclose(runner.decode({"top": keras_codes}), reference,
                                       rtol=0, atol=1e-5, err_msg=artifact)
        np.testing.assert_array_equal(runner.encode(images[:1])["top"], keras_codes[:1])


def test_signatures_and_manifest_carry_the_depth_axis(depth_run):
    run, result = depth_run
    model = keras.saving.load_model(run / "model.keras")
    (spec,) = signatures.code_specs(model, (IMAGE_SIZE, IMAGE_SIZE, 1))
    assert spec.shape.as_list() == [None, 4, 4, Q] and spec.name == "top_codes"
    manifest = json.loads((result.out / "export.json").read_text())
    assert manifest["signature_io"]["encode"]["outputs"] == {"top_codes": ["int32",
                                                                          [None, 4, 4, Q]]}
    assert manifest["signature_io"]["decode"]["inputs"] == {"top_codes": ["int32",
                                                                         [None, 4, 4, Q]]}
    served = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"top_codes must have shape \(batch, 4, 4, 3\)"):
        served["decode"](top_codes=tf.zeros([2, 4, 4, 2], tf.int32))


@pytest.mark.parametrize("bad", [K, -1])
def test_an_out_of_range_code_in_one_stage_fails_in_every_format(depth_run, bad):
    run, result = depth_run
    model = keras.saving.load_model(run / "model.keras")
    codes = KerasRunner(model).encode(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
    codes["top"][1, 2, 3, 1] = bad  # one code of the middle stage; the others are valid
    errors = {
        "savedmodel": (tf.errors.InvalidArgumentError, rf"top_codes must lie in \[0, {K}\)"),
        "tflite-float32": (RuntimeError, "gather index out of bounds"),
        "tflite-dynamic_range": (RuntimeError, "gather index out of bounds"),
        "onnx": (Exception, "out of data bounds"),
    }
    runners = open_runners(result)
    assert set(errors) == set(runners)
    for artifact, (kind, message) in errors.items():
        with pytest.raises(kind, match=message):
            runners[artifact].decode(codes)


def test_quantised_modes_with_a_rebuilt_search_are_refused_for_depth_codes():
    model = _model()
    for mode in ("int8", "int16x8"):
        with pytest.raises(ValueError, match=rf"TFLite {mode} export does not support codes "
                                             r"with a depth axis yet: level 'top' has 3 codes"):
            signatures.check_tflite_mode(model, mode)
    for mode in ("float32", "dynamic_range"):
        signatures.check_tflite_mode(model, mode)
    scalar = tfvqvae.VQVAE(image_channels=1, hidden_channels=8, residual_channels=4,
                           quantizer=tfvqvae.VectorQuantizerEMA(K, D))
    signatures.check_tflite_mode(scalar, "int8")


def test_sample_signature_draws_the_keras_depth_codes(depth_run):
    run, result = depth_run
    model = keras.saving.load_model(run / "model.keras")
    priors = load_priors(run, model)
    served = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["sample"]
    out = served(seed=tf.constant(4, tf.int64), temperature=tf.constant(0.8),
                 num_samples=tf.constant(3))
    expected = sample_codes(priors, 3, temperature=0.8, seed=4, method="naive")
    assert out["top_codes"].shape == (3, 4, 4, Q) and out["top_codes"].dtype == tf.int32
    np.testing.assert_array_equal(out["top_codes"], expected["top"])
    assert len(np.unique(out["top_codes"])) >= 3
    np.testing.assert_allclose(out["images"], model.decode_levels(expected).numpy(),
                               rtol=0, atol=1e-5)
