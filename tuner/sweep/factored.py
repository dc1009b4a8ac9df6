"""The factored search: time to target = samples to target / throughput.

Every knob acts on time to target through two factors that can be measured apart, each far
more cheaply and precisely than their product:

* **Systems knobs** (threads, precision, parallel strategy, compile, ...) and the batch size
  set the *throughput*: a steady-state rate that a short trial measures to a few percent and
  that does not depend on the seed. Stage 1 searches them in a study of its own
  (``<study>.throughput``), the training knobs held at their defaults; where its valid configs
  are few (:data:`WALK`), it walks them without repeats instead (:meth:`FactoredPolicy.prepare`).
* **Training knobs** (optimizer, its hyper-parameters, the learning rate) and the batch size set
  the *samples to target*: a count that does not depend on the machine's load. Stage 2 searches
  them in the sweep's study, each trial run on stage 1's fastest systems config for its batch
  size, and values it as samples to target / stage 1's throughput of that config: a predicted
  time to target in seconds, comparable to the baseline's. Samples to target depends on the
  seed, so the leading configs run again with the next seed (:mod:`.repeats`) and rank by
  their mean.
* The learning rate moves with the batch size: stage 2 searches a multiplier on a base rate
  scaled from the default's, linearly for SGD (Goyal et al. 2017), with the square root for
  the adaptive optimizers (Malladi et al. 2022); the rule is recorded on each trial.
* Stage 2 is pruned by asynchronous successive halving (Optuna's ``SuccessiveHalvingPruner``)
  over the work done: a trial reports the samples it has seen, the sweep turns them into
  predicted training time (samples / stage 1's throughput of its config), and at rungs of 1/3,
  2/3, 4/3 and 8/3 of the first completed trial's predicted time to target (the baseline's) only
  the better half of the configs there go on (:func:`halving_pruner`). Configs are compared at
  equal predicted time, whatever the machine's load, and a big batch size is not penalised for
  needing more samples when it runs them faster.

Precision and the other systems knobs may change the math; the confirmation round measures
the top predicted configs end to end (real time to target, paired with the default), so
nothing is assumed neutral.
"""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from perftune._optuna import ran_their_course
from perftune.objectives import get_objective
from perftune.sweep.context import trial_timeout
from perftune.sweep.lr import ScaledLrSpace, lr_rule, scaled_lr
from perftune.sweep.policy import SearchPolicy, Stage
from perftune.sweep.repeats import config_key

__all__ = ["TRAINING", "FactoredPolicy", "Throughputs", "applies", "lr_rule", "scaled_lr", "split"]

#: The knobs that act on samples to target (and not on throughput); every other knob of a
#: space but the batch size is a systems knob.
TRAINING = ("learning_rate", "optimizer", "momentum", "beta1", "beta2", "weight_decay")
#: The share of ``--trials`` stage 1 (throughput) runs.
THROUGHPUT_SHARE = 0.4
#: Seeds each of stage 2's leading configs runs with (samples to target depends on the seed:
#: :mod:`.repeats`).
LEADER_SEEDS = 2
#: Stage 2's successive halving: half the configs at a rung go on; the first rung is at this
#: share of the first completed trial's predicted time to target. Measured against a third and
#: 1/9 (one real 30-trial sweep each, docs/how-a-sweep-works.md): that pruned 14 of 18 trials.
REDUCTION, FIRST_RUNG = 2, 1 / 3
#: Stage 1 walks its valid configs (without repeats, in a seeded random order) when there are at
#: most this many times its trials (and at most ``WALK_GRID`` grid points to enumerate).
WALK, WALK_GRID = 2, 20_000
#: Completed trials before stage 2's pruner prunes anything (asynchronous halving would prune
#: the second trial unless it beat the first at every rung).
STARTUP = 3


