"""train-prior, sample and pipeline on a tiny real run folder (digits)."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae.data import load_codes
from tfvqvae.models.sampling import LEVEL_SEED_STRIDE
from tfvqvae.training import TrainConfig
from tfvqvae.training import cli
from tfvqvae.training import train
from tfvqvae.training.extract_codes import extract_codes
from tfvqvae.training.sample import sample_images
from tfvqvae.training.train_prior import PriorConfig
from tfvqvae.training.train_prior import train_prior

TINY = dict(
    dataset="digits", max_train_examples=256, epochs=1, batch_size=64, learning_rate=2e-3,
    num_embeddings=16, embedding_dim=4, hidden_channels=16, residual_channels=8,
    num_residual_layers=1, num_downsamples=1, grid_pairs=4,
)
TINY_PRIOR = dict(epochs=2, batch_size=128, hidden_channels=8, num_blocks=2, kernel_size=3)


@pytest.fixture(scope="module")
def run_with_codes(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(out=str(out), **TINY), verbose=0)
    extract_codes(out)
    return out


@pytest.mark.slow  # about 6 s; tests/models/test_pixelcnn_prior.py checks the NLL against NumPy
def test_train_prior_reports_numpy_nll_of_test_codes(run_with_codes):
    metrics = train_prior(
        PriorConfig(run=str(run_with_codes), class_conditional=True, **TINY_PRIOR),
        overwrite=True, verbose=0,
    )
    folder = run_with_codes / "prior-top"
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["code_shape"] == [4, 4] and metrics["num_embeddings"] == 16
    assert metrics["uniform_bits_per_dim"] == pytest.approx(4.0)

    # Independent check: NumPy log-softmax of the saved prior's logits on the test codes.
    prior = keras.saving.load_model(folder / "model.keras")
    assert prior.num_classes == 10
    dataset, _ = load_codes(run_with_codes / "codes" / "codes-test.tfrecord")
    records = list(dataset.batch(1000).as_numpy_iterator())[0]
    logits = prior({"codes": records["top"], "labels": records["label"]}).numpy()
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, records["top"][..., None], -1)[..., 0]
    nll = float(np.mean(log_z - picked))
    assert metrics["test"]["nll_nats"] == pytest.approx(nll, rel=1e-5)
    assert metrics["test"]["bits_per_dim"] == pytest.approx(nll / np.log(2), rel=1e-5)
    assert metrics["test"]["bits_per_dim"] < metrics["uniform_bits_per_dim"]


@pytest.mark.slow  # two prior trainings (about 12 s)
def test_train_prior_streams_sharded_and_single_file_codes(run_with_codes, tmp_path):
    """The same records as shards (train: 3 files) or as the single file of earlier
    releases (test) train the same prior as one shard each."""
    from tests.training.test_extract_codes import to_single_file

    runs = {}
    for name, num_shards in (("one", 1), ("sharded", 3)):
        runs[name] = tmp_path / name
        shutil.copytree(run_with_codes, runs[name],
                        ignore=shutil.ignore_patterns("codes", "prior-*"))
        extract_codes(runs[name], num_shards=num_shards, splits="train")
        extract_codes(runs[name], num_shards=1, splits="test")
    codes = runs["sharded"] / "codes"
    assert sorted(p.name for p in codes.iterdir()) == [
        "codes-test-00000-of-00001.tfrecord",
        *(f"codes-train-0000{i}-of-00003.tfrecord" for i in range(3))]
    to_single_file(codes / "codes-test.tfrecord")
    assert (codes / "codes-test.tfrecord").is_file()

    config = dict(TINY_PRIOR, epochs=1)
    metrics = {name: train_prior(PriorConfig(run=str(run), **config), verbose=0)
               for name, run in runs.items()}
    assert metrics["sharded"]["num_train_records"] == 1500
    assert metrics["sharded"]["test"] == pytest.approx(metrics["one"]["test"], rel=1e-6)
    weights = {name: keras.saving.load_model(run / "prior-top" / "model.keras").get_weights()
               for name, run in runs.items()}
    for got, want in zip(weights["sharded"], weights["one"]):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_sample_is_reproducible_and_validates_class(run_with_codes, tmp_path):
    train_prior(PriorConfig(run=str(run_with_codes), class_conditional=True, **TINY_PRIOR),
                overwrite=True, verbose=0)
    images, codes, png = sample_images(run_with_codes, num_samples=6, seed=3,
                                       out=tmp_path / "a.png")
    again, codes_again, _ = sample_images(run_with_codes, num_samples=6, seed=3,
                                          out=tmp_path / "b.png")
    other, codes_other, _ = sample_images(run_with_codes, num_samples=6, seed=4,
                                          out=tmp_path / "c.png")
    np.testing.assert_array_equal(codes["top"], codes_again["top"])
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(codes["top"], codes_other["top"])
    assert images.shape == (6, 8, 8, 1) and codes["top"].shape == (6, 4, 4)
    assert images.min() >= 0.0 and images.max() <= 1.0
    # The images are the decoder's output for the sampled codes.
    model = keras.saving.load_model(run_with_codes / "model.keras")
    np.testing.assert_allclose(
        images, np.clip(model.decode(codes["top"]).numpy(), 0, 1), atol=1e-6
    )
    assert tf.io.decode_png(png.read_bytes()).shape == (34, 1 + 6 * 33, 1)
    with pytest.raises(ValueError, match=r"\[0, 10\).*12"):
        sample_images(run_with_codes, num_samples=2, class_label=12, out=tmp_path / "d.png")


def test_missing_stages_are_named(tmp_path, run_with_codes):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="tfvqvae train"):
        train_prior(PriorConfig(run=str(empty)))
    no_codes = tmp_path / "no_codes"
    no_codes.mkdir()
    shutil.copy(run_with_codes / "model.keras", no_codes / "model.keras")
    with pytest.raises(FileNotFoundError, match="extract-codes"):
        train_prior(PriorConfig(run=str(no_codes)))
    with pytest.raises(FileNotFoundError, match="train-prior"):
        sample_images(no_codes)
    with pytest.raises(ValueError, match="no 'bottom' level"):
        train_prior(PriorConfig(run=str(run_with_codes), level="bottom", **TINY_PRIOR),
                    overwrite=True)


@pytest.mark.slow  # trains a second run (about 6 s)
def test_codes_from_another_model_are_refused(tmp_path, run_with_codes):
    other = tmp_path / "other"
    train(TrainConfig(out=str(other), **{**TINY, "seed": 1}), verbose=0)
    shutil.copytree(run_with_codes / "codes", other / "codes")
    with pytest.raises(ValueError, match="model_fingerprint"):
        train_prior(PriorConfig(run=str(other), **TINY_PRIOR))


@pytest.mark.slow  # a whole pipeline run, twice (about 50 s)
def test_pipeline_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "pipe"
    argv = ["pipeline", "--out", str(out), "--dataset", "digits", "--max-train-examples", "256",
            "--epochs", "1", "--num-embeddings", "16", "--embedding-dim", "4",
            "--hidden-channels", "16", "--residual-channels", "8", "--num-residual-layers", "1",
            "--num-downsamples", "1", "--prior-epochs", "1", "--num-samples", "4"]
    assert cli.main(argv) == 0
    for name in ("model.keras", "metrics.json", "reconstructions.png", "samples-seed0.png",
                 "codes/codes-train-00000-of-00001.tfrecord", "prior-top/model.keras",
                 "prior-top/metrics.json"):
        assert (out / name).is_file(), name
    # The same command again keeps every finished training stage.
    model_bytes = (out / "model.keras").read_bytes()
    prior_bytes = (out / "prior-top" / "model.keras").read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "kept the finished stages: vqvae, codes, prior-top" in capsys.readouterr().out
    assert (out / "model.keras").read_bytes() == model_bytes
    assert (out / "prior-top" / "model.keras").read_bytes() == prior_bytes
    # Other settings in the same folder: refused, naming them, without --overwrite.
    other = argv[:argv.index("--num-embeddings") + 1] + ["32"] + argv[
        argv.index("--num-embeddings") + 2:]
    assert cli.main(other) == 2
    assert "--num-embeddings 32 (saved: 16)" in capsys.readouterr().err


@pytest.mark.slow  # a whole VQ-VAE-2 pipeline (about 75 s)
def test_pipeline_vqvae2_samples_bottom_given_top(tmp_path):
    """Two levels: the bottom prior is conditioned on the sampled top codes."""
    from tfvqvae.training.pipeline import run_pipeline
    from tfvqvae.training.sample import load_priors
    from tfvqvae.training.sample import sample_codes

    config = TrainConfig(out=str(tmp_path / "v2"), **{**TINY, "model": "vqvae2",
                                                       "num_downsamples": 2, "image_size": 16})
    summary = run_pipeline(config, {**TINY_PRIOR, "epochs": 1}, num_samples=3, verbose=0)
    assert set(summary) >= {"vqvae", "prior_top", "prior_bottom", "samples"}
    model = keras.saving.load_model(tmp_path / "v2" / "model.keras")
    priors = load_priors(tmp_path / "v2", model)
    assert priors["bottom"].is_conditioned and not priors["top"].is_conditioned
    assert priors["bottom"].condition_shape == (2, 2) and priors["bottom"].code_shape == (4, 4)
    codes = sample_codes(priors, 3, seed=5)
    # Same top codes, same seed: the bottom prior's own draw reproduces it.
    bottom = priors["bottom"].sample(3, condition=codes["top"], seed=5 + LEVEL_SEED_STRIDE).numpy()
    np.testing.assert_array_equal(codes["bottom"].numpy(), bottom)
    # The trained bottom prior reads the top map: other top codes, other logits.
    shifted = (codes["top"].numpy() + 1) % 16
    logits = priors["bottom"]({"codes": bottom, "condition": codes["top"]}).numpy()
    other = priors["bottom"]({"codes": bottom, "condition": shifted}).numpy()
    assert np.abs(logits - other).max() > 1e-4


@pytest.mark.slow  # about 8 s; test_cli_runs.py trains a prior on the same kind of run
def test_train_prior_resumes_from_checkpoint(run_with_codes):
    config = dict(TINY_PRIOR, epochs=1)
    train_prior(PriorConfig(run=str(run_with_codes), **config), overwrite=True, verbose=0)
    folder = run_with_codes / "prior-top"
    steps = int(keras.saving.load_model(folder / "model.keras").optimizer.iterations)
    assert steps == 11  # 1500 // 128 full batches
    # Only `epochs` may change on resume: another setting is refused, named.
    with pytest.raises(ValueError, match=r"--hidden-channels 32 \(saved: 8\)"):
        train_prior(PriorConfig(run=str(run_with_codes), **dict(config, epochs=2,
                                                                hidden_channels=32)),
                    resume=True, verbose=0)
    resumed = dict(config, epochs=2)
    train_prior(PriorConfig(run=str(run_with_codes), **resumed), resume=True, verbose=0)
    prior = keras.saving.load_model(folder / "model.keras")
    assert int(prior.optimizer.iterations) == 2 * steps
    assert prior.hidden_channels == TINY_PRIOR["hidden_channels"]
    rows = (folder / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]


@pytest.mark.slow  # about 13 s; test_pixelcnn_prior.py's mirrored fit stays
def test_train_prior_mirrored_matches_one_device(run_with_codes, mirrored_strategy,
                                                 one_device_strategy):
    """Global batch 128 over 2 replicas (64 each) = one device on 128, to 1e-5."""
    config = PriorConfig(run=str(run_with_codes), **dict(TINY_PRIOR, epochs=1))
    folder = run_with_codes / "prior-top"
    weights = {}
    for name, strategy in (("one", one_device_strategy), ("two", mirrored_strategy)):
        metrics = train_prior(config, overwrite=True, verbose=0, strategy=strategy,
                              backup_every=5)
        assert metrics["replicas"] == (2 if name == "two" else 1)
        weights[name] = [w.numpy() for w in keras.saving.load_model(folder / "model.keras").weights]
    for a, b in zip(weights["one"], weights["two"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
