"""``--model hierarchical --levels 3`` downstream of the model: train, codes, priors, sample, export.

Three levels on 16x16 digits give code maps top (1, 1), middle (2, 2) and
bottom (4, 4). The priors form a chain: top unconditioned (here
class-conditioned), middle given top, bottom given middle; ``tfvqvae
sample`` and the exported ``sample`` signature run the one sampler of the
library (`tfvqvae.models.sampling`) and give the same codes for a seed.

The default suite checks the configuration, the model built and the prior
chain; the exported sampler on untrained networks (about 20 s) and the real run
(the commands in-process, about a minute and a half on two CPU cores) are ``slow``.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.data import load_codes
from tfvqvae.data import load_digits
from tfvqvae.export import export_saved_model
from tfvqvae.export.onnx import ONNXRunner
from tfvqvae.export.onnx import export_onnx
from tfvqvae.export.tflite import TFLiteRunner
from tfvqvae.export.tflite import export_tflite
from tfvqvae.export.verify import SavedModelRunner
from tfvqvae.export.verify import check_agreement
from tfvqvae.export.verify import verify_runners
from tfvqvae.models import level_names
from tfvqvae.models.sampling import sample_levels
from tfvqvae.training import TrainConfig
from tfvqvae.training import build_model
from tfvqvae.training import train
from tfvqvae.training.config import PriorConfig
from tfvqvae.training.pipeline import model_levels
from tfvqvae.training.sample import load_priors
from tfvqvae.training.sample import sample_codes
from tfvqvae.training.sample import sample_images
from tfvqvae.training.train_prior import condition_level
from tfvqvae.training.train_prior import prior_inputs
from tfvqvae.training.train_prior import prior_options
from tfvqvae_cli import main

from tests.training.cli_helpers import refused

LEVELS = ("top", "middle", "bottom")
SHAPES = {"top": (1, 1), "middle": (2, 2), "bottom": (4, 4)}  # 16x16 images, L = 3
K = 16

TRAIN_ARGS = ["--model", "hierarchical", "--levels", "3", "--dataset", "digits",
              "--image-size", "16", "--max-train-examples", "256", "--epochs", "1",
              "--batch-size", "64", "--learning-rate", "3e-3", "--num-embeddings", str(K),
              "--embedding-dim", "4", "--hidden-channels", "16", "--residual-channels", "8",
              "--num-residual-layers", "1", "--kmeans-init", "--grid-pairs", "4"]
PRIOR_ARGS = ["--epochs", "1", "--batch-size", "64", "--max-train-examples", "512",
              "--hidden-channels", "8", "--num-blocks", "2", "--kernel-size", "3",
              "--class-conditional"]


def _metadata(model, image_size=16, num_classes=10):
    """What a code file's header says about ``model``'s levels at ``image_size``."""
    return {
        "levels": tuple(model.levels),
        "num_embeddings": dict(model.level_num_embeddings),
        "code_shapes": model.code_shapes((image_size, image_size)),
        "num_classes": num_classes,
    }


def _tiny_model(levels=3, seed=0):
    config = TrainConfig(model="hierarchical", levels=levels, num_embeddings=K, embedding_dim=4,
                         hidden_channels=16, residual_channels=8, num_residual_layers=1,
                         seed=seed)
    return build_model(config, image_channels=1)


# ----------------------------------------------------------- configuration

def test_levels_option_is_required_with_hierarchical_and_refused_otherwise(tmp_path, capsys):
    config = TrainConfig(model="hierarchical", levels=3)
    assert config.size_multiple == 16
    assert TrainConfig().levels is None and TrainConfig().size_multiple == 4
    assert TrainConfig(model="vqvae2").size_multiple == 8
    with pytest.raises(ValueError, match=r"model='hierarchical' needs levels.*--levels"):
        TrainConfig(model="hierarchical")
    with pytest.raises(ValueError, match="levels=0"):
        TrainConfig(model="hierarchical", levels=0)
    with pytest.raises(ValueError, match="num_downsamples=3"):
        TrainConfig(model="hierarchical", levels=3, num_downsamples=3)
    for model in ("vqvae", "vqvae2"):
        with pytest.raises(ValueError, match=rf"levels only applies to model='hierarchical'"
                                             rf".*model='{model}', levels=3"):
            TrainConfig(model=model, levels=3)
    # A config.json written before the field existed still loads.
    values = TrainConfig().to_dict()
    del values["levels"]
    assert TrainConfig.from_dict(values).levels is None

    out = tmp_path / "run"
    line = refused(["train", "--model", "vqvae", "--levels", "3", "--out", str(out)], capsys)
    assert "levels only applies to model='hierarchical'" in line
    line = refused(["train", "--model", "hierarchical", "--out", str(out)], capsys)
    assert "needs levels" in line and "--levels" in line
    line = refused(["train", "--model", "hierarchical", "--levels", "0", "--out", str(out)],
                   capsys)
    assert "--levels: must be a positive integer. Received: '0'" in line
    assert not out.exists()


def test_build_model_builds_one_quantizer_per_level():
    config = TrainConfig(model="hierarchical", levels=3, quantizer="vq", num_embeddings=32,
                         embedding_dim=8, commitment_cost=0.5, hidden_channels=16,
                         residual_channels=8, seed=7)
    model = build_model(config, data_variance=0.2, image_channels=3)
    assert type(model) is tfvqvae.HierarchicalVQVAE and model.num_levels == 3
    assert model.levels == LEVELS == level_names(3) == model_levels(config)
    assert model.size_multiple == config.size_multiple == 16
    assert model.image_channels == 3 and model.data_variance == 0.2
    quantizers = [getattr(model, f"{level}_quantizer") for level in LEVELS]
    assert len({id(q) for q in quantizers}) == 3
    for k, quantizer in enumerate(quantizers):
        assert type(quantizer) is tfvqvae.VectorQuantizer
        assert (quantizer.num_embeddings, quantizer.embedding_dim) == (32, 8)
        assert quantizer.commitment_cost == 0.5
        assert quantizer.seed == 7 + k
    for levels in (1, 2, 4):
        config = TrainConfig(model="hierarchical", levels=levels)
        assert model_levels(config) == level_names(levels)
        assert build_model(config).size_multiple == config.size_multiple
    assert model_levels(TrainConfig()) == ("top",)
    assert model_levels(TrainConfig(model="vqvae2")) == ("top", "bottom")


def test_image_size_not_divisible_is_named(tmp_path):
    config = TrainConfig(out=str(tmp_path / "run"), model="hierarchical", levels=3,
                         dataset="digits", image_size=24)
    with pytest.raises(ValueError, match=r"24x24 .* divisible by 16 = 2 \*\* \(levels \+ 1\)"
                                         r".*--levels 3"):
        train(config, verbose=0)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------- prior chain

def test_each_prior_is_conditioned_on_the_level_directly_above():
    model = _tiny_model()
    metadata = _metadata(model)
    assert [condition_level(level, metadata) for level in LEVELS] == [None, "top", "middle"]
    record = {level: tf.fill(SHAPES[level], k) for k, level in enumerate(LEVELS)}
    record["label"] = tf.constant(3)
    for level, above in zip(LEVELS, (None, "top", "middle")):
        config = PriorConfig(level=level, class_conditional=True)
        options = prior_options(config, metadata)
        assert options["code_shape"] == SHAPES[level] and options["num_classes"] == 10
        inputs = prior_inputs(record, level, True, condition_level(level, metadata))
        assert inputs["codes"] is record[level] and inputs["labels"] is record["label"]
        if above is None:
            assert "condition_shape" not in options and "condition" not in inputs
        else:
            assert options["condition_shape"] == SHAPES[above]
            assert options["condition_num_embeddings"] == K
            assert inputs["condition"] is record[above]
    with pytest.raises(ValueError, match=r"no 'nonexistent' level: pass --level top \| middle "
                                         r"\| bottom\. Received: level='nonexistent'"):
        prior_options(PriorConfig(level="nonexistent"), metadata)
    with pytest.raises(ValueError, match="level must be the name of a code level"):
        PriorConfig(level="../top")


def _untrained_priors(model, class_conditional=True):
    metadata = _metadata(model, num_classes=10 if class_conditional else None)
    keras.utils.set_random_seed(1)
    priors = {}
    for level in model.levels:
        config = PriorConfig(level=level, hidden_channels=8, num_blocks=2, kernel_size=3,
                             class_conditional=class_conditional)
        priors[level] = tfvqvae.PixelCNNPrior(**prior_options(config, metadata))
    return priors


@pytest.mark.slow  # about 21 s; tests/export/test_sample.py checks two levels by default
def test_exported_sample_signature_runs_the_library_sampler(tmp_path):
    """Untrained networks, three levels: the `sample` signature draws `sample_levels`' codes."""
    model = _tiny_model()
    priors = _untrained_priors(model)
    assert sample_codes is sample_levels  # tfvqvae sample's sampler is the library's
    path = export_saved_model(model, tmp_path / "sm", (16, 16, 1), priors)
    sample = tf.saved_model.load(str(path)).signatures["sample"]
    labels = np.array([0, 4, 9], np.int32)
    out = sample(seed=tf.constant(21, tf.int64), temperature=tf.constant(0.8),
                 labels=tf.constant(labels))
    expected = sample_levels(priors, 3, labels, temperature=0.8, seed=21)
    assert list(expected) == list(LEVELS)
    for level in LEVELS:
        assert out[f"{level}_codes"].shape == (3, *SHAPES[level])
        np.testing.assert_array_equal(out[f"{level}_codes"], expected[level])
    np.testing.assert_allclose(out["images"], model.decode_levels(expected).numpy(), atol=1e-5)


