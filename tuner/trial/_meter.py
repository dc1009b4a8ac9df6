"""The clock of one rank of a trial (stdlib only): what ``Trial.step``, ``eval_due``,
``evaluating`` and ``report`` measure, so that every framework and every training loop (the
user's or perftune's built-in one) means the same thing by time to target and throughput.

Measures (``Plan.measure``):

* ``converge``: time to the quality target, as MLPerf measures it. The training clock starts at
  the loop's first call (``start``) and runs while the loop trains; time inside ``evaluating()``
  (and in ``report`` itself) is excluded and reported apart. An evaluation is due every
  ``eval_interval_s`` of *training* time, and once more when the budget is spent. A report
  stops the trial when the target is reached, the pruner says so, or the budget is spent.
* ``throughput``: training samples per second. Warm up (at least 3 steps and ``warmup_s``),
  calibrate a window of about ``window_s``, then time ``repeats`` windows with the device
  synchronised at their edges; the median window and the spread are reported.
* ``probe``: ``probe_steps`` steps and stop (does this batch size fit in memory?).
* ``free``: outside a sweep (a tuned config used for real): the clock runs as for ``converge``
  and reports are recorded, but nothing stops the loop except reaching the target when
  ``stop_at_target`` is set.

Several ranks (DDP, FSDP, multi-worker): every rank runs the same loop, so every rank calls
``step`` the same number of times and ``report`` at the same evaluations. Decisions that depend
on rank 0's clock or metric are broadcast from rank 0 at those calls (every ``check_every``
steps, to keep collectives rare), so ``should_stop`` agrees everywhere.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from perftune.errors import Diverged, NothingMeasured

__all__ = ["MEASURES", "Collectives", "Meter", "Plan", "StopTrial"]

MEASURES = ("converge", "throughput", "probe", "free")

NO_STEPS = "the training code ended without calling trial.step(): perftune had nothing to measure"

# Codes rank 0 broadcasts.
_GO, _DUE, _STOP, _REACHED, _PRUNED, _BUDGET, _DIVERGED = range(7)
_REASONS = {_STOP: "budget", _REACHED: "target", _PRUNED: "pruned", _BUDGET: "budget"}


class StopTrial(SystemExit):
    """Raised by ``Trial.step()`` once the trial has ended (target reached, pruned, budget
    spent, measurement complete), so that a loop that never asks ``should_stop()`` still ends.

    It is a :class:`SystemExit` with status 0: perftune catches it around a training function,
    and a launched script that does not catch it exits cleanly. ``except Exception`` in the
    user's loop does not swallow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(0)
        self.reason = reason


class Collectives(Protocol):
    """What the meter needs from the framework (identities with one process)."""

    def sync(self) -> None:
        """Block until queued device work is done."""

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""

    def loss_value(self, loss: Any) -> float:
        """``loss`` as a float, the same on every rank (NaN everywhere if not finite anywhere)."""


class Reporter(Protocol):
    def report(self, step: int, value: float) -> bool:
        """Send an intermediate value to the pruner; True if the trial should stop."""


@dataclass(frozen=True)
class Plan:
    """What a trial measures (from the sweep's request and the workload's description)."""

    measure: str = "converge"
    target: float | None = None
    mode: str = "max"
    budget_s: float = 60.0
    eval_interval_s: float = 0.25
    warmup_s: float = 0.5
    window_s: float = 0.5
    repeats: int = 5
    probe_steps: int = 2
    stop_at_target: bool = True
    #: The pruner's steps: ``"time"`` (the evaluation's number: evaluations are due at equal
    #: training time) or ``"samples"`` (training samples seen, all ranks).
    fidelity: str = "time"

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.mode == "max" else value <= self.target

    def gap(self, value: float) -> float:
        """Distance to the target, lower is better: what the pruner sees."""
        if self.target is None:
            return -value if self.mode == "max" else value
        return self.target - value if self.mode == "max" else value - self.target


