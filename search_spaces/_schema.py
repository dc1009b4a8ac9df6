"""Pydantic models of one search-space YAML file, before resources are applied.

These models check the *shape* of a file: known keys only (``extra="forbid"``), value types, and
the checks that need no resources (literal ``low <= high``, ``log`` needs ``low > 0``, ``step > 0``,
non-empty unique ``choices``, powers of two, literal defaults inside the domain, expressions that
parse). Cross-parameter checks (``when`` targets, cycles, constraint names) and everything that
depends on resources live in :mod:`perftune.search_spaces._space`.

:func:`format_validation_error` turns a :class:`pydantic.ValidationError` into one line with a
dotted key path such as ``params.batch_size.low: must be <= high (got 64 > 32)``.
"""

from __future__ import annotations

import keyword
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._expr import ExprError, clip, compile_expr, quote, same_value

__all__ = [
    "CategoricalParamModel",
    "ConstraintModel",
    "FloatParamModel",
    "IntParamModel",
    "ParamModel",
    "Scalar",
    "SpaceFileModel",
    "check_magnitude",
    "format_validation_error",
    "is_number",
    "same_value",
]

Scalar = str | int | float | bool
PARAM_TYPES = ("categorical", "float", "int")
#: The largest magnitude of any number in a search space (a bound, default, step, choice, or
#: what an expression gives): beyond it a value is a typo, and ranges near the float limit
#: overflow in Optuna's samplers.
MAX_MAGNITUDE = 1e15


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_magnitude(value: Any) -> Any:
    """``value`` itself if it is not a number, or a finite one within :data:`MAX_MAGNITUDE`;
    else ValueError (NaN and the infinities included)."""
    if is_number(value) and not (math.isfinite(value) and abs(value) <= MAX_MAGNITUDE):
        raise ValueError(f"must be a finite number between -{MAX_MAGNITUDE:g} and "
                         f"{MAX_MAGNITUDE:g} (got {value!r})")  # fmt: skip
    return value


def _check_expr(text: str) -> str:
    try:
        compile_expr(text)
    except ExprError as exc:
        raise ValueError(str(exc)) from None
    return text.strip()


# -- value validators (PlainValidator: our own messages instead of pydantic's union noise) --


def _int_or_expr(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return check_magnitude(value)
    if isinstance(value, str):
        return _check_expr(value)
    raise ValueError(f"expected an integer or an expression string, got {quote(value)}")


def _number_or_expr(value: Any) -> int | float | str:
    if is_number(value):
        return check_magnitude(value)
    if isinstance(value, str):
        return _check_expr(value)
    raise ValueError(f"expected a number or an expression string, got {quote(value)}")


def _scalar(value: Any) -> Scalar:
    if isinstance(value, (str, int, float, bool)):
        return check_magnitude(value)
    raise ValueError(f"expected a string, number or boolean, got {quote(value)}")


def _positive_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return check_magnitude(value)
    raise ValueError(f"must be a positive integer (got {quote(value)})")


def _positive_number(value: Any) -> int | float:
    if is_number(value) and value > 0:
        return check_magnitude(value)
    raise ValueError(f"must be a positive number (got {quote(value)})")


def _when(value: Any) -> dict[str, list[Scalar]]:
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"expected a non-empty mapping of parameter name to value(s), got {quote(value)}"
        )
    out: dict[str, list[Scalar]] = {}
    for key, raw in value.items():
        if not isinstance(key, str):
            raise ValueError(f"parameter names must be strings, got {quote(key)}")
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise ValueError(f"{key}: needs at least one value")
        for item in values:
            if not isinstance(item, (str, int, float, bool)):
                raise ValueError(
                    f"{key}: values must be strings, numbers or booleans, got {quote(item)}"
                )
        out[key] = list(values)
    return out


IntOrExpr = Annotated[int | str, PlainValidator(_int_or_expr)]
NumberOrExpr = Annotated[int | float | str, PlainValidator(_number_or_expr)]
ScalarValue = Annotated[Scalar, PlainValidator(_scalar)]
PositiveInt = Annotated[int, PlainValidator(_positive_int)]
PositiveNumber = Annotated[int | float, PlainValidator(_positive_number)]
When = Annotated[dict[str, list[Scalar]], PlainValidator(_when)]


