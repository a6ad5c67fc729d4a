"""Finding NaN and Inf in a model's weights, before they reach a file.

`nonfinite_weights` lists the variables (trainable or not: codebooks, EMA
statistics, and the optimizer's slots) that hold NaN or ±Inf;
`check_finite_weights` raises `FloatingPointError` naming the first of them.
Checkpoints, the final model and exports call them before writing, so that a
diverged model is never saved under a name a later command trusts.
"""

import keras
import numpy as np


def named_weights(model, include_optimizer=True):
    """``[(name, variable)]``: every variable of ``model`` once, named under its layer.

    Keras' ``variable.path`` omits the sub-model a weight lives in (the
    encoder's and the decoder's ``conv3x3/kernel`` look alike), so the name
    of the model's direct layer is put in front. With ``include_optimizer``
    the optimizer's variables follow (``optimizer/...``).
    """
    named, seen = [], set()

    def add(name, variable):
        if id(variable) not in seen:
            seen.add(id(variable))
            named.append((name, variable))

    for layer in getattr(model, "layers", []):
        for variable in layer.weights:
            path = variable.path
            add(path if path.startswith(f"{layer.name}/") else f"{layer.name}/{path}", variable)
    for variable in model.weights:
        add(variable.path, variable)
    optimizer = getattr(model, "optimizer", None) if include_optimizer else None
    for variable in list(getattr(optimizer, "variables", None) or []):
        add(f"optimizer/{variable.path}", variable)
    return named


def nonfinite_weights(model, include_optimizer=True):
    """The float variables of ``model`` that hold NaN or Inf.

    Args:
        model: a built Keras model (or layer).
        include_optimizer: also look at the optimizer's variables.

    Returns:
        ``[(name, bad, size)]`` in `named_weights` order: the variable's
        name, how many of its values are NaN or ±Inf, and its size; empty
        when every value is finite. Integer and boolean variables are skipped.
    """
    bad = []
    for name, variable in named_weights(model, include_optimizer):
        if not keras.backend.is_float_dtype(variable.dtype):
            continue
        values = np.asarray(keras.ops.convert_to_numpy(variable))
        count = int(values.size - np.count_nonzero(np.isfinite(values)))
        if count:
            bad.append((name, count, int(values.size)))
    return bad


def describe_nonfinite(bad):
    """``"decoder/conv/kernel holds 3 of 288 values NaN or Inf (5 in 2 variables in all)"``."""
    name, count, size = bad[0]
    total = sum(item[1] for item in bad)
    return (f"{name} holds {count} of {size} value{'s' * (size > 1)} NaN or Inf "
            f"({total} in {len(bad)} variable{'s' * (len(bad) > 1)} in all)")


def check_finite_weights(model, what="model"):
    """Raises FloatingPointError if any weight of ``model`` (or its optimizer) is NaN or Inf.

    Args:
        model: a built Keras model.
        what: how the message names the model ("model at step 40", a path).

    Raises:
        FloatingPointError: "The <what> has non-finite weights: <first
            variable> holds N of M values NaN or Inf (T in V variables in all)."
    """
    bad = nonfinite_weights(model)
    if bad:
        raise FloatingPointError(
            f"The {what} has non-finite weights: {describe_nonfinite(bad)}."
        )
