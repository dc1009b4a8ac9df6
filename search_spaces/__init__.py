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
      num_threads:       {type: int, low: 1, high: cores, default: cores}
      precision:         {type: categorical, choices: [fp32, bf16], default: fp32}
    constraints:
      - expr: "world_size * num_threads <= cores"
        message: "ranks x threads must not oversubscribe the CPU cores"

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
resources. A constraint naming an inactive parameter without ``otherwise`` is skipped.

Expressions (``search_spaces._expr``) are a safe subset of Python: numbers, strings, ``True`` /
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
