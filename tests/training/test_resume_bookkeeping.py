"""What a resumed run keeps straight besides its weights: the CSV log, the checkpoint
pointer, temporary files, and the epochs already done (in-process, tiny digits runs)."""

import json
import shutil

import numpy as np
import pytest

from tfvqvae.models import sampling
from tfvqvae.training import train
from tfvqvae.training.resumable import run_status
from tfvqvae.training.resumable import trim_history

from tests.models.test_sample_levels import SHAPES
from tests.models.test_sample_levels import chain
from tests.training.test_train import tiny_config


def test_trim_history_keeps_the_rows_before_the_checkpoint(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.5\n2,0.25\n")
    trim_history(path, 2)
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.5\n"
    trim_history(path, 5)  # nothing past it: unchanged
    assert path.read_text() == "epoch,loss\n0,1.0\n1,0.5\n"
    trim_history(tmp_path / "missing.csv", 1)  # no log yet: nothing to do


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("bookkeeping") / "run"
    train(tiny_config(out, epochs=2), verbose=0)
    return out


@pytest.mark.slow  # with the next test: the `finished` run (about 18 s)
def test_a_continuation_killed_past_its_metrics_is_unfinished(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    # As if the run had finished at 1 epoch, then `--resume --epochs 2` was
    # killed after its epoch-2 checkpoint: metrics.json says 1, checkpoints 2.
    metrics = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps({**metrics, "epochs": 1}))
    assert run_status(out, tiny_config(out, epochs=2))[0] == "unfinished"
    # Fewer epochs than the checkpoints hold: refused, naming both.
    with pytest.raises(ValueError, match="--epochs 1 is fewer than the 2 epochs"):
        train(tiny_config(out, epochs=1), resume=True, verbose=0)
    train(tiny_config(out, epochs=2), verbose=0)  # the same command finishes it
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_a_lost_pointer_is_rewritten_and_temporaries_removed(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    # Killed between the last checkpoint's rename and its pointer, with a
    # temporary pointer left behind; the final save never happened.
    (out / "checkpoints" / "latest.json").unlink()
    (out / "checkpoints" / ".tmp-999999-latest.json").write_text("{")
    (out / "metrics.json").unlink()
    (out / "model.keras").unlink()
    train(tiny_config(out, epochs=2), verbose=0)
    pointer = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert (pointer["epoch"], pointer["path"]) == (2, "epoch-0002.keras")
    assert not list(out.rglob(".tmp-*"))
    assert (out / "model.keras").is_file()


def test_given_codes_are_checked_under_their_own_name():
    priors = chain()
    labels = np.array([0, 1], np.int32)
    top = np.zeros((2, *SHAPES["top"][0]), np.int32)
    with pytest.raises(ValueError, match=r"given\['top'\] must have shape \(batch, 2, 2\)"):
        sampling.sample_levels(priors, labels=labels, given={"top": top[:, :1]})
    with pytest.raises(ValueError, match=r"given\['top'\] must lie in \[0, 5\)"):
        sampling.sample_levels(priors, labels=labels, given={"top": top + 7})
    with pytest.raises(TypeError, match=r"given\['top'\] must be integers"):
        sampling.sample_levels(priors, labels=labels, given={"top": top.astype("float32")})
    with pytest.raises(TypeError, match="`given` must be a dict"):
        sampling.sample_levels(priors, labels=labels, given=[top])
