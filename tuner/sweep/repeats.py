"""Seed repeats of the search's leaders: a config is ranked by its mean over seeds.

Time to target (and samples to target) depend on the seed: one run of a config can be lucky by
tens of percent on a small workload, and the sampler's best trial is then the luckiest config,
not the fastest one. After every trial, each of the ``top`` configs (ranked by their mean value)
that has run with fewer than ``seeds`` seeds gets one more run with the next seed, enqueued
ahead of the sampler's next proposal (once ``2 * top`` configs are ranked, and never the
baseline, which the confirmation round measures anyway). So the few configs that could win are seed-averaged, at
the cost of about one trial in six, and a config that was only lucky drops out of the lead.

A repeat is an ordinary trial (it counts towards ``--trials``, the sampler sees it as a second
observation of the same point); its user attributes ``repeat_of`` (the first run's trial
number) and ``repeat`` (1, 2, ...: its seed offset) say what it is, ``repeat_config`` is the
exact config to run, and ``repeat_enqueued`` says that the first run was enqueued with its own
params (the baseline, a warm start) rather than sampled.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

__all__ = ["config_key", "enqueue_repeats", "ranked"]


def config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def ranked(trials: list, direction: str) -> list[tuple[float, list]]:
    """Finished ``trials`` grouped by config, best mean value first: ``(mean, runs)`` per config
    whose every run completed (a config with a seed short of the target, or failed, is not
    ranked: it cannot be relied on to win)."""
    from optuna.trial import TrialState

    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(config_key(t.user_attrs.get("config") or t.params), []).append(t)
    means = [(statistics.fmean(t.value for t in runs), runs) for runs in groups.values()
             if all(t.state == TrialState.COMPLETE for t in runs)]  # fmt: skip
    means.sort(key=lambda m: m[0], reverse=direction == "maximize")
    return means


def enqueue_repeats(study, trials: list, direction: str, top: int, seeds: int, room: int | None = None) -> int:
    """Enqueue the next seed of each of the ``top`` configs of ``trials`` (the study's finished
    trials that count) run with fewer than ``seeds`` seeds, none already waiting, once at least
    ``2 * top`` configs are ranked, and no more than ``room`` trials (the stage's trials left)
    waiting in all. The baseline is never repeated here: the confirmation round measures it
    anyway. Returns how many were enqueued."""
    from optuna.trial import TrialState

    pending = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    waiting = {t.user_attrs.get("repeat_of") for t in pending} - {None}
    queued = sum(t.state == TrialState.WAITING for t in pending)
    order = ranked(trials, direction)
    if len(order) < 2 * top:  # too few configs yet for a lead to mean anything
        return 0
    added = 0
    for _, runs in order[:top]:
        if room is not None and queued + added >= room:
            break
        first = min(runs, key=lambda t: t.number)
        if len(runs) >= seeds or first.number in waiting or first.user_attrs.get("baseline"):
            continue
        config = first.user_attrs.get("config") or first.params
        enqueued = bool(first.user_attrs.get("baseline") or "warm_start" in first.user_attrs)
        study.enqueue_trial(first.params, user_attrs={"repeat_of": first.number, "repeat": len(runs),
                                                      "repeat_config": config, "repeat_enqueued": enqueued})  # fmt: skip
        added += 1
    return added
