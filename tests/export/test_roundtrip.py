"""Every format round-trips real MNIST test images like Keras; signatures and their checks."""

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.export import KerasRunner
from tfvqvae.export import open_runners
from tfvqvae.export import verify_export
from tfvqvae.export.tflite import tflite_operators

FLOAT_ARTIFACTS = ("savedmodel", "tflite-float32", "onnx")
# % of code indices equal to Keras on the 256 test images, measured on these runs
# (deterministic): dynamic range 99.37 (vqvae) and 99.09 (vqvae2: top 99.07, bottom
# 99.09); int8 with the "window" search 84.62 (vqvae) and 93.35 (vqvae2), where the
# exact search gave 80.25 and 76.99; weight only 99.50 and 98.96
# (TF's dynamic range leaves kernels under 1024 weights in float32; weight only rounds
# them all: a snapped run keeps 100 %, tests/export/test_weight_only.py). Asserted a little below
# what was measured. int8 stays low because the int8 encoder moves z across decision
# boundaries (tfvqvae.export.quantized_search).
QUANTIZED_BOUNDS = {
    "vqvae": {"tflite-dynamic_range": 98.5, "tflite-weight_only": 99.3, "tflite-int8": 83.0},
    "vqvae2": {"tflite-dynamic_range": 98.0, "tflite-weight_only": 98.7, "tflite-int8": 92.0},
}


def _keras_reference(run, images):
    keras_runner = KerasRunner(run.model)
    codes = keras_runner.encode(images)
    return codes, keras_runner.decode(codes)


