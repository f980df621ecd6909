"""Rollout in waves on the real plane (issue 7): kwok edge nodes, the operator as a subprocess,
real ONNX files over HTTP. A "bad revision" is a Pod annotation kwok's Stages turn into a pod
that runs but never gets Ready (hack/kwok-stages.yaml), the way a runtime that fails its
warm-up reports itself; the operator only sees Pod and Deployment status, as in KubeEdge.

Each test adds its own nodes and selects them by a label, so tests do not see each other."""

from __future__ import annotations

import collections
import itertools
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.integration.test_operator import Env, edge_model, env, idep, wait_for
from tests.integration.test_plugin import edgeai

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the operator fixture, shared with test_operator.py

BAD = {"sim.edgeai.io/ready": "false"}


def fleet(env: Env, namespace: str, n: int) -> tuple[list[str], dict[str, Any]]:
    tag = uuid.uuid4().hex[:5]
    nodes = [f"edge-w{tag}-{i}" for i in range(n)]
    env.kube.add_edge_nodes(nodes, labels={"edgeai.io/test": namespace})
    wait_for("devices discovered", lambda: all(env.get("edgedevice", x) for x in nodes), 60, env.op)
    return nodes, {"matchLabels": {"edgeai.io/test": namespace}}


def status(env: Env, ns: str, name: str = "d") -> dict[str, Any]:
    return ((env.get("idep", name, ns) or {}).get("status")) or {}


def revisions_of_children(env: Env, ns: str, name: str = "d") -> dict[str, int]:
    return {dev: int(ch["metadata"]["annotations"].get("edgeai.io/revision", 0))
            for dev, ch in env.children(ns, name).items()}


