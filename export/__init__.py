"""Exporters of tfvqvae (installed as ``tfvqvae.export``): SavedModel, TFLite, ONNX.

The SavedModel (TF Serving layout, signatures ``encode``, ``decode``,
``reconstruct``, ``serving_default`` and, with priors, ``sample``) is the
source; TFLite (float32, dynamic range, weight only, int8, int16x8) and ONNX (tf2onnx) are
converted from it (the quantised TFLite modes from a second SavedModel whose
search survives quantisation: `tfvqvae.export.quantized_search`). One module per format, a library function each, and
``tfvqvae export`` as a thin command over `export_run`:

    from tfvqvae.export import export_run, verify_export
    result = export_run("runs/mnist", "exports/mnist", formats="savedmodel,tflite,onnx")
    rows = verify_export(result, "runs/mnist")

TFLite and ONNX need the ``export`` extra (``pip install "tfvqvae[export]"``:
tf2onnx, onnx, onnxruntime, ai-edge-litert, ai-edge-quantizer), imported only when used.
"""

from tfvqvae.export.exporter import FORMATS
from tfvqvae.export.exporter import ExportResult
from tfvqvae.export.exporter import export_run
from tfvqvae.export.exporter import open_runners
from tfvqvae.export.exporter import parse_formats
from tfvqvae.export.exporter import verify_export
from tfvqvae.export.onnx import ONNXRunner
from tfvqvae.export.onnx import export_onnx
from tfvqvae.export.run_folder import RunFolder
from tfvqvae.export.run_folder import load_run
from tfvqvae.export.saved_model import build_archive
from tfvqvae.export.saved_model import export_saved_model
from tfvqvae.export.saved_model import serving_dir
from tfvqvae.export.tflite import TFLITE_MODES
from tfvqvae.export.tflite import TFLiteRunner
from tfvqvae.export.tflite import convert_tflite
from tfvqvae.export.tflite import export_tflite
from tfvqvae.export.verify import KerasRunner
from tfvqvae.export.verify import SavedModelRunner
from tfvqvae.export.verify import VerifyRow
from tfvqvae.export.verify import check_agreement
from tfvqvae.export.verify import format_table

__all__ = [
    "FORMATS",
    "TFLITE_MODES",
    "ExportResult",
    "KerasRunner",
    "ONNXRunner",
    "RunFolder",
    "SavedModelRunner",
    "TFLiteRunner",
    "VerifyRow",
    "build_archive",
    "check_agreement",
    "convert_tflite",
    "export_onnx",
    "export_run",
    "export_saved_model",
    "export_tflite",
    "format_table",
    "load_run",
    "open_runners",
    "parse_formats",
    "serving_dir",
    "verify_export",
]
