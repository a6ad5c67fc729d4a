"""Worker for ``bench/quantizer_speed.py``: times vector-quantize-pytorch.

Started by quantizer_speed.py as a subprocess (PyTorch and TensorFlow stay in
separate processes); it stays alive so its repetitions can be interleaved with
the TensorFlow ones. Protocol: one JSON object per line on stdin, one JSON
object per line on stdout.

    {"cmd": "setup", "data": PATH.npz, "decay": 0.99, "beta": 0.25}
        loads z (N, D), g (N, D) and codebook (K, D) from PATH.npz, builds
        ``VectorQuantize`` with that codebook, writes its eval-mode indices
        to PATH.indices.npy and answers {"ok": true, "indices": PATH}.
    {"cmd": "step"}
        one timed forward + backward in training mode (the EMA update runs);
        answers {"ms": ...}.
    {"cmd": "quit"}

Run on its own (``python bench/vqtorch_quantizer_speed.py --threads 2``) it
prints {"ready": ..., versions} and waits for commands.
"""

import argparse
import json
import sys
import time
from importlib.metadata import version


def build(z, codebook, decay, beta):
    import torch
    from vector_quantize_pytorch import VectorQuantize

    k, d = codebook.shape
    vq = VectorQuantize(
        dim=d,
        codebook_size=k,
        decay=decay,
        commitment_weight=beta,
        kmeans_init=False,  # the default; stated: codebook comes from the caller
        rotation_trick=False,  # plain straight-through, as ours and Sonnet
        learnable_codebook=False,
        ema_update=True,
        threshold_ema_dead_code=0,  # no dead-code expiry
    )
    book = torch.from_numpy(codebook)[None]  # (1, K, D): one codebook, no heads
    cb = vq._codebook
    assert tuple(cb.embed.shape) == (1, k, d), cb.embed.shape
    with torch.no_grad():
        cb.embed.copy_(book)
        cb.embed_avg.copy_(book)  # EMA state m = e, N = 1 (as ours)
        cb.cluster_size.fill_(1.0)
    return vq


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def answer(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    answer(
        {
            "ready": True,
            "torch": torch.__version__,
            "vector_quantize_pytorch": version("vector-quantize-pytorch"),
            "threads": torch.get_num_threads(),
        }
    )
    vq = x = g = None
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "setup":
            data = np.load(request["data"])
            z = np.ascontiguousarray(data["z"], np.float32)
            vq = build(z, data["codebook"].astype(np.float32), request["decay"], request["beta"])
            x = torch.from_numpy(z)[None]  # (1, N, D), channel-last
            g = torch.from_numpy(np.ascontiguousarray(data["g"], np.float32))[None]
            vq.eval()  # no EMA update: the indices of the copied codebook
            with torch.no_grad():
                _, indices, _ = vq(x)
            path = request["data"] + ".indices.npy"
            np.save(path, indices.reshape(-1).numpy().astype(np.int64))
            vq.train()
            answer({"ok": True, "indices": path})
        elif cmd == "step":
            leaf = x.clone().requires_grad_(True)
            start = time.perf_counter()
            quantized, _, commitment = vq(leaf)
            loss = (quantized * g).sum() + commitment.sum()
            loss.backward()
            elapsed = time.perf_counter() - start
            answer({"ms": elapsed * 1e3})
        elif cmd == "quit":
            break
        else:
            answer({"error": f"unknown command {cmd!r}"})


if __name__ == "__main__":
    main()
