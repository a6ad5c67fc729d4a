"""Direct rate–distortion (VQ-VAE-2, Table 1): priors' bits per image / per code, the
decoder's MSE and PSNR, the naive rate, their composition and the Markdown table.

Every expected value comes from an independent reference: logits from one call of
the prior on the whole batch turned into −log2 p by a float64 NumPy log-softmax,
a NumPy MSE of the model's reconstructions, hand arithmetic, or the prior's own
Keras ``evaluate``.
"""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tests.models.prior_helpers import conditioning_inputs
from tests.models.prior_helpers import randomise
from tfvqvae.data import expected_metadata
from tfvqvae.data import from_numpy
from tfvqvae.data import load_codes
from tfvqvae.data import write_codes
from tfvqvae.evaluation.rate_distortion import decoder_distortion
from tfvqvae.evaluation.rate_distortion import naive_bits_per_image
from tfvqvae.evaluation.rate_distortion import prior_bits_per_image
from tfvqvae.evaluation.rate_distortion import prior_input_batches
from tfvqvae.evaluation.rate_distortion import prior_rate
from tfvqvae.evaluation.rate_distortion import rate_distortion
from tfvqvae.evaluation.rate_distortion import rate_distortion_markdown

K = 6
SHAPE = (4, 4)


def make_prior(cond=None, num_embeddings=K, shape=SHAPE, seed=0):
    """cond: None, "class" (3 classes) or "spatial" (conditioned on a (2, 2) map of 5 codes)."""
    options = dict(hidden_channels=8, num_blocks=2, kernel_size=3)
    if cond == "class":
        options["num_classes"] = 3
    if cond == "spatial":
        options.update(condition_num_embeddings=5, condition_shape=(2, 2), condition_channels=4)
    return randomise(tfvqvae.PixelCNNPrior(num_embeddings, shape, **options), seed)


def random_inputs(prior, n, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, prior.num_embeddings, (n, *prior.code_shape)).astype(np.int32)
    return {"codes": codes, **conditioning_inputs(prior, n, seed + 1)}


def numpy_bits(prior, inputs):
    """Σ_ij −log2 softmax(logits)[code], logits from one call on the whole batch, float64."""
    logits = prior(inputs).numpy().astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, inputs["codes"][..., None].astype(np.int64), -1)[..., 0]
    return -picked.sum(axis=tuple(range(1, picked.ndim))) / math.log(2.0)


def batched(inputs, batch_size):
    return tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)


# ------------------------------------------------------------ bits per image
@pytest.mark.parametrize("cond", [None, "class", "spatial"])
def test_bits_per_image_is_the_numpy_sum_of_minus_log2_p(cond):
    prior = make_prior(cond)
    inputs = random_inputs(prior, 10)
    bits = prior_bits_per_image(prior, batched(inputs, 4))  # batches of 4, 4, 2
    assert bits.dtype == np.float64 and bits.shape == (10,)
    np.testing.assert_allclose(bits, numpy_bits(prior, inputs), rtol=1e-5)


def test_uniform_logits_cost_exactly_log2_k_per_code():
    prior = make_prior("class")
    kernel, bias = prior.head_logits.get_weights()
    prior.head_logits.set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    inputs = random_inputs(prior, 5)
    bits = prior_bits_per_image(prior, [inputs])
    np.testing.assert_allclose(bits, np.full(5, 16 * math.log2(K)), rtol=1e-6)
    rate = prior_rate(prior, batched(inputs, 2))
    assert rate["examples"] == 5 and rate["positions"] == 16
    assert rate["bits_per_dim"] == pytest.approx(math.log2(K), rel=1e-6)
    assert rate["nats_per_dim"] == pytest.approx(math.log(K), rel=1e-6)
    assert rate["bits_per_image"] == pytest.approx(16 * math.log2(K), rel=1e-6)


def test_prior_rate_agrees_with_the_priors_own_metric():
    """bits_per_dim = mean bits per image / (h·w), what Keras' evaluate() logs."""
    prior = make_prior("spatial")
    inputs = random_inputs(prior, 9, seed=3)
    rate = prior_rate(prior, batched(inputs, 4))
    reference = numpy_bits(prior, inputs)
    assert rate["bits_per_image"] == pytest.approx(reference.mean(), rel=1e-5)
    assert rate["bits_per_dim"] == pytest.approx(reference.mean() / 16, rel=1e-5)
    assert rate["nats_per_dim"] == pytest.approx(reference.mean() / 16 * math.log(2), rel=1e-5)
    prior.compile()
    logged = prior.evaluate(batched(inputs, 4), verbose=0, return_dict=True)
    assert rate["bits_per_dim"] == pytest.approx(logged["bits_per_dim"], rel=1e-5)
    assert rate["nats_per_dim"] == pytest.approx(logged["nll"], rel=1e-5)


