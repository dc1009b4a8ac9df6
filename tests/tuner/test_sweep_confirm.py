"""The confirmation race on simulated measurements: interleaved rounds, paired seeds, adaptive
repeats, candidates dropped when slower beyond doubt."""

import math
import random

import pytest

from perftune.sweep.confirm import Measured, race


def _fake(true: dict[str, float], noise: float = 0.05, drift: float = 0.4, fail: set = frozenset()):
    """``measure(candidate, round)`` with a per-round drift shared by all candidates (the seed's
    luck, the machine's load) and a little noise of each run's own; records the call order."""
    rng = random.Random(0)
    shared: dict[int, float] = {}
    calls: list[tuple[str, int]] = []

    def measure(cand: Measured, r: int) -> None:
        calls.append((cand.label, r))
        if cand.label in fail:
            cand.failures.append("not_reached")
            return
        d = shared.setdefault(r, math.exp(rng.gauss(0.0, drift)))
        cand.by_round[r] = true[cand.label] * d * math.exp(rng.gauss(0.0, noise))

    return measure, calls


def _cands(*labels: str) -> list[Measured]:
    return [Measured(label, {"which": label}) for label in labels]


def test_rounds_interleave_candidates_and_stop_once_the_speedup_is_precise():
    measure, calls = _fake({"baseline": 10.0, "a": 4.0, "b": 5.0}, noise=0.01)
    v = race(_cands("baseline", "a", "b"), measure, "minimize", min_rounds=3, max_rounds=8)
    assert calls[:6] == [("baseline", 0), ("a", 0), ("b", 0), ("baseline", 1), ("a", 1), ("b", 1)]
    assert v.rounds == 3 and v.resolved  # the drift cancels within a round: 3 rounds suffice
    assert v.winner.label == "a"
    assert v.speedup.low < 2.5 < v.speedup.high and v.speedup.half_width <= 0.10
    assert v.gain == pytest.approx(v.speedup.estimate)


def test_noisy_candidates_get_more_rounds_up_to_the_cap():
    measure, calls = _fake({"baseline": 10.0, "a": 6.0}, noise=0.4)
    v = race(_cands("baseline", "a"), measure, "minimize", min_rounds=3, max_rounds=6)
    assert v.rounds == 6 and not v.resolved
    assert len(v.winner.values) == 6 and len(calls) == 12


def test_a_candidate_slower_beyond_doubt_is_dropped_and_cannot_win():
    measure, calls = _fake({"baseline": 10.0, "fast": 5.0, "slow": 9.0}, noise=0.02, drift=0.0)
    cands = _cands("baseline", "fast", "slow")
    v = race(cands, measure, "minimize", min_rounds=3, max_rounds=8, target=0.0)
    slow = cands[2]
    assert slow.dropped and "fast" in slow.dropped and len(slow.values) == 3
    assert v.winner.label == "fast" and v.rounds == 8  # target 0: never precise enough
    assert len(cands[0].values) == len(cands[1].values) == 8


def test_a_failing_candidate_is_run_once_and_the_baseline_may_win():
    measure, calls = _fake({"baseline": 5.0, "a": 6.0, "broken": 1.0}, fail={"broken"})
    v = race(_cands("baseline", "a", "broken"), measure, "minimize", min_rounds=3, max_rounds=3)
    assert [c for c in calls if c[0] == "broken"] == [("broken", 0)]
    assert v.winner.label == "baseline" and v.gain == 1.0 and v.speedup is None


def test_throughput_higher_is_better():
    measure, _ = _fake({"baseline": 100.0, "a": 300.0}, noise=0.01)
    v = race(_cands("baseline", "a"), measure, "maximize", min_rounds=3, max_rounds=5)
    assert v.winner.label == "a" and v.speedup.estimate == pytest.approx(3.0, rel=0.05)


def test_one_round_gives_a_speedup_without_an_interval():
    measure, _ = _fake({"baseline": 10.0, "a": 5.0}, noise=0.0, drift=0.0)
    v = race(_cands("baseline", "a"), measure, "minimize", min_rounds=1, max_rounds=1)
    assert v.speedup is None and v.gain == pytest.approx(2.0) and not v.resolved


def test_no_speedup_when_the_baseline_never_reached_the_target():
    measure, _ = _fake({"baseline": 10.0, "a": 5.0}, fail={"baseline"})
    v = race(_cands("baseline", "a"), measure, "minimize", min_rounds=3, max_rounds=6)
    assert v.winner.label == "a" and v.gain is None and v.rounds == 3


def test_the_challenger_is_the_closest_candidate_when_the_baseline_wins():
    measure, _ = _fake({"baseline": 5.0, "near": 6.0, "far": 9.0}, noise=0.01)
    v = race(_cands("baseline", "near", "far"), measure, "minimize", min_rounds=3, max_rounds=3)
    assert v.winner.label == "baseline" and v.challenger.label == "near"
    measure, _ = _fake({"baseline": 5.0, "a": 4.0, "b": 6.0}, noise=0.01)
    v = race(_cands("baseline", "a", "b"), measure, "minimize", min_rounds=3, max_rounds=3)
    assert v.winner.label == "a" and v.challenger is None
