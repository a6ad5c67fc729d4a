"""One training process for the fault-tolerance and multi-worker tests.

    python distributed_worker.py OUT DUMP [--strategy NAME] [--kill-at STEP]
                                 [--backup-every N]

Runs `tfvqvae.training.train` on a tiny fixed configuration with
deterministic ops, writes every model weight to DUMP (.npz, in
``model.weights`` order) when training ends, and with ``--kill-at`` sends
itself SIGKILL right after global step STEP (after that step's backup, if
one is due): a hard kill, no cleanup. Started again without ``--kill-at`` it
is "the same command run again". A multi-worker cluster comes from
``TF_CONFIG``.
"""

import argparse
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfvqvae.training import TrainConfig  # noqa: E402
from tfvqvae.training import train  # noqa: E402

CONFIG = dict(
    dataset="digits",
    max_train_examples=192,  # 6 steps of 32 per epoch
    epochs=2,
    batch_size=32,
    learning_rate=2e-3,
    num_embeddings=16,
    embedding_dim=4,
    hidden_channels=16,
    residual_channels=8,
    num_residual_layers=1,
    num_downsamples=1,
    kmeans_init=True,
    restart_unused_after=3,
    grid_pairs=2,
)
STEPS_PER_EPOCH = 6


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process at the end of global step ``step`` (fresh runs only)."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS_PER_EPOCH + batch + 1 == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class DumpWeights(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        arrays = {f"w{i:03d}": np.asarray(w.numpy()) for i, w in enumerate(self.model.weights)}
        temp = self.path + ".tmp.npz"
        np.savez(temp, **arrays)
        os.replace(temp, self.path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("dump")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--backup-every", type=int, default=1)
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    callbacks = [DumpWeights(args.dump)]
    if args.kill_at is not None:
        callbacks.append(KillAt(args.kill_at))
    train(
        TrainConfig(out=args.out, **CONFIG),
        callbacks=callbacks,
        verbose=0,
        strategy=args.strategy,
        backup_every=args.backup_every,
    )


if __name__ == "__main__":
    main()
