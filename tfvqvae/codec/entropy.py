"""Range coding of code maps under per-position categorical distributions.

The coder is `constriction`'s range coder (``constriction.stream.queue``:
first in, first out, so the decoder reads symbols in the order the prior
predicts them) with its leaky quantisation (``Categorical(perfect=False)``):
each distribution becomes integer frequencies over 2^24 in which every
symbol has a frequency of at least 1, so any code can be coded, at most
24 bits for an improbable one. Encoder and decoder quantise the same
float64 probabilities (`probabilities`) the same way.

A message costs its information content Σ −log2 P(z) plus the quantisation's
loss (≪ 1 %) and the coder's flush: constriction's 32-bit words, which
`encode` cuts to the bytes that still decode to the same symbols
once the decoder pads it with zero bytes (`padded_words`): 0.3 bytes per
file on average and at most 1.0 byte in ``python bench/codec.py`` (8 000
files).

Reference: Bamler, "Understanding Entropy Coding With Asymmetric Numeral
Systems (ANS): a Statistician's Perspective", 2022 (constriction),
https://bamler-lab.github.io/constriction/
"""

import numpy as np

try:  # the codec's one dependency beyond TensorFlow; imported where it is used
    import constriction
except ImportError:  # pragma: no cover - reported by `require_constriction`
    constriction = None

__all__ = [
    "categorical",
    "encode",
    "padded_words",
    "probabilities",
    "require_constriction",
    "uniform",
]


def require_constriction():
    """Raises ImportError with the install command when constriction is missing."""
    if constriction is None:
        raise ImportError(
            "The image codec needs `constriction` (entropy coding; a dependency of "
            "tfvqvae): pip install 'constriction>=0.5,<0.6'")


def categorical():
    """constriction's categorical model with leaky quantisation; probabilities per call."""
    require_constriction()
    return constriction.stream.model.Categorical(perfect=False)


def probabilities(logits):
    """float64 (..., K) softmax of float32 logits, computed in NumPy on both sides.

    exp(l − max l) / Σ exp(l − max l) in float64 from the float32 logits.

    Raises:
        FloatingPointError: a logit is NaN or Inf (a diverged prior): no
            file is written from it and no image decoded.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not np.all(np.isfinite(logits)):
        raise FloatingPointError(
            "The prior's logits hold NaN or Inf: its weights are not finite (a diverged "
            f"training?). Received: {int(np.sum(~np.isfinite(logits)))} non-finite logit(s)")
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def uniform(num_symbols, count=1):
    """float64 (count, num_symbols) uniform distributions (the class label's)."""
    return np.full((count, num_symbols), 1.0 / num_symbols)


def padded_words(data):
    """uint32 words of a payload cut after any byte: zero bytes appended to a multiple of 4."""
    data = bytes(data) + b"\0" * (-len(data) % 4)
    return np.frombuffer(data, dtype=">u4").astype(np.uint32)


def _decodes(data, messages):
    """Whether ``data`` (zero padded) decodes to every (symbols, probabilities) message."""
    decoder = constriction.stream.queue.RangeDecoder(padded_words(data))
    model = categorical()
    try:
        for symbols, probs in messages:
            if not np.array_equal(decoder.decode(model, probs), symbols):
                return False
    except Exception:  # constriction refuses data that ends too early
        return False
    return True


def _incremented(data):
    """``data`` + 1 as a big-endian number of the same length, or None on overflow."""
    value = int.from_bytes(data, "big") + 1
    return value.to_bytes(len(data), "big") if value < 256 ** len(data) else None


def encode(messages):
    """The payload of a sequence of messages, cut to the bytes the decoder needs.

    Args:
        messages: list of (symbols int32 (n,), probabilities float64 (n, K))
            pairs, coded in order (e.g. the label, then each level's map in
            raster order).

    Returns:
        bytes: the range coder's words, big-endian, then shortened one byte
        at a time while a shorter string still `_decodes` to the same
        symbols once zero padded: the prefix itself, or the prefix plus one
        in its last byte (zero padding only lowers the value the decoder
        reads, so the prefix alone often falls below the final interval and
        the incremented one lands inside it).
    """
    encoder = constriction.stream.queue.RangeEncoder()
    model = categorical()
    for symbols, probs in messages:
        encoder.encode(np.asarray(symbols, np.int32), model, probs)
    data = encoder.get_compressed().astype(">u4").tobytes()
    while data:
        shorter = [data[:-1], _incremented(data[:-1])]
        found = next((c for c in shorter if c is not None and _decodes(c, messages)), None)
        if found is None:
            break
        data = found
    return data


def decoder(payload):
    """A range decoder over a payload (zero padded to whole words)."""
    require_constriction()
    return constriction.stream.queue.RangeDecoder(padded_words(payload))
