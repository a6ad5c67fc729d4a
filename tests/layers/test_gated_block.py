"""GatedBlock, gate and shift_down against a NumPy re-implementation of the formulas.

The reference follows the module docstring of ``gated_block.py`` (van den Oord
et al. 2016) with hand-written masks, using the block's own weights (all of
them randomised, biases included, so a misplaced term shows up).
"""

import keras
import numpy as np
import pytest

from tfvqvae.layers.gated_block import GatedBlock
from tfvqvae.layers.gated_block import gate
from tfvqvae.layers.gated_block import shift_down


def hand_mask(k, kind):
    """Masks by their definition: c = k // 2, row c is the current row."""
    c = k // 2
    m = np.zeros((k, k))
    if kind == "vertical":
        m[: c + 1, :] = 1
    elif kind == "horizontal_A":
        m[c, :c] = 1
    elif kind == "horizontal_B":
        m[c, : c + 1] = 1
    else:
        raise AssertionError(kind)
    return m


def np_conv_same(x, kernel, bias):
    """'same' cross-correlation, float64, NHWC / HWIO."""
    k = kernel.shape[0]
    c = k // 2
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (c, c), (c, c), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = np.einsum("bhwc,hwco->bo", padded[:, i : i + k, j : j + k], kernel)
    return out + bias


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gate(x):
    p = x.shape[-1] // 2
    return np.tanh(x[..., :p]) * np_sigmoid(x[..., p:])


def np_shift_down(x):
    out = np.zeros_like(x)
    out[:, 1:] = x[:, :-1]
    return out


def w64(variable):
    return np.asarray(variable.numpy(), np.float64)


def np_dense(x, dense):
    out = x @ w64(dense.kernel)
    return out + w64(dense.bias) if dense.bias is not None else out


def np_condition_biases(block, labels=None, condition=None):
    c_v = c_h = 0.0
    if block.num_classes is not None:
        c_v = c_v + w64(block.class_v.embeddings)[labels][:, None, None, :]
        c_h = c_h + w64(block.class_h.embeddings)[labels][:, None, None, :]
    if block.condition_channels is not None:
        c_v = c_v + np.asarray(condition, np.float64) @ w64(block.condition_v.kernel)
        c_h = c_h + np.asarray(condition, np.float64) @ w64(block.condition_h.kernel)
    return c_v, c_h


def np_block(block, v_in, h_in, labels=None, condition=None):
    """(v_out, h_out, skip, v) of the docstring formulas; v is the pre-gate vertical conv."""
    k = block.kernel_size
    v_in = np.asarray(v_in, np.float64)
    h_in = np.asarray(h_in, np.float64)
    v = np_conv_same(
        v_in, w64(block.v_conv.kernel) * hand_mask(k, "vertical")[:, :, None, None],
        w64(block.v_conv.bias),
    )
    h_mask = hand_mask(k, "horizontal_A" if block.first else "horizontal_B")
    h = np_conv_same(
        h_in, w64(block.h_conv.kernel) * h_mask[:, :, None, None], w64(block.h_conv.bias)
    ) + np_dense(np_shift_down(v), block.v_to_h)
    c_v, c_h = np_condition_biases(block, labels, condition)
    v_out = np_gate(v + c_v)
    g = np_gate(h + c_h)
    skip = np_dense(g, block.h_skip)
    h_out = np_dense(g, block.h_res) + (0.0 if block.first else h_in)
    return v_out, h_out, skip, v


def random_block(k, first, num_classes=None, condition_channels=None, cin=4, p=4, seed=0):
    block = GatedBlock(p, k, first=first, num_classes=num_classes,
                       condition_channels=condition_channels)
    block.build((None, None, None, cin))
    rng = np.random.default_rng(seed)
    for w in block.weights:
        scale = 1.0 if len(w.shape) < 2 else 1.0 / np.sqrt(np.prod(w.shape[:-1]))
        w.assign(rng.normal(scale=scale, size=w.shape).astype(np.float32))
    return block


def inputs(b, h, w, cin=4, ccond=3, num_classes=3, seed=1):
    rng = np.random.default_rng(seed)
    v_in = rng.normal(size=(b, h, w, cin)).astype(np.float32)
    h_in = rng.normal(size=(b, h, w, cin)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=b).astype(np.int32)
    condition = rng.normal(size=(b, h, w, ccond)).astype(np.float32)
    return v_in, h_in, labels, condition


def test_gate_and_shift_down_against_numpy():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(gate(x).numpy(), np_gate(x.astype(np.float64)), rtol=1e-6, atol=1e-6)
    # gate(0) = tanh(0)·σ(0) = 0; gate([a, b]) hand-computed for one channel pair.
    np.testing.assert_allclose(
        gate(np.array([[1.0, 2.0]], np.float32)).numpy(), [[np.tanh(1.0) / (1 + np.exp(-2.0))]],
        rtol=1e-6,
    )
    shifted = shift_down(x).numpy()
    assert shifted.shape == x.shape
    np.testing.assert_array_equal(shifted[:, 0], 0.0)
    np.testing.assert_array_equal(shifted[:, 1:], x[:, :-1])


CASES = [
    # (kernel, first, num_classes, condition_channels)
    (3, True, None, None),
    (3, False, None, None),
    (5, True, 3, None),
    (5, False, 3, 3),
    (3, False, None, 3),
]


