"""Writes ``codes-00000-of-00001.tfrecord``, a code file of the release before depth axes (run once).

The file in this folder was written by `tfvqvae.data.write_codes` as it was
*before* code maps could have a depth axis (residual and grouped
quantisers): ``tests/data/test_depth_code_files.py`` reads it with the
current code and checks its header and its codes. Run it again only at the
revision named in README.md:

    PYTHONPATH=<that revision's tree> python tests/data/legacy/make_legacy_codes.py

The "model" is a stub with two levels whose codes NumPy recomputes from the
images (`LegacyStub`): top, the mean of each 4x4 block times 5, floored
(K = 5, 2x2 maps); bottom, the mean of each 2x2 block times 300, floored
(K = 300: codes above 127 take two-byte varints, 4x4 maps). The images are
the first 6 test images of the offline digits dataset (8x8, labelled).
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfvqvae.data  # noqa: E402

HERE = Path(__file__).resolve().parent
NUM_IMAGES = 6
LEVELS = {"top": (4, 5), "bottom": (2, 300)}  # level: (block size, K)


class LegacyStub:
    """Two levels of block-mean codes (module docstring); weights only for the fingerprint."""

    levels = tuple(LEVELS)
    level_num_embeddings = {level: k for level, (_, k) in LEVELS.items()}

    def __init__(self):
        self.weights = [keras.Variable(np.arange(6, dtype=np.float32).reshape(3, 2),
                                       name="codebook")]

    def get_config(self):
        return {"name": "legacy-stub"}

    def code_shapes(self, image_size):
        h, w = image_size
        return {level: (h // factor, w // factor) for level, (factor, _) in LEVELS.items()}

    def encode_levels(self, images):
        out = {}
        for level, (factor, k) in LEVELS.items():
            pooled = tf.nn.avg_pool2d(images, factor, factor, "VALID")[..., 0]
            out[level] = tf.minimum(tf.cast(tf.floor(pooled * k), tf.int32), k - 1)
        return out


if __name__ == "__main__":
    data = tfvqvae.data.load_digits("test").take(NUM_IMAGES)
    print("tfvqvae from", tfvqvae.data.__file__)
    tfvqvae.data.write_codes(HERE / "codes.tfrecord", LegacyStub(), data, num_shards=1,
                             source={"split": "test"})
