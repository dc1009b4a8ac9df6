"""The machine's load recorded with each trial, and the report's warning when it was high."""

import os

import pytest

from perftune._load import busy_warning, measure_load, start_load


def test_measure_load_reads_the_load_average_and_steal():
    import time

    import psutil

    started = start_load()
    deadline = time.monotonic() + 5.0  # some CPU time between the two readings: a tick at least
    while sum(psutil.cpu_times()) == sum(started) and time.monotonic() < deadline:
        sum(i * i for i in range(200_000))
    got = measure_load(started)
    assert got["load_avg_1m"] == pytest.approx(os.getloadavg()[0], abs=1.0)
    assert 0.0 <= got["cpu_steal_pct"] <= 100.0  # Linux: /proc/stat has steal


@pytest.mark.parametrize(
    ("loads", "steal", "warned"),
    [
        ([0.5, 2.1, 1.9, 2.0], 0.0, False),  # a trial's own threads on 2 cores
        ([5.2, 6.0, 1.0, 1.0], 0.0, True),  # half the trials under a test suite's load
        ([5.2, 1.0, 1.0, 1.0, 1.0], 0.0, False),  # one in five: below a quarter
        ([1.0, 1.0], 12.0, True),  # a noisy neighbour on the hypervisor
    ],
)
def test_busy_warning_when_a_quarter_of_the_trials_ran_under_load(loads, steal, warned):
    metrics = [{"load_avg_1m": v, "cpu_steal_pct": steal} for v in loads] + [{"other": 1}]
    got = busy_warning(metrics, cores=2)
    assert (got is not None) == warned
    if warned:
        assert f"of {len(loads)} measured trials" in got and "on 2 cores" in got


def test_no_warning_without_readings():
    assert busy_warning([{}, {"x": 1}], cores=2) is None
