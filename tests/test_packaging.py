"""The built wheel holds the package as users install it: the library, the training
commands and exporters under ``tfvqvae``, the ``tfvqvae`` command, and nothing else."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel (about 15-30 s)
def test_wheel_maps_training_and_export_into_the_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("tfvqvae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("tfvqvae/__init__.py", "tfvqvae/layers/vector_quantizer.py",
                   "tfvqvae/models/hierarchical.py", "tfvqvae/training/train.py",
                   "tfvqvae/training/checkpoints.py", "tfvqvae/export/exporter.py",
                   "tfvqvae_cli/__init__.py", "tfvqvae_cli/parser.py"):
        assert module in names, module
    # Every source file of the three folders is shipped, under its package name.
    for folder, package in (("tfvqvae", "tfvqvae"), ("training", "tfvqvae/training"),
                            ("export", "tfvqvae/export")):
        # rglob: a sub-package missing from setup.py's `packages` (as
        # tfvqvae/evaluation once was) is caught too.
        for source in (REPO / folder).rglob("*.py"):
            relative = source.relative_to(REPO / folder).as_posix()
            if "launcher" in relative.split("/"):
                continue  # training/launcher is shipped as tfvqvae_cli (checked above)
            assert f"{package}/{relative}" in names, source
    # No test, setup script or checkout path leaks into the package.
    assert not any(n.startswith(("tests/", "tfvqvae/tests/", "bench/")) for n in names)
    assert "tfvqvae/setup.py" not in names and "setup.py" not in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tfvqvae = tfvqvae_cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_checkout_root_is_not_part_of_the_package():
    """No path shim: ``tfvqvae.tests`` and ``tfvqvae.setup`` do not import."""
    import tfvqvae

    assert all(Path(p).name == "tfvqvae" for p in tfvqvae.__path__), tfvqvae.__path__
    for name in ("tfvqvae.tests", "tfvqvae.setup"):
        with pytest.raises(ModuleNotFoundError):
            __import__(name)