def wait_phase(env: Env, ns: str, phase: str, revision: int, timeout: float = 120,
               watch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st = status(env, ns)
        if watch is not None:
            watch(st)
        r = st.get("rollout") or {}
        return st if r.get("phase") == phase and r.get("revision") == revision else None

    return wait_for(f"rollout of revision {revision} {phase}", done, timeout, env.op)  # type: ignore[no-any-return]


def rfc3339(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def all_ready_on(env: Env, ns: str, nodes: list[str], revision: int) -> bool:
    kids = env.children(ns, "d")
    if sorted(kids) != sorted(nodes):
        return False
    for ch in kids.values():
        st = ch.get("status") or {}
        if ch["metadata"]["annotations"].get("edgeai.io/revision") != str(revision):
            return False
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []):
            return False
    return True


def rollout_spec(**kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"canary": 1, "waves": ["50%"], "maxUnavailable": 2,
                            "healthGate": {"readySeconds": 2, "progressDeadlineSeconds": 25}}
    spec.update(kw)
    return spec


def start(env: Env, ns: str, selector: dict[str, Any], nodes: list[str], rollout: dict[str, Any],
          runtime: dict[str, Any] | None = None) -> str:
    url, sha, _ = env.model_file(f"{ns}-1.onnx", seed=1)
    env.apply(edge_model("m", ns, url, sha), idep("d", ns, "m", selector, rollout=rollout, runtime=runtime or {}))
    wait_phase(env, ns, "Complete", 1, timeout=90)
    wait_for("revision 1 Ready everywhere", lambda: all_ready_on(env, ns, nodes, 1), 60, env.op)
    return sha


def new_model(env: Env, ns: str, seed: int) -> str:
    url, sha, _ = env.model_file(f"{ns}-{seed}.onnx", seed=seed)
    env.kube.kubectl("patch", "em", "m", "-n", ns, "--type=merge", "-p",
                     json.dumps({"spec": {"source": {"uri": url, "sha256": sha}}}))
    return sha


def test_good_revision_rolls_out_wave_by_wave(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 6)
    try:
        start(env, namespace, sel, nodes, rollout_spec())
        before = {d: ch["metadata"]["name"] for d, ch in env.children(namespace, "d").items()}
        sha2 = new_model(env, namespace, seed=2)
        timeline: list[tuple[float, int]] = []  # (when, devices whose workload names revision 2)

        def watch(st: dict[str, Any]) -> None:
            n = sum(1 for v in revisions_of_children(env, namespace).values() if v == 2)
            timeline.append((time.monotonic(), n))

        st = wait_phase(env, namespace, "Complete", 2, timeout=150, watch=watch)
        # The waves seen from the workloads themselves (status may trail them by a write): 1, then
        # 3, then 6 devices, each plateau held while its wave stood its readySeconds gate.
        counts = [n for _, n in timeline]
        assert max(counts) == 6 and all(n in (0, 1, 2, 3, 4, 5, 6) for n in counts)
        assert not any(a <= 1 and b > 3 for a, b in itertools.pairwise(counts)), counts
        # Each wave stood its gate: from the API server's own clock, not from how often this test could
        # look. The revision-2 Pods by creation second: the canary (1), then 2 more, then the last 3;
        # a wave's Pods are made only after the one before was Ready for readySeconds (2 s), so the
        # first Pod of a wave is at least 2 whole seconds younger than the last Pod of the one before.
        made = sorted(rfc3339(ch["metadata"]["creationTimestamp"]) for ch in env.children(namespace, "d").values())
        assert len(made) == 6
        assert made[1] - made[0] >= 2 and made[3] - made[2] >= 2, made
        assert st["currentRevision"] == 2 and st["revision"] == 2 and st["updated"] == 6
        hist = {r["revision"]: r for r in st["revisions"]}
        assert hist[1]["outcome"] == "Succeeded" and hist[2]["outcome"] == "Succeeded"
        assert hist[2]["digests"] == {"default": sha2} and "model builds changed" in hist[2]["reason"]
        wait_for("revision 2 Ready everywhere", lambda: all_ready_on(env, namespace, nodes, 2), 60, env.op)
        kids = env.children(namespace, "d")
        # Each device rolled to the new digest, in a new Pod; the old one is gone (surge, then delete).
        assert all(kids[d]["metadata"]["name"] != before[d] for d in nodes)
        assert len(env.items("pods", namespace, "edgeai.io/inference-deployment=d")) == len(nodes)
        assert {ch["metadata"]["annotations"]["edgeai.io/model-sha256"] for ch in kids.values()} == {sha2}
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_bad_revision_is_rolled_back_after_the_canary(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 5)
    try:
        sha1 = start(env, namespace, sel, nodes, rollout_spec(healthGate={"readySeconds": 2,
                                                                           "progressDeadlineSeconds": 12}))
        seen_on_2: set[str] = set()

        def watch(st: dict[str, Any]) -> None:
            seen_on_2.update(d for d, r in revisions_of_children(env, namespace).items() if r == 2)

        # The bad revision: pods that run but never get Ready.
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge", "-p",
                         json.dumps({"spec": {"runtime": {"podAnnotations": BAD}}}))
        t0 = time.monotonic()
        st = wait_phase(env, namespace, "RolledBack", 2, timeout=120, watch=watch)
        assert time.monotonic() - t0 >= 12  # it waited the deadline, not less
        assert len(seen_on_2) == 1, seen_on_2  # only the canary ever got it
        assert st["currentRevision"] == 1 and st["revision"] == 2
        hist = {r["revision"]: r for r in st["revisions"]}
        assert hist[2]["outcome"] == "Failed" and "made no progress for 12s" in hist[2]["message"]
        assert env.cond(env.get("idep", "d", namespace), "Degraded")["reason"] == "RolloutFailed"
        wait_for("revision 1 Ready everywhere again", lambda: all_ready_on(env, namespace, nodes, 1), 60, env.op)
        kids = env.children(namespace, "d")
        assert {ch["metadata"]["annotations"]["edgeai.io/model-sha256"] for ch in kids.values()} == {sha1}
        events = env.items("events", namespace)
        assert any(e.get("reason") == "RolloutFailed" and e["involvedObject"]["name"] == "d" for e in events)
        # What a person sees: the rollout failed, the fleet serves revision 1.
        rs = edgeai(env.kube, "rollout", "status", "d", "-n", namespace, "--no-watch")
        assert rs.returncode == 1 and "failed and was rolled back" in rs.stdout, rs.stdout + rs.stderr
        hist = edgeai(env.kube, "rollout", "history", "d", "-n", namespace)
        rows = [ln.split() for ln in hist.stdout.splitlines()]
        assert rows[1][:2] == ["1*", "Succeeded"] and rows[2][:2] == ["2+", "Failed"], hist.stdout
        # The spec still asks for the bad revision: it is not retried.
        time.sleep(5)
        assert (status(env, namespace).get("rollout") or {}).get("phase") == "RolledBack"
        assert set(revisions_of_children(env, namespace).values()) == {1}
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_offline_device_is_skipped_and_catches_up_when_back(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 4)
    away = nodes[1]
    try:
        start(env, namespace, sel, nodes, rollout_spec(canary=1, waves=[]))
        env.kube.set_node_online(away, False)
        wait_for("device offline", lambda: (env.get("edgedevice", away) or {}).get("status", {}).get(
            "online") is False, 90, env.op)
        sha2 = new_model(env, namespace, seed=3)
        st = wait_phase(env, namespace, "Complete", 2, timeout=120)
        assert st["currentRevision"] == 2
        # Told to update (its workload names revision 2), but it cannot run it yet.
        assert revisions_of_children(env, namespace)[away] == 2
        env.kube.set_node_online(away, True)
        wait_for("the device back and on revision 2", lambda: all_ready_on(env, namespace, nodes, 2), 120, env.op)
        assert env.children(namespace, "d")[away]["metadata"]["annotations"]["edgeai.io/model-sha256"] == sha2
    finally:
        env.kube.set_node_online(away, True)
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_pause_resume_and_undo_from_spec(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 4)
    try:
        sha1 = start(env, namespace, sel, nodes, rollout_spec(waves=[]))
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge", "-p",
                         json.dumps({"spec": {"rollout": {"paused": True}}}))
        new_model(env, namespace, seed=4)
        st = wait_phase(env, namespace, "Paused", 2, timeout=60)
        wait_for("the canary on revision 2", lambda: sorted(revisions_of_children(env, namespace).values())
                 == [1, 1, 1, 2], 30, env.op)
        time.sleep(5)  # paused: the next wave does not start
        assert sorted(revisions_of_children(env, namespace).values()) == [1, 1, 1, 2]
        assert env.cond(env.get("idep", "d", namespace), "Progressing")["reason"] == "RolloutPaused"
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge", "-p",
                         json.dumps({"spec": {"rollout": {"paused": False}}}))
        wait_phase(env, namespace, "Complete", 2, timeout=90)
        # Pause and resume above were plain spec patches (GitOps); undo through the CLI:
        # revision 1's template again, as revision 3.
        u = edgeai(env.kube, "rollout", "undo", "d", "-n", namespace, "--to-revision", "1")
        assert u.returncode == 0 and "rolling back to revision 1" in u.stdout, u.stderr
        st = wait_phase(env, namespace, "Complete", 3, timeout=90)
        assert st["currentRevision"] == 3 and "rollback to revision 1" in st["revisions"][-1]["reason"]
        wait_for("revision 3 Ready everywhere", lambda: all_ready_on(env, namespace, nodes, 3), 60, env.op)
        kids = env.children(namespace, "d")
        assert {ch["metadata"]["annotations"]["edgeai.io/model-sha256"] for ch in kids.values()} == {sha1}
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_operator_restart_mid_rollout_resumes_without_rolling_twice(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 6)
    try:
        start(env, namespace, sel, nodes, rollout_spec(canary=2, waves=["50%"], pauseSeconds=6))
        before = {d: ch["metadata"]["name"] for d, ch in env.children(namespace, "d").items()}
        new_model(env, namespace, seed=5)
        wait_for("wave 2 started", lambda: ((status(env, namespace).get("rollout") or {}).get("wave") or 0) >= 1
                 and (status(env, namespace).get("rollout") or {}).get("revision") == 2, 90, env.op)
        env.op.kill()  # SIGKILL, in the middle of the rollout
        time.sleep(2)
        env.op.start()
        env.op.wait_ready()
        st = wait_phase(env, namespace, "Complete", 2, timeout=120)
        assert st["currentRevision"] == 2
        wait_for("revision 2 Ready everywhere", lambda: all_ready_on(env, namespace, nodes, 2), 60, env.op)
        kids = env.children(namespace, "d")
        assert all(kids[d]["metadata"]["name"] != before[d] for d in nodes)
        # Rolled once each, across both operator processes (one log): one Pod made per device for revision 2.
        made = [json.loads(line) for line in env.op.log_path.read_text().splitlines() if '"created pod"' in line]
        per_device = collections.Counter(m["device"] for m in made if str(m.get("revision")) == "2"
                                         and m.get("deployment") == f"{namespace}/d")
        assert per_device == {d: 1 for d in nodes}, per_device
        assert [r["revision"] for r in st["revisions"]] == [1, 2]  # no revision invented on the way
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_restarting_canary_fails_the_gate_without_waiting_for_the_deadline(env: Env, namespace: str) -> None:
    nodes, sel = fleet(env, namespace, 3)
    try:
        start(env, namespace, sel, nodes, rollout_spec(healthGate={"readySeconds": 1, "maxRestarts": 1,
                                                                   "progressDeadlineSeconds": 300}))
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge", "-p",
                         json.dumps({"spec": {"runtime": {"podAnnotations": {"sim.edgeai.io/crash": "true"}}}}))
        t0 = time.monotonic()
        st = wait_phase(env, namespace, "RolledBack", 2, timeout=90)
        assert time.monotonic() - t0 < 60  # the restarts decided it, not the 300 s deadline
        msg = {r["revision"]: r for r in st["revisions"]}[2]["message"]
        # Whichever the operator saw first: the restart count over the gate, or the crash loop itself.
        assert "container restarts on revision 2 (healthGate.maxRestarts 1)" in msg or "CrashLoopBackOff" in msg, msg
        wait_for("revision 1 Ready everywhere again", lambda: all_ready_on(env, namespace, nodes, 1), 60, env.op)
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_one_device_failing_within_max_failures_is_rolled_back_alone_on_a_ramp(env: Env, namespace: str) -> None:
    """Fleet policies together on the real plane: a ramp sizes the waves (1, then 2, 4, all), a group
    override gives one device a crashing Pod on revision 2 only, and healthGate.maxFailures 1 lets
    that device fail alone: it goes back to revision 1 and the rest of the fleet goes on."""
    nodes, sel = fleet(env, namespace, 6)
    bad = sorted(nodes)[3]  # in the third wave (devices 3 and 4: one failure of two is tolerated)
    rollout = {"canary": 1, "ramp": {"initial": 2, "factor": 2}, "maxUnavailable": 2,
               # A deadline far beyond the crash loop's first restarts: on a busy machine the failure must come
               # from the crashing device, never from a slow wave.
               "healthGate": {"readySeconds": 1, "maxRestarts": 1, "progressDeadlineSeconds": 300, "maxFailures": 1}}
    try:
        start(env, namespace, sel, nodes, rollout)
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {
            "runtimeOverrides": [{"deviceSelector": {"matchLabels": {"kubernetes.io/hostname": bad}},
                                  "runtime": {"podAnnotations": {"sim.edgeai.io/crash": "true"}}}]}}))
        st = wait_phase(env, namespace, "Complete", 2, timeout=400)
        assert st["rollout"]["waves"] == 4, st["rollout"]
        assert st["rollout"].get("failedDevices") == [bad], st["rollout"]
        assert st["currentRevision"] == 2
        hist = {r["revision"]: r for r in st["revisions"]}
        assert hist[2]["outcome"] == "Succeeded"

        def settled() -> bool:
            revs = revisions_of_children(env, namespace)
            return revs == {d: (1 if d == bad else 2) for d in nodes}

        wait_for("the failed device on revision 1, the rest on 2", settled, 60, env.op)
        # Only the overridden device's Pod template carries the annotation, on the revision it failed.
        kids = env.children(namespace, "d")
        assert all("sim.edgeai.io/crash" not in (ch["metadata"].get("annotations") or {})
                   for ch in kids.values())
        rs = edgeai(env.kube, "rollout", "status", "d", "-n", namespace, "--no-watch")
        assert f"failed the gate alone, rolled back (healthGate.maxFailures): {bad}" in rs.stdout, rs.stdout
        # The rollout is over and stays so: the failed device is not sent revision 2 again.
        time.sleep(4)
        assert revisions_of_children(env, namespace)[bad] == 1
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)


