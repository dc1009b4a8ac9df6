"""A user's own PyTorch workload for perftune: a small MLP regressor on synthetic data.

Tune it with::

    perftune sweep --workload examples/my_workload.py:make_workload --trials 20

perftune owns the training loop (that is where the knobs it tunes live: batch size, optimizer,
learning rate, threads, precision, data parallelism). A workload only says *what* to train and
*when it is good enough*: a model factory, the data, a loss, a metric and a target on it.

Rules of the game, because this file is imported inside perftune's trial worker process:

* ``make_workload()`` takes no argument and returns a :class:`perftune.Workload`. Keep it cheap: it
  is called to describe the workload too (name, target...), so build nothing heavy in it.
* Import ``torch`` inside the factories, not at module level, so that importing the file costs
  nothing where torch is not needed (the sweep process never imports it).
* ``data()`` is called once per worker, before trials are forked, and its arrays are inherited
  by every trial: return host (CPU) arrays, and make them deterministic so trials compare.
* ``model()`` must return a *fresh, untrained* model each call (one per trial).
"""

from __future__ import annotations

import numpy as np

from perftune import Workload

#: Shape of the problem. Sized so that the framework-default config (batch 32, Adam at lr 1e-3,
#: fp32, all cores) reaches the target in about 2-2.5 s of training on a 2-core CPU (measured:
#: 2.2-2.4 s), and good configs in well under a second: long enough to measure above timing
#: noise, short enough for a sweep of a few dozen trials.
N_TRAIN, N_VAL, N_FEATURES, HIDDEN = 8192, 2048, 16, 64
SEED = 0


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: a nonlinear function of 16 Gaussian inputs (a sine,
    a square and a product of projections: an MLP needs a few thousand steps to fit it).

    Generated with a fixed NumPy seed (no download, the same arrays in every process). The
    target ``y`` has shape ``(N, 1)`` to match the model's output, as ``mse`` needs; float32
    throughout, which is what the model computes in.
    """
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N_TRAIN + N_VAL, N_FEATURES)).astype(np.float32)
    w1, w2, w3, w4 = (rng.standard_normal((N_FEATURES, 1)) / np.sqrt(N_FEATURES) for _ in range(4))
    y = np.sin(3.0 * x @ w1) + 0.5 * (x @ w2) ** 2 + np.cos(2.0 * x @ w3) * (x @ w4)
    y = y + 0.05 * rng.standard_normal(y.shape)  # a little label noise: R^2 cannot reach 1.0
    y = ((y - y.mean()) / y.std()).astype(np.float32)  # standardised: the MSE is ~1 - R^2
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def make_model():
    """A fresh 16-64-64-1 MLP (called once per trial, inside the trial process)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(N_FEATURES, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, 1),
    )  # fmt: skip


def r_squared(outputs, targets) -> float:
    """A custom metric: the coefficient of determination R^2 over the whole validation set.

    perftune calls it with the model's outputs on the validation inputs (a float tensor, in
    eval mode and without gradients) and the validation targets, and wants a plain float back.
    1.0 is a perfect fit, 0.0 is no better than predicting the mean: higher is better, hence
    ``mode="max"`` below. Its ``__name__`` is what perftune logs as the metric's name.
    """
    targets = targets.reshape(outputs.shape).float()
    residual = ((outputs - targets) ** 2).sum()
    total = ((targets - targets.mean()) ** 2).sum()
    return float(1.0 - residual / total)


def make_workload() -> Workload:
    return Workload(
        # The name keys everything perftune stores: the MLflow experiment, the Optuna study
        # (``synthetic-regression-torch-cpu-time-to-target``) and the best config that
        # ``perftune best --workload synthetic-regression`` / ``perftune.best_config`` return.
        name="synthetic-regression",
        framework="torch",
        model=make_model,
        data=make_data,
        # The training loss: "mse" or "cross_entropy" by name, or any callable
        # ``loss(outputs, targets) -> scalar tensor``. Beware: with a callable loss perftune
        # hands the targets over as float tensors, even integer class labels, so a callable
        # classification loss must convert them back (``targets.long()``).
        loss="mse",
        # The quality metric, evaluated on the validation set every ``eval_interval_s``
        # training seconds: "accuracy" or "mse" by name, or a callable like ``r_squared``.
        metric=r_squared,
        # Quality target: a trial's time-to-target is the training time (evaluation excluded)
        # until the metric first reaches it. With ``metric="mse"`` one would instead write
        # ``target=0.06, mode="min"`` (the targets are standardised, so MSE ~ 1 - R^2).
        target=0.94,
        mode="max",  # "max": the metric must rise to the target; "min": fall to it
        # Training-time cap per trial: a config that has not reached the target after
        # ``budget_s`` training seconds counts as "not reached" (perftune also tightens the cap
        # to 1.5x the best time found so far, so hopeless trials stop early).
        budget_s=30.0,
        # Training seconds between evaluations: the resolution of the time-to-target figure
        # (finer costs more evaluation time, which is measured but not counted in the
        # objective), and the points at which the pruner may stop a bad trial.
        eval_interval_s=0.1,
        # Forward+backward FLOPs per sample (~6 per weight), for model-FLOPs-utilisation reports.
        flops_per_sample=6.0 * (N_FEATURES * HIDDEN + HIDDEN * HIDDEN + HIDDEN),
        description="16-64-64-1 MLP regressor on synthetic data; target validation R^2 0.94",
    )