# ------------------------------------------------------------ the real run

@pytest.fixture(scope="module")
def run_3(tmp_path_factory):
    """A 3-level run made by the commands: train, extract-codes, a prior per level."""
    out = tmp_path_factory.mktemp("hierarchical") / "run"
    assert main(["train", *TRAIN_ARGS, "--out", str(out)]) == 0
    assert main(["extract-codes", "--run", str(out)]) == 0
    for level in LEVELS:
        assert main(["train-prior", "--run", str(out), "--level", level, *PRIOR_ARGS]) == 0
    return out


@pytest.mark.slow  # the module's run: about 90 s on two CPU cores
def test_run_writes_three_levels_and_a_prior_chain(run_3, capsys):
    config = json.loads((run_3 / "config.json").read_text())
    assert config["model"] == "hierarchical" and config["levels"] == 3
    test = json.loads((run_3 / "metrics.json").read_text())["test"]
    assert set(test["levels"]) == set(LEVELS) and "perplexity" not in test
    for level in test["levels"].values():
        assert level["num_embeddings"] == K and 1 <= level["perplexity"] <= K

    model = keras.saving.load_model(run_3 / "model.keras")
    assert isinstance(model, tfvqvae.HierarchicalVQVAE) and model.levels == LEVELS
    for split, count in (("train", 1500), ("test", 297)):
        dataset, metadata = load_codes(run_3 / "codes" / f"codes-{split}.tfrecord")
        assert metadata["levels"] == LEVELS and metadata["num_records"] == count
        assert metadata["code_shapes"] == SHAPES
        record = next(iter(dataset))
        assert {level: tuple(record[level].shape) for level in LEVELS} == SHAPES

    priors = load_priors(run_3, model)
    assert list(priors) == list(LEVELS)
    assert not priors["top"].is_conditioned and priors["top"].num_classes == 10
    assert priors["middle"].condition_shape == SHAPES["top"]
    assert priors["bottom"].condition_shape == SHAPES["middle"]
    for level in LEVELS:
        assert tuple(priors[level].code_shape) == SHAPES[level]
        saved = json.loads((run_3 / f"prior-{level}" / "config.json").read_text())
        assert saved["level"] == level

    # An unknown level is refused, naming the run's levels; nothing is written.
    line = refused(["train-prior", "--run", str(run_3), "--level", "nonexistent",
                    *PRIOR_ARGS], capsys)
    assert "no 'nonexistent' level: pass --level top | middle | bottom" in line
    assert not (run_3 / "prior-nonexistent").exists()


