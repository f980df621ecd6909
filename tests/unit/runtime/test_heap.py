"""serving/heap.py: freed tensor-sized blocks stay mapped for the next request (measured in page faults)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime import cli
from edge_runtime.serving.heap import keep_freed_memory

ROOT = Path(__file__).resolve().parents[3]

# Four 600 KB buffers (a MobileNet request's body, pieces and copies) made, touched and freed, 200 times.
_CYCLES = r"""
import resource, sys
from edge_runtime.serving.heap import keep_freed_memory
if sys.argv[1] != "0":
    assert keep_freed_memory(int(sys.argv[1]))
def cycle():
    xs = [bytearray(600_000) for _ in range(4)]
    for x in xs:
        x[::4096] = b"\1" * len(x[::4096])
for _ in range(20):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    cycle()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


def _faults_per_cycle(keep_mib: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", _CYCLES, str(keep_mib)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc on Linux")
def test_freed_tensor_buffers_are_reused_without_faulting_pages_in_again() -> None:
    default = _faults_per_cycle(0)
    kept = _faults_per_cycle(64)
    assert kept < 5, kept
    # glibc's own thresholds give each cycle's pages back and fault them in again (about 550 here).
    assert default > 100, default


def test_zero_keeps_the_c_librarys_defaults_and_the_flag_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    assert keep_freed_memory(0) is False
    base = ["serve", "--model", "m.onnx", "--sha256", "0" * 64, "--name", "m"]
    assert cli.build_parser().parse_args(base).heap_keep_mib == 64
    assert cli.build_parser().parse_args([*base, "--heap-keep-mib", "0"]).heap_keep_mib == 0
    for bad in ("-1", "4097", "x"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([*base, "--heap-keep-mib", bad])
        assert "argument --heap-keep-mib" in capsys.readouterr().err
