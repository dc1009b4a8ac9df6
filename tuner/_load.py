"""How busy the machine was while a trial ran: its 1-minute load average and the share of CPU
time the hypervisor stole (psutil; steal is readable on Linux only).

A trial's time is wall-clock, so another job on the machine slows it down; these figures are
recorded with every trial so that the report can say when the numbers were taken under load.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["BUSY_FACTOR", "busy_warning", "measure_load", "start_load"]

#: A load average above this many times the cores means others competed for the CPU (a trial's
#: own threads account for at most one per core).
BUSY_FACTOR = 1.5


def start_load() -> Any:
    """The CPU times at the start of a trial (pass them to :func:`measure_load`)."""
    import psutil

    return psutil.cpu_times()


def measure_load(started: Any) -> dict[str, float]:
    """``load_avg_1m`` now and, where readable, ``cpu_steal_pct`` since ``started``."""
    import psutil

    out = {"load_avg_1m": round(os.getloadavg()[0], 2)}
    now = psutil.cpu_times()
    total = sum(now) - sum(started)
    if hasattr(now, "steal") and total > 0:
        out["cpu_steal_pct"] = round(100.0 * (now.steal - started.steal) / total, 2)
    return out


def busy_warning(metrics: Iterable[Mapping[str, Any]], cores: int) -> str | None:
    """A warning when a quarter or more of the measured trials ran with a load average above
    :data:`BUSY_FACTOR` x ``cores`` or with over 5% of CPU time stolen; None otherwise."""
    loads = [m for m in metrics if "load_avg_1m" in m]
    busy = [m for m in loads
            if m["load_avg_1m"] > BUSY_FACTOR * cores or m.get("cpu_steal_pct", 0.0) > 5.0]  # fmt: skip
    if not loads or len(busy) * 4 < len(loads):
        return None
    peak = max(m["load_avg_1m"] for m in busy)
    return (f"the machine was busy during {len(busy)} of {len(loads)} measured trials (load "
            f"average up to {peak:g} on {cores} cores): their times include waiting for the "
            "CPU, so rankings and speedups are less certain; measure on an idle machine")  # fmt: skip
