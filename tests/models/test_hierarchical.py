"""HierarchicalVQVAE: level shapes for 1-4 levels, conditioning on the levels above, fit,
save/load, VQVAE2 and VQVAE as its two- and one-level cases, dtype by argument."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvqvae
from tfvqvae.models import HierarchicalVQVAE
from tfvqvae.models import level_names

SIZES = dict(image_channels=1, hidden_channels=8, residual_channels=4, num_residual_layers=1)


def quantizers(num_levels, ema=True):
    """Level k (top = 0) gets K = 8 + 2k codes of size 3 + k: a mix-up shows as an error."""
    cls = tfvqvae.VectorQuantizerEMA if ema else tfvqvae.VectorQuantizer
    extra = dict(decay=0.9) if ema else {}
    return [cls(8 + 2 * k, 3 + k, seed=k, **extra) for k in range(num_levels)]


def tiny(num_levels, **kwargs):
    options = dict(SIZES, quantizers=quantizers(num_levels))
    options.update(kwargs)
    return HierarchicalVQVAE(num_levels=num_levels, **options)


def images(n, h, w, c=1, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_level_names():
    assert level_names(1) == ("top",)
    assert level_names(2) == ("top", "bottom")
    assert level_names(3) == ("top", "middle", "bottom")
    assert level_names(4) == ("top", "level_3", "level_2", "bottom")
    assert level_names(5) == ("top", "level_4", "level_3", "level_2", "bottom")
    with pytest.raises(ValueError, match="num_levels=0"):
        level_names(0)


@pytest.mark.parametrize("num_levels,height,width", [(1, 32, 32), (2, 32, 64), (3, 32, 32),
                                                      (4, 64, 64)])
def test_every_level_has_its_shape_and_round_trips(num_levels, height, width):
    model = tiny(num_levels)
    names = level_names(num_levels)
    x = images(2, height, width)
    codes = model.encode(x)
    assert isinstance(codes, tuple) and len(codes) == num_levels
    assert model.levels == names
    assert model.size_multiple == 2 ** (num_levels + 1)
    expected_shapes = {}
    for k, (level, c) in enumerate(zip(names, codes)):
        factor = 2 ** (num_levels + 1 - k)  # level n = L - k at image / 2**(n+1)
        expected_shapes[level] = (height // factor, width // factor)
        assert c.dtype == tf.int32
        assert tuple(c.shape) == (2, height // factor, width // factor)
        assert 0 <= int(tf.reduce_min(c)) and int(tf.reduce_max(c)) < 8 + 2 * k
    assert model.code_shapes((height, width)) == expected_shapes
    assert model.level_num_embeddings == {level: 8 + 2 * k for k, level in enumerate(names)}
    decoded = model.decode(*codes)
    reconstruction = model(x)
    assert decoded.dtype == tf.float32 and decoded.shape == x.shape
    # The reconstruction is the decoding of the code maps (no hidden state).
    np.testing.assert_allclose(numpy(reconstruction), numpy(decoded), atol=1e-5)
    by_level = model.encode_levels(x)
    assert tuple(by_level) == names
    for level, c in zip(names, codes):
        np.testing.assert_array_equal(by_level[level].numpy(), c.numpy())
    np.testing.assert_array_equal(numpy(model.decode_levels(by_level)), numpy(decoded))
    # The decoder reads every level.
    for k in range(num_levels):
        other = list(codes)
        other[k] = (other[k] + 1) % (8 + 2 * k)
        assert not np.allclose(numpy(model.decode(*other)), numpy(decoded))
    outputs = model.quantize_with_losses(x)
    for output, c in zip(outputs, codes):
        np.testing.assert_array_equal(output.indices.numpy(), c.numpy())


def test_each_level_is_conditioned_on_every_level_above():
    """Changing a quantised level changes the encoder input (h) of every level below it only."""
    model = tiny(3)
    x = images(2, 32, 32)
    features = model._encode_features(x, training=False)
    codes = model.encode(x)
    latents = [model._level_quantizers()[level].lookup(c) for level, c in zip(model.levels, codes)]

    def h(k, latents):
        return numpy(model._pre_quantization(k, features, latents, False))

    base = [h(k, latents) for k in range(3)]
    for changed in range(2):  # top, middle
        other = list(latents)
        other[changed] = other[changed] + 1.0
        for k in range(3):
            moved = not np.allclose(h(k, other), base[k])
            assert moved == (k > changed), (changed, k)
    # And the codes themselves: a level's codes come from h given the levels above.
    middle = model.middle_quantizer.indices(base[1])
    np.testing.assert_array_equal(middle.numpy(), codes[1].numpy())


@pytest.mark.slow  # about 12 s; VQVAE2 (the two-level case) fits in test_vqvae2.py
def test_fit_reports_every_level_and_stays_finite():
    model = tiny(3, quantizers=[tfvqvae.VectorQuantizerEMA(8, 3, decay=0.9, kmeans_init=False, restart_unused_after=None),
                                tfvqvae.VectorQuantizer(10, 4, kmeans_init=False, restart_unused_after=None),
                                tfvqvae.VectorQuantizerEMA(12, 5, decay=0.9, kmeans_init=False, restart_unused_after=None)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(images(4, 32, 32), batch_size=2, epochs=1, verbose=0).history
    expected = {"loss", "mse", "nonfinite"}
    for level in ("top", "middle", "bottom"):
        expected |= {f"{level}_commitment_loss", f"{level}_perplexity", f"{level}_usage",
                     f"{level}_dead_codes"}
    expected.add("middle_codebook_loss")  # the only gradient quantiser
    assert set(history) == expected
    assert all(np.isfinite(values[0]) for values in history.values())
    assert int(numpy(model.optimizer.iterations)) == 2
    assert any(not np.array_equal(b, numpy(w)) for b, w in zip(before, model.trainable_weights))
    for w in model.weights:
        assert np.all(np.isfinite(numpy(w))), w.path
    logs = model.evaluate(images(2, 32, 32), batch_size=2, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_vqvae2_metric_names_are_kept():
    model = tiny(2)
    model.compile(optimizer="adam")
    names = {m.name for m in model.metrics}
    assert {"top_perplexity", "bottom_perplexity", "top_codebook_usage",
            "bottom_codebook_usage"} <= names


@pytest.mark.slow  # four models saved and loaded with their optimizer state (about 25 s)
def test_config_and_keras_file_round_trip(tmp_path):
    model = tiny(3, quantizers=[tfvqvae.VectorQuantizerEMA(8, 3, decay=0.9, kmeans_init=False, restart_unused_after=None),
                                tfvqvae.VectorQuantizer(10, 4, kmeans_init=False, restart_unused_after=None),
                                tfvqvae.VectorQuantizerEMA(12, 5, decay=0.9, kmeans_init=False, restart_unused_after=None)],
                 data_variance=0.5, name="three")
    config = model.get_config()
    assert config["num_levels"] == 3 and len(config["quantizers"]) == 3
    rebuilt = HierarchicalVQVAE.from_config(config)
    assert rebuilt.get_config() == config
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images(2, 32, 32), batch_size=2, epochs=1, verbose=0)
    x = images(2, 32, 32, seed=1)
    model.save(tmp_path / "three.keras")
    loaded = keras.saving.load_model(tmp_path / "three.keras")
    assert type(loaded) is HierarchicalVQVAE and loaded.levels == model.levels
    for a, b in zip(model.encode(x), loaded.encode(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def test_vqvae2_is_the_two_level_case(tmp_path):
    """Same networks, same weights in the same order for the same seed, same file layout."""
    keras.utils.set_random_seed(0)
    vqvae2 = tfvqvae.VQVAE2(**SIZES, top_quantizer=tfvqvae.VectorQuantizerEMA(8, 3, seed=0, kmeans_init=False, restart_unused_after=None),
                            bottom_quantizer=tfvqvae.VectorQuantizer(10, 4, seed=1, kmeans_init=False, restart_unused_after=None))
    keras.utils.set_random_seed(0)
    general = HierarchicalVQVAE(num_levels=2, **SIZES, quantizers=[
        tfvqvae.VectorQuantizerEMA(8, 3, seed=0, kmeans_init=False, restart_unused_after=None), tfvqvae.VectorQuantizer(10, 4, seed=1, kmeans_init=False, restart_unused_after=None)])
    assert isinstance(vqvae2, HierarchicalVQVAE) and vqvae2.num_levels == 2
    assert vqvae2.levels == general.levels == ("top", "bottom")
    for name in ("top_quantizer", "bottom_quantizer", "bottom_encoder", "top_encoder",
                 "top_decoder", "bottom_pre_quantization", "decoder"):
        a, b = getattr(vqvae2, name), getattr(general, name)
        assert type(a) is type(b)
        assert [type(layer) for layer in a._flatten_layers()] == [
            type(layer) for layer in b._flatten_layers()], name
    assert len(vqvae2.weights) == len(general.weights)
    for a, b in zip(vqvae2.weights, general.weights):
        assert a.shape == b.shape and a.trainable == b.trainable
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    x = images(2, 16, 16)
    np.testing.assert_array_equal(numpy(vqvae2(x)), numpy(general(x)))
    # One's weights file loads into the other.
    for w in general.weights:
        w.assign(numpy(w) + 0.01)
    general.save_weights(tmp_path / "general.weights.h5")
    vqvae2.load_weights(tmp_path / "general.weights.h5")
    np.testing.assert_array_equal(numpy(vqvae2(x)), numpy(general(x)))
    # VQVAE2 keeps its own config keys (files of earlier releases load).
    config = vqvae2.get_config()
    assert {"top_quantizer", "bottom_quantizer"} <= set(config) and "num_levels" not in config
    assert tfvqvae.VQVAE2.from_config(config).get_config() == config


def test_one_level_is_a_vqvae_with_two_downsamples():
    keras.utils.set_random_seed(0)
    vqvae = tfvqvae.VQVAE(**SIZES, num_downsamples=2,
                          quantizer=tfvqvae.VectorQuantizerEMA(8, 3, seed=0, kmeans_init=False, restart_unused_after=None))
    keras.utils.set_random_seed(0)
    general = tiny(1, quantizers=[tfvqvae.VectorQuantizerEMA(8, 3, seed=0, kmeans_init=False, restart_unused_after=None)])
    assert general.levels == vqvae.levels == ("top",)
    assert [w.shape for w in general.weights] == [w.shape for w in vqvae.weights]
    for a, b in zip(vqvae.weights, general.weights):
        np.testing.assert_array_equal(numpy(a), numpy(b))
    x = images(2, 16, 16)
    np.testing.assert_array_equal(numpy(vqvae(x)), numpy(general(x)))
    np.testing.assert_array_equal(vqvae.encode(x).numpy(), general.encode(x)[0].numpy())
    assert vqvae.code_shapes((16, 16)) == general.code_shapes((16, 16))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_levels=0"):
        HierarchicalVQVAE(num_levels=0)
    with pytest.raises(ValueError, match="list of num_levels=3 quantizers"):
        HierarchicalVQVAE(num_levels=3, quantizers=quantizers(2))
    with pytest.raises(TypeError, match=re.escape("quantizers[1]='ema'")):
        HierarchicalVQVAE(num_levels=2, quantizers=[None, "ema"])
    shared = tfvqvae.VectorQuantizerEMA(8, 4, kmeans_init=False, restart_unused_after=None)
    with pytest.raises(ValueError, match=re.escape("`quantizers[0]` and `quantizers[2]`")):
        HierarchicalVQVAE(num_levels=3, quantizers=[shared, None, shared])
    model = tiny(3)
    with pytest.raises(ValueError, match=r"divisible by 16.*\(1, 24, 32, 1\)"):
        model.encode(images(1, 24, 32))
    codes = model.encode(images(1, 32, 32))
    with pytest.raises(TypeError, match=r"3 code maps \(top, middle, bottom\).*Received: 2"):
        model.decode(*codes[:2])
    with pytest.raises(ValueError, match=r"middle code map must have the top map's.*"
                                         r"middle_codes with shape=\(1, 2, 2\)"):
        model.decode(codes[0], codes[0], codes[2])
    with pytest.raises(TypeError, match="bottom_codes with dtype=float32"):
        model.decode(codes[0], codes[1], tf.cast(codes[2], tf.float32))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.decode(codes[0], codes[1] + 10, codes[2])


def test_default_quantizers():
    model = HierarchicalVQVAE(num_levels=3, **SIZES)
    seen = set()
    for quantizer in model._level_quantizers().values():
        assert type(quantizer) is tfvqvae.VectorQuantizerEMA
        assert (quantizer.num_embeddings, quantizer.embedding_dim) == (512, 64)
        seen.add(id(quantizer))
    assert len(seen) == 3


def _non_input_layers(network):
    return [layer for layer in network._flatten_layers(include_self=False)
            if not isinstance(layer, keras.layers.InputLayer)]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_dtype_policy_by_argument(tmp_path, policy):
    """No global policy: the argument reaches every layer and survives save/load."""
    low = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[policy]
    model = HierarchicalVQVAE(num_levels=3, **SIZES, dtype=policy)  # default quantizers
    assert keras.config.dtype_policy().name == "float32"
    vqvae = tfvqvae.VQVAE(**SIZES, dtype=policy)
    prior = tfvqvae.PixelCNNPrior(8, (4, 4), hidden_channels=8, num_blocks=2, kernel_size=3,
                                  condition_num_embeddings=8, condition_shape=(2, 2),
                                  dtype=policy)
    for owner in (model, vqvae, prior):
        assert owner.dtype_policy.name == policy
        layers = _non_input_layers(owner)
        assert layers
        for layer in layers:
            assert layer.dtype_policy.name == policy, (owner.name, layer.path)
    for network in (model.top_encoder, model.middle_decoder, model.decoder, vqvae.encoder):
        assert network.compute_dtype == low
    x = images(2, 32, 32)
    reconstruction = model(x)
    assert reconstruction.dtype == tf.float32
    assert np.all(np.isfinite(numpy(reconstruction)))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert keras.config.dtype_policy().name == "float32"  # loading set nothing globally
    assert all(layer.dtype_policy.name == policy for layer in _non_input_layers(loaded))
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(reconstruction))


def test_decode_top_levels_zeroes_the_levels_below():
    """Figure 3 of VQ-VAE-2: top only, top + middle, all. The reference is the
    decoder called by hand on the looked-up maps with the lower ones zeroed."""
    model = tiny(3)
    codes = model.encode(images(2, 32, 32))
    np.testing.assert_array_equal(numpy(model.decode_top_levels(codes, 3)),
                                  numpy(model.decode(*codes)))
    maps = [numpy(getattr(model, f"{level}_quantizer").lookup(c))
            for level, c in zip(model.levels, codes)]
    outputs = []
    for keep in (1, 2):
        inputs = [m if k < keep else np.zeros_like(m) for k, m in enumerate(maps)]
        expected = numpy(model.decoder(inputs, training=False))
        got = numpy(model.decode_top_levels(codes, keep))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        outputs.append(got)
    assert np.abs(outputs[0] - outputs[1]).max() > 0  # the middle level adds something
    for bad in (0, 4):
        with pytest.raises(ValueError, match=f"num_levels={bad}"):
            model.decode_top_levels(codes, bad)
    with pytest.raises(TypeError, match="3 code maps"):
        model.decode_top_levels(codes[:2], 1)
