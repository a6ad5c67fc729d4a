"""``tfvqvae export``: a thin command over `tfvqvae.export.export_run` and `verify_export`.

    tfvqvae export --run RUN --out OUT [--format savedmodel,tflite,onnx]
                   [--name NAME] [--version 1] [--overwrite] [--verify]

Its options are defined, TensorFlow-free, in ``tfvqvae_cli.parser.add_export``.

Exit status: 0 on success; 1 when ``--verify`` finds an artifact whose code
indices agree with Keras on less than the threshold (``--min-agreement``, 100 %
for float formats; ``--min-quantized-agreement``, 99 % for quantised TFLite), or whose reconstructions
hold NaN or Inf (one ``FAIL <artifact>: ...`` line each); 2 on bad input, a
model or prior with a NaN or Inf weight included (one line saying which).

Killed at any moment, the same command run again finishes the export: an
existing export under ``--out`` stays whole (old or new) throughout
``--overwrite``, and what the killed run left beside it is cleaned up.
"""

import sys

from tfvqvae.export._files import human_size
from tfvqvae.export.exporter import export_run
from tfvqvae.export.exporter import verify_export
from tfvqvae.export.verify import check_agreement
from tfvqvae.export.verify import format_table


def main(args):
    """Entry point of ``tfvqvae export`` (``args`` from `tfvqvae_cli.parser`)."""
    try:
        result = export_run(
            args.run,
            args.out,
            formats=args.format,
            name=args.name,
            version=args.version,
            overwrite=args.overwrite,
            tflite_modes=args.tflite_modes,
            opset=args.opset,
            calibration_images=args.calibration_images,
            sample="auto" if args.sample else False,
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
    rows = verify_export(result, args.run, num_images=args.verify_images,
                         data_dir=args.data_dir)
    print(f"\nverify: {rows[0].num_images} test images of {args.run}\n")
    print(format_table(rows))
    failures = check_agreement(rows, args.min_agreement, args.min_quantized_agreement)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0
