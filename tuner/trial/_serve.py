"""Measuring a model as it is served (stdlib only): per-request latencies over steady windows.

:func:`serve` runs ``replicas`` threads, each calling its own ``predict`` on prepared request
batches, first for a warm-up, then for ``repeats`` timed windows. Closed loop (no ``rate``):
a replica sends its next request as soon as the last one returned, and a request's latency is
its call. Open loop (``rate`` requests/s): requests arrive at seeded Poisson times whatever the
replicas are doing, and a request's latency runs from its arrival to its answer, so queueing
counts, as a user sees it. ``predict`` must return only once its result is ready (the device
synchronised): the framework module wraps it so.

Frameworks release the GIL inside their kernels, so replicas overlap where the model is big
enough; for a tiny model, Python's own time dominates and more replicas only contend, which is
exactly what the search should find out.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServeResult", "percentiles", "serve"]

#: Requests a window needs at least for its p99 to rest on more than one observation.
MIN_REQUESTS = 200
#: A window stretched to reach MIN_REQUESTS ends after this many times its length anyway.
MAX_STRETCH = 10.0


@dataclass
class ServeResult:
    """What :func:`serve` measured: every timed request's latency (seconds, arrival to answer)
    and each window's samples per second."""

    latencies_s: list[float] = field(default_factory=list)
    window_sps: list[float] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        """Latency percentiles in milliseconds, throughput (median of the windows and its
        relative spread) and the request count."""
        ms = [v * 1000.0 for v in self.latencies_s]
        sps = sorted(self.window_sps)
        median = sps[len(sps) // 2] if len(sps) % 2 else (sps[len(sps) // 2 - 1] + sps[len(sps) // 2]) / 2
        return {**{f"{k}_ms": v for k, v in percentiles(ms).items()},
                "throughput_sps": median, "throughput_spread": (sps[-1] - sps[0]) / median if median else 0.0,
                "requests": len(ms), "windows": len(sps)}  # fmt: skip


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank: a value that was observed) and the max of ``values``."""
    if not values:
        raise ValueError("percentiles of no values")
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1]}


def serve(predicts: Sequence[Callable[[Any], Any]], requests: Sequence[tuple[Any, int]], *,
          warmup_s: float, window_s: float, repeats: int, rate: float | None = None, seed: int = 0,
          on_thread: Callable[[], None] | None = None,
          on_phase: Callable[[bool], None] | None = None) -> ServeResult:  # fmt: skip
    """Serve ``requests`` (``(inputs, samples)`` pairs, cycled) with one thread per ``predicts``
    entry (a replica); see the module docstring. ``on_thread()`` runs first in every replica
    thread (per-thread settings such as intra-op threads); ``on_phase(timed)`` before the
    warm-up (False) and before the timed windows (True), for a ``predict`` that records times
    of its own (a generating model's per-token latencies)."""
    if not predicts or not requests:
        raise ValueError("serve() needs at least one replica and one request")
    result = ServeResult()
    if on_phase is not None:
        on_phase(False)
    _phase(predicts, requests, warmup_s, None, rate, seed, on_thread)  # warm-up: not recorded
    if on_phase is not None:
        on_phase(True)
    for r in range(repeats):
        _phase(predicts, requests, window_s, result, rate, seed + 1 + r, on_thread)
    return result


class _Arrivals:
    """The next request's index and arrival time, handed out under a lock (open loop: seeded
    exponential gaps; closed loop: "now")."""

    def __init__(self, start: float, rate: float | None, seed: int) -> None:
        self.lock, self.i, self.rate = threading.Lock(), 0, rate
        self.rng, self.t = random.Random(seed), start

    def next(self) -> tuple[int, float | None]:
        with self.lock:
            i = self.i
            self.i += 1
            if self.rate is None:
                return i, None
            self.t += self.rng.expovariate(self.rate)
            return i, self.t


def _phase(predicts, requests, seconds: float, result: ServeResult | None, rate: float | None,
           seed: int, on_thread) -> None:  # fmt: skip
    """One warm-up (``result`` None) or timed window: every replica serves until ``seconds``
    passed (a timed window: and MIN_REQUESTS were answered, up to MAX_STRETCH times longer)."""
    start = time.perf_counter()
    arrivals, lock = _Arrivals(start, rate, seed), threading.Lock()
    lat: list[float] = []
    done = {"samples": 0, "errors": []}
    end, hard_end = start + seconds, start + seconds * MAX_STRETCH

    def over(now: float) -> bool:
        if result is None:
            return now >= end and len(lat) >= len(predicts)
        return now >= hard_end or (now >= end and len(lat) >= MIN_REQUESTS)

    def replica(predict) -> None:
        try:
            if on_thread is not None:
                on_thread()
            while True:
                i, arrival = arrivals.next()
                if arrival is not None and arrival > time.perf_counter():
                    time.sleep(arrival - time.perf_counter())
                t0 = time.perf_counter()
                if over(t0):
                    return
                x, n = requests[i % len(requests)]
                predict(x)
                t1 = time.perf_counter()
                with lock:
                    lat.append(t1 - (arrival if arrival is not None else t0))
                    done["samples"] += n
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            done["errors"].append(exc)

    threads = [threading.Thread(target=replica, args=(p,), daemon=True) for p in predicts[1:]]
    for t in threads:
        t.start()
    replica(predicts[0])  # the calling thread is the first replica
    for t in threads:
        t.join()
    if done["errors"]:
        raise done["errors"][0]
    elapsed = time.perf_counter() - start
    if result is not None and lat:
        result.latencies_s += lat
        result.window_sps.append(done["samples"] / elapsed)
        result.samples += done["samples"]
        result.seconds += elapsed
