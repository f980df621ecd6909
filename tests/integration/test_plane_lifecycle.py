"""hack/plane.py: `up` is idempotent, `down` stops exactly what it started, also after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import plane as localplane  # noqa: E402

pytestmark = pytest.mark.integration
NAME = "lifecycle-test"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "hack" / "plane.py"), "--name", NAME, *args],
                          capture_output=True, text=True, timeout=300)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def test_up_twice_then_down_after_a_crash_leaves_nothing_behind() -> None:
    try:
        first = cli("up", "--nodes", "1")
        assert first.returncode == 0, first.stderr
        p = localplane.Plane(NAME)
        comps = p.components()
        assert {c.name for c in comps} == {"etcd", "kube-apiserver", "kube-controller-manager",
                                           "kube-scheduler", "kwok"}
        again = cli("up", "--nodes", "1")
        assert again.returncode == 0 and "already up" in again.stderr
        assert [c.pid for c in p.components()] == [c.pid for c in comps]  # no second plane

        env = cli("env")
        assert f"export KUBECONFIG={p.kubeconfig}" in env.stdout

        # one component dies on its own
        sched = next(c for c in comps if c.name == "kube-scheduler")
        os.kill(sched.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while sched.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        st = cli("status")
        assert st.returncode == 0 and "DEGRADED" in st.stdout and "NOT RUNNING" in st.stdout

        down = cli("down")
        assert down.returncode == 0, down.stderr
        for c in comps:
            assert not c.alive(), f"{c.name} (pid {c.pid}) still running after down"
            assert not _group_members(c.pid), f"orphans left in {c.name}'s process group"
        assert cli("status").returncode == 1
    finally:
        cli("down")
