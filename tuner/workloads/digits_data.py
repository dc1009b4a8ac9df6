"""scikit-learn's bundled ``load_digits`` images as a train/validation split (NumPy only).

Shared by every framework's digits workloads so that their best configs compare: the same
images, upsampling, normalisation and split. Nothing is downloaded: the data ships inside
scikit-learn.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def digits_split(size: int = 32, seed: int = 0, val_fraction: float = 0.2):
    """Return ``(x_train, y_train, x_val, y_val)``: float32 images ``(N, 1, size, size)`` in
    [0, 1] (bilinear upsampling of the 8x8 originals) and int64 labels; stratified split."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    if size != 8:
        images = zoom(images, (1, size / 8, size / 8), order=1).astype(np.float32)
    images = np.clip(images, 0.0, 1.0)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(
        images, labels, test_size=val_fraction, random_state=seed, stratify=labels
    )
    return x_tr, y_tr, x_va, y_va
