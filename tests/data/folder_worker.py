"""One worker of a two-process cluster reading a streamed image folder.

    python folder_worker.py FOLDER OUT.json     (TF_CONFIG names the cluster)

Builds `tf.distribute.MultiWorkerMirroredStrategy`, opens FOLDER (a flat
folder whose image i is filled with the value i) and iterates one epoch of
``epochs_dataset`` through ``strategy.distribute_datasets_from_function``.
Writes the images this worker's replica received, step by step, as the
values they hold: which files this worker read.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfvqvae.data import load_dataset  # noqa: E402

GLOBAL_BATCH = 16
SEED = 7


def main(folder, out):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    source = load_dataset(f"folder:{folder}")
    dataset = strategy.distribute_datasets_from_function(
        lambda context: source.epochs_dataset(
            GLOBAL_BATCH, seed=SEED, first_epoch=0, epochs=1, input_context=context))
    steps = []
    for batch in dataset:
        (local,) = strategy.experimental_local_results(batch)
        values = np.rint(local.numpy()[:, 0, 0, 0] * 255).astype(int)
        steps.append(values.tolist())
    with open(out + ".tmp", "w") as f:
        json.dump({"steps": steps, "replicas": strategy.num_replicas_in_sync}, f)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main(*sys.argv[1:])
