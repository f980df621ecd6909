"""Decoded JSON kept for long, with its repeated strings shared: what a fleet-sized cache holds.

Pure. Every watch event is decoded on its own, so each of 10,000 EdgeDevice statuses holds its own
copy of "conditions", "lastTransitionTime", "True", "Ready", of every label key and of most label
values. Those strings are most of the bytes of a small status or label map (a str costs 50-80
bytes, a dict slot 24), and the operator keeps one status and one label map per object for as
long as the object lives. Interning them makes each one string per process.

Dict keys and values up to `SHORT` characters are interned: the vocabulary (field names, condition
types and reasons, label values, timestamps of the same second) and what a deployment repeats on
every object (a model's digest, its URI and image, the same acceleration message on 10,000 rows).
An interned string no one else holds costs only a slot in the interpreter's table; a longer value
(a free-text message) is left alone.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

# A sha256 hex digest is 64; an acceleration message or an artifact URI ~100-200.
SHORT = 256


def interned(value: Any) -> Any:
    """`value` as the process's one copy when it is a plain str (a StrEnum member, a status this process
    wrote, is one object already and cannot be interned); anything else as it is."""
    return sys.intern(value) if type(value) is str else value


def shared(value: Any) -> Any:
    """A copy of decoded JSON `value` with its dict keys and short strings interned.

    Dicts and lists are copied (a caller never shares structure with the body it came from, so an
    in-place change to one can not reach the other); numbers, booleans and None are immutable.
    """
    if isinstance(value, str):
        return interned(value) if len(value) <= SHORT else value
    if isinstance(value, Mapping):
        return {interned(k): shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shared(v) for v in value]
    return value


def shared_labels(labels: Mapping[str, Any] | None) -> dict[str, str]:
    """A label map with keys and values interned whatever their length: label vocabularies repeat
    across a fleet (the same keys on every node, a few values each)."""
    return {sys.intern(str(k)): sys.intern(str(v)) for k, v in (labels or {}).items()}  # str(): a plain str
