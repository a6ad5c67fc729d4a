"""A model's dtype policy in its config, so a saved mixed-precision model loads mixed.

Every model passes ``dtype=self.dtype_policy`` to each layer it creates (as
keras-hub backbones do), so a model built with ``dtype="mixed_bfloat16"``
computes in bfloat16 whatever the global policy. The policy is saved in the
config under ``"dtype"`` and given back to the constructor by `from_config`;
no global policy is set or swapped while loading.
"""

import keras


def with_dtype_policy(model, config):
    """``config`` plus the model's serialized dtype policy under ``"dtype"``."""
    return {**config, "dtype": keras.dtype_policies.serialize(model.dtype_policy)}


def from_config_with_policy(cls, config):
    """``cls(**config)``, the saved ``config["dtype"]`` (if any) passed as ``dtype``."""
    config = dict(config)
    policy = config.pop("dtype", None)
    if policy is None:
        return cls(**config)
    return cls(**config, dtype=keras.dtype_policies.get(policy))
