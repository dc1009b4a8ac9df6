"""Seed repeats of the search's leaders (:mod:`perftune.sweep.repeats`): on a real Optuna study
directly, then through a real sweep (Optuna and SQLite) whose fake trials have a planted lucky
seed: one run of a slow config is fast, its second seed is not, and the config must lose the
lead it got by luck."""

from __future__ import annotations

import textwrap
from typing import Any

import optuna

from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep
from perftune.sweep.repeats import enqueue_repeats, ranked
from perftune.sweep.search import finished


def study_with(values: list[tuple[dict[str, Any], float | None]], attrs: dict[int, dict[str, Any]] | None = None):
    """An in-memory study with one finished trial per (config, value): None is PRUNED; ``attrs``
    adds user attributes to the trials it numbers."""
    study = optuna.create_study(direction="minimize")
    dist = optuna.distributions.IntDistribution(0, 100)
    for i, (config, value) in enumerate(values):
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(params={"x": config["x"]}, distributions={"x": dist},
                                                  value=value, state=state,
                                                  user_attrs={"config": config, **(attrs or {}).get(i, {})}))  # fmt: skip
    return study


def test_ranked_groups_by_config_and_ranks_by_the_mean_over_seeds():
    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 1}, 5.0), ({"x": 3}, 2.5), ({"x": 4}, 0.5),
                        ({"x": 4}, None)])  # fmt: skip
    order = [(mean, [t.user_attrs["config"]["x"] for t in runs]) for mean, runs in ranked(study.trials, "minimize")]
    # x=1 averages 3.0 over its two seeds; x=4 has a seed short of the target: not ranked
    assert order == [(2.0, [2]), (2.5, [3]), (3.0, [1, 1])]
    assert [m for m, _ in ranked(study.trials, "maximize")] == [3.0, 2.5, 2.0]


def test_the_leaders_get_their_next_seed_once():
    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 3}, 3.0), ({"x": 4}, 4.0)])
    assert enqueue_repeats(study, study.trials, "minimize", top=2, seeds=2) == 2
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [(t.user_attrs["repeat_of"], t.user_attrs["repeat"], t.user_attrs["repeat_config"]) for t in waiting] == [
        (0, 1, {"x": 1}), (1, 1, {"x": 2})]  # fmt: skip
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": 1}, {"x": 2}]
    assert enqueue_repeats(study, study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), "minimize",
                           top=2, seeds=2) == 0  # already waiting  # fmt: skip


def test_no_more_repeats_waiting_than_the_stage_has_trials_left():
    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 3}, 3.0), ({"x": 4}, 4.0)])
    assert enqueue_repeats(study, study.trials, "minimize", top=2, seeds=2, room=0) == 0  # the last trial ran
    assert enqueue_repeats(study, study.trials, "minimize", top=2, seeds=2, room=1) == 1
    # one waits already: with room for two, one more
    assert enqueue_repeats(study, study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), "minimize",
                           top=2, seeds=2, room=2) == 1  # fmt: skip
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 2


def test_a_repeat_two_workers_enqueued_at_once_runs_once():
    """Both workers saw the same leaders and enqueued the same repeat: the copy asked for
    second is given back (FAIL, cause surplus, not counted); a retry of a dead copy is not."""
    from perftune.sweep.search import _duplicate_repeat

    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 3}, 3.0), ({"x": 4}, 4.0)])
    for _ in range(2):  # two workers, the same moment: neither saw the other's waiting copy
        study.enqueue_trial({"x": 1}, user_attrs={"repeat_of": 0, "repeat": 1, "repeat_config": {"x": 1}})
    first, second = study.ask(), study.ask()
    assert first.number < second.number and not _duplicate_repeat(study, first)
    assert _duplicate_repeat(study, second)
    given_back = study.trials[second.number]
    assert given_back.state == optuna.trial.TrialState.FAIL and given_back.user_attrs["cause"] == "surplus"
    assert given_back not in finished(study)
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # its worker died: the retry runs
    study.enqueue_trial({"x": 1}, user_attrs={"repeat_of": 0, "repeat": 1, "repeat_config": {"x": 1}})
    assert not _duplicate_repeat(study, study.ask())
    assert not _duplicate_repeat(study, study.ask())  # a sampled trial: not a repeat at all


def test_no_repeats_before_twice_top_configs_and_never_the_baseline():
    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 3}, 3.0)])
    assert enqueue_repeats(study, study.trials, "minimize", top=2, seeds=2) == 0  # 3 configs < 2 * 2
    study = study_with([({"x": 1}, 1.0), ({"x": 2}, 2.0), ({"x": 3}, 3.0), ({"x": 4}, 4.0)], {0: {"baseline": True}})
    assert enqueue_repeats(study, study.trials, "minimize", top=2, seeds=2) == 1
    assert study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0].user_attrs["repeat_of"] == 1


class LuckySeed(Executor):
    """Time to target by ``num_threads``: 1 is lucky on seed 0 (0.1 s) and slow on every other
    seed (5 s); 2 takes 1 s on every seed; otherwise ``num_threads`` seconds."""

    framework = "torch"

    def __init__(self) -> None:
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "lucky", "framework": "torch", "target": 0.5, "mode": "max", "budget_s": 60.0,
                "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33, "cores": 8}]

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        x = request.config["num_threads"]
        t = {1: 0.1 if request.seed == 0 else 5.0, 2: 1.0}.get(x, float(x))
        return TrialOutcome("ok", metrics={"reached_target": True, "samples": 100 * t, "throughput_sps": 100.0,
                                           "time_to_target_s": t}, wall_s=0.01)  # fmt: skip


def test_a_lucky_seed_loses_the_lead_in_a_real_sweep(tmp_path, monkeypatch):
    from perftune.sweep import joint

    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent("""
        extends: none
        version: 1
        params:
          num_threads: {type: categorical, choices: [1, 2, 3, 4, 5, 6, 7, 8], default: 8}
    """).lstrip())  # fmt: skip
    stages = joint.JointPolicy.stages

    def with_repeats(self, ctx, study):
        ctx.leader_seeds = 2
        return stages(self, ctx, study)

    monkeypatch.setattr(joint.JointPolicy, "stages", with_repeats)
    ex = LuckySeed()
    cfg = SweepConfig(workload="mlp-digits", space=str(space), sampler="random", trials=20, seed=0,
                      confirm_top=1, confirm_repeats=1, track=False, warm_start="off")  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    report = run_sweep(cfg, ws, executor=ex)
    study = optuna.load_study(study_name=report.study_name, storage=ws.storage)
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    for t in repeats:  # the exact config, with the next seed
        assert t.user_attrs["config"] == study.trials[t.user_attrs["repeat_of"]].user_attrs["config"]
    lucky = sorted(r.seed for r in ex.requests if r.config["num_threads"] == 1 and "-trial-" in r.log_path)
    assert lucky[0] == 0 and 1 in lucky, "the lucky config led, so it ran again with the next seed"
    leader = ranked(finished(study), "minimize")[0]
    assert {t.user_attrs["config"]["num_threads"] for t in leader[1]} == {2} and len(leader[1]) >= 2
    assert report.best["config"]["num_threads"] == 2  # not the lucky one
