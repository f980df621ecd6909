"""`kubectl edgeai` against the real API server: CRDs applied, objects whose status the test writes itself.

No operator runs here: the test plays the operator's part by patching the
status subresource, so each table and verdict is checked against a known state.
The plugin is run the way a user runs it, as `kubectl edgeai ...` (kubectl's
plugin discovery finds `kubectl-edgeai` on PATH).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_operator.cli.plugin_view import human_bytes
from edge_operator.testing import ModelServer, free_port
from tests.conftest import KubeHandle
from tests.runtime.test_rt_site_cache import SiteCache, fetch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHA_A = "a" * 64
SHA_B = "b" * 64


def wait_for(what: str, pred: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def crds(kube: KubeHandle) -> KubeHandle:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=edgeai-tests",
                 "-f", str(ROOT / "crds"))
    for plural in ("edgemodels", "edgedevices", "inferencedeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{plural}.edgeai.io", "--timeout=60s")
    wait_for("the kinds to be served", lambda: kube.ok("get", "edgedevices,edgemodels,inferencedeployments", "-A"))
    return kube


def plugin_env(kube: KubeHandle) -> dict[str, str]:
    kubectl_dir = str(Path(kube.kubectl_bin).parent)
    return dict(kube.env, PATH=os.pathsep.join([str(BIN), kubectl_dir, os.environ.get("PATH", "")]),
                KUBECTL_EDGEAI_POLL_SECONDS="0.3")


def edgeai(kube: KubeHandle, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`kubectl edgeai ARGS`, exactly as a user types it."""
    return subprocess.run([kube.kubectl_bin, "edgeai", *args], capture_output=True, text=True,
                          env=env or plugin_env(kube), timeout=timeout)


def set_status(kube: KubeHandle, kind: str, name: str, status: dict[str, Any], namespace: str | None = None) -> None:
    ns = ["-n", namespace] if namespace else []
    kube.kubectl("patch", kind, name, *ns, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": status}))


def get(kube: KubeHandle, kind: str, name: str, namespace: str | None = None,
        managed_fields: bool = False) -> dict[str, Any]:
    ns = ["-n", namespace] if namespace else []
    extra = ["--show-managed-fields"] if managed_fields else []
    return dict(json.loads(kube.kubectl("get", kind, name, *ns, "-o", "json", *extra).stdout))


def cond(t: str, s: bool, reason: str, message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": t, "status": "True" if s else "False", "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}


@pytest.fixture
def fleet(crds: KubeHandle, namespace: str) -> Iterator[dict[str, Any]]:
    """Two devices (one online, one not), a model and a deployment placed on both."""
    kube = crds
    tag = uuid.uuid4().hex[:6]
    devs = [f"plug-{tag}-a", f"plug-{tag}-b"]
    for d in devs:
        kube.apply([{"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeDevice",
                     "metadata": {"name": d, "labels": {"edgeai.io/test": tag}}, "spec": {"nodeName": d}}])
    kube.apply([
        {"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel",
         "metadata": {"name": "resnet", "namespace": namespace},
         "spec": {"format": "onnx", "version": "1.2.0",
                  "source": {"uri": "https://models.invalid/resnet.onnx", "sha256": SHA_A}}},
        {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
         "metadata": {"name": "det", "namespace": namespace},
         "spec": {"model": "resnet", "deviceSelector": {"matchLabels": {"edgeai.io/test": tag}}}},
    ])
    set_status(kube, "edgedevice", devs[0], {
        "online": True, "capabilities": {"arch": "arm64", "site": "site-a", "accelerators": ["npu"]},
        "serving": [{"inferenceDeployment": f"{namespace}/det", "deployment": f"det-{devs[0]}", "model": "resnet",
                     "variant": "int8", "sha256": SHA_A, "phase": "Ready"}]})
    set_status(kube, "edgedevice", devs[1], {"online": False, "capabilities": {"arch": "amd64"}})
    set_status(kube, "inferencedeployment", "det", {
        "observedGeneration": 1, "selected": 2, "placed": 2, "ready": 1, "updated": 2,
        "devices": [{"device": devs[0], "variant": "int8", "sha256": SHA_A, "phase": "Ready"},
                    {"device": devs[1], "variant": "fp32", "sha256": SHA_B, "phase": "Offline"}],
        "conditions": [cond("Ready", False, "DevicesNotReady", "1/2 devices ready, 1 offline"),
                       cond("Progressing", True, "RollingOut", "1/2 devices ready, 1 offline"),
                       cond("Degraded", True, "DevicesOffline", "1/2 devices ready, 1 offline")]}, namespace)
    try:
        yield {"kube": kube, "ns": namespace, "devices": devs, "tag": tag}
    finally:
        kube.kubectl("delete", "edgedevice", *devs, "--wait=false", check=False)


# --------------------------------------------------------------------------- fleet


def test_kubectl_finds_the_plugin(crds: KubeHandle) -> None:
    p = subprocess.run([crds.kubectl_bin, "plugin", "list"], capture_output=True, text=True,
                       env=plugin_env(crds), timeout=30)
    assert "kubectl-edgeai" in p.stdout, p.stdout + p.stderr


def test_fleet_table(fleet: dict[str, Any]) -> None:
    kube, ns, (a, b) = fleet["kube"], fleet["ns"], fleet["devices"]
    p = edgeai(kube, "fleet", "-l", f"edgeai.io/test={fleet['tag']}")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "ONLINE", "DEPLOYMENT", "MODEL", "VARIANT", "DIGEST", "PHASE"]
    assert lines[1].split() == [a, "yes", f"{ns}/det", "resnet", "int8", SHA_A[:12], "Ready"]
    # the offline device has not reported; the deployment's status fills the row in
    assert lines[2].split() == [b, "no", f"{ns}/det", "resnet", "fp32", SHA_B[:12], "Offline"]
    assert len(lines) == 3
    assert "2 device(s), 1 online" in p.stderr


