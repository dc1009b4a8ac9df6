"""The built-in spaces: lookup, loading, defaults, resources, reporting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from perftune import search_spaces
from perftune.search_spaces import SpaceError, builtin_space_path, builtin_spaces, load_space

CPU_DEFAULTS = {
    "batch_size": 32,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "beta1": 0.9,
    "beta2": 0.999,
    "parallel_strategy": "single",
    "world_size": 1,
    "num_threads": 2,
    "precision": "fp32",
}


def test_import_pulls_in_no_framework_and_no_optuna():
    code = (
        "import sys, perftune.search_spaces as search_spaces\n"
        "bad = [m for m in ('torch', 'tensorflow', 'mindspore', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api():
    for name in search_spaces.__all__:
        assert hasattr(search_spaces, name)
    assert issubclass(SpaceError, ValueError)
    assert "choices_pow2" in search_spaces.__doc__


def test_builtin_lookup():
    assert {("torch", "cpu"), ("torch", "cuda")} <= set(builtin_spaces())
    for fw in ("tensorflow", "mindspore"):
        assert {(fw, "cpu"), (fw, "cuda")} <= set(builtin_spaces())
    assert builtin_space_path("torch", "cpu").name == "cpu.yaml"
    assert builtin_space_path("torch", "cuda").name == "cuda.yaml"
    assert builtin_space_path("PyTorch", "CPU").name == "cpu.yaml"
    assert builtin_space_path("torch", "cpu").is_file()


def test_builtin_lookup_missing_lists_what_exists():
    with pytest.raises(SpaceError) as info:
        builtin_space_path("jax", "cpu")
    message = str(info.value)
    assert message.startswith("search space jax/cpu: no built-in search space")
    assert "available: mindspore/cpu, " in message and "torch/cpu, torch/cuda" in message
    with pytest.raises(SpaceError, match="invalid device class"):
        builtin_space_path("torch", "../cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_builtins_load(device, resources):
    space = load_space("torch", device, resources=resources)
    assert space.name == f"torch/{device}"
    assert space.resources == resources
    space.validate_config(space.defaults(), what="defaults")
    assert space.violations(space.defaults()) == []
    json.dumps(space.to_dict())  # JSON-able


def test_cpu_defaults(cpu_space):
    assert cpu_space.defaults() == CPU_DEFAULTS
    assert list(cpu_space.params) == [
        "batch_size",
        "learning_rate",
        "optimizer",
        "momentum",
        "beta1",
        "beta2",
        "weight_decay",
        "parallel_strategy",
        "world_size",
        "num_threads",
        "precision",
    ]
    assert cpu_space.params["batch_size"].choices == (8, 16, 32, 64, 128, 256, 512)
    threads = cpu_space.params["num_threads"]
    assert (threads.low, threads.high) == (1, 2)  # the envelope of [1, cores // world_size]
    assert threads.high_expr.text == "cores // world_size"
    assert threads.depends == ("world_size",)
    assert cpu_space.constraints == []  # ranks x threads is the dependent bound now
    assert "compile" not in cpu_space.params


def test_cpu_defaults_follow_cores(resources):
    space = load_space("torch", "cpu", resources={**resources, "cores": 16})
    assert space.defaults()["num_threads"] == 16
    assert space.params["world_size"].high == 16


def test_cpu_with_one_core_drops_ddp(resources):
    space = load_space("torch", "cpu", resources={**resources, "cores": 1})
    assert space.params["parallel_strategy"].choices == ("single",)
    assert space.params["world_size"].disabled is not None
    assert space.defaults()["world_size"] == 1


def test_cuda_on_one_gpu_drops_data_parallel(resources):
    space = load_space("torch", "cuda", resources=resources)
    strategy = space.params["parallel_strategy"]
    assert strategy.choices == ("single",)
    assert [v for v, _ in strategy.dropped] == ["dp", "ddp", "fsdp"]
    assert "params.world_size has an empty domain" in strategy.dropped[0][1]
    assert "low 2 > high device_count = 1" in space.params["world_size"].disabled
    assert space.defaults()["world_size"] == 1
    assert "world_size" not in space.grid()
    # reported by describe() and to_dict()
    rows = dict(space.describe())
    assert "dropped dp, ddp" in rows["parallel_strategy"]
    assert rows["world_size"].startswith("never active")
    data = space.to_dict()
    assert data["params"]["parallel_strategy"]["choices"] == ["single"]
    assert [d["value"] for d in data["params"]["parallel_strategy"]["dropped"]] == ["dp", "ddp", "fsdp"]
    assert "empty domain" in data["params"]["world_size"]["disabled"]


def test_cuda_on_four_gpus_keeps_data_parallel(resources):
    space = load_space("torch", "cuda", resources={**resources, "device_count": 4})
    assert space.params["parallel_strategy"].choices == ("single", "dp", "ddp", "fsdp")
    assert not space.params["parallel_strategy"].dropped
    world = space.params["world_size"]
    assert (world.low, world.high, world.disabled) == (2, 4, None)
    config = {**space.defaults(), "parallel_strategy": "ddp", "world_size": 4}
    space.validate_config(config)


def test_cuda_contents(resources):
    space = load_space("torch", "cuda", resources=resources)
    p = space.params
    assert p["batch_size"].choices[0] == 8 and p["batch_size"].choices[-1] == 4096
    assert p["precision"].choices == ("fp32", "tf32", "bf16", "fp16")
    assert p["compile"].choices == ("none", "default", "max-autotune")
    assert p["channels_last"].choices == (False, True)
    assert "num_threads" not in p
    defaults = space.defaults()
    assert defaults["compile"] == "none"
    assert defaults["channels_last"] is False
    assert defaults["batch_size"] == 32
    assert space.constraints[0].expr == "parallel_strategy == 'single' or device_count >= 2"
    # compile with fsdp is not proposed (a `when`), rather than refused by a constraint
    assert p["compile"].when == {"parallel_strategy": ("single", "dp", "ddp")}
    assert (p["compile"].has_otherwise, p["compile"].otherwise) == (True, "none")


def test_describe_rows(cpu_space):
    rows = dict(cpu_space.describe())
    assert rows["batch_size"].startswith("{8, 16, 32, 64, 128, 256, 512} (powers of two)")
    assert rows["learning_rate"] == "float [0.0001, 0.03] log; default 0.001"
    assert "only if optimizer in {sgd, rmsprop}" in rows["momentum"]
    assert rows["world_size"].endswith("else 1")
    assert rows["num_threads"] == "int [1, cores // world_size] (within [1, 2]); default 2"


def test_to_dict(cpu_space):
    data = cpu_space.to_dict()
    assert data["name"] == "torch/cpu"
    assert data["resources"] == {"cores": 2, "device_count": 1, "memory_gib": 23}
    assert data["params"]["learning_rate"] == {
        "type": "float",
        "low": 1e-4,
        "high": 3e-2,
        "log": True,
        "default": 1e-3,
        "source": "_common.yaml",
    }
    assert data["params"]["world_size"]["when"] == {"parallel_strategy": ["ddp", "fsdp"]}
    assert data["params"]["world_size"]["otherwise"] == 1
    threads = data["params"]["num_threads"]
    assert (threads["low"], threads["high"], threads["default"]) == (1, 2, 2)
    assert threads["high_expr"] == threads["default_expr"] == "cores // world_size"
    assert data["constraints"] == []


def test_violations_oversubscription(cpu_space):
    config = {**cpu_space.defaults(), "parallel_strategy": "ddp", "world_size": 2}
    assert config["num_threads"] == 2
    assert cpu_space.violations(config) == [
        "params.num_threads: 2 is outside [1, 1] (low 1, high cores // world_size = 1)"
    ]
    with pytest.raises(SpaceError) as info:
        cpu_space.validate_config(config)
    assert str(info.value) == (
        "search space torch/cpu: config.num_threads: 2 is outside [1, 1] "
        "(low 1, high cores // world_size = 1)"
    )
    assert cpu_space.violations({**config, "num_threads": 1}) == []


def test_constraint_skipped_when_a_name_is_absent(load_file):
    space = load_file('constraints: ["momentum <= 0.95"]\n')
    config = dict(space.defaults())
    assert "momentum" not in config  # adam: inactive, no `otherwise`
    assert space.violations(config) == []
    assert space.violations({**config, "optimizer": "sgd", "momentum": 0.99}) == [
        "momentum <= 0.95"
    ]
    # a dependent bound whose parameter has no value cannot be evaluated: a violation
    del config["world_size"]
    assert space.violations(config) == [
        "params.num_threads: its range needs world_size, which has no value"
    ]


def test_validate_config_domain_errors(cpu_space):
    good = cpu_space.defaults()
    cases = [
        ({"batch_size": 33}, "config.batch_size: 33 is outside {8, 16"),
        ({"learning_rate": 0.5}, "config.learning_rate: 0.5 is outside float [0.0001, 0.03] log"),
        ({"optimizer": "lamb"}, "config.optimizer: 'lamb' is outside"),
        ({"num_threads": 3}, "config.num_threads: 3 is outside int [1, cores // world_size]"),
        ({"momentum": 0.9}, "config.momentum: set, but the parameter is inactive"),
        ({"world_size": 2}, "config.world_size: 2 given, but the parameter is inactive"),
        ({"colour": 1}, "config.colour: unknown parameter"),
    ]
    for change, fragment in cases:
        with pytest.raises(SpaceError) as info:
            cpu_space.validate_config({**good, **change})
        assert fragment in str(info.value), str(info.value)
    missing = dict(good)
    del missing["beta1"]
    with pytest.raises(SpaceError, match=r"config\.beta1: missing"):
        cpu_space.validate_config(missing)


def test_resources_are_checked():
    with pytest.raises(SpaceError, match=r"resources\.cores: expected a number"):
        load_space("torch", "cpu", resources={"cores": "many"})
    with pytest.raises(SpaceError) as info:
        load_space("torch", "cpu", resources={"device_count": 1})
    assert str(info.value) == (
        "search space cpu.yaml: params.world_size.high: expression 'cores': "
        "unknown name 'cores' (resources: device_count)"
    )


def test_docstring_examples_load(write_yaml, resources):
    doc = search_spaces.__doc__
    example = textwrap.dedent(doc[doc.index("    version: 1") : doc.index("Top-level keys")])
    path = write_yaml("extends: none\n" + example, name="example.yaml")
    space = load_space("torch", "cpu", resources=resources, override=path)
    assert space.defaults()["num_threads"] == 2
    override = textwrap.dedent(
        doc[doc.index("    extends: builtin") : doc.index("Every problem raises")]
    )
    path = write_yaml(override, name="override.yaml")
    space = load_space("torch", "cpu", resources=resources, override=path)
    assert "precision" not in space.params
    assert space.constraints[-1].expr == "batch_size * grad_accum <= 512"


def _fake_builtins(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    monkeypatch.setattr("perftune.search_spaces._space.BUILTIN_DIR", tmp_path)


COMMON = """\
    version: 1
    params:
      batch_size: {type: int, choices_pow2: [8, 64], default: 32}
      optimizer:  {type: categorical, choices: [sgd, adam], default: adam}
      momentum:   {type: float, low: 0.0, high: 0.9, default: 0.5, when: {optimizer: sgd}}
    constraints: ["batch_size <= 64"]
