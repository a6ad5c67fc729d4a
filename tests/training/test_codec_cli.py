"""``tfvqvae compress`` / ``decompress``: files in, files out, errors on one line."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.codec.codec_helpers import mnist
from tests.codec.codec_helpers import tiny_codec
from tfvqvae.atomic import TEMP_MARKER
from tfvqvae.run_folder import config_file
from tfvqvae.run_folder import model_file
from tfvqvae.run_folder import prior_dir
from tfvqvae_cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    codec = tiny_codec(0)
    codec.model.save(model_file(folder))
    for level, prior in codec.priors.items():
        prior_dir(folder, level).mkdir()
        prior.save(model_file(prior_dir(folder, level)))
    config_file(folder).write_text(json.dumps({"dataset": "mnist", "image_size": 32}))
    return folder, codec


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("images")
    images, labels = mnist(shared_data, 3)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"digit{index}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
        paths.append(path)
    rgb = folder / "rgb.png"  # converted to the model's one channel
    rgb.write_bytes(tf.io.encode_png(np.repeat(images[0], 3, axis=-1)).numpy())
    return paths, rgb, images, labels


def test_compress_then_decompress(run, image_files, tmp_path, capsys):
    folder, codec = run
    paths, rgb, images, labels = image_files
    out = tmp_path / "coded"
    args = ["compress", "--run", str(folder), *map(str, paths), str(rgb), "--out", str(out),
            "--labels", *map(str, labels), str(labels[0])]
    assert main(args) == 0
    assert "wrote 4 file(s)" in capsys.readouterr().out
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["digit0.tfvq", "digit1.tfvq", "digit2.tfvq", "rgb.tfvq"]
    expected = codec.compress(images, labels)
    assert [p.read_bytes() for p in written[:3]] == expected
    assert written[3].read_bytes() == expected[0]  # grey RGB -> the same one-channel image

    pngs = tmp_path / "png"
    assert main(["decompress", *map(str, written), "--run", str(folder), "--out", str(pngs)]) == 0
    decoded = [tf.io.decode_png(p.read_bytes()).numpy() for p in sorted(pngs.iterdir())]
    reference = np.round(codec.decompress(expected) * 255).astype(np.uint8)
    for found, wanted in zip(decoded, reference):
        np.testing.assert_array_equal(found, wanted)
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARKER in p.name]


def test_errors_name_the_file_and_write_nothing(run, image_files, tmp_path, capsys):
    folder, _ = run
    paths, _, _, labels = image_files
    out = tmp_path / "coded"
    base = ["compress", "--run", str(folder), str(paths[0]), "--out", str(out)]
    assert main(base) == 2
    assert "class-conditional (10 classes): pass --labels" in capsys.readouterr().err
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    assert main(base[:-2] + [str(not_image), "--out", str(out), "--labels", "1"]) == 2
    assert "notes.png is not an image" in capsys.readouterr().err
    assert not out.exists()

    assert main(base + ["--labels", "1"]) == 0
    assert main(base + ["--labels", "1"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    coded = out / "digit0.tfvq"
    corrupted = tmp_path / "corrupted.tfvq"
    data = bytearray(coded.read_bytes())
    data[8] ^= 0x80  # the payload's first bit
    corrupted.write_bytes(bytes(data))
    pngs = tmp_path / "png"
    assert main(["decompress", str(coded), str(corrupted), "--run", str(folder),
                 "--out", str(pngs)]) == 2
    err = capsys.readouterr().err
    assert str(corrupted) in err and "does not decode" in err
    assert not pngs.exists() or not list(pngs.iterdir())
