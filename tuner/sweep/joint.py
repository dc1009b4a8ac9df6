"""The joint search: one Optuna study over every knob, each trial measured by the objective."""

from __future__ import annotations

from typing import Any

from perftune.sweep.policy import SearchPolicy
from perftune.sweep.search import run_trials

__all__ = ["JointPolicy"]


class JointPolicy(SearchPolicy):
    """Every trial samples the whole space and is measured by the sweep's objective itself."""

    name = "joint"

    def search(self, ctx, study, deadline: float | None) -> dict[str, Any] | None:
        return run_trials(ctx, study, deadline)