def applies(ctx) -> str | None:
    """Why the factored search cannot run this sweep, or None when it can."""
    searched = set(ctx.space.searched())
    if ctx.objective.name != "time-to-target":
        return "it factors time to target (use it with --objective time-to-target)"
    if ctx.cfg.sampler == "grid":
        return "a grid covers its points jointly"
    if not {"batch_size", "learning_rate"} <= searched:
        return "the space must search batch_size and learning_rate"
    if ctx.cfg.trials < 6:
        return "it needs --trials 6 or more (two stages)"
    return None


def split(trials: int) -> tuple[int, int]:
    """Trials of stage 1 (throughput: short) and stage 2 (convergence) out of ``trials``."""
    first = max(3, round(THROUGHPUT_SHARE * trials))
    return first, trials - first


class Throughputs:
    """Stage 1's measurements, throughput per (systems config, batch size), and a model for the
    pairs it did not measure: log throughput = a(systems config) + b(batch size), fitted to the
    measured pairs (two-way additive in logs: a config twice as fast at one batch size is
    taken as twice as fast at another). A measured pair always speaks for itself."""

    def __init__(self, systems: list[str], rows: list[tuple[dict[str, Any], float]]) -> None:
        self.systems = systems
        self.configs: dict[str, dict[str, Any]] = {}  # systems key -> the systems config
        cells: dict[tuple[str, int], list[float]] = {}
        for config, value in rows:
            if value and value > 0:
                sk = self._systems_key(config)
                self.configs[sk] = {k: config[k] for k in systems if k in config}
                cells.setdefault((sk, int(config["batch_size"])), []).append(math.log(value))
        self.cells = {k: sum(v) / len(v) for k, v in cells.items()}
        self.a, self.b = _additive_fit(self.cells)

    @classmethod
    def from_study(cls, study, systems: list[str]) -> Throughputs:
        """Stage 1's throughputs: a completed trial's value; a trial the pruner stopped (slower
        than the median at its window) counts with the median of the windows it reported, which
        were timed like any other (without it, the slow half of the configs would be missing
        from the table and guessed by the model)."""
        from optuna.trial import TrialState

        rows = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.state == TrialState.COMPLETE:
                rows.append((t.user_attrs.get("config") or t.params, t.value))
            elif t.user_attrs.get("outcome") == "pruned" and t.intermediate_values:
                rows.append((t.user_attrs.get("config") or t.params, statistics.median(t.intermediate_values.values())))
        return cls(systems, rows)

    def _systems_key(self, config: dict[str, Any]) -> str:
        return json.dumps({k: config.get(k) for k in self.systems}, sort_keys=True)

    def _log_rate(self, sk: str, bs: int) -> float | None:
        if (sk, bs) in self.cells:
            return self.cells[(sk, bs)]
        if sk in self.a and bs in self.b:
            return self.a[sk] + self.b[bs]
        return None

    def of(self, config: dict[str, Any]) -> float | None:
        """Stage 1's throughput of this systems config at this batch size: measured, else the
        model's (both seen in stage 1); None when stage 1 saw neither."""
        log_rate = self._log_rate(self._systems_key(config), int(config["batch_size"]))
        return math.exp(log_rate) if log_rate is not None else None

    def systems_for(self, bs: int) -> dict[str, Any] | None:
        """The systems config fastest at ``bs`` (measured or by the model; at a batch size stage
        1 never ran, the one with the best ``a``); None before anything was measured."""
        if not self.configs:
            return None
        score = {sk: self._log_rate(sk, bs) if bs in self.b else self.a[sk] for sk in self.configs}
        return self.configs[max(score, key=lambda sk: score[sk])]


def _additive_fit(cells: dict[tuple[str, int], float], rounds: int = 50):
    """Least squares of ``cells[(s, b)] ~ a[s] + b[b]`` by alternating means."""
    a = {s: 0.0 for s, _ in cells}
    b = {bs: 0.0 for _, bs in cells}
    for _ in range(rounds):
        for key in b:
            vals = [v - a[s] for (s, bs), v in cells.items() if bs == key]
            b[key] = sum(vals) / len(vals)
        for key in a:
            vals = [v - b[bs] for (s, bs), v in cells.items() if s == key]
            a[key] = sum(vals) / len(vals)
    return a, b


