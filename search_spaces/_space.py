"""SearchSpace: load built-in spaces, merge overrides, resolve resources, sample, check."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from ._expr import Expr, ExprError, clip, compile_expr, quote
from ._schema import (
    CategoricalParamModel,
    ConstraintModel,
    FloatParamModel,
    IntParamModel,
    SpaceFileModel,
    check_magnitude,
    format_validation_error,
    is_number,
    same_value,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "Capabilities",
    "Constraint",
    "ParamSpec",
    "SearchSpace",
    "SpaceError",
    "builtin_space_path",
    "builtin_spaces",
    "load_space",
]

BUILTIN_DIR = Path(__file__).resolve().parent
FRAMEWORK_ALIASES = {"pytorch": "torch"}
GRID_MAX_FULL = 16  # int ranges with at most this many values are gridded fully
GRID_POINTS = 5  # otherwise: this many points
ENVELOPE_FULL = 64  # a dependent bound is evaluated at every value of int ranges this small
ENVELOPE_COMBOS = 4096  # ... and at most this many combinations of the parameters it names
MAX_FILE_BYTES = 2**20  # a search-space file is a few KiB; refuse to read more than 1 MiB
MAX_MESSAGE = 2000  # characters of a SpaceError message, however large the input
_NAME_RE = re.compile(r"^[a-z0-9_]+$")


class SpaceError(ValueError):
    """A search space (or a config checked against one) is invalid.

    The message is one line: ``search space <file>: <key.path>: <problem>``. ``source`` is the
    file (or space name) and ``key`` the key path, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        super().__init__(message)
        self.source = source
        self.key = key


def _error(source: str, key: str | None, problem: str) -> SpaceError:
    """The SpaceError ``search space SOURCE: KEY: PROBLEM``: one line of at most
    :data:`MAX_MESSAGE` characters (values it quotes are already short: see :func:`quote`)."""
    text = " ".join(str(problem).split())  # always one line
    prefix = f"search space {source}: " + (f"{key}: " if key else "")
    return SpaceError(clip(prefix + text, MAX_MESSAGE), source=source, key=key)


class _KeyError(Exception):
    """Internal: a problem at a key path inside one file; turned into SpaceError by the caller."""

    def __init__(self, key: str, problem: str):
        super().__init__(problem)
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Capabilities:
    """What a framework backend can honour on a device (built by the backend).

    ``params``: parameter names it understands; ``choices``: allowed values of categorical
    parameters (e.g. ``{"optimizer": frozenset({"sgd", "adam"}), ...}``); ``framework``: used in
    messages, e.g. ``"torch"``.
    """

    params: frozenset[str]
    choices: Mapping[str, frozenset] = field(default_factory=dict)
    framework: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozenset(self.params))
        object.__setattr__(
            self,
            "choices",
            MappingProxyType({k: frozenset(v) for k, v in dict(self.choices).items()}),
        )

    def __hash__(self) -> int:
        return hash((self.params, frozenset(self.choices.items()), self.framework))


