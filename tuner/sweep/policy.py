"""How the search stage spends its trials: one small interface, two policies.

A :class:`SearchPolicy` says how the search stage of a sweep goes: its stages, in order, each
a space, an objective and an Optuna study whose sampler picks the next config, and when one is
done the next is built from what it measured. :func:`run_stages` runs them; the confirmation
round then re-measures the sweep study's best configs end to end, whatever the policy.

* ``joint`` (:mod:`.joint`): one study over every knob, each trial measured by the objective
  itself (for time to target: a full run to the target). Works for every objective.
* ``factored`` (:mod:`.factored`): time to target = samples to target / throughput. Stage 1
  measures throughput (short, precise, seed-free trials) over the systems knobs and the batch
  size; stage 2 searches the training knobs on the fastest systems config of each batch size,
  with the learning rate scaled with the batch size, and ranks configs by samples to target
  over stage 1's throughput.

``--search auto`` (the default) is ``joint``. Replayed against measured grids
(``benchmarks/search_quality.py``), the joint search did better on ``mlp-digits`` (648 cells,
many configs train) and on ``gpt-tiny`` (540 cells, 11 of 90 training configs reach the
target), the factored search on ``cnn-digits`` (360 cells, 5 of 60 training configs reach the
target): two workloads of three for joint
(docs/how-a-sweep-works.md, *Search policies*).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from perftune.errors import UsageError

__all__ = ["POLICIES", "SearchPolicy", "Stage", "choose", "get_policy", "run_stages"]

POLICIES = ("auto", "joint", "factored")


@dataclass
class Stage:
    """One stage of a search: ``ctx.cfg.trials`` trials on ``study``, each config drawn by the
    study's sampler from ``ctx.space`` and measured by ``ctx.objective`` (a stage's context is a
    copy of the sweep's with those changed: :func:`~.factored.stage`)."""

    ctx: Any
    study: Any


class SearchPolicy(abc.ABC):
    """The search stage of a sweep: which stages run, in which order, each over which space,
    objective and study; :func:`run_stages` runs them.

    Contract: :meth:`stages` yields the stages in order; the next is asked for only once the
    one before is done (its trials finished in every worker), so a later stage can be built on
    what an earlier one measured. A stage that owns a study of its own names it after the
    sweep's, in the same storage. When the last is done, the sweep study's COMPLETE trials,
    ranked by value, are the candidates of the confirmation round: their ``config`` user
    attribute is what the training code receives. Helper workers (``--workers``, ``perftune
    worker``) run the same stages on the same studies, so a stage must be the same in every
    worker, built from what the storage holds.
    """

    #: The name ``--search`` gives it.
    name: str = ""

    def prepare(self, ctx) -> None:
        """Before any helper worker starts (the sweep's own process only): open what the
        workers will share (the joint search needs nothing more than the sweep's study)."""
        return None

    @abc.abstractmethod
    def stages(self, ctx, study) -> Iterator[Stage]:
        """The search's stages, in order. See the class docstring."""

    def study_trials(self, trials: int) -> int:
        """How many of ``--trials`` run in the sweep's own study (the rest in stage studies)."""
        return trials

    def describe(self) -> dict[str, Any]:
        """What the report and MLflow say about how the search went (stages, trials each)."""
        return {"search": self.name}


def run_stages(policy: SearchPolicy, ctx, study, deadline: float | None) -> dict[str, Any] | None:
    """Run ``policy``'s stages, each until it has its trials, ``deadline`` (a
    ``time.monotonic()`` value) passes or the sweep is cancelled (no later stage then). Returns
    why a stage stopped early (``{"reason": "patience", "after_trials": n}``) or None."""
    from perftune.sweep.search import run_trials

    stopped = None
    for stage in policy.stages(ctx, study):
        stopped = run_trials(stage.ctx, stage.study, deadline) or stopped
        ctx.cancelled = stage.ctx.cancelled
        if ctx.cancelled:
            break
    return stopped


def choose(ctx) -> str:
    """The policy ``--search`` names: ``auto`` is ``joint`` (see the module docstring); an
    explicit ``factored`` is checked against the sweep (:func:`~.factored.applies`)."""
    from perftune.sweep.factored import applies

    wanted = ctx.cfg.search
    why_not = applies(ctx) if wanted == "factored" else None
    if why_not:
        raise UsageError(f"--search factored: {why_not} (use --search joint)")
    return "joint" if wanted == "auto" else wanted


def get_policy(ctx) -> SearchPolicy:
    """The policy ``--search`` names for this sweep (``auto`` resolved by :func:`choose`)."""
    from perftune.sweep.factored import FactoredPolicy
    from perftune.sweep.joint import JointPolicy

    return FactoredPolicy() if choose(ctx) == "factored" else JointPolicy()
