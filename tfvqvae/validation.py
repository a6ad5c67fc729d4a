"""Argument checks shared by the library, with errors that name the value.

Every check returns the value it accepted (floats as a Python ``float``) and
raises ``ValueError`` in one style, the one of Keras' own layers:

    "`name` must be <what>. Received: name=<repr of the value>"

so a layer writes ``self.units = positive_int("units", units)``.

* `integer`, `positive_int`, `non_negative_int`, `odd_positive_int`: Python
  ``int`` only (``bool`` is refused, NumPy integers too: a config must
  serialise to JSON).
* `finite_float`: a real number (``int``, ``float`` or a NumPy scalar; never
  ``bool``, ``str``, NaN or ±Inf) within optional bounds.
* `boolean`: ``True`` or ``False`` only (not 0 / 1, not a string).
* `one_of`: a value from a fixed tuple of choices.
* `map_shape`: (height, width) of a 2-D map, two positive ints.
* `is_int`: the predicate behind the integer checks, for callers that raise
  their own error (e.g. a file header that is not valid).

Checks of tensors a layer receives (duck-typed: anything with ``dtype`` and
``shape`` as a ``tf.Tensor`` has them, so this module imports no TensorFlow):

* `vectors_shape`: rank >= 2 and a last axis of ``embedding_dim``.
* `float_vectors`: the same for a floating-point tensor (``TypeError`` if not).
* `integer_indices`: code indices of an integer dtype (``TypeError`` if not).
"""

import math
import numbers

__all__ = [
    "boolean",
    "finite_float",
    "float_vectors",
    "integer",
    "integer_indices",
    "is_int",
    "map_shape",
    "non_negative_int",
    "odd_positive_int",
    "one_of",
    "positive_int",
    "vectors_shape",
]


def _fail(name, what, value):
    return ValueError(f"`{name}` must be {what}. Received: {name}={value!r}")


def is_int(value, low=None):
    """Whether ``value`` is a Python ``int`` (not a ``bool``) and, if given, ``>= low``."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (low is None or value >= low)
    )


def integer(name, value, allow_none=False):
    """Returns ``value`` if it is an int (or None when allowed), else raises.

    Raises:
        ValueError: "`name` must be an integer. Received: name=value".
    """
    if allow_none and value is None:
        return None
    if not is_int(value):
        raise _fail(name, "an integer", value)
    return value


def positive_int(name, value, allow_none=False):
    """Returns ``value`` if it is a positive int (or None when allowed), else raises.

    Raises:
        ValueError: "`name` must be a positive integer. Received: name=value".
    """
    if allow_none and value is None:
        return None
    if not is_int(value, 1):
        raise _fail(name, "a positive integer", value)
    return value


def non_negative_int(name, value, allow_none=False):
    """Returns ``value`` if it is an int >= 0 (or None when allowed), else raises.

    Raises:
        ValueError: "`name` must be a non-negative integer. Received: name=value".
    """
    if allow_none and value is None:
        return None
    if not is_int(value, 0):
        raise _fail(name, "a non-negative integer", value)
    return value


def odd_positive_int(name, value):
    """Returns ``value`` if it is an odd positive int (a kernel size), else raises.

    Raises:
        ValueError: "`name` must be an odd positive integer. Received: name=value".
    """
    if not is_int(value, 1) or value % 2 == 0:
        raise _fail(name, "an odd positive integer", value)
    return value


def _interval(low, high, low_open, high_open):
    """The bounds in words: ">= 0", "> 0", "in (0, 1)", "<= 1" or ""."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low!r}, {high!r}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low!r}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high!r}"
    return ""


def finite_float(
    name,
    value,
    low=None,
    high=None,
    *,
    low_open=False,
    high_open=False,
    allow_none=False,
):
    """Returns ``float(value)`` if it is a finite real number within the bounds, else raises.

    Args:
        name: the argument's name, for the message.
        value: the value to check: an ``int``, a ``float`` or a NumPy real
            scalar. ``bool``, strings, NaN and ±Inf are refused.
        low: lower bound, or None. Defaults to None.
        high: upper bound, or None. Defaults to None.
        low_open: exclude ``low`` itself (``value > low``). Defaults to False.
        high_open: exclude ``high`` itself (``value < high``). Defaults to False.
        allow_none: accept (and return) None. Defaults to False.

    Returns:
        The value as a Python ``float`` (None when allowed and given).

    Raises:
        ValueError: e.g. "`commitment_cost` must be a finite number >= 0.
            Received: commitment_cost=inf", or "`decay` must be a finite
            number in (0, 1). Received: decay=1.0".
    """
    if allow_none and value is None:
        return None
    what = "a finite number" + _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, what, value)
    number = float(value)
    if not math.isfinite(number):
        raise _fail(name, what, value)
    if low is not None and (number <= low if low_open else number < low):
        raise _fail(name, what, value)
    if high is not None and (number >= high if high_open else number > high):
        raise _fail(name, what, value)
    return number


