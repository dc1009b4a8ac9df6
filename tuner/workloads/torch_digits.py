"""PyTorch versions of the built-in digits workloads.

Sized so that a time-to-target trial's timed part lasts seconds on a 2-core CPU (the framework
default reaches the target in about 6 s for ``mlp-digits``, good configs in about 2 s), long enough to measure above process
start-up and timing noise, with a several-fold spread between good and bad configs.
"""

from __future__ import annotations

from tuner.workload import Workload
from tuner.workloads.digits_data import digits_split

MLP_SIZE, MLP_HIDDEN = 32, 2048
CNN_SIZE, CNN_CHANNELS = 32, 16


def _mlp_data():
    x_tr, y_tr, x_va, y_va = digits_split(MLP_SIZE)
    return x_tr.reshape(len(x_tr), -1), y_tr, x_va.reshape(len(x_va), -1), y_va


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


def _mlp_flops() -> float:
    d, h = MLP_SIZE * MLP_SIZE, MLP_HIDDEN
    return 6.0 * (d * h + h * h + h * 10)  # forward + backward ~ 3x forward, 2 FLOPs per MAC


def _cnn_flops() -> float:
    c, s = CNN_CHANNELS, CNN_SIZE
    conv1 = s * s * c * 9
    conv2 = (s // 2) ** 2 * 2 * c * c * 9
    fc = 2 * c * (s // 4) ** 2 * 128 + 128 * 10
    return 6.0 * (conv1 + conv2 + fc)


def mlp_digits() -> Workload:
    return Workload(
        name="mlp-digits",
        framework="torch",
        model=_mlp_model,
        data=_mlp_data,
        target=0.96,
        budget_s=30.0,
        eval_interval_s=0.2,
        flops_per_sample=_mlp_flops(),
        description="MLP 1024-2048-2048-10 on load_digits upsampled to 32x32; target val acc 0.96",
    )


def cnn_digits() -> Workload:
    return Workload(
        name="cnn-digits",
        framework="torch",
        model=_cnn_model,
        data=lambda: digits_split(CNN_SIZE),
        target=0.98,
        budget_s=30.0,
        eval_interval_s=0.2,
        flops_per_sample=_cnn_flops(),
        description="2-conv CNN on load_digits upsampled to 32x32; target val acc 0.98",
    )
