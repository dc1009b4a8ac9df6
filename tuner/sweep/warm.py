"""Warm start: a new study first tries the best configs perftune's store already holds for the
same workload and framework, on other devices (any objective) or on this device under another
objective (or in another study of the same key, e.g. another search space).

Each stored config is projected onto this sweep's space (:func:`project`): the space's params
only, missing ones at their defaults, inactive ones dropped, ``batch_size`` scaled by the
devices' memory ratio and kept in the space's domain. Configs the space rejects, the baseline
and repeats are skipped; at most :data:`MAX_WARM` are enqueued right after the baseline, each
with user attr ``warm_start`` naming where it came from. A grid sweep is not warm started: it
tries its whole grid anyway, and enqueued configs would take trials from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from perftune.sweep.context import SweepContext

#: The most stored configs one study tries first.
MAX_WARM = 5


def warm_start(ctx: SweepContext, study) -> dict[str, Any] | None:
    """Enqueue the projected stored bests on a new study (right after the baseline); return
    ``{"enqueued": n, "sources": [...]}`` (also kept in the study's user attrs), or None when
    the study is not new, ``--warm-start off`` or the sampler is ``grid``."""
    from perftune.storage import StoreError

    if ctx.cfg.warm_start == "off" or ctx.cfg.sampler == "grid" or ctx.multi or not is_new(study):
        return None
    try:
        records = [r for r in ctx.store.get_best(workload=ctx.workload["name"], framework=ctx.cfg.framework)
                   if _task(r.objective) == ctx.cfg.task]  # a training config is no inference one
        devices = ctx.store.list_devices() if records else []
    except StoreError:  # a warm start is worth no failed sweep
        return None
    memory = {d["fingerprint"]: (d["kind"], d["memory_bytes"]) for d in devices}
    here = (ctx.device.fingerprint, ctx.device.kind, ctx.device.memory_bytes)
    picked, skipped = candidates(ctx.space, records, memory, here, objective=ctx.cfg.objective_key,
                                 study_name=ctx.study_name, baseline=ctx.baseline,
                                 max_batch=study.user_attrs.get("max_batch_size"))  # fmt: skip
    if not picked and not skipped:
        return None
    for config, source in picked:
        study.enqueue_trial(ctx.space.suggested_params(config), user_attrs={"warm_start": source})
    info = {"enqueued": len(picked), "sources": [source for _, source in picked], "skipped": skipped}
    study.set_user_attr("warm_start", info)
    ctx.progress("warm_start", info)
    return info


def _task(key: str) -> str | None:
    from perftune.objectives import OBJECTIVES, objective_name

    objective = OBJECTIVES.get(objective_name(key))
    return objective.task if objective else None


def is_new(study) -> bool:
    """No trial yet but the enqueued (not yet run) baseline."""
    from optuna.trial import TrialState

    return all(t.state == TrialState.WAITING and t.user_attrs.get("baseline")
               for t in study.get_trials(deepcopy=False))  # fmt: skip


def candidates(space, records: Iterable, memory: Mapping[str, tuple[str, int | None]],
               here: tuple[str, str, int | None], *, objective: str, study_name: str,
               baseline: Mapping[str, Any], max_batch: int | None = None,
               limit: int = MAX_WARM) -> tuple[list[tuple[dict[str, Any], str]], int]:  # fmt: skip
    """The stored bests (``BestConfigRecord``s of this workload and framework) worth trying
    first, projected onto ``space``: ``([(config, source), ...], skipped)``, at most ``limit``,
    this device's first, then the same kind's, newest first; ``skipped`` counts the configs the
    space rejected. ``memory``: fingerprint -> (kind, memory bytes) of the store's devices;
    ``here``: this device's (fingerprint, kind, memory bytes). The record of this very study
    (same device, objective and study name) is left out."""
    fingerprint, kind, mem = here
    mine = [r for r in records
            if not (r.device_fingerprint == fingerprint and r.objective == objective
                    and r.study_name == study_name)]  # fmt: skip
    mine.sort(key=lambda r: (r.device_fingerprint != fingerprint, r.device_kind != kind,
                             -r.updated_at.timestamp()))  # fmt: skip
    seen = {_key(baseline)}
    out: list[tuple[dict[str, Any], str]] = []
    skipped = 0
    for r in mine:
        ratio = None
        if r.device_fingerprint != fingerprint:
            ratio = memory_ratio((kind, mem), memory.get(r.device_fingerprint, (r.device_kind, None)))
        config = project(space, r.config, ratio=ratio, max_batch=max_batch)
        if config is None:
            skipped += 1
            continue
        if _key(config) in seen:
            continue
        seen.add(_key(config))
        out.append((config, f"{r.device_kind}/{r.objective}/best {r.id}"))
        if len(out) >= limit:
            break
    return out, skipped


def memory_ratio(new: tuple[str, int | None], old: tuple[str, int | None]) -> float | None:
    """This device's memory over the stored one's, from ``(kind, memory bytes)`` each; None
    when either is unknown or a CPU (host memory rarely bounds the batch size)."""
    (new_kind, new_mem), (old_kind, old_mem) = new, old
    if "cpu" in (new_kind, old_kind) or not new_mem or not old_mem:
        return None
    return new_mem / old_mem


def project(space, stored: Mapping[str, Any], *, ratio: float | None = None,
            max_batch: int | None = None) -> dict[str, Any] | None:  # fmt: skip
    """``stored`` as a config of ``space``: its params only (others dropped), missing ones at
    their defaults, inactive ones dropped (or at their ``otherwise``), ``batch_size`` times
    ``ratio`` (when given) rounded down to a value the space allows (at least its lowest, at
    most ``max_batch``). None if the space rejects the result (a value outside its domain, a
    violated constraint)."""
    from perftune.search_spaces import SpaceError

    values = {name: stored[name] if name in stored else spec.default for name, spec in space.params.items()}
    spec = space.params.get("batch_size")
    numeric = spec is not None and (spec.type == "int" or all(_number(c) for c in spec.choices or ["-"]))
    if numeric and _number(values["batch_size"]):
        try:
            values["batch_size"] = _fit_batch(space, values, values["batch_size"] * (ratio or 1), max_batch)
        except SpaceError:
            return None
    active = space.active_params(values)
    config = {}
    for name, spec in space.params.items():
        if name in active:
            config[name] = values[name]
        elif spec.has_otherwise:
            config[name] = spec.otherwise
    try:
        space.validate_config(config)
    except SpaceError:
        return None
    return config


def _fit_batch(space, values: Mapping[str, Any], wanted: float, max_batch: int | None) -> int:
    """The largest batch size the space allows that is <= ``wanted`` (and ``max_batch``), or
    the lowest it allows."""
    spec = space.params["batch_size"]
    if max_batch is not None:
        wanted = min(wanted, max_batch)
    if spec.choices is not None:
        allowed = sorted(spec.choices)
        below = [c for c in allowed if c <= wanted]
        return below[-1] if below else allowed[0]
    low, high = space.bounds("batch_size", values)
    value = min(max(math.floor(wanted), low), high)
    if spec.step:
        value = low + (value - low) // spec.step * spec.step
    return int(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def warm_summary(study) -> dict[str, Any] | None:
    """The report's account of the warm start: what was enqueued and from where, whether the
    search's best trial was a warm one, the number of the first trial the sampler chose (not
    the baseline, not a warm one) that beat every warm one (None if none did), and the trials
    the warm start saved: ``trials_to_match``, the sampled trials until one was as good as the best
    warm one (None: none was), and ``saved_trials``, that count less the warm trials (negative:
    the warm start cost trials); when none matched, ``saved_at_least`` and the count is a lower
    bound. An estimate: the sampler that matched them had seen the warm trials. None when
    nothing was enqueued."""
    from optuna.trial import TrialState

    from perftune.sweep.search import finished

    info = study.user_attrs.get("warm_start")
    if not info or not info.get("enqueued"):
        return None
    done = sorted(finished(study), key=lambda t: t.number)
    sign = 1 if study.direction.name.lower() == "minimize" else -1
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    warm = [sign * t.value for t in complete if "warm_start" in t.user_attrs]
    best = min(complete, key=lambda t: sign * t.value) if complete else None
    sampled = [t for t in done if "warm_start" not in t.user_attrs and not t.user_attrs.get("baseline")]
    out = {"enqueued": info["enqueued"], "sources": list(info.get("sources", [])),
           "best_trial_warm": bool(best is not None and "warm_start" in best.user_attrs),
           "first_better_trial": None}  # fmt: skip
    if warm:
        def value(t) -> float:
            return sign * t.value if t.state == TrialState.COMPLETE else math.inf

        out["first_better_trial"] = next((t.number for t in sampled if value(t) < min(warm)), None)
        match = next((i for i, t in enumerate(sampled, 1) if value(t) <= min(warm)), None)
        out |= {"trials_to_match": match, "saved_at_least": match is None,
                "saved_trials": (match or len(sampled) + 1) - info["enqueued"]}  # fmt: skip
    return out
