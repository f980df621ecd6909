"""/debug/memory: the operator's heap by source line, only while tracemalloc traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from edge_operator.telemetry.heap import memory_report


def test_memory_report_is_refused_while_not_tracing_and_names_bad_arguments() -> None:
    assert not tracemalloc.is_tracing()
    status, body = memory_report("lineno", "10")
    assert status == 404 and "PYTHONTRACEMALLOC" in str(body)
    tracemalloc.start()
    try:
        kept = [bytearray(1 << 20) for _ in range(4)]  # 4 MiB allocated on one line of this file
        status, body = memory_report("lineno", "5")
        assert status == 200 and isinstance(body, dict)
        assert len(body["top"]) <= 5
        assert "test_debug_memory.py" in body["top"][0]["where"] and body["top"][0]["kib"] >= 4096
        assert memory_report("lineno", "many") == (400, "top: expected an integer, got 'many'")
        assert memory_report("module", "5")[0] == 400
        del kept
    finally:
        tracemalloc.stop()


class _Keeper:
    """Stands in for a cache entry that keeps a decoded body."""

    def __init__(self, body: object) -> None:
        self.body = body


def holders_check() -> None:
    """The check itself, run in a fresh interpreter by the test below."""
    tracemalloc.start()
    try:
        doc = json.dumps({"status": {"conditions": [{"type": "Ready", "message": "m" * 100}] * 5}, "n": 1})
        kept = [_Keeper(json.loads(doc)) for _ in range(200)]
        loose = [json.loads(doc) for _ in range(50)]  # held by a plain list allocated here: named as such
        status, body = memory_report("holders", "10")
        assert status == 200 and isinstance(body, dict)
        rows = {r["where"]: r for r in body["top"]}
        keeper = next(r for w, r in rows.items() if w.startswith("_Keeper @"))
        # One tree per keeper, each the whole body: its dicts, its list and its strings. A few may be
        # missed: a dict taken from CPython's free list keeps the traceback of its first allocation.
        assert 150 <= keeper["blocks"] <= 200, rows
        assert keeper["kib"] * 1024 >= keeper["blocks"] * len(doc), rows
        assert any(40 <= r["blocks"] <= 50 for w, r in rows.items() if w.startswith("list @")), rows
        del kept, loose
    finally:
        tracemalloc.stop()


def test_holders_names_what_keeps_decoded_json() -> None:
    # In a fresh interpreter: after a few hundred other tests in this process, tracemalloc started
    # mid-run was seen to trace none of the new objects (every holder "?"), depending on which tests
    # ran before. What is measured here is the report, not the state other tests leave.
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "operator")])}
    code = "from tests.unit.operator.test_debug_memory import holders_check; holders_check()"
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