@pytest.mark.parametrize("kind", ["vqvae", "vqvae2"])
@pytest.mark.parametrize("artifact", FLOAT_ARTIFACTS)
def test_float_formats_match_keras_exactly(runs, kind, artifact):
    run, result, images = runs[kind]
    codes, reconstructions = _keras_reference(run, images)
    runner = open_runners(result)[artifact]

    exported_codes = runner.encode(images)
    assert set(exported_codes) == set(run.model.levels)
    for level, level_codes in codes.items():
        assert exported_codes[level].dtype == np.int32
        np.testing.assert_array_equal(exported_codes[level], level_codes)
    assert len(np.unique(codes["top"])) > 4  # the model really uses its codebook
    np.testing.assert_allclose(runner.decode(codes), reconstructions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(runner.reconstruct(images), reconstructions, rtol=0, atol=1e-5)
    # The Keras forward pass (straight-through latents) agrees too.
    np.testing.assert_allclose(runner.reconstruct(images), run.model.predict(images, verbose=0),
                               rtol=0, atol=1e-5)
    # Dynamic batch: one image and an odd batch.
    for batch in (images[:1], images[:5]):
        np.testing.assert_array_equal(runner.encode(batch)["top"], codes["top"][: len(batch)])


@pytest.mark.parametrize("kind", ["vqvae", "vqvae2"])
def test_quantized_tflite_reaches_the_stated_agreement(runs, kind):
    run, result, _ = runs[kind]
    rows = {row.artifact: row for row in verify_export(result, run.path, num_images=256)}
    assert set(rows) == {"keras", *FLOAT_ARTIFACTS, *QUANTIZED_BOUNDS[kind]}
    for artifact in FLOAT_ARTIFACTS:
        assert not rows[artifact].quantized
        assert rows[artifact].agreement == 100.0 and rows[artifact].max_abs_diff < 1e-5
    for artifact, bound in QUANTIZED_BOUNDS[kind].items():
        row = rows[artifact]
        assert row.quantized
        assert bound <= row.agreement < 100.0, (artifact, row.agreement, [
            (r.artifact, r.agreement, r.max_abs_diff, r.mean_abs_diff, r.psnr_db)
            for r in rows.values()])
        # Measured: max 0.015-0.14, mean 4e-4-0.012; PSNR within 0.01 dB of Keras.
        assert row.max_abs_diff < 0.3 and row.mean_abs_diff < 0.03
        assert abs(row.psnr_db - rows["keras"].psnr_db) < 0.1
    assert rows["keras"].psnr_db > 9.0  # the tiny model reconstructs something (~10-11 dB)


def test_tflite_files_hold_builtin_ops_only_and_int8_is_quantized(runs):
    _, result, _ = runs["vqvae2"]
    for mode in ("float32", "dynamic_range", "int8"):
        operators = tflite_operators(result.artifacts[f"tflite-{mode}"])
        assert not [op for op in operators if op.startswith("CUSTOM")], operators
        # The exact search's ARG_MIN (float32, dynamic range); int8's "window" search
        # takes the ARG_MAX of its clamped scores (tfvqvae.export.quantized_search).
        assert {"CONV_2D", "ARG_MAX" if mode == "int8" else "ARG_MIN", "GATHER"} <= operators
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(result.artifacts["tflite-int8"]))
    dtypes = [t["dtype"] for t in interpreter.get_tensor_details()]
    assert dtypes.count(np.int8) > dtypes.count(np.float32)
    runners = open_runners(result)
    assert result.sizes["tflite-int8"] < result.sizes["tflite-float32"]
    assert result.sizes["tflite-dynamic_range"] < result.sizes["tflite-float32"]
    # Interface unchanged: float32 images in, int32 codes out.
    images = np.zeros((2, 32, 32, 1), np.float32)
    assert runners["tflite-int8"].encode(images)["bottom"].dtype == np.int32


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_int16x8_keeps_more_codes_than_int8_and_has_no_reconstruct_signature(runs, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from tfvqvae.export import export_run

    run, _, _ = runs["vqvae"]
    result = export_run(run.path, tmp_path / "export", formats="tflite",
                        tflite_modes="int16x8")
    path = result.artifacts["tflite-int16x8"]
    interpreter = Interpreter(model_path=str(path))
    assert set(interpreter.get_signature_list()) == {"encode", "decode"}  # MODE_SIGNATURES
    dtypes = [t["dtype"] for t in interpreter.get_tensor_details()]
    assert dtypes.count(np.int16) >= 5 and np.int8 in dtypes  # int16 activations, int8 weights
    assert not [op for op in tflite_operators(path) if op.startswith("CUSTOM")]
    row = {r.artifact: r for r in verify_export(result, run.path, num_images=256)}
    # Measured on this run: 99.49 (dynamic range 99.37, int8 84.62: QUANTIZED_BOUNDS); its
    # kernels are not snapped (tests/export/test_int16x8_search.py: 99.92 % when they are).
    assert row["tflite-int16x8"].quantized
    assert 99.0 <= row["tflite-int16x8"].agreement < 100.0
    # reconstruct = decode(encode(x)) in the runner; PSNR as Keras'.
    assert abs(row["tflite-int16x8"].psnr_db - row["keras"].psnr_db) < 0.1


def test_int16x8_refuses_a_multi_level_model(runs, tmp_path):
    from tfvqvae.export import export_run

    run, _, _ = runs["vqvae2"]
    with pytest.raises(ValueError, match=r"one-level model.*levels \['top', 'bottom'\]"):
        export_run(run.path, tmp_path / "export", formats="tflite", tflite_modes="int16x8")
    assert not (tmp_path / "export").exists()


def test_onnx_files_use_the_requested_opset_and_names(runs):
    import onnx

    _, result, _ = runs["vqvae2"]
    model = onnx.load(str(result.artifacts["onnx"] / "decode.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert sorted(i.name for i in model.graph.input) == ["bottom_codes", "top_codes"]
    assert [o.name for o in model.graph.output] == ["images"]


def test_savedmodel_signatures_are_named_typed_and_batch_dynamic(runs):
    run, result, _ = runs["vqvae2"]
    assert result.artifacts["savedmodel"] == result.out / "savedmodel" / "digits" / "3"
    loaded = tf.saved_model.load(str(result.artifacts["savedmodel"]))
    assert set(loaded.signatures) == {"encode", "decode", "reconstruct", "serving_default",
                                      "sample"}

    def io(name):
        fn = loaded.signatures[name]
        inputs = {k: (v.dtype, tuple(v.shape)) for k, v in fn.structured_input_signature[1].items()}
        outputs = {k: (v.dtype, tuple(v.shape)) for k, v in fn.structured_outputs.items()}
        return inputs, outputs

    image = (tf.float32, (None, 32, 32, 1))
    codes = {"top_codes": (tf.int32, (None, 4, 4)), "bottom_codes": (tf.int32, (None, 8, 8))}
    assert io("encode") == ({"images": image}, codes)
    assert io("decode") == (codes, {"images": image})
    assert io("reconstruct") == ({"images": image}, {"reconstructions": image})
    assert io("serving_default") == io("reconstruct")
    assert io("sample") == (
        {"seed": (tf.int64, ()), "temperature": (tf.float32, ()), "labels": (tf.int32, (None,))},
        {**codes, "images": image},
    )


def test_wrong_shape_or_dtype_at_the_served_signature_raises(runs):
    _, result, _ = runs["vqvae"]
    signatures = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures
    invalid = tf.errors.InvalidArgumentError
    with pytest.raises(invalid, match=r"images must have shape \(batch, 28, 28, 1\)"):
        signatures["encode"](images=tf.zeros([2, 32, 32, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape"):
        signatures["reconstruct"](images=tf.zeros([2, 28, 28, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        signatures["encode"](images=tf.zeros([2, 28, 28, 1], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a int32 tensor"):
        signatures["decode"](top_codes=tf.zeros([2, 7, 7], tf.int64))
    with pytest.raises(invalid, match=r"top_codes must have shape \(batch, 7, 7\)"):
        signatures["decode"](top_codes=tf.zeros([2, 8, 8], tf.int32))
    with pytest.raises(TypeError, match="images"):
        signatures["encode"](pixels=tf.zeros([2, 28, 28, 1]))


def test_two_level_decode_refuses_mismatched_batches(runs):
    _, result, _ = runs["vqvae2"]
    decode = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["decode"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        decode(top_codes=tf.zeros([2, 4, 4], tf.int32), bottom_codes=tf.zeros([3, 8, 8], tf.int32))


@pytest.mark.parametrize("bad", [32, -1])
def test_out_of_range_codes_fail_in_every_format(runs, bad):
    run, result, images = runs["vqvae"]
    codes = KerasRunner(run.model).encode(images[:2])
    codes["top"][1, 3, 4] = bad
    runners = open_runners(result)
    errors = {
        "savedmodel": (tf.errors.InvalidArgumentError, r"top_codes must lie in \[0, 32\)"),
        "tflite-float32": (RuntimeError, "gather index out of bounds"),
        "tflite-dynamic_range": (RuntimeError, "gather index out of bounds"),
        "tflite-weight_only": (RuntimeError, "gather index out of bounds"),
        "tflite-int8": (RuntimeError, "gather index out of bounds"),
        "onnx": (Exception, "out of data bounds"),
    }
    assert set(errors) == set(runners)
    for artifact, (kind, message) in errors.items():
        with pytest.raises(kind, match=message):
            runners[artifact].decode(codes)
