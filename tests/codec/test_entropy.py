"""Range coding under categorical distributions: round trips, cost against −log2 P, padding."""

import numpy as np
import pytest

from tfvqvae.codec import entropy


def random_message(rng, length, k, sharpness=3.0):
    logits = (rng.normal(size=(length, k)) * sharpness).astype(np.float32)
    probs = entropy.probabilities(logits)
    symbols = np.array([rng.choice(k, p=p) for p in probs], np.int32)
    return symbols, probs


def decode(payload, messages):
    decoder = entropy.decoder(payload)
    return [decoder.decode(entropy.categorical(), probs) for _, probs in messages]


def test_probabilities_are_a_float64_softmax():
    logits = np.array([[0.0, 1.0, -2.0], [1000.0, 999.0, -1e30]], np.float32)
    expected = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    found = entropy.probabilities(logits)
    assert found.dtype == np.float64
    np.testing.assert_allclose(found, expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(found.sum(1), 1.0, rtol=1e-15)


def test_round_trip_and_cost_within_four_bytes_of_the_information_content():
    rng = np.random.default_rng(0)
    for _ in range(200):
        messages = [random_message(rng, rng.integers(1, 80), k) for k in (10, 128)]
        payload = entropy.encode(messages)
        for (symbols, _), found in zip(messages, decode(payload, messages)):
            np.testing.assert_array_equal(found, symbols)
        information = sum(-np.log2(p[np.arange(len(s)), s]).sum() for s, p in messages)
        assert len(payload) * 8 <= information * 1.01 + 32, (len(payload), information)


def test_the_flush_costs_a_few_bits_not_a_word():
    # Cut to the bytes the decoder needs: on average a few bits beyond the
    # information content, never a whole 32-bit word (constriction's unit).
    rng = np.random.default_rng(0)
    excess = []
    for _ in range(300):
        messages = [random_message(rng, rng.integers(1, 80), k) for k in (10, 128)]
        information = sum(-np.log2(p[np.arange(len(s)), s]).sum() for s, p in messages)
        excess.append(len(entropy.encode(messages)) * 8 - information)
    assert np.mean(excess) < 4 and np.max(excess) < 12, (np.mean(excess), np.max(excess))


def test_a_symbol_of_probability_zero_still_codes():
    # Leaky quantisation: every symbol keeps a frequency of at least 1 / 2^24.
    probs = np.array([[1.0, 0.0, 0.0, 0.0]] * 3)
    symbols = np.array([3, 0, 2], np.int32)
    payload = entropy.encode([(symbols, probs)])
    np.testing.assert_array_equal(decode(payload, [(symbols, probs)])[0], symbols)
    assert len(payload) <= 2 * 24 // 8 + 4  # two improbable symbols: ≤ 24 bits each


@pytest.mark.parametrize("data,words", [
    (b"", []), (b"\x01", [0x01000000]), (b"\x01\x02\x03\x04\x05", [0x01020304, 0x05000000])])
def test_padded_words_are_big_endian_with_zero_bytes(data, words):
    np.testing.assert_array_equal(entropy.padded_words(data), np.array(words, np.uint32))


def test_non_finite_logits_are_refused():
    with pytest.raises(FloatingPointError, match="1 non-finite logit"):
        entropy.probabilities(np.array([[0.0, np.nan, 1.0]], np.float32))