class ConvergenceSpace(ScaledLrSpace):
    """Stage 2's view of the space: the batch size suggested first, the systems knobs taken
    from stage 1's fastest config at that batch size, the learning rate as a multiplier on the
    batch-size-scaled default (:class:`~perftune.sweep.lr.ScaledLrSpace`)."""

    def __init__(self, space, table: Throughputs, baseline: dict[str, Any]) -> None:
        super().__init__(space, baseline)
        self.table = table

    def given(self, trial) -> dict[str, Any]:
        bs = int(self.space.suggest(trial, "batch_size"))
        return {**(self.table.systems_for(bs) or {}), "batch_size": bs}


class FactoredPolicy(SearchPolicy):
    """Stage 1 (throughput) in ``<study>.throughput``, stage 2 (samples to target over stage 1's
    throughput) in the sweep's study. See the module docstring."""

    name = "factored"

    def __init__(self) -> None:
        #: Each stage that ran: its study, its trials (``describe``).
        self.account: dict[str, dict[str, Any]] = {}

    def prepare(self, ctx) -> None:
        """Before any helper worker starts: open stage 1's study (its baseline enqueued), and
        where the stage's valid configs are at most ``WALK`` x its trials, enqueue them in a
        seeded random order (the baseline's excluded, as many as the stage has trials), so that
        each stage-1 trial measures a config no other did (TPE may propose one again), and the
        additive model has to guess as few cells as the trials allow."""
        from perftune.sweep.study import open_study

        fast = self._throughput_stage(ctx)
        study = open_study(fast)
        if len(study.get_trials(deepcopy=False)) > 1:  # resumed: its walk (if any) was enqueued
            return
        configs = valid_configs(fast.space, limit=WALK_GRID)
        if configs is None or len(configs) > WALK * fast.cfg.trials:
            return
        base = config_key(fast.space.suggested_params(ctx.baseline))
        order = [c for c in configs if config_key(fast.space.suggested_params(c)) != base]
        random.Random(ctx.cfg.seed).shuffle(order)
        for config in order[: fast.cfg.trials - 1]:
            study.enqueue_trial(fast.space.suggested_params(config), user_attrs={"walk": True})

    def stages(self, ctx, study) -> Iterator[Stage]:
        from perftune.sweep.study import open_study

        first, second = split(ctx.cfg.trials)
        systems = [n for n in ctx.space.params if n not in TRAINING and n != "batch_size"]
        fast = self._throughput_stage(ctx)
        fast_study = open_study(fast)
        self.account["throughput"] = {"study": fast.study_name, "trials": first}
        yield Stage(fast, fast_study)
        wait_for_stage(fast, fast_study)  # every worker builds stage 2 on the same table
        table = Throughputs.from_study(fast_study, systems)
        self.account["throughput"]["measured"] = len(table.cells)
        if not table.cells:
            return
        slow = stage(ctx, "convergence", second, space=ConvergenceSpace(ctx.space, table, ctx.baseline),
                     fidelity="samples", leader_seeds=LEADER_SEEDS, predicted=True)  # fmt: skip
        slow.value = lambda config, metrics: predicted(table, config, metrics)
        slow.pruner_step = lambda config, samples: predicted_ms(table, config, samples)
        if ctx.cfg.pruner != "none":
            study.pruner = halving_pruner()
        self.account["convergence"] = {"study": ctx.study_name, "trials": second}
        yield Stage(slow, study)

    def study_trials(self, trials: int) -> int:
        return split(trials)[1]  # stage 2's: stage 1 has a study of its own

    @staticmethod
    def _throughput_stage(ctx):
        return stage(ctx, "throughput", split(ctx.cfg.trials)[0], objective="throughput",
                     space=ctx.space.fixed(TRAINING), study_name=f"{ctx.study_name}.throughput")  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"search": self.name, "stages": self.account}


