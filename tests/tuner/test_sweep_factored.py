"""The factored search (throughput, then samples to target) through real Optuna and SQLite,
against a fake executor whose two factors are known: the fastest systems config and the
learning-rate optimum are planted, and the search must find them."""

from __future__ import annotations

import json
import math
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest

from perftune import cli
from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep
from perftune.sweep.factored import (
    TRAINING,
    Throughputs,
    applies,
    halving_pruner,
    lr_rule,
    predicted,
    predicted_ms,
    scaled_lr,
    split,
    valid_configs,
)
from perftune.sweep.lr import base_lr
from perftune.sweep.search import finished

BEST_LR = {"sgd": 0.02, "adam": 0.004}  # at batch size 32; moves with the batch size's rule


class TwoFactors(Executor):
    """Throughput: 4 threads beat 1, bigger batches run faster (saturating). Samples to target:
    least at each optimizer's best (scaled) learning rate, more with the batch size."""

    framework = "torch"

    def __init__(self) -> None:
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "two-factors", "framework": "torch", "target": 0.5, "mode": "max",
                "budget_s": 60.0, "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33, "cores": 4}]

    @staticmethod
    def throughput(c: dict[str, Any]) -> float:
        return 1000.0 * c["num_threads"] * c["batch_size"] / (c["batch_size"] + 32)

    @staticmethod
    def samples(c: dict[str, Any]) -> float:
        best = scaled_lr(BEST_LR[c["optimizer"]], 32, c["batch_size"], c["optimizer"])
        return 2000.0 * (1 + math.log(c["learning_rate"] / best) ** 2) * (1 + c["batch_size"] / 64)

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        c = request.config
        rate = self.throughput(c)
        if request.measure == "throughput":
            return TrialOutcome("ok", metrics={"throughput_sps": rate}, wall_s=0.01)
        n = self.samples(c)
        for k in range(1, 10):  # evaluations at each tenth of the samples: the gap closes linearly
            if on_report is not None and on_report(round(n * k / 10), 0.5 * (1 - k / 10)):
                return TrialOutcome("pruned", metrics={"samples": round(n * k / 10)}, wall_s=0.01)
        return TrialOutcome("ok", metrics={"reached_target": True, "samples": n, "throughput_sps": rate,
                                           "time_to_target_s": n / rate}, wall_s=0.01)  # fmt: skip


@pytest.fixture
def space(tmp_path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent("""
        extends: none
        version: 1
        params:
          batch_size: {type: categorical, choices: [16, 32, 64, 128], default: 32}
          learning_rate: {type: float, low: 1.0e-4, high: 0.1, log: true, default: 1.0e-3}
          optimizer: {type: categorical, choices: [sgd, adam], default: adam}
          num_threads: {type: int, low: 1, high: 4, default: 1}
    """).lstrip())  # fmt: skip
    return str(path)


def sweep(tmp_path, space: str, **kw):
    ex = TwoFactors()
    cfg = SweepConfig(**{"workload": "mlp-digits", "space": space, "trials": 30, "seed": 1,
                         "confirm_top": 2, "confirm_repeats": 1, "track": False, "search": "factored",
                         **kw})  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    return ex, ws, run_sweep(cfg, ws, executor=ex)


