"""How the search stage spends its trials: one small interface, two policies.

A :class:`SearchPolicy` runs the search stage of a sweep (which configs to try, in which
stages, when a stage is done) on the sweep's Optuna study; the confirmation round then
re-measures the study's best configs end to end, whatever the policy.

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
from typing import Any

from perftune.errors import UsageError

__all__ = ["POLICIES", "SearchPolicy", "choose", "get_policy"]

POLICIES = ("auto", "joint", "factored")


class SearchPolicy(abc.ABC):
    """The search stage of a sweep.

    Contract: :meth:`search` runs trials on ``study`` (and any stage studies it owns, named
    after it in the same storage) until its stages are done, ``deadline`` (a
    ``time.monotonic()`` value) passes or the sweep is cancelled (``ctx.cancelled``); it returns
    why it stopped early (``{"reason": ..., "after_trials": n}``) or None. Every trial it runs is
    an ordinary Optuna trial logged to MLflow with its ``stage`` tag. When it returns, the
    study's COMPLETE trials, ranked by value, are the candidates of the confirmation round:
    their ``config`` user attribute is what the training code receives. Helper workers
    (``--workers``, ``perftune worker``) run the same :meth:`search` on the same studies, so
    it must share out each stage's trials through the storage (``run_trials`` does) and start
    a stage only once the stage it builds on is done in every worker.
    """

    #: The name ``--search`` gives it.
    name: str = ""

    def prepare(self, ctx) -> None:
        """Before any helper worker starts (the sweep's own process only): open what the
        workers will share (the joint search needs nothing more than the sweep's study)."""
        return None

    @abc.abstractmethod
    def search(self, ctx, study, deadline: float | None) -> dict[str, Any] | None:
        """Run the search stage(s). See the class docstring."""

    def study_trials(self, trials: int) -> int:
        """How many of ``--trials`` run in the sweep's own study (the rest in stage studies)."""
        return trials

    def describe(self) -> dict[str, Any]:
        """What the report and MLflow say about how the search went (stages, trials each)."""
        return {"search": self.name}


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