def valid_configs(space, limit: int) -> list[dict[str, Any]] | None:
    """Every distinct config of ``space``'s grid (:meth:`~perftune.search_spaces.SearchSpace.grid`:
    every choice, int ranges in full up to 16 values) that breaks no constraint, in grid order;
    None when there are more than ``limit`` grid points to look at (or a float knob: no grid)."""
    import itertools
    import warnings

    import optuna

    grid = space.grid()
    if any(space.params[name].type == "float" and len(values) > 1 for name, values in grid.items()):
        return None  # a continuous knob: its grid is a sample, not every config
    if math.prod(len(v) for v in grid.values()) > limit:
        return None
    seen: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a grid value outside a dependent range: violations() says so
        for point in itertools.product(*grid.values()):
            config = space.sample(optuna.trial.FixedTrial(dict(zip(grid, point, strict=True))))
            if not space.violations(config):
                seen.setdefault(json.dumps(config, sort_keys=True, default=str), config)
    return list(seen.values())


def wait_for_stage(ctx, study) -> None:
    """Wait while other workers' trials of a finished stage run (bounded by a trial's timeout:
    without heartbeats, on a journal storage, a dead worker's trial stays RUNNING), so that
    every worker starts the next stage from the same measurements."""
    from optuna.trial import TrialState

    limit = time.monotonic() + trial_timeout(ctx.cfg, ctx.objective, ctx.budget)
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < limit:
        if ctx.should_stop():
            return
        time.sleep(0.5)


def stage(ctx, name: str, trials: int, objective: str | None = None, **changes: Any):
    """A copy of ``ctx`` for one stage: its trial count, objective, space, study (the failures,
    progress and cancel check stay shared)."""
    out = copy.copy(ctx)
    out.cfg = replace(ctx.cfg, trials=trials, batch_probe="off", objective=objective or ctx.cfg.objective)
    out.objective = get_objective(out.cfg.objective)
    out.objectives, out.multi = [out.objective], False
    out.stage = name
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def predicted_ms(table: Throughputs, config: dict[str, Any], samples: int) -> int:
    """Stage 2's pruner step for ``samples`` seen: the training time, in ms, they take at stage
    1's throughput of the config (the samples themselves where stage 1 saw neither)."""
    rate = table.of(config)
    return round(1000.0 * samples / rate) if rate else int(samples)


def halving_pruner(reduction: int = REDUCTION, first_rung: float = FIRST_RUNG, startup: int = STARTUP):
    """Stage 2's pruner: Optuna's asynchronous successive halving over predicted training ms
    (:func:`predicted_ms`), its first rung at ``first_rung`` x the first completed trial's value
    (seconds of predicted time to target: the baseline's, in ms), then x ``reduction`` each; at
    a rung a trial goes on only among the best ``1 / reduction`` of those that reached it. No
    trial is pruned before ``startup`` trials ran their course (completed, or trained to their
    budget: :func:`~perftune._optuna.ran_their_course`), but every trial's rungs are recorded
    from the first."""
    import optuna
    from optuna.trial import TrialState

    class Halving(optuna.pruners.BasePruner):
        def __init__(self) -> None:
            self.inner: optuna.pruners.BasePruner | None = None

        def prune(self, study, trial) -> bool:
            if self.inner is None:
                done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not done:
                    return False
                scale = 1000.0 * min(done, key=lambda t: t.number).value
                self.inner = optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=max(1, round(first_rung * scale)), reduction_factor=reduction)
            if not self.inner.prune(study, trial):
                return False
            return len(ran_their_course(study)) >= startup

    return Halving()


def predicted(table: Throughputs, config: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """A convergence trial's value: its samples to target over stage 1's throughput of its
    config (its own measured throughput where stage 1 did not measure that config)."""
    samples = metrics.get("samples")
    if not metrics.get("reached_target") or not samples:
        return None
    rate = table.of(config) or metrics.get("throughput_sps")
    return float(samples) / rate if rate else None