def test_fleet_json_and_namespace_filter(fleet: dict[str, Any]) -> None:
    kube = fleet["kube"]
    sel = ["-l", f"edgeai.io/test={fleet['tag']}"]
    rows = json.loads(edgeai(kube, "fleet", *sel, "-o", "json").stdout)
    assert {r["device"]: r["sha256"] for r in rows} == dict(zip(fleet["devices"], [SHA_A, SHA_B], strict=True))
    other = edgeai(kube, "fleet", *sel, "-n", "default", "--serving-only")
    assert other.returncode == 0 and "No placements found." in other.stdout
    wide = edgeai(kube, "fleet", *sel, "-o", "wide").stdout.splitlines()
    assert wide[1].split()[-3:] == ["site-a", "arm64", "npu"]


# --------------------------------------------------------------------------- rollout


def test_rollout_pause_and_resume_write_the_spec(fleet: dict[str, Any]) -> None:
    kube, ns = fleet["kube"], fleet["ns"]
    p = edgeai(kube, "rollout", "pause", "det", "-n", ns)
    assert p.returncode == 0, p.stderr
    assert "paused" in p.stdout
    obj = get(kube, "inferencedeployment", "det", ns, managed_fields=True)
    assert obj["spec"]["rollout"]["paused"] is True
    # the plugin is a field manager like any other: GitOps tools see who changed it
    managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
    assert "kubectl-edgeai" in managers
    again = edgeai(kube, "rollout", "pause", "det", "-n", ns)
    assert again.returncode == 0 and "already paused" in again.stdout
    # until the operator observes the new generation, status says so rather than guess
    st = edgeai(kube, "rollout", "status", "det", "-n", ns, "--no-watch")
    assert st.returncode == 1 and "waiting for the operator to observe generation 2" in st.stdout
    set_status(kube, "inferencedeployment", "det", {"observedGeneration": obj["metadata"]["generation"]}, ns)
    st = edgeai(kube, "rollout", "status", "det", "-n", ns, "--timeout", "30s")
    assert st.returncode == 1 and "is paused" in st.stdout  # a paused rollout ends the watch
    p = edgeai(kube, "rollout", "resume", "det", "-n", ns)
    assert p.returncode == 0 and "resumed" in p.stdout
    assert get(kube, "inferencedeployment", "det", ns)["spec"]["rollout"]["paused"] is False


