"""Kubernetes resource quantities ("512Mi", "1.5", "250m", "1e3") as exact numbers.

Pure. Used to compare a device's memory with a model's requirement and with
the memory a workload requests, so the placement reason can say "needs 2Gi,
device has 1Gi" instead of leaving the Pod Pending on the node.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# The same grammar the API server accepts (resource.Quantity).
QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
# The pattern the CRDs use for quantity strings: identical grammar, written for OpenAPI.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
)


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float, field: str = "quantity") -> Decimal:
    """Parse a quantity; raise QuantityError naming `field` when it is not one."""
    if isinstance(value, bool):
        raise QuantityError(f"{field}: expected a quantity such as 512Mi, got {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = QUANTITY_RE.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise QuantityError(f"{field}: {value!r} is not a quantity (examples: 512Mi, 2Gi, 1.5, 250m)")
    try:
        num = Decimal(m["num"])
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise QuantityError(f"{field}: {value!r} is not a quantity") from e
    suffix = m["suffix"] or ""
    if suffix in _BINARY:
        return num * _BINARY[suffix]
    if suffix in _DECIMAL:
        return num * _DECIMAL[suffix]
    return num * (Decimal(10) ** int(suffix[1:]))


def quantity_bytes(value: str | int | float, field: str = "memory") -> int:
    """A memory quantity in whole bytes (rounded up: a fraction of a byte still needs a byte)."""
    q = parse_quantity(value, field)
    whole = int(q)
    return whole + 1 if q > whole else whole


def quantity_millis(value: str | int | float, field: str = "cpu") -> int:
    """A CPU quantity in millicores, rounded up."""
    q = parse_quantity(value, field) * 1000
    whole = int(q)
    return whole + 1 if q > whole else whole


def format_bytes(n: int) -> str:
    """Bytes as the shortest exact binary quantity ("1536Mi", "2Gi"), for messages and status."""
    for suffix, size in reversed(_BINARY.items()):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)