def test_a_depth_prior_costs_every_code_and_counts_codes_as_positions():
    """Codes (h, w, Q): the NumPy sum over h·w·Q codes; bits_per_dim per code, as the metric."""
    prior = make_prior(shape=(3, 4, 2))
    inputs = random_inputs(prior, 7, seed=4)
    reference = numpy_bits(prior, inputs)
    np.testing.assert_allclose(prior_bits_per_image(prior, batched(inputs, 3)), reference,
                               rtol=1e-5)
    rate = prior_rate(prior, batched(inputs, 3))
    assert rate["positions"] == 24
    assert rate["bits_per_dim"] == pytest.approx(reference.mean() / 24, rel=1e-5)
    prior.compile()
    logged = prior.evaluate(batched(inputs, 3), verbose=0, return_dict=True)
    assert rate["bits_per_dim"] == pytest.approx(logged["bits_per_dim"], rel=1e-5)
    # Uniform priors: h·w·Q·log2 K.
    assert naive_bits_per_image({"top": 8}, {"top": (3, 4, 2)}) == 72.0


def test_bits_per_image_accepts_tuples_bare_maps_and_max_examples():
    prior = make_prior()
    inputs = random_inputs(prior, 7, seed=5)
    reference = numpy_bits(prior, inputs)
    pairs = [({"codes": inputs["codes"][:4]}, None), ({"codes": inputs["codes"][4:]}, None)]
    np.testing.assert_allclose(prior_bits_per_image(prior, pairs), reference, rtol=1e-5)
    bare = [inputs["codes"][:3], inputs["codes"][3:3], inputs["codes"][3:]]  # an empty batch
    np.testing.assert_allclose(prior_bits_per_image(prior, bare), reference, rtol=1e-5)
    np.testing.assert_allclose(
        prior_bits_per_image(prior, batched(inputs, 3), max_examples=5), reference[:5],
        rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (lambda c: c + K, rf"codes must lie in \[0, {K}\)\. Received: values in \[{K}, "),
    (lambda c: c - 1, r"codes must lie in \[0, 6\)\. Received: values in \[-1, "),
])
def test_codes_out_of_range_are_refused(bad, message):
    prior = make_prior()
    codes = random_inputs(prior, 3)["codes"]
    codes[0, 0, 0] = 0
    codes[0, 0, 1] = K - 1
    with pytest.raises(ValueError, match=message):
        prior_bits_per_image(prior, [{"codes": bad(codes)}])


def test_bad_prior_batches_are_refused():
    prior = make_prior("class")
    inputs = random_inputs(prior, 3)
    with pytest.raises(ValueError, match="Received: 0 examples"):
        prior_bits_per_image(prior, [])
    with pytest.raises(ValueError, match="Received: 0 examples"):
        prior_bits_per_image(prior, batched(inputs, 2).take(0))
    with pytest.raises(ValueError, match="pass labels"):
        prior_bits_per_image(prior, [{"codes": inputs["codes"]}])
    with pytest.raises(ValueError, match=r"Received: keys \['codes', 'label'\]"):
        prior_bits_per_image(prior, [{"codes": inputs["codes"], "label": inputs["labels"]}])
    with pytest.raises(ValueError, match=r"must have shape \(batch, 4, 4\)"):
        prior_bits_per_image(prior, [{"codes": inputs["codes"][:, :2], "labels": inputs["labels"]}])
    with pytest.raises(ValueError, match="Received: max_examples=0"):
        prior_bits_per_image(prior, [inputs], max_examples=0)
    with pytest.raises(TypeError, match="must be integers"):
        prior_bits_per_image(prior, [{**inputs, "codes": inputs["codes"].astype(np.float32)}])


# ------------------------------------------------------- prior input batches
def records(n, seed=0):
    """Code-file records as load_codes yields them: top (2, 2) of 5 codes, bottom (4, 4)."""
    rng = np.random.default_rng(seed)
    return {
        "top": rng.integers(0, 5, (n, 2, 2)).astype(np.int32),
        "bottom": rng.integers(0, K, (n, 4, 4)).astype(np.int32),
        "label": rng.integers(0, 3, n).astype(np.int32),
    }


