"""Helpers shared by the PixelCNN prior and sampling tests."""

import math

import numpy as np


def randomise(model, seed=0):
    """Random weights everywhere (fan-in scaled kernels, unit embeddings, non-zero biases)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "embedding" in w.path:
            scale = 1.0
        elif len(shape) == 1:
            scale = 0.2
        else:
            scale = 1.0 / math.sqrt(np.prod(shape[:-1]))
        w.assign(rng.normal(scale=scale, size=shape).astype(np.float32))
    return model


def conditioning_inputs(model, batch, seed=0):
    """Random labels / condition map for a conditioned prior ({} otherwise)."""
    rng = np.random.default_rng(seed)
    extra = {}
    if model.num_classes is not None:
        extra["labels"] = rng.integers(0, model.num_classes, batch).astype(np.int32)
    if model.is_conditioned:
        extra["condition"] = rng.integers(
            0, model.condition_num_embeddings, (batch,) + model.condition_shape
        ).astype(np.int32)
    return extra
