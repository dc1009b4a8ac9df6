"""The Trial interface (tuner/trial/api.py) on a fake kit, the trainable decorator, how specs
resolve to training functions, and the launcher's templates: no framework, no process."""

from __future__ import annotations

import contextlib
import textwrap

import pytest

import perftune
from perftune.errors import NothingMeasured, UsageError
from perftune.trial import Kit, Plan, StopTrial, Trial, trainable
from perftune.trial.api import current_trial, run_function
from perftune.trial.launcher import command_space, fill, render, template_fields
from perftune.workload import declared_framework, resolve


class FakeKit(Kit):
    framework = "fake"

    def __init__(self, config, **kw) -> None:
        super().__init__(config, **kw)
        self.applied = {"num_threads"}
        self.prepared = []

    def prepare(self, model):
        self.prepared.append(model)
        return ("prepared", model)

    def optimizer(self, params=None):
        return ("opt", self.config.get("optimizer"), self.config.get("learning_rate"))

    def autocast(self):
        return contextlib.nullcontext()

    def memory(self, gather: bool = True):
        return {"peak_rss_mb": 1.0}

    def extra_metrics(self):
        return {"world_size": self.world}


CONFIG = {"batch_size": 16, "learning_rate": 0.01, "optimizer": "sgd", "momentum": 0.9,
          "precision": "fp32", "num_threads": 2, "compile": "none"}  # fmt: skip


def make_trial(config=CONFIG, **plan) -> Trial:
    return Trial(config, plan=Plan(**{"target": 0.5, **plan}), kit=FakeKit(dict(config)))


def loop(trial: Trial) -> None:
    """A user's loop that applies the optimizer knobs and reads batch_size."""
    trial.optimizer("params")
    bs = trial.config["batch_size"]
    while not trial.should_stop():
        trial.step(samples=bs)
        trial.report(0.9)


def test_a_function_run_records_what_it_measured_and_read():
    out = run_function(loop, make_trial())
    assert out["metrics"]["reached_target"] and out["metrics"]["samples"] == 16
    assert out["metrics"]["peak_rss_mb"] == 1.0 and out["metrics"]["global_batch_size"] == 16
    # batch_size read, the optimizer's knobs applied by trial.optimizer(), threads by the kit;
    # precision and compile never touched
    assert out["knobs_read"] == ["batch_size", "learning_rate", "momentum", "num_threads", "optimizer"]


def test_helpers_mark_the_knobs_they_apply():
    trial = make_trial()
    trial.prepare("model")
    with trial.autocast():
        pass
    assert {"compile", "precision"} <= trial.config.read
    assert "batch_size" not in trial.config.read  # only a read marks it


def test_config_is_read_only_and_dict_like():
    trial = make_trial()
    assert trial.config["optimizer"] == "sgd" and trial.config.get("missing") is None
    assert dict(trial.config)["batch_size"] == 16
    with pytest.raises(TypeError):
        trial.config["batch_size"] = 3  # type: ignore[index]


def test_evaluate_reports_and_excludes_its_time():
    trial = make_trial(target=0.8)
    trial.should_stop()
    trial.step(samples=4)
    assert trial.evaluate(lambda x: x + 0.5, 0.4) == 0.9
    assert trial.should_stop()
    with pytest.raises(StopTrial):
        trial.step(samples=4)


def test_log_takes_finite_numbers_only():
    trial = make_trial()
    trial.log(epochs=3, lr_now=0.1)
    for bad in (float("nan"), "x", True):
        with pytest.raises(ValueError, match="finite number"):
            trial.log(bad=bad)
    out = run_function(loop, trial)
    assert out["metrics"]["epochs"] == 3.0


def test_current_trial_is_the_running_one():
    seen = []
    run_function(lambda t: (seen.append(current_trial() is t), loop(t)), make_trial())
    assert seen == [True]


def test_a_function_that_never_steps_is_the_workloads_fault():
    with pytest.raises(NothingMeasured, match="trial.step"):
        run_function(lambda t: None, make_trial())


def test_the_decorator_describes_the_workload():
    @trainable(name="my-model", target=0.9, mode="max", budget_s=30, framework="tensorflow")
    def train(trial):
        return "ran"

    assert isinstance(train, perftune.Trainable) and train(None) == "ran"
    desc = train.describe()
    assert desc["name"] == "my-model" and desc["framework"] == "tensorflow"
    assert desc["target"] == 0.9 and desc["budget_s"] == 30 and desc["kind"] == "function"


@pytest.mark.parametrize("options, match", [
    ({"target": float("nan")}, "target must be a finite number"),
    ({"target": 1e308, "budget_s": -1}, "budget_s must be > 0"),
    ({"mode": "maximum"}, "mode must be 'max' or 'min'"),
    ({"framework": "jax"}, "framework must be torch, tensorflow or mindspore"),
    ({"name": ""}, "workload name: must be a non-empty name"),
    ({"name": "../x"}, "workload name"),
])  # fmt: skip
def test_the_decorator_refuses_bad_values(options, match):
    with pytest.raises(UsageError, match=match):
        trainable(lambda trial: None, **{"name": "x", "target": 0.5, **options})


@pytest.mark.parametrize("fn", [lambda: None, lambda trial, other: None, lambda *, trial: None])
def test_the_decorator_refuses_a_wrong_signature(fn):
    with pytest.raises(UsageError, match="exactly one argument"):
        trainable(fn, name="x", target=0.5)


