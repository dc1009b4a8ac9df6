"""Declarative search spaces for perftune: YAML files validated with pydantic.

A search space says which knobs a study tunes (batch size, learning rate, optimizer, parallel
strategy, precision, threads, ...), their domains, their defaults and the constraints between
them. perftune ships one per framework and device class (``builtin_spaces()``); users refine
them with an override file. Importing this package imports neither a DL framework nor optuna.

File format
-----------
::

    version: 1
    description: PyTorch on the CPU
    params:
      batch_size:        {type: int, choices_pow2: [8, 512], default: 32}
      learning_rate:     {type: float, low: 1.0e-4, high: 3.0e-2, log: true, default: 1.0e-3}
      optimizer:         {type: categorical, choices: [sgd, adam, adamw, rmsprop, adagrad],
                          default: adam}
      momentum:          {type: float, low: 0.0, high: 0.99, default: 0.9,
                          when: {optimizer: [sgd, rmsprop]}}
      parallel_strategy: {type: categorical, choices: [single, ddp], default: single}
      world_size:        {type: int, low: 2, high: cores, default: 2,
                          when: {parallel_strategy: [ddp]}, otherwise: 1}
      num_threads:       {type: int, low: 1, high: "cores // world_size",
                          default: "cores // world_size"}
      precision:         {type: categorical, choices: [fp32, bf16], default: fp32}
    constraints:
      - expr: "parallel_strategy == 'single' or batch_size >= 16"
        message: "small batches are not worth a process group"

Top-level keys: ``version`` (1), ``description``, ``params``, ``constraints``; override files
may also use ``extends`` and ``replace_constraints`` (below). Unknown keys anywhere are errors.

Parameter types:

* ``int``: ``low``, ``high``, optional ``step`` (> 0) and ``log`` (then ``low >= 1``, step 1).
* ``int`` with ``choices_pow2: [lo, hi]`` (both powers of two): the powers of two from ``lo`` to
  ``hi``, suggested as a categorical so the exact values are kept.
* ``float``: ``low``, ``high``, optional ``log`` (then ``low > 0``) or ``step``.
* ``categorical``: ``choices``, a non-empty list of unique strings/numbers/booleans.

Every parameter needs a ``default``: the defaults form the framework-default baseline config
(trial 0 of every study) and must lie in the domain and satisfy the constraints.
``low``/``high``/``default`` (and ``otherwise`` of numeric params) may be a number or a string
expression over the *resources* the caller passes, e.g. ``cores``, ``cores // 2``,
``device_count``, ``memory_gib``, ``min(cores, 8)``.
(Beware: YAML reads ``1e-4`` without a dot as a string; that is then an expression and works.)

Dependent bounds: ``low``, ``high`` and ``default`` of an ``int``/``float`` range (not
``choices_pow2``) may also name *parameters*, e.g. ``high: "cores // world_size"``. A parameter
may name only parameters declared before it in the same file (or defined in another file of the
space: ``_common.yaml``, the built-in file, the override); parameters are suggested in an order
that puts each after those its ``when`` and its bounds name, and a cycle is an error. A named
parameter must have a value whenever this one is active (unconditional, with an ``otherwise``,
or under the same ``when``). Sampling is define-by-run: the range is evaluated with the values
already suggested, so the sampler cannot propose what the bound forbids. ``params`` then reports
the *envelope* (the widest range over the named parameters' values: every choice and every value
of an int range of at most 64 values, else its ends) as ``low``/``high``, which ``grid()``,
``capped()`` and ``describe()`` use, and :meth:`SearchSpace.bounds` gives one config's range. A
range that comes out empty for a config (``low > high``) is not suggested: the config is invalid
and :meth:`SearchSpace.violations` says ``params.NAME: empty range: ...``; a value outside its
range (a grid point, an enqueued config) is reported the same way. ``otherwise`` stays a
resources-only expression, and a dependent ``low`` cannot have a ``step``.
Every number, written or computed, must be finite and within ±1e15 (``MAX_MAGNITUDE``).

``when: {other: [values...]}`` makes a parameter conditional: it is active only if every named
parameter is active and has one of the listed values (a scalar instead of a list is allowed).
``otherwise: value`` is the value an inactive parameter takes in the resolved config; without it
the parameter is absent. If a conditional parameter's domain comes out empty for the given
resources (``world_size`` with ``low: 2, high: device_count`` on a one-GPU machine), the choices
that activate it are dropped from its parent categorical (``ddp``), which ``describe()`` and
``to_dict()`` report; the parameter itself always takes its ``otherwise`` value. This needs a
``when`` naming a single categorical parameter. An unconditional empty domain is an error.

``constraints`` is a list of ``{expr, message}`` (or bare expression strings) over parameters and
resources. A constraint naming an inactive parameter without ``otherwise`` is skipped. A
constraint only rejects a config after it was sampled: write a limit that is a bound as a
dependent bound instead (the built-in spaces keep no bound-like constraints).

Expressions (``perftune.search_spaces._expr``) are a safe subset of Python: numbers, strings, ``True`` /
``False``, names, ``+ - * / // % **``, comparisons (chained too), ``and``/``or``/``not``,
``x in (a, b)`` with a tuple/list literal, parentheses, and ``min``/``max``/``abs``. Anything
else (attributes, subscripts, other calls, ...) is rejected with an error naming the expression.

Overrides (``load_space(..., override=path)``)::

    extends: builtin            # default; "none" makes the file the whole space
    params:
      batch_size: {type: int, choices_pow2: [16, 128], default: 32}   # replaces the built-in one
      precision: null           # removes it (error if a `when` or a constraint still uses it)
      grad_accum: {type: int, low: 1, high: 8, default: 1}            # new params are appended
    constraints:                # appended; `replace_constraints: true` replaces the built-in ones
      - "batch_size * grad_accum <= 512"

Every problem raises :class:`SpaceError` with a one-line message naming the file and key path,
e.g. ``search space my.yaml: params.batch_size.low: must be <= high (got 64 > 32)``. Files are
plain data of at most 1 MiB: YAML aliases (``*name``) are refused, and a message quotes at most
about 100 characters of any value (:func:`quote`, which the HTTP API's 422s use too).

Built-in files live next to this module: ``<device>.yaml`` for PyTorch (``cpu.yaml``,
``cuda.yaml``) and ``<framework>-<device>.yaml`` for other frameworks.
"""

from __future__ import annotations

from ._expr import Expr, ExprError, compile_expr, quote
from ._space import (
    Capabilities,
    Constraint,
    ParamSpec,
    SearchSpace,
    SpaceError,
    builtin_space_path,
    builtin_spaces,
    load_space,
)

__all__ = [
    "Capabilities",
    "Constraint",
    "Expr",
    "ExprError",
    "ParamSpec",
    "SearchSpace",
    "SpaceError",
    "builtin_space_path",
    "builtin_spaces",
    "compile_expr",
    "load_space",
    "quote",
]
