"""MindSpore versions of the built-in digits workloads.

The same architectures, data split (:func:`~perftune.workloads.digits_data.digits_split`), target,
budget and evaluation interval as :mod:`perftune.workloads.torch_digits`, so that best configs
compare across frameworks. ``model`` returns an ``nn.Cell`` producing logits; MindSpore is
imported inside the factories only.
"""

from __future__ import annotations

from perftune.workload import Workload
from perftune.workloads.digits_data import (
    CNN_CHANNELS,
    CNN_SIZE,
    MLP_HIDDEN,
    MLP_SIZE,
    digits_workload,
)


def _mlp_model():
    from mindspore import nn

    d, h = MLP_SIZE * MLP_SIZE, MLP_HIDDEN
    return nn.SequentialCell(nn.Dense(d, h), nn.ReLU(), nn.Dense(h, h), nn.ReLU(), nn.Dense(h, 10))


def _cnn_model():
    from mindspore import nn

    c, s = CNN_CHANNELS, CNN_SIZE // 4
    return nn.SequentialCell(
        nn.Conv2d(1, c, 3, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(c, 2 * c, 3, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Dense(2 * c * s * s, 128), nn.ReLU(), nn.Dense(128, 10),
    )  # fmt: skip


def mlp_digits() -> Workload:
    return digits_workload("mlp-digits", "mindspore", _mlp_model)


def cnn_digits() -> Workload:
    return digits_workload("cnn-digits", "mindspore", _cnn_model)
