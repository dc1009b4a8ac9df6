"""Override files: merge by name, removal, extends: none, replace_constraints, conditionals."""

from __future__ import annotations

import pytest

from perftune.search_spaces import Capabilities, SpaceError, load_space


def test_merge_replaces_by_name_and_appends(load_file):
    space = load_file(
        """
        description: smaller batches
        params:
          batch_size: {type: int, choices_pow2: [16, 128], default: 64}
          grad_accum: {type: int, low: 1, high: 8, default: 1}
        constraints:
          - "batch_size * grad_accum <= 512"
        """
    )
    assert space.name == "torch/cpu+my.yaml"
    assert space.description == "smaller batches"
    names = list(space.params)
    assert names.index("batch_size") == 0  # replaced in place
    assert names[-1] == "grad_accum"  # new ones appended
    assert space.params["batch_size"].choices == (16, 32, 64, 128)
    assert space.params["batch_size"].source == "my.yaml"
    assert space.params["optimizer"].source == "_common.yaml"
    assert [c.expr for c in space.constraints] == ["batch_size * grad_accum <= 512"]
    assert space.defaults()["batch_size"] == 64
    assert space.violations({**space.defaults(), "batch_size": 128, "grad_accum": 8}) == [
        "batch_size * grad_accum <= 512"
    ]


def test_replacement_is_complete(load_file):
    # The override's momentum has no `when`: it is unconditional now.
    space = load_file(
        """
        params:
          momentum: {type: float, low: 0.5, high: 0.9, default: 0.8}
        """
    )
    assert space.params["momentum"].when == {}
    assert space.defaults()["momentum"] == 0.8


def test_remove_param(load_file):
    space = load_file(
        """
        params:
          precision: null
          weight_decay: null
        """
    )
    assert "precision" not in space.params
    assert "weight_decay" not in space.params
    assert "precision" not in space.defaults()


def test_remove_param_still_referenced(load_file):
    with pytest.raises(SpaceError) as info:
        load_file("params:\n  optimizer: null\n")
    assert str(info.value) == (
        "search space my.yaml: params.optimizer: cannot remove: still referenced by "
        "params.momentum.when (_common.yaml), params.beta1.when (_common.yaml), "
        "params.beta2.when (_common.yaml), params.weight_decay.when (_common.yaml)"
    )
    with pytest.raises(SpaceError) as info:
        load_file("params:\n  world_size: null\n")
    assert str(info.value) == (
        "search space my.yaml: params.world_size: cannot remove: still referenced by "
        "params.num_threads.high (cpu.yaml), params.num_threads.default (cpu.yaml)"
    )
    with pytest.raises(SpaceError) as info:
        load_file('params:\n  num_threads: null\nconstraints: ["num_threads <= 4"]\n')
    assert str(info.value) == (
        "search space my.yaml: params.num_threads: cannot remove: still referenced by "
        "constraints[0] (my.yaml)"
    )


def test_remove_referenced_param_with_its_users(load_file):
    space = load_file(
        """
        params:
          num_threads: null
        replace_constraints: true
        """
    )
    assert "num_threads" not in space.params
    assert space.constraints == []


def test_remove_unknown_param(load_file):
    with pytest.raises(
        SpaceError,
        match=r"^search space my\.yaml: params\.nope: cannot remove: "
        r"no such parameter in the built-in space torch/cpu",
    ):
        load_file("params:\n  nope: null\n")


def test_replace_constraints(load_file):
    space = load_file(
        """
        replace_constraints: true
        constraints:
          - expr: "num_threads <= 1 or parallel_strategy == 'single'"
            message: one thread per rank
        """
    )
    assert [c.text for c in space.constraints] == [
        "num_threads <= 1 or parallel_strategy == 'single': one thread per rank"
    ]
    assert space.constraints[0].source == "my.yaml"


def test_extends_none(load_file):
    space = load_file(
        """
        extends: none
        description: just two knobs
        params:
          lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true, default: 1.0e-2}
          threads: {type: int, low: 1, high: "max(1, cores // 2)", default: 1}
        constraints:
          - "threads <= cores"
        """
    )
    assert space.name == "my.yaml"
    assert list(space.params) == ["lr", "threads"]
    assert space.defaults() == {"lr": 1e-2, "threads": 1}
    assert space.params["threads"].high == 1
    assert space.description == "just two knobs"


def test_extends_none_works_without_a_builtin(write_yaml, resources):
    path = write_yaml("extends: none\nparams:\n  x: {type: int, low: 1, high: 2, default: 1}\n")
    space = load_space("jax", "tpu", resources=resources, override=path)
    assert space.defaults() == {"x": 1}
    with pytest.raises(SpaceError, match="no built-in search space"):
        load_space("jax", "tpu", resources=resources)


def test_extends_none_rejects_override_only_keys(load_file):
    with pytest.raises(SpaceError, match=r"my\.yaml: params\.x: null \(removal\) needs extends"):
        load_file("extends: none\nparams:\n  x: null\n")
    with pytest.raises(SpaceError, match=r"my\.yaml: replace_constraints: needs extends"):
        load_file("extends: none\nreplace_constraints: true\nparams: {}\n")


