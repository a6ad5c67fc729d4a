"""Shared fixtures: paths to ../shared/data and a CPU split into two logical devices.

The split must happen before TensorFlow initialises its devices, so it runs at
import time, before any test module builds a tensor. Two logical CPUs let the
tests compare a 2-replica ``MirroredStrategy`` with a single-device run.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ``../shared/data`` (real MNIST, Fashion-MNIST, CIFAR-10 files)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from the default dtype policy and a clean Keras session."""
    import keras

    yield
    keras.config.set_dtype_policy("float32")
    # free_memory=False: no gc.collect() per test (about 0.5 s each in a
    # process that holds TensorFlow; Python's own collector still runs).
    keras.utils.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One 2-replica MirroredStrategy over the two logical CPUs, shared by all tests.

    NB: a second MirroredStrategy created in the same process reuses collective
    instance keys of the first, and its all-reduces can pair up with the wrong
    op ("Shape mismatch in the collective instance"); one strategy per process,
    as in real training, avoids that.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(scope="session")
def one_device_strategy():
    """The single-device reference for `mirrored_strategy`."""
    return tf.distribute.OneDeviceStrategy(tf.config.list_logical_devices("CPU")[0].name)
