"""The measurement loops every backend shares (stdlib only).

A backend supplies a ``step()`` that trains one batch and the hooks below; :class:`Loop` owns
the clock, so time-to-target and throughput mean the same thing in every framework:

* :meth:`Loop.converge` (time-to-target, as MLPerf measures it): train, evaluate every
  ``workload.eval_interval_s`` *training* seconds (evaluation time is excluded from the clock
  and reported separately), report the gap to the target to the pruner, stop at the target, at
  the budget, or when pruned.
* :meth:`Loop.throughput`: warm up (at least 3 steps and ``warmup_s``), calibrate a window of
  about ``window_s``, time ``repeats`` windows with the device synchronised, report the median
  and the spread.

Multi-process strategies (DDP, multi-worker mirrored, ...) run the loop on every rank; the hooks
make rank 0's decisions the same everywhere, so every rank makes the same collective calls.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from tuner.backends._base import Channel, TrialRequest, check_finite

#: ``step() -> (epoch, loss, samples)``: one optimizer step on this rank. ``loss`` is whatever the
#: framework returns (converted by ``loss_value`` only when checked), ``samples`` the number of
#: samples this rank trained in the step.
Step = Callable[[], tuple[int, Any, int]]


def _identity(flag: bool) -> bool:
    return flag


def _noop() -> None:
    return None


class Loop:
    """The timed loops of one rank.

    Args:
        workload: the :class:`~tuner.workload.Workload` (target, budget, eval interval).
        request: the trial request (measure, budget, warm-up/window/repeats).
        channel: rank 0's channel to the pruner; ``None`` on other ranks.
        sync: block until queued device work is done (e.g. ``torch.cuda.synchronize``).
        loss_value: the loss as a float, *the same on every rank*: a multi-process backend
            reduces it (so that every rank raises :class:`~tuner.errors.Diverged` together).
        agree: rank 0's boolean, broadcast to every rank (identity with one process).
        broadcast_int: rank 0's integer, broadcast to every rank.
        rank, world: this rank and the number of processes; ``samples`` are multiplied by
            ``world`` (the global count, assuming equal shards).
        check_every: steps between "is an evaluation due?" checks (a collective when
            ``world > 1``, so not every step).
        collective_eval: every rank calls ``evaluate()`` (a sharded model needs all ranks for
            a forward pass); rank 0's value is the one used.
        energy: rank 0's :class:`~tuner.backends._energy.EnergyMeter` or None. It runs over
            the timed windows (throughput) or the whole run to the target, evaluations included
            (time-to-target, as MLPerf Power measures a run); energy is reported unavailable
            rather than estimated when there is no meter.
    """

    def __init__(self, workload: Any, request: TrialRequest, channel: Channel | None, *,
                 sync: Callable[[], None] = _noop,
                 loss_value: Callable[[Any], float] = float,
                 agree: Callable[[bool], bool] = _identity,
                 broadcast_int: Callable[[int], int] = int,
                 rank: int = 0, world: int = 1, check_every: int = 1,
                 collective_eval: bool = False, energy: Any = None) -> None:  # fmt: skip
        self.workload, self.req, self.channel = workload, request, channel
        self.sync, self.loss_value = sync, loss_value
        self.agree, self.broadcast_int = agree, broadcast_int
        self.rank, self.world, self.check_every = rank, world, max(1, int(check_every))
        self.collective_eval, self.energy = collective_eval, energy

    def _energy_start(self) -> None:
        if self.energy is not None:
            self.energy.start()

    def _energy_metrics(self, samples: int, seconds: float) -> dict[str, Any]:
        from tuner.backends._energy import energy_metrics

        if self.rank != 0:
            return {}
        joules = self.energy.stop() if self.energy is not None else None
        return energy_metrics(joules, samples, seconds, getattr(self.energy, "source", None))

    def _check(self, loss: Any, step: int) -> float:
        value = float(self.loss_value(loss))
        check_finite(value, step)
        return value

    def run(self, step: Step, evaluate: Callable[[], float]) -> dict[str, Any]:
        """The request's measure: :meth:`throughput` or :meth:`converge`."""
        if self.req.measure == "throughput":
            return self.throughput(step)
        return self.converge(step, evaluate)

    def converge(self, step: Step, evaluate: Callable[[], float]) -> dict[str, Any]:
        """Time to the workload's quality target. ``evaluate()`` (rank 0 only) returns the
        validation metric; it runs outside the training clock."""
        wl, req = self.workload, self.req
        budget = float(req.budget_s or wl.budget_s)
        interval = float(wl.eval_interval_s)
        train_s = eval_s = 0.0
        steps = samples = evals = 0
        epoch = 0
        curve: list[list[float]] = []
        reached = pruned = False
        metric = math.nan
        self._energy_start()
        seg = t_run = time.perf_counter()
        while True:
            epoch, loss, n = step()
            steps += 1
            samples += n * self.world
            if steps % self.check_every:
                continue
            due = time.perf_counter() - seg + train_s >= interval * (evals + 1)
            if not self.agree(due):
                continue
            self.sync()
            now = time.perf_counter()
            train_s += now - seg
            loss_v = self._check(loss, steps)
            stop = False
            evals += 1
            if self.rank == 0 or self.collective_eval:
                metric = float(evaluate())
            if self.rank == 0:
                curve.append([evals, round(train_s, 4), metric, loss_v])
                reached = wl.reached(metric)
                if not reached and self.channel is not None:
                    pruned = self.channel.report(evals, wl.gap(metric))
                stop = reached or pruned or train_s >= budget
            stop = self.agree(stop)
            seg = time.perf_counter()
            eval_s += seg - now
            if stop:
                break
        metrics = {
            "reached_target": reached,
            "time_to_target_s": train_s if reached else None,
            "train_time_s": train_s,
            "eval_time_s": eval_s,
            "final_metric": metric,
            "target": float(wl.target),
            "evals": evals,
            "steps": steps,
            "samples": samples,
            "epochs": epoch + 1,
            "throughput_sps": samples / train_s if train_s > 0 else None,
            **self._energy_metrics(samples, time.perf_counter() - t_run),
        }
        return {"metrics": metrics, "curves": {"val_metric": curve}, "pruned": pruned}

    def throughput(self, step: Step) -> dict[str, Any]:
        """Training samples per second: median over ``repeats`` timed windows, and the spread."""
        req = self.req
        self.sync()
        t0 = time.perf_counter()
        n = 0
        while True:
            step()
            n += 1
            if n >= 3 and self.agree(time.perf_counter() - t0 >= req.warmup_s):  # same n everywhere
                break
        self.sync()
        per_step = (time.perf_counter() - t0) / n
        per_window = self.broadcast_int(max(3, math.ceil(req.window_s / per_step)))
        windows: list[float] = []
        sizes: list[float] = []
        pruned = False
        timed_s, timed_samples = 0.0, 0
        self._energy_start()
        for r in range(int(req.repeats)):
            self.sync()
            t = time.perf_counter()
            samples = 0  # the real count: an epoch's last batch can be short
            loss = None
            for _ in range(per_window):
                _, loss, n_step = step()
                samples += n_step * self.world
            self.sync()
            dt = time.perf_counter() - t
            timed_s, timed_samples = timed_s + dt, timed_samples + samples
            windows.append(samples / dt)
            sizes.append(samples / per_window)
            self._check(loss, n + (r + 1) * per_window)
            if self.rank == 0 and self.channel is not None:
                pruned = self.channel.report(r, windows[-1])
            if self.agree(pruned):
                pruned = True
                break
        med = statistics.median(windows)
        metrics = {
            "throughput_sps": med,
            "throughput_spread": (max(windows) - min(windows)) / med if len(windows) > 1 else 0.0,
            "step_time_ms": 1000.0 * statistics.median(sizes) / med,
            "steps_per_window": per_window,
            "warmup_steps": n,
            "windows": len(windows),
            **self._energy_metrics(timed_samples, timed_s),
        }
        curves = {"throughput_window": [[i, w] for i, w in enumerate(windows)]}
        return {"metrics": metrics, "curves": curves, "pruned": pruned}