class Meter:
    """One rank's clock. ``channel`` is rank 0's line to the pruner (None elsewhere)."""

    def __init__(self, plan: Plan, coll: Collectives, channel: Reporter | None = None, *,
                 rank: int = 0, world: int = 1, check_every: int = 1, energy: Any = None,
                 t_created: float | None = None) -> None:
        if plan.measure not in MEASURES:
            raise ValueError(f"unknown measure {plan.measure!r}")
        self.plan, self.coll, self.channel = plan, coll, channel
        self.rank, self.world = rank, world
        self.check_every = max(1, int(check_every)) if plan.measure in ("converge", "free") else 1
        self.energy = energy
        self.t_created = time.perf_counter() if t_created is None else t_created
        self.setup_s: float | None = None
        self.started = self.running = self.stopped = False
        self.reason: str | None = None
        self.steps = self.samples = 0
        self.last_loss: Any = None
        self.loss_v = math.nan
        # converge
        self.train_s = self.eval_s = 0.0
        self.seg = 0.0
        self.evals = 0
        self.due = self.due_taken = False
        self.dues = 0  # evaluations that came due
        self.metric = math.nan
        self.reached = self.pruned = False
        self.curve: list[list[float]] = []
        # throughput
        self.per_window = 0
        self.warmup_steps = 0
        self.windows: list[float] = []
        self.sizes: list[float] = []
        self.w_t = self.w_samples = self.w_steps = 0
        self.timed_s, self.timed_samples = 0.0, 0

    # ------------------------------------------------------------------ the loop's calls
    def start(self) -> None:
        """Start the clock (the first ``step`` or ``should_stop`` does it)."""
        if self.started:
            return
        self.started = self.running = True
        self.seg = time.perf_counter()
        self.setup_s = self.seg - self.t_created
        if self.energy is not None and self.plan.measure in ("converge", "free"):
            self.energy.start()

    def step(self, samples: int, loss: Any = None) -> None:
        if self.stopped:
            raise StopTrial(self.reason or "stopped")
        self.start()
        self.steps += 1
        self.samples += int(samples) * self.world
        if loss is not None:
            self.last_loss = loss
        if self.plan.measure == "throughput":
            self._throughput_step(int(samples) * self.world)
        elif self.plan.measure == "probe":
            if self.steps >= self.plan.probe_steps:
                self.coll.sync()
                self._stop("probe")
        elif self.steps % self.check_every == 0:
            self._clock_step()

    def eval_due(self) -> bool:
        """Whether the loop should evaluate now (converge and free measures only)."""
        return self.due and self.plan.measure in ("converge", "free")

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Time inside is not training time."""
        was = self._pause()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.eval_s += time.perf_counter() - t
            if was and not self.stopped:
                self._resume()

    def report(self, value: float | None) -> None:
        """An evaluation's metric (rank 0's counts; other ranks may pass anything, None too).
        A collective with several ranks: every rank calls it at the same evaluation."""
        if self.plan.measure not in ("converge", "free"):
            if value is not None and self.rank == 0:
                self.metric = float(value)
            return
        was = self._pause()
        self.evals += 1
        self.due, self.due_taken = False, True
        code = _GO
        if self.rank == 0:
            self.metric = float(value) if value is not None else math.nan
            self.curve.append([self.evals, round(self.train_s, 4), self.metric, self.loss_v])
            code = self._decide()
        if self.world > 1:
            code = self.coll.broadcast_int(code)
        if code == _DIVERGED:
            raise Diverged(f"the reported metric became {self.metric} at evaluation {self.evals}")
        self.reached, self.pruned = code == _REACHED, code == _PRUNED
        if code != _GO:
            self._stop(_REASONS[code])
        elif was:
            self._resume()

    def should_stop(self) -> bool:
        self.start()
        return self.stopped

    # ------------------------------------------------------------------ internals
    def _decide(self) -> int:
        """Rank 0: what this evaluation means for the trial."""
        plan, metric = self.plan, self.metric
        if not math.isfinite(metric):
            return _DIVERGED
        if plan.reached(metric):
            return _REACHED if plan.stop_at_target or plan.measure == "converge" else _GO
        if plan.measure == "free":
            return _GO
        step = self.samples if plan.fidelity == "samples" else self.evals
        if self.channel is not None and self.channel.report(step, plan.gap(metric)):
            return _PRUNED
        return _BUDGET if self.train_s >= plan.budget_s else _GO

    def _elapsed(self) -> float:
        return self.train_s + (time.perf_counter() - self.seg if self.running else 0.0)

    def _clock_step(self) -> None:
        """Every ``check_every`` steps: is an evaluation due, or must the trial stop?"""
        elapsed, budget = self._elapsed(), self.plan.budget_s
        code = _GO
        if self.plan.measure == "converge" and elapsed >= budget and self.due and not self.due_taken:
            code = _STOP  # past the budget and the loop left a due evaluation untaken
        elif elapsed >= self.plan.eval_interval_s * (self.evals + 1) or (
            self.plan.measure == "converge" and elapsed >= budget
        ):
            code = _DUE
        if self.world > 1:
            code = self.coll.broadcast_int(code)
        if code == _STOP:
            self._stop("budget")
        elif code == _DUE and not self.due:
            self.due, self.due_taken = True, False
            self.dues += 1

    def _pause(self) -> bool:
        """Stop the training clock at a synchronised point; check the loss there. Returns
        whether the clock was running."""
        if not self.running:
            return False
        self.coll.sync()
        self.train_s += time.perf_counter() - self.seg
        self.running = False
        self._check_loss()
        return True

    def _resume(self) -> None:
        self.seg = time.perf_counter()
        self.running = True

    def _check_loss(self) -> None:
        if self.last_loss is None:
            return
        self.loss_v = float(self.coll.loss_value(self.last_loss))
        if not math.isfinite(self.loss_v):
            raise Diverged(f"training loss became {self.loss_v} at step {self.steps}")

    def _stop(self, reason: str) -> None:
        if self.running:
            self.train_s += time.perf_counter() - self.seg
            self.running = False
        self.stopped, self.reason = True, reason

    def _agree(self, flag: bool) -> bool:
        return bool(self.coll.broadcast_int(int(flag))) if self.world > 1 else flag

    def _throughput_step(self, samples: int) -> None:
        plan = self.plan
        if not self.per_window:  # warming up
            warm = time.perf_counter() - self.seg >= plan.warmup_s
            if self.steps >= 3 and self._agree(warm):
                self.coll.sync()
                per_step = (time.perf_counter() - self.seg) / self.steps
                self.per_window = self.coll.broadcast_int(max(3, math.ceil(plan.window_s / per_step)))
                self.warmup_steps = self.steps
                if self.energy is not None:
                    self.energy.start()
                self._new_window()
            return
        self.w_steps += 1
        self.w_samples += samples
        if self.w_steps < self.per_window:
            return
        self.coll.sync()
        dt = time.perf_counter() - self.w_t
        self.timed_s, self.timed_samples = self.timed_s + dt, self.timed_samples + self.w_samples
        self.windows.append(self.w_samples / dt)
        self.sizes.append(self.w_samples / self.per_window)
        self._check_loss()
        pruned = False
        if self.rank == 0 and self.channel is not None:
            pruned = self.channel.report(len(self.windows) - 1, self.windows[-1])
        if self._agree(pruned):
            self.pruned = True
            self._stop("pruned")
        elif len(self.windows) >= plan.repeats:
            self._stop("measured")
        else:
            self._new_window()

    def _new_window(self) -> None:
        self.w_t, self.w_steps, self.w_samples = time.perf_counter(), 0, 0

    # ------------------------------------------------------------------ the result
    def _energy(self, samples: int, seconds: float) -> dict[str, Any]:
        from perftune.backends._energy import energy_metrics

        if self.rank != 0:
            return {}
        joules = self.energy.stop() if self.energy is not None else None
        return energy_metrics(joules, samples, seconds, getattr(self.energy, "source", None))

    def result(self) -> dict[str, Any]:
        """``{"metrics", "curves", "pruned"}`` of the measure, as the sweep process records it.
        Raises :class:`~perftune.errors.TrialError` when the loop measured nothing usable."""
        if not self.steps:
            raise NothingMeasured(NO_STEPS)
        if self.plan.measure == "throughput":
            return self._throughput_result()
        if self.plan.measure == "probe":
            return {"metrics": {"steps": self.steps}, "curves": {}, "pruned": False}
        self._stop(self.reason or "returned")
        if not self.evals and self.dues and self.plan.measure == "converge":
            raise NothingMeasured("the training code never called trial.report(metric) although "
                                  f"{self.dues} evaluation(s) came due: perftune cannot tell when "
                                  "it reached the target")  # fmt: skip
        train_s = self.train_s
        metrics = {
            "reached_target": self.reached or (self.evals > 0 and self.plan.reached(self.metric)),
            "train_time_s": train_s,
            "eval_time_s": self.eval_s,
            "final_metric": self.metric,
            "target": self.plan.target,
            "evals": self.evals,
            "steps": self.steps,
            "samples": self.samples,
            "throughput_sps": self.samples / train_s if train_s > 0 else None,
            "stopped_by": self.reason,
            **self._energy(self.samples, train_s + self.eval_s),
        }
        metrics["time_to_target_s"] = train_s if metrics["reached_target"] else None
        return {"metrics": metrics, "curves": {"val_metric": self.curve}, "pruned": self.pruned}

    def _throughput_result(self) -> dict[str, Any]:
        if not self.windows:
            raise NothingMeasured(
                f"the training function returned after {self.steps} steps, before the first "
                "timed window: a throughput trial needs the loop to run until "
                "trial.should_stop() (or until trial.step() raises StopTrial)")  # fmt: skip
        med = statistics.median(self.windows)
        metrics = {
            "throughput_sps": med,
            "throughput_spread": (max(self.windows) - min(self.windows)) / med,
            "step_time_ms": 1000.0 * statistics.median(self.sizes) / med,
            "steps_per_window": self.per_window,
            "warmup_steps": self.warmup_steps,
            "windows": len(self.windows),
            "steps": self.steps,
            **self._energy(self.timed_samples, self.timed_s),
        }
        curves = {"throughput_window": [[i, w] for i, w in enumerate(self.windows)]}
        return {"metrics": metrics, "curves": curves, "pruned": self.pruned}
