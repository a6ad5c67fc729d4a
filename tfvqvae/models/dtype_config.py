"""A model's dtype policy in its config, so a saved mixed-precision model loads mixed.

The models build their layers in ``__init__``, and a layer takes the global
dtype policy when it is created; so `from_config_under_policy` sets the saved
policy globally while it constructs the model (and restores the previous one
afterwards). Without this a ``mixed_bfloat16`` model saved to ``.keras``
would come back computing in float32.
"""

import keras


def with_dtype_policy(model, config):
    """``config`` plus the model's serialized dtype policy under ``"dtype"``."""
    return {**config, "dtype": keras.dtype_policies.serialize(model.dtype_policy)}


def from_config_under_policy(cls, config):
    """``cls(**config)`` built under the policy in ``config["dtype"]`` (if any)."""
    config = dict(config)
    policy = config.pop("dtype", None)
    if policy is None:
        return cls(**config)
    policy = keras.dtype_policies.get(policy)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return cls(**config, dtype=policy)
    finally:
        keras.config.set_dtype_policy(previous)
