"""The nearest-code graph keeps exact codes far from the origin once exported.

The single-matmul search of ``VectorQuantizer.indices()`` (`nearest_code`
without blocks), with the codebook as a constant, is saved as a SavedModel
and converted from it to TFLite (built-in ops only, float32) and to ONNX
(tf2onnx, opset 17), as `tfvqvae.export` does for the models' ``encode``
signature. Each format must
return the float64 NumPy argmin on the rows where it is unambiguous, for
codes offset by 10³ and for near-duplicate codes (see
``test_nearest_code_far``). The model-level exports are checked against Keras
in ``tests/export``.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from tests.layers.test_nearest_code_far import far_data
from tests.layers.test_nearest_code_far import unambiguous

km = importlib.import_module("tfvqvae.layers.kmeans")

D = 8


def offset_and_duplicates():
    """float32 (z, codebook (64, D)): codes at offset 10³, pairs 1e-3 apart."""
    z, codebook = far_data(1000.0, 0.01, seed=4)
    rng = np.random.default_rng(4)
    codebook[1::2] = codebook[::2] + np.float32(1e-3) * rng.normal(size=(32, D)).astype(
        np.float32
    )
    near = codebook[rng.integers(0, 64, 200)] + np.float32(1e-3) * rng.normal(
        size=(200, D)
    ).astype(np.float32)
    return np.concatenate([z, near]).astype(np.float32), codebook


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    z, codebook = offset_and_duplicates()
    module = tf.Module()
    module.encode = tf.function(
        lambda z: {"codes": km.nearest_code(z, tf.constant(codebook))},
        input_signature=[tf.TensorSpec([None, D], tf.float32, name="z")],
    )
    path = tmp_path_factory.mktemp("quantizer") / "saved_model"
    tf.saved_model.save(module, str(path), signatures={"encode": module.encode})
    return path, z, codebook


def check(codes, z, codebook):
    expected, clear = unambiguous(z, codebook)
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1)[clear], expected[clear])


def test_savedmodel_codes_are_exact(saved_model):
    path, z, codebook = saved_model
    encode = tf.saved_model.load(str(path)).signatures["encode"]
    check(encode(z=tf.constant(z))["codes"].numpy(), z, codebook)


def test_tflite_float_codes_are_exact_with_builtin_ops(saved_model):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    path, z, codebook = saved_model
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=["encode"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = interpreter_module.Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner("encode")
    check(runner(z=z)["codes"], z, codebook)


def test_onnx_codes_are_exact(saved_model):
    tf2onnx = pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from tf2onnx import tf_loader

    path, z, codebook = saved_model
    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(path), None, None, "serve", ["encode"], None, False,
        return_tensors_to_rename=True,
    )
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=inputs, output_names=outputs, opset=17,
        tensors_to_rename=renames,
    )
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (codes,) = session.run(None, {session.get_inputs()[0].name: z})
    check(codes, z, codebook)