"""


def test_include_common_replaces_adds_and_removes(tmp_path, monkeypatch, resources):
    _fake_builtins(tmp_path, monkeypatch, {"_common.yaml": COMMON, "fw-cpu.yaml": """\
        version: 1
        include: common
        params:
          batch_size: {type: int, choices_pow2: [16, 32], default: 16}
          momentum: null
          optimizer:  {type: categorical, choices: [adam], default: adam}
          jit: {type: categorical, choices: [false, true], default: false}
        constraints: ["batch_size >= 16"]
    """})
    assert builtin_spaces() == [("fw", "cpu")]  # _common.yaml is a fragment, not a space
    space = load_space("fw", "cpu", resources=resources)
    assert list(space.params) == ["batch_size", "optimizer", "jit"]
    assert space.params["batch_size"].choices == (16, 32)
    assert space.params["batch_size"].source == "fw-cpu.yaml"
    assert [c.expr for c in space.constraints] == ["batch_size <= 64", "batch_size >= 16"]


def test_include_common_errors(tmp_path, monkeypatch, resources, write_yaml):
    _fake_builtins(tmp_path, monkeypatch, {"_common.yaml": COMMON, "fw-cpu.yaml": """\
        version: 1
        include: common
        params:
          nosuch: null
    """})
    with pytest.raises(SpaceError, match=r"fw-cpu.yaml: params.nosuch: null removes an included"):
        load_space("fw", "cpu", resources=resources)
    path = write_yaml("version: 1\ninclude: common\n")
    with pytest.raises(SpaceError, match=r"include: only allowed in built-in files"):
        load_space("torch", "cpu", resources=resources, override=path)


def test_every_builtin_shares_the_common_parameters(resources):
    common = {"learning_rate", "optimizer", "momentum", "beta1", "beta2", "weight_decay"}
    for framework, device in builtin_spaces():
        res = {**resources, "device_count": 2}
        space = load_space(framework, device, resources=res)
        assert common <= set(space.params), (framework, device)
        assert space.defaults()["optimizer"] == "adam" and space.defaults()["batch_size"] == 32