def test_rollout_undo_sets_the_rollback_revision(fleet: dict[str, Any]) -> None:
    kube, ns = fleet["kube"], fleet["ns"]
    p = edgeai(kube, "rollout", "undo", "det", "-n", ns, "--to-revision", "3")
    assert p.returncode == 0, p.stderr
    rb = get(kube, "inferencedeployment", "det", ns)["spec"]["rollout"]["rollbackTo"]
    assert rb["revision"] == 3 and rb["requestedAt"].endswith("Z")  # a repeated undo is a new request
    assert "rolling back to revision 3" in p.stdout
    bad = edgeai(kube, "rollout", "undo", "det", "-n", ns, "--to-revision", "0")
    assert bad.returncode == 1 and "--to-revision must be" in bad.stderr
    # no revision history in status yet: the plugin says so instead of guessing
    none = edgeai(kube, "rollout", "undo", "det", "-n", ns)
    assert none.returncode == 1 and "no earlier revision" in none.stderr


def test_rollout_status_once_shows_conditions_and_devices(fleet: dict[str, Any]) -> None:
    kube, ns, b = fleet["kube"], fleet["ns"], fleet["devices"][1]
    p = edgeai(kube, "rollout", "status", "det", "-n", ns, "--no-watch")
    assert p.returncode == 1  # not complete yet
    assert "waiting for 'det' to roll out (2 selected, 2 placed, 2 updated, 1 ready)" in p.stdout
    assert any(ln.split()[:3] == ["Degraded", "True", "DevicesOffline"] for ln in p.stdout.splitlines())
    assert any(ln.split() == [b, "fp32", SHA_B[:12], "Offline"] for ln in p.stdout.splitlines())


