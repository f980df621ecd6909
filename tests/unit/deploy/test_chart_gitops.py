"""docs/gitops/: the Argo CD Lua health checks and the Flux CEL health expressions, executed.

The Lua runs in Lua 5.1 (lupa), the dialect of Argo CD's gopher-lua; the CEL in
a CEL evaluator (common-expression-language). Objects are shaped by the
operator's own condition builder, in every state the operator reports.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_operator.core.conditions import make

ROOT = Path(__file__).resolve().parents[3]
GITOPS = ROOT / "docs" / "gitops"
KINDS = ("EdgeModel", "EdgeDevice", "InferenceDeployment")
SHA = "c" * 64


@cache
def _scripts() -> dict[str, str]:
    data = yaml.safe_load((GITOPS / "argocd-health.yaml").read_text())["data"]
    return {k.rsplit("_", 1)[1]: v for k, v in data.items() if k.startswith("resource.customizations.health.")}


def argocd_health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD computes them: the script with `obj` global, returning hs."""
    from lupa import lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(_drop_none(obj), recursive=True)
    hs = lua.execute(_scripts()[kind])
    return str(hs["status"]), str(hs["message"] or "")


def _drop_none(v: Any) -> Any:
    # JSON null becomes a missing key, as in Argo CD's conversion to Lua
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_none(x) for x in v]
    return v


@cache
def _exprs() -> dict[str, dict[str, str]]:
    ks = yaml.safe_load((GITOPS / "flux-kustomization.yaml").read_text())
    return {e["kind"]: e for e in ks["spec"]["healthCheckExprs"]}


def flux_health(kind: str, obj: dict[str, Any]) -> str:
    """InProgress / Failed / Current; exactly one expression may hold, so Flux's order cannot matter."""
    import cel

    e = _exprs()[kind]
    if "status" not in obj:
        # `status` is not even a variable yet: every expression errors, which Flux treats as
        # "not healthy yet" and keeps waiting, i.e. in progress. Errors anywhere else are bugs.
        for name in ("inProgress", "failed", "current"):
            with pytest.raises(RuntimeError, match="status"):
                cel.evaluate(e[name], obj)
        return "InProgress"
    held = [name for name in ("inProgress", "failed", "current") if cel.evaluate(e[name], obj) is True]
    assert len(held) == 1, f"{kind}: expressions {held} all hold (or none) for {obj.get('status')}"
    return {"inProgress": "InProgress", "failed": "Failed", "current": "Current"}[held[0]]


FLUX_FOR = {"Healthy": "Current", "Degraded": "Failed", "Progressing": "InProgress", "Suspended": "InProgress"}


def obj(kind: str, status: dict[str, Any] | None, generation: int = 2, **spec: Any) -> dict[str, Any]:
    o: dict[str, Any] = {"apiVersion": "edgeai.io/v1alpha1", "kind": kind,
                         "metadata": {"name": "x", "namespace": "team", "generation": generation}, "spec": spec}
    if status is not None:
        o["status"] = status
    return o


def model(status: str | bool | None, reason: str = "Verified", message: str = "", phase: str | None = None,
          observed: int = 2) -> dict[str, Any]:
    if status is None:
        return obj("EdgeModel", None)
    st: dict[str, Any] = {"observedGeneration": observed, "conditions": [
        make("Verified", status, reason, message, observed), make("Ready", status, reason, message, observed)]}
    if phase:
        st["phase"] = phase
    return obj("EdgeModel", st, source={"uri": "https://m.example/x.onnx", "sha256": SHA})


def idep(ready: bool, progressing: bool, degraded: bool, reason: str = "R", message: str = "m",
         observed: int = 2, paused: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "x"}
    if paused is not None:
        spec["rollout"] = {"paused": paused}
    st = {"observedGeneration": observed, "conditions": [
        make("Ready", ready, reason, message, observed), make("Progressing", progressing, reason, message, observed),
        make("Degraded", degraded, reason, message, observed)]}
    return obj("InferenceDeployment", st, **spec)


