"""Every kind of invalid space gives one SpaceError line naming the file and the key path."""

from __future__ import annotations

import pytest

from perftune.search_spaces import Capabilities, SpaceError, load_space

TORCH_CAPS = Capabilities(
    params=frozenset(
        "batch_size learning_rate optimizer momentum beta1 beta2 weight_decay "
        "parallel_strategy world_size num_threads precision".split()
    ),
    choices={
        "optimizer": frozenset({"sgd", "adam", "adamw", "rmsprop", "adagrad"}),
        "precision": frozenset({"fp32", "bf16"}),
        "parallel_strategy": frozenset({"single", "ddp", "fsdp"}),
    },
    framework="torch",
)


def error_of(load_file, text: str, **kwargs) -> str:
    with pytest.raises(SpaceError) as info:
        load_file(text, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("search space my.yaml: ")
    return message


# (name, override YAML, exact message after "search space my.yaml: ")
CASES = [
    (
        "malformed yaml",
        "params:\n  batch_size: {type: int, low: 1\n  lr: 3\n",
        "line 3: malformed YAML: expected ',' or '}', but got ':'",
    ),
    (
        "bad indentation",
        "params:\n  a: 1\n b: 2\n",
        "line 3: malformed YAML: expected <block end>, but found '<block mapping start>'",
    ),
    (
        "duplicate yaml key",
        "params:\n  precision: null\n  precision: null\n",
        "line 3: malformed YAML: duplicate key 'precision'",
    ),
    ("not a mapping", "- 1\n- 2\n", "top level: expected a mapping, got list"),
    ("empty file", "", "empty file (expected a mapping with 'params')"),
    (
        "unknown top-level key",
        "parameters: {}\n",
        "parameters: unknown key (allowed: constraints, description, extends, include, "
        "params, replace_constraints, version)",
    ),
    ("bad version", "version: 2\n", "version: unsupported version 2 (supported: 1)"),
    (
        "bad extends",
        "extends: parent\n",
        "extends: Input should be 'builtin' or 'none' (got 'parent')",
    ),
    (
        "unknown param key",
        "params:\n  batch_size: {type: int, low: 8, high: 64, default: 32, colour: red}\n",
        "params.batch_size.colour: unknown key (allowed: choices_pow2, default, description, "
        "high, log, low, otherwise, step, type, when)",
    ),
    (
        "unknown categorical key",
        "params:\n  precision: {type: categorical, choices: [fp32], default: fp32, low: 1}\n",
        "params.precision.low: unknown key (allowed: choices, default, description, otherwise, "
        "type, when)",
    ),
    (
        "bad type name",
        "params:\n  batch_size: {type: integer, low: 8, high: 64, default: 32}\n",
        "params.batch_size.type: unknown type 'integer' (expected one of: categorical, float, int)",
    ),
    (
        "missing type",
        "params:\n  batch_size: {low: 8, high: 64, default: 32}\n",
        "params.batch_size.type: required key missing (one of: categorical, float, int)",
    ),
    (
        "param not a mapping",
        "params:\n  batch_size: 32\n",
        "params.batch_size: expected a mapping, got 32",
    ),
    (
        "missing default",
        "params:\n  batch_size: {type: int, low: 8, high: 64}\n",
        "params.batch_size.default: required key missing",
    ),
    (
        "low > high",
        "params:\n  batch_size: {type: int, low: 64, high: 32, default: 32}\n",
        "params.batch_size.low: must be <= high (got 64 > 32)",
    ),
    (
        "low > high float",
        "params:\n  momentum: {type: float, low: 0.9, high: 0.1, default: 0.5}\n",
        "params.momentum.low: must be <= high (got 0.9 > 0.1)",
    ),
    (
        "low > high after resources",
        "params:\n  num_threads: {type: int, low: 4, high: cores, default: 4}\n",
        "params.num_threads.low: must be <= high (got low 4 > high cores = 2)",
    ),
    (
        "log with low <= 0",
        "params:\n  learning_rate: {type: float, low: 0, high: 0.1, log: true, default: 0.01}\n",
        "params.learning_rate.low: must be > 0 with log: true (got 0)",
    ),
    (
        "log with negative low from an expression",
        "params:\n  learning_rate: {type: float, low: '0 - cores', high: 0.1, log: true, "
        "default: 0.01}\n",
        "params.learning_rate.low: must be > 0 with log: true (got 0 - cores = -2)",
    ),
    (
        "log int with low 0",
        "params:\n  num_threads: {type: int, low: 0, high: 4, log: true, default: 1}\n",
        "params.num_threads.low: must be >= 1 with log: true (got 0)",
    ),
    (
        "log with step",
        "params:\n  learning_rate: {type: float, low: 0.1, high: 1, log: true, step: 0.1, "
        "default: 0.5}\n",
        "params.learning_rate.step: not allowed together with log: true",
    ),
    (
        "step <= 0",
        "params:\n  num_threads: {type: int, low: 1, high: 2, step: 0, default: 1}\n",
        "params.num_threads.step: must be a positive integer (got 0)",
    ),
    (
        "float low for an int",
        "params:\n  num_threads: {type: int, low: 1.5, high: 2, default: 2}\n",
        "params.num_threads.low: expected an integer or an expression string, got 1.5",
    ),
    (
        "int expression giving a fraction",
        "params:\n  num_threads: {type: int, low: 1, high: 'cores / 4', default: 1}\n",
        "params.num_threads.high: must be an integer (expression 'cores / 4' gave 0.5)",
    ),
    (
        "bool for a number",
        "params:\n  momentum: {type: float, low: 0, high: true, default: 0.5}\n",
        "params.momentum.high: expected a number or an expression string, got True",
    ),
    (
        "bad expression syntax",
        "params:\n  num_threads: {type: int, low: 1, high: 'cores +', default: 1}\n",
        "params.num_threads.high: expression 'cores +': invalid syntax",
    ),
    (
        "unknown resource",
        "params:\n  num_threads: {type: int, low: 1, high: 'gpus', default: 1}\n",
        "params.num_threads.high: expression 'gpus': unknown name 'gpus' "
        "(resources: cores, device_count, memory_gib)",
    ),
    (
        "param in otherwise",
        "params:\n  num_threads: {type: int, low: 1, high: 2, default: 1, "
        "when: {precision: bf16}, otherwise: 'world_size'}\n",
        "params.num_threads.otherwise: uses parameter 'world_size'; only resources are allowed "
        "in otherwise",
    ),
    (
        "default outside int range",
        "params:\n  num_threads: {type: int, low: 1, high: cores, default: 4}\n",
        "params.num_threads.default: 4 is outside the domain int [1, 2]",
    ),
    (
        "default outside log float range",
        "params:\n  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, "
        "default: 0.1}\n",
        "params.learning_rate.default: 0.1 is outside the domain float [0.0001, 0.01] log",
    ),
    (
        "default off the step grid",
        "params:\n  num_threads: {type: int, low: 1, high: 9, step: 2, default: 2}\n",
        "params.num_threads.default: 2 is outside the domain int [1, 9] step 2",
    ),
    (
        "default not a choice",
        "params:\n  optimizer: {type: categorical, choices: [sgd, adam], default: lamb}\n",
        "params.optimizer.default: 'lamb' is not one of the choices ('sgd', 'adam')",
    ),
    (
        "default not a power of two",
        "params:\n  batch_size: {type: int, choices_pow2: [8, 64], default: 24}\n",
        "params.batch_size.default: 24 is not a power of two in [8, 64]",
    ),
    (
        "pow2 bound not a power of two",
        "params:\n  batch_size: {type: int, choices_pow2: [8, 100], default: 8}\n",
        "params.batch_size.choices_pow2: 100 is not a power of two",
    ),
    (
        "pow2 with low",
        "params:\n  batch_size: {type: int, choices_pow2: [8, 64], low: 8, default: 8}\n",
        "params.batch_size.low: not allowed together with choices_pow2",
    ),
    (
        "empty choices",
        "params:\n  precision: {type: categorical, choices: [], default: fp32}\n",
        "params.precision.choices: must not be empty",
    ),
    (
        "duplicate choices",
        "params:\n  precision: {type: categorical, choices: [fp32, bf16, fp32], default: fp32}\n",
        "params.precision.choices: duplicate value 'fp32'",
    ),
    (
        "bad param name",
        "params:\n  2fast: {type: int, low: 1, high: 2, default: 1}\n",
        "params.2fast: not a valid parameter name (use letters, digits, underscores)",
    ),
    (
        "param named like a resource",
        "params:\n  cores: {type: int, low: 1, high: 2, default: 1}\n",
        "params.cores: name clashes with a resource of the same name",
    ),
    (
        "when naming an unknown param",
        "params:\n  momentum: {type: float, low: 0, high: 0.9, default: 0.5, "
        "when: {optimiser: [sgd]}}\n",
        "params.momentum.when.optimiser: unknown parameter (known: batch_size, learning_rate, "
        "optimizer, momentum, beta1, beta2, weight_decay, parallel_strategy, world_size, "
        "num_threads, precision)",
    ),
    (
        "when value not in the parent's domain",
        "extends: none\nparams:\n  opt: {type: categorical, choices: [sgd, adam], default: sgd}\n"
        "  mom: {type: float, low: 0, high: 1, default: 0.5, when: {opt: [sdg]}}\n",
        "params.mom.when.opt: 'sdg' is not in the domain of params.opt ({sgd, adam})",
    ),
    (
        "when on itself",
        "params:\n  momentum: {type: float, low: 0, high: 0.9, default: 0.5, "
        "when: {momentum: [0.5]}}\n",
        "params.momentum.when.momentum: a parameter cannot depend on itself",
    ),
    (
        "when cycle",
        "extends: none\nparams:\n"
        "  a: {type: categorical, choices: [x, y], default: x, when: {b: [x]}}\n"
        "  b: {type: categorical, choices: [x, y], default: x, when: {a: [x]}}\n",
        "params.b.when: dependency cycle: a -> b -> a",
    ),
    (
        "constraint with unknown name",
        "constraints:\n  - expr: 'num_thread <= cores'\n",
        "constraints[0].expr: unknown name 'num_thread' in 'num_thread <= cores' (params: "
        "batch_size, learning_rate, optimizer, momentum, beta1, beta2, weight_decay, "
        "parallel_strategy, world_size, num_threads, precision; resources: cores, "
        "device_count, memory_gib)",
    ),
    (
        "constraint calling __import__",
        "constraints:\n  - \"__import__('os').system('true')\"\n",
        "constraints[0].expr: expression \"__import__('os').system('true')\": attribute access "
        "not allowed",
    ),
    (
        "constraint calling __import__ bare",
        "constraints:\n  - \"__import__('os')\"\n",
        "constraints[0].expr: expression \"__import__('os')\": call of '__import__' not allowed "
        "(allowed functions: abs, max, min)",
    ),
    (
        "constraint with attribute access",
        "constraints:\n  - 'cores.bit_length() > 1'\n",
        "constraints[0].expr: expression 'cores.bit_length() > 1': attribute access not allowed",
    ),
    (
        "constraint calling another function",
        "constraints:\n  - 'len(optimizer) > 3'\n",
        "constraints[0].expr: expression 'len(optimizer) > 3': call of 'len' not allowed "
        "(allowed functions: abs, max, min)",
    ),
    (
        "constraint with an unknown key",
        "constraints:\n  - {expr: 'cores > 0', msg: hi}\n",
        "constraints[0].msg: unknown key (allowed: expr, message)",
    ),
    (
        "second constraint in the override",
        "constraints:\n  - 'cores > 0'\n  - 'cores >'\n",
        "constraints[1].expr: expression 'cores >': invalid syntax",
    ),
    (
        "constraint not evaluable on the defaults",
        "constraints:\n  - 'optimizer < 3'\n",
        "constraints[0]: cannot evaluate with the defaults: expression 'optimizer < 3': cannot "
        "compare 'adam' with 3",
    ),
    (
        "defaults violate a constraint",
        "constraints:\n  - {expr: 'batch_size <= 16', message: tiny batches only}\n",
        "defaults: violates constraint constraints[0] (my.yaml) 'batch_size <= 16: tiny "
        "batches only' with {'batch_size': 32}",
    ),
    # Non-finite or absurd numbers passed the loader and overflowed in Optuna's samplers (or
    # reached a trial as 10**29 threads).
    (
        "infinite bound",
        "params:\n  learning_rate: {type: float, low: 1.0e-4, high: .inf, log: true, default: 1.0e-3}\n",
        "params.learning_rate.high: must be a finite number between -1e+15 and 1e+15 (got inf)",
    ),
    (
        "nan bound",
        "params:\n  momentum: {type: float, low: .nan, high: 0.9, default: 0.5}\n",
        "params.momentum.low: must be a finite number between -1e+15 and 1e+15 (got nan)",
    ),
    (
        "absurd integer bound",
        "params:\n  num_threads: {type: int, low: 1, high: 100000000000000000000, default: 1}\n",
        "params.num_threads.high: must be a finite number between -1e+15 and 1e+15 (got "
        "100000000000000000000)",
    ),
    (
        "absurd step",
        "params:\n  momentum: {type: float, low: 0.0, high: 0.9, step: 1.0e+300, default: 0.0}\n",
        "params.momentum.step: must be a finite number between -1e+15 and 1e+15 (got 1e+300)",
    ),
    (
        "absurd power of two",
        "params:\n  batch_size: {type: int, choices_pow2: [8, 4611686018427387904], default: 32}\n",
        "params.batch_size.choices_pow2: must be a finite number between -1e+15 and 1e+15 (got "
        "4611686018427387904)",
    ),
    (
        "infinite choice",
        "params:\n  momentum: {type: categorical, choices: [0.5, .inf], default: 0.5}\n",
        "params.momentum.choices[1]: must be a finite number between -1e+15 and 1e+15 (got inf)",
    ),
    (
        "expression giving an absurd bound",
        "params:\n  num_threads: {type: int, low: 1, high: 'cores * 10**15', default: 1}\n",
        "params.num_threads.high: expression 'cores * 10**15': must be a finite number between "
        "-1e+15 and 1e+15 (got 2000000000000000)",
    ),
    (
        "unconditional empty domain",
        "params:\n  world_size: {type: int, low: 2, high: device_count, default: 2}\n",
        "params.world_size.low: must be <= high (got low 2 > high device_count = 1)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_messages(load_file, text, expected):
    assert error_of(load_file, text) == f"search space my.yaml: {expected}"


def test_missing_override_file(write_yaml, resources):
    with pytest.raises(SpaceError) as info:
        load_space("torch", "cpu", resources=resources, override="nope/missing.yaml")
    message = str(info.value)
    assert message.startswith("search space nope/missing.yaml: file not found")
    assert "missing.yaml" in message


def test_override_is_a_directory(write_yaml, resources, tmp_path):
    with pytest.raises(SpaceError, match="is a directory"):
        load_space("torch", "cpu", resources=resources, override=tmp_path)


def test_override_not_utf8(write_yaml, resources):
    path = write_yaml("")
    path.write_bytes(b"params: {\xff\xfe}\n")
    with pytest.raises(SpaceError, match=r"^search space my\.yaml: cannot read file: not UTF-8"):
        load_space("torch", "cpu", resources=resources, override=path)


def test_unsupported_choice(load_file):
    message = error_of(
        load_file,
        "params:\n  optimizer: {type: categorical, choices: [adam, lamb], default: adam}\n",
        supported=TORCH_CAPS,
    )
    assert message == (
        "search space my.yaml: params.optimizer.choices: 'lamb' is not supported by the torch "
        "backend (supported: adagrad, adam, adamw, rmsprop, sgd)"
    )


def test_unknown_param_for_backend(load_file):
    message = error_of(
        load_file,
        "params:\n  fused_adam: {type: categorical, choices: [false, true], default: false}\n",
        supported=TORCH_CAPS,
    )
    assert message == (
        "search space my.yaml: params.fused_adam: unknown parameter for the torch backend "
        "(known: batch_size, beta1, beta2, learning_rate, momentum, num_threads, optimizer, "
        "parallel_strategy, precision, weight_decay, world_size)"
    )


def test_builtin_checked_against_capabilities(resources):
    caps = Capabilities(
        params=TORCH_CAPS.params,
        choices={**TORCH_CAPS.choices, "precision": frozenset({"fp32"})},
        framework="torch",
    )
    with pytest.raises(SpaceError) as info:
        load_space("torch", "cpu", resources=resources, supported=caps)
    assert str(info.value) == (
        "search space cpu.yaml: params.precision.choices: 'bf16' is not supported by the torch "
        "backend (supported: fp32)"
    )


def test_error_attributes(load_file):
    with pytest.raises(SpaceError) as info:
        load_file("params:\n  batch_size: {type: int, low: 64, high: 32, default: 32}\n")
    assert info.value.source == "my.yaml"
    assert isinstance(info.value, ValueError)


def test_more_errors_are_counted(load_file):
    message = error_of(
        load_file,
        "params:\n  a: {type: int, low: 1, high: 2, default: 1, x: 1, y: 2}\n",
    )
    assert message.endswith("(and 1 more error)")


# -- inputs that run away: aliases, huge values, huge files ---------------------------------------


def alias_bomb(levels: int) -> str:
    """The "billion laughs": each level an anchored list of nine aliases of the level below, so
    ``params`` stands for 9**levels strings in a file of a few hundred bytes."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nparams: *l{levels - 1}\n"


def test_alias_bomb_is_refused_before_it_expands(load_file):
    # 5 levels: 59049 strings, which the old loader quoted in full (a 0.4 MB message line)
    message = error_of(load_file, alias_bomb(5))
    assert message == "search space my.yaml: line 2: YAML aliases are not allowed here (*l0)"


def test_any_alias_is_refused(load_file):
    message = error_of(
        load_file,
        "params:\n  a: &x {type: int, low: 1, high: 2, default: 1}\n  b: *x\n",
    )
    assert message == "search space my.yaml: line 3: YAML aliases are not allowed here (*x)"


HUGE = "x" * 100_000
HUGE_VALUES = [
    ("version", f"version: '{HUGE}'\n", "version: unsupported version 'xxx"),
    ("extends", f"extends: {HUGE}\n", "extends: Input should be 'builtin' or 'none' (got 'xxx"),
    (
        "when value",
        "params:\n  mode: {type: categorical, choices: [a, b], default: a}\n"
        f"  knob: {{type: int, low: 1, high: 2, default: 1, when: {{mode: [{HUGE}]}}}}\n",
        "params.knob.when.mode: 'xxx",
    ),
    (
        "expression",
        f"constraints: [\"cores + '{HUGE[:450]}' > 1\"]\n",
        "constraints[0]: cannot evaluate with the defaults: expression \"cores + 'xxx",
    ),
]


@pytest.mark.parametrize(
    "text,needle", [c[1:] for c in HUGE_VALUES], ids=[c[0] for c in HUGE_VALUES]
)
def test_error_messages_quote_huge_values_short(load_file, text, needle):
    message = error_of(load_file, text)
    assert needle in message and "..." in message
    assert len(message) < 400, message


def test_file_over_one_mib_is_refused(load_file):
    message = error_of(load_file, "# " + "x" * 2**20 + "\n")
    assert message == "search space my.yaml: file larger than 1 MiB (a search space is a few KiB)"


def test_integer_past_the_digit_limit_is_an_error(load_file):
    message = error_of(load_file, "version: " + "1" * 5000 + "\n")
    assert message.startswith("search space my.yaml: malformed YAML: ")
    assert len(message) < 200
