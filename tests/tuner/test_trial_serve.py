"""The serving measurement (perftune.trial._serve): percentiles, closed and open loops, replicas.

A fake ``predict`` sleeps; the tests compare statistics that do not depend on the machine's
speed (counts, orderings, an overloaded queue against an idle one), never that a time is small."""

from __future__ import annotations

import threading
import time

import pytest

from perftune.trial._serve import MIN_REQUESTS, percentiles, serve


def sleeper(seconds: float):
    def predict(x):
        time.sleep(seconds)
        return x

    return predict


def test_percentiles_are_nearest_rank_and_observed():
    values = list(range(1, 101))  # 1..100
    p = percentiles(values)
    assert p == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "p99": 3.0, "max": 3.0}
    odd = [5.0, 1.0, 9.0]
    assert set(percentiles(odd).values()) <= set(odd)
    with pytest.raises(ValueError):
        percentiles([])


def test_closed_loop_counts_every_sample_and_orders_percentiles():
    requests = [(i, 4) for i in range(3)]  # three requests of 4 samples, cycled
    result = serve([sleeper(0.0002)], requests, warmup_s=0.01, window_s=0.02, repeats=3)
    m = result.metrics()
    assert m["windows"] == 3 and len(result.window_sps) == 3
    assert m["requests"] >= 3 * MIN_REQUESTS  # a window runs on until its p99 has 200 requests
    assert result.samples == 4 * m["requests"]
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["throughput_sps"] > 0 and m["throughput_spread"] >= 0
    assert m["p50_ms"] >= 0.2  # a request lasts at least its sleep


def test_replicas_each_run_in_their_own_thread():
    seen: set[int] = set()

    def predict(x):
        seen.add(threading.get_ident())
        time.sleep(0.0005)

    setups: list[int] = []
    serve([predict] * 3, [(0, 1)], warmup_s=0.01, window_s=0.01, repeats=1,
          on_thread=lambda: setups.append(threading.get_ident()))  # fmt: skip
    assert len(seen) == 3
    assert len(setups) == 2 * 3  # on_thread in every replica, in the warm-up and the window


def test_open_loop_counts_queueing():
    """Requests arriving faster than they are served wait: their latency (arrival to answer)
    grows far beyond the service time; arriving slowly, they wait for nothing."""
    service = 0.002
    idle = serve([sleeper(service)], [(0, 1)], warmup_s=0.01, window_s=0.3, repeats=1, rate=50, seed=1)
    busy = serve([sleeper(service)], [(0, 1)], warmup_s=0.01, window_s=0.3, repeats=1, rate=2000, seed=1)
    assert busy.metrics()["p99_ms"] > 5 * idle.metrics()["p50_ms"]
    assert busy.metrics()["p99_ms"] > busy.metrics()["p50_ms"]


def test_a_replica_error_reaches_the_caller():
    def broken(x):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        serve([sleeper(0.0001), broken], [(0, 1)], warmup_s=0.01, window_s=0.01, repeats=1)


def test_nothing_to_serve_is_refused():
    with pytest.raises(ValueError):
        serve([], [(0, 1)], warmup_s=0.01, window_s=0.01, repeats=1)
    with pytest.raises(ValueError):
        serve([sleeper(0)], [], warmup_s=0.01, window_s=0.01, repeats=1)
