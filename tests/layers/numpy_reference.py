"""Independent NumPy references for the layer tests (float64 throughout).

Nothing here imports tfvqvae: these are the formulas the layers are checked
against (module docstrings of ``vector_quantizer.py`` / ``vector_quantizer_ema.py``:
the loss of equation (3) and the EMA update of appendix A.1 of van den Oord et
al., "Neural Discrete Representation Learning", https://arxiv.org/abs/1711.00937,
with Laplace smoothing).
"""

import numpy as np


def distances(z, codebook):
    """Full squared distances ‖z‖² − 2 z·e + ‖e‖², shape z.shape[:-1] + (K,)."""
    z = np.asarray(z, np.float64)
    e = np.asarray(codebook, np.float64)
    flat = z.reshape(-1, z.shape[-1])
    d = (
        np.sum(flat**2, axis=1, keepdims=True)
        - 2.0 * flat @ e.T
        + np.sum(e**2, axis=1)[None, :]
    )
    return d.reshape(z.shape[:-1] + (e.shape[0],))


def direct_distances(z, codebook):
    """Σ (z − e)² computed without the expansion (for well-conditioned checks)."""
    z = np.asarray(z, np.float64)
    e = np.asarray(codebook, np.float64)
    flat = z.reshape(-1, z.shape[-1])
    d = np.sum((flat[:, None, :] - e[None, :, :]) ** 2, axis=-1)
    return d.reshape(z.shape[:-1] + (e.shape[0],))


def nearest(z, codebook):
    """argmin of the float64 distances, shape z.shape[:-1]."""
    return np.argmin(distances(z, codebook), axis=-1)


def vq_losses(z, codebook, commitment_cost, codebook_cost=1.0):
    """Loss values and gradients of equation (3)'s two VQ terms, with separate weights.

    codebook = α · mean ‖sg[z] − e_k‖²,  commit = β · mean ‖z − sg[e_k]‖²
    (means over every element). The gradients follow from the stop-gradients:

        d codebook / d e_j = α · 2 Σ_{z assigned to j} (e_j − z) / numel
        d commit   / d z   = β · 2 (z − e_k) / numel

    Returns (codebook_loss, commitment_loss, d codebook / d codebook_matrix,
    d commit / d z), float64.
    """
    z = np.asarray(z, np.float64)
    e = np.asarray(codebook, np.float64)
    idx = nearest(z, e).reshape(-1)
    flat = z.reshape(-1, e.shape[1])
    diff = e[idx] - flat  # (N, D): e_k − z
    numel = flat.size
    mse = np.mean(diff**2)
    grad_codebook = np.zeros_like(e)
    np.add.at(grad_codebook, idx, codebook_cost * 2.0 * diff / numel)
    grad_z = (commitment_cost * 2.0 * -diff / numel).reshape(z.shape)
    return codebook_cost * mse, commitment_cost * mse, grad_codebook, grad_z


def counts_and_sums(flat, indices, num_codes):
    """n_i = #{assigned to i}, s_i = Σ of the vectors assigned to i."""
    flat = np.asarray(flat, np.float64)
    indices = np.asarray(indices).reshape(-1)
    n = np.bincount(indices, minlength=num_codes).astype(np.float64)
    s = np.zeros((num_codes, flat.shape[-1]), np.float64)
    np.add.at(s, indices, flat)
    return n, s


def ema_step(cluster_size, embedding_sum, codebook, z, decay, epsilon):
    """One EMA step: assign with the *old* codebook, then equation (3) + smoothing.

    N ← γN + (1−γ)n,  m ← γm + (1−γ)Σz,
    Ñ = (N + ε) / (ΣN + Kε) · ΣN,  e = m / Ñ.

    Returns (N, m, e, indices, n).
    """
    codebook = np.asarray(codebook, np.float64)
    k, d = codebook.shape
    flat = np.asarray(z, np.float64).reshape(-1, d)
    idx = nearest(flat, codebook)
    n, s = counts_and_sums(flat, idx, k)
    big_n = decay * np.asarray(cluster_size, np.float64) + (1.0 - decay) * n
    m = decay * np.asarray(embedding_sum, np.float64) + (1.0 - decay) * s
    total = big_n.sum()
    smoothed = (big_n + epsilon) / (total + k * epsilon) * total
    return big_n, m, m / smoothed[:, None], idx, n


def perplexity(counts):
    """exp(−Σ p log p), p = counts / Σ counts, 0 log 0 = 0."""
    counts = np.asarray(counts, np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    return float(np.exp(-np.sum(nz * np.log(nz))))


def conv2d_same(x, kernel, bias):
    """Stride-1 'same' 2-D convolution (cross-correlation, as Keras), NHWC/HWIO."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw, cin, cout = kernel.shape
    assert x.shape[-1] == cin
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    b, h, w, _ = x.shape
    out = np.zeros((b, h, w, cout), np.float64)
    for i in range(h):
        for j in range(w):
            patch = padded[:, i : i + kh, j : j + kw, :]  # (b, kh, kw, cin)
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
    return out + np.asarray(bias, np.float64)


def relu(x):
    return np.maximum(x, 0.0)
