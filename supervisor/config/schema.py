"""Config schemas built from the settings dataclasses themselves (pydantic v2).

Each settings dataclass declares its fields with their bounds (adapters/bounds.py) and its
defaults, once. `model_of` turns it into a strict pydantic model: numbers must be numbers (not
strings, not booleans), finite and inside their bounds; unknown keys are refused; a number field
without an upper bound is a programming error caught here, so every number is bounded.
`problems` turns a validation error into one line per problem, each naming its dotted key.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
import warnings
from typing import Annotated, Any, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Strict, ValidationError, create_model

from adapters.bounds import Internal

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class SchemaError(TypeError):
    """A settings dataclass declares a number without bounds (a bug, not a user mistake)."""


@functools.cache
def model_of(cls: type, skip: tuple[str, ...] = ()) -> type[BaseModel]:
    """A strict pydantic model of `cls`'s fields (those not Internal, not in `skip`), whose
    defaults are those of `cls()`."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = cls() if all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                            for f in dataclasses.fields(cls)) else None
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if f.name in skip or Internal in getattr(kind, "__metadata__", ()):
            continue
        _require_bounds(cls, f.name, kind)
        kind = strict(kind)
        if defaults is not None:
            fields[f.name] = (kind, getattr(defaults, f.name))
        elif f.default is not dataclasses.MISSING:
            fields[f.name] = (kind, f.default)
        else:
            fields[f.name] = (kind, ...)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # a field named like a BaseModel method (json)
        return create_model(f"{cls.__name__}Schema", __config__=STRICT, **fields)


def strict(kind: Any) -> Any:
    """Numbers and booleans strict (no "5", no true for 1), the rest as declared (an enum's value
    is taken as the enum)."""
    origin = get_origin(kind)
    if origin is Annotated:
        return Annotated[(strict(get_args(kind)[0]), *kind.__metadata__)]
    if kind in (int, float, bool):
        return Annotated[kind, Strict()]
    if origin in (typing.Union, type(int | None)):
        return typing.Union[tuple(strict(a) for a in get_args(kind))]  # noqa: UP007 - built at run time
    if origin in (dict, tuple, list):
        args = tuple(a if a is Ellipsis else strict(a) for a in get_args(kind))
        return origin[args]
    return kind


def _require_bounds(cls: type, name: str, kind: Any) -> None:
    base, meta = kind, ()
    while get_origin(base) is Annotated:
        meta += base.__metadata__
        base = get_args(base)[0]
    if get_origin(base) in (typing.Union, type(int | None)):
        for arg in get_args(base):
            if arg is not type(None):
                _require_bounds(cls, name, arg if not meta else Annotated[(arg, *meta)])
        return
    if base in (int, float) and not (any(isinstance(m, Ge | Gt) for m in meta) and any(isinstance(m, Le | Lt)
                                                                                       for m in meta)):
        raise SchemaError(f"{cls.__name__}.{name} is a number without both bounds")


def build(model: type[BaseModel], raw: Any, path: str, problems: list[str]) -> BaseModel | None:
    """Validate `raw` (a TOML table) against `model`; problems are appended, one line each."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(lines(exc, path, model))
        return None


def lines(exc: ValidationError, path: str, model: type[BaseModel] | None = None) -> list[str]:
    out = []
    for error in exc.errors(include_url=False):
        loc = ".".join([path, *(str(p) for p in error["loc"])]) if path else ".".join(str(p) for p in error["loc"])
        out.append(f"{loc}: {_say(error, model)}")
    return out


def _say(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = "" if kind == "missing" else f", got {_show(value)}"
    match kind:
        case "missing":
            return "missing"
        case "extra_forbidden":
            allowed = ", ".join(model.model_fields) if model is not None else ""
            return f"unknown key{f' (expected one of: {allowed})' if allowed else ''}"
        case "greater_than" | "greater_than_equal" | "less_than" | "less_than_equal":
            words = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
            bound = next(iter(ctx.values()))
            return f"must be {words[kind]} {bound}{got}"
        case "finite_number":
            return f"must be a finite number{got}"
        case "float_type" if isinstance(value, int) and not isinstance(value, bool):
            # A whole number too large for a float (hundreds of digits): a number, but not one accepted.
            return f"must be a finite number{_range(model, error['loc'])}, got a {len(str(abs(value)))}-digit number"
        case "float_type" | "int_from_float" | "float_parsing":
            return f"must be a number{got}"
        case "int_type" | "int_parsing":
            return f"must be a whole number{got}"
        case "bool_type" | "bool_parsing":
            return f"must be true or false{got}"
        case "string_type":
            return f"must be a string{got}"
        case "literal_error" | "enum":
            return f"must be one of {ctx.get('expected', '')}{got}"
        case "string_too_short":
            return "must not be empty"
        case "string_too_long" | "too_long":
            return f"is too long (at most {ctx.get('max_length')}){got}"
        case "list_type" | "tuple_type":
            return f"must be a list{got}"
        case "dict_type" | "model_type" | "dataclass_type":
            return f"must be a table{got}"
    return f"{error['msg']}{got}"


def _range(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """" >= LOW and <= HIGH" for a top-level field of `model` that declares both bounds, else ""."""
    info = model.model_fields.get(str(loc[0])) if model is not None and len(loc) == 1 else None
    meta = info.metadata if info is not None else []
    low = next((f" >= {m.ge:g}" if isinstance(m, Ge) else f" > {m.gt:g}" for m in meta if isinstance(m, Ge | Gt)),
               None)
    high = next((f" <= {m.le:g}" if isinstance(m, Le) else f" < {m.lt:g}" for m in meta if isinstance(m, Le | Lt)),
                None)
    return f"{low} and{high}" if low is not None and high is not None else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
