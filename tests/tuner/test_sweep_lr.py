"""The learning rate as a multiplier on the batch-size-scaled default, on a real Optuna study
over the built-in PyTorch CPU space."""

import math

import optuna
import pytest

from perftune.search_spaces import load_space
from perftune.sweep.lr import MULTIPLIER, ScaledLrSpace, base_lr, lr_rule, scaled_lr

RES = {"cores": 4, "device_count": 1, "memory_gib": 16.0}


def test_rules():
    assert scaled_lr(1e-3, 32, 128, "sgd") == pytest.approx(4e-3)  # linear
    assert scaled_lr(1e-3, 32, 128, "adam") == pytest.approx(2e-3)  # square root
    assert {lr_rule(o) for o in ("adam", "adamw", "rmsprop", "adagrad")} == {"sqrt"}
    assert lr_rule("sgd") == "linear"
    assert base_lr(1e-3, "adam", "sgd") == pytest.approx(1e-2)  # SGD trains at ~10x Adam's rate
    assert base_lr(1e-2, "sgd", "adamw") == pytest.approx(1e-3) and base_lr(1e-3, "adam", "rmsprop") == 1e-3


def test_sampled_rates_sit_on_the_scaled_default_and_enqueued_trials_keep_theirs():
    space = load_space("torch", "cpu", resources=RES)
    baseline = space.defaults()
    scaled = ScaledLrSpace(space, baseline)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.suggested_params(baseline), user_attrs={"baseline": True})
    first = study.ask()
    assert scaled.sample(first) == baseline and "lr_multiplier" not in first.params
    spec = space.params["learning_rate"]
    clipped = 0
    for _ in range(60):
        trial = study.ask()
        config = scaled.sample(trial)
        m = trial.params["lr_multiplier"]
        assert MULTIPLIER[0] <= m <= MULTIPLIER[1] and "learning_rate" not in trial.params
        base = base_lr(baseline["learning_rate"], baseline["optimizer"], config["optimizer"])
        want = scaled_lr(base, baseline["batch_size"], config["batch_size"], config["optimizer"]) * m
        assert config["learning_rate"] == pytest.approx(min(max(want, spec.low), spec.high))
        assert trial.user_attrs["lr_rule"] == lr_rule(config["optimizer"])
        assert not space.violations(config)
        clipped += not math.isclose(config["learning_rate"], want)
        study.tell(trial, 1.0)
    assert clipped < 20  # most draws are the scaled rate itself, not a bound
