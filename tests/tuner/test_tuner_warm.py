"""Warm start (stored bests of other devices / objectives tried first), --patience and the
payback line (issue 16, items 3 and 4): the pure parts on their own, then sweeps through real
Optuna / SQLite / the config store with a fake executor (no framework, no MLflow)."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep
from perftune.sweep.report import payback
from perftune.sweep.search import stalled
from perftune.sweep.warm import MAX_WARM, candidates, memory_ratio, project, warm_summary

SPACE = """
    extends: none
    params:
      batch_size: {type: int, low: 8, high: 512, step: 8, default: 32}
      optimizer: {type: categorical, choices: [adam, sgd], default: adam}
      momentum: {type: float, low: 0.0, high: 0.99, default: 0.9, when: {optimizer: [sgd]}}
      learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true, default: 1.0e-3}
    constraints:
      - {expr: "batch_size <= 256 or learning_rate <= 0.01", message: big batches want small rates}
"""
GiB = 2**30


def _space(tmp_path: Path, text: str = SPACE):
    from perftune.search_spaces import load_space

    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return load_space("torch", "cpu", resources={"cores": 2, "device_count": 1, "memory_gib": 8},
                      override=path)  # fmt: skip


# -- projection onto a space


def test_project_fills_drops_and_keeps(tmp_path):
    space = _space(tmp_path)
    # missing params at their defaults, unknown ones dropped, an inactive one dropped
    assert project(space, {"batch_size": 64, "momentum": 0.5, "fused_adam": True}) == \
        {"batch_size": 64, "optimizer": "adam", "learning_rate": 1e-3}  # fmt: skip
    assert project(space, {"optimizer": "sgd", "momentum": 0.5}) == \
        {"batch_size": 32, "optimizer": "sgd", "momentum": 0.5, "learning_rate": 1e-3}  # fmt: skip
    # outside the domain, or a violated constraint: skipped
    assert project(space, {"optimizer": "lamb"}) is None
    assert project(space, {"batch_size": 512, "learning_rate": 0.05}) is None


def test_project_scales_the_batch_size_and_clips_it(tmp_path):
    space = _space(tmp_path)
    assert project(space, {"batch_size": 64}, ratio=2.0)["batch_size"] == 128
    assert project(space, {"batch_size": 100}, ratio=0.5)["batch_size"] == 48  # 50, down to the step
    assert project(space, {"batch_size": 64}, ratio=0.01)["batch_size"] == 8  # at least the low
    assert project(space, {"batch_size": 256}, ratio=4.0)["batch_size"] == 512  # at most the high
    assert project(space, {"batch_size": 256}, ratio=4.0, max_batch=100)["batch_size"] == 96
    assert project(space, {"batch_size": 1000})["batch_size"] == 512  # memory unknown: clipped
    pow2 = _space(tmp_path, """
        extends: none
        params:
          batch_size: {type: int, choices_pow2: [8, 256], default: 32}
    """)  # fmt: skip
    assert project(pow2, {"batch_size": 64}, ratio=1.9)["batch_size"] == 64  # 121.6: down to 64
    assert project(pow2, {"batch_size": 64}, ratio=0.01)["batch_size"] == 8
    assert project(pow2, {"batch_size": 4096})["batch_size"] == 256


def test_memory_ratio():
    assert memory_ratio(("cuda", 80 * GiB), ("cuda", 40 * GiB)) == 2.0
    assert memory_ratio(("cuda", 80 * GiB), ("cuda", None)) is None
    assert memory_ratio(("cuda", None), ("cuda", 40 * GiB)) is None
    assert memory_ratio(("cpu", 64 * GiB), ("cuda", 40 * GiB)) is None  # host memory: not the limit


def _rec(id: int, fingerprint: str, kind: str, objective: str, config: dict[str, Any],
         study: str | None = None, age_h: float = 0) -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(id=id, device_fingerprint=fingerprint, device_kind=kind, objective=objective,
                           config=config, study_name=study,
                           updated_at=datetime(2025, 1, 1) - timedelta(hours=age_h))  # fmt: skip


def test_candidates_pick_order_and_skip(tmp_path):
    space = _space(tmp_path)
    memory = {"a100": ("cuda", 40 * GiB), "h100": ("cuda", 80 * GiB)}
    here = ("h100", "cuda", 80 * GiB)
    records = [
        _rec(1, "a100", "cuda", "throughput", {"batch_size": 64}, age_h=1),  # scaled: 128
        _rec(2, "h100", "cuda", "time-to-target", {"batch_size": 256}, study="mine"),  # this study
        _rec(3, "h100", "cuda", "time-to-target", {"batch_size": 64}, study="other-space"),
        _rec(4, "h100", "cuda", "throughput", {"batch_size": 32}),  # = the baseline
        _rec(5, "a100", "cuda", "time-to-target", {"batch_size": 64, "optimizer": "lamb"}),  # invalid
        _rec(6, "a100", "cuda", "time-to-target", {"batch_size": 64}, age_h=2),  # = record 1 here
        _rec(7, "cpu0", "cpu", "throughput", {"batch_size": 72}),  # memory unknown: kept as is
    ]  # fmt: skip
    picked, skipped = candidates(space, records, memory, here, objective="time-to-target",
                                 study_name="mine", baseline=space.defaults())  # fmt: skip
    assert [(c["batch_size"], s) for c, s in picked] == [
        (64, "cuda/time-to-target/best 3"), (128, "cuda/throughput/best 1"), (72, "cpu/throughput/best 7")]
    assert skipped == 1
    many = [_rec(10 + i, "a100", "cuda", "throughput", {"batch_size": 8 * (i + 1)}) for i in range(9)]
    picked, _ = candidates(space, many, memory, here, objective="throughput", study_name="x",
                           baseline=space.defaults())  # fmt: skip
    assert len(picked) == MAX_WARM


# -- patience and payback


def _trials(*values: float | None) -> SimpleNamespace:
    """A study whose COMPLETE trials have these values (None: a trial that did not complete)."""
    done = [SimpleNamespace(number=i, value=v) for i, v in enumerate(values) if v is not None]
    return SimpleNamespace(get_trials=lambda deepcopy=False, states=None: list(reversed(done)))


def test_stalled():
    assert not stalled(_trials(10.0, 10.0), 2, "minimize")  # fewer than patience + 1
    assert stalled(_trials(10.0, 10.0, 9.95), 2, "minimize")  # 0.5%: not enough
    assert not stalled(_trials(10.0, 10.0, 9.8), 2, "minimize")  # 2% better resets the count
    assert stalled(_trials(10.0, 9.0, 9.5, 11.0), 2, "minimize")  # worse ones count too
    assert not stalled(_trials(10.0, 10.0, None, 9.8), 2, "minimize")  # only complete ones
    assert stalled(_trials(100.0, 100.5, 99.0), 2, "maximize")
    assert not stalled(_trials(100.0, 100.5, 102.0), 2, "maximize")
    assert not stalled(_trials(), 1, "maximize")


def test_payback():
    cost = payback(192.0, 1.8)
    assert cost["sweep_s"] == 192.0
    assert cost["saved_per_training_hour_s"] == pytest.approx(1600.0)  # 26.7 min
    assert cost["payback_training_hours"] == pytest.approx(0.12)
    for gain in (None, 1.0, 0.7):
        assert payback(10.0, gain) == {"sweep_s": 10.0, "saved_per_training_hour_s": None,
                                       "payback_training_hours": None}  # fmt: skip


def test_report_lines():
    from perftune.cli import _payback_line, _warm_line

    assert _payback_line(payback(192.0, 1.8), 1.8) == (
        "the sweep took 3.2 min; at 1.80x it saves 26.7 min per hour of training and pays for "
        "itself after 0.12 h of training")  # fmt: skip
    assert _payback_line(payback(60.0, 0.9), 0.9) == "the sweep took 1.0 min; no speedup: nothing to pay back"
    assert _payback_line(payback(12.0, 2.0), 2.0).startswith("the sweep took 12 s; at 2.00x it saves 30.0 min")
    assert _payback_line(payback(12.0, 2.0), 2.0).endswith("after 0.0067 h of training")
    w = {"enqueued": 2, "sources": ["cuda/throughput/best 1", "cpu/time-to-target/best 2"],
         "best_trial_warm": True, "first_better_trial": None}  # fmt: skip
    assert _warm_line(w) == ("warm start: 2 stored configs tried first (from cuda/throughput/best 1, "
                             "cpu/time-to-target/best 2); the search's best came from one of them")  # fmt: skip
    assert _warm_line({**w, "best_trial_warm": False, "first_better_trial": 5}).endswith(
        "; trial 5 was the first to beat them")


def _warm_study(*sampled: float | None):
    """A minimizing study: the baseline (10 s), two warm trials (5 s and 4 s), then ``sampled``
    trials (None: pruned)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="minimize")
    study.set_user_attr("warm_start", {"enqueued": 2, "sources": ["cuda/time-to-target/best 1"]})
    dist = {"x": FloatDistribution(0, 1)}
    rows = [(10.0, {"baseline": True}), (5.0, {"warm_start": "w1"}), (4.0, {"warm_start": "w2"})]
    for value, attrs in [*rows, *((v, {}) for v in sampled)]:
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(state=state, value=value, params={"x": 0.5}, distributions=dist,
                                     user_attrs=attrs))  # fmt: skip
    return study


