"""``tfvqvae evaluate`` on a short quick-start run (digits, VQ-VAE-2, class-conditional priors).

Right values from NumPy: the priors' bits per image are a float64 log-softmax
sum over the test code maps, the decoder MSE a mean over the test images'
reconstructions, the usage a ``np.bincount`` of the codes, the naive rate
Σ h·w·log2 K by hand.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import run_folder
from tfvqvae.data import load_codes
from tfvqvae.training import cli

EVALUATE = ["--num-samples", "100", "--classifier-steps", "40", "--seed", "3"]

# The quick-start pipeline below (3 + 3 epochs) costs about two minutes on two
# cores: every test that uses it is slow, so the fixture runs only with -m slow.
# The evaluation maths stays in the default suite (tests/evaluation/).
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "quickstart"
    argv = ["pipeline", "--preset", "quickstart", "--out", str(out), "--epochs", "3",
            "--prior-epochs", "3", "--export-formats", "", "--num-samples", "4"]
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def evaluated(quickstart_run):
    assert cli.main(["evaluate", "--run", str(quickstart_run), *EVALUATE]) == 0
    return json.loads(run_folder.evaluation_file(quickstart_run).read_text())


def _test_codes(run):
    dataset, _ = load_codes(run_folder.code_file(run, "test"))
    return next(iter(dataset.batch(100000).as_numpy_iterator()))


def _numpy_bits_per_image(prior, inputs, codes):
    logits = prior(inputs).numpy().astype(np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, codes[..., None].astype(np.int64), -1)[..., 0]
    return ((log_z - picked) / math.log(2.0)).sum(axis=(1, 2))


@slow
def test_writes_every_file(quickstart_run, evaluated):
    folder = run_folder.evaluation_dir(quickstart_run)
    for path in (run_folder.evaluation_file(quickstart_run),
                 run_folder.evaluation_table_file(quickstart_run),
                 run_folder.class_samples_file(quickstart_run),
                 run_folder.usage_histogram_file(quickstart_run, "top"),
                 run_folder.usage_histogram_file(quickstart_run, "bottom")):
        assert path.is_file(), path
    assert list(run_folder.evaluation_logs_dir(quickstart_run).glob("events.out.tfevents*"))
    assert not list(folder.glob(".tmp-*"))
    table = run_folder.evaluation_table_file(quickstart_run).read_text()
    assert "Classification Accuracy Score" in table and "VQ decoder" in table
    # samples-per-class.png: one row per class (10 digits), SAMPLES_PER_CLASS_SHOWN columns.
    grid = tf.io.decode_png(run_folder.class_samples_file(quickstart_run).read_bytes()).numpy()
    assert grid.shape[0] > grid.shape[1] * 0.9  # 10 rows of 10 tiles: about square


@slow
def test_cas_rows(evaluated):
    cas = evaluated["cas"]
    assert set(cas) == {"real", "reconstructed", "generated"}
    for row in cas.values():
        assert 0.0 <= row["top1"] <= row["top5"] <= 100.0
        assert row["train_examples"] == 100 and row["steps"] == 40
    assert evaluated["settings"]["num_samples"] == 100
    # Ten digit classes: a trained classifier on real digits is far above chance.
    assert cas["real"]["top1"] > 30.0


@slow
def test_rate_equals_a_numpy_sum_of_minus_log2_p(quickstart_run, evaluated):
    model = run_folder.load_model(quickstart_run, compile=False)
    priors = run_folder.load_priors(quickstart_run, model.levels, compile=False)
    records = _test_codes(quickstart_run)
    bits = {}
    for level, above in (("top", None), ("bottom", "top")):
        inputs = {"codes": records[level]}
        if priors[level].num_classes is not None:  # the quick start's priors all take the class
            inputs["labels"] = records["label"]
        if above is not None:
            inputs["condition"] = records[above]
        bits[level] = _numpy_bits_per_image(priors[level], inputs, records[level])
    rd = evaluated["rate_distortion"]
    for level, per_image in bits.items():
        got = rd["priors"][level]["validation"]
        assert got["bits_per_image"] == pytest.approx(per_image.mean(), rel=1e-5)
        h, w = records[level].shape[1:]
        assert got["bits_per_dim"] == pytest.approx(per_image.mean() / (h * w), rel=1e-5)
    assert rd["total_bits_per_image"]["validation"] == pytest.approx(
        bits["top"].mean() + bits["bottom"].mean(), rel=1e-5)
    # 16x16 digits: top 2x2, bottom 4x4 codes, K = 64 each: (4 + 16) * 6 bits.
    assert rd["naive_bits_per_image"] == pytest.approx(120.0)
    assert rd["total_bits_per_image"]["validation"] < rd["naive_bits_per_image"]


@slow
def test_decoder_mse_and_usage_from_numpy(quickstart_run, evaluated):
    model = run_folder.load_model(quickstart_run, compile=False)
    config = run_folder.read_run_config(quickstart_run)
    images = run_folder.load_run_images(config, "test").as_float()
    reconstructed = model.decode_levels(model.encode_levels(images)).numpy()
    mse = float(np.mean((reconstructed.astype(np.float64) - images) ** 2))
    decoder = evaluated["rate_distortion"]["decoder"]["validation"]
    assert decoder["mse"] == pytest.approx(mse, rel=1e-4)
    assert decoder["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-4)
    records = _test_codes(quickstart_run)
    for level in ("top", "bottom"):
        counts = np.bincount(records[level].ravel(), minlength=64)
        usage = evaluated["codebook_usage"]["validation"][level]
        assert usage["usage"] == pytest.approx(100.0 * np.count_nonzero(counts) / 64)
        assert usage["dead_codes"] == int(np.sum(counts == 0))


@slow
def test_same_seed_same_numbers(quickstart_run, evaluated):
    again = cli.main(["evaluate", "--run", str(quickstart_run), *EVALUATE, "--no-cas"])
    assert again == 0
    second = json.loads(run_folder.evaluation_file(quickstart_run).read_text())
    assert "cas" not in second
    assert second["rate_distortion"] == evaluated["rate_distortion"]


@slow
def test_refusals_name_the_problem(quickstart_run, tmp_path, capsys):
    # A class with too few training images for a class-balanced set.
    assert cli.main(["evaluate", "--run", str(quickstart_run), "--num-samples", "100000",
                     "--classifier-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--num-samples 100000" in err and "class" in err
    # Refused by the parser, before TensorFlow work.
    for bad in (["--temperature", "0"], ["--temperature", "nan"], ["--num-samples", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["evaluate", "--run", str(quickstart_run), *bad])
        assert "Received" in capsys.readouterr().err
    # A run without priors names the command that trains them.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.keras", "config.json"):
        (bare / name).write_bytes((quickstart_run / name).read_bytes())
    assert cli.main(["evaluate", "--run", str(bare)]) == 2
    assert "train-prior" in capsys.readouterr().err


def test_an_empty_test_split_is_named():
    from tfvqvae.training.evaluate import real_test_set

    class Empty:  # the loaders refuse an empty dataset themselves; a streamed one may be
        def __len__(self):
            return 0

        def to_tf_dataset(self, batch_size, with_labels=False):
            return tf.data.Dataset.from_tensor_slices(
                (np.zeros((0, 16, 16, 1), np.float32), np.zeros(0, np.int32))).batch(batch_size)

    empty = Empty()
    with pytest.raises(ValueError, match="test split has none. Received: 0 test images"):
        real_test_set(empty, 32, None)
