"""Optional dependencies of the exporters, imported only where they are needed.

``tf2onnx``, ``onnx``, ``onnxruntime``, ``ai-edge-litert`` and
``ai-edge-quantizer`` are the
``export`` extra of the package: ``import tfvqvae.export`` and the SavedModel
exporter work without them, and the first call that needs one says what to
install.
"""

import importlib

INSTALL_HINT = 'pip install "tfvqvae[export]"'


def require(module_name, purpose):
    """Imports ``module_name``, or raises an ImportError that says what to install.

    Args:
        module_name: the module to import, e.g. ``"tf2onnx"``.
        purpose: what needs it, for the message (e.g. "ONNX export").
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the optional package `{module_name.split('.')[0]}`, "
            f"which is not installed: {INSTALL_HINT}"
        ) from error
