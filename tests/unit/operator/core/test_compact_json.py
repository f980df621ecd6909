"""Kept JSON shares its vocabulary across objects, and a memo of a parse never serves a stale result."""

from __future__ import annotations

import json
from typing import Any

from edge_operator.core.compact_json import SHORT, shared, shared_labels
from edge_operator.core.parse_memo import ParseMemo
from edgeai_api.enums import ConditionType

DOC = ('{"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-29T05:00:00Z",'
       ' "message": "%s"}], "observedGeneration": 3, "online": true, "note": null}')


def _two() -> tuple[Any, Any]:
    # Two watch events decode to two trees with their own strings.
    long = "x" * (SHORT + 1)
    return json.loads(DOC % long), json.loads(DOC % long)


def test_shared_values_equal_their_source_and_share_keys_and_short_strings() -> None:
    a, b = _two()
    sa, sb = shared(a), shared(b)
    assert sa == a and sb == b
    ca, cb = sa["conditions"][0], sb["conditions"][0]
    ka = next(k for k in ca if k == "lastTransitionTime")
    kb = next(k for k in cb if k == "lastTransitionTime")
    assert ka is kb
    assert ca["status"] is cb["status"] and ca["lastTransitionTime"] is cb["lastTransitionTime"]
    # Messages are rarely equal across objects: left alone.
    assert ca["message"] == cb["message"] and ca["message"] is not cb["message"]


def test_shared_is_a_copy_and_keeps_non_plain_strings() -> None:
    src = {"conditions": [{"type": ConditionType.READY}], "n": 1}
    out = shared(src)
    out["conditions"][0]["type"] = "Other"
    out["n"] = 2
    assert src == {"conditions": [{"type": ConditionType.READY}], "n": 1}
    assert type(shared(src)["conditions"][0]["type"]) is ConditionType


def test_shared_labels_interns_every_key_and_value() -> None:
    value = "v" * 63
    a = shared_labels(json.loads(json.dumps({"site": value})))
    b = shared_labels(json.loads(json.dumps({"site": value})))
    assert a == b == {"site": value}
    assert a["site"] is b["site"]
    assert shared_labels(None) == {}


def test_parse_memo_reuses_only_for_equal_input() -> None:
    calls: list[object] = []

    def parse(raw: object) -> int:
        calls.append(raw)
        return len(calls)

    memo: ParseMemo[int] = ParseMemo()
    raw: dict[str, Any] = {"model": "m", "runtime": {"threads": 1}}
    assert memo.get("k", raw, parse) == 1
    assert memo.get("k", json.loads(json.dumps(raw)), parse) == 1  # a new, equal body: no parse
    raw["runtime"]["threads"] = 2  # the caller changes its dict in place: never a stale parse
    assert memo.get("k", raw, parse) == 2
    assert memo.get("other", raw, parse) == 3  # per key
    # Not JSON: parsed every time, never wrongly reused.
    odd = {"f": object()}
    assert memo.get("k", odd, parse) == 4 and memo.get("k", odd, parse) == 5


def test_parse_memo_is_bounded_oldest_first() -> None:
    memo: ParseMemo[str] = ParseMemo(limit=2)
    seen: list[str] = []

    def parse(raw: object) -> str:
        seen.append(str(raw))
        return str(raw)

    for k in ("a", "b", "c"):
        memo.get(k, k, parse)
    memo.get("c", "c", parse)  # kept
    memo.get("a", "a", parse)  # evicted: parsed again
    assert seen == ["a", "b", "c", "a"]
