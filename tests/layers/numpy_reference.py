"""Independent NumPy references for the layer tests (float64 throughout).

Nothing here imports tfvqvae: these are the formulas the layers are checked
against (module docstrings of ``vector_quantizer.py`` / ``vector_quantizer_ema.py``
and equation (3) of the FengHZ note, with Laplace smoothing).
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