def test_warm_summary_counts_the_trials_the_sampler_took_to_match_the_warm_ones():
    from perftune.cli import _warm_line

    w = warm_summary(_warm_study(6.0, None, 4.0, 3.9, 4.5))  # matched by the third sampled trial
    assert (w["first_better_trial"], w["trials_to_match"], w["saved_trials"], w["saved_at_least"]) == (6, 3, 1, False)
    assert not w["best_trial_warm"]
    assert _warm_line(w).endswith("; trial 6 was the first to beat them; sampled trials matched them after 3: the "
                                  "warm start saved about 1")  # fmt: skip
    w = warm_summary(_warm_study(3.0))  # matched at once: the two warm trials cost one more
    assert (w["trials_to_match"], w["saved_trials"]) == (1, -1)
    assert _warm_line(w).endswith("after 1: the warm start cost about 1")
    w = warm_summary(_warm_study(6.0, None, 7.0, 8.0))  # never matched: a lower bound
    assert (w["first_better_trial"], w["trials_to_match"], w["saved_trials"], w["saved_at_least"]) == (None, None, 3, True)
    assert w["best_trial_warm"]
    assert _warm_line(w).endswith("best came from one of them; no sampled trial matched them: the warm start "
                                  "saved at least 3 trials")  # fmt: skip