def test_factored_search_finds_the_planted_optimum_in_two_stages(tmp_path, space):
    import optuna

    ex, ws, report = sweep(tmp_path, space)
    stages = report.search["stages"]
    assert report.search["search"] == "factored"
    assert stages["throughput"]["trials"] + stages["convergence"]["trials"] == 30
    fast = optuna.load_study(study_name=stages["throughput"]["study"], storage=ws.storage)
    assert fast.direction.name == "MAXIMIZE" and len(fast.trials) == stages["throughput"]["trials"]
    search = [r for r in ex.requests if "-trial-" in r.log_path]
    first = stages["throughput"]["trials"]
    assert {r.measure for r in search[:first]} == {"throughput"}
    assert {r.measure for r in search[first:]} == {"converge"}
    # stage 1 walked its 16 valid configs without repeats (the baseline, then 11 enqueued)
    configs = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in fast.trials]
    assert len(set(configs)) == len(configs) == first
    assert sum(bool(t.user_attrs.get("walk")) for t in fast.trials) == first - 1
    # stage 1 held the training knobs at their defaults
    assert {(r.config["optimizer"], r.config["learning_rate"]) for r in search[:first]} == {("adam", 1e-3)}
    # stage 2 runs on stage 1's fastest systems config for its batch size (4 threads here)
    sampled = [r for r in search[first:] if r.config != search[0].config]
    assert sampled and all(r.config["num_threads"] == 4 for r in sampled)
    study = optuna.load_study(study_name=report.study_name, storage=ws.storage)
    tried = [t for t in study.trials if "lr_multiplier" in t.params]
    assert tried and {t.user_attrs["lr_rule"] for t in tried} <= {"linear", "sqrt"}
    for t in tried:  # the learning rate is the multiplier on the batch-size-scaled base rate
        c = t.user_attrs["config"]
        base = scaled_lr(base_lr(1e-3, "adam", c["optimizer"]), 32, c["batch_size"], c["optimizer"])
        assert c["learning_rate"] == pytest.approx(min(max(base * t.params["lr_multiplier"], 1e-4), 0.1))
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(TwoFactors.samples(c) / TwoFactors.throughput(c))
    # stage 2's leaders ran again with the next seed, the same config (.repeats): on this
    # seed-free fake they tell nothing new, which is why the sweep has 30 trials, not 24
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert repeats and all(t.user_attrs["config"] == study.trials[t.user_attrs["repeat_of"]].user_attrs["config"]
                           for t in repeats)  # fmt: skip
    # stage 2 is pruned by successive halving over predicted training time: its trials report
    # samples seen, the pruner's steps are those samples over stage 1's throughput, in ms
    assert {r.fidelity for r in search[first:]} == {"samples"} and {r.fidelity for r in search[:first]} == {"time"}
    pruned = [t for t in study.trials if t.user_attrs.get("outcome") == "pruned"]
    assert pruned and not [t for t in fast.trials if t.user_attrs.get("outcome") == "pruned"]
    for t in pruned:
        n, rate = TwoFactors.samples(t.user_attrs["config"]), TwoFactors.throughput(t.user_attrs["config"])
        assert max(t.intermediate_values) == pytest.approx(1000 * n * len(t.intermediate_values) / 10 / rate, abs=1)
    # the confirmed best is near the planted optimum: 4 threads, its optimizer's best rate
    best = report.best["config"]
    optimum = min(TwoFactors.samples({**best, "learning_rate": lr, "optimizer": opt}) /
                  TwoFactors.throughput({**best, "num_threads": 4, "batch_size": bs})
                  for opt in BEST_LR for bs in (16, 32, 64, 128)
                  for lr in [scaled_lr(BEST_LR[opt], 32, bs, opt)])  # fmt: skip
    assert best["num_threads"] == 4
    assert report.best["stats"]["median"] <= 1.5 * optimum
    assert report.speedup > 4


def _halving_trial(study, pace: float, value: float | None = None, outcome: str | None = None) -> bool:
    """A trial that closes its gap at ``pace`` per second of predicted time, reporting every
    500 ms up to 9 s; True if the pruner stopped it. Run to the end, it completes with ``value``
    (default 1 / pace), or is told PRUNED with ``outcome`` (e.g. not_reached) when given."""
    import optuna

    trial = study.ask()
    for ms in range(500, 9001, 500):
        trial.report(max(0.0, 1 - pace * ms / 1000), ms)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True
    if outcome:
        trial.set_user_attr("outcome", outcome)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, value if value is not None else 1 / pace)
    return False


