"""The built-in digits workloads, minus the model: data, sizes, FLOPs, target, budget.

scikit-learn's bundled ``load_digits`` images as a train/validation split (NumPy only), and
:func:`digits_workload`, which every framework's ``mlp-digits`` / ``cnn-digits`` goes through,
so that their best configs compare: the same images, upsampling, normalisation and split, the
same target, budget and evaluation interval. Each framework supplies only its model (the same
layers). Nothing is downloaded: the data ships inside scikit-learn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from perftune.workload import Workload

MLP_SIZE, MLP_HIDDEN = 32, 2048
CNN_SIZE, CNN_CHANNELS = 32, 16


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


def mlp_data():
    """Flattened images ``(N, 1024)`` for the MLP."""
    x_tr, y_tr, x_va, y_va = digits_split(MLP_SIZE)
    return x_tr.reshape(len(x_tr), -1), y_tr, x_va.reshape(len(x_va), -1), y_va


def cnn_data(channels_last: bool = False):
    """Images ``(N, 1, 32, 32)``, or ``(N, 32, 32, 1)`` with ``channels_last``."""
    x_tr, y_tr, x_va, y_va = digits_split(CNN_SIZE)
    if channels_last:
        x_tr, x_va = (np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in (x_tr, x_va))
    return x_tr, y_tr, x_va, y_va


def mlp_flops() -> float:
    d, h = MLP_SIZE * MLP_SIZE, MLP_HIDDEN
    return 6.0 * (d * h + h * h + h * 10)  # forward + backward ~ 3x forward, 2 FLOPs per MAC


def cnn_flops() -> float:
    c, s = CNN_CHANNELS, CNN_SIZE
    conv1 = s * s * c * 9
    conv2 = (s // 2) ** 2 * 2 * c * c * 9
    fc = 2 * c * (s // 4) ** 2 * 128 + 128 * 10
    return 6.0 * (conv1 + conv2 + fc)


_SPECS: dict[str, dict[str, Any]] = {
    "mlp-digits": {"target": 0.96, "flops": mlp_flops, "data": mlp_data,
                   "description": "MLP 1024-2048-2048-10 on load_digits upsampled to 32x32; "
                                  "target val acc 0.96"},
    "cnn-digits": {"target": 0.98, "flops": cnn_flops, "data": cnn_data,
                   "description": "2-conv CNN on load_digits upsampled to 32x32; "
                                  "target val acc 0.98"},
}  # fmt: skip


def digits_workload(name: str, framework: str, model: Callable[[], Any],
                    data: Callable[[], Any] | None = None) -> Workload:  # fmt: skip
    """``mlp-digits`` or ``cnn-digits`` for ``framework`` with that framework's ``model``
    (``data`` only to change the layout of the same arrays, e.g. channels-last)."""
    spec = _SPECS[name]
    return Workload(name=name, framework=framework, model=model, data=data or spec["data"],
                    target=spec["target"], budget_s=30.0, eval_interval_s=0.2,
                    flops_per_sample=spec["flops"](), description=spec["description"])