# -- through the real parts, with a fake executor

GRID = [16, 32, 64, 128, 256]


class FakeExecutor(Executor):
    """A device of its own (``name``, ``memory``). Time to target falls and throughput rises
    with the batch size; ``flat``: every config measures the same."""

    framework = "torch"

    def __init__(self, name: str = "Fake CPU", flat: bool = False) -> None:
        self.name, self.flat = name, flat
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "fake", "framework": "torch", "target": 0.5, "mode": "max",
                "budget_s": 5.0, "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": self.name, "count": 1, "memory_bytes": 8 * GiB, "cores": 2}]

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        bs = 32 if self.flat else request.config["batch_size"]
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": 2.0 - bs / 1000,
                                           "throughput_sps": 1000.0 + bs}, wall_s=0.01)  # fmt: skip


@pytest.fixture
def space_file(tmp_path) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(f"""
        extends: none
        params:
          batch_size: {{type: categorical, choices: {GRID}, default: 32}}
          learning_rate: {{type: categorical, choices: [0.001, 0.01], default: 0.001}}
    """).lstrip())  # fmt: skip
    return str(path)


def sweep(ws: Workspace, space: str, ex: FakeExecutor | None = None, **kw):
    ex = ex or FakeExecutor()
    cfg = SweepConfig(**{"workload": "mlp-digits", "space": space, "sampler": "random", "seed": 0,
                         "confirm_top": 1, "confirm_repeats": 1, "track": False, **kw})  # fmt: skip
    return ex, run_sweep(cfg, ws, executor=ex)


