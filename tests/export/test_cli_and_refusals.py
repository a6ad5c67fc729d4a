"""``tfvqvae export`` end to end, and every refusal: bad folders, formats, existing exports."""

import json
import shutil
import sys

import pytest

from tfvqvae.export import ExportResult
from tfvqvae.export import VerifyRow
from tfvqvae.export import check_agreement
from tfvqvae.export import export_run
from tfvqvae.export import exporter
from tfvqvae.export import load_run
from tfvqvae.training import cli


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.mark.slow  # every format exported and verified (about 40 s)
def test_cli_exports_verifies_and_reports_sizes(vqvae_run, tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["export", "--run", str(vqvae_run), "--out", str(out), "--format",
            "savedmodel,tflite", "--tflite-modes", "float32,int8", "--verify",
            "--verify-images", "64"]
    # Quantised files are held to 99 % by default: int8 keeps fewer codes (exit 1), and
    # the message says what to do; the export is written all the same.
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    printed = captured.out
    assert "FAIL tflite-int8" in captured.err and "below the required 99 %" in captured.err
    assert "--min-quantized-agreement" in captured.err and "FAIL tflite-float32" not in captured.err
    assert "signatures: encode, decode, reconstruct, serving_default, sample" in printed
    assert (out / "savedmodel" / "mnist-vqvae" / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in (out / "tflite").iterdir()) == ["float32.tflite", "int8.tflite"]
    assert not (out / "onnx").exists() and _leftovers(tmp_path) == []
    for artifact in ("savedmodel", "tflite-float32", "tflite-int8"):
        assert f"  {artifact} " in printed
        assert f"| {artifact} |" in printed
    assert "| tflite-float32 | 100.00 % |" in printed and "| savedmodel | 100.00 % |" in printed

    manifest = json.loads((out / "export.json").read_text())
    result = ExportResult.load(out)
    assert result.sizes == manifest["sizes"]
    assert result.sizes["tflite-int8"] == (out / "tflite" / "int8.tflite").stat().st_size
    assert manifest["signature_io"]["sample"]["inputs"] == {
        "seed": ["int64", []], "temperature": ["float32", []], "num_samples": ["int32", []]}

    # A second export to the same folder is refused and leaves it alone.
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert ExportResult.load(out).sizes == result.sizes

    # --overwrite replaces it; int8 held to 0 % is reported, not enforced (exit 0).
    argv = ["export", "--run", str(vqvae_run), "--out", str(out), "--format", "tflite",
            "--tflite-modes", "int8", "--overwrite", "--verify", "--verify-images", "64",
            "--min-quantized-agreement", "0"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "FAIL" not in captured.err and "| tflite-int8 |" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "tflite"]  # no SavedModel kept
    assert _leftovers(tmp_path) == []


def test_check_agreement_thresholds():
    def row(artifact, agreement, quantized=False):
        return VerifyRow(artifact, quantized, 10, agreement, {"top": agreement},
                         0.0, 0.0, 20.0, 1.0)

    rows = [row("savedmodel", 100.0), row("onnx", 99.99), row("tflite-int8", 80.0, True)]
    assert [f.split(":")[0] for f in check_agreement(rows)] == ["onnx", "tflite-int8"]
    assert check_agreement(rows, min_agreement=99.9, min_quantized_agreement=0.0) == []
    rows.append(row("tflite-weight_only", 99.0, True))  # the default 99 % is reached
    assert [f.split(":")[0] for f in check_agreement(rows)] == ["onnx", "tflite-int8"]
    assert [f.split(":")[0] for f in check_agreement(rows, 99.9, 90.0)] == ["tflite-int8"]
    # The command's default is the library's.
    from tfvqvae.export.verify import MIN_QUANTIZED_AGREEMENT
    from tfvqvae_cli.parser import build_parser

    args = build_parser().parse_args(["export", "--run", "r", "--out", "o"])
    assert args.min_quantized_agreement == MIN_QUANTIZED_AGREEMENT == 99.0


def test_missing_or_non_model_folders_are_refused(tmp_path, vqvae_run, capsys):
    out = tmp_path / "export"
    with pytest.raises(FileNotFoundError, match="Run folder not found"):
        export_run(tmp_path / "nowhere", out)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        export_run(tmp_path / "file.txt", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a tfvqvae run folder: it has no model.keras"):
        export_run(empty, out)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Could not load the model"):
        export_run(broken, out)
    prior_only = tmp_path / "prior_only"
    prior_only.mkdir()
    shutil.copy(vqvae_run / "prior-top" / "model.keras", prior_only / "model.keras")
    with pytest.raises(ValueError, match="not a tfvqvae VQVAE or VQVAE2"):
        export_run(prior_only, out)
    assert cli.main(["export", "--run", str(empty), "--out", str(out)]) == 2
    assert "no model.keras" in capsys.readouterr().err
    assert not out.exists()


def test_bad_formats_names_and_options_are_refused(vqvae_run, tmp_path, capsys):
    out = tmp_path / "export"
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) \['pb'\]: choose from "
                                         "savedmodel, tflite, onnx"):
        export_run(vqvae_run, out, formats="savedmodel,pb")
    with pytest.raises(ValueError, match="Unknown TFLite mode"):
        export_run(vqvae_run, out, formats="tflite", tflite_modes="float16")
    with pytest.raises(ValueError, match="opset 17 or 18"):
        export_run(vqvae_run, out, formats="onnx", opset=19)
    with pytest.raises(ValueError, match="plain folder name"):
        export_run(vqvae_run, out, name="../escape")
    with pytest.raises(ValueError, match="positive integer"):
        export_run(vqvae_run, out, version=0)
    assert cli.main(["export", "--run", str(vqvae_run), "--out", str(out),
                     "--format", "savedmodel,tflight"]) == 2
    assert "Unknown export format(s) ['tflight']" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.slow  # two exports up to a failing converter (about 10 s); refusals above
