"""ONNX export with tf2onnx, converted from the SavedModel, and a runner (onnxruntime).

One ``.onnx`` file per signature (an ONNX model has one graph):
``encode.onnx``, ``decode.onnx``, ``reconstruct.onnx``, with the
SavedModel's input and output names and a dynamic batch axis. tf2onnx 1.17
accepts opsets 17 and 18 only.

tf2onnx drops the graphs' assertions; a code outside [0, K) given to
``decode`` makes onnxruntime's Gather fail ("indices element out of data
bounds", an onnxruntime error), never silently: the graph maps every
out-of-range code, negative ones included, to K first
(`tfvqvae.export.signatures`).
"""

import os
from pathlib import Path

import numpy as np

from tfvqvae import atomic
from tfvqvae.export._optional import require

ONNX_OPSETS = (17, 18)
ONNX_SIGNATURES = ("encode", "decode", "reconstruct")


def check_opset(opset):
    if isinstance(opset, bool) or opset not in ONNX_OPSETS:
        raise ValueError(
            f"tf2onnx 1.17 converts to ONNX opset 17 or 18. Received: opset={opset!r}"
        )
    return int(opset)


def convert_onnx(saved_model_dir, signature, opset=17):
    """One SavedModel signature as an ONNX ModelProto (tf2onnx, as its CLI does)."""
    opset = check_opset(opset)
    tf2onnx = require("tf2onnx", "ONNX export")
    from tf2onnx import tf_loader  # noqa: E402  (tf2onnx is there: checked above)

    graph_def, inputs, outputs, tensors_to_rename = tf_loader.from_saved_model(
        str(saved_model_dir), None, None, "serve", [signature], None, False,
        return_tensors_to_rename=True,
    )
    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        name=signature,
        input_names=inputs,
        output_names=outputs,
        opset=opset,
        tensors_to_rename=tensors_to_rename,
    )
    return model_proto


def export_onnx(saved_model_dir, out_dir, opset=17, signatures=ONNX_SIGNATURES):
    """Writes ``out_dir/<signature>.onnx`` for each signature; returns {signature: Path}.

    Args:
        saved_model_dir: the SavedModel (`tfvqvae.export.export_saved_model`).
        out_dir: folder for the files (created).
        opset: ONNX opset, 17 or 18. Defaults to 17.
        signatures: which signatures. Defaults to encode, decode, reconstruct.
    """
    check_opset(opset)
    onnx = require("onnx", "ONNX export")
    out_dir = Path(out_dir)
    paths = {}
    for signature in signatures:
        model_proto = convert_onnx(saved_model_dir, signature, opset)
        onnx.checker.check_model(model_proto)
        paths[signature] = out_dir / f"{signature}.onnx"
        atomic.write_bytes(paths[signature], model_proto.SerializeToString())
    return paths


class ONNXRunner:
    """Runs exported .onnx files with onnxruntime (CPU); NumPy in, NumPy out.

    Args:
        folder: the folder with ``encode.onnx``, ``decode.onnx``,
            ``reconstruct.onnx``.
        levels: the model's levels (``model.levels``), top first.
        num_threads: intra-op threads. Defaults to ``os.cpu_count()``.
    """

    def __init__(self, folder, levels, num_threads=None):
        ort = require("onnxruntime", "Running an ONNX export")
        self.folder = Path(folder)
        self.levels = tuple(levels)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count()
        self._sessions = {
            key: ort.InferenceSession(
                str(self.folder / f"{key}.onnx"), options, providers=["CPUExecutionProvider"]
            )
            for key in ONNX_SIGNATURES
        }

    def _run(self, key, inputs):
        session = self._sessions[key]
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))

    def encode(self, images):
        out = self._run("encode", {"images": np.asarray(images, np.float32)})
        return {level: out[f"{level}_codes"] for level in self.levels}

    def decode(self, codes):
        inputs = {f"{level}_codes": np.asarray(codes[level], np.int32) for level in self.levels}
        return self._run("decode", inputs)["images"]

    def reconstruct(self, images):
        return self._run("reconstruct", {"images": np.asarray(images, np.float32)})[
            "reconstructions"
        ]