def boolean(name, value):
    """Returns ``value`` if it is ``True`` or ``False`` (a Python ``bool``), else raises.

    Raises:
        ValueError: "`name` must be True or False. Received: name=value".
    """
    if not isinstance(value, bool):
        raise _fail(name, "True or False", value)
    return value


def one_of(name, value, choices):
    """Returns ``value`` if it is one of ``choices`` (a tuple), else raises.

    Raises:
        ValueError: "`name` must be one of (...). Received: name=value".
    """
    # NB: a bool equals 0 / 1, so True would pass for a choice of 1.
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        raise _fail(name, f"one of {tuple(choices)}", value)
    try:
        found = value in choices
    except TypeError:  # an unhashable value against a set or dict
        found = False
    if not found:
        raise _fail(name, f"one of {tuple(choices)}", value)
    return value


def _positive_ints(value):
    """``value`` as a non-empty tuple of positive ints, or None when it is not one."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return shape if shape and min(shape) >= 1 else None


def map_shape(name, value, allow_none=False):
    """``value`` as a tuple (height, width) of positive ints (or None when allowed).

    Any sequence of two integer-like values is accepted (a list from a JSON
    config, a tuple, a NumPy array).

    Raises:
        ValueError: "`name` must be (height, width), two positive integers.
            Received: name=<value>".
    """
    if allow_none and value is None:
        return None
    shape = _positive_ints(value)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"`{name}` must be (height, width), two positive integers. Received: {name}={value!r}"
        )
    return shape


def code_map_shape(name, value, allow_none=False):
    """``value`` as (height, width) or (height, width, depth) of positive ints.

    A code map whose positions hold one code each is (height, width); one
    whose positions hold Q codes (a residual or grouped quantizer's) is
    (height, width, Q). Any sequence of integer-like values is accepted.

    Raises:
        ValueError: "`name` must be (height, width) or (height, width, depth),
            positive integers. Received: name=<value>".
    """
    if allow_none and value is None:
        return None
    shape = _positive_ints(value)
    if shape is None or len(shape) not in (2, 3):
        raise ValueError(
            f"`{name}` must be (height, width) or (height, width, depth), positive integers. "
            f"Received: {name}={value!r}"
        )
    return shape


def vectors_shape(owner, shape, embedding_dim, name="inputs", received=None):
    """Returns ``tuple(shape)`` if its rank is >= 2 and its last axis ``embedding_dim``.

    Args:
        owner: who checks (a layer's class name), for the message.
        shape: a shape (a tuple or a ``tf.TensorShape``).
        embedding_dim: the size the last axis must have.
        name: what the shape is of, for the message. Defaults to "inputs".
        received: how the message names the value received. Defaults to
            "<name> with shape".

    Raises:
        ValueError: "<owner> expects <name> of rank >= 2 whose last axis is
            embedding_dim=<D>. Received: <received>=<shape>".
    """
    shape = tuple(shape)
    if len(shape) < 2 or shape[-1] != embedding_dim:
        if received is None:
            received = f"{name} with shape"
        raise ValueError(
            f"{owner} expects {name} of rank >= 2 whose last "
            f"axis is embedding_dim={embedding_dim}. "
            f"Received: {received}={shape}"
        )
    return shape


def float_vectors(owner, tensor, embedding_dim, name="inputs"):
    """Returns ``tensor`` if it is floating-point with rank >= 2 and last axis ``embedding_dim``.

    ``tensor`` is a ``tf.Tensor`` (the caller converts it).

    Raises:
        TypeError: "<owner> expects floating-point <name>. Received: <name>
            with dtype=<dtype>".
        ValueError: from `vectors_shape`.
    """
    if not tensor.dtype.is_floating:
        raise TypeError(
            f"{owner} expects floating-point {name}. "
            f"Received: {name} with dtype={tensor.dtype.name}"
        )
    vectors_shape(owner, tensor.shape, embedding_dim, name)
    return tensor


def integer_indices(indices):
    """Returns ``indices`` (a ``tf.Tensor``) if its dtype is an integer type, else raises.

    Raises:
        TypeError: "Code indices must be integers. Received: indices with
            dtype=<dtype>".
    """
    if not indices.dtype.is_integer:
        raise TypeError(
            "Code indices must be integers. "
            f"Received: indices with dtype={indices.dtype.name}"
        )
    return indices
