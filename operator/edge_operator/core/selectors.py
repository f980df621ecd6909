"""metav1.LabelSelector evaluation, as the API server and controllers do it.

Pure. `deviceSelector` selects EdgeDevices by the union of their Node's labels
and their own labels, with `matchLabels` and `matchExpressions` ANDed.

These read the selector's JSON, not edgeai_api's LabelSelector: the controller's
selector index holds it as the API server sent it, and `validate_selector` must
name a bad field in an object the typed parse already refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeai_api.enums import SelectorOperator as Op

OPERATORS: tuple[str, ...] = tuple(o.value for o in Op)


class SelectorError(ValueError):
    pass


def validate_selector(selector: Mapping[str, Any] | None, field: str = "spec.deviceSelector") -> None:
    """Raise SelectorError naming the field when the selector is malformed.

    The CRD schema rejects most of this at admission; this guards objects
    written before the schema tightened, or by a client that skipped validation.
    """
    if not selector:
        return
    ml = selector.get("matchLabels") or {}
    if not isinstance(ml, Mapping):
        raise SelectorError(f"{field}.matchLabels must be a map of label to value")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        where = f"{field}.matchExpressions[{i}]"
        op = expr.get("operator")
        if not expr.get("key"):
            raise SelectorError(f"{where}.key is required")
        if op not in OPERATORS:
            raise SelectorError(f"{where}.operator must be one of {', '.join(OPERATORS)}, got {op!r}")
        values = expr.get("values") or []
        if op in (Op.IN, Op.NOT_IN) and not values:
            raise SelectorError(f"{where}.values must be non-empty for operator {op}")
        if op in (Op.EXISTS, Op.DOES_NOT_EXIST) and values:
            raise SelectorError(f"{where}.values must be empty for operator {op}")


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True if `labels` satisfy `selector`. An absent or empty selector selects everything."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr["key"]
        op = expr["operator"]
        present = key in labels
        if op == Op.IN:
            if not present or labels[key] not in expr.get("values", ()):
                return False
        elif op == Op.NOT_IN:
            if present and labels[key] in expr.get("values", ()):
                return False
        elif op == Op.EXISTS:
            if not present:
                return False
        elif op == Op.DOES_NOT_EXIST:
            if present:
                return False
        else:
            return False
    return True


def describe(selector: Mapping[str, Any] | None) -> str:
    """The selector in kubectl's `-l` syntax, for messages."""
    if not selector:
        return "<all devices>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr["operator"]
        if op == Op.EXISTS:
            parts.append(expr["key"])
        elif op == Op.DOES_NOT_EXIST:
            parts.append(f"!{expr['key']}")
        else:
            vals = ",".join(expr.get("values") or [])
            parts.append(f"{expr['key']} {'in' if op == Op.IN else 'notin'} ({vals})")
    return ",".join(parts)