@dataclass(frozen=True)
class ParamSpec:
    """One resolved parameter (resources applied; numbers only, no expressions).

    ``type`` is ``"int"``, ``"float"`` or ``"categorical"``; an ``int`` declared with
    ``choices_pow2`` has ``pow2=True`` and its values in ``choices`` (suggested as a categorical).
    ``disabled`` is the reason a conditional parameter can never be active (its domain came out
    empty for these resources); ``dropped`` lists ``(value, reason)`` for choices removed because
    they would activate such a parameter.
    """

    name: str
    type: str
    default: Any
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    pow2: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: MappingProxyType({}))
    otherwise: Any = None
    has_otherwise: bool = False
    disabled: str | None = None
    dropped: tuple[tuple[Any, str], ...] = ()
    description: str = ""
    source: str = ""
    # Dependent bounds: ``low``/``high``/``default`` given as expressions over earlier
    # parameters. Then ``low``/``high`` above are the envelope (the widest range the expressions
    # give for any values of those parameters) and ``default`` the baseline's value;
    # :meth:`SearchSpace.bounds` evaluates the range for one config.
    low_expr: Expr | None = field(default=None, compare=False)
    high_expr: Expr | None = field(default=None, compare=False)
    default_expr: Expr | None = field(default=None, compare=False)
    depends: tuple[str, ...] = ()

    @property
    def dependent(self) -> bool:
        """Whether the range depends on other parameters (``low``/``high`` name them)."""
        return self.low_expr is not None or self.high_expr is not None

    @property
    def kind(self) -> str:
        """``int``, ``pow2``, ``float`` or ``categorical``."""
        return "pow2" if self.pow2 else self.type

    @property
    def is_choice(self) -> bool:
        return self.choices is not None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        if self.choices is not None:
            return any(same_value(value, c) for c in self.choices)
        if self.type == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                return False
            if not self.low <= value <= self.high:  # type: ignore[operator]
                return False
            return self.step is None or (value - self.low) % self.step == 0  # type: ignore[operator]
        if not is_number(value) or not self.low <= value <= self.high:  # type: ignore[operator]
            return False
        if self.step is None:
            return True
        k = round((value - self.low) / self.step)  # type: ignore[operator]
        return math.isclose(self.low + k * self.step, value, rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[operator]

    def domain_text(self) -> str:
        """Short human-readable domain, e.g. ``float [0.0001, 0.03] log``."""
        if self.pow2:
            return "{" + ", ".join(_fmt(c) for c in self.choices or ()) + "} (powers of two)"
        if self.choices is not None:
            return "{" + ", ".join(_fmt(c) for c in self.choices) + "}"
        low = self.low_expr.text if self.low_expr is not None else _fmt(self.low)
        high = self.high_expr.text if self.high_expr is not None else _fmt(self.high)
        text = f"{self.type} [{low}, {high}]"
        if self.dependent:
            text += f" (within [{_fmt(self.low)}, {_fmt(self.high)}])"
        if self.step is not None:
            text += f" step {_fmt(self.step)}"
        if self.log:
            text += " log"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.pow2:
            out["pow2"] = True
        if self.choices is not None:
            out["choices"] = list(self.choices)
        else:
            out["low"] = self.low
            out["high"] = self.high
            if self.step is not None:
                out["step"] = self.step
            out["log"] = self.log
        for key in ("low", "high", "default"):
            expr = getattr(self, f"{key}_expr")
            if expr is not None:
                out[f"{key}_expr"] = expr.text
        out["default"] = self.default
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        if self.has_otherwise:
            out["otherwise"] = self.otherwise
        if self.disabled:
            out["disabled"] = self.disabled
        if self.dropped:
            out["dropped"] = [{"value": v, "reason": r} for v, r in self.dropped]
        if self.description:
            out["description"] = self.description
        out["source"] = self.source
        return out


@dataclass(frozen=True)
class Constraint:
    """A boolean expression over parameters and resources that every config must satisfy."""

    expr: str
    message: str = ""
    names: frozenset[str] = frozenset()
    source: str = ""
    _compiled: Expr | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        """``expr: message`` (or just ``expr``), as reported by :meth:`SearchSpace.violations`."""
        return f"{self.expr}: {self.message}" if self.message else self.expr

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        compiled = self._compiled or compile_expr(self.expr)
        return compiled.evaluate(env)

    def to_dict(self) -> dict[str, Any]:
        return {"expr": self.expr, "message": self.message, "source": self.source}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- reading files -------------------------------------------------------------------------------


class _AliasRefused(yaml.composer.ComposerError):
    """A YAML alias (``*name``) in a search-space file."""


class _SpaceLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one) and
    every alias (``*name``): the format needs none, and nested aliases (the "billion laughs")
    stand for exponentially many values that any later walk over them (a check, an error
    message) would expand. Refused as the document is composed, before anything is built."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            problem = f"YAML aliases are not allowed here (*{clip(str(event.anchor), 40)})"
            raise _AliasRefused(None, None, problem, event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _SpaceLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable key: let the normal constructor complain
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {quote(key)}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpaceLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, label: str) -> Any:
    """The YAML document ``text`` (plain data: safe tags only, no aliases, no duplicate keys);
    :class:`SpaceError` naming ``label`` and the line on any problem."""
    try:
        return yaml.load(text, Loader=_SpaceLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else None
        problem = clip(exc.problem or exc.context or "syntax error")
        if not isinstance(exc, _AliasRefused):
            problem = f"malformed YAML: {problem}"
        raise _error(label, line, problem) from None
    except yaml.YAMLError as exc:
        raise _error(label, None, f"malformed YAML: {clip(str(exc))}") from None
    except ValueError as exc:  # a constructor's: an integer past Python's 4300-digit limit
        raise _error(label, None, f"malformed YAML: {clip(str(exc))}") from None


@dataclass
class _File:
    label: str
    model: SpaceFileModel


def _read_file(path: Path, label: str, *, builtin: bool) -> _File:
    """Read, parse and shape-check one space file: at most :data:`MAX_FILE_BYTES` of UTF-8."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
        text = raw[:MAX_FILE_BYTES].decode("utf-8")
    except FileNotFoundError:
        raise _error(label, None, f"file not found ({path})") from None
    except IsADirectoryError:
        raise _error(label, None, f"is a directory, not a file ({path})") from None
    except UnicodeDecodeError:
        raise _error(label, None, "cannot read file: not UTF-8 text") from None
    except OSError as exc:
        raise _error(label, None, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        limit = f"{MAX_FILE_BYTES // 2**20} MiB"
        raise _error(label, None, f"file larger than {limit} (a search space is a few KiB)")
    data = _parse_yaml(text, label)
    if data is None:
        raise _error(label, None, "empty file (expected a mapping with 'params')")
    if not isinstance(data, dict):
        raise _error(label, "top level", f"expected a mapping, got {type(data).__name__}")
    try:
        model = SpaceFileModel.model_validate(data)
    except ValidationError as exc:
        raise _error(label, None, format_validation_error(exc)) from None
    if builtin:
        for key in ("extends", "replace_constraints"):
            if key in model.model_fields_set:
                raise _error(label, key, "only allowed in override files")
    elif "include" in model.model_fields_set:
        raise _error(label, "include", "only allowed in built-in files (use extends)")
    return _File(label, model)


# -- built-in lookup -------------------------------------------------------------------------------


def _norm(value: str, what: str) -> str:
    norm = str(value).strip().lower()
    if not _NAME_RE.match(norm):
        raise SpaceError(f"search space: invalid {what} {quote(value)}")
    return norm


#: The tasks a space is for: training spaces live in this directory, the others in a
#: subdirectory named after the task (``inference/cpu.yaml``).
TASKS = ("training", "inference")


def _task_dir(task: str) -> Path:
    if task not in TASKS:
        raise _error(task, None, f"unknown task (choose from: {', '.join(TASKS)})")
    return BUILTIN_DIR if task == "training" else BUILTIN_DIR / task


def builtin_spaces(task: str = "training") -> list[tuple[str, str]]:
    """``(framework, device_class)`` pairs of the spaces that ship with perftune for ``task``."""
    out = []
    for path in sorted(_task_dir(task).glob("*.yaml")):
        if path.name.startswith("_"):  # shared fragments, not spaces
            continue
        framework, sep, device = path.stem.partition("-")
        out.append((framework, device) if sep else ("torch", path.stem))
    return sorted(out)


def builtin_space_path(framework: str, device_class: str, task: str = "training") -> Path:
    """Path of the built-in space: ``<device>.yaml`` for torch, ``<framework>-<device>.yaml``
    (under ``inference/`` for ``task="inference"``)."""
    fw = FRAMEWORK_ALIASES.get(_norm(framework, "framework"), _norm(framework, "framework"))
    dev = _norm(device_class, "device class")
    path = _task_dir(task) / (f"{dev}.yaml" if fw == "torch" else f"{fw}-{dev}.yaml")
    if not path.is_file():
        shipped = ", ".join(f"{f}/{d}" for f, d in builtin_spaces(task)) or "none"
        raise _error(
            f"{fw}/{dev}" + ("" if task == "training" else f" ({task})"),
            None,
            f"no built-in {'' if task == 'training' else task + ' '}search space for this "
            f"framework and device class (available: {shipped})",
        )
    return path


# -- loading and merging ---------------------------------------------------------------------------


@dataclass
class _RawParam:
    name: str
    model: IntParamModel | FloatParamModel | CategoricalParamModel
    label: str
    pos: int = 0  # position in its own file, for "declared before" checks

    def exprs(self) -> dict[str, Expr]:
        """The expression-valued fields that may name parameters: ``low``, ``high``,
        ``default`` of an int/float range (not ``choices_pow2``), and ``otherwise``."""
        m = self.model
        out: dict[str, Expr] = {}
        if isinstance(m, CategoricalParamModel):
            return out
        fields = ("default", "otherwise")
        if not (isinstance(m, IntParamModel) and m.choices_pow2 is not None):
            fields = ("low", "high", "default", "otherwise")
        for key in fields:
            raw = getattr(m, key)
            if isinstance(raw, str):
                try:
                    out[key] = compile_expr(raw)
                except ExprError:  # pragma: no cover - validated by the schema
                    continue
        return out

    def refs(self, params: Iterable[str]) -> dict[str, list[str]]:
        """``{field: [parameter names it reads]}`` for the fields that name parameters."""
        known = set(params)
        out = {}
        for key, expr in self.exprs().items():
            names = sorted(n for n in expr.names if n in known)
            if names:
                out[key] = names
        return out


@dataclass
class _RawConstraint:
    model: ConstraintModel
    label: str
    index: int  # position in its own file, for key paths

    @property
    def key(self) -> str:
        return f"constraints[{self.index}]"


def load_space(
    framework: str,
    device_class: str,
    *,
    resources: Mapping[str, int | float],
    override: str | os.PathLike[str] | None = None,
    supported: Capabilities | None = None,
    task: str = "training",
) -> SearchSpace:
    """Load the built-in space for ``framework``/``device_class`` (and ``task``: ``training``
    or ``inference``), merge ``override``, validate.

    ``resources`` (e.g. ``{"cores": 8, "device_count": 1, "memory_gib": 23}``) are the names that
    expressions in ``low``/``high``/``default``/``otherwise`` and constraints may use.
    ``supported`` (from the backend) restricts parameter names and categorical values.
    Raises :class:`SpaceError` with a one-line message naming the file and key path.
    """
    fw = FRAMEWORK_ALIASES.get(_norm(framework, "framework"), _norm(framework, "framework"))
    dev = _norm(device_class, "device class")
    base_name = f"{fw}/{dev}"
    res = _check_resources(resources, base_name)

    over: _File | None = None
    if override is not None:
        over_path = Path(os.fspath(override)).expanduser()
        over = _read_file(over_path, os.fspath(override), builtin=False)

    if over is not None and over.model.extends == "none":
        name = Path(over.label).name
        whole = over.label
        params: dict[str, _RawParam] = {}
        for pos, (pname, pmodel) in enumerate(over.model.params.items()):
            if pmodel is None:
                raise _error(over.label, f"params.{pname}", "null (removal) needs extends: builtin")
            params[pname] = _RawParam(pname, pmodel, over.label, pos)
        if over.model.replace_constraints:
            raise _error(over.label, "replace_constraints", "needs extends: builtin")
        constraints = [
            _RawConstraint(c, over.label, i) for i, c in enumerate(over.model.constraints)
        ]
        description = over.model.description or ""
    else:
        path = builtin_space_path(fw, dev, task)
        base = _read_file(path, path.name, builtin=True)
        name = base_name if task == "training" else f"{base_name}/{task}"
        whole = base.label
        description = base.model.description or ""
        params, constraints = _builtin_params(base)
        if over is not None:
            name = f"{base_name}+{Path(over.label).name}"
            whole = over.label
            if over.model.description is not None:
                description = over.model.description
            params, constraints = _merge(params, constraints, over, base_name)
    return _build(name, description, params, constraints, res, supported, fw, whole)


def _builtin_params(base: _File) -> tuple[dict[str, _RawParam], list[_RawConstraint]]:
    """A built-in file's params and constraints, on top of ``_common.yaml`` if it includes it."""
    params: dict[str, _RawParam] = {}
    constraints: list[_RawConstraint] = []
    if base.model.include == "common":
        common = _read_file(BUILTIN_DIR / "_common.yaml", "_common.yaml", builtin=True)
        params = {n: _RawParam(n, m, common.label, i)
                  for i, (n, m) in enumerate(common.model.params.items()) if m is not None}  # fmt: skip
        constraints = [_RawConstraint(c, common.label, i)
                       for i, c in enumerate(common.model.constraints)]  # fmt: skip
    for pos, (pname, pmodel) in enumerate(base.model.params.items()):
        if pmodel is not None:
            params[pname] = _RawParam(
                pname, pmodel, base.label, pos
            )  # replaces in place, or appends
        elif pname in params:
            del params[pname]
        else:
            raise _error(base.label, f"params.{pname}", "null removes an included parameter; "
                         "there is none of that name")  # fmt: skip
    constraints += [_RawConstraint(c, base.label, i) for i, c in enumerate(base.model.constraints)]
    return params, constraints


def _check_resources(resources: Mapping[str, Any], label: str) -> dict[str, int | float]:
    if not isinstance(resources, Mapping):
        raise _error(label, "resources", f"expected a mapping, got {type(resources).__name__}")
    out: dict[str, int | float] = {}
    for key, value in resources.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise _error(label, f"resources.{key}", "not a valid name")
        if not is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
            raise _error(label, f"resources.{key}", f"expected a number, got {quote(value)}")
        out[key] = value
    return out


def _merge(
    params: dict[str, _RawParam],
    constraints: list[_RawConstraint],
    over: _File,
    base_name: str,
) -> tuple[dict[str, _RawParam], list[_RawConstraint]]:
    merged = dict(params)
    removed: list[str] = []
    for pos, (pname, pmodel) in enumerate(over.model.params.items()):
        if pmodel is None:
            if pname not in merged:
                raise _error(
                    over.label,
                    f"params.{pname}",
                    f"cannot remove: no such parameter in the built-in space {base_name} "
                    f"(has: {', '.join(merged)})",
                )
            del merged[pname]
            removed.append(pname)
        else:
            merged[pname] = _RawParam(pname, pmodel, over.label, pos)  # in place, or appended
    new_constraints = [
        _RawConstraint(c, over.label, i) for i, c in enumerate(over.model.constraints)
    ]
    if over.model.replace_constraints:
        merged_constraints = new_constraints
    else:
        merged_constraints = constraints + new_constraints
    for gone in removed:
        users = [
            f"params.{p.name}.when ({p.label})"
            for p in merged.values()
            if p.model.when and gone in p.model.when
        ]
        users += [
            f"params.{p.name}.{key} ({p.label})"
            for p in merged.values()
            for key, expr in p.exprs().items()
            if gone in expr.names
        ]
        for c in merged_constraints:
            try:
                names = compile_expr(c.model.expr).names
            except ExprError:  # pragma: no cover - validated by the schema
                names = frozenset()
            if gone in names:
                users.append(f"{c.key} ({c.label})")
        if users:
            raise _error(
                over.label,
                f"params.{gone}",
                f"cannot remove: still referenced by {', '.join(users)}",
            )
    return merged, merged_constraints


# -- resolution ------------------------------------------------------------------------------------


def _order(params: dict[str, _RawParam]) -> list[str]:
    """File order, moved so that each param follows the params its ``when`` and its
    expressions (``low``/``high``/``default``) name.

    An expression may name only parameters declared before it in the same file (or defined in
    another file of the space); ``otherwise`` and ``choices_pow2`` defaults only resources.
    """
    deps: dict[str, dict[str, str]] = {}  # name -> {parent: field that names it}
    for p in params.values():
        deps[p.name] = {parent: "when" for parent in p.model.when or {}}
        for key, names in p.refs(params).items():
            for ref in names:
                where = f"params.{p.name}.{key}"
                pow2 = isinstance(p.model, IntParamModel) and p.model.choices_pow2 is not None
                if key == "otherwise" or pow2:
                    raise _error(p.label, where, f"uses parameter {quote(ref)}; only resources "
                                 f"are allowed in {key}")  # fmt: skip
                if ref == p.name:
                    raise _error(p.label, where, "a parameter cannot depend on itself")
                other = params[ref]
                if other.label == p.label and other.pos > p.pos:
                    raise _error(p.label, where, f"uses parameter {quote(ref)}, which is "
                                 f"declared after {p.name}; declare {ref} first (a bound may "
                                 "only use parameters suggested before it)")  # fmt: skip
                deps[p.name].setdefault(ref, key)
    for p in params.values():
        for parent in p.model.when or {}:
            if parent == p.name:
                raise _error(
                    p.label, f"params.{p.name}.when.{parent}", "a parameter cannot depend on itself"
                )
            if parent not in params:
                raise _error(
                    p.label,
                    f"params.{p.name}.when.{parent}",
                    f"unknown parameter (known: {', '.join(params)})",
                )
    done: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = stack[stack.index(name) :] + [name]
            p = params[stack[-1]]
            raise _error(
                p.label,
                f"params.{p.name}.{deps[p.name][name]}",
                f"dependency cycle: {' -> '.join(cycle)}",
            )
        state[name] = 1
        for parent in deps[name]:
            visit(parent, stack + [name])
        state[name] = 2
        done.append(name)

    for name in params:
        visit(name, [])
    return done


def _eval_value(
    raw: Any, key: str, resources: Mapping[str, int | float], params: Iterable[str], want: str
) -> Any:
    """Evaluate a number-or-expression field; ``want`` is ``int`` or ``float``."""
    if not isinstance(raw, str):
        value = raw
    else:
        expr = compile_expr(raw)
        bad_params = sorted(n for n in expr.names if n in set(params) and n not in resources)
        if bad_params:
            raise _KeyError(
                key,
                f"expression {quote(raw)} uses parameter {quote(bad_params[0])}; only resources are "
                f"allowed here ({', '.join(sorted(resources)) or 'none given'})",
            )
        unknown = sorted(n for n in expr.names if n not in resources)
        if unknown:
            raise _KeyError(
                key,
                f"expression {quote(raw)}: unknown name {quote(unknown[0])} "
                f"(resources: {', '.join(sorted(resources)) or 'none given'})",
            )
        try:
            value = expr.evaluate(resources)
        except ExprError as exc:
            raise _KeyError(key, str(exc)) from None
        if not is_number(value):
            raise _KeyError(key, f"expression {quote(raw)} must give a number (got {quote(value)})")
        try:
            check_magnitude(value)
        except ValueError as exc:
            raise _KeyError(key, f"expression {quote(raw)}: {exc}") from None
    if want == "int":
        if isinstance(value, float):
            if not value.is_integer():
                shown = (
                    f"expression {quote(raw)} gave {quote(value)}"
                    if isinstance(raw, str)
                    else value
                )
                raise _KeyError(key, f"must be an integer ({shown})")
            value = int(value)
    elif want == "float" and isinstance(value, int):
        value = float(value)
    return value


def _describe_source(raw: Any, value: Any) -> str:
    return f"{raw} = {_fmt(value)}" if isinstance(raw, str) else _fmt(value)


def _bound_value(expr: Expr, env: Mapping[str, Any], want: str) -> int | float:
    """``expr`` evaluated with ``env`` as a number of type ``want``; ValueError saying why not."""
    try:
        value = expr.evaluate(env)
    except ExprError as exc:
        raise ValueError(str(exc)) from None
    if not is_number(value):
        raise ValueError(f"expression {quote(expr.text)} must give a number (got {quote(value)})")
    try:
        check_magnitude(value)
    except ValueError as exc:
        raise ValueError(f"expression {quote(expr.text)}: {exc}") from None
    if want == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(
                    f"must be an integer (expression {quote(expr.text)} gave {quote(value)})"
                )
            value = int(value)
    elif isinstance(value, int):
        value = float(value)
    return value


def _candidates(spec: ParamSpec, full: bool = True) -> list[Any]:
    """The values of ``spec`` at which a dependent bound is evaluated to find its envelope:
    every choice, every value of an int range of at most :data:`ENVELOPE_FULL` values, else
    the ends of the range; plus ``otherwise``."""
    values: list[Any] = []
    if spec.disabled is None:
        if spec.choices is not None:
            values = list(spec.choices)
        elif spec.type == "int":
            step = spec.step or 1
            if full and (spec.high - spec.low) // step + 1 <= ENVELOPE_FULL:  # type: ignore[operator]
                values = list(range(spec.low, spec.high + 1, step))  # type: ignore[arg-type]
            else:
                values = [spec.low, spec.high]
        else:
            values = [spec.low, spec.high]
    if spec.has_otherwise and (spec.when or spec.disabled is not None):
        values.append(spec.otherwise)
    out: list[Any] = []
    for v in values:
        if not any(same_value(v, o) for o in out):
            out.append(v)
    return out


def _available(raw: _RawParam, ref: ParamSpec) -> bool:
    """Whether ``ref`` has a value in every config where ``raw`` is active."""
    when = raw.model.when or {}
    if ref.has_otherwise or ref.name in when:
        return True
    if ref.disabled is not None:
        return False
    return all(
        parent in when and all(any(same_value(v, a) for a in allowed) for v in when[parent])
        for parent, allowed in ref.when.items()
    )


def _resolve_dependent(
    raw: _RawParam,
    want: str,
    resources: Mapping[str, int | float],
    specs: Mapping[str, ParamSpec],
    dep: dict[str, Expr],
    common: dict[str, Any],
    otherwise: Any,
) -> ParamSpec:
    """An int/float range whose ``low``/``high``/``default`` name earlier parameters."""
    m = raw.model
    assert isinstance(m, (IntParamModel, FloatParamModel))
    key = f"params.{raw.name}"
    for field_name, expr in dep.items():
        for ref in sorted(expr.names & set(specs)):
            if not _available(raw, specs[ref]):
                raise _KeyError(
                    f"{key}.{field_name}",
                    f"uses parameter {quote(ref)}, which may have no value when {raw.name} is "
                    f"active (it is conditional without otherwise); give {ref} an otherwise or "
                    f"make {raw.name} conditional on the same values",
                )
        unknown = sorted(n for n in expr.names if n not in specs and n not in resources)
        if unknown:
            raise _KeyError(
                f"{key}.{field_name}",
                f"expression {quote(expr.text)}: unknown name {quote(unknown[0])} (parameters "
                f"before {raw.name}: {', '.join(specs) or 'none'}; resources: "
                f"{', '.join(sorted(resources)) or 'none given'})",
            )
    if "low" in dep and m.step is not None:
        raise _KeyError(f"{key}.step", "not allowed with a low that names other parameters")
    ends: dict[str, Any] = {}
    for end in ("low", "high"):
        if end not in dep:
            ends[end] = _eval_value(getattr(m, end), f"{key}.{end}", resources, (), want)
    depends = tuple(sorted({n for e in ("low", "high") if e in dep for n in dep[e].names
                            if n in specs}))  # fmt: skip
    pools = [_candidates(specs[n]) for n in depends]
    if math.prod(len(p) for p in pools) > ENVELOPE_COMBOS:
        pools = [_candidates(specs[n], full=False) for n in depends]
    if math.prod(len(p) for p in pools) > ENVELOPE_COMBOS:
        raise _KeyError(
            f"{key}.{'low' if 'low' in dep else 'high'}",
            f"depends on too many combinations of {', '.join(depends)} "
            f"(more than {ENVELOPE_COMBOS})",
        )
    lows: list[Any] = []
    highs: list[Any] = []
    empty = ""
    for combo in itertools.product(*pools):
        env = {**resources, **dict(zip(depends, combo, strict=True))}
        got = {}
        for end in ("low", "high"):
            if end in ends:
                got[end] = ends[end]
                continue
            try:
                got[end] = _bound_value(dep[end], env, want)
            except ValueError as exc:
                shown = ", ".join(f"{n}={_fmt(v)}" for n, v in zip(depends, combo, strict=True))
                raise _KeyError(f"{key}.{end}", f"{exc} (with {shown})") from None
        if got["low"] > got["high"]:
            empty = empty or (
                f"low {_describe_source(m.low, got['low'])} > high "
                f"{_describe_source(m.high, got['high'])}"
            )
            continue
        if m.log and (got["low"] < 1 if want == "int" else got["low"] <= 0):
            shown = ", ".join(f"{n}={_fmt(v)}" for n, v in zip(depends, combo, strict=True))
            raise _KeyError(
                f"{key}.low",
                f"must be {'>= 1' if want == 'int' else '> 0'} with log: true "
                f"(got {_describe_source(m.low, got['low'])} with {shown})",
            )
        lows.append(got["low"])
        highs.append(got["high"])
    disabled = None
    low: Any
    high: Any
    if not lows:
        detail = f"{empty} for every value of {', '.join(depends)}"
        if not m.when:
            raise _KeyError(f"{key}.low", f"must be <= high (got {detail})")
        disabled = f"empty domain: {detail}"
        low, high = ends.get("low", 0), ends.get("high", 0)
        if want == "float":
            low, high = float(low), float(high)
    else:
        low, high = min(lows), max(highs)
    step = m.step
    if step is not None and disabled is None:
        n = math.floor((high - low) / step + 1e-9)
        snapped = low + n * step
        if want == "float":
            snapped = float(f"{snapped:.12g}")
            step = float(step)
        high = min(high, snapped) if want == "float" else snapped
    default_expr = dep.get("default")
    if default_expr is not None:
        default = low  # provisional: the baseline's value is set by SearchSpace
    else:
        default = _eval_value(m.default, f"{key}.default", resources, (), want)
    spec = ParamSpec(
        type=want,
        default=default,
        low=low,
        high=high,
        step=step,
        log=m.log,
        otherwise=otherwise,
        disabled=disabled,
        low_expr=dep.get("low"),
        high_expr=dep.get("high"),
        default_expr=default_expr,
        depends=depends,
        **common,
    )
    if disabled is None and default_expr is None and not spec.contains(default):
        raise _KeyError(
            f"{key}.default",
            f"{_describe_source(m.default, default)} is outside the domain {spec.domain_text()}",
        )
    return spec


def _resolve(
    raw: _RawParam,
    resources: Mapping[str, int | float],
    names: Iterable[str],
    specs: Mapping[str, ParamSpec] | None = None,
) -> ParamSpec:
    m = raw.model
    key = f"params.{raw.name}"
    when = MappingProxyType({k: tuple(v) for k, v in (m.when or {}).items()})
    has_otherwise = m.otherwise is not None
    common: dict[str, Any] = {
        "name": raw.name,
        "when": when,
        "has_otherwise": has_otherwise,
        "description": m.description or "",
        "source": raw.label,
    }
    if isinstance(m, CategoricalParamModel):
        return ParamSpec(
            type="categorical",
            default=m.default,
            choices=tuple(m.choices),
            otherwise=m.otherwise,
            **common,
        )
    want = "int" if isinstance(m, IntParamModel) else "float"
    if specs is not None and not (isinstance(m, IntParamModel) and m.choices_pow2 is not None):
        params = set(names)
        dep = {k: e for k, e in raw.exprs().items()
               if k in ("low", "high", "default") and e.names & params}  # fmt: skip
        if dep:
            otherwise = m.otherwise
            if isinstance(otherwise, str):
                otherwise = _eval_value(otherwise, f"{key}.otherwise", resources, names, want)
            return _resolve_dependent(raw, want, resources, specs, dep, common, otherwise)
    otherwise = m.otherwise
    if isinstance(otherwise, str):
        otherwise = _eval_value(otherwise, f"{key}.otherwise", resources, names, want)
    if isinstance(m, IntParamModel) and m.choices_pow2 is not None:
        lo, hi = m.choices_pow2
        choices = tuple(2**i for i in range(lo.bit_length() - 1, hi.bit_length()))
        default = _eval_value(m.default, f"{key}.default", resources, names, "int")
        if default not in choices:
            raise _KeyError(f"{key}.default", f"{default} is not a power of two in [{lo}, {hi}]")
        return ParamSpec(
            type="int",
            default=default,
            choices=choices,
            pow2=True,
            otherwise=otherwise,
            **common,
        )
    low = _eval_value(m.low, f"{key}.low", resources, names, want)
    high = _eval_value(m.high, f"{key}.high", resources, names, want)
    step = m.step
    disabled = None
    if low > high:
        detail = f"low {_describe_source(m.low, low)} > high {_describe_source(m.high, high)}"
        if not m.when:
            raise _KeyError(f"{key}.low", f"must be <= high (got {detail})")
        disabled = f"empty domain: {detail}"
    if m.log and disabled is None:
        if want == "int" and low < 1:
            raise _KeyError(
                f"{key}.low", f"must be >= 1 with log: true (got {_describe_source(m.low, low)})"
            )
        if want == "float" and low <= 0:
            raise _KeyError(
                f"{key}.low", f"must be > 0 with log: true (got {_describe_source(m.low, low)})"
            )
    if step is not None and disabled is None:
        # Snap high down onto the step grid (optuna would do the same, with a warning).
        n = math.floor((high - low) / step + 1e-9)
        snapped = low + n * step
        if want == "float":
            snapped = float(f"{snapped:.12g}")
            step = float(step)
        high = min(high, snapped) if want == "float" else snapped
    default = _eval_value(m.default, f"{key}.default", resources, names, want)
    spec = ParamSpec(
        type=want,
        default=default,
        low=low,
        high=high,
        step=step,
        log=m.log,
        otherwise=otherwise,
        disabled=disabled,
        **common,
    )
    if disabled is None and not spec.contains(default):
        where = spec.domain_text()
        raise _KeyError(
            f"{key}.default",
            f"{_describe_source(m.default, default)} is outside the domain {where}",
        )
    return spec


def _build(
    name: str,
    description: str,
    raw_params: dict[str, _RawParam],
    raw_constraints: list[_RawConstraint],
    resources: dict[str, int | float],
    supported: Capabilities | None,
    framework: str,
    whole: str,
) -> SearchSpace:
    for p in raw_params.values():
        if p.name in resources:
            raise _error(
                p.label, f"params.{p.name}", "name clashes with a resource of the same name"
            )
    order = _order(raw_params)
    if supported is not None:
        _check_capabilities(raw_params, supported, framework)

    specs: dict[str, ParamSpec] = {}
    for pname in order:
        raw = raw_params[pname]
        try:
            specs[pname] = _resolve(raw, resources, raw_params, specs)
        except _KeyError as exc:
            raise _error(raw.label, exc.key, exc.problem) from None

    _check_when_values(specs, raw_params)
    specs = _prune(specs, order, raw_params)

    constraints = []
    known = set(specs) | set(resources)
    for rc in raw_constraints:
        expr = compile_expr(rc.model.expr)
        unknown = sorted(expr.names - known)
        if unknown:
            raise _error(
                rc.label,
                f"{rc.key}.expr",
                f"unknown name {quote(unknown[0])} in {quote(rc.model.expr)} "
                f"(params: {', '.join(specs)}; resources: {', '.join(sorted(resources))})",
            )
        constraints.append(Constraint(rc.model.expr, rc.model.message, expr.names, rc.label, expr))

    try:
        specs = _baseline(specs, resources)
    except _KeyError as exc:
        pname = exc.key.split(".")[1]
        raise _error(raw_params[pname].label, exc.key, exc.problem) from None
    space = SearchSpace(name, description, specs, constraints, resources)
    defaults = space.defaults()
    for pname in space.active_params(defaults):
        spec = space.params[pname]
        problem = space._bound_problem(spec, defaults) if spec.dependent else None
        if problem:
            raise _error(raw_params[pname].label, f"params.{pname}.default",
                         f"with the baseline's values, {problem.split(': ', 1)[1]}")  # fmt: skip
    for rc, constraint in zip(raw_constraints, constraints, strict=True):
        try:
            ok = space._check_constraint(constraint, defaults)
        except ExprError as exc:
            raise _error(rc.label, rc.key, f"cannot evaluate with the defaults: {exc}") from None
        if ok is False:
            shown = {n: defaults[n] for n in sorted(constraint.names) if n in defaults}
            raise _error(
                whole,
                "defaults",
                f"violates constraint {rc.key} ({rc.label}) {quote(constraint.text)} with {shown}",
            )
    try:  # safety net: the baseline must be a valid config of its own space
        space.validate_config(defaults, what="defaults")
    except SpaceError as exc:  # pragma: no cover - the checks above should catch it first
        raise _error(whole, exc.key, str(exc).split(": ", 2)[-1]) from None
    return space


def _check_capabilities(
    raw_params: dict[str, _RawParam], caps: Capabilities, framework: str
) -> None:
    backend = f"the {caps.framework or framework} backend"
    for p in raw_params.values():
        key = f"params.{p.name}"
        if p.name not in caps.params:
            raise _error(
                p.label,
                key,
                f"unknown parameter for {backend} (known: {', '.join(sorted(caps.params))})",
            )
        allowed = caps.choices.get(p.name)
        if allowed is None:
            continue
        m = p.model
        values: list[tuple[str, Any]] = []
        if isinstance(m, CategoricalParamModel):
            values = [(f"{key}.choices", c) for c in m.choices]
        elif isinstance(m, IntParamModel) and m.choices_pow2 is not None:
            lo, hi = m.choices_pow2
            values = [
                (f"{key}.choices_pow2", 2**i) for i in range(lo.bit_length() - 1, hi.bit_length())
            ]
        if m.otherwise is not None:
            values.append((f"{key}.otherwise", m.otherwise))
        for where, value in values:
            if not any(same_value(value, a) for a in allowed):
                shown = ", ".join(sorted(_fmt(a) for a in allowed))
                raise _error(
                    p.label,
                    where,
                    f"{quote(value)} is not supported by {backend} (supported: {shown})",
                )


def _check_when_values(specs: dict[str, ParamSpec], raw: dict[str, _RawParam]) -> None:
    """Typos in ``when`` values are errors when the parent comes from the same file.

    (A parent redefined by an override may legitimately narrow its choices.)
    """
    for spec in specs.values():
        for parent, values in spec.when.items():
            pspec = specs[parent]
            if raw[parent].label != raw[spec.name].label:
                continue
            for value in values:
                if pspec.disabled is None and not pspec.contains(value):
                    raise _error(
                        spec.source,
                        f"params.{spec.name}.when.{parent}",
                        f"{quote(value)} is not in the domain of params.{parent} "
                        f"({pspec.domain_text()})",
                    )


def _prune(
    specs: dict[str, ParamSpec], order: list[str], raw: dict[str, _RawParam]
) -> dict[str, ParamSpec]:
    """Drop the parent choices that would activate a conditional param with an empty domain."""
    specs = dict(specs)
    for pname in reversed(order):
        spec = specs[pname]
        if spec.disabled is None:
            continue
        if len(spec.when) != 1:
            raise _error(
                spec.source,
                f"params.{pname}",
                f"{spec.disabled}, and its when names several parameters, so the values that "
                f"activate it cannot be dropped; make its domain non-empty for these resources",
            )
        ((parent, values),) = spec.when.items()
        pspec = specs[parent]
        if pspec.disabled is not None:
            continue
        if pspec.choices is None:
            raise _error(
                spec.source,
                f"params.{pname}",
                f"{spec.disabled}, and params.{parent} is not categorical, so the values that "
                f"activate it cannot be dropped",
            )
        reason = f"params.{pname} has an {spec.disabled}"
        keep = tuple(c for c in pspec.choices if not any(same_value(c, v) for v in values))
        gone = tuple((c, reason) for c in pspec.choices if any(same_value(c, v) for v in values))
        if not gone:
            continue
        disabled = None
        if not keep:
            if not pspec.when:
                raise _error(
                    raw[parent].label,
                    f"params.{parent}.choices",
                    f"no choices left: {reason}",
                )
            disabled = f"empty domain: all choices dropped ({reason})"
        elif any(same_value(pspec.default, c) for c, _ in gone):
            raise _error(
                raw[parent].label,
                f"params.{parent}.default",
                f"{quote(pspec.default)} would have to be dropped: {reason}",
            )
        specs[parent] = replace(
            pspec, choices=keep, dropped=pspec.dropped + gone, disabled=disabled
        )
    return specs


# -- the space -------------------------------------------------------------------------------------


def _is_active(spec: ParamSpec, values: Mapping[str, Any], active: set[str]) -> bool:
    if spec.disabled is not None:
        return False
    for parent, allowed in spec.when.items():
        if parent not in active or parent not in values:
            return False
        if not any(same_value(values[parent], v) for v in allowed):
            return False
    return True


def _baseline(
    params: Mapping[str, ParamSpec], resources: Mapping[str, int | float]
) -> dict[str, ParamSpec]:
    """``params`` with each default that names other parameters evaluated with the baseline's
    values of those (clipped to the envelope); :class:`_KeyError` if one cannot be."""
    out = dict(params)
    if not any(spec.default_expr is not None for spec in params.values()):
        return out
    config: dict[str, Any] = {}
    active: set[str] = set()
    for name, spec in params.items():
        if spec.default_expr is not None and spec.disabled is None:
            key = f"params.{name}.default"
            env: dict[str, Any] = dict(resources)
            for n in sorted(spec.default_expr.names):
                if n in params:
                    if n not in config:
                        raise _KeyError(key, f"uses {n}, which has no value in the baseline")
                    env[n] = config[n]
            try:
                value = _bound_value(spec.default_expr, env, spec.type)
            except ValueError as exc:
                raise _KeyError(key, f"{exc} (with the baseline's values)") from None
            value = min(max(value, spec.low), spec.high)  # type: ignore[type-var]
            spec = out[name] = replace(spec, default=value)
        if _is_active(spec, config, active):
            config[name] = spec.default
            active.add(name)
        elif spec.has_otherwise:
            config[name] = spec.otherwise
    return out


class SearchSpace:
    """A validated search space with resources applied.

    ``params`` is ordered so that every parameter comes after the parameters its ``when`` names.
    """

    def __init__(
        self,
        name: str,
        description: str,
        params: Mapping[str, ParamSpec],
        constraints: list[Constraint],
        resources: Mapping[str, int | float],
    ) -> None:
        self.name = name
        self.description = description
        self.resources: dict[str, int | float] = dict(resources)
        try:
            params = _baseline(params, self.resources)
        except _KeyError as exc:
            raise _error(name, exc.key, exc.problem) from None
        self.params: Mapping[str, ParamSpec] = MappingProxyType(dict(params))
        self.constraints: list[Constraint] = list(constraints)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, params={list(self.params)})"

    # -- dependent bounds --

    def _range(self, spec: ParamSpec, values: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(low, high)`` of ``spec`` for the parameter values in ``values`` (its envelope
        clips it); ValueError saying why there is none (an empty range, a bound that cannot be
        evaluated)."""
        if not spec.dependent:
            return spec.low, spec.high
        env: dict[str, Any] = dict(self.resources)
        for n in spec.depends:
            if n not in values:
                raise ValueError(f"its range needs {n}, which has no value")
            env[n] = values[n]
        ends = []
        for end, expr in (("low", spec.low_expr), ("high", spec.high_expr)):
            if expr is None:
                ends.append((getattr(spec, end), _fmt(getattr(spec, end))))
            else:
                value = _bound_value(expr, env, spec.type)
                ends.append((value, f"{expr.text} = {_fmt(value)}"))
        (low, low_text), (high, high_text) = ends
        if low > high:
            raise ValueError(f"empty range: low {low_text} > high {high_text}")
        low, high = max(low, spec.low), min(high, spec.high)  # type: ignore[type-var]
        if spec.step is not None and high >= low:
            n = math.floor((high - low) / spec.step + 1e-9)
            snapped = low + n * spec.step
            high = min(high, float(f"{snapped:.12g}")) if spec.type == "float" else snapped
        if low > high:
            raise ValueError(f"empty range: [{_fmt(low)}, {_fmt(high)}] ({low_text}, "
                             f"{high_text}) within [{_fmt(spec.low)}, {_fmt(spec.high)}]")  # fmt: skip
        return low, high

    def bounds(self, name: str, config: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(low, high)`` of numeric parameter ``name`` given the values in ``config`` (for a
        dependent bound, those of the parameters it names); :class:`SpaceError` if the range
        is empty or cannot be evaluated."""
        spec = self.params[name]
        try:
            return self._range(spec, config)
        except ValueError as exc:
            raise _error(self.name, f"params.{name}", str(exc)) from None

    def _bound_problem(self, spec: ParamSpec, config: Mapping[str, Any]) -> str | None:
        """Why ``config[spec.name]`` breaks its dependent bound, or None if it does not."""
        try:
            low, high = self._range(spec, config)
        except ValueError as exc:
            return f"params.{spec.name}: {exc}"
        value = config[spec.name]
        if not is_number(value) or not low <= value <= high:
            texts = [f"{e.text} = {_fmt(v)}" if e is not None else _fmt(v)
                     for e, v in ((spec.low_expr, low), (spec.high_expr, high))]  # fmt: skip
            return (f"params.{spec.name}: {quote(value)} is outside [{_fmt(low)}, {_fmt(high)}] "
                    f"(low {texts[0]}, high {texts[1]})")  # fmt: skip
        return None

    def capped(self, name: str, high: int | float) -> SearchSpace:
        """This space with numeric parameter ``name`` limited to values ``<= high`` (e.g. the
        largest batch size that fits on the device); a default above it becomes the largest
        value left. Raises :class:`SpaceError` if no value is left."""
        spec = self.params[name]
        if spec.choices is not None:
            kept = tuple(c for c in spec.choices if is_number(c) and c <= high)
            if not kept:
                raise SpaceError(f"{name}: no value of {spec.domain_text()} is <= {_fmt(high)}")
            new = replace(spec, choices=kept,
                                      default=spec.default if spec.default <= high else max(kept))  # fmt: skip
        else:
            top = min(spec.high, high)  # type: ignore[type-var]
            if spec.type == "int" and spec.step:
                top = spec.low + (top - spec.low) // spec.step * spec.step  # type: ignore[operator]
            if top < spec.low:  # type: ignore[operator]
                raise SpaceError(f"{name}: no value of {spec.domain_text()} is <= {_fmt(high)}")
            new = replace(spec, high=top, default=min(spec.default, top))
        params = dict(self.params)
        params[name] = new
        return SearchSpace(self.name, self.description, params, self.constraints, self.resources)

    def fixed(self, names: list[str] | tuple[str, ...] | set[str]) -> SearchSpace:
        """This space with the parameters ``names`` held at their defaults (one choice: still
        in every config, never searched). Names not in the space are ignored."""
        params = dict(self.params)
        for name in names:
            if name in params:
                spec = params[name]
                # A dependent range keeps its envelope and bounds, so that the held value is
                # still checked against them (violations()).
                keep = spec.dependent
                params[name] = replace(spec, choices=(spec.default,),
                                       low=spec.low if keep else None,
                                       high=spec.high if keep else None,
                                       step=None, log=False, dropped=(), default_expr=None)  # fmt: skip
        return SearchSpace(self.name, self.description, params, self.constraints, self.resources)

    def searched(self) -> list[str]:
        """The parameters that can take more than one value (what a sweep really searches)."""
        out = []
        for name, spec in self.params.items():
            if spec.disabled is not None:
                continue
            if spec.choices is not None and len(spec.choices) < 2:
                continue
            if spec.choices is None and spec.low == spec.high:
                continue
            out.append(name)
        return out

    # -- activity --

    def _active(self, spec: ParamSpec, values: Mapping[str, Any], active: set[str]) -> bool:
        return _is_active(spec, values, active)

    def active_params(self, config: Mapping[str, Any]) -> list[str]:
        """Names of the parameters that are active for ``config`` (in space order)."""
        active: set[str] = set()
        out = []
        for name, spec in self.params.items():
            if self._active(spec, config, active):
                active.add(name)
                out.append(name)
        return out

    # -- configs --

    def defaults(self) -> dict[str, Any]:
        """The baseline config: active params' defaults plus ``otherwise`` of inactive ones.

        (A default that names other parameters was evaluated with the baseline's values.)"""
        config: dict[str, Any] = {}
        active: set[str] = set()
        for name, spec in self.params.items():
            if self._active(spec, config, active):
                config[name] = spec.default
                active.add(name)
            elif spec.has_otherwise:
                config[name] = spec.otherwise
        return config

    def sample(self, trial: optuna.trial.BaseTrial, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Suggest every active parameter on ``trial`` (in order); return the resolved config.
        ``given``: values to take as they are instead of suggesting them (knobs another stage
        of the search chose; they are not trial params)."""
        config: dict[str, Any] = {}
        active: set[str] = set()
        given = given or {}
        for name, spec in self.params.items():
            if self._active(spec, config, active):
                config[name] = given[name] if name in given else self._suggest(trial, spec, config)
                active.add(name)
            elif spec.has_otherwise:
                config[name] = spec.otherwise
        return config

    def suggest(self, trial: Any, name: str) -> Any:
        """Suggest the parameter ``name`` alone on ``trial``, with its own distribution (one
        whose range depends on no other parameter)."""
        return self._suggest(trial, self.params[name], {})

    def _suggest(self, trial: Any, spec: ParamSpec, config: Mapping[str, Any]) -> Any:
        if spec.choices is not None:
            return trial.suggest_categorical(spec.name, list(spec.choices))
        low, high = spec.low, spec.high
        if spec.dependent:
            # Define-by-run: the range for the values suggested so far. With none (an empty
            # range), nothing is suggested; the default stands in and violations() says why.
            try:
                low, high = self._range(spec, config)
            except ValueError:
                return spec.default
        if spec.type == "int":
            return trial.suggest_int(spec.name, low, high, step=spec.step or 1, log=spec.log)
        return trial.suggest_float(spec.name, low, high, step=spec.step, log=spec.log)

    def suggested_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The part of ``config`` that :meth:`sample` would suggest (for ``enqueue_trial``)."""
        return {name: config[name] for name in self.active_params(config) if name in config}

    def _check_constraint(self, constraint: Constraint, config: Mapping[str, Any]) -> bool | None:
        """True/False, or None when it names an inactive parameter that has no value."""
        env: dict[str, Any] = dict(self.resources)
        for n in constraint.names:
            if n in self.params:
                if n not in config:
                    return None
                env[n] = config[n]
        return bool(constraint.evaluate(env))

    def violations(self, config: Mapping[str, Any]) -> list[str]:
        """``expr: message`` of every violated constraint; ``[]`` if the config satisfies all.

        A constraint naming a parameter that ``config`` lacks (inactive, no ``otherwise``) is
        skipped; one that cannot be evaluated counts as violated. First come the dependent
        bounds: ``params.NAME: ...`` for an active parameter outside the range its bound
        expressions give for this config (or whose range is empty).
        """
        out = []
        active = self.active_params(config)
        for name in active:
            spec = self.params[name]
            if spec.dependent and name in config:
                problem = self._bound_problem(spec, config)
                if problem:
                    out.append(problem)
        for constraint in self.constraints:
            try:
                ok = self._check_constraint(constraint, config)
            except ExprError as exc:
                out.append(f"{constraint.text} (cannot evaluate: {exc})")
                continue
            if ok is False:
                out.append(constraint.text)
        return out

    def validate_config(self, config: Mapping[str, Any], *, what: str = "config") -> None:
        """SpaceError if a value is outside its domain, missing, unknown, or a constraint fails."""
        active = set(self.active_params(config))
        for key in config:
            if key not in self.params:
                raise _error(
                    self.name,
                    f"{what}.{key}",
                    f"unknown parameter (known: {', '.join(self.params)})",
                )
        for name, spec in self.params.items():
            key = f"{what}.{name}"
            if name in active:
                if name not in config:
                    raise _error(self.name, key, "missing (the parameter is active)")
                if not spec.contains(config[name]):
                    raise _error(
                        self.name, key, f"{quote(config[name])} is outside {spec.domain_text()}"
                    )
                if spec.dependent:
                    problem = self._bound_problem(spec, config)
                    if problem:
                        raise _error(self.name, key, problem.split(": ", 1)[1])
            elif name in config:
                if not spec.has_otherwise:
                    raise _error(self.name, key, "set, but the parameter is inactive")
                if not same_value(config[name], spec.otherwise):
                    raise _error(
                        self.name,
                        key,
                        f"{quote(config[name])} given, but the parameter is inactive and takes "
                        f"{quote(spec.otherwise)}",
                    )
        problems = self.violations(config)
        if problems:
            raise _error(self.name, what, f"violates constraint {quote(problems[0])}")

    # -- exports --

    def grid(self) -> dict[str, list[Any]]:
        """A finite grid for :class:`optuna.samplers.GridSampler`.

        Choices as they are; int ranges in full up to 16 values, else 5 evenly (log: geometrically)
        spaced values; floats 5 values. Conditional parameters are included: GridSampler raises
        ``ValueError`` for a suggested name missing from the grid, while a grid key that a trial
        never suggests is tolerated (that trial just ignores it, so some grid points repeat a
        config). Parameters that can never be active are left out.
        """
        reachable = self._reachable()
        out: dict[str, list[Any]] = {}
        for name, spec in self.params.items():
            if name in reachable:
                out[name] = _grid_values(spec)
        return out

    def _reachable(self) -> set[str]:
        reachable: set[str] = set()
        for name, spec in self.params.items():
            if spec.disabled is not None:
                continue
            ok = True
            for parent, values in spec.when.items():
                pspec = self.params[parent]
                if parent not in reachable or not any(pspec.contains(v) for v in values):
                    ok = False
                    break
            if ok:
                reachable.add(name)
        return reachable

    def to_dict(self) -> dict[str, Any]:
        """The resolved space, JSON-serializable (for logging as an artifact)."""
        return {
            "name": self.name,
            "description": self.description,
            "resources": dict(self.resources),
            "params": {name: spec.to_dict() for name, spec in self.params.items()},
            "constraints": [c.to_dict() for c in self.constraints],
        }

    def describe(self) -> list[tuple[str, str]]:
        """``(name, domain)`` rows for a CLI table."""
        rows = []
        for name, spec in self.params.items():
            parts = [spec.domain_text(), f"default {_fmt(spec.default)}"]
            if spec.when:
                cond = " and ".join(
                    f"{p} in {{{', '.join(_fmt(v) for v in vs)}}}" for p, vs in spec.when.items()
                )
                parts.append(f"only if {cond}")
            if spec.has_otherwise:
                parts.append(f"else {_fmt(spec.otherwise)}")
            if spec.dropped:
                values = ", ".join(_fmt(v) for v, _ in spec.dropped)
                parts.append(f"dropped {values} ({spec.dropped[0][1]})")
            text = "; ".join(parts)
            if spec.disabled is not None:
                text = f"never active ({spec.disabled})" + (
                    f"; always {_fmt(spec.otherwise)}" if spec.has_otherwise else ""
                )
            rows.append((name, text))
        return rows


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _grid_values(spec: ParamSpec) -> list[Any]:
    if spec.choices is not None:
        return list(spec.choices)
    low, high = spec.low, spec.high
    assert low is not None and high is not None
    if spec.type == "int":
        step = spec.step or 1
        count = (high - low) // step + 1
        if count <= GRID_MAX_FULL:
            return list(range(low, high + 1, step))
        if spec.log:
            raw = [low * (high / low) ** (i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]
            values = [int(round(v)) for v in raw]
        else:
            values = [
                low + round(i * (count - 1) / (GRID_POINTS - 1)) * step for i in range(GRID_POINTS)
            ]
        values = [min(max(low + round((v - low) / step) * step, low), high) for v in values]
        return sorted(set(values))
    if low == high:
        return [low]
    if spec.log:
        raw = [low * (high / low) ** (i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]
    else:
        raw = [low + (high - low) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
    if spec.step is not None:
        raw = [low + round((v - low) / spec.step) * spec.step for v in raw]
    values = [_round(v) for v in raw[1:-1]]
    values = [min(max(v, low), high) for v in values]
    return sorted(set([low, *values, high]))
