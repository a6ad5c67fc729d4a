"""The SavedModel loads the way TF Serving loads it: without tfvqvae, and via saved_model_cli."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfvqvae.export import KerasRunner
from tfvqvae.training.sample import load_priors
from tfvqvae.training.sample import sample_codes

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["tfvqvae"] = None  # any import of tfvqvae now fails
    import numpy as np
    import tensorflow as tf

    export_dir, images_path, out_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    sig = loaded.signatures
    images = tf.constant(np.load(images_path))
    codes = sig["encode"](images=images)
    decoded = sig["decode"](**codes)
    served = sig["serving_default"](images=images)
    sampled = sig["sample"](seed=tf.constant(11, tf.int64), temperature=tf.constant(0.8),
                            labels=tf.constant([3, 1, 4, 1, 5], tf.int32))
    np.savez(out_path, top=codes["top_codes"], bottom=codes["bottom_codes"],
             decoded=decoded["images"], served=served["reconstructions"],
             sample_top=sampled["top_codes"], sample_bottom=sampled["bottom_codes"],
             sample_images=sampled["images"],
             modules=sorted(m for m, v in sys.modules.items()
                            if (m == "tfvqvae" or m.startswith("tfvqvae.")) and v))
    """
)


def test_savedmodel_runs_in_a_fresh_process_without_tfvqvae(runs, vqvae2_run, tmp_path):
    run, result, images = runs["vqvae2"]
    np.save(tmp_path / "images.npy", images[:16])
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    done = subprocess.run(
        [sys.executable, str(script), str(result.artifacts["savedmodel"]),
         str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert list(out["modules"]) == []

    keras_runner = KerasRunner(run.model)
    codes = keras_runner.encode(images[:16])
    np.testing.assert_array_equal(out["top"], codes["top"])
    np.testing.assert_array_equal(out["bottom"], codes["bottom"])
    reconstructions = keras_runner.decode(codes)
    np.testing.assert_allclose(out["decoded"], reconstructions, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["served"], reconstructions, rtol=0, atol=1e-5)

    priors = load_priors(vqvae2_run, run.model)
    sampled = sample_codes(priors, 5, np.array([3, 1, 4, 1, 5]), temperature=0.8, seed=11)
    np.testing.assert_array_equal(out["sample_top"], sampled["top"].numpy())
    np.testing.assert_array_equal(out["sample_bottom"], sampled["bottom"].numpy())
    np.testing.assert_allclose(out["sample_images"], run.model.decode_levels(sampled).numpy(),
                               rtol=0, atol=1e-5)


def _saved_model_cli(*args):
    done = subprocess.run(["saved_model_cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # saved_model_cli in a fresh process (about 30 s)
def test_saved_model_cli_show_and_run(runs, vqvae_run, tmp_path):
    run, result, images = runs["vqvae"]
    export_dir = str(result.artifacts["savedmodel"])
    shown = _saved_model_cli("show", "--dir", export_dir, "--all")
    for name in ("encode", "decode", "reconstruct", "serving_default", "sample"):
        assert f"signature_def['{name}']" in shown
    indent = "\n        "
    assert f"inputs['images'] tensor_info:{indent}dtype: DT_FLOAT{indent}shape: (-1, 28, 28, 1)" \
        in shown
    assert f"outputs['top_codes'] tensor_info:{indent}dtype: DT_INT32{indent}shape: (-1, 7, 7)" \
        in shown

    np.save(tmp_path / "images.npy", images[:8])
    _saved_model_cli("run", "--dir", export_dir, "--tag_set", "serve", "--signature_def",
                     "encode", "--inputs", f"images={tmp_path / 'images.npy'}",
                     "--outdir", str(tmp_path / "encoded"))
    codes = np.load(tmp_path / "encoded" / "top_codes.npy")
    np.testing.assert_array_equal(codes, KerasRunner(run.model).encode(images[:8])["top"])

    # Scalars through --input_exprs: the unconditional prior takes num_samples.
    _saved_model_cli("run", "--dir", export_dir, "--tag_set", "serve", "--signature_def",
                     "sample", "--input_exprs", "seed=5;temperature=1.0;num_samples=3",
                     "--outdir", str(tmp_path / "sampled"))
    priors = load_priors(vqvae_run, run.model)
    expected = sample_codes(priors, 3, temperature=1.0, seed=5)["top"].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "sampled" / "top_codes.npy"), expected)
    images_out = np.load(tmp_path / "sampled" / "images.npy")
    assert images_out.shape == (3, 28, 28, 1) and images_out.dtype == np.float32


@pytest.mark.slow  # saved_model_cli in a fresh process (about 8 s)
def test_saved_model_cli_refuses_a_wrong_shape(runs, tmp_path):
    _, result, _ = runs["vqvae"]
    np.save(tmp_path / "bad.npy", np.zeros((2, 28, 28), np.float32))
    done = subprocess.run(
        ["saved_model_cli", "run", "--dir", str(result.artifacts["savedmodel"]), "--tag_set",
         "serve", "--signature_def", "encode", "--inputs", f"images={tmp_path / 'bad.npy'}"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode != 0
    assert "(2, 28, 28)" in done.stderr and "(None, 28, 28, 1)" in done.stderr
