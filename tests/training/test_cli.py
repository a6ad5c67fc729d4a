"""The ``tfvqvae`` command's parser: TensorFlow-free, documented, one-line errors."""

import argparse
import importlib.metadata
import json
import subprocess
import sys

import pytest

from tfvqvae_cli import main
from tfvqvae_cli.config import PRESETS
from tfvqvae_cli.config import PRIOR_PRESETS
from tfvqvae_cli.config import PriorConfig
from tfvqvae_cli.config import TrainConfig
from tfvqvae_cli.parser import build_parser

from tests.training.cli_helpers import one_line_error


def run_python(code):
    """Runs ``code`` in a fresh interpreter; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def subcommands():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_help_and_argument_errors_do_not_import_tensorflow():
    code = """
import sys
from tfvqvae_cli import main
for argv in (["--help"], ["train", "--help"], ["export", "--help"],
             ["train", "--no-such-option"], ["train-prior", "--max-train-examples", "0"],
             ["export", "--model", "runs/x", "--out", "x"]):
    try:
        main(argv)
    except SystemExit:
        pass
main(["presets"])
print("TF", "tensorflow" in sys.modules, "KERAS", "keras" in sys.modules)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "TF False KERAS False"


def test_console_script_and_module_run_the_launcher():
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name == "tfvqvae"]
    assert script.value == "tfvqvae_cli:main"
    result = subprocess.run([sys.executable, "-m", "tfvqvae_cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: tfvqvae ")
    from tfvqvae.training import cli  # the library name still works

    assert cli.main is main


def test_every_option_has_help_and_its_default():
    for name, parser in subcommands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings)
            if action.option_strings and not action.required:
                assert "(default: " in action.help, (name, action.option_strings)