def write(tmp_path, source: str, name: str = "user.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_a_spec_resolves_to_the_decorated_function(tmp_path):
    path = write(tmp_path, """
        import perftune

        @perftune.trainable(name="fn", target=0.5)
        def train(trial):
            pass
    """)
    fn = resolve(f"{path}:train", "torch")
    assert isinstance(fn, perftune.Trainable) and fn.name == "fn"
    with pytest.raises(UsageError, match="not tensorflow"):
        resolve(f"{path}:train", "tensorflow")


def test_an_undecorated_training_function_is_refused_in_one_line(tmp_path):
    path = write(tmp_path, """
        def train(trial):
            pass
    """)
    with pytest.raises(UsageError, match=r"must be decorated with @perftune.trainable") as info:
        resolve(f"{path}:train", "torch")
    assert "\n" not in str(info.value)


def test_the_framework_is_read_from_the_file_without_running_it(tmp_path):
    path = write(tmp_path, """
        raise SystemExit("never imported")
        import perftune

        @perftune.trainable(name="fn", target=0.5, framework="tensorflow")
        def train(trial):
            pass

        def make_workload():
            return perftune.Workload(name="w", model=None, data=None, target=1, framework="mindspore")
    """)
    assert declared_framework(f"{path}:train") == "tensorflow"
    assert declared_framework(f"{path}:make_workload") == "mindspore"
    assert declared_framework(f"{path}:other") is None
    assert declared_framework("mlp-digits") is None


def test_a_sweep_config_takes_the_declared_framework(tmp_path):
    from perftune.sweep import SweepConfig

    path = write(tmp_path, """
        import perftune

        @perftune.trainable(name="fn", target=0.5, framework="mindspore")
        def train(trial):
            pass
    """)
    assert SweepConfig(workload=f"{path}:train").framework == "mindspore"
    assert SweepConfig(workload=f"{path}:train", framework="torch").framework == "torch"
    assert SweepConfig(workload="mlp-digits").framework == "torch"


# ------------------------------------------------------------------ launched commands
def test_template_fields_and_filling():
    argv = ["python", "train.py", "--bs", "{batch_size}", "--lr={learning_rate}", "--flag", "{{x}}"]
    assert template_fields(argv) == ["batch_size", "learning_rate"]
    filled = fill(argv, {"batch_size": 64, "learning_rate": 0.00123456789, "optimizer": "sgd"})
    assert filled == ["python", "train.py", "--bs", "64", "--lr=0.00123456789", "--flag", "{x}"]
    assert render(True) == "true" and render(1e-05) == "1e-05"


@pytest.mark.parametrize("arg", ["{batch_size", "{batch_size:.3f}", "{0}", "{a.b}", "{batch_size!r}"])
def test_malformed_templates_are_refused(arg):
    with pytest.raises(UsageError, match="command template"):
        template_fields(["python", arg])


def test_a_template_names_only_knobs_of_the_space():
    from perftune.search_spaces import load_space

    space = load_space("torch", "cpu", resources={"cores": 4, "device_count": 1, "memory_gib": 8})
    plain = command_space(space, ["python", "t.py", "--bs", "{batch_size}"])
    assert plain.defaults()["parallel_strategy"] == "single"
    assert "parallel_strategy" not in plain.searched() and "world_size" not in plain.searched()
    ranks = command_space(space, ["torchrun", "--nproc-per-node", "{world_size}", "t.py"])
    assert "parallel_strategy" in ranks.searched()
    with pytest.raises(UsageError, match=r"\{bs\} is not a knob of the search space"):
        command_space(space, ["python", "t.py", "--bs", "{bs}"])


@pytest.mark.parametrize("fmt, expected", [
    ("json", '{"batch_size": 64, "learning_rate": 0.003, "optimizer": "adam"}'),
    ("args", "--batch_size 64 --learning_rate 0.003 --optimizer adam"),
    ("env", "PERFTUNE_BATCH_SIZE=64\nPERFTUNE_LEARNING_RATE=0.003\nPERFTUNE_OPTIMIZER=adam"),
    ("yaml", "batch_size: 64\nlearning_rate: 0.003\noptimizer: adam"),
])  # fmt: skip
def test_best_config_formats(fmt, expected):
    from perftune.service import format_config

    assert format_config({"optimizer": "adam", "batch_size": 64, "learning_rate": 0.003}, fmt) == expected


@pytest.mark.parametrize("fields, match", [
    ({"workload": "mlp-digits", "eval_interval_s": 1.0}, "only with a command after --"),
    ({"workload": "mlp-digits", "name": "x"}, "only with a command after --"),
    ({"command": ["python", "t.py"], "target": 0.9}, "--name"),
    ({"command": ["python", "t.py"], "name": "x"}, "--target"),
    ({"command": ["python", "t.py"], "name": "x", "target": 0.9, "eval_interval_s": 0.0}, "--eval-interval 0.0"),
    ({"command": ["python", "t.py"], "name": "x", "target": float("nan")}, "--target nan"),
    ({"command": ["python", "t.py"], "name": "x", "target": 0.9, "mode": "up"}, "--mode up"),
    ({"command": ["python", "t.py", "{a"], "name": "x", "target": 0.9}, "command template"),
    ({"command": ["python", "t.py"], "workload": "mlp-digits", "name": "x", "target": 0.9}, "give one of them"),
    ({}, "--workload: give a workload"),
])  # fmt: skip
def test_launcher_mode_flags_are_checked(fields, match):
    from perftune.sweep import SweepConfig

    with pytest.raises(UsageError, match=match):
        SweepConfig(**fields).validate()
