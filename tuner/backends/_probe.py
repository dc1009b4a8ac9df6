"""The largest batch that fits, found before a study (stdlib only).

As Lightning's batch-size finder does: double from a starting size until a step runs out of
memory (or ``max_val`` is reached), then bisect between the last size that fitted and the first
that did not, and keep a safety ``margin`` below the result (memory fragments, other processes
and the allocator's caching make the edge unreliable). The caller supplies ``fits(batch_size)``,
which runs a few real training steps and returns False on out-of-memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProbeResult:
    """``max_batch_size``: the bound the study searches below (``margin`` applied);
    ``largest_fit``: the largest size that ran; ``first_oom``: the smallest that did not (None if
    none failed); ``tried``: ``(batch_size, fitted)`` in order; ``limited_by``: ``"memory"`` or
    ``"max_val"`` or ``"max_trials"`` (the attempts ran out first)."""

    max_batch_size: int
    largest_fit: int
    first_oom: int | None
    limited_by: str
    tried: list[tuple[int, bool]] = field(default_factory=list)


class NothingFits(RuntimeError):
    """Even the smallest batch size ran out of memory."""


def find_max_batch_size(fits: Callable[[int], bool], *, start: int, max_val: int, min_val: int = 1,
                        margin: float = 0.1, max_trials: int = 25,
                        resolution: float = 0.05) -> ProbeResult:  # fmt: skip
    """Probe ``fits`` for the largest batch size in ``[min_val, max_val]`` that fits.

    Args:
        fits: runs a few training steps at a batch size; False if it ran out of memory (any
            other error should propagate).
        start: first size tried (the config's default batch size, clamped into range).
        max_val: the largest size worth having (the search space's upper bound).
        min_val: the smallest size; if it does not fit, :class:`NothingFits` is raised.
        margin: fraction kept free below the largest size that fitted (0.1: 10% headroom),
            unless that size is ``max_val`` itself (the limit was not memory).
        max_trials: bound on calls to ``fits``.
        resolution: bisection stops when the gap is below this fraction of the lower end.
    """
    if not 1 <= min_val <= max_val:
        raise ValueError(f"need 1 <= min_val <= max_val, got {min_val}, {max_val}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    tried: list[tuple[int, bool]] = []

    def attempt(bs: int) -> bool:
        ok = bool(fits(bs))
        tried.append((bs, ok))
        return ok

    lo, hi = 0, None  # lo: largest known fit; hi: smallest known OOM
    bs = min(max(start, min_val), max_val)
    # Doubling (halving while the start itself does not fit).
    while len(tried) < max_trials:
        if attempt(bs):
            lo = bs
            if bs >= max_val or hi is not None:
                break
            bs = min(bs * 2, max_val)
        else:
            hi = bs
            if lo:
                break
            if bs <= min_val:
                raise NothingFits(f"batch size {bs} does not fit in memory")
            bs = max(min_val, bs // 2)
    # Bisection between the last fit and the first OOM.
    while hi is not None and lo and hi - lo > max(1, math.floor(lo * resolution)) and len(tried) < max_trials:
        mid = (lo + hi) // 2
        if attempt(mid):
            lo = mid
        else:
            hi = mid
    if not lo:
        raise NothingFits(f"no batch size from {min_val} fitted within {max_trials} attempts")
    limited = "memory" if hi is not None else "max_val" if lo >= max_val else "max_trials"
    bound = max(min_val, math.floor(lo * (1 - margin))) if limited == "memory" else lo
    return ProbeResult(max_batch_size=bound, largest_fit=lo, first_oom=hi, limited_by=limited, tried=tried)


__all__ = ["NothingFits", "ProbeResult", "find_max_batch_size"]
