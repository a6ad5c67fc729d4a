"""PNG image grids (originals next to reconstructions, samples)."""

import numpy as np
import tensorflow as tf

from tfvqvae import atomic


def tile(images, columns, padding=1, min_tile=32):
    """Tiles (N, H, W, C) images in [0, 1] into one uint8 (rows·H', columns·W', C) array.

    Images are clipped to [0, 1] and scaled up by an integer factor (nearest
    neighbour) until each tile is at least ``min_tile`` pixels high.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(
            f"Expected images of shape (N, H, W, C). Received: shape={images.shape}"
        )
    n, h, w, c = images.shape
    scale = max(1, -(-min_tile // h))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    rows = -(-n // columns)
    grid = np.ones(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c),
        np.float32,
    )
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = image
    return np.round(grid * 255.0).astype(np.uint8)


def save_png(path, grid):
    """Writes a uint8 (H, W, C) array as a PNG file, atomically."""
    atomic.write_bytes(path, tf.io.encode_png(grid).numpy())


def save_reconstruction_grid(path, originals, reconstructions, pairs_per_row=8):
    """Saves originals and reconstructions side by side: o1 r1 o2 r2 ..."""
    originals = np.asarray(originals)
    reconstructions = np.asarray(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(
            "originals and reconstructions must have the same shape. Received: "
            f"{originals.shape} and {reconstructions.shape}"
        )
    interleaved = np.stack([originals, reconstructions], axis=1).reshape(
        (-1,) + originals.shape[1:]
    )
    save_png(path, tile(interleaved, columns=2 * min(pairs_per_row, len(originals))))