@pytest.mark.parametrize("k,first,num_classes,ccond", CASES)
def test_call_matches_numpy(k, first, num_classes, ccond):
    block = random_block(k, first, num_classes, ccond, seed=k + first)
    v_in, h_in, labels, condition = inputs(2, 5, 6)
    kwargs = {}
    if num_classes:
        kwargs["labels"] = labels
    if ccond:
        kwargs["condition"] = condition
    v_out, h_out, skip = (t.numpy() for t in block(v_in, h_in, **kwargs))
    ref_v, ref_h, ref_skip, _ = np_block(block, v_in, h_in, **kwargs)
    assert v_out.shape == h_out.shape == skip.shape == (2, 5, 6, 4)
    np.testing.assert_allclose(v_out, ref_v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_out, ref_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(skip, ref_skip, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,first,num_classes,ccond", CASES)
def test_cached_steps_match_call(k, first, num_classes, ccond):
    """vertical_row / horizontal_step from windows equal the full block, position by position."""
    block = random_block(k, first, num_classes, ccond, seed=7 + k)
    b, h, w = 2, 4, 5
    v_in, h_in, labels, condition = inputs(b, h, w, seed=3)
    kwargs = {}
    if num_classes:
        kwargs["labels"] = labels
    if ccond:
        kwargs["condition"] = condition
    # Expectations from the NumPy reference (itself checked against call above).
    v_out, h_out, skip, ref_v = np_block(block, v_in, h_in, **kwargs)
    ref_v_to_h = np_dense(ref_v, block.v_to_h)
    c_v, c_h = np_condition_biases(block, kwargs.get("labels"), kwargs.get("condition"))
    c_v = np.broadcast_to(c_v, (b, h, w, 8)).astype(np.float32)
    c_h = np.broadcast_to(c_h, (b, h, w, 8)).astype(np.float32)
    c = k // 2
    v_pad = np.pad(v_in, ((0, 0), (c, 0), (c, c), (0, 0)))
    h_pad = np.pad(h_in, ((0, 0), (0, 0), (c, c), (0, 0)))
    # Row −1 of the vertical stack is the zero padding: Dense(0) is the bias.
    v_to_h_above = np.broadcast_to(w64(block.v_to_h.bias), (b, w, 8)).astype(np.float32)
    for i in range(h):
        window = v_pad[:, i : i + c + 1]
        assert window.shape == (b, c + 1, w + 2 * c, 4)
        v_row, v_to_h_row = (t.numpy() for t in block.vertical_row(window, c_v[:, i]))
        np.testing.assert_allclose(v_row, v_out[:, i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v_to_h_row, ref_v_to_h[:, i], rtol=1e-4, atol=1e-5)
        for j in range(w):
            h_window = h_pad[:, i : i + 1, j : j + k]
            out, s = block.horizontal_step(h_window, h_in[:, i, j], v_to_h_above[:, j], c_h[:, i, j])
            np.testing.assert_allclose(out.numpy(), h_out[:, i, j], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(s.numpy(), skip[:, i, j], rtol=1e-4, atol=1e-5)
        v_to_h_above = v_to_h_row


@pytest.mark.parametrize("k", [3, 5])
def test_first_block_is_causal(k):
    """With v_in = h_in = x, the first block's h_out / skip at (i, j) ignore x at (i', j') ≥ (i, j)."""
    block = random_block(k, True, seed=k)
    h, w = 4, 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, h, w, 4)).astype(np.float32)
    _, base_h, base_s = (t.numpy() for t in block(x, x))
    for n in range(h * w):
        i, j = divmod(n, w)
        y = x.reshape(1, h * w, 4).copy()
        y[:, n:] = rng.normal(size=y[:, n:].shape)
        y = y.reshape(x.shape)
        _, out_h, out_s = (t.numpy() for t in block(y, y))
        flat = lambda a: a.reshape(h * w, -1)  # noqa: E731
        np.testing.assert_array_equal(flat(out_h)[: n + 1], flat(base_h)[: n + 1])
        np.testing.assert_array_equal(flat(out_s)[: n + 1], flat(base_s)[: n + 1])
        if j > 0:  # the previous position matters
            z = x.copy()
            z[0, i, j - 1] += 1.0
            assert not np.array_equal(block(z, z)[1].numpy()[0, i, j], base_h[0, i, j])
        if i > 0:  # so does the one above
            z = x.copy()
            z[0, i - 1, j] += 1.0
            assert not np.array_equal(block(z, z)[1].numpy()[0, i, j], base_h[0, i, j])


def test_config_round_trip():
    block = GatedBlock(6, 5, first=True, num_classes=4, condition_channels=3, name="gb")
    config = block.get_config()
    for key, value in dict(channels=6, kernel_size=5, first=True, num_classes=4,
                           condition_channels=3).items():
        assert config[key] == value
    clone = GatedBlock.from_config(config)
    assert clone.get_config() == config
    assert clone.h_conv.mask_type == "horizontal_A"
    assert GatedBlock(6, 5).h_conv.mask_type == "horizontal_B"
    assert clone.v_conv.mask_type == "vertical"
    revived = keras.layers.deserialize(keras.layers.serialize(block))
    assert isinstance(revived, GatedBlock) and revived.get_config() == config
