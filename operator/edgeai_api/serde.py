"""JSON <-> frozen dataclasses, driven by the dataclasses' type hints: one codec for every CRD type.

Why generic: the CRD types are many small records, and hand-written `from_dict`/`to_dict` pairs
drift from their fields. Here a field's Python type says how it is read and written, so adding a
field to a dataclass is the whole change. The shapes understood are the ones the CRD schemas use:

- `str`, `int`, `float` (schema `number`; an int stays an int so a value's JSON never changes),
  `bool`, an `enum.StrEnum` (schema `enum`), `int | str` (`x-kubernetes-int-or-string`);
- `tuple[X, ...]` (schema `array`), `Mapping[str, X]` (`additionalProperties`), a nested dataclass;
- `X | None = None`: optional, omitted from the JSON when None; a field without a default is required.

JSON names are the fields' names in camelCase unless the field's metadata says `json`. A field
whose metadata has `extra` keeps the properties no field names (under a schema node with
`x-kubernetes-preserve-unknown-fields`); elsewhere unknown properties are dropped, as the API
server prunes them. Parse errors are `ApiTypeError`, naming the field's path.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar, Union, cast

JsonValue: TypeAlias = Union[bool, int, float, str, list["JsonValue"], dict[str, "JsonValue"], None]  # noqa: UP007
JsonObject: TypeAlias = dict[str, JsonValue]

T = TypeVar("T")


class ApiTypeError(ValueError):
    """A JSON value does not fit the CRD type: `path` names the field, as kubectl would."""

    def __init__(self, path: str, expected: str, got: object = None, *, missing: bool = False) -> None:
        self.path = path
        self.expected = expected
        self.got = got
        self.missing = missing
        super().__init__(f"{path}: required" if missing else f"{path}: expected {expected}, got {got!r}")


def json_name(f: dataclasses.Field[Any]) -> str:
    explicit = f.metadata.get("json")
    if explicit:
        return str(explicit)
    head, *rest = f.name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def is_extra(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("extra"))


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)


def is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def union_args(tp: Any) -> tuple[Any, ...] | None:
    """The arms of `X | Y` (or Optional), else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return None


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    args = union_args(tp)
    if args is None or type(None) not in args:
        return tp, False
    rest = tuple(a for a in args if a is not type(None))
    return (rest[0] if len(rest) == 1 else Union[rest], True)  # noqa: UP007 - a runtime-built union


def describe(tp: Any) -> str:
    """What a type accepts, in a person's words (the schema's vocabulary)."""
    tp, _ = strip_optional(tp)
    args = union_args(tp)
    if args is not None:
        return " or ".join(describe(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "array"
    if origin is not None and issubclass(origin, Mapping):
        return "object"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def parse(cls: type[T], data: object, path: str = "") -> T:
    """`data` (decoded JSON) as a `cls`; ApiTypeError naming the first field that does not fit."""
    return cast(T, _value(cls, data, path, None))


def _value(tp: Any, v: object, path: str, what: str | None) -> Any:
    tp, optional = strip_optional(tp)
    if v is None:
        if optional:
            return None
        raise ApiTypeError(path, what or describe(tp), v)
    args = union_args(tp)
    if args is not None:
        for arm in args:
            try:
                return _value(arm, v, path, what)
            except ApiTypeError:
                continue
        raise ApiTypeError(path, what or describe(tp), v)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(v, list | tuple):
            raise ApiTypeError(path, what or "array", v)
        item = typing.get_args(tp)[0]
        return tuple(_value(item, x, f"{path}[{i}]", what) for i, x in enumerate(v))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(v, Mapping):
            raise ApiTypeError(path, "object", v)
        _, item = typing.get_args(tp)
        if item is Any:
            return dict(v)
        return {str(k): _value(item, x, f"{path}.{k}", what) for k, x in v.items()}
    if dataclasses.is_dataclass(tp):
        return _object(cast(type, tp), v, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise ApiTypeError(path, what or describe(tp), v) from None
    if tp is Any:
        return v
    if tp is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, tp)
    if not ok:
        raise ApiTypeError(path, what or describe(tp), v)
    return v


def _object(cls: type, v: object, path: str) -> Any:
    if not isinstance(v, Mapping):
        raise ApiTypeError(path, "object", v)
    kw: dict[str, Any] = {}
    known: set[str] = set()
    extra_field = None
    types_ = hints(cls)
    for f in fields(cls):
        if is_extra(f):
            extra_field = f
            continue
        name = json_name(f)
        known.add(name)
        sub = f"{path}.{name}" if path else name
        if v.get(name) is None:
            if is_required(f):
                raise ApiTypeError(sub, describe(types_[f.name]), missing=True)
            continue
        kw[f.name] = _value(types_[f.name], v[name], sub, f.metadata.get("what"))
    if extra_field is not None:
        kw[extra_field.name] = {str(k): x for k, x in v.items() if k not in known}
    return cls(**kw)


def serialize(obj: object) -> JsonObject:
    """A CRD dataclass as JSON: camelCase names, None (unset) fields left out."""
    out = _json(obj)
    if not isinstance(out, dict):
        raise TypeError(f"{type(obj).__name__} is not a dataclass")
    return out


def _json(v: object) -> JsonValue:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        out: JsonObject = {}
        for f in fields(type(v)):
            x = getattr(v, f.name)
            if is_extra(f):
                out.update({str(k): _json(y) for k, y in x.items()})
            elif x is not None:
                out[json_name(f)] = _json(x)
        return out
    if isinstance(v, enum.Enum):
        return cast(JsonValue, v.value)
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json(x) for k, x in v.items()}
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise TypeError(f"cannot serialize {type(v).__name__}")
