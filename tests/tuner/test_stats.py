"""Confidence intervals: coverage on simulated noise, pairing, edge cases."""

import math
import random

import pytest

from perftune.stats import (
    Interval,
    clearly_better,
    precise_enough,
    speedup_interval,
    value_interval,
)


def _noisy(rng: random.Random, true: float, sigma: float) -> float:
    return true * math.exp(rng.gauss(0.0, sigma))


@pytest.mark.parametrize("n", [3, 5, 8])
def test_speedup_interval_covers_the_true_speedup_95_percent_of_the_time(n):
    rng = random.Random(7)
    covered, sims = 0, 2000
    for _ in range(sims):
        # each round: a shared drift (the seed's luck, the machine's load) and own noise
        drift = [math.exp(rng.gauss(0.0, 0.5)) for _ in range(n)]
        base = [_noisy(rng, 10.0, 0.1) * d for d in drift]
        cand = [_noisy(rng, 4.0, 0.1) * d for d in drift]
        iv = speedup_interval(base, cand, "minimize")
        covered += iv.low <= 2.5 <= iv.high
    assert 0.93 <= covered / sims <= 0.97


def test_pairing_removes_shared_drift():
    rng = random.Random(1)
    drift = [math.exp(rng.gauss(0.0, 0.6)) for _ in range(5)]
    base = [10.0 * d for d in drift]
    cand = [5.0 * d * math.exp(rng.gauss(0.0, 0.02)) for d in drift]
    paired = speedup_interval(base, cand, "minimize")
    assert paired.estimate == pytest.approx(2.0, rel=0.05)
    assert precise_enough(paired)  # the drift cancels within a round
    unpaired = speedup_interval(base, list(reversed(cand)), "minimize")
    assert unpaired.half_width > 5 * paired.half_width


def test_direction_maximize_means_higher_is_better():
    iv = speedup_interval([100.0, 110.0, 90.0], [200.0, 225.0, 175.0], "maximize")
    assert iv.estimate == pytest.approx(2.0, rel=0.03)
    assert clearly_better(iv)
    assert not clearly_better(speedup_interval([200.0, 225.0, 175.0], [100.0, 110.0, 90.0],
                                               "maximize"))  # fmt: skip


def test_value_interval_brackets_the_geometric_mean_and_narrows_with_repeats():
    rng = random.Random(3)
    few = value_interval([_noisy(rng, 3.0, 0.2) for _ in range(3)])
    many = value_interval([_noisy(rng, 3.0, 0.2) for _ in range(30)])
    assert few.low < few.estimate < few.high
    assert many.half_width < few.half_width
    assert many.low < 3.0 < many.high


def test_identical_values_give_a_zero_width_interval():
    iv = value_interval([2.0, 2.0, 2.0])
    assert (iv.low, iv.estimate, iv.high) == pytest.approx((2.0, 2.0, 2.0))
    assert precise_enough(iv)


@pytest.mark.parametrize("values", [[], [1.0], [1.0, 0.0], [1.0, -2.0], [1.0, math.nan]])
def test_no_interval_without_two_positive_finite_values(values):
    assert value_interval(values) is None
    assert not precise_enough(None) and not clearly_better(None)


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="paired"):
        speedup_interval([1.0, 2.0], [1.0], "minimize")


def test_interval_serialises_with_its_half_width():
    d = Interval(2.0, 1.8, 2.2, 4).to_dict()
    assert d == {"estimate": 2.0, "low": 1.8, "high": 2.2, "n": 4, "level": 0.95,
                 "half_width": pytest.approx(0.1)}  # fmt: skip
    assert str(Interval(2.0, 1.8, 2.2, 4)) == "2 [1.8, 2.2]"
