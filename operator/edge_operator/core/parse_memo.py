"""A bounded memo of a parse whose input is a JSON value: reuse the last result while the input is equal.

Pure. Watch events bring a new body each time (a status echo, a heartbeat) while most of it is
unchanged; comparing the new JSON with the one parsed last (a dict comparison, in C) is an order
of magnitude cheaper than parsing it again. The input is copied when stored, so a caller that
later changes its dict in place can never be served a stale parse. The oldest entries go first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

R = TypeVar("R")


class ParseMemo(Generic[R]):
    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self._last: dict[Hashable, tuple[object, R]] = {}

    def get(self, key: Hashable, raw: object, parse: Callable[[object], R]) -> R:
        """`parse(raw)`, or the result kept for `key` when it was made from an equal `raw`."""
        hit = self._last.get(key)
        if hit is not None and hit[0] == raw:
            return hit[1]
        out = parse(raw)
        if len(self._last) >= self.limit:
            del self._last[next(iter(self._last))]
        self._last[key] = (copy.deepcopy(raw), out)
        return out