def test_halving_prunes_at_equal_predicted_time_after_its_startup_trials():
    import optuna

    study = optuna.create_study(pruner=halving_pruner(reduction=3, first_rung=1 / 9, startup=3))

    def run(pace: float, value: float | None = None) -> bool:
        return _halving_trial(study, pace, value)

    assert not run(1 / 9, 9.0)  # the first completed trial: its 9 s put the first rung at 1 s
    assert not run(0.05)  # the slowest yet: not pruned before 3 trials completed...
    assert "completed_rung_0" in study.trials[1].system_attrs  # ...but its rungs are recorded
    assert not run(0.5)
    assert run(0.06)  # among the slowest third at the 1 s rung: pruned
    assert study.trials[3].last_step == 1000
    assert not run(0.6)  # the best at each rung it reaches: runs to the end


def test_halving_counts_trials_that_trained_to_their_budget_among_its_startup_trials():
    """A config that missed the target ran its course: with one completed trial and two such,
    a slow third is pruned (counting completed trials only, halving would wait for two more)."""
    import optuna

    study = optuna.create_study(pruner=halving_pruner(reduction=3, first_rung=1 / 9, startup=3))

    def run(pace: float, outcome: str | None = None) -> bool:
        return _halving_trial(study, pace, outcome=outcome)

    assert not run(1 / 9)
    assert not run(0.5, outcome="not_reached") and not run(0.4, outcome="not_reached")
    assert run(0.06)


def test_the_trial_budget_caps_real_training_when_values_are_predicted():
    import optuna

    from perftune.sweep.context import BOUND_FACTOR, SweepContext

    ctx = SimpleNamespace(objective=SimpleNamespace(measure="converge"), multi=False, budget=60.0, predicted=True)
    study = optuna.create_study()
    assert SweepContext.trial_budget(ctx, study) == 60.0  # nothing completed yet

    def done(value: float, real: float) -> None:
        trial = study.ask()
        trial.set_user_attr("metrics", {"time_to_target_s": real})
        study.tell(trial, value)

    done(4.0, 4.0)  # a value that is the real time to target
    assert SweepContext.trial_budget(ctx, study) == pytest.approx(BOUND_FACTOR * 4.0)
    # stage 2: predicted 2 s (stage 1's steady throughput), really trained 4.4 s; another 3 s, 3.3 s
    done(2.0, 4.4)
    done(3.0, 3.3)
    assert SweepContext.trial_budget(ctx, study) == pytest.approx(BOUND_FACTOR * 2.0 * 2.2)
    joint = SimpleNamespace(**{**ctx.__dict__, "predicted": False})  # values are real times: no scaling
    assert SweepContext.trial_budget(joint, study) == pytest.approx(BOUND_FACTOR * 2.0)
    done(0.01, 0.01)
    assert SweepContext.trial_budget(ctx, study) == pytest.approx(60.0 * 0.05)  # never below 5% of the budget


def test_stage_1_table_counts_the_windows_of_a_pruned_trial():
    import optuna

    study = optuna.create_study(direction="maximize")

    def trial(threads: int, state: str, value=None, windows=(), **attrs) -> None:
        t = study.ask()
        t.set_user_attr("config", {"batch_size": 32, "num_threads": threads})
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        for i, w in enumerate(windows):
            t.report(w, i)
        study.tell(t, value, state=getattr(optuna.trial.TrialState, state))

    trial(1, "COMPLETE", 100.0)
    trial(2, "PRUNED", windows=(40.0, 60.0, 50.0), outcome="pruned")  # slower than the median: stopped
    trial(3, "PRUNED", cause="invalid")  # rejected before it ran
    trial(4, "PRUNED", cause="oom", windows=(10.0,))  # infeasible: no throughput of its own
    table = Throughputs.from_study(study, ["num_threads"])
    assert sorted(table.cells) == [('{"num_threads": 1}', 32), ('{"num_threads": 2}', 32)]
    assert table.of({"batch_size": 32, "num_threads": 2}) == pytest.approx(50.0)