def measure(trainer: Any, step: Step, evaluate: Callable[[], float], *, global_batch_size: int,
            world_size: int, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Run ``trainer``'s trial with a :class:`Loop` and add the metrics every backend reports.

    ``trainer`` is a backend's per-rank trainer: it has ``workload``, ``req``, ``channel``,
    ``rank``, ``world``, ``setup_s`` and the hooks ``_sync``, ``_loss_value``, ``_agree``,
    ``_broadcast_int`` (see :class:`Loop`) and ``_memory() -> {metric: MiB}``. ``extra`` metrics
    are added as given."""
    t = trainer
    loop = Loop(t.workload, t.req, t.channel, sync=t._sync, loss_value=t._loss_value,
                agree=t._agree, broadcast_int=t._broadcast_int, rank=t.rank, world=t.world,
                check_every=1 if t.world == 1 else 8,
                collective_eval=getattr(t, "collective_eval", False),
                energy=getattr(t, "energy", None))  # fmt: skip
    result = loop.run(step, evaluate)
    result["metrics"].update(t._memory(), setup_s=t.setup_s, global_batch_size=global_batch_size,
                             world_size=world_size, **extra)  # fmt: skip
    return result


def epoch_batches(n: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1):
    """Endless ``(epoch, indices)`` stream of this rank's batches (NumPy): shuffled per epoch
    with the same permutation on every rank, each global batch split across ranks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gb = batch_size * world
    epoch = 0
    while True:
        perm = rng.permutation(n)
        for i in range(0, n, gb):
            chunk = perm[i : i + gb]
            if len(chunk) < world:
                continue
            yield epoch, chunk[rank::world]
        epoch += 1


__all__ = ["Loop", "Step", "epoch_batches", "measure"]