def test_prior_input_batches_build_what_train_prior_builds():
    data = records(7)
    dataset = tf.data.Dataset.from_tensor_slices(data)
    top = make_prior("class", num_embeddings=5, shape=(2, 2))
    bottom = make_prior("spatial")
    got = list(prior_input_batches(dataset, top, "top", ("top", "bottom"), 4).as_numpy_iterator())
    assert [sorted(b) for b in got] == [["codes", "labels"]] * 2
    np.testing.assert_array_equal(np.concatenate([b["codes"] for b in got]), data["top"])
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in got]), data["label"])
    got = list(prior_input_batches(dataset, bottom, "bottom", ["top", "bottom"], 5,
                                   max_examples=6).as_numpy_iterator())
    assert [sorted(b) for b in got] == [["codes", "condition"]] * 2
    np.testing.assert_array_equal(np.concatenate([b["codes"] for b in got]), data["bottom"][:6])
    np.testing.assert_array_equal(np.concatenate([b["condition"] for b in got]), data["top"][:6])
    with pytest.raises(ValueError, match="Received: level='middle'"):
        prior_input_batches(dataset, bottom, "middle", ("top", "bottom"))
    with pytest.raises(ValueError, match="is_conditioned=False for level 'bottom'"):
        prior_input_batches(dataset, top, "bottom", ("top", "bottom"))
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        prior_input_batches(dataset, top, "top", ("top", "bottom"), batch_size=0)


# ------------------------------------------------------------------- naive
def test_naive_bits_per_image_by_hand():
    assert naive_bits_per_image({"top": 512, "bottom": 512},
                                {"top": (4, 4), "bottom": [8, 8]}) == 720.0
    # K = 8 at 2x3 (6·3 = 18) plus K = 2 at 4x6 (24·1 = 24).
    assert naive_bits_per_image({"a": 8, "b": 2}, {"a": (2, 3), "b": (4, 6)}) == 42.0
    assert naive_bits_per_image({"top": 1}, {"top": (3, 3)}) == 0.0


@pytest.mark.parametrize("ks, shapes, message", [
    ({"top": 0}, {"top": (4, 4)}, r"Received: num_embeddings\['top'\]=0"),
    ({"top": 2.5}, {"top": (4, 4)}, r"Received: num_embeddings\['top'\]=2.5"),
    ({"top": 8}, {"top": (4, 0)}, r"Received: code_shapes\['top'\]=\(4, 0\)"),
    ({"top": 8}, {"top": (4,)}, r"Received: code_shapes\['top'\]=\(4,\)"),
    ({"top": 8}, {"top": (4, 4, 0)}, r"Received: code_shapes\['top'\]=\(4, 4, 0\)"),
    ({"top": 8}, {"bottom": (4, 4)}, r"Received: \['top'\] and \['bottom'\]"),
])
def test_naive_bits_per_image_refuses_bad_arguments(ks, shapes, message):
    with pytest.raises(ValueError, match=message):
        naive_bits_per_image(ks, shapes)