def test_rollout_status_watches_until_complete(fleet: dict[str, Any]) -> None:
    kube, ns = fleet["kube"], fleet["ns"]
    env = plugin_env(kube)
    proc = subprocess.Popen([kube.kubectl_bin, "edgeai", "rollout", "status", "det", "-n", ns, "--timeout", "120s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        # The rollout completes only when the test says so, and only after the plugin has shown it in
        # progress: no race with the plugin's start-up, however slow the machine.
        first = proc.stdout.readline()
        assert first.startswith("waiting for 'det' to roll out"), first
        assert proc.poll() is None, "returned before the rollout completed"
        done = [cond("Ready", True, "DevicesReady", "2/2 devices ready"),
                cond("Progressing", False, "Complete", "2/2 devices ready"),
                cond("Degraded", False, "Healthy", "2/2 devices ready")]
        set_status(kube, "inferencedeployment", "det", {"ready": 2, "conditions": done}, ns)
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = [first.rstrip("\n"), *rest.splitlines()]
    assert lines[-1] == "'det' successfully rolled out (2 selected, 2 placed, 2 updated, 2 ready)"


def test_rollout_status_fails_fast_on_a_failed_rollout_and_times_out(fleet: dict[str, Any]) -> None:
    kube, ns = fleet["kube"], fleet["ns"]
    t0 = time.monotonic()
    p = edgeai(kube, "rollout", "status", "det", "-n", ns, "--timeout", "2s")
    assert p.returncode == 1 and "timed out after 2s" in p.stderr
    assert time.monotonic() - t0 < 90  # bounded (the 2 s timeout works), not a speed check
    set_status(kube, "inferencedeployment", "det", {"conditions": [
        cond("Ready", False, "ModelNotVerified", "x"), cond("Progressing", False, "ModelNotVerified", "x"),
        cond("Degraded", True, "ModelNotVerified", "EdgeModel 'resnet': DigestMismatch")]}, ns)
    p = edgeai(kube, "rollout", "status", "det", "-n", ns)
    assert p.returncode == 1
    assert "rollout of 'det' failed: ModelNotVerified: EdgeModel 'resnet': DigestMismatch" in p.stdout


# --------------------------------------------------------------------------- model verify


def test_model_verify_shows_the_verdict_and_requests_a_new_check(fleet: dict[str, Any]) -> None:
    kube, ns = fleet["kube"], fleet["ns"]
    set_status(kube, "edgemodel", "resnet", {
        "observedGeneration": 1, "sha256": SHA_B, "size": 4096,
        "conditions": [cond("Verified", False, "DigestMismatch", f"expected {SHA_A}, got {SHA_B}")]}, ns)
    show = edgeai(kube, "model", "verify", "resnet", "-n", ns, "--no-trigger")
    assert show.returncode == 1  # not verified
    assert f"expected sha256  {SHA_A}" in show.stdout and f"seen sha256      {SHA_B}" in show.stdout
    assert "Verified         False (DigestMismatch)" in show.stdout
    assert "edgeai.io/reverify" not in get(kube, "edgemodel", "resnet", ns)["metadata"].get("annotations", {})

    proc = subprocess.Popen([kube.kubectl_bin, "edgeai", "model", "verify", "resnet", "-n", ns, "--wait",
                             "--timeout", "60s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=plugin_env(kube))
    try:
        stamp = wait_for("the reverify annotation", lambda: get(kube, "edgemodel", "resnet", ns)["metadata"].get(
            "annotations", {}).get("edgeai.io/reverify"))
        assert proc.poll() is None, "--wait returned before the operator answered"
        # the operator's part: verify again, write the verdict
        time.sleep(1.1)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        set_status(kube, "edgemodel", "resnet", {
            "sha256": SHA_A, "verifiedAt": now,
            "conditions": [dict(cond("Verified", True, "Verified", "sha256 matches"), lastTransitionTime=now)]}, ns)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"re-verification requested (edgeai.io/reverify={stamp})" in out
    assert out.rstrip().splitlines()[-2:] == ["Verified         True (Verified)", "message          sha256 matches"]


# --------------------------------------------------------------------------- errors


def test_not_found_names_the_object_and_namespace(crds: KubeHandle, namespace: str) -> None:
    p = edgeai(crds, "rollout", "status", "nope", "-n", namespace)
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: InferenceDeployment 'nope' not found in namespace '{namespace}'"
    p = edgeai(crds, "model", "verify", "nope", "-n", namespace)
    assert p.stderr.strip() == f"error: EdgeModel 'nope' not found in namespace '{namespace}'"


def test_no_cluster_and_bad_kubeconfig_are_clear(crds: KubeHandle, tmp_path: Path) -> None:
    cfg = json.loads(Path(crds.kubeconfig).read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens on the discard port
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(json.dumps(cfg))
    t0 = time.monotonic()
    p = edgeai(crds, "fleet", "--kubeconfig", str(dead))
    assert p.returncode == 1
    assert p.stderr.startswith("error: cannot reach the cluster at https://127.0.0.1:9")
    assert time.monotonic() - t0 < 60
    missing = edgeai(crds, "fleet", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no usable cluster configuration" in missing.stderr
    ctx = edgeai(crds, "fleet", "--context", "no-such-context")
    assert ctx.returncode == 1 and "no-such-context" in ctx.stderr


def test_context_namespace_is_the_default(crds: KubeHandle, namespace: str, tmp_path: Path) -> None:
    cfg = json.loads(Path(crds.kubeconfig).read_text())
    base = cfg["contexts"][0]
    cfg["contexts"].append({"name": "team", "context": dict(base["context"], namespace=namespace)})
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    p = edgeai(crds, "rollout", "status", "nope", "--kubeconfig", str(path), "--context", "team")
    assert f"not found in namespace '{namespace}'" in p.stderr
    # flags work before the subcommand too, as kubectl's do
    p = edgeai(crds, "--kubeconfig", str(path), "--context", "team", "-n", "kube-system", "rollout", "status", "x")
    assert "not found in namespace 'kube-system'" in p.stderr


def test_forbidden_is_reported_with_the_identity(crds: KubeHandle, namespace: str, tmp_path: Path) -> None:
    crds.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = crds.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    cfg = json.loads(Path(crds.kubeconfig).read_text())
    cfg["users"] = [{"name": "nobody", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "nobody"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))
    p = edgeai(crds, "fleet", "--kubeconfig", str(path))
    assert p.returncode == 1
    assert "forbidden to list edgedevices" in p.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in p.stderr


def test_usage_errors(crds: KubeHandle) -> None:
    p = edgeai(crds, "rollout", "restart", "x")
    assert p.returncode == 2 and "invalid choice: 'restart'" in p.stderr
    p = edgeai(crds, "rollout", "status", "x", "--timeout", "soon")
    assert p.returncode == 2 and "invalid duration 'soon'" in p.stderr


# --------------------------------------------------------------------------- cache status


@pytest.fixture
def cache_fleet(crds: KubeHandle, namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An InferenceDeployment with spec.siteCache whose status lists four sites: `site-a`'s cache a real
    `edge-runtime site-cache` (on every address of this machine: the API server's Pod proxy needs one that
    is not loopback), that two devices (`edge-runtime fetch`, real processes) fetched a real model
    through; `site-b`'s endpoint refuses connections; `site-c`'s accepts and never answers; `site-d`
    has no gateway."""

    kube = crds
    (tmp_path / "models").mkdir()
    blob = os.urandom(300_000)
    (tmp_path / "models" / "m.onnx").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    cache = SiteCache(tmp_path, "--host", "0.0.0.0")
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    refused = free_port()
    try:
        with ModelServer(tmp_path / "models") as origin:
            kube.apply([{"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
                         "metadata": {"name": "det", "namespace": namespace},
                         "spec": {"model": "resnet", "deviceSelector": {"matchLabels": {"x": "y"}}, "siteCache": {}}}])
            set_status(kube, "inferencedeployment", "det", {"siteCaches": [
                {"site": "site-a", "node": "gw-a", "endpoint": cache.url, "ready": True},
                {"site": "site-b", "node": "gw-b", "endpoint": f"http://127.0.0.1:{refused}", "ready": True},
                {"site": "site-c", "node": "gw-c", "endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}",
                 "ready": True},
                {"site": "site-d", "ready": False,
                 "message": "no node labelled edgeai.io/site-gateway=true with edgeai.io/site=site-d"},
            ]}, namespace)

            def device_fetch(i: int) -> None:
                p = fetch(tmp_path / f"device-{i}", origin.url("m.onnx"), "--mirror", cache.url, digest=sha)
                assert p.returncode == 0, p.stderr
                assert (tmp_path / f"device-{i}" / "sha256" / sha).read_bytes() == blob

            yield {"kube": kube, "ns": namespace, "cache": cache, "size": len(blob), "fetch": device_fetch,
                   "refused": refused}
    finally:
        silent.close()
        cache.stop()


def _row(out: str, site: str) -> list[str]:
    return next(ln.split() for ln in out.splitlines() if ln.split()[:1] == [site])


def test_cache_status_shows_each_caches_numbers_and_why_one_cannot_be_read(cache_fleet: dict[str, Any]) -> None:
    kube, ns, size = cache_fleet["kube"], cache_fleet["ns"], cache_fleet["size"]
    cache_fleet["fetch"](0)  # the first device of the site: a miss, the cache takes it from the origin
    t0 = time.monotonic()
    p = edgeai(kube, "cache", "status", "det", "-n", ns, "--timeout", "5s")
    # The silent cache costs its timeout, not a hang (bounded, not a speed check). 5 s, not 1: on a busy
    # machine the real cache must still answer within it.
    assert time.monotonic() - t0 < 60
    assert p.returncode == 1, p.stderr  # not every cache could be read
    assert "Traceback" not in p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["SITE", "NODE", "READY", "ENTRIES", "HELD/MAX", "HITS", "MISSES", "HIT-RATIO",
                                "SERVED", "FROM-ORIGIN", "ORIGIN-FAILURES", "NOTE"]
    held = human_bytes(size)
    assert _row(p.stdout, "site-a") == ["site-a", "gw-a", "yes", "1", f"{held}/10GiB", "0", "1", "0.0%", held, held,
                                        "0"]
    b = " ".join(_row(p.stdout, "site-b"))
    assert b.startswith("site-b gw-b yes - - - - - - - -") and "Connection refused" in b
    assert "timed out" in " ".join(_row(p.stdout, "site-c"))
    assert " ".join(_row(p.stdout, "site-d")).endswith("with edgeai.io/site=site-d")
    assert "4 site(s), 1 of 3 cache(s) read" in p.stderr

    cache_fleet["fetch"](1)  # every later device: a hit, the origin is not asked again
    j = edgeai(kube, "cache", "status", "det", "-n", ns, "--timeout", "5s", "-o", "json")
    rows = {r["site"]: r for r in json.loads(j.stdout)}
    st = rows["site-a"]["status"]
    assert (st["hits"], st["misses"], st["hitRatio"], st["entries"]) == (1, 1, 0.5, 1)
    assert (st["bytesServed"], st["bytesFromOrigin"], st["originFailures"]) == (2 * size, size, 0)
    assert rows["site-a"]["via"] == "direct" and rows["site-a"]["error"] is None
    assert rows["site-b"]["status"] is None and "Connection refused" in rows["site-b"]["error"]
    assert rows["site-d"]["via"] is None and rows["site-d"]["error"] is None
    assert _row(edgeai(kube, "cache", "status", "det", "-n", ns, "--timeout", "5s").stdout, "site-a")[5:8] == [
        "1", "1", "50.0%"]


def _global_address() -> str | None:
    """This machine's address on its default route: one the API server may proxy to (never loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only asks the routing table
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") else addr


def test_cache_status_through_the_api_servers_pod_proxy(cache_fleet: dict[str, Any]) -> None:
    """What the API server's Pod proxy answers: the operator's cache Pods are found by their labels; the
    Pods here are objects whose status the test writes (no kubelet runs them) with this machine's
    address, where the real cache listens."""
    kube, ns = cache_fleet["kube"], cache_fleet["ns"]
    ip = _global_address()
    if ip is None:
        pytest.skip("no non-loopback address: the API server proxies to no loopback address")
    cache_fleet["fetch"](0)
    node = f"gw-{uuid.uuid4().hex[:6]}"  # a Node no kubelet (and no kwok) manages: nothing rewrites the Pods
    kube.apply([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}])
    try:
        for site, port in (("site-a", cache_fleet["cache"].port), ("site-b", cache_fleet["refused"])):
            name = f"det-site-cache-{site}"
            kube.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": ns, "labels": {"edgeai.io/site-cache": "det", "edgeai.io/site": site}},
                "spec": {"nodeName": node, "hostNetwork": True, "containers": [{
                    "name": "site-cache", "image": "edge-runtime", "ports": [
                        {"name": "site-cache", "containerPort": port, "hostPort": port}]}]}}])
            set_status(kube, "pod", name, {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                                           "conditions": [{"type": "Ready", "status": "True"}]}, ns)
        p = edgeai(kube, "cache", "status", "det", "-n", ns, "--via-apiserver", "--timeout", "10s", "-o", "json")
        assert "Traceback" not in p.stderr
        rows = {r["site"]: r for r in json.loads(p.stdout)}
        assert rows["site-a"]["via"] == "apiserver" and rows["site-a"]["error"] is None, rows["site-a"]
        assert (rows["site-a"]["status"]["misses"], rows["site-a"]["status"]["bytesServed"]) == (1, cache_fleet["size"])
        assert rows["site-b"]["error"].startswith("pod det-site-cache-site-b: HTTP 5")  # the proxy's dial failed
        assert rows["site-c"]["error"] == "no running cache Pod"
        assert rows["site-d"]["via"] is None  # no gateway, nothing to ask
        assert p.returncode == 1
    finally:
        kube.kubectl("delete", "pod", "--all", "-n", ns, "--grace-period=0", "--force", "--wait=false", check=False)
        kube.kubectl("delete", "node", node, "--wait=false", check=False)
