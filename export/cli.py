"""``tfvqvae export``: a thin command over `tfvqvae.export.export_run` and `verify_export`.

    tfvqvae export --model RUN --out OUT [--format savedmodel,tflite,onnx]
                   [--name NAME] [--version 1] [--overwrite] [--verify]

Exit status: 0 on success; 1 when ``--verify`` finds an artifact whose code
indices agree with Keras on less than the threshold; 2 on bad input (the
message says which).
"""

import sys

from tfvqvae.export._files import human_size
from tfvqvae.export.exporter import FORMATS
from tfvqvae.export.exporter import export_run
from tfvqvae.export.exporter import verify_export
from tfvqvae.export.signatures import SAMPLE_METHODS
from tfvqvae.export.tflite import TFLITE_MODES
from tfvqvae.export.verify import check_agreement
from tfvqvae.export.verify import format_table


def percentage(text):
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"must lie in [0, 100]. Received: {text}")
    return value


def add_arguments(parser):
    """Adds the ``tfvqvae export`` options to an argparse parser."""
    parser.add_argument("--model", required=True,
                        help="run folder of `tfvqvae train` (model.keras, config.json, prior-*/)")
    parser.add_argument("--out", required=True, help="export folder (must not exist)")
    parser.add_argument("--format", default="savedmodel",
                        help=f"comma-separated, any of {','.join(FORMATS)} (default savedmodel); "
                        "TFLite and ONNX are converted from the SavedModel")
    parser.add_argument("--name", help="model name in OUT/savedmodel/NAME/VERSION "
                        "(default: the run folder's name)")
    parser.add_argument("--version", type=int, default=1, help="SavedModel version (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (a folder with export.json)")
    parser.add_argument("--tflite-modes", default=",".join(TFLITE_MODES),
                        help=f"comma-separated TFLite modes (default {','.join(TFLITE_MODES)})")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or 18 (default 17)")
    parser.add_argument("--calibration-images", type=int, default=200,
                        help="training images for int8 calibration (default 200)")
    parser.add_argument("--no-sample", action="store_true",
                        help="leave the `sample` signature out even when the run has priors")
    parser.add_argument("--sample-method", choices=SAMPLE_METHODS, default="cached",
                        help="sampler inside the `sample` signature (default cached)")
    parser.add_argument("--image-size", type=int,
                        help="image size of the graphs (default: the run's)")
    parser.add_argument("--data-dir", help="data folder (default: the run's config.json)")
    parser.add_argument("--verify", action="store_true",
                        help="run every artifact on the run's test images and compare with Keras")
    parser.add_argument("--verify-images", type=int, default=1000,
                        help="test images for --verify (default 1000)")
    parser.add_argument("--min-agreement", type=percentage, default=100.0,
                        help="%% of code indices that float artifacts (SavedModel, TFLite float32, "
                        "ONNX) must share with Keras under --verify (default 100)")
    parser.add_argument("--min-quantized-agreement", type=percentage, default=0.0,
                        help="the same for dynamic-range and int8 TFLite (default 0: reported, "
                        "not enforced)")


def main(args):
    """Entry point of ``tfvqvae export``."""
    try:
        result = export_run(
            args.model,
            args.out,
            formats=args.format,
            name=args.name,
            version=args.version,
            overwrite=args.overwrite,
            tflite_modes=args.tflite_modes,
            opset=args.opset,
            calibration_images=args.calibration_images,
            sample=False if args.no_sample else "auto",
            sample_method=args.sample_method,
            image_size=args.image_size,
            data_dir=args.data_dir,
        )
    except ImportError as error:
        print(f"tfvqvae export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result.out} (signatures: {', '.join(result.signatures)})")
    for artifact, path in result.artifacts.items():
        print(f"  {artifact:<22} {human_size(result.sizes[artifact]):>10}  {path}")
    for note in result.notes:
        print(f"  note: {note}")
    if not args.verify:
        return 0
    rows = verify_export(result, args.model, num_images=args.verify_images,
                         data_dir=args.data_dir)
    print(f"\nverify: {rows[0].num_images} test images of {args.model}\n")
    print(format_table(rows))
    failures = check_agreement(rows, args.min_agreement, args.min_quantized_agreement)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0
