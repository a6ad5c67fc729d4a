"""``tfvqvae prepare``: packs an image folder into TFRecord shards; one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfvqvae_cli import main

from tests.training.cli_helpers import refused


def _folder(root, counts=(4, 3)):
    rng = np.random.default_rng(0)
    for c, count in enumerate(counts):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            (root / f"class{c}" / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def test_prepare_writes_shards_and_prints_one_line(tmp_path):
    images = _folder(tmp_path / "images")
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "tfvqvae_cli", "prepare", "--images", str(images), "--out",
         str(out), "--shards", "2", "--seed", "5"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"train: wrote 7 images in 2 shards, 2 classes, 6x5: {out / 'dataset.json'}"]
    split = json.loads((out / "dataset.json").read_text())["splits"]["train"]
    assert split["num_records"] == 7 and split["seed"] == 5 and split["num_classes"] == 2
    names = sorted(p.name for p in out.glob("*.tfrecord"))
    assert names == ["images-train-00000-of-00002.tfrecord",
                     "images-train-00001-of-00002.tfrecord"]
    counted = [sum(1 for _ in tf.data.TFRecordDataset(str(out / n))) for n in names]
    assert counted == [s["num_records"] for s in split["shards"]] and sum(counted) == 7


def test_prepare_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    line = refused(["prepare", "--images", str(missing), "--out", str(tmp_path / "o")], capsys)
    assert line.startswith("tfvqvae prepare: error: ") and str(missing) in line
    images = _folder(tmp_path / "images", counts=(2,))
    (images / "class0" / "bad.png").write_bytes(b"not an image")
    line = refused(["prepare", "--images", str(images), "--out", str(tmp_path / "o")], capsys)
    assert "Cannot read image file" in line and "bad.png" in line and "--skip-corrupt" in line
    assert main(["prepare", "--images", str(images), "--out", str(tmp_path / "o"),
                 "--skip-corrupt"]) == 0
    assert capsys.readouterr().out.startswith(
        "train: wrote 2 images in 1 shard, 1 class, 6x5, 1 unreadable files skipped: ")
    line = refused(["prepare", "--images", str(images), "--out", str(tmp_path / "o")], capsys)
    assert "already holds split 'train'" in line and "--overwrite" in line
    line = refused(["prepare", "--images", str(images), "--out", str(tmp_path / "o"),
                    "--shards", "2", "--shard-size", "10"], capsys)
    assert "not allowed with argument" in line
    line = refused(["prepare", "--images", str(images), "--out", str(tmp_path / "o"),
                    "--shard-size", "0"], capsys)
    assert "--shard-size" in line and "'0'" in line


def test_parser_default_is_the_library_default():
    from tfvqvae.data.image_shards import DEFAULT_SHARD_SIZE_MB
    from tfvqvae_cli.parser import PREPARE_SHARD_SIZE_MB

    assert PREPARE_SHARD_SIZE_MB == DEFAULT_SHARD_SIZE_MB
