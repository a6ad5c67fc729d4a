"""Packaging for tfvqvae.

Three source folders. The library lives in ``tfvqvae/``; the command-line
training programs live in ``training/`` and the exporters in ``export/`` (the
top level is fixed by the design). ``package_dir`` maps the two outer folders
*into* the package, so users write ``from tfvqvae.training import train`` and
``from tfvqvae.export import ...`` while the library itself never imports them
(data flows library -> training/export, never back).

One more import name, ``tfvqvae_cli`` (source: ``training/launcher/``), is the
``tfvqvae`` command: it parses arguments without TensorFlow (importing
``tfvqvae`` imports it) and then imports the command's module.
"""

from setuptools import setup

EXPORT_REQUIRES = [
    "tf2onnx==1.17.0",
    "onnx==1.23.2",
    "onnxruntime==1.31.1",
    "ai-edge-litert==2.3.0",
    # TFLite weight_only files (int8 weights, float compute): its recipes.
    "ai-edge-quantizer==0.10.0",
]

setup(
    name="tfvqvae",
    version="0.1.0",
    description="VQ-VAE and VQ-VAE-2 for TensorFlow / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "tfvqvae",
        "tfvqvae.layers",
        "tfvqvae.models",
        "tfvqvae.data",
        "tfvqvae.evaluation",
        "tfvqvae.codec",
        "tfvqvae.training",
        "tfvqvae.export",
        "tfvqvae_cli",
    ],
    package_dir={
        "tfvqvae": "tfvqvae",
        "tfvqvae.training": "training",
        "tfvqvae.export": "export",
        "tfvqvae_cli": "training/launcher",
    },
    # Pinned to the versions probed together on this stack (shared/STACK-NOTES.md).
    # `tensorflow`, not `tensorflow-cpu`: tf-keras (needed later by TFP) depends on
    # `tensorflow`, and asking for both installs two wheels into one folder.
    install_requires=[
        "tensorflow==2.21.*",
        "keras==3.15.*",
        # TensorFlow 2.21 no longer pulls it in; the TensorBoard callback needs it.
        "tensorboard==2.21.*",
        "numpy>=2.0,<3",
        "tensorflow-datasets==4.9.10",
        # tensorflow-datasets imports it but does not declare it.
        "importlib_resources>=6",
        # Ships the offline default dataset (8x8 UCI digits) inside its wheel.
        "scikit-learn>=1.5,<2",
        # Range coding for the image codec (tfvqvae.codec); the 0.5 series,
        # whose Categorical(perfect=False) quantisation the file format uses.
        "constriction>=0.5,<0.6",
    ],
    extras_require={
        # Exporters (tfvqvae.export): ONNX via tf2onnx, TFLite run by LiteRT.
        # tf2onnx 1.17 accepts opsets 17-18 only (STACK-NOTES).
        "export": EXPORT_REQUIRES,
        # Pillow: independent reference for image conversion tests;
        # tensorflow-serving-api: the README's gRPC client block, run against a local server.
        "test": ["pytest>=8", "Pillow>=10", "tensorflow-serving-api==2.21.*", *EXPORT_REQUIRES],
    },
    entry_points={"console_scripts": ["tfvqvae=tfvqvae_cli:main"]},
)
