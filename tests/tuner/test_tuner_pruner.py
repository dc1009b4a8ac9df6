"""The joint search's pruner (``perftune._optuna.make_pruner``): Optuna's median rule over the
trials that ran their course, the configs that trained to their budget without reaching the
target included, on a real in-memory Optuna study."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from perftune._optuna import make_pruner, ran_their_course

optuna.logging.set_verbosity(optuna.logging.ERROR)
CURVE = {step: 0.5 for step in range(12)}  # a peer's reported value at steps 0-11


def _study(peers: int, outcome: str | None, direction: str = "minimize", state=TrialState.PRUNED):
    """A study with ``peers`` finished trials, each with :data:`CURVE`, told ``state`` and
    recorded with ``outcome`` (perftune's note on a PRUNED trial)."""
    study = optuna.create_study(direction=direction, pruner=make_pruner("median", "converge"))
    for _ in range(peers):
        t = study.ask()
        for step, value in CURVE.items():
            t.report(value, step)
        if outcome:
            t.set_user_attr("outcome", outcome)
        study.tell(t, 1.0 if state == TrialState.COMPLETE else None, state=state)
    return study


def _pruned_at(study, values: list[float]) -> int | None:
    """The step at which a new trial reporting ``values`` is pruned, or None."""
    t = study.ask()
    for step, value in enumerate(values):
        t.report(value, step)
        if t.should_prune():
            return step
    return None


def test_configs_that_missed_the_target_start_the_pruner():
    study = _study(3, "not_reached")
    assert len(ran_their_course(study)) == 3
    # worse than the median of the three misses: pruned at the first step after the warm-up
    assert _pruned_at(study, [0.9] * 12) == 5
    assert _pruned_at(study, [0.4] * 12) is None  # better: goes on
    # Optuna's own MedianPruner counts completed trials only: over the same curves it never starts
    plain = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5))
    for t in study.get_trials(deepcopy=False):
        plain.add_trial(t)
    assert _pruned_at(plain, [0.9] * 12) is None


def test_completed_trials_count_as_they_do_in_optuna():
    assert _pruned_at(_study(3, None, state=TrialState.COMPLETE), [0.9] * 12) == 5


@pytest.mark.parametrize("outcome", ["pruned", "invalid", None])
def test_trials_stopped_early_do_not_start_it(outcome):
    """A pruned trial's curve is cut short; an invalid config never trained."""
    study = _study(3, outcome)
    assert ran_their_course(study) == []
    assert _pruned_at(study, [0.9] * 12) is None


def test_two_peers_are_too_few():
    assert _pruned_at(_study(2, "not_reached"), [0.9] * 12) is None


def test_the_best_value_so_far_is_what_is_compared():
    """A trial that was once better than the median is not pruned when it falls back (noise)."""
    assert _pruned_at(_study(3, "not_reached"), [0.9] * 5 + [0.3] + [0.9] * 6) is None


def test_a_maximised_value_is_pruned_below_the_median():
    study = _study(3, "not_reached", direction="maximize")
    assert _pruned_at(study, [0.4] * 12) == 5
    assert _pruned_at(study, [0.6] * 12) is None


def test_a_curve_of_nothing_but_nan_is_pruned():
    assert _pruned_at(_study(3, "not_reached"), [math.nan] * 12) == 5


def test_throughput_trials_are_judged_from_their_second_window():
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", "throughput"))
    for _ in range(3):
        t = study.ask()
        t.report(100.0, 0)
        t.report(100.0, 1)
        study.tell(t, 100.0)
    assert _pruned_at(study, [50.0, 50.0]) == 1


def test_no_trial_is_judged_before_a_third_of_the_best_configs_time():
    """The best completed trial reached the target at its 30th evaluation: its third, 10
    evaluations, is the warm-up (the 5-evaluation floor scales with the workload)."""
    study = _study(2, "not_reached")
    t = study.ask()
    for step in range(31):
        t.report(0.5 - step / 60, step)
    study.tell(t, 3.0)
    assert _pruned_at(study, [0.9] * 31) == 10
