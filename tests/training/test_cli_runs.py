"""Commands refused before they write: one line naming the file or option, exit 2.

Each refusal is checked on hand-made files (a broken config.json, a
latest.json with a bad step, a model.keras that is not a zip) or on a tiny
real run (digits), and must leave the output folder as it was.
"""

import errno
import json
import os
from pathlib import Path

import pytest

from tfvqvae.data import load_codes
from tfvqvae.training import train
from tfvqvae.training.config import PriorConfig
from tfvqvae.training.config import TrainConfig
from tfvqvae.training.extract_codes import extract_codes
from tfvqvae.training.train_prior import train_prior

from tests.training.cli_helpers import refused
from tests.training.test_train import TINY

TINY_ARGS = ["--dataset", "digits", "--max-train-examples", "256", "--epochs", "1",
             "--batch-size", "64", "--num-embeddings", "16", "--embedding-dim", "4",
             "--hidden-channels", "16", "--residual-channels", "8",
             "--num-residual-layers", "1", "--num-downsamples", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained tiny run with its codes extracted."""
    out = tmp_path_factory.mktemp("cli") / "run"
    train(TrainConfig(**{**TINY, "epochs": 1}, out=str(out)), verbose=0)
    extract_codes(out)
    return out


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# --resume with nothing to resume -------------------------------------------

def test_train_resume_on_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "never"
    line = refused(["train", *TINY_ARGS, "--out", str(out), "--resume"], capsys)
    assert f"nothing to resume in {out}" in line and "--resume" in line
    assert not out.exists()


def test_train_resume_without_config(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    line = refused(["train", *TINY_ARGS, "--out", str(out), "--resume"], capsys)
    assert f"nothing to resume in {out}: no config.json" in line
    assert tree(out) == ["notes.txt"]


def test_train_resume_with_other_settings_without_checkpoint(tmp_path, capsys):
    # A config.json without a checkpoint would start again from step 0, but
    # only with its own settings: the options that differ are named.
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"dataset": "digits"}))
    line = refused(["train", *TINY_ARGS, "--out", str(out), "--resume"], capsys)
    assert "--resume: --max-train-examples 256 (saved: none)" in line
    assert "--batch-size 64 (saved: 64)" not in line and "only --epochs may change" in line
    assert tree(out) == ["config.json"]


def test_train_prior_resume_with_nothing_to_resume(run_dir, capsys):
    folder = run_dir / "prior-bottom"
    line = refused(["train-prior", "--run", str(run_dir), "--level", "bottom", "--resume"],
                   capsys)
    assert f"nothing to resume in {folder}" in line
    assert not folder.exists()


# Refused runs create nothing -------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--num-downsamples", "4"], "8x8"),  # digits are 8x8: not divisible by 16
    (["--max-train-examples", "10"], "fewer than one global batch"),
    (["--strategy", "default", "--cpu-replicas", "2"], "--cpu-replicas"),
])
def test_refused_train_leaves_no_folder(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    line = refused(["train", *TINY_ARGS, *extra, "--out", str(out)], capsys)
    assert message in line
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--export-formats", "savedmodel,pb"], "Unknown export format(s) ['pb']"),
    (["--prior-learning-rate=-1"], "--prior-learning-rate: must be a finite number in (0, ∞). "
                                   "Received: '-1'"),
])
def test_refused_pipeline_leaves_no_folder(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    line = refused(["pipeline", *TINY_ARGS, *extra, "--out", str(out)], capsys)
    assert message in line
    assert not out.exists()


def test_refused_vqvae2_on_mnist_leaves_no_folder(tmp_path, capsys, shared_data):
    out = tmp_path / "run"
    line = refused(["train", "--preset", "mnist", "--model", "vqvae2", "--data-dir",
                    str(shared_data), "--out", str(out)], capsys)
    assert "28x28" in line and "--image-size" in line
    assert not out.exists()


def test_refused_prior_leaves_no_folder(run_dir, capsys):
    line = refused(["train-prior", "--run", str(run_dir), "--level", "bottom"], capsys)
    assert "no 'bottom' level" in line
    assert not (run_dir / "prior-bottom").exists()


# Unreadable files and folders ----------------------------------------------

def deny_mkdir_under(monkeypatch, folder):
    """Makes ``folder`` behave as read-only (root ignores chmod): mkdir inside it fails."""
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).resolve().is_relative_to(Path(folder).resolve()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


def test_read_only_output_folder_train(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_mkdir_under(monkeypatch, locked)
    out = locked / "run"
    line = refused(["train", *TINY_ARGS, "--out", str(out)], capsys)
    assert str(out) in line and "Permission denied" in line
    assert tree(locked) == []


def test_read_only_output_folder_export(run_dir, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_mkdir_under(monkeypatch, locked)
    line = refused(["export", "--run", str(run_dir), "--out", str(locked / "export"),
                    "--format", "savedmodel", "--no-sample"], capsys)
    assert str(locked) in line and "Permission denied" in line
    assert tree(locked) == []


def test_sample_out_in_a_missing_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "missing" / "grid.png"
    line = refused(["sample", "--run", str(run_dir), "--out", str(out)], capsys)
    assert f"--out {out}" in line and "does not exist" in line
    assert not out.parent.exists()


def test_corrupt_model_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "digits"}))
    (run / "model.keras").write_bytes(b"not a zip file")
    line = refused(["extract-codes", "--run", str(run)], capsys)
    assert f"Could not load the model {run / 'model.keras'}" in line and "zip" in line
    assert tree(run) == ["config.json", "model.keras"]


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object of settings. Received: a JSON list"),
])
def test_bad_config_json(tmp_path, capsys, text, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    line = refused(["extract-codes", "--run", str(run)], capsys)
    assert f"{run / 'config.json'} {message}" in line


def test_latest_json_with_a_non_integer_step(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"dataset": "digits"}))
    (out / "checkpoints" / "epoch-0001.keras").write_bytes(b"")
    pointer = out / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({"epoch": 1, "step": "ten", "path": "epoch-0001.keras"}))
    # --resume alone: the run's own settings (config.json), so the pointer is
    # what is read; it is named, then the only other checkpoint file (empty).
    line = refused(["train", "--out", str(out), "--resume"], capsys)
    assert f"No checkpoint in {out / 'checkpoints'} can be loaded" in line
    assert f"{pointer} is not a checkpoint pointer" in line and '"step": "ten"' in line
    assert f"{out / 'checkpoints' / 'epoch-0001.keras'}: it is not a complete .keras file" in line
    assert tree(out) == ["checkpoints", "checkpoints/epoch-0001.keras",
                         "checkpoints/latest.json", "config.json"]


# train-prior --max-train-examples --------------------------------------------

def test_prior_trains_on_the_first_n_code_records(run_dir):
    _, metadata = load_codes(run_dir / "codes" / "codes-train.tfrecord")
    assert metadata["num_records"] == 1500  # every digits training image
    config = PriorConfig(run=str(run_dir), max_train_examples=300, epochs=1, batch_size=64,
                         hidden_channels=8, num_blocks=1, kernel_size=3)
    metrics = train_prior(config, overwrite=True, verbose=0)
    assert metrics["num_train_records"] == 300
    history = (run_dir / "prior-top" / "checkpoints" / "latest.json").read_text()
    assert json.loads(history)["step"] == 300 // 64