def device(online: bool | None, message: str = "node is Ready") -> dict[str, Any]:
    if online is None:
        return obj("EdgeDevice", None, generation=1, nodeName="edge-0")
    return obj("EdgeDevice", {"observedGeneration": 1, "online": online, "servingCount": 2, "conditions": [
        make("Online", online, "KubeletReady", message, 1), make("Ready", online, "KubeletReady", message, 1)]},
        generation=1, nodeName="edge-0")


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("new model", model(None), "Progressing", "waiting for the operator"),
    ("verifying", model("Unknown", "Verifying", "streaming and hashing https://m.example/x.onnx"),
     "Progressing", "streaming and hashing"),
    ("verified", model(True, "Verified", f"sha256 {SHA} matches (1234 bytes), signature valid"),
     "Healthy", "signature valid"),
    ("digest mismatch", model(False, "DigestMismatch", "expected c..., got d...", phase="Failed"),
     "Degraded", "DigestMismatch: expected"),
    ("bad signature", model(False, "BadSignature", "signature does not verify", phase="Failed"),
     "Degraded", "BadSignature"),
    ("unreachable, retried", model(False, "Unreachable", "connection refused", phase="Retrying"),
     "Progressing", "Unreachable: connection refused"),
    ("stale verdict", model(True, observed=1), "Progressing", "observe generation 2"),
    ("device online", device(True), "Healthy", "online, serving 2"),
    ("device offline", device(False, "Kubelet stopped posting node status."), "Degraded",
     "offline: Kubelet stopped posting"),
    ("device without status", device(None), "Progressing", "waiting for the operator"),
    ("rolled out", idep(True, False, False, "DevicesReady", "3/3 devices ready"), "Healthy", "3/3 devices ready"),
    ("rolled out, one offline", idep(True, False, True, "DevicesOffline", "2/3 devices ready, 1 offline"),
     "Healthy", "DevicesOffline"),
    ("rolling out", idep(False, True, False, "RollingOut", "1/3 devices ready"), "Progressing", "1/3 devices ready"),
    ("waiting for the model", idep(False, True, False, "ModelVerifying", "EdgeModel 'x' is being verified"),
     "Progressing", "being verified"),
    ("model failed", idep(False, False, True, "ModelNotVerified", "EdgeModel 'x': DigestMismatch"),
     "Degraded", "ModelNotVerified: EdgeModel 'x': DigestMismatch"),
    ("no suitable devices", idep(False, False, True, "NoSuitableDevices", "3 selected, none suitable"),
     "Degraded", "NoSuitableDevices"),
    ("rolled back", obj("InferenceDeployment", {"observedGeneration": 2, "conditions": [
        make("Ready", True, "DevicesReady", "5/5 devices ready", 2),
        make("Progressing", False, "RolledBack", "revision 2 failed its health gate", 2),
        make("Degraded", True, "RolloutFailed", "revision 2 failed its health gate in wave 1/3", 2)]}, model="x"),
     "Degraded", "RolloutFailed: revision 2 failed"),
    ("rolling back", obj("InferenceDeployment", {"observedGeneration": 2, "conditions": [
        make("Ready", False, "DevicesNotReady", "3/5 devices ready", 2),
        make("Progressing", True, "RollingBack", "rolling back to revision 1", 2),
        make("Degraded", True, "RolloutFailed", "revision 2 failed", 2)]}, model="x"),
     "Progressing", "rolling back to revision 1"),
    ("paused", idep(False, True, False, paused=True), "Suspended", "paused"),
    ("paused but failed", idep(False, False, True, "ModelNotVerified", "x", paused=True),
     "Degraded", "ModelNotVerified"),
    ("new generation", idep(True, False, False, observed=1), "Progressing", "observe generation 2"),
    ("deployment without status", obj("InferenceDeployment", None, model="x"), "Progressing", "waiting"),
    ("only a Ready condition yet", obj("InferenceDeployment", {"observedGeneration": 2, "conditions": [
        make("Ready", False, "DevicesNotReady", "0/2 devices ready", 2)]}, model="x"),
     "Progressing", "0/2 devices ready"),
]


@pytest.mark.parametrize(("case", "o", "want", "says"), CASES, ids=[c[0] for c in CASES])
def test_argocd_health(case: str, o: dict[str, Any], want: str, says: str) -> None:
    status, message = argocd_health(o["kind"], o)
    assert status == want, f"{case}: {status} ({message})"
    assert says in message, f"{case}: {message!r}"


@pytest.mark.parametrize(("case", "o", "want", "says"), CASES, ids=[c[0] for c in CASES])
def test_flux_health_agrees_with_argocd(case: str, o: dict[str, Any], want: str, says: str) -> None:
    assert flux_health(o["kind"], o) == FLUX_FOR[want], case


def test_every_kind_has_both_checks() -> None:
    assert set(_scripts()) == set(KINDS)
    assert set(_exprs()) == set(KINDS)
    for e in _exprs().values():
        assert e["apiVersion"] == "edgeai.io/v1alpha1"


def test_health_checks_are_keyed_as_argocd_expects() -> None:
    data = yaml.safe_load((GITOPS / "argocd-health.yaml").read_text())["data"]
    # resource.customizations.health.<group>_<kind>
    assert set(data) == {f"resource.customizations.health.edgeai.io_{k}" for k in KINDS}


def test_gitops_manifests_parse_and_point_at_the_chart() -> None:
    apps = list(yaml.safe_load_all((GITOPS / "argocd-applications.yaml").read_text()))
    chart_app = next(a for a in apps if a["metadata"]["name"] == "edgeai-operator")
    assert (ROOT / chart_app["spec"]["source"]["path"] / "Chart.yaml").exists()
    assert "ServerSideApply=true" in chart_app["spec"]["syncPolicy"]["syncOptions"]
    flux = list(yaml.safe_load_all((GITOPS / "flux-helmrelease.yaml").read_text()))
    hr = next(d for d in flux if d["kind"] == "HelmRelease")
    assert (ROOT / hr["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    assert hr["spec"]["install"]["crds"] == hr["spec"]["upgrade"]["crds"] == "CreateReplace"
    ks = yaml.safe_load((GITOPS / "flux-kustomization.yaml").read_text())
    assert (ROOT / ks["spec"]["path"] / "kustomization.yaml").exists()


def test_docs_name_every_file_they_reference() -> None:
    doc = (ROOT / "docs" / "gitops.md").read_text()
    for f in GITOPS.iterdir():
        assert f"gitops/{f.name}" in doc, f"docs/gitops.md does not mention {f.name}"
