"""PyTorch versions of the built-in digits workloads.

Sized so that a time-to-target trial's timed part lasts seconds on a 2-core CPU (the framework
default reaches the target in about 6 s for ``mlp-digits``, good configs in about 2 s), long enough to measure above process
start-up and timing noise, with a several-fold spread between good and bad configs.
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
    from torch import nn

    d, h = MLP_SIZE * MLP_SIZE, MLP_HIDDEN
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))


def _cnn_model():
    from torch import nn

    c, s = CNN_CHANNELS, CNN_SIZE // 4
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * c * s * s, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def mlp_digits() -> Workload:
    return digits_workload("mlp-digits", "torch", _mlp_model)


def cnn_digits() -> Workload:
    return digits_workload("cnn-digits", "torch", _cnn_model)