def _version(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == 1:
        return value
    raise ValueError(f"unsupported version {quote(value)} (supported: 1)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ParamBase(_Strict):
    when: When | None = None
    # Value taken in the resolved config while the parameter is inactive (absent if not given).
    otherwise: ScalarValue | None = None
    description: StrictStr | None = None


def _literal_range_check(low: Any, high: Any) -> None:
    if is_number(low) and is_number(high) and low > high:
        raise ValueError(f"low: must be <= high (got {low} > {high})")


class IntParamModel(_ParamBase):
    type: Literal["int"]
    low: IntOrExpr | None = None
    high: IntOrExpr | None = None
    step: PositiveInt | None = None
    log: StrictBool = False
    choices_pow2: list[int] | None = None
    default: IntOrExpr

    @field_validator("choices_pow2", mode="before")
    @classmethod
    def _pow2(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"expected [low, high], two powers of two (got {quote(value)})")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise ValueError(f"{quote(item)} is not a power of two")
            if item & (item - 1):
                raise ValueError(f"{quote(item)} is not a power of two")
            check_magnitude(item)
        if value[0] > value[1]:
            raise ValueError(f"low must be <= high (got {value[0]} > {value[1]})")
        return value

    @model_validator(mode="after")
    def _shape(self) -> IntParamModel:
        if self.choices_pow2 is not None:
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (
                ["log"] if self.log else []
            )
            if extra:
                raise ValueError(f"{extra[0]}: not allowed together with choices_pow2")
            if isinstance(self.default, int):
                lo, hi = self.choices_pow2
                if (
                    self.default < 1
                    or self.default & (self.default - 1)
                    or not (lo <= self.default <= hi)
                ):
                    raise ValueError(
                        f"default: {self.default} is not a power of two in [{lo}, {hi}]"
                    )
            return self
        for key in ("low", "high"):
            if getattr(self, key) is None:
                raise ValueError(f"{key}: required (or use choices_pow2)")
        _literal_range_check(self.low, self.high)
        if self.log:
            if isinstance(self.low, int) and self.low < 1:
                raise ValueError(f"low: must be >= 1 with log: true (got {self.low})")
            if self.step not in (None, 1):
                raise ValueError(f"step: must be 1 with log: true (got {self.step})")
        return self


class FloatParamModel(_ParamBase):
    type: Literal["float"]
    low: NumberOrExpr
    high: NumberOrExpr
    step: PositiveNumber | None = None
    log: StrictBool = False
    default: NumberOrExpr

    @model_validator(mode="after")
    def _shape(self) -> FloatParamModel:
        _literal_range_check(self.low, self.high)
        if self.log:
            if is_number(self.low) and self.low <= 0:
                raise ValueError(f"low: must be > 0 with log: true (got {self.low})")
            if self.step is not None:
                raise ValueError("step: not allowed together with log: true")
        return self


class CategoricalParamModel(_ParamBase):
    type: Literal["categorical"]
    choices: list[ScalarValue]
    default: ScalarValue

    @model_validator(mode="after")
    def _shape(self) -> CategoricalParamModel:
        if not self.choices:
            raise ValueError("choices: must not be empty")
        seen: list[Any] = []
        for item in self.choices:
            if any(same_value(item, s) for s in seen):
                raise ValueError(f"choices: duplicate value {quote(item)}")
            seen.append(item)
        if not any(same_value(self.default, c) for c in self.choices):
            raise ValueError(
                f"default: {quote(self.default)} is not one of the choices "
                f"{quote(tuple(self.choices))}"
            )
        return self


ParamModel = Annotated[
    IntParamModel | FloatParamModel | CategoricalParamModel,
    Field(discriminator="type"),
]


class ConstraintModel(_Strict):
    expr: StrictStr
    message: StrictStr = ""

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        return _check_expr(value)


def _constraint(value: Any) -> Any:
    if isinstance(value, str):
        return {"expr": value}
    return value


class SpaceFileModel(_Strict):
    version: Annotated[int, PlainValidator(_version)] = 1
    description: StrictStr | None = None
    # Override files only: "builtin" (default) merges onto the built-in space, "none" replaces it.
    extends: Literal["builtin", "none"] | None = None
    # Built-in files only: "common" starts from _common.yaml (the parameters every framework
    # shares); the file's own params then replace, add to (or, with null, remove) those.
    include: Literal["common"] | None = None
    # Override files only: ``name: null`` removes a built-in parameter.
    params: dict[str, ParamModel | None] = Field(default_factory=dict)
    constraints: list[ConstraintModel] = Field(default_factory=list)
    # Override files only: replace the built-in constraints instead of appending to them.
    replace_constraints: StrictBool = False

    @field_validator("params", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                    raise ValueError(
                        f"{clip(str(name))}: not a valid parameter name (use letters, digits, underscores)"
                    )
                if name.startswith("_"):
                    raise ValueError(f"{name}: parameter names must not start with '_'")
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"expected a list of constraints, got {quote(value)}")
        return [_constraint(v) for v in value]


# -- error formatting --------------------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_MODELS_BY_TAG: dict[str, type[BaseModel]] = {
    "int": IntParamModel,
    "float": FloatParamModel,
    "categorical": CategoricalParamModel,
}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    if len(loc) == 1:
        return sorted(SpaceFileModel.model_fields)
    if loc[0] == "params" and len(loc) == 4 and loc[2] in _MODELS_BY_TAG:
        return sorted(_MODELS_BY_TAG[loc[2]].model_fields)
    if loc[0] == "constraints" and len(loc) == 3:
        return sorted(ConstraintModel.model_fields)
    return None


def format_validation_error(exc: ValidationError) -> str:
    """One line ``key.path: message`` for the first error (plus a count of the others)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    # Discriminated unions put the tag in the location: params.<name>.<tag>.<key>.
    shown = loc
    if len(loc) >= 3 and loc[0] == "params" and loc[2] in _MODELS_BY_TAG:
        shown = loc[:2] + loc[3:]
    kind = first["type"]
    message = first["msg"]
    ctx = first.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        message = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        message = "required key missing"
    elif kind == "union_tag_invalid":
        shown = shown + ("type",)
        message = (
            f"unknown type {quote(ctx.get('tag'))} (expected one of: {', '.join(PARAM_TYPES)})"
        )
    elif kind == "union_tag_not_found":
        shown = shown + ("type",)
        message = f"required key missing (one of: {', '.join(PARAM_TYPES)})"
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", message))
        # Model-level checks report "key: problem"; fold the key into the path.
        head, sep, rest = message.partition(": ")
        fields = _MODELS_BY_TAG.get(loc[2]) if len(loc) == 3 and loc[0] == "params" else None
        given = first.get("input")
        if sep and fields is not None and head in fields.model_fields:
            shown = shown + (head,)
            message = rest
        elif sep and loc == ("params",) and isinstance(given, dict) and head in given:
            shown = shown + (head,)
            message = rest
    elif kind in ("model_attributes_type", "model_type", "dict_type"):
        message = f"expected a mapping, got {quote(first.get('input'))}"
    else:
        message = f"{message} (got {quote(first.get('input'))})"
    path = _path(shown) or "top level"
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {message}{suffix}"