# ----------------------------------------------------------------- decoder
def tiny_vqvae2(seed=0):
    keras.utils.set_random_seed(seed)
    return tfvqvae.VQVAE2(
        image_channels=1, hidden_channels=16, residual_channels=8, num_residual_layers=1,
        top_quantizer=tfvqvae.VectorQuantizerEMA(5, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
        bottom_quantizer=tfvqvae.VectorQuantizerEMA(K, 4, decay=0.9, kmeans_init=False, restart_unused_after=None),
    )


@pytest.fixture(scope="module")
def vqvae2():
    return tiny_vqvae2()


def test_decoder_distortion_is_the_numpy_mse_of_the_code_path(vqvae2):
    images = np.random.default_rng(0).random((10, 16, 16, 1), np.float32)
    labels = np.arange(10) % 3
    reconstruction = vqvae2.decode_levels(vqvae2.encode_levels(images)).numpy()
    mse = np.mean((images.astype(np.float64) - reconstruction.astype(np.float64)) ** 2)
    data = from_numpy(images, labels=labels, num_classes=3)
    result = decoder_distortion(vqvae2, data.to_tf_dataset(4, with_labels=True))
    assert result["examples"] == 10
    assert result["mse"] == pytest.approx(mse, rel=1e-6)
    assert result["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    # model(x) runs the same path through straight-through latents: equal within rounding.
    assert np.mean((images - vqvae2(images).numpy()) ** 2) == pytest.approx(mse, rel=1e-5)
    first = decoder_distortion(vqvae2, [images[:4], images[4:]], max_examples=6)
    assert first["examples"] == 6
    assert first["mse"] == pytest.approx(
        np.mean((images[:6].astype(np.float64) - reconstruction[:6]) ** 2), rel=1e-6)


def test_decoder_distortion_refuses_bad_images(vqvae2):
    images = np.random.default_rng(0).random((2, 16, 16, 1), np.float32)
    with pytest.raises(ValueError, match="Received: 0 examples"):
        decoder_distortion(vqvae2, [])
    with pytest.raises(ValueError, match="Received: 0 examples"):
        decoder_distortion(vqvae2, [images[:0]])
    with pytest.raises(ValueError, match=r"Received: images with values in \[0, 255\]"):
        pixels = np.linspace(0, 255, 512, dtype=np.float32).reshape(images.shape)
        decoder_distortion(vqvae2, [pixels])
    with pytest.raises(TypeError, match="dtype=uint8"):
        decoder_distortion(vqvae2, [(images * 255).astype(np.uint8)])
    with pytest.raises(ValueError, match=r"Received: images with shape=\(16, 16, 1\)"):
        decoder_distortion(vqvae2, [images[0]])
    with pytest.raises(ValueError, match=r"Received: images with shape=\(2, 8, 8, 1\)"):
        decoder_distortion(vqvae2, [images, images[:, :8, :8]])


# ------------------------------------------------------------- composition
@pytest.fixture(scope="module")
def hierarchy(vqvae2, tmp_path_factory):
    """The tiny VQVAE2, its codes on disk (train 10, test 6 images) and a prior chain."""
    folder = tmp_path_factory.mktemp("codes")
    rng = np.random.default_rng(1)
    train = from_numpy(rng.random((10, 16, 16, 1), np.float32), labels=np.arange(10) % 3,
                       num_classes=3)
    test = from_numpy(rng.random((6, 16, 16, 1), np.float32), labels=np.arange(6) % 3,
                      num_classes=3)
    codes = {}
    for split, data in (("train", train), ("test", test)):
        write_codes(folder / f"codes-{split}.tfrecord", vqvae2, data, batch_size=4)
        codes[split] = load_codes(folder / f"codes-{split}.tfrecord",
                                  expect=expected_metadata(vqvae2))
    priors = {
        "top": make_prior("class", num_embeddings=5, shape=(2, 2), seed=1),
        "bottom": make_prior("spatial", seed=2),
    }
    return dict(model=vqvae2, priors=priors, codes=codes, images={"train": train, "test": test})


def test_rate_distortion_totals_are_the_numpy_sum_over_the_priors(hierarchy):
    model, priors, codes, images = (hierarchy[k] for k in ("model", "priors", "codes", "images"))
    result = rate_distortion(model, priors, codes["train"], codes["test"][0],
                             images["train"], images["test"], batch_size=4)
    json.dumps(result, allow_nan=False)  # JSON-ready
    assert result["levels"] == ["top", "bottom"]
    assert result["positions"] == 4 + 16
    assert result["naive_bits_per_image"] == pytest.approx(4 * math.log2(5) + 16 * math.log2(K))
    for split, name in (("train", "train"), ("validation", "test")):
        data = images[name].as_float()
        maps = {level: v.numpy() for level, v in model.encode_levels(data).items()}
        labels = np.asarray(images[name].labels, np.int32)
        top = numpy_bits(priors["top"], {"codes": maps["top"], "labels": labels})
        bottom = numpy_bits(priors["bottom"], {"codes": maps["bottom"], "condition": maps["top"]})
        n = len(data)
        for level, bits in (("top", top), ("bottom", bottom)):
            rate = result["priors"][level][split]
            assert rate["examples"] == n
            assert rate["bits_per_image"] == pytest.approx(bits.mean(), rel=1e-5)
            assert rate["bits_per_dim"] == pytest.approx(
                bits.mean() / priors[level].code_shape[0] / priors[level].code_shape[1], rel=1e-5)
        total = np.sum(top + bottom) / n
        assert result["total_bits_per_image"][split] == pytest.approx(total, rel=1e-5)
        assert result["total_bits_per_dim"][split] == pytest.approx(total / 20, rel=1e-5)
        reconstruction = model.decode_levels(maps).numpy()
        mse = np.mean((data.astype(np.float64) - reconstruction) ** 2)
        assert result["decoder"][split]["mse"] == pytest.approx(mse, rel=1e-6)
        assert result["decoder"][split]["examples"] == n
    assert result["priors"]["top"]["code_shape"] == [2, 2]
    assert result["priors"]["bottom"]["num_embeddings"] == K

    table = rate_distortion_markdown(result)
    lines = table.strip().split("\n")
    assert len(lines) == 2 + 5  # header, rule; two priors, decoder, total, naive
    assert lines[2].startswith("| Top prior (2x2, K=5) | ")
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    bottom = result["priors"]["bottom"]
    assert cells[1:5] == [f"{bottom['train']['bits_per_dim']:.4f}",
                          f"{bottom['validation']['bits_per_dim']:.4f}",
                          f"{bottom['train']['bits_per_image']:.1f}",
                          f"{bottom['validation']['bits_per_image']:.1f}"]
    assert lines[4].startswith("| VQ decoder | – | – | – | – | ")
    assert f"{result['naive_bits_per_image']:.1f}" in lines[6]


def test_rate_distortion_subset_and_missing_splits(hierarchy):
    model, priors, codes, images = (hierarchy[k] for k in ("model", "priors", "codes", "images"))
    result = rate_distortion(model, priors, validation_codes=codes["test"],
                             validation_images=images["test"].to_tf_dataset(5),
                             batch_size=4, max_examples=5)
    assert result["decoder"]["train"] is None and result["total_bits_per_image"]["train"] is None
    assert result["priors"]["top"]["train"] is None
    assert result["priors"]["top"]["validation"]["examples"] == 5
    assert result["decoder"]["validation"]["examples"] == 5
    row = rate_distortion_markdown(result).split("\n")[2]
    assert row.split("|")[2].strip() == "–"  # no train NLL


def test_rate_distortion_refuses_a_broken_chain(hierarchy):
    model, priors, codes = hierarchy["model"], hierarchy["priors"], hierarchy["codes"]
    with pytest.raises(ValueError, match=r"Received: \['top'\]"):
        rate_distortion(model, {"top": priors["top"]}, codes["train"])
    with pytest.raises(ValueError, match="Received: priors\\['bottom'\\].num_embeddings=7"):
        rate_distortion(model, {**priors, "bottom": make_prior("spatial", num_embeddings=7)})
    with pytest.raises(ValueError, match=r"Received: \(None, None\)"):
        rate_distortion(model, {**priors, "bottom": make_prior(None)})
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        rate_distortion(model, priors, codes["train"], batch_size=0)
    with pytest.raises(TypeError, match="Received: ndarray"):
        rate_distortion(model, priors, np.zeros((3, 2, 2), np.int32))


def test_markdown_of_a_hand_made_result():
    result = {
        "levels": ["top", "bottom"],
        "priors": {
            "top": {"num_embeddings": 512, "code_shape": [32, 32],
                    "train": {"bits_per_dim": 3.40, "bits_per_image": 3481.6},
                    "validation": {"bits_per_dim": 3.41, "bits_per_image": 3491.84}},
            "bottom": {"num_embeddings": 512, "code_shape": [64, 64],
                       "train": {"bits_per_dim": 3.45, "bits_per_image": 14131.2},
                       "validation": {"bits_per_dim": 3.45, "bits_per_image": 14131.2}},
        },
        "decoder": {"train": {"mse": 0.0047, "psnr": 23.279}, "validation": None},
        "total_bits_per_image": {"train": 17612.8, "validation": 17623.04},
        "total_bits_per_dim": {"train": 3.44, "validation": 3.442},
        "naive_bits_per_image": 46080.0,
        "positions": 5120,
    }
    assert rate_distortion_markdown(result).split("\n")[2:7] == [
        "| Top prior (32x32, K=512) | 3.4000 | 3.4100 | 3481.6 | 3491.8 | – | – | – | – |",
        "| Bottom prior (64x64, K=512) | 3.4500 | 3.4500 | 14131.2 | 14131.2 "
        "| – | – | – | – |",
        "| VQ decoder | – | – | – | – | 0.0047 | – | 23.28 | – |",
        "| Total (Σ priors) | 3.4400 | 3.4420 | 17612.8 | 17623.0 | – | – | – | – |",
        "| Naive (Σ h·w·log2 K) | 9.0000 | 9.0000 | 46080.0 | 46080.0 | – | – | – | – |",
    ]
    with pytest.raises(ValueError, match="missing"):
        rate_distortion_markdown({"levels": []})
    # The optional keys left out: rows say less.
    for key in ("total_bits_per_dim", "positions"):
        del result[key]
    for entry in result["priors"].values():
        del entry["code_shape"], entry["num_embeddings"]
    lines = rate_distortion_markdown(result).split("\n")
    assert lines[2] == "| Top prior | 3.4000 | 3.4100 | 3481.6 | 3491.8 | – | – | – | – |"
    assert lines[5] == "| Total (Σ priors) | – | – | 17612.8 | 17623.0 | – | – | – | – |"
    assert lines[6] == "| Naive (Σ h·w·log2 K) | – | – | 46080.0 | 46080.0 | – | – | – | – |"
