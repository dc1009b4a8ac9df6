"""A workload that costs (almost) nothing, so a sweep over it measures perftune's own cost.

A 4-2 linear model on 64 fixed samples, with a target (validation accuracy >= 0.0) that the
first evaluation always meets, and an evaluation interval of a microsecond: a trial is one
optimizer step and one evaluation, a few milliseconds in all. ``benchmarks/overhead.py`` runs
sweeps over it (``--workload benchmarks/noop_workload.py:make_workload``).
"""

from __future__ import annotations

import numpy as np

from perftune import Workload


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x[:64], y[:64], x[64:], y[64:]


def _model():
    from torch import nn

    return nn.Linear(4, 2)


def make_workload() -> Workload:
    return Workload(
        name="noop",
        framework="torch",
        model=_model,
        data=_data,
        loss="cross_entropy",
        metric="accuracy",
        target=0.0,  # any accuracy reaches it: the trial stops at its first evaluation
        mode="max",
        budget_s=5.0,
        eval_interval_s=1e-6,  # evaluate after the first training step
        description="no-op: 4-2 linear model, target reached at the first evaluation",
    )