def test_devices_outside_their_maintenance_window_keep_serving_until_it_opens(env: Env, namespace: str) -> None:
    """maintenanceWindows on the real plane: the devices of a site whose window is closed keep revision 1
    while the rest roll to 2 and the rollout completes; opening their window (a schedule that is open
    now) moves them without a new revision."""
    nodes, sel = fleet(env, namespace, 4)
    closed_site = sorted(nodes)[:2]
    for n in closed_site:
        env.kube.kubectl("label", "node", n, "edgeai.io/site=night-shift", "--overwrite")
    never = {"schedule": "0 0 1 1 *", "durationMinutes": 1}  # 1 January, 00:00 UTC: closed for this test
    always = {"schedule": "* * * * *", "durationMinutes": 10080}  # opens every minute, open for a week
    rollout = {"canary": 1, "healthGate": {"readySeconds": 1, "progressDeadlineSeconds": 60},
               "maintenanceWindows": {"windows": {"night-shift": never}}}
    try:
        start(env, namespace, sel, nodes, rollout)  # new devices get their first workload at once
        new_model(env, namespace, seed=2)
        st = wait_phase(env, namespace, "Complete", 2, timeout=120)
        assert st["currentRevision"] == 2
        revs = revisions_of_children(env, namespace)
        assert revs == {n: (1 if n in closed_site else 2) for n in nodes}, revs
        time.sleep(4)  # and they stay there while the window is closed
        assert revisions_of_children(env, namespace) == revs
        # Their window opens: they move to revision 2, the rollout still Complete.
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/rollout/maintenanceWindows/windows/night-shift", "value": always}]))
        wait_for("the night shift on revision 2",
                 lambda: set(revisions_of_children(env, namespace).values()) == {2}, 90, env.op)
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in nodes:
            env.kube.delete_node(n)
