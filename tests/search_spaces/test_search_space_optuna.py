"""Sampling through real optuna studies, enqueueing the defaults, and grids."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.samplers import GridSampler, RandomSampler

from perftune.search_spaces import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample_many(space, n=200, seed=0):
    study = optuna.create_study(sampler=RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        config = space.sample(trial)
        # everything suggested is exactly what sample() reports
        assert trial.params == space.suggested_params(config)
        study.tell(trial, 0.0)
        configs.append(config)
    return configs


def test_random_sampling_respects_the_space(cpu_space):
    configs = _sample_many(cpu_space)
    optimizers = set()
    for config in configs:
        opt = config["optimizer"]
        optimizers.add(opt)
        assert ("momentum" in config) == (opt in ("sgd", "rmsprop"))
        assert ("beta1" in config) == (opt in ("adam", "adamw"))
        assert ("beta2" in config) == (opt in ("adam", "adamw"))
        assert ("weight_decay" in config) == (opt == "adamw")
        # world_size is always in the config: suggested for ddp/fsdp, `otherwise: 1` for single
        if config["parallel_strategy"] in ("ddp", "fsdp"):
            assert config["world_size"] == 2  # low 2, high cores = 2
        else:
            assert config["world_size"] == 1
        bs = config["batch_size"]
        assert isinstance(bs, int) and 8 <= bs <= 512 and bs & (bs - 1) == 0
        assert 1e-4 <= config["learning_rate"] <= 3e-2
        if "weight_decay" in config:
            assert 1e-6 <= config["weight_decay"] <= 1e-2
        assert config["num_threads"] in (1, 2)
        assert config["precision"] in ("fp32", "bf16")
        # every sampled config is inside the domain (constraints aside)
        problems = cpu_space.violations(config)
        if not problems:
            cpu_space.validate_config(config)
    assert optimizers == {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
    assert {c["parallel_strategy"] for c in configs} == {"single", "ddp", "fsdp"}
    assert len({c["batch_size"] for c in configs}) == 7
    # log-uniform: about half the learning rates are below the geometric midpoint
    mid = math.sqrt(1e-4 * 3e-2)
    below = sum(c["learning_rate"] < mid for c in configs)
    assert 60 < below < 140


def test_violating_samples_are_detected(cpu_space):
    configs = _sample_many(cpu_space)
    for config in configs:
        # ranks x threads is a dependent bound: nothing sampled oversubscribes the cores
        assert config["world_size"] * config["num_threads"] <= 2
        assert cpu_space.violations(config) == []


def test_enqueued_defaults_are_sampled_exactly(cpu_space):
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    defaults = cpu_space.defaults()
    study.enqueue_trial(cpu_space.suggested_params(defaults))
    trial = study.ask()
    assert cpu_space.sample(trial) == defaults
    assert trial.number == 0


@pytest.mark.parametrize("device_count", [1, 4])
def test_cuda_sampling(resources, device_count):
    space = load_space("torch", "cuda", resources={**resources, "device_count": device_count})
    configs = _sample_many(space, n=100)
    strategies = {c["parallel_strategy"] for c in configs}
    if device_count == 1:
        assert strategies == {"single"}
        assert {c["world_size"] for c in configs} == {1}
    else:
        assert strategies == {"single", "dp", "ddp", "fsdp"}
        for c in configs:
            assert (c["world_size"] == 1) == (c["parallel_strategy"] == "single")
    assert {c["channels_last"] for c in configs} == {False, True}
    study = optuna.create_study(sampler=RandomSampler(seed=1))
    study.enqueue_trial(space.suggested_params(space.defaults()))
    assert space.sample(study.ask()) == space.defaults()


SMALL = """
extends: none
params:
  batch_size: {type: int, choices_pow2: [8, 16], default: 8}
  optimizer:  {type: categorical, choices: [sgd, adam], default: adam}
  momentum:   {type: float, low: 0.0, high: 0.9, default: 0.5, when: {optimizer: sgd}}
  threads:    {type: int, low: 1, high: 3, default: 1}
"""


def test_grid_small_space_runs_with_grid_sampler(load_file):
    space = load_file(SMALL)
    grid = space.grid()
    assert grid == {
        "batch_size": [8, 16],
        "optimizer": ["sgd", "adam"],
        "momentum": [0.0, 0.225, 0.45, 0.675, 0.9],
        "threads": [1, 2, 3],
    }
    study = optuna.create_study(sampler=GridSampler(grid, seed=0))
    seen = []

    def objective(trial):
        config = space.sample(trial)
        seen.append(tuple(sorted(config.items())))
        return 0.0

    study.optimize(objective, n_trials=1000)
    # GridSampler walks the whole product (momentum is a key even for adam trials, where it is
    # simply unused, so those configs repeat) and then stops the study by itself.
    assert len(study.trials) == 2 * 2 * 5 * 3
    assert len(set(seen)) == 2 * 3 * (5 + 1)


def test_grid_rules(load_file):
    space = load_file(
        """
        extends: none
        params:
          small:   {type: int, low: 1, high: 16, default: 1}
          big:     {type: int, low: 0, high: 100, default: 0}
          stepped: {type: int, low: 0, high: 1000, step: 10, default: 0}
          snapped: {type: int, low: 0, high: 100, step: 7, default: 0}
          logint:  {type: int, low: 1, high: 10000, log: true, default: 1}
          logf:    {type: float, low: 1.0e-4, high: 1.0, log: true, default: 1.0e-2}
          stepf:   {type: float, low: 0.0, high: 1.0, step: 0.1, default: 0.0}
          flat:    {type: float, low: 0.5, high: 0.5, default: 0.5}
        """
    )
    grid = space.grid()
    assert grid["small"] == list(range(1, 17))
    assert grid["big"] == [0, 25, 50, 75, 100]
    assert grid["stepped"] == [0, 250, 500, 750, 1000]
    assert space.params["snapped"].high == 98  # snapped down onto the step grid
    assert grid["snapped"] == list(range(0, 99, 7))
    assert grid["logint"] == [1, 10, 100, 1000, 10000]
    assert grid["logf"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert grid["stepf"] == pytest.approx([0.0, 0.2, 0.5, 0.8, 1.0])
    assert grid["flat"] == [0.5]
    for name, values in grid.items():
        for value in values:
            assert space.params[name].contains(value), (name, value)
    # and optuna accepts every grid value without complaint
    study = optuna.create_study(sampler=GridSampler({k: v[:2] for k, v in grid.items()}))
    study.optimize(lambda t: (space.sample(t), 0.0)[1], n_trials=200)
    assert len(study.trials) == 2**7  # "flat" has a single value


def test_grid_of_cpu_space_covers_every_suggested_name(cpu_space):
    grid = cpu_space.grid()
    assert set(grid) == set(cpu_space.params)
    assert grid["world_size"] == [2]
    assert grid["num_threads"] == [1, 2]
