"""CausalSelfAttention: the formula against NumPy, the cached step against call, causality."""

import keras
import numpy as np
import pytest

from tfvqvae import CausalSelfAttention


def randomised(layer, seed=0):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(scale=0.5, size=tuple(w.shape)).astype(np.float32))
    return layer


def np_attention(layer, x):
    """The module docstring's formula in float64 NumPy (independent of the layer's code)."""
    w = {v.path.split("/", 1)[1]: np.asarray(v, np.float64) for v in layer.weights}
    b, h, wd, c = x.shape
    n, heads, d = h * wd, layer.num_heads, layer.head_dim
    seq = x.reshape(b, n, c).astype(np.float64)
    pos = (w["row_embedding"][:, None, :] + w["column_embedding"][None, :, :]).reshape(n, c)
    a = seq + pos
    mean = a.mean(-1, keepdims=True)
    var = a.var(-1, keepdims=True)
    a = (a - mean) / np.sqrt(var + 1e-5) * w["norm/gamma"] + w["norm/beta"]

    def proj(name):
        return (a @ w[f"{name}/kernel"] + w[f"{name}/bias"]).reshape(b, n, heads, d)

    q, k, v = proj("query"), proj("key"), proj("value")
    out = np.zeros((b, n, heads, d))
    for s in range(n):  # query s sees keys 0..s
        scores = np.einsum("bhd,bthd->bht", q[:, s], k[:, : s + 1]) / np.sqrt(d)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        weights = e / e.sum(-1, keepdims=True)
        out[:, s] = np.einsum("bht,bthd->bhd", weights, v[:, : s + 1])
    y = seq + out.reshape(b, n, heads * d) @ w["output_projection/kernel"] \
        + w["output_projection/bias"]
    return y.reshape(b, h, wd, c)


@pytest.mark.parametrize("heads,key_dim", [(1, None), (2, None), (3, 5)])
def test_call_matches_numpy(heads, key_dim):
    layer = CausalSelfAttention(heads, key_dim=key_dim, map_shape=(3, 4))
    layer.build((None, 3, 4, 6))
    randomised(layer, seed=heads)
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), np_attention(layer, x), rtol=1e-4, atol=1e-4)
    assert layer.head_dim == (key_dim or 6 // heads)


def test_fresh_layer_is_the_identity():
    """The output projection starts at zero: attention is off until trained."""
    layer = CausalSelfAttention(2, map_shape=(2, 3))
    x = np.random.default_rng(0).normal(size=(2, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), x)


def test_causal_and_sees_every_earlier_position():
    """Output at raster t ignores inputs at s > t and moves with every input at s <= t."""
    layer = CausalSelfAttention(2, map_shape=(3, 3))
    layer.build((None, 3, 3, 4))
    randomised(layer, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    base = layer(x).numpy().reshape(9, 4)
    for m in range(9):
        y = x.reshape(9, 4).copy()
        y[m] += rng.normal(size=4)
        out = layer(y.reshape(1, 3, 3, 4)).numpy().reshape(9, 4)
        np.testing.assert_array_equal(out[:m], base[:m], err_msg=f"moved before {m}")
        assert np.all(np.any(out[m:] != base[m:], axis=-1)), m


def test_step_with_caches_equals_call():
    layer = CausalSelfAttention(2, map_shape=(2, 3))
    layer.build((None, 2, 3, 4))
    randomised(layer, seed=5)
    x = np.random.default_rng(2).normal(size=(3, 2, 3, 4)).astype(np.float32)
    full = layer(x).numpy().reshape(3, 6, 4)
    keys, values = layer.empty_cache(3)
    assert tuple(keys.shape) == (6, 3, 2, 2)
    for t in range(6):
        y, keys, values = layer.step(x.reshape(3, 6, 4)[:, t], t, keys, values)
        np.testing.assert_allclose(y.numpy(), full[:, t], rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads=0"):
        CausalSelfAttention(0, map_shape=(2, 2))
    with pytest.raises(ValueError, match="key_dim=-1"):
        CausalSelfAttention(2, key_dim=-1, map_shape=(2, 2))
    with pytest.raises(ValueError, match=r"map_shape=\(2,\)"):
        CausalSelfAttention(2, map_shape=(2,))
    with pytest.raises(ValueError, match="map_shape=None"):
        CausalSelfAttention(2)
    layer = CausalSelfAttention(2, map_shape=(2, 2))
    with pytest.raises(ValueError, match=r"made for maps of shape \(2, 2\).*\(None, 3, 2, 4\)"):
        layer.build((None, 3, 2, 4))


def test_config_round_trip():
    layer = CausalSelfAttention(3, key_dim=4, map_shape=(2, 5), name="att")
    again = CausalSelfAttention.from_config(layer.get_config())
    assert (again.num_heads, again.key_dim, again.map_shape, again.name) == (3, 4, (2, 5), "att")
    assert keras.saving.get_registered_object("tfvqvae>CausalSelfAttention") is CausalSelfAttention