def test_help_shows_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("passes over the training images (default: 10)",
                     "Adam learning rate (default: 0.002)",
                     "--kmeans-init, --no-kmeans-init initialise the codebook by k-means on "
                     "the first batch (--no-kmeans-init: the initializer's codebook) "
                     "(default: on)",
                     "onto encoder outputs (default: 20)",
                     "--backup-every STEPS"):
        assert expected in text
    with pytest.raises(SystemExit):
        main(["train-prior", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "gated blocks (default: 6)" in text
    assert "--class-conditional, --no-class-conditional" in text


def test_every_boolean_option_is_a_yes_no_pair():
    for name, parser in subcommands().items():
        for action in parser._actions:
            assert not isinstance(action, (argparse._StoreTrueAction,
                                           argparse._StoreFalseAction)), (name, action.dest)
            if isinstance(action, argparse.BooleanOptionalAction):
                assert action.option_strings[1] == "--no-" + action.option_strings[0][2:]


def test_config_fields_are_options():
    train, prior = subcommands()["train"], subcommands()["train-prior"]
    for parser, config in ((train, TrainConfig), (prior, PriorConfig)):
        dests = {a.dest for a in parser._actions}
        assert {"max_train_examples", "epochs", "seed", "jit_compile"} <= dests
        assert {f.name for f in config.__dataclass_fields__.values()} <= dests


def test_literal_defaults_agree_with_the_library():
    from tfvqvae.data import DEFAULT_DATASET
    from tfvqvae.distribute import STRATEGIES
    from tfvqvae.export.exporter import FORMATS
    from tfvqvae.export.signatures import SAMPLE_METHODS
    from tfvqvae.export.tflite import DEFAULT_TFLITE_MODES
    from tfvqvae.training.extract_codes import DEFAULT_SPLITS
    from tfvqvae.training.resumable import DEFAULT_BACKUP_EVERY
    from tfvqvae_cli import config
    from tfvqvae_cli import parser

    assert config.DEFAULT_DATASET == DEFAULT_DATASET
    assert parser.STRATEGIES == STRATEGIES
    assert parser.DEFAULT_BACKUP_EVERY == DEFAULT_BACKUP_EVERY
    assert parser.EXPORT_FORMATS == FORMATS
    assert parser.SAMPLE_METHODS == SAMPLE_METHODS
    from tfvqvae.models.sampling import METHODS
    assert parser.SAMPLERS == METHODS
    assert parser.TFLITE_MODES == DEFAULT_TFLITE_MODES
    assert parser.EXTRACT_SPLITS == DEFAULT_SPLITS
    from tfvqvae.evaluation.classifier import CAS_STEPS
    from tfvqvae.training.evaluate import DEFAULT_BATCH_SIZE
    from tfvqvae.training.evaluate import DEFAULT_NUM_SAMPLES

    assert parser.CAS_STEPS == CAS_STEPS
    assert parser.EVALUATE_NUM_SAMPLES == DEFAULT_NUM_SAMPLES
    assert parser.EVALUATE_BATCH_SIZE == DEFAULT_BATCH_SIZE


def test_presets_list_what_each_sets(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    parser = build_parser()
    for name in PRESETS:
        header = lines.index(f"{name}:")
        train_flags = lines[header + 1].split(":", 1)[1].split()
        prior_flags = lines[header + 2].split(":", 1)[1].split()
        # The printed options, given instead of --preset, set the same values.
        args = parser.parse_args(["train", *train_flags])
        assert TrainConfig.options_from_args(args) == PRESETS[name]
        args = parser.parse_args(["train-prior", "--run", "r", *prior_flags])
        assert {k: v for k, v in PriorConfig.options_from_args(args).items()
                if k != "run"} == PRIOR_PRESETS[name]
    code, line = one_line_error(["presets", "imagenet"], capsys)
    assert code == 2 and "'imagenet'" in line


def test_presets_are_valid_configurations():
    for name, values in PRESETS.items():
        TrainConfig.from_dict(values)
        PriorConfig.from_dict(PRIOR_PRESETS.get(name, {}))
    assert set(PRIOR_PRESETS) == set(PRESETS)


@pytest.mark.parametrize("argv, option", [
    (["train", "--max-train-examples", "0"], "--max-train-examples"),
    (["train-prior", "--run", "r", "--max-train-examples", "0"], "--max-train-examples"),
    (["pipeline", "--prior-max-train-examples", "0"], "--prior-max-train-examples"),
    (["train", "--epochs", "-3"], "--epochs"),
])
def test_non_positive_counts_are_refused_by_option(argv, option, capsys):
    code, line = one_line_error(argv, capsys)
    assert code == 2
    assert f"argument {option}: must be a positive integer. Received: '{argv[-1]}'" in line


def test_model_names_one_concept(capsys):
    """--model is train's architecture; a run folder is --run, a model file --model-file."""
    code, line = one_line_error(["export", "--model", "runs/mnist", "--out", "x"], capsys)
    assert code == 2
    assert "--model is now --run" in line and "runs/mnist" in line
    code, line = one_line_error(["extract-codes", "--run", "r", "--model", "m.keras"], capsys)
    assert code == 2
    assert "--model is now --model-file" in line and "m.keras" in line
    assert build_parser().parse_args(["train", "--model", "vqvae2"]).model == "vqvae2"


def test_argument_errors_are_one_line(capsys):
    code, line = one_line_error(["train", "--colour", "red"], capsys)
    assert code == 2 and "--colour" in line
    code, line = one_line_error(["export", "--out", "x"], capsys)
    assert code == 2 and "--run" in line


def test_max_train_examples_is_validated_by_the_configs():
    for config in (TrainConfig, PriorConfig):
        with pytest.raises(ValueError, match="max_train_examples=0"):
            config(max_train_examples=0)


def test_config_files_that_are_not_objects_are_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=f"{path}.*JSON object.*list"):
        TrainConfig.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
        PriorConfig.load(path)
    path.write_text(json.dumps({"colour": 1}))
    with pytest.raises(ValueError, match=f"{path}: Unknown configuration keys"):
        TrainConfig.load(path)


def test_prior_attention_options_reach_the_prior():
    """--attention-every below --num-blocks goes to PixelCNNPrior; at or above it is refused."""
    from tfvqvae.training.train_prior import prior_options

    with pytest.raises(ValueError, match="attention_every=4, num_blocks=4"):
        PriorConfig(num_blocks=4, attention_every=4)
    config = PriorConfig(num_blocks=4, attention_every=2, num_attention_heads=2, level="top")
    metadata = {"levels": ["top"], "num_embeddings": {"top": 16}, "code_shapes": {"top": [4, 4]},
                "num_classes": None}
    options = prior_options(config, metadata)
    assert (options["attention_every"], options["num_attention_heads"]) == (2, 2)
    assert PriorConfig().attention_every is None