def test_valid_configs_of_the_builtin_cpu_space():
    from perftune.search_spaces import load_space

    space = load_space("torch", "cpu", resources={"cores": 2, "device_count": 1, "memory_gib": 16})
    configs = valid_configs(space.fixed(TRAINING), limit=10_000)
    # 7 batch sizes x (single: 2 thread counts x 2 precisions; ddp and fsdp: 2 ranks x 1 thread x 2)
    assert len(configs) == 56 and len({json.dumps(c, sort_keys=True) for c in configs}) == 56
    assert all(not space.violations(c) for c in configs)
    assert {(c["parallel_strategy"], c["world_size"], c["num_threads"]) for c in configs} == {
        ("single", 1, 1), ("single", 1, 2), ("ddp", 2, 1), ("fsdp", 2, 1)}  # fmt: skip
    assert valid_configs(space.fixed(TRAINING), limit=10) is None  # too many grid points to look at
    assert valid_configs(space, limit=10**9) is None  # a continuous knob (the learning rate)


def test_predicted_ms_is_samples_over_stage_1_throughput():
    table = Throughputs(["num_threads"], [({"batch_size": 32, "num_threads": 1}, 200.0)])
    assert predicted_ms(table, {"batch_size": 32, "num_threads": 1}, 500) == 2500
    assert predicted_ms(table, {"batch_size": 64, "num_threads": 3}, 500) == 500  # unseen: the samples


def test_a_finished_factored_sweep_run_again_runs_nothing(tmp_path, space):
    ex, ws, report = sweep(tmp_path, space, trials=8)
    ex2 = TwoFactors()
    cfg = SweepConfig(workload="mlp-digits", space=space, trials=8, seed=1, confirm_top=1,
                      confirm_repeats=1, track=False, search="factored")  # fmt: skip
    again = run_sweep(cfg, ws, executor=ex2)
    assert ex2.requests == []  # both stages complete and confirmed: its stored result
    assert again.already_complete["sweep_id"] == report.sweep_id and again.best == report.best
    ex3 = TwoFactors()
    more = run_sweep(SweepConfig(**{**cfg.__dict__, "trials": 10}), ws, executor=ex3)
    search = [r for r in ex3.requests if "-trial-" in r.log_path]
    assert [r.measure for r in search] == ["throughput", "converge"]  # one more trial per stage
    assert more.already_complete is None