def _study(ws: Workspace, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=ws.storage)


def test_a_new_study_tries_the_stored_bests_first(tmp_path, space_file):
    from perftune.cli import _warm_line

    ws = Workspace.resolve(tmp_path / "ws")
    _, first = sweep(ws, space_file, FakeExecutor("Fake A"), trials=5)
    assert first.stored and first.warm_start is None
    stored = first.best["config"]
    assert stored["batch_size"] > 32  # better than the baseline, so worth carrying over

    # Another device: the stored best is trial 1, right after the baseline
    ex, second = sweep(ws, space_file, FakeExecutor("Fake B"), trials=3, study="on-b")
    trials = _study(ws, "on-b").get_trials(deepcopy=False)
    assert trials[0].user_attrs.get("baseline") and "warm_start" not in trials[0].user_attrs
    assert trials[1].user_attrs["warm_start"] == f"cpu/time-to-target/best {first.best_config_id}"
    assert trials[1].params == stored and trials[1].user_attrs["config"] == stored
    assert [r.config for r in ex.requests[:2]] == [{"batch_size": 32, "learning_rate": 0.001}, stored]
    w = second.warm_start
    assert (w["enqueued"], w["sources"]) == (1, [trials[1].user_attrs["warm_start"]])
    # the one sampled trial (seeded: batch size 32) is slower than the warm one: the best is warm,
    # and the warm start saved at least the one trial the sampler would have needed after it
    assert trials[2].value > trials[1].value and _study(ws, "on-b").best_trial.number == 1
    assert (w["best_trial_warm"], w["trials_to_match"], w["saved_trials"], w["saved_at_least"]) == (True, None, 1, True)
    assert _warm_line(w).startswith("warm start: 1 stored config tried first (from cpu/time-to-target/best")

    # The same device under another objective (its own study): warm started from both bests,
    # repeats skipped
    _, third = sweep(ws, space_file, FakeExecutor("Fake A"), trials=2, objective="throughput")
    assert third.warm_start["enqueued"] >= 1
    attrs = [t.user_attrs.get("warm_start") for t in _study(ws, third.study_name).get_trials(deepcopy=False)]
    assert attrs[0] is None and attrs[1].startswith("cpu/time-to-target/best")

    # --warm-start off, and a resumed study: nothing enqueued
    _, off = sweep(ws, space_file, FakeExecutor("Fake B"), trials=1, study="off", warm_start="off")
    _, resumed = sweep(ws, space_file, FakeExecutor("Fake B"), trials=4, study="on-b")
    for name, warm in (("off", 0), ("on-b", 1)):
        trials = _study(ws, name).get_trials(deepcopy=False)
        assert sum("warm_start" in t.user_attrs for t in trials) == warm
    assert off.warm_start is None and resumed.warm_start["enqueued"] == 1  # the study's own account


def test_patience_ends_the_search_early(tmp_path, space_file):
    ws = Workspace.resolve(tmp_path / "ws")
    ex, report = sweep(ws, space_file, FakeExecutor(flat=True), trials=30, patience=2, search="joint")
    assert report.stopped_early == {"reason": "patience", "after_trials": 3}
    assert len(_study(ws, report.study_name).get_trials(deepcopy=False)) == 3
    assert report.cost["sweep_s"] == report.duration_s
    _, full = sweep(Workspace.resolve(tmp_path / "ws2"), space_file, FakeExecutor(flat=True), trials=4)
    assert full.stopped_early is None and sum(full.trials.values()) == 4