def test_override_path_accepts_str_and_absolute(write_yaml, resources):
    path = write_yaml("params:\n  precision: null\n", name="other.yaml")
    space = load_space("torch", "cpu", resources=resources, override=str(path.resolve()))
    assert space.name == "torch/cpu+other.yaml"


def test_when_scalar_and_nested_conditionals(load_file):
    space = load_file(
        """
        extends: none
        params:
          strategy: {type: categorical, choices: [single, ddp], default: ddp}
          ranks:    {type: int, low: 2, high: 4, default: 2, when: {strategy: ddp}, otherwise: 1}
          bucket:   {type: int, choices_pow2: [1, 64], default: 16, when: {ranks: [4]}}
          compress: {type: categorical, choices: [false, true], default: false,
                     when: {bucket: [32, 64]}}
        """
    )
    assert space.params["ranks"].when == {"strategy": ("ddp",)}
    assert space.defaults() == {"strategy": "ddp", "ranks": 2}
    assert space.active_params({"strategy": "ddp", "ranks": 4, "bucket": 64}) == [
        "strategy",
        "ranks",
        "bucket",
        "compress",
    ]
    # a parent that is inactive keeps its children inactive, even with `otherwise`
    assert space.active_params({"strategy": "single", "ranks": 4, "bucket": 64}) == ["strategy"]
    assert space.suggested_params({"strategy": "single", "ranks": 1}) == {"strategy": "single"}


def test_params_are_ordered_after_their_parents(load_file):
    space = load_file(
        """
        extends: none
        params:
          child:  {type: float, low: 0, high: 1, default: 0.5, when: {parent: [b]}}
          parent: {type: categorical, choices: [a, b], default: b, when: {root: [true]}}
          root:   {type: categorical, choices: [true, false], default: true}
          other:  {type: int, low: 0, high: 1, default: 0}
        """
    )
    assert list(space.params) == ["root", "parent", "child", "other"]
    assert space.defaults() == {"root": True, "parent": "b", "child": 0.5, "other": 0}


def test_empty_conditional_domain_drops_parent_choices_recursively(load_file, resources):
    space = load_file(
        """
        extends: none
        params:
          mode:   {type: categorical, choices: [a, b, c], default: a}
          level:  {type: categorical, choices: [x, y], default: x, when: {mode: [b, c]}}
          width:  {type: int, low: 8, high: "memory_gib", default: 8, when: {level: [x, y]},
                   otherwise: 0}
        """,
        resources={**resources, "memory_gib": 4},
    )
    # width is empty -> x and y dropped from level -> level empty -> b, c dropped from mode
    assert space.params["width"].disabled.startswith("empty domain: low 8 > high memory_gib = 4")
    assert space.params["level"].disabled.startswith("empty domain: all choices dropped")
    assert space.params["mode"].choices == ("a",)
    assert space.defaults() == {"mode": "a", "width": 0}


def test_empty_domain_cannot_drop_the_default(load_file):
    with pytest.raises(SpaceError) as info:
        load_file(
            """
            params:
              parallel_strategy: {type: categorical, choices: [single, ddp], default: ddp}
              world_size: {type: int, low: 2, high: device_count, default: 2,
                           when: {parallel_strategy: [ddp]}, otherwise: 1}
            """
        )
    assert str(info.value) == (
        "search space my.yaml: params.parallel_strategy.default: 'ddp' would have to be "
        "dropped: params.world_size has an empty domain: low 2 > high device_count = 1"
    )


def test_empty_domain_with_several_parents_is_an_error(load_file):
    with pytest.raises(
        SpaceError,
        match=r"my\.yaml: params\.world_size: empty domain: low 2 > "
        r"high device_count = 1, and its when names several parameters",
    ):
        load_file(
            """
            params:
              world_size: {type: int, low: 2, high: device_count, default: 2, otherwise: 1,
                           when: {parallel_strategy: [ddp], precision: [fp32]}}
            """
        )


def test_override_may_narrow_a_parent(load_file):
    # momentum's `when` (cpu.yaml) names sgd/rmsprop, which the override no longer offers:
    # not an error, momentum just never becomes active (and leaves the grid).
    space = load_file(
        """
        params:
          optimizer: {type: categorical, choices: [adam, adamw], default: adam}
        """
    )
    assert "momentum" in space.params
    assert "momentum" not in space.grid()


def test_capabilities_accepting(resources):
    caps = Capabilities(
        params=frozenset(
            "batch_size learning_rate optimizer momentum beta1 beta2 weight_decay "
            "parallel_strategy world_size num_threads precision".split()
        ),
        choices={
            "optimizer": frozenset({"sgd", "adam", "adamw", "rmsprop", "adagrad"}),
            "precision": frozenset({"fp32", "bf16", "fp16"}),
            "parallel_strategy": frozenset({"single", "ddp", "fsdp"}),
        },
        framework="torch",
    )
    space = load_space("torch", "cpu", resources=resources, supported=caps)
    assert space.defaults()["precision"] == "fp32"