class Interrupted(TwoFactors):
    """Ctrl-C during its ``at``-th search trial."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        if "-trial-" in request.log_path and sum("-trial-" in r.log_path for r in self.requests) + 1 == self.at:
            self.requests.append(request)
            raise KeyboardInterrupt
        return super().run(request, on_report)


@pytest.mark.parametrize("at", [3, 7], ids=["in-stage-1", "in-stage-2"])
def test_an_interrupted_factored_sweep_resumes_where_it_stopped(tmp_path, space, at):
    """Ctrl-C in either stage, then the same command: each stage ends with its share of the
    trials, the interrupted trial is run again (it counted nothing), and nothing ran twice."""
    import optuna

    cfg = SweepConfig(workload="mlp-digits", space=space, trials=10, seed=1, confirm_top=1,
                      confirm_repeats=1, track=False, search="factored")  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    first = Interrupted(at)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, ws, executor=first)
    second = TwoFactors()
    report = run_sweep(cfg, ws, executor=second)
    stages, (n1, n2) = report.search["stages"], split(10)
    assert (stages["throughput"]["trials"], stages["convergence"]["trials"]) == (n1, n2) == (4, 6)
    fast = optuna.load_study(study_name=stages["throughput"]["study"], storage=ws.storage)
    slow = optuna.load_study(study_name=report.study_name, storage=ws.storage)
    assert (len(finished(fast)), len(finished(slow))) == (n1, n2)
    interrupted = {name: [t.state.name for t in study.trials if t.user_attrs.get("cause") == "interrupted"]
                   for name, study in (("stage 1", fast), ("stage 2", slow))}  # fmt: skip
    assert interrupted == ({"stage 1": ["FAIL"], "stage 2": []} if at <= n1 else {"stage 1": [], "stage 2": ["FAIL"]})
    ran = sum("-trial-" in r.log_path for r in first.requests) + sum("-trial-" in r.log_path for r in second.requests)
    assert ran == n1 + n2 + 1  # every counted trial once, and the interrupted one again
    assert report.best is not None and report.speedup > 1


def test_auto_is_the_joint_search(tmp_path, space):
    _, _, report = sweep(tmp_path, space, trials=6, search="auto")
    assert report.search == {"search": "joint"}
    _, _, report = sweep(tmp_path / "2", space, trials=6, search="joint")
    assert report.search == {"search": "joint"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"objective": SimpleNamespace(name="throughput")}, "time to target"),
        ({"cfg": SimpleNamespace(workers=1, sampler="grid", trials=20)}, "grid"),
        ({"cfg": SimpleNamespace(workers=1, sampler="tpe", trials=5)}, "--trials 6"),
        ({"space": SimpleNamespace(searched=lambda: ["batch_size"])}, "learning_rate"),
    ],
)
def test_applies_says_why_not(change, reason):
    ctx = SimpleNamespace(objective=SimpleNamespace(name="time-to-target"),
                          cfg=SimpleNamespace(workers=1, sampler="tpe", trials=20),
                          space=SimpleNamespace(searched=lambda: ["batch_size", "learning_rate"]))  # fmt: skip
    assert applies(ctx) is None
    for key, value in change.items():
        setattr(ctx, key, value)
    assert reason in applies(ctx)


def test_search_factored_where_it_does_not_apply_is_one_line_exit_2(tmp_path, space, capsys):
    code = cli.main(["sweep", "--workload", "mlp-digits", "--objective", "throughput", "--search",
                     "factored", "--space", space, "--home", str(tmp_path / "ws")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--search factored" in err
    assert cli.main(["sweep", "--workload", "mlp-digits", "--search", "both"]) == 2
    assert "--search both: choose auto, joint or factored" in capsys.readouterr().err


def test_split_rules_and_table():
    assert split(6) == (3, 3) and split(20) == (8, 12) and split(50) == (20, 30)
    assert (lr_rule("sgd"), lr_rule("adam"), lr_rule("adamw")) == ("linear", "sqrt", "sqrt")
    assert scaled_lr(0.1, 32, 128, "sgd") == pytest.approx(0.4)
    assert scaled_lr(0.001, 32, 128, "adam") == pytest.approx(0.002)
    table = Throughputs(["num_threads"], [({"batch_size": 32, "num_threads": 1}, 100.0),
                                          ({"batch_size": 32, "num_threads": 2}, 180.0),
                                          ({"batch_size": 16, "num_threads": 1}, 60.0),
                                          ({"batch_size": 128, "num_threads": 2}, 300.0)])  # fmt: skip
    assert table.systems_for(32) == {"num_threads": 2}
    # batch size 16 ran with 1 thread only: 2 threads, 1.8x faster at 32, is taken as faster there
    assert table.systems_for(16) == {"num_threads": 2}
    assert table.of({"batch_size": 16, "num_threads": 2}) == pytest.approx(60.0 * 1.8, rel=0.05)
    assert table.systems_for(64) == {"num_threads": 2}  # never measured: the best a(s)
    assert table.of({"batch_size": 32, "num_threads": 1, "optimizer": "sgd"}) == pytest.approx(100.0)
    assert table.of({"batch_size": 64, "num_threads": 1}) is None
    assert Throughputs(["num_threads"], []).systems_for(32) is None
    done = {"reached_target": True, "samples": 1000, "throughput_sps": 50.0}
    assert predicted(table, {"batch_size": 32, "num_threads": 1}, done) == pytest.approx(10.0)
    assert predicted(table, {"batch_size": 64, "num_threads": 1}, done) == 20.0  # own rate
    assert predicted(table, {"batch_size": 32, "num_threads": 1}, {**done, "reached_target": False}) is None