# and tests/export/test_replace_killed.py check that nothing is left behind
def test_a_failed_export_leaves_nothing_behind(vqvae_run, tmp_path, monkeypatch):
    out = tmp_path / "export"

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(exporter.onnx_export, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_run(vqvae_run, out, formats="savedmodel,onnx")
    assert not out.exists() and _leftovers(tmp_path) == []

    # With --overwrite, the old export survives a failed replacement.
    out.mkdir()
    (out / "export.json").write_text("{}")
    (out / "old.txt").write_text("previous export")
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_run(vqvae_run, out, formats="savedmodel,onnx", overwrite=True)
    assert (out / "old.txt").read_text() == "previous export"
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_only_an_earlier_export(vqvae_run, tmp_path):
    unrelated = tmp_path / "documents"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="replaces an earlier export only"):
        export_run(vqvae_run, unrelated, overwrite=True)
    assert (unrelated / "thesis.tex").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="already exists"):
        export_run(vqvae_run, vqvae_run)
    with pytest.raises(FileExistsError, match="replaces an earlier export only"):
        export_run(vqvae_run, vqvae_run, overwrite=True)
    assert (vqvae_run / "model.keras").is_file()
    # A run folder inside an earlier export: replacing the export would delete the run.
    nested = tmp_path / "export" / "run"
    nested.mkdir(parents=True)
    (tmp_path / "export" / "export.json").write_text("{}")
    for name in ("model.keras", "config.json"):
        shutil.copy(vqvae_run / name, nested / name)
    with pytest.raises(ValueError, match="must not be the run folder or hold it"):
        export_run(nested, tmp_path / "export", overwrite=True)
    assert (nested / "model.keras").is_file()


def test_missing_optional_dependency_says_what_to_install(vqvae_run, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ImportError, match=r'needs the optional package `tf2onnx`.*'
                                          r'pip install "tfvqvae\[export\]"'):
        export_run(vqvae_run, tmp_path / "export", formats="onnx")
    assert cli.main(["export", "--run", str(vqvae_run), "--out", str(tmp_path / "export"),
                     "--format", "onnx"]) == 2
    assert 'pip install "tfvqvae[export]"' in capsys.readouterr().err
    assert not (tmp_path / "export").exists()

    monkeypatch.setitem(sys.modules, "ai_edge_quantizer.quantizer", None)
    with pytest.raises(ImportError, match=r'optional package `ai_edge_quantizer`.*'
                                          r'pip install "tfvqvae\[export\]"'):
        export_run(vqvae_run, tmp_path / "export", formats="tflite",
                   tflite_modes="float32,weight_only")
    assert not (tmp_path / "export").exists()

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    from tfvqvae.export import TFLiteRunner

    with pytest.raises(ImportError, match="ai_edge_litert"):
        TFLiteRunner(tmp_path / "any.tflite", ("top",))


@pytest.mark.slow  # trains a VQ-VAE-2 run (about 35 s)
def test_sample_signature_needs_every_prior(vqvae2_run, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.keras", "config.json"):
        shutil.copy(vqvae2_run / name, partial / name)
    shutil.copytree(vqvae2_run / "prior-top", partial / "prior-top")
    assert load_run(partial).missing_priors == ["bottom"]
    with pytest.raises(FileNotFoundError,
                       match=r"needs a prior for every level.*\['bottom'\].*train-prior"):
        export_run(partial, tmp_path / "strict", sample=True)
    result = export_run(partial, tmp_path / "auto")
    assert "sample" not in result.signatures
    assert "no `sample` signature" in result.notes[0]
    assert result.signatures == ("encode", "decode", "reconstruct", "serving_default")
