"""``tfvqvae train --quantizer ema|vq|fsq|lfq|rvq|grouped``: options, refusals, runs.

Right values: the layer each choice must build with the options given
(read back from the built model), K and D by hand (8·5·5·5 = 1000, 2**9 =
512), and a real tiny run whose files are read back.
"""

import inspect
import json

import numpy as np
import pytest

import tfvqvae
from tfvqvae_cli import config as cli_config
from tfvqvae_cli.config import PRESETS
from tfvqvae_cli.config import TrainConfig
from tfvqvae_cli.parser import build_parser

from tests.training.cli_helpers import refused

TINY_ARGS = ["--dataset", "digits", "--image-size", "8", "--max-train-examples", "64",
             "--epochs", "1", "--batch-size", "32", "--num-embeddings", "16",
             "--embedding-dim", "4", "--hidden-channels", "8", "--residual-channels", "4",
             "--num-residual-layers", "1", "--grid-pairs", "2"]


def parse_config(argv):
    from tfvqvae.training.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_quantizer_options_parse_into_the_config():
    config = parse_config(["--quantizer", "rvq", "--num-quantizers", "3",
                           "--quantizer-dropout", "0.5", "--shared-codebook",
                           "--stage-quantizer", "vq", "--codebook-cost", "0.5"])
    assert (config.quantizer, config.num_quantizers, config.quantizer_dropout) == ("rvq", 3, 0.5)
    assert config.shared_codebook is True and config.stage_quantizer == "vq"
    assert config.code_depth == 3
    config = parse_config(["--quantizer", "fsq", "--fsq-levels", "8,5,5,5"])
    assert (config.fsq_levels, config.num_embeddings, config.embedding_dim) == ("8,5,5,5", 1000, 4)
    assert config.code_depth is None
    config = parse_config(["--quantizer", "lfq", "--lfq-entropy-cost", "0.2"])
    assert (config.num_embeddings, config.embedding_dim, config.lfq_entropy_cost) == (512, 9, 0.2)
    config = parse_config(["--quantizer", "lfq", "--embedding-dim", "6"])
    assert (config.num_embeddings, config.embedding_dim) == (64, 6)
    config = parse_config(["--quantizer", "grouped", "--num-groups", "4"])
    assert config.code_depth == 4 and config.embedding_dim == 64


def test_config_json_round_trip_of_every_quantizer(tmp_path):
    configs = [
        TrainConfig(quantizer="fsq", fsq_levels="8, 6,5"),
        TrainConfig(quantizer="lfq", num_embeddings=1024),
        TrainConfig(quantizer="rvq", num_quantizers=2, quantizer_dropout=1.0),
        TrainConfig(quantizer="grouped", num_groups=8, shared_codebook=True,
                    stage_quantizer="vq", codebook_cost=0.25),
        TrainConfig(),
    ]
    assert (configs[0].fsq_levels, configs[0].num_embeddings, configs[0].embedding_dim) == (
        "8,6,5", 240, 3)
    assert (configs[1].num_embeddings, configs[1].embedding_dim) == (1024, 10)
    for k, config in enumerate(configs):
        path = tmp_path / f"config-{k}.json"
        path.write_text(json.dumps(config.to_dict()))
        assert TrainConfig.load(path) == config
    # A hand-written config.json may list the levels.
    assert TrainConfig(quantizer="fsq", fsq_levels=[8, 5]).fsq_levels == "8,5"


