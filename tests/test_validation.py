"""The shared argument checks of tfvqvae.validation: what each accepts, returns and says."""

import re

import numpy as np
import pytest

from tfvqvae.validation import code_map_shape
from tfvqvae.validation import finite_float
from tfvqvae.validation import integer
from tfvqvae.validation import is_int
from tfvqvae.validation import map_shape
from tfvqvae.validation import non_negative_int
from tfvqvae.validation import odd_positive_int
from tfvqvae.validation import one_of
from tfvqvae.validation import positive_int

INF = float("inf")
NAN = float("nan")


def message(name, what, value):
    return "^" + re.escape(f"`{name}` must be {what}. Received: {name}={value!r}") + "$"


# ------------------------------------------------------------------ integers
@pytest.mark.parametrize("value", [1, 2, 10**12])
def test_positive_int_returns_the_value(value):
    assert positive_int("n", value) is value


@pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, False, "3", None, INF, NAN,
                                   np.int64(3), [1]])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=message("n", "a positive integer", value)):
        positive_int("n", value)


def test_allow_none():
    assert positive_int("n", None, allow_none=True) is None
    assert non_negative_int("n", None, allow_none=True) is None
    assert integer("n", None, allow_none=True) is None
    assert finite_float("x", None, allow_none=True) is None


@pytest.mark.parametrize("value", [0, 1, 7])
def test_non_negative_int_accepts_zero(value):
    assert non_negative_int("n", value) == value


@pytest.mark.parametrize("value", [-1, 0.0, True, "0", None, INF])
def test_non_negative_int_refuses(value):
    with pytest.raises(ValueError, match=message("n", "a non-negative integer", value)):
        non_negative_int("n", value)


@pytest.mark.parametrize("value", [-5, 0, 3])
def test_integer_accepts_any_int(value):
    assert integer("seed", value) == value


@pytest.mark.parametrize("value", [1.5, 1.0, True, "1", None, NAN])
def test_integer_refuses(value):
    with pytest.raises(ValueError, match=message("seed", "an integer", value)):
        integer("seed", value)


@pytest.mark.parametrize("value", [1, 3, 7])
def test_odd_positive_int_accepts(value):
    assert odd_positive_int("kernel_size", value) == value


@pytest.mark.parametrize("value", [0, 2, -1, 3.0, True, "3", INF])
def test_odd_positive_int_refuses(value):
    with pytest.raises(ValueError, match=message("kernel_size", "an odd positive integer", value)):
        odd_positive_int("kernel_size", value)


def test_is_int():
    assert is_int(0) and is_int(-3) and is_int(5, low=5)
    assert not is_int(4, low=5)
    assert not is_int(True) and not is_int(1.0) and not is_int("1") and not is_int(None)


# -------------------------------------------------------------------- floats
@pytest.mark.parametrize(
    "value, kwargs",
    [
        (0, {"low": 0}),
        (0.0, {"low": 0}),
        (2.5, {"low": 0}),
        (1e-30, {"low": 0, "low_open": True}),
        (0.5, {"low": 0, "high": 1, "low_open": True, "high_open": True}),
        (1, {"low": 0, "high": 1}),
        (-7.0, {}),
        (np.float32(0.25), {"low": 0}),
        (np.int64(3), {"low": 0}),
    ],
)
def test_finite_float_returns_a_python_float(value, kwargs):
    result = finite_float("x", value, **kwargs)
    assert type(result) is float and result == float(value)


@pytest.mark.parametrize("value", [INF, -INF, NAN, np.float32("inf"), True, False, "0.5", None,
                                   [0.5], 1j])
def test_finite_float_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ValueError, match=message("x", "a finite number", value)):
        finite_float("x", value)


@pytest.mark.parametrize(
    "value, kwargs, what",
    [
        (-1, {"low": 0}, "a finite number >= 0"),
        (-1e-12, {"low": 0}, "a finite number >= 0"),
        (INF, {"low": 0}, "a finite number >= 0"),
        (0, {"low": 0, "low_open": True}, "a finite number > 0"),
        (2, {"high": 1}, "a finite number <= 1"),
        (1, {"high": 1, "high_open": True}, "a finite number < 1"),
        (0.0, {"low": 0, "high": 1, "low_open": True, "high_open": True},
         "a finite number in (0, 1)"),
        (1.0, {"low": 0, "high": 1, "low_open": True, "high_open": True},
         "a finite number in (0, 1)"),
        (1.5, {"low": 0, "high": 1}, "a finite number in [0, 1]"),
        (NAN, {"low": 0, "high": 1}, "a finite number in [0, 1]"),
    ],
)
def test_finite_float_bounds(value, kwargs, what):
    with pytest.raises(ValueError, match=message("x", what, value)):
        finite_float("x", value, **kwargs)


# ------------------------------------------------------------------- choices
def test_one_of():
    assert one_of("crop", "none", ("none", "center")) == "none"
    with pytest.raises(ValueError, match=message("crop", "one of ('none', 'center')", "left")):
        one_of("crop", "left", ("none", "center"))
    with pytest.raises(ValueError, match=message("channels", "one of (1, 3)", True)):
        one_of("channels", True, (1, 3))
    with pytest.raises(ValueError, match=message("crop", "one of ('none',)", ["none"])):
        one_of("crop", ["none"], {"none"})


@pytest.mark.parametrize("value", [(3, 4), [3, 4], np.array([3, 4])])
def test_map_shape_accepts_two_positive_ints(value):
    assert map_shape("code_shape", value) == (3, 4)


@pytest.mark.parametrize("value", [(3,), (3, 0), (2, 3, 4), "ab", None, 5, (2, -1)])
def test_map_shape_refuses(value):
    expected = f"`code_shape` must be (height, width), two positive integers. " \
        f"Received: code_shape={value!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        map_shape("code_shape", value)
    assert map_shape("condition_shape", None, allow_none=True) is None


@pytest.mark.parametrize("value, expected", [((3, 4), (3, 4)), ([3, 4, 2], (3, 4, 2)),
                                             (np.array([5, 6, 1]), (5, 6, 1))])
def test_code_map_shape_accepts_maps_with_or_without_depth(value, expected):
    assert code_map_shape("code_shape", value) == expected


@pytest.mark.parametrize("value", [(3,), (3, 0), (2, 3, 4, 5), (2, 3, 0), "ab", None, 5])
def test_code_map_shape_refuses(value):
    expected = ("`code_shape` must be (height, width) or (height, width, depth), positive "
                f"integers. Received: code_shape={value!r}")
    with pytest.raises(ValueError, match=re.escape(expected)):
        code_map_shape("code_shape", value)
    assert code_map_shape("condition_shape", None, allow_none=True) is None
