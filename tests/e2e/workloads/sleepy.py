"""A near-no-op workload whose trials take a controlled time (the model factory sleeps), so a
test can kill a sweep, or drop its database connections, in the middle of a trial."""

from __future__ import annotations

import time

import numpy as np

from perftune import Workload


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x[:64], y[:64], x[64:], y[64:]


def _sleepy(seconds: float):
    def model():
        from torch import nn

        time.sleep(seconds)  # in the trial process, before training
        return nn.Linear(4, 2)

    return model


def _workload(seconds: float) -> Workload:
    return Workload(name="sleepy", framework="torch", model=_sleepy(seconds), data=_data,
                    loss="cross_entropy", metric="accuracy", target=0.0, mode="max", budget_s=5.0,
                    eval_interval_s=1e-6, description=f"no-op whose trials take {seconds} s")  # fmt: skip


def two_seconds() -> Workload:
    return _workload(2.0)


def half_second() -> Workload:
    return _workload(0.5)