@pytest.mark.parametrize("argv, message", [
    (["--fsq-levels", "8,5"], "fsq_levels only applies to --quantizer fsq. "
     "Received: quantizer='ema', fsq_levels='8,5'"),
    (["--quantizer", "fsq"], "quantizer='fsq' needs fsq_levels"),
    (["--quantizer", "fsq", "--fsq-levels", "8,1"], "fsq_levels must be integers >= 2 "
     "separated by commas, e.g. 8,5,5,5. Received: quantizer='fsq', fsq_levels='8,1'"),
    (["--quantizer", "fsq", "--fsq-levels", "8,5", "--num-embeddings", "64"],
     "give num_embeddings = 40, not 64"),
    (["--quantizer", "fsq", "--fsq-levels", "8,5", "--codebook-cost", "0.5"],
     "quantizer='fsq' has no codebook, so no codebook loss"),
    (["--quantizer", "lfq", "--num-embeddings", "500"], "num_embeddings must be a power of "
     "two >= 2 (or give --embedding-dim D). Received: quantizer='lfq', num_embeddings=500"),
    (["--quantizer", "lfq", "--embedding-dim", "31"], "D must be at most 30"),
    (["--quantizer", "lfq", "--embedding-dim", "6", "--num-embeddings", "128"],
     "num_embeddings and embedding_dim disagree"),
    (["--lfq-entropy-cost", "0.3"], "lfq_entropy_cost only applies to --quantizer lfq"),
    (["--quantizer", "rvq"], "quantizer='rvq' needs num_quantizers"),
    (["--quantizer", "rvq", "--num-quantizers", "2", "--num-groups", "2"],
     "num_groups only applies to --quantizer grouped. Received: quantizer='rvq', num_groups=2"),
    (["--quantizer", "rvq", "--num-quantizers", "2", "--codebook-cost", "0.5"],
     "pass --stage-quantizer vq"),
    (["--quantizer", "grouped"], "quantizer='grouped' needs num_groups"),
    (["--quantizer", "grouped", "--num-groups", "3"], "embedding_dim must be divisible by "
     "num_groups. Received: quantizer='grouped', embedding_dim=64, num_groups=3"),
    (["--quantizer", "grouped", "--num-groups", "2", "--quantizer-dropout", "0.5"],
     "quantizer_dropout only applies to --quantizer rvq"),
    (["--num-quantizers", "2"], "num_quantizers only applies to --quantizer rvq"),
    (["--quantizer", "vq", "--shared-codebook"], "shared_codebook only applies to "
     "--quantizer rvq or grouped. Received: quantizer='vq', shared_codebook=True"),
    (["--stage-quantizer", "vq"], "stage_quantizer only applies to --quantizer rvq or grouped"),
])
def test_combinations_that_make_no_sense_are_refused(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    line = refused(["train", *argv, "--out", str(out)], capsys)
    assert line.startswith("tfvqvae train: error: ")
    assert message in line
    assert not out.exists()


@pytest.mark.parametrize("text", ["1.5", "-0.1", "nan"])
def test_quantizer_dropout_is_a_probability_at_parse_time(capsys, text):
    line = refused(["train", "--quantizer", "rvq", "--num-quantizers", "2",
                    "--quantizer-dropout", text], capsys)
    assert f"must be a finite number in [0, 1]. Received: '{text}'" in line


def test_literal_defaults_agree_with_the_layers():
    from tfvqvae.layers import finite_scalar_quantizer
    from tfvqvae.layers import lookup_free_quantizer
    from tfvqvae.training.train import build_quantizer

    lfq = inspect.signature(tfvqvae.LookupFreeQuantizer).parameters
    assert cli_config.LFQ_ENTROPY_COST == lfq["entropy_cost"].default
    assert cli_config.LFQ_MAX_BITS == lookup_free_quantizer.MAX_EMBEDDING_DIM
    assert cli_config.FSQ_MAX_CODES == finite_scalar_quantizer.MAX_NUM_EMBEDDINGS
    assert cli_config.DEFAULT_NUM_EMBEDDINGS == TrainConfig.num_embeddings
    assert cli_config.DEFAULT_EMBEDDING_DIM == TrainConfig.embedding_dim
    built = {name: type(build_quantizer(config, 0)) for name, config in (
        ("ema", TrainConfig()), ("vq", TrainConfig(quantizer="vq")),
        ("fsq", TrainConfig(quantizer="fsq", fsq_levels="5,5")),
        ("lfq", TrainConfig(quantizer="lfq", num_embeddings=16)),
        ("rvq", TrainConfig(quantizer="rvq", num_quantizers=2)),
        ("grouped", TrainConfig(quantizer="grouped", num_groups=2)))}
    assert tuple(built) == cli_config.QUANTIZERS
    assert built == {"ema": tfvqvae.VectorQuantizerEMA, "vq": tfvqvae.VectorQuantizer,
                     "fsq": tfvqvae.FiniteScalarQuantizer, "lfq": tfvqvae.LookupFreeQuantizer,
                     "rvq": tfvqvae.ResidualVectorQuantizer,
                     "grouped": tfvqvae.GroupedVectorQuantizer}


def test_each_choice_builds_its_quantizer_with_the_options_given():
    from tfvqvae.training.train import build_model

    model = build_model(TrainConfig(quantizer="rvq", num_quantizers=3, quantizer_dropout=0.25,
                                    num_embeddings=32, embedding_dim=8, decay=0.9, seed=4))
    q = model.quantizer
    assert (q.num_quantizers, q.num_embeddings, q.embedding_dim) == (3, 32, 8)
    assert q.ema and q.quantizer_dropout == 0.25 and not q.shared_codebook and q.seed == 4
    assert [stage.decay for stage in q.quantizers] == [0.9] * 3
    model = build_model(TrainConfig(model="vqvae2", quantizer="grouped", num_groups=2,
                                    stage_quantizer="vq", shared_codebook=True,
                                    codebook_cost=0.5, num_embeddings=16, embedding_dim=8,
                                    seed=7))
    for k, q in enumerate((model.top_quantizer, model.bottom_quantizer)):
        assert type(q) is tfvqvae.GroupedVectorQuantizer
        assert (q.num_groups, q.group_dim, q.ema, q.shared_codebook) == (2, 4, False, True)
        assert q.quantizers[0].codebook_cost == 0.5 and q.seed == 7 + k
    assert model.level_code_depths == {"top": 2, "bottom": 2}
    model = build_model(TrainConfig(quantizer="fsq", fsq_levels="8,5,5,5"))
    assert model.quantizer.levels == [8, 5, 5, 5] and model.level_num_embeddings["top"] == 1000
    model = build_model(TrainConfig(quantizer="lfq", num_embeddings=1024, lfq_entropy_cost=0.3,
                                    commitment_cost=0.5))
    q = model.quantizer
    assert (q.embedding_dim, q.num_embeddings, q.entropy_cost, q.commitment_cost) == (
        10, 1024, 0.3, 0.5)


def test_presets_still_combine_with_a_quantizer():
    from tfvqvae.training.train import build_model

    config = TrainConfig(**{**PRESETS["quickstart"], "quantizer": "rvq", "num_quantizers": 2})
    model = build_model(config)
    assert model.level_code_depths == {"top": 2, "bottom": 2}
    assert model.top_quantizer.quantizers[0].decay == PRESETS["quickstart"]["decay"]
    # The preset's K = 64 and D = 16 cannot both hold for LFQ (K = 2**D): refused, not
    # silently changed; giving D settles it.
    with pytest.raises(ValueError, match="num_embeddings=64, embedding_dim=16"):
        TrainConfig(**{**PRESETS["quickstart"], "quantizer": "lfq"})
    config = TrainConfig(**{**PRESETS["quickstart"], "quantizer": "lfq", "embedding_dim": 6})
    assert (config.num_embeddings, config.embedding_dim) == (64, 6)


@pytest.mark.slow  # default-suite time: the slow run keeps it
def test_an_rvq_run_trains_extracts_and_gets_a_depth_prior(tmp_path, capsys):
    from tfvqvae_cli import main

    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--quantizer", "rvq", "--num-quantizers", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["code_depth"] == 2 and metrics["num_embeddings"] == 16
    assert 0.0 < metrics["usage_percent"] <= 100.0
    assert metrics["dead_codes"] == round(16 * (1 - metrics["usage_percent"] / 100))
    assert json.loads((out / "config.json").read_text())["num_quantizers"] == 2
    assert {"model.keras", "reconstructions.png", "history.csv"} <= {
        p.name for p in out.iterdir()}

    assert main(["extract-codes", "--run", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "levels top 2x2x2 (K=16, depth 2)" in printed
    from tfvqvae.data import load_codes
    from tfvqvae.run_folder import code_file
    from tfvqvae.run_folder import load_model

    dataset, metadata = load_codes(code_file(out, "test"))
    model = load_model(out)
    assert metadata["code_shapes"] == {"top": (2, 2, 2)}
    first = next(iter(dataset.batch(5)))["top"].numpy()
    images = tfvqvae.data.load_digits("test").images_at(np.arange(5), image_size=(8, 8))
    np.testing.assert_array_equal(first, model.encode(images).numpy())

    assert main(["train-prior", "--run", str(out), "--epochs", "1", "--hidden-channels", "8",
                 "--num-blocks", "2"]) == 0
    prior_metrics = json.loads((out / "prior-top" / "metrics.json").read_text())
    assert prior_metrics["code_shape"] == [2, 2, 2] and prior_metrics["code_depth"] == 2
    assert 0 < prior_metrics["test"]["bits_per_dim"] < 4.2  # about log2 16 = 4 untrained
    capsys.readouterr()
    assert main(["sample", "--run", str(out), "--num-samples", "3"]) == 0
    assert "codes top (2, 2, 2)" in capsys.readouterr().out
    assert (out / "samples-seed0.png").is_file()


def test_priors_of_depth_levels_take_their_depth_and_the_depth_above():
    from tfvqvae.training.train_prior import build_prior
    from tfvqvae.training.train_prior import prior_options
    from tfvqvae_cli.config import PriorConfig

    metadata = {"levels": ("top", "bottom"), "num_embeddings": {"top": 8, "bottom": 8},
                "code_shapes": {"top": (2, 2, 3), "bottom": (4, 4)},
                "code_depths": {"top": 3, "bottom": None}, "num_classes": None}
    top = build_prior(PriorConfig(level="top", hidden_channels=8, num_blocks=2), metadata)
    assert top.code_shape == (2, 2, 3) and top.code_depth == 3
    options = prior_options(PriorConfig(level="bottom"), metadata)
    assert tuple(options["condition_shape"]) == (2, 2, 3)
    assert tuple(options["code_shape"]) == (4, 4)
    bottom = build_prior(PriorConfig(level="bottom", hidden_channels=8, num_blocks=2), metadata)
    assert bottom.condition_depth == 3 and bottom.code_depth is None


@pytest.mark.parametrize("options, codebook_loss", [
    (dict(quantizer="fsq", fsq_levels="2,2,2,2"), False),
    (dict(quantizer="lfq", num_embeddings=16), True),  # its entropy penalty
    (dict(quantizer="grouped", num_groups=2, stage_quantizer="vq"), True),
    (dict(quantizer="rvq", num_quantizers=2, shared_codebook=True), False),
])
def test_every_quantizer_trains_a_step(options, codebook_loss):
    import keras

    from tfvqvae.training.train import build_model

    sizes = dict(num_embeddings=16, embedding_dim=4, hidden_channels=8, residual_channels=4,
                 num_residual_layers=1)
    config = TrainConfig(**{**sizes, **options})
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    logs = model.fit(x, batch_size=4, epochs=1, verbose=0).history
    assert ("codebook_loss" in logs) == codebook_loss
    assert all(np.isfinite(values[-1]) for values in logs.values()), logs
    assert 0.0 < logs["usage"][-1] <= 100.0


@pytest.mark.slow  # about 45 s; tests/models/test_depth_prior.py, tests/codec/test_depth_codec.py
# and tests/export/test_depth_export.py keep the depth prior in the default suite
def test_a_grouped_pipeline_trains_a_depth_prior_samples_and_exports(tmp_path, capsys):
    """Every stage on codes (h, w, 2); the default TFLite modes leave int8 out, with a note."""
    from tfvqvae_cli import main

    out = tmp_path / "run"
    assert main(["pipeline", *TINY_ARGS, "--quantizer", "grouped", "--num-groups", "2",
                 "--prior-epochs", "1", "--prior-hidden-channels", "8", "--prior-num-blocks",
                 "2", "--num-samples", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    prior_metrics = json.loads((out / "prior-top" / "metrics.json").read_text())
    assert prior_metrics["code_shape"] == [2, 2, 2] and prior_metrics["code_depth"] == 2
    assert (out / "samples-seed0.png").is_file()
    manifest = json.loads((out / "export" / "export.json").read_text())
    assert set(manifest["artifacts"]) >= {"savedmodel", "tflite-float32",
                                          "tflite-dynamic_range", "onnx"}
    assert "tflite-int8" not in manifest["artifacts"]
    assert any("int8 left out of the default modes" in note for note in manifest["notes"])
    assert "sample" in manifest["signature_io"]
    assert "int8 left out" in printed
