"""tfvqvae.distribute: strategy names, TF_CONFIG checks, batch split, precision."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvqvae import distribute


def test_default_strategy_is_the_current_one():
    assert distribute.build_strategy("default") is tf.distribute.get_strategy()


def test_mirrored_over_given_devices(mirrored_strategy):
    # Building a second MirroredStrategy would break the session one's
    # collectives (see conftest), so check the arguments path on names only.
    with pytest.raises(ValueError, match="devices only applies"):
        distribute.build_strategy("default", devices=["/cpu:0"])
    assert mirrored_strategy.num_replicas_in_sync == 2


@pytest.mark.parametrize("name", ["Mirrored", "gpu", "", None])
def test_unknown_strategy_name(name):
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.build_strategy(name)


def test_tpu_without_a_tpu_says_so():
    with pytest.raises(RuntimeError, match="found no TPU"):
        distribute.build_strategy("tpu")  # no TPU on this machine


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "'cluster' and 'task'"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}),
     "does not name an entry"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}),
     "does not name an entry"),
])
def test_bad_tf_config(text, message):
    with pytest.raises(ValueError, match=message):
        distribute.check_tf_config({"TF_CONFIG": text})


def test_good_tf_config():
    config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
              "task": {"type": "worker", "index": 1}}
    assert distribute.check_tf_config({"TF_CONFIG": json.dumps(config)}) == config
    assert distribute.check_tf_config({}) is None


def test_per_replica_batch_size(mirrored_strategy):
    assert distribute.per_replica_batch_size(64, mirrored_strategy) == 32
    assert distribute.per_replica_batch_size(7) == 7
    with pytest.raises(ValueError, match="does not split evenly over 2 replicas"):
        distribute.per_replica_batch_size(33, mirrored_strategy)


def test_single_process_strategies_are_chief(mirrored_strategy):
    assert distribute.is_chief()
    assert distribute.is_chief(mirrored_strategy)


@pytest.mark.parametrize("precision, policy", [
    (None, "float32"), ("float16", "mixed_float16"), ("bfloat16", "mixed_bfloat16"),
])
def test_precision_policy_is_scoped(precision, policy):
    with distribute.precision_policy(precision):
        assert keras.config.dtype_policy().name == policy
        layer = keras.layers.Dense(2)
    assert keras.config.dtype_policy().name == "float32"
    assert layer.dtype_policy.name == policy


def test_unknown_precision():
    with pytest.raises(ValueError, match="'float16', 'bfloat16' or None"):
        distribute.policy_name("fp8")


def test_split_cpu_after_initialisation_refuses_a_different_split():
    tf.constant(1.0)  # devices are initialised (conftest split them in two)
    assert len(distribute.split_cpu(2)) == 2
    with pytest.raises(RuntimeError, match="already initialised it as 2"):
        distribute.split_cpu(3)
    with pytest.raises(ValueError, match="positive integer"):
        distribute.split_cpu(0)


def test_multi_worker_logs_leave_single_process_logs_alone(mirrored_strategy):
    logs = {"loss": tf.constant(1.5)}
    assert distribute.multi_worker_logs(logs) is logs
    assert distribute.multi_worker_logs(logs, mirrored_strategy) is logs


def test_multi_worker_logs_reshape_for_multi_worker_reduction():
    class FakeExtended:
        @staticmethod
        def _in_multi_worker_mode():
            return True

    class FakeStrategy:
        extended = FakeExtended()

    logs = distribute.multi_worker_logs({"loss": tf.constant(1.5)}, FakeStrategy())
    assert logs["loss"].shape == (1,)
    np.testing.assert_array_equal(logs["loss"].numpy(), [1.5])


def test_jit_compile_is_refused_over_several_mirrored_replicas(mirrored_strategy):
    distribute.check_jit_compile(True)  # one device: fine
    distribute.check_jit_compile(False, mirrored_strategy)
    with pytest.raises(ValueError, match="MirroredStrategy over 2 replicas"):
        distribute.check_jit_compile(True, mirrored_strategy)
