"""A user's own MindSpore workload for perftune: a small MLP regressor on synthetic data.

Tune it with::

    perftune sweep --framework mindspore --workload examples/ms_workload.py:make_workload

The same problem as ``examples/my_workload.py`` (PyTorch), written for MindSpore: a model factory
returning an ``nn.Cell``, the data as NumPy arrays, a loss, a metric and a target. perftune owns
the training loop (batch size, optimizer, learning rate, PyNative vs graph, AMP level, dataset
workers, threads, data parallelism through ``msrun``).

Rules of the game, because this file is imported inside perftune's trial worker process (the
MindSpore virtualenv, which has NumPy but not perftune's own dependencies):

* ``make_workload()`` takes no argument and returns a :class:`perftune.Workload` with
  ``framework="mindspore"``; keep it cheap (it is also called to describe the workload).
* Import ``mindspore`` inside the factories, not at module level.
* ``data()`` returns host NumPy arrays, loaded once per worker and inherited by every trial.
  perftune feeds them through a ``mindspore.dataset`` pipeline (shuffled, batched).
* ``model()`` returns a fresh, untrained ``nn.Cell`` each call. With ``exec_mode: graph`` its
  ``construct`` is compiled, so keep it to MindSpore graph syntax.
* A callable metric gets MindSpore Tensors: the float32 outputs on the validation inputs (eval
  mode) and the validation targets; it returns a plain float.
"""

from __future__ import annotations

import numpy as np

from perftune import Workload

N_TRAIN, N_VAL, N_FEATURES, HIDDEN = 8192, 2048, 16, 64
SEED = 0


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: a nonlinear function of 16 Gaussian inputs, fixed
    seed, standardised float32 targets of shape ``(N, 1)`` (what ``mse`` needs)."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N_TRAIN + N_VAL, N_FEATURES)).astype(np.float32)
    w1, w2, w3, w4 = (rng.standard_normal((N_FEATURES, 1)) / np.sqrt(N_FEATURES) for _ in range(4))
    y = np.sin(3.0 * x @ w1) + 0.5 * (x @ w2) ** 2 + np.cos(2.0 * x @ w3) * (x @ w4)
    y = y + 0.05 * rng.standard_normal(y.shape)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def make_model():
    """A fresh 16-64-64-1 MLP as a MindSpore ``nn.Cell``."""
    from mindspore import nn

    return nn.SequentialCell(
        nn.Dense(N_FEATURES, HIDDEN), nn.ReLU(),
        nn.Dense(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Dense(HIDDEN, 1),
    )  # fmt: skip


def r_squared(outputs, targets) -> float:
    """The coefficient of determination over the whole validation set (higher is better)."""
    o = outputs.asnumpy().astype(np.float64)
    t = targets.asnumpy().reshape(o.shape).astype(np.float64)
    return float(1.0 - ((o - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())


def make_workload() -> Workload:
    return Workload(
        name="ms-synthetic-regression",
        framework="mindspore",
        model=make_model,
        data=make_data,
        loss="mse",
        metric=r_squared,
        target=0.60,
        mode="max",
        budget_s=30.0,
        eval_interval_s=0.2,
        flops_per_sample=6.0 * (N_FEATURES * HIDDEN + HIDDEN * HIDDEN + HIDDEN),
        description="16-64-64-1 MLP regressor (MindSpore) on synthetic data; target val R^2 0.60",
    )
