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
    return cast(T, _decoder(cast(Any, cls))(data, path, None))


# A decoder reads one JSON value as one type: (value, path, what) -> the typed value.
Decoder = typing.Callable[[object, str, "str | None"], Any]


@functools.cache
def _decoder(tp: Any) -> Decoder:
    """The decoder of `tp`, built once per type: the type hints are read and the shape decided here,
    not on every value (the operator parses every watched object's spec on every event)."""
    inner, optional = strip_optional(tp)
    shape = _shape(inner)
    if not optional:
        def required(v: object, path: str, what: str | None) -> Any:
            if v is None:
                raise ApiTypeError(path, what or describe(inner), v)
            return shape(v, path, what)
        return required

    def maybe(v: object, path: str, what: str | None) -> Any:
        return None if v is None else shape(v, path, what)
    return maybe


def _shape(tp: Any) -> Decoder:
    args = union_args(tp)
    if args is not None:
        arms = tuple(_decoder(a) for a in args)

        def union(v: object, path: str, what: str | None) -> Any:
            for arm in arms:
                try:
                    return arm(v, path, what)
                except ApiTypeError:
                    continue
            raise ApiTypeError(path, what or describe(tp), v)
        return union
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = _decoder(typing.get_args(tp)[0])

        def array(v: object, path: str, what: str | None) -> Any:
            if not isinstance(v, list | tuple):
                raise ApiTypeError(path, what or "array", v)
            return tuple(item(x, f"{path}[{i}]", what) for i, x in enumerate(v))
        return array
    if origin is not None and issubclass(origin, Mapping):
        value_tp = typing.get_args(tp)[1]
        value = None if value_tp is Any else _decoder(value_tp)

        def mapping(v: object, path: str, what: str | None) -> Any:
            if not isinstance(v, Mapping):
                raise ApiTypeError(path, "object", v)
            if value is None:
                return dict(v)
            return {str(k): value(x, f"{path}.{k}", what) for k, x in v.items()}
        return mapping
    if dataclasses.is_dataclass(tp):
        return _object_decoder(cast(type, tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_tp = tp

        def member(v: object, path: str, what: str | None) -> Any:
            try:
                return enum_tp(v)
            except ValueError:
                raise ApiTypeError(path, what or describe(enum_tp), v) from None
        return member
    if tp is Any:
        return lambda v, path, what: v
    if tp is float:
        def number(v: object, path: str, what: str | None) -> Any:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ApiTypeError(path, what or "number", v)
            return v
        return number
    if tp is int:
        def integer(v: object, path: str, what: str | None) -> Any:
            if not isinstance(v, int) or isinstance(v, bool):
                raise ApiTypeError(path, what or "integer", v)
            return v
        return integer
    plain = tp

    def scalar(v: object, path: str, what: str | None) -> Any:
        if not isinstance(v, plain):
            raise ApiTypeError(path, what or describe(plain), v)
        return v
    return scalar


def _object_decoder(cls: type) -> Decoder:
    types_ = hints(cls)
    # (attribute, JSON name, its decoder, required, the field's own description of what it takes, the
    # type described for a missing-field error)
    plan = []
    extra_field: str | None = None
    for f in fields(cls):
        if is_extra(f):
            extra_field = f.name
            continue
        plan.append((f.name, json_name(f), _decoder(types_[f.name]), is_required(f), f.metadata.get("what"),
                     types_[f.name]))
    known = frozenset(p[1] for p in plan)

    def obj(v: object, path: str, what: str | None) -> Any:
        if not isinstance(v, Mapping):
            raise ApiTypeError(path, "object", v)
        kw: dict[str, Any] = {}
        for attr, name, decode, req, field_what, field_tp in plan:
            x = v.get(name)
            if x is None:
                if req:
                    raise ApiTypeError(f"{path}.{name}" if path else name, describe(field_tp), missing=True)
                continue
            kw[attr] = decode(x, f"{path}.{name}" if path else name, field_what)
        if extra_field is not None:
            kw[extra_field] = {str(k): x for k, x in v.items() if k not in known}
        return cls(**kw)
    return obj


def serialize(obj: object) -> JsonObject:
    """A CRD dataclass as JSON: camelCase names, None (unset) fields left out."""
    out = _json(obj)
    if not isinstance(out, dict):
        raise TypeError(f"{type(obj).__name__} is not a dataclass")
    return out


@functools.cache
def _json_plan(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(attribute, JSON name, keeps unknown properties) per field, once per class."""
    return tuple((f.name, json_name(f), is_extra(f)) for f in fields(cls))


_PLAIN = frozenset({str, bool, int, float})


def _json(v: object) -> JsonValue:
    # Cheapest tests first: most values in a status are strings and numbers.
    if v is None or type(v) in _PLAIN:
        return cast(JsonValue, v)  # exact types: a StrEnum member is a str too, and goes out as its value below
    cls: Any = type(v)
    plan = _json_plan(cls) if hasattr(cls, "__dataclass_fields__") else None
    if plan is not None:
        out: JsonObject = {}
        for attr, name, extra in plan:
            x = getattr(v, attr)
            if extra:
                out.update({str(k): _json(y) for k, y in x.items()})
            elif x is not None:
                out[name] = _json(x)
        return out
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, enum.Enum):
        return cast(JsonValue, v.value)
    if isinstance(v, str | int | float):  # a subclass of a plain type that is not an Enum
        return cast(JsonValue, v)
    raise TypeError(f"cannot serialize {type(v).__name__}")
