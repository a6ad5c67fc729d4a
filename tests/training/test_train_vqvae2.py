"""`tfvqvae train --model vqvae2`: outputs, per-level metrics, bad sizes, the flag."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.training import TrainConfig
from tfvqvae.training import build_model
from tfvqvae.training import train

from tests.training.test_train import TINY as SINGLE_LEVEL_TINY

# The single-level TINY run, as VQ-VAE-2: 16x16 images (top 2x2, bottom 4x4).
TINY = {**SINGLE_LEVEL_TINY, "model": "vqvae2", "image_size": 16, "epochs": 1,
        "num_downsamples": 2}


def tiny_config(out, **overrides):
    return TrainConfig(out=str(out), **{**TINY, **overrides})


@pytest.mark.slow  # default-suite time: the export tests' VQ-VAE-2 run (train()) stays
def test_train_vqvae2_writes_every_artifact(tmp_path):
    out = tmp_path / "run"
    metrics = train(tiny_config(out), verbose=0)

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "checkpoints", "logs", "history.csv", "model.keras",
            "reconstructions.png", "metrics.json"} <= names
    assert json.loads((out / "config.json").read_text())["model"] == "vqvae2"

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    test = saved["test"]
    assert saved["num_test_images"] == 297 and saved["num_train_images"] == 256
    assert 0 < test["mse"] < 0.2
    assert test["psnr_db"] == pytest.approx(10 * np.log10(1 / test["mse"]))
    assert set(test["levels"]) == {"top", "bottom"}
    for level in test["levels"].values():
        assert set(level) == {"perplexity", "usage_percent", "dead_codes", "num_embeddings"}
        assert level["num_embeddings"] == 16
        assert 1 <= level["perplexity"] <= 16
        assert level["dead_codes"] == round(16 * (1 - level["usage_percent"] / 100))
    assert "perplexity" not in test  # no single-level keys for a two-level model

    # The model file is a VQVAE2 and reproduces the reported numbers on the
    # test split, resized the way the pipeline resizes it.
    from tfvqvae.data import load_digits

    model = keras.saving.load_model(out / "model.keras")
    assert isinstance(model, tfvqvae.VQVAE2)
    assert model.image_channels == 1 and model.hidden_channels == 16
    assert model.level_num_embeddings == {"top": 16, "bottom": 16}
    assert test["normalized_mse"] == pytest.approx(test["mse"] / model.data_variance)
    assert model.data_variance != 1.0  # normalize_mse: the training pixels' variance
    x = np.concatenate(list(load_digits("test").to_tf_dataset(64, image_size=16)))
    assert x.shape == (297, 16, 16, 1)
    mse = float(np.mean((model.predict(x, verbose=0) - x) ** 2))
    assert mse == pytest.approx(test["mse"], rel=1e-4)
    codes = model.encode_levels(x)
    assert codes["top"].shape == (297, 2, 2) and codes["bottom"].shape == (297, 4, 4)
    for name, level in test["levels"].items():
        used = np.unique(codes[name].numpy()).size
        assert level["dead_codes"] == 16 - used

    # 4 pairs of 16x16 images, scaled to 32x32 tiles with 1-pixel gaps.
    png = tf.io.decode_png((out / "reconstructions.png").read_bytes()).numpy()
    assert png.shape == (1 + 32 + 1, 1 + 8 * 33, 1)
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"top_perplexity", "bottom_usage", "val_bottom_dead_codes"} <= set(header)


def test_build_model_uses_the_same_quantizer_settings_for_both_levels():
    config = TrainConfig(model="vqvae2", quantizer="vq", num_embeddings=32, embedding_dim=8,
                         commitment_cost=0.5, hidden_channels=16, residual_channels=8)
    model = build_model(config, data_variance=0.2, image_channels=3)
    assert isinstance(model, tfvqvae.VQVAE2)
    assert model.image_channels == 3 and model.data_variance == 0.2
    top, bottom = model.top_quantizer, model.bottom_quantizer
    assert top is not bottom
    for quantizer in (top, bottom):
        assert type(quantizer) is tfvqvae.VectorQuantizer
        assert (quantizer.num_embeddings, quantizer.embedding_dim) == (32, 8)
        assert quantizer.commitment_cost == 0.5
    assert isinstance(build_model(TrainConfig()), tfvqvae.VQVAE)  # the default


def test_image_size_not_divisible_by_8_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"12x12 .* divisible by 8.*--model vqvae2"):
        train(tiny_config(tmp_path / "run", image_size=12), verbose=0)


def test_bad_model_configuration_is_named():
    with pytest.raises(ValueError, match="model='vqvae3'"):
        TrainConfig(model="vqvae3")
    with pytest.raises(ValueError, match="num_downsamples=3"):
        TrainConfig(model="vqvae2", num_downsamples=3)
    assert TrainConfig().model == "vqvae"
    # A config.json written before the field existed still loads.
    values = TrainConfig().to_dict()
    del values["model"]
    assert TrainConfig.from_dict(values).model == "vqvae"


def test_model_flag(capsys):
    from tfvqvae_cli.parser import build_parser
    from tfvqvae.training.train import config_from_args

    parser = build_parser()
    args = parser.parse_args(["train", "--preset", "quickstart", "--model", "vqvae2"])
    config = config_from_args(args)
    assert config.model == "vqvae2" and config.image_size == 16
    assert config_from_args(parser.parse_args(["train"])).model == "vqvae"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--model", "pixelcnn"])
    assert "invalid choice: 'pixelcnn'" in capsys.readouterr().err