@pytest.mark.slow
def test_sample_decodes_and_the_export_runs_the_same_sampler(run_3, tmp_path, capsys):
    assert main(["sample", "--run", str(run_3), "--num-samples", "4", "--seed", "3"]) == 0
    assert "codes top (1, 1), middle (2, 2), bottom (4, 4)" in capsys.readouterr().out
    assert (run_3 / "samples-seed3.png").is_file()
    images, codes, _ = sample_images(run_3, num_samples=5, seed=11, temperature=0.9,
                                     out=tmp_path / "s.png")
    assert images.shape == (5, 16, 16, 1) and np.isfinite(images).all()
    assert {level: c.shape[1:] for level, c in codes.items()} == SHAPES

    # Every format, converted from the SavedModel; the float ones agree 100 % with Keras.
    model = keras.saving.load_model(run_3 / "model.keras")
    priors = load_priors(run_3, model)
    saved_model = export_saved_model(model, tmp_path / "sm", (16, 16, 1), priors)
    export_tflite(saved_model, tmp_path / "float32.tflite", "float32")
    export_onnx(saved_model, tmp_path / "onnx")
    runners = {
        "savedmodel": SavedModelRunner(saved_model, LEVELS),
        "tflite-float32": TFLiteRunner(tmp_path / "float32.tflite", LEVELS),
        "onnx": ONNXRunner(tmp_path / "onnx", LEVELS),
    }
    x = np.concatenate(list(load_digits("test").take(64).to_tf_dataset(64, image_size=16)))
    rows = verify_runners(model, runners, x)
    assert [row.artifact for row in rows] == ["keras", *runners]
    assert check_agreement(rows) == []
    for row in rows:
        assert row.agreement == 100.0 and set(row.level_agreement) == set(LEVELS)

    # The one sampler: the exported signature and `tfvqvae sample`'s draw agree.
    labels = np.arange(5, dtype=np.int32) % 10
    out = tf.saved_model.load(str(saved_model)).signatures["sample"](
        seed=tf.constant(11, tf.int64), temperature=tf.constant(0.9), labels=tf.constant(labels))
    for level in LEVELS:
        np.testing.assert_array_equal(out[f"{level}_codes"], codes[level])
    np.testing.assert_allclose(np.clip(out["images"], 0, 1), images, atol=1e-5)


@pytest.mark.slow
def test_export_command_exports_and_verifies_three_levels(run_3, tmp_path, capsys):
    from tfvqvae.export import export_run
    from tfvqvae.export import verify_export

    result = export_run(run_3, tmp_path / "export", formats="savedmodel,tflite,onnx",
                        tflite_modes="float32")
    assert result.levels == LEVELS and "sample" in result.signatures
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    assert manifest["levels"] == list(LEVELS)
    assert set(manifest["signature_io"]["decode"]["inputs"]) == {
        f"{level}_codes" for level in LEVELS}
    rows = verify_export(result, run_3, num_images=64)
    assert check_agreement(rows) == []
