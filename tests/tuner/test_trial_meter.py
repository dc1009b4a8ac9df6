"""The trial clock (tuner/trial/_meter.py) on a fake clock and fake collectives: what time to
target, throughput and the probe mean, independent of any framework or machine load."""

from __future__ import annotations

import math

import pytest

from perftune.errors import Diverged, NothingMeasured
from perftune.trial import _meter
from perftune.trial._meter import Meter, Plan, StopTrial


class Clock:
    """A fake ``time.perf_counter``: advances only when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_meter.time, "perf_counter", c)
    return c


class Coll:
    """One process's collectives; ``decisions`` scripts what rank 0 broadcasts (another rank)."""

    def __init__(self, decisions=None) -> None:
        self.syncs = 0
        self.broadcasts: list[int] = []
        self.decisions = list(decisions) if decisions is not None else None

    def sync(self) -> None:
        self.syncs += 1

    def broadcast_int(self, value: int) -> int:
        self.broadcasts.append(value)
        return self.decisions.pop(0) if self.decisions is not None else value

    def loss_value(self, loss) -> float:
        return float(loss)


class Pruner:
    def __init__(self, prune_at: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def report(self, step: int, value: float) -> bool:
        self.reports.append((step, value))
        return self.prune_at is not None and step >= self.prune_at


def train(meter: Meter, clock: Clock, metrics, *, step_s=0.1, eval_s=0.05, samples=8, loss=1.0):
    """A user's loop: steps of ``step_s``, evaluations of ``eval_s`` reporting ``metrics``."""
    values = iter(metrics)
    try:
        while not meter.should_stop():
            clock.tick(step_s)
            meter.step(samples, loss)
            if meter.eval_due():
                with meter.evaluating():
                    clock.tick(eval_s)
                    value = next(values)
                meter.report(value)
    except StopTrial:
        pass
    return meter.result()


def test_time_to_target_counts_training_time_only(clock):
    m = Meter(Plan(target=0.9, eval_interval_s=0.25, budget_s=10), Coll())
    out = train(m, clock, [0.2, 0.5, 0.95])
    metrics = out["metrics"]
    # evaluations come due at 0.25, 0.5, 0.75 s of training: steps 3, 5 and 8 (0.1 s each)
    assert metrics["reached_target"] and metrics["stopped_by"] == "target"
    assert metrics["time_to_target_s"] == pytest.approx(0.8)
    assert metrics["eval_time_s"] == pytest.approx(0.15)
    assert metrics["steps"] == 8 and metrics["samples"] == 64 and metrics["evals"] == 3
    assert metrics["throughput_sps"] == pytest.approx(64 / 0.8)
    assert [row[2] for row in out["curves"]["val_metric"]] == [0.2, 0.5, 0.95]
    assert out["pruned"] is False


def test_setup_time_is_before_the_first_step(clock):
    m = Meter(Plan(target=0.5), Coll(), t_created=clock.t)
    clock.tick(3.0)  # the user's setup: model, data
    metrics = train(m, clock, [0.9])["metrics"]
    assert m.setup_s == pytest.approx(3.0)
    assert metrics["time_to_target_s"] == pytest.approx(0.3)


def test_the_budget_ends_a_trial_that_does_not_reach_the_target(clock):
    m = Meter(Plan(target=0.9, eval_interval_s=0.25, budget_s=1.0), Coll())
    metrics = train(m, clock, [0.1] * 100)["metrics"]
    assert not metrics["reached_target"] and metrics["time_to_target_s"] is None
    assert metrics["stopped_by"] == "budget"
    assert 1.0 <= metrics["train_time_s"] < 1.3


def test_a_loop_that_ignores_due_evaluations_still_stops_at_the_budget(clock):
    m = Meter(Plan(target=0.9, eval_interval_s=0.25, budget_s=1.0), Coll())
    m.should_stop()
    with pytest.raises(NothingMeasured, match="never called trial.report"):
        for _ in range(1000):  # never evaluates, never asks should_stop
            clock.tick(0.1)
            try:
                m.step(1)
            except StopTrial as stop:
                assert stop.code == 0 and stop.reason == "budget"
                break
        else:
            pytest.fail("the loop was never stopped")
        m.result()


def test_step_raises_stop_trial_once_ended_and_it_is_a_clean_exit(clock):
    m = Meter(Plan(target=0.5), Coll())
    m.should_stop()  # the clock starts
    clock.tick(0.3)
    m.step(1)
    assert m.eval_due()
    m.report(0.7)
    assert m.should_stop()
    with pytest.raises(StopTrial) as info:
        m.step(1)
    assert isinstance(info.value, SystemExit) and info.value.code == 0
    assert info.value.reason == "target"


def test_the_pruner_sees_the_gap_and_stops_the_trial(clock):
    pruner = Pruner(prune_at=2)
    m = Meter(Plan(target=0.9, mode="max", eval_interval_s=0.25), Coll(), pruner)
    out = train(m, clock, [0.3, 0.4, 0.5, 0.6])
    assert out["pruned"] and out["metrics"]["stopped_by"] == "pruned"
    assert pruner.reports == [(1, pytest.approx(0.6)), (2, pytest.approx(0.5))]


def test_a_samples_fidelity_reports_the_samples_seen(clock):
    # the first two evaluations come at steps 3 and 6 (8 samples each): the pruner's steps are
    # the samples seen then, 24 and 48
    pruner = Pruner(prune_at=48)
    m = Meter(Plan(target=0.9, eval_interval_s=0.25, fidelity="samples"), Coll(), pruner)
    assert train(m, clock, [0.3, 0.4, 0.5])["pruned"]
    assert pruner.reports == [(24, pytest.approx(0.6)), (48, pytest.approx(0.5))]


def test_minimised_metrics(clock):
    m = Meter(Plan(target=0.1, mode="min"), Coll(), Pruner())
    metrics = train(m, clock, [0.5, 0.2, 0.05])["metrics"]
    assert metrics["reached_target"] and metrics["final_metric"] == 0.05


@pytest.mark.parametrize("where", ["loss", "metric"])
def test_divergence_is_detected_at_evaluations(clock, where):
    m = Meter(Plan(target=0.9), Coll())
    with pytest.raises(Diverged):
        train(m, clock, [math.nan] if where == "metric" else [0.1, 0.2], loss=1.0 if where == "metric" else math.inf)


def test_report_outside_evaluating_pauses_the_clock_itself(clock):
    m = Meter(Plan(target=0.9, eval_interval_s=0.25), Coll())
    m.should_stop()
    for _ in range(3):
        clock.tick(0.1)
        m.step(4)
    m.report(0.95)  # no evaluating() block: the clock stops at the report
    assert m.result()["metrics"]["time_to_target_s"] == pytest.approx(0.3)


def test_throughput_warms_up_then_times_windows(clock):
    coll = Coll()
    pruner = Pruner()
    m = Meter(Plan(measure="throughput", warmup_s=0.5, window_s=0.375, repeats=4), coll, pruner)
    out = train(m, clock, [], step_s=0.125, samples=10)
    metrics = out["metrics"]
    assert metrics["warmup_steps"] == 4  # 3 steps at least, and 0.5 s
    assert metrics["steps_per_window"] == 3
    assert metrics["windows"] == 4 and metrics["steps"] == 4 + 4 * 3
    assert metrics["throughput_sps"] == pytest.approx(80.0)
    assert metrics["throughput_spread"] == pytest.approx(0.0)
    assert len(pruner.reports) == 4 and coll.syncs >= 5  # synchronised at each window's edges
    assert not m.eval_due()


def test_throughput_needs_a_whole_window(clock):
    m = Meter(Plan(measure="throughput", warmup_s=0.5, window_s=0.3, repeats=4), Coll())
    for _ in range(4):
        clock.tick(0.1)
        m.step(1)
    with pytest.raises(NothingMeasured, match="before the first timed window"):
        m.result()


def test_probe_stops_after_its_steps(clock):
    m = Meter(Plan(measure="probe", probe_steps=2), Coll())
    m.step(32)
    assert not m.should_stop()
    m.step(32)
    assert m.should_stop()
    with pytest.raises(StopTrial):
        m.step(32)


def test_nothing_measured():
    with pytest.raises(NothingMeasured, match="without calling trial.step"):
        Meter(Plan(), Coll()).result()


def test_free_measure_never_stops_without_a_target(clock):
    m = Meter(Plan(measure="free", target=None, budget_s=math.inf), Coll())
    m.should_stop()
    for _ in range(160):  # 20 s of training, 80 evaluations: nothing stops it
        clock.tick(0.125)
        m.step(1)
        if m.eval_due():
            m.report(0.99)
        assert not m.should_stop()
    assert m.result()["metrics"]["evals"] == 80


def test_free_measure_stops_at_a_given_target(clock):
    m = Meter(Plan(measure="free", target=0.5, budget_s=math.inf), Coll())
    metrics = train(m, clock, [0.1, 0.6, 0.7])["metrics"]
    assert metrics["reached_target"] and metrics["evals"] == 2


def test_another_rank_follows_rank_zero(clock):
    """A rank other than 0 decides nothing: the due evaluations and the stop come from rank
    0's broadcasts, at the same steps on every rank (every ``check_every`` steps)."""
    # step 4: continue, step 8: evaluation due, then the report: target reached on rank 0
    coll = Coll(decisions=[0, 1, 3])
    m = Meter(Plan(target=0.9), coll, rank=1, world=2, check_every=4)
    m.should_stop()
    for step in range(1, 9):
        clock.tick(0.01)  # rank 1's own clock says nothing is due yet
        m.step(8)
        assert m.eval_due() == (step == 8)
    m.report(None)  # rank 1 need not evaluate
    assert m.should_stop() and coll.broadcasts == [0, 0, 0]
    assert m.samples == 8 * 8 * 2  # the global count: this rank's samples x world


def test_rank_zero_broadcasts_its_decisions(clock):
    coll = Coll()
    m = Meter(Plan(target=0.9, eval_interval_s=0.25), coll, Pruner(), rank=0, world=2, check_every=2)
    train(m, clock, [0.95])
    assert coll.broadcasts[-1] == 3  # "target reached", sent to the other ranks
    assert all(b in (0, 1) for b in coll.broadcasts[:-1])


def test_a_loop_that_ends_before_its_first_evaluation_is_not_reached_not_an_error(clock):
    """A script's own epochs can end before an evaluation came due (a big batch, few steps):
    that trial did not reach the target; it is no fault of the training code."""
    m = Meter(Plan(target=0.9, eval_interval_s=0.25), Coll())
    m.should_stop()
    for _ in range(2):
        clock.tick(0.1)
        m.step(1)
    metrics = m.result()["metrics"]
    assert metrics["evals"] == 0 and not metrics["reached_target"] and metrics["time_to_target_s"] is None
