"""/debug/memory: the operator's heap by source line, only while tracemalloc traces."""

from __future__ import annotations

import tracemalloc

from edge_operator.main import memory_report


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
