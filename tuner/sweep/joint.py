"""The joint search: one Optuna study over every knob, each trial measured by the objective."""

from __future__ import annotations

from collections.abc import Iterator

from perftune.sweep.policy import SearchPolicy, Stage

__all__ = ["JointPolicy"]


class JointPolicy(SearchPolicy):
    """Every trial samples the whole space and is measured by the sweep's objective itself."""

    name = "joint"

    def stages(self, ctx, study) -> Iterator[Stage]:
        yield Stage(ctx, study)
