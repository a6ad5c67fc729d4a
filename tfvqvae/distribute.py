"""Distribution strategies and mixed precision, the way ``tfvqvae train`` sets them up.

Everything here is plain ``tf.distribute`` and Keras; a Keras user can call
these in a script of their own::

    strategy = tfvqvae.distribute.build_strategy("mirrored")
    with strategy.scope(), tfvqvae.distribute.precision_policy("bfloat16"):
        model = tfvqvae.VQVAE(...)
        model.compile(optimizer=keras.optimizers.Adam(3e-4))
    model.fit(dataset_of_global_batches, ...)

Batch semantics: the batch size of the dataset given to ``fit`` is the
*global* batch. A strategy with R replicas (``strategy.num_replicas_in_sync``)
splits each global batch of B images into R per-replica batches of B / R, and
the models' train steps are written so one step equals a single-device step on
the whole global batch (gradients of the global mean; codebook statistics
summed over replicas). `per_replica_batch_size` checks that B divides evenly.

Mixed precision (``"float16"`` / ``"bfloat16"``) sets Keras' ``mixed_*``
policy: convolutions run in the low precision while variables stay float32,
and the quantisers compute distances, EMA statistics and their losses in
float32 (they cast their input up and their output back down). With float16
Keras wraps the optimizer in a ``LossScaleOptimizer`` at ``compile``.
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

from tfvqvae.validation import positive_int

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
PRECISIONS = {None: "float32", "float32": "float32",
              "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def build_strategy(name="default", devices=None, tpu=None):
    """Returns the ``tf.distribute`` strategy called ``name``.

    Args:
        name: one of

            * ``"default"``: the default (no-op) strategy: one device, the
              one TensorFlow places ops on;
            * ``"mirrored"``: `tf.distribute.MirroredStrategy` over this
              host's GPUs (or ``devices``); synchronous all-reduce;
            * ``"multiworker"``: `tf.distribute.MultiWorkerMirroredStrategy`;
              the cluster and this process's role come from the
              ``TF_CONFIG`` environment variable, as TensorFlow documents it
              (every worker runs the same program with its own ``task``);
            * ``"tpu"``: `tf.distribute.TPUStrategy` on the TPU named by
              ``tpu`` (``""`` or None: the local / Cloud TPU VM one).
        devices: device names for ``"mirrored"`` (default: all GPUs, else
            the CPU).
        tpu: TPU address or name for ``"tpu"``.

    Raises:
        ValueError: on an unknown name, a malformed ``TF_CONFIG``, or
            ``devices`` given for a strategy other than ``"mirrored"``.
        RuntimeError: when ``"tpu"`` finds no TPU.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}"
        )
    if devices is not None and name != "mirrored":
        raise ValueError(
            f"devices only applies to strategy='mirrored'. Received: strategy={name!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as error:
        raise RuntimeError(
            f"strategy='tpu' found no TPU (tpu={tpu!r}): {error}"
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def num_input_pipelines(strategy):
    """The input pipelines (workers) ``distribute_datasets_from_function`` will build.

    One per worker (and chief) of the strategy's cluster; 1 without a
    cluster (one process, any number of local replicas).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    try:
        spec = resolver.cluster_spec().as_dict()
    except (ValueError, RuntimeError):
        return 1
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def check_tf_config(environ=os.environ):
    """Validates ``TF_CONFIG`` for multi-worker training; returns it parsed (or None).

    ``TF_CONFIG`` is JSON with ``cluster`` ({"worker": ["host:port", ...]})
    and ``task`` ({"type": "worker", "index": i}). Without it the strategy
    runs a single local worker.
    """
    text = environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from error
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(
            "TF_CONFIG must be a JSON object with 'cluster' and 'task'. "
            f"Received: {text}"
        )
    workers = cluster.get(task.get("type"))
    index = task.get("index")
    if not isinstance(workers, list) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ValueError(
            f"TF_CONFIG task {task} does not name an entry of its cluster {cluster}."
        )
    return config


def is_chief(strategy=None):
    """Whether this process writes the run's files (checkpoints, logs, results).

    True for single-process strategies and for the chief (worker 0, or the
    ``chief`` task) of a multi-worker cluster. The other workers must still
    run every save (reading ON_READ variables is a collective op) but write
    to a scratch place.
    """
    strategy = strategy or tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)


def per_replica_batch_size(global_batch_size, strategy=None):
    """``global_batch_size / replicas``; raises ValueError unless it divides evenly."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"The global batch size {global_batch_size} does not split evenly over "
            f"{replicas} replicas: use a multiple of {replicas} (each replica gets "
            "global / replicas images per step)."
        )
    return global_batch_size // replicas


def check_jit_compile(jit_compile, strategy=None):
    """Refuses ``jit_compile=True`` where Keras cannot compile the step.

    Keras 3.15 compiles the whole step, ``strategy.run`` over every replica
    included, as one XLA program on the first device; with a multi-replica
    MirroredStrategy or MultiWorkerMirroredStrategy that program reaches for
    variables on the other devices and fails at the first step
    (keras-team/keras#19005; Keras' own ``jit_compile="auto"`` turns XLA off
    under a strategy). TPUStrategy compiles with XLA anyway, and one
    replica compiles fine.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if (jit_compile and strategy.num_replicas_in_sync > 1
            and not isinstance(strategy, tf.distribute.TPUStrategy)):
        raise ValueError(
            f"jit_compile=True does not work with {type(strategy).__name__} over "
            f"{strategy.num_replicas_in_sync} replicas in Keras 3: it compiles the "
            "cross-replica step on one device. Drop --jit-compile (TPUStrategy "
            "always compiles with XLA) or train on one device."
        )


def policy_name(precision):
    """Keras dtype policy for ``precision`` (None, "float32", "float16", "bfloat16")."""
    if precision not in PRECISIONS:
        raise ValueError(
            "`mixed_precision` must be 'float16', 'bfloat16' or None. "
            f"Received: mixed_precision={precision!r}"
        )
    return PRECISIONS[precision]


@contextlib.contextmanager
def precision_policy(precision):
    """Sets Keras' global dtype policy for ``precision`` inside the block.

    Layers take the policy when they are created, so build the model inside
    the block; the previous policy comes back afterwards.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy_name(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def split_cpu(replicas):
    """Splits the first CPU into ``replicas`` logical devices; returns their names.

    Lets a CPU-only machine run ``"mirrored"`` with several replicas (tests,
    benchmarks). Must run before TensorFlow initialises its devices (before
    the first op); raises RuntimeError after that unless the split is
    already the one asked for.

    Raises:
        ValueError: "`replicas` must be a positive integer. Received: replicas=0".
        RuntimeError: when TensorFlow already split the CPU differently.
    """
    positive_int("replicas", replicas)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
        )
    except RuntimeError:
        current = tf.config.get_logical_device_configuration(cpu) or [None]
        if len(current) != replicas:
            raise RuntimeError(
                f"Cannot split the CPU into {replicas} devices: TensorFlow has "
                f"already initialised it as {len(current)}. Split it before "
                "building any tensor."
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")[:replicas]]


def in_multi_worker_mode(strategy=None):
    """Whether ``strategy`` spans several worker processes (Keras' own test)."""
    strategy = strategy or tf.distribute.get_strategy()
    check = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(check and check())


def multi_worker_logs(logs, strategy=None):
    """Returns ``logs`` shaped for Keras' multi-worker reduction.

    Keras (3.15) reduces a multi-worker train step's outputs with
    ``strategy.reduce(MEAN, value, axis=0)``, which refuses scalars ("Invalid
    reduction dimension 0"); shape-(1,) values reduce to the same scalar.
    Other strategies get ``logs`` unchanged.
    """
    if not in_multi_worker_mode(strategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}
