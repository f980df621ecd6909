"""The durable hard-example queue: bounded, counts drops, survives kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.fallback.hardqueue import HardExampleQueue

ROOT = Path(__file__).resolve().parents[3]


def test_fifo_ack_and_counters(tmp_path: Path) -> None:
    q = HardExampleQueue(tmp_path, max_items=10)
    ids = [q.put("m", f"body{i}".encode(), i if i % 2 else None)[0] for i in range(3)]
    assert q.depth() == 3
    first = q.peek(1)[0]
    assert (first.id, first.model, first.body, first.header_length) == (ids[0], "m", b"body0", None)
    q.ack(first.id)
    q.ack(ids[1], delivered=False)
    assert q.depth() == 1 and q.counter("drained") == 1 and q.counter("rejected") == 1
    q.close()


def test_bounded_by_count_and_bytes_dropping_oldest(tmp_path: Path) -> None:
    q = HardExampleQueue(tmp_path, max_items=3, max_bytes=100)
    for i in range(5):
        q.put("m", bytes([i]) * 10, None)
    assert [e.body[0] for e in q.peek(10)] == [2, 3, 4]
    assert q.counter("dropped") == 2
    _, dropped = q.put("m", b"z" * 95, None)
    assert len(dropped) == 3 and q.depth() == 1
    with pytest.raises(ValueError, match="larger than the whole queue"):
        q.put("m", b"z" * 101, None)
    q.close()


def test_acknowledged_examples_survive_kill_9(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from edge_runtime.fallback.hardqueue import HardExampleQueue\n"
        f"q = HardExampleQueue({str(tmp_path)!r})\n"
        "for i in range(20):\n"
        "    q.put('m', b'example-%d' % i, None)\n"
        "    print(i, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acked = proc.stdout.decode().split()
    q = HardExampleQueue(tmp_path)
    assert [e.body for e in q.peek(100)] == [b"example-%s" % i.encode() for i in acked]
    assert len(acked) == 20
    q.close()
    assert os.path.exists(tmp_path / "hard-examples.sqlite")
