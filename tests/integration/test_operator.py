"""The operator on a real API server with kwok edge nodes: every behaviour of issue 5.

One operator subprocess (python -m edge_operator, as its Deployment runs it) serves
the module; models are real ONNX files served over HTTP on 127.0.0.1. Tests select
devices by hostname or by labels they add, so nodes other tests add never change
their placement.
"""

from __future__ import annotations

import collections
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_operator.core import rbac
from edge_operator.testing import ModelServer, OperatorProcess
from edge_runtime.artifacts import integrity
from edge_runtime.models_zoo import build_cnn, build_tabular
from tests.conftest import KubeHandle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLEET = ["edge-0", "edge-1", "edge-2"]  # amd64/none, arm64/npu, amd64/gpu (hack/plane.py profiles)
CPU_IMAGE, CUDA_IMAGE = "registry.test/edge-runtime:1", "registry.test/edge-runtime-cuda:1"
BY_HOST = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": FLEET}]}


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 60, op: OperatorProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    tail = f"\noperator log:\n{op.log_tail()}" if op else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){tail}")


class Env:
    def __init__(self, kube: KubeHandle, op: OperatorProcess, server: ModelServer, models: Path) -> None:
        self.kube, self.op, self.server, self.models = kube, op, server, models

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": list(objs)}))

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
        p = self.kube.kubectl(*args, check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def items(self, kind: str, ns: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-n", ns] if ns else ["-A"]) + (["-l", selector] if selector else [])
        return json.loads(self.kube.kubectl(*args).stdout)["items"]  # type: ignore[no-any-return]

    def children(self, ns: str, idep: str) -> dict[str, dict[str, Any]]:
        """Each device's model server Pod (the newest, during a surge), not one being deleted."""
        items = [p for p in self.items("pods", ns, f"edgeai.io/inference-deployment={idep}")
                 if not p["metadata"].get("deletionTimestamp")
                 and any(r.get("kind") == "InferenceDeployment" for r in p["metadata"].get("ownerReferences") or [])]
        items.sort(key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))
        return {p["metadata"]["annotations"]["edgeai.io/device"]: p for p in items}

    def cond(self, obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return c  # type: ignore[no-any-return]
        return {}

    def wait_cond(self, kind: str, name: str, ns: str | None, type_: str, status: str,
                  reason: str | None = None, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name, ns)
            c = self.cond(obj, type_)
            ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
            if ok and obj is not None and (obj.get("status") or {}).get("observedGeneration") is not None:
                ok = obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            return obj if ok else None

        return wait_for(f"{kind}/{name} {type_}={status} {reason or ''}", check, timeout, self.op)  # type: ignore[no-any-return]

    # --- objects ---------------------------------------------------------------------------

    def model_file(self, name: str, seed: int = 0) -> tuple[str, str, int]:
        path = build_tabular(self.models / name, seed=seed)
        d = integrity.hash_file(path)
        return self.server.url(name), d.sha256, d.size


def edge_model(name: str, ns: str, uri: str, sha: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": name, "namespace": ns},
            "spec": {"version": "1.0.0", "source": {"uri": uri, "sha256": sha}, **spec}}


def idep(name: str, ns: str, model: str, selector: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": model, "deviceSelector": selector or BY_HOST, **spec}}


@pytest.fixture(scope="module")
def env(kube: KubeHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
    lease_ns = f"edgeai-op-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", lease_ns)
    tmp = tmp_path_factory.mktemp("operator")
    with ModelServer(tmp / "models") as server:
        op = OperatorProcess(kube.kubeconfig, tmp / "operator.log", namespace=lease_ns, identity="op-a",
                             env={"EDGEAI_RESYNC_SECONDS": "15", "EDGEAI_HEARTBEAT_RESOLUTION_SECONDS": "30",
                                  # GPU devices get the fp16 build only with a cuda-family image (kwok never
                                  # pulls it); openvino, rocm, qnn and cann have none: their devices get the
                                  # CPU build in the cpu image.
                                  "EDGEAI_RUNTIME_IMAGE": CPU_IMAGE, "EDGEAI_RUNTIME_IMAGE_CUDA": CUDA_IMAGE})
        op.start()
        try:
            op.wait_ready()
            yield Env(kube, op, server, tmp / "models")
        finally:
            op.stop()
            kube.kubectl("delete", "namespace", lease_ns, "--wait=false", check=False)


# ------------------------------------------------------------------------------ schema


def test_schema_rejects_typos_with_the_field_named(env: Env, namespace: str) -> None:
    sha = "a" * 64
    bad = [
        (edge_model("m1", namespace, "ftp://x/m.onnx", sha), "spec.source.uri"),
        (edge_model("m2", namespace, "https://x/m.onnx", "ABC"), "spec.source.sha256"),
        (edge_model("m3", namespace, "https://x/m.onnx", sha, requirements={"minMemory": "12 GB"}),
         "spec.requirements.minMemory"),
        (edge_model("m4", namespace, "https://x/m.onnx", sha, variants=[
            {"name": "default", "precision": "int8", "uri": "https://x/i", "sha256": "b" * 64,
             "accelerators": ["npu"]}]), "'default' names spec.source"),
        (edge_model("m5", namespace, "https://x/m.onnx", sha, variants=[
            {"name": "i8", "precision": "int8", "uri": "https://x/i", "sha256": "b" * 64, "accelerators": ["npu"],
             "signature": "c2ln"}]), "spec.variants[].signature needs spec.signature (format digest)"),
        (edge_model("m7", namespace, "https://x/m.onnx", sha, signature={"format": "openssf", "bundle": "{}"}),
         "format openssf needs bundle and exactly one of publicKeySecretRef or certificateChainSecretRef"),
        (edge_model("m8", namespace, "https://x/m.onnx", sha, signature={
            "format": "digest", "value": "c2ln", "publicKeySecretRef": {"name": "k"}, "bundle": "{}"}),
         "format digest needs publicKeySecretRef and value"),
        (edge_model("m6", namespace, "https://x/m.onnx", sha, variants=[
            {"name": "i8", "precision": "int4", "uri": "https://x/i", "sha256": "b" * 64,
             "accelerators": ["npu"]}]), "spec.variants[0].precision"),
        (idep("d1", namespace, "m", {"matchExpressions": [{"key": "a", "operator": "In"}]}),
         "values must be non-empty for In"),
        (idep("d2", namespace, "m", runtime={"maxBatchDelayMs": 5}), "maxBatchDelayMs only applies"),
        (idep("d3", namespace, "m", runtime={"resources": {"requests": {"memory": "2Gi"},
                                                           "limits": {"memory": "1Gi"}}}),
         "each limit must be at least the matching request"),
        (idep("d4", namespace, "m", fallback={"url": "https://cloud/v2", "confidenceThreshold": 1.5}),
         "spec.fallback.confidenceThreshold"),
        (idep("d5", namespace, "Not_A_Name"), "spec.model"),
        (idep("d6", namespace, "m", runtime={"grpcPort": 8080}), "grpcPort must differ from the REST port 8080"),
        (idep("d7", namespace, "m", runtime={"grpcPort": 80}), "spec.runtime.grpcPort"),
        (idep("d8", namespace, "m", runtime={"executionProviders": [{"name": "CUDA"}, {"name": "CUDA"}]}),
         "each provider may be named once"),
        (idep("d9", namespace, "m", runtime={"executionProviders": [{"name": "Vulkan"}]}),
         "spec.runtime.executionProviders[0].name"),
        (idep("d10", namespace, "m", rollout={"waves": [2], "ramp": {"factor": 2}}),
         "waves and ramp are two ways to size the waves: set one of them"),
        (idep("d11", namespace, "m", rollout={"ramp": {"factor": 1}}), "spec.rollout.ramp.factor"),
        (idep("d12", namespace, "m", rollout={"healthGate": {"maxFailures": "50"}}),
         "spec.rollout.healthGate.maxFailures"),
        (idep("d13", namespace, "m", runtimeOverrides=[{"deviceSelector": {}, "runtime": {"grpcPort": 9000}}]),
         "spec.runtimeOverrides[0].runtime.grpcPort"),
        (idep("d14", namespace, "m", runtimeOverrides=[{"runtime": {"threads": 2}}]),
         "spec.runtimeOverrides[0].deviceSelector"),
        (idep("d15", namespace, "m", rollout={"maintenanceWindows": {"windows": {"a": {"schedule": "0 2 * * *"}}}}),
         "spec.rollout.maintenanceWindows.windows.a.durationMinutes"),
        (edge_model("m9", namespace, "https://x/m.onnx", sha, qualityProfile={
            "uri": "https://x/q.json", "sha256": "c" * 64, "signature": "c2ln"}),
         "spec.qualityProfile.signature needs spec.signature (format digest)"),
        (edge_model("m10", namespace, "https://x/m.onnx", sha, qualityProfile={"uri": "https://x/q.json",
                                                                              "sha256": "c" * 64},
                    signature={"value": "c2ln", "publicKeySecretRef": {"name": "k"}}),
         "spec.qualityProfile.signature is required when the builds are signed with format digest"),
        (edge_model("m11", namespace, "https://x/m.onnx", sha, qualityProfile={
            "uri": "https://x/q.json", "sha256": "c" * 64, "size": 2 << 20}), "spec.qualityProfile.size"),
        (idep("d20", namespace, "m", rollout={"healthGate": {"quality": {"minRequests": 10}}}),
         "healthGate.quality needs at least one threshold"),
        (idep("d21", namespace, "m", rollout={"healthGate": {"quality": {"maxPSI": 0}}}),
         "spec.rollout.healthGate.quality.maxPSI"),
        (idep("d23", namespace, "m", rollout={"healthGate": {"quality": {"maxPSIPrevious": 0}}}),
         "spec.rollout.healthGate.quality.maxPSIPrevious in body should be greater than 0"),
        (idep("d22", namespace, "m", rollout={"healthGate": {"quality": {"minMeanConfidence": 0.5,
                                                                         "onInsufficientTraffic": "Later"}}}),
         "spec.rollout.healthGate.quality.onInsufficientTraffic"),
    ]
    for obj, expect in bad:
        p = env.kube.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
        assert p.returncode != 0, f"{obj['metadata']['name']} was accepted"
        assert expect in p.stderr, f"{obj['metadata']['name']}: {p.stderr}"
    # A good one of each passes, and `kubectl get edgeai` lists all three kinds by category.
    env.apply(edge_model("ok", namespace, "https://x/m.onnx", sha, requirements={"minMemory": "512Mi"}),
              idep("ok", namespace, "ok", runtime={"maxBatchSize": 8, "maxBatchDelayMs": 5}),
              edge_model("ok-openssf", namespace, "https://x/m.onnx", sha, signature={
                  "format": "openssf", "bundle": "{}", "certificateChainSecretRef": {"name": "roots"}}),
              idep("ok-providers", namespace, "ok", runtime={
                  "executionProviders": [{"name": "TensorRT", "options": {"trt_fp16_enable": "true"}},
                                         {"name": "CUDA"}], "requireAccelerator": True}),
              idep("ok-policies", namespace, "ok", rollout={"canary": 1, "ramp": {"initial": "5%", "factor": 3},
                                                            "healthGate": {"maxFailures": "10%"},
                                                            "maintenanceWindows": {"windows": {"*": {
                                                                "schedule": "0 2 * * *", "durationMinutes": 60,
                                                                "timeZone": "Europe/Berlin"}}}},
                   runtimeOverrides=[{"deviceSelector": {"matchLabels": {"edgeai.io/site": "slow"}},
                                      "runtime": {"maxLatencyMs": 400, "podAnnotations": {"a": "b"}}}]))
    out = env.kube.kubectl("get", "edgeai", "-n", namespace).stdout
    assert "edgemodel.edgeai.io/ok" in out and "inferencedeployment.edgeai.io/ok" in out
    assert "edgedevice.edgeai.io/edge-0" in out
    assert "ok" in env.kube.kubectl("get", "em,idep", "-n", namespace, "-o", "name").stdout


# ------------------------------------------------------------------------------ devices


def test_devices_discovered_with_capabilities_and_overrides(env: Env) -> None:
    def fleet() -> dict[str, dict[str, Any]] | None:
        items = {d["metadata"]["name"]: d for d in env.items("edgedevices")}
        return items if all(n in items and (items[n].get("status") or {}).get("online") for n in FLEET) else None

    devs = wait_for("EdgeDevices for the fleet", fleet, 30, env.op)
    caps = {n: devs[n]["status"]["capabilities"] for n in FLEET}
    assert caps["edge-0"]["arch"] == "amd64" and caps["edge-0"]["accelerators"] == ["cpu"]
    assert caps["edge-1"]["arch"] == "arm64" and caps["edge-1"]["accelerators"] == ["cpu", "npu"]
    assert caps["edge-2"]["accelerators"] == ["cpu", "gpu"] and caps["edge-2"]["site"] == "site-b"
    assert caps["edge-0"]["memory"] == "8Gi"
    assert devs["edge-0"]["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert env.cond(devs["edge-0"], "Online")["status"] == "True"
    assert devs["edge-0"]["status"].get("lastHeartbeat")


def test_new_node_discovered_removed_node_takes_device_and_workload(env: Env, namespace: str) -> None:
    node = f"edge-n{uuid.uuid4().hex[:5]}"
    env.kube.add_edge_nodes([node], labels={"edgeai.io/test": namespace})
    wait_for("device discovered", lambda: (env.get("edgedevice", node) or {}).get("status", {}).get("online"),
             45, env.op)
    # A hand override of a capability wins over discovery.
    env.kube.kubectl("patch", "edgedevice", node, "--type=merge", "-p",
                     json.dumps({"spec": {"capabilities": {"accelerators": ["vpu"], "memory": "2Gi"}}}))
    wait_for("override in status", lambda: (env.get("edgedevice", node) or {}).get("status", {}).get(
        "capabilities", {}).get("accelerators") == ["cpu", "vpu"], 30, env.op)

    url, sha, _ = env.model_file(f"{namespace}-m.onnx")
    env.apply(edge_model("m", namespace, url, sha),
              idep("d", namespace, "m", {"matchLabels": {"edgeai.io/test": namespace}}))
    env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)
    assert list(env.children(namespace, "d")) == [node]

    env.kube.delete_node(node)
    wait_for("device removed with its node", lambda: env.get("edgedevice", node) is None, 60, env.op)
    wait_for("workload of the removed device deleted", lambda: not env.children(namespace, "d"), 60, env.op)
    obj = env.wait_cond("idep", "d", namespace, "Ready", "False", "NoMatchingDevices", timeout=60)
    assert obj["status"]["placed"] == 0


# ------------------------------------------------------------------------------ placement


def test_verified_model_placed_on_matching_devices_with_the_right_build(env: Env, namespace: str) -> None:
    url, sha, size = env.model_file(f"{namespace}-base.onnx", seed=0)
    url8, sha8, _ = env.model_file(f"{namespace}-int8.onnx", seed=1)
    url16, sha16, _ = env.model_file(f"{namespace}-fp16.onnx", seed=2)
    key = integrity.generate_private_key("ed25519")
    env.kube.kubectl("create", "secret", "generic", "model-key", "-n", namespace,
                     f"--from-literal=public.pem={integrity.public_key_pem(key).decode()}")
    sig = {"publicKeySecretRef": {"name": "model-key"}, "value": integrity.sign_digest(key, sha)}
    model = edge_model("detector", namespace, url, sha, signature=sig,
                       variants=[
                           {"name": "int8", "precision": "int8", "uri": url8, "sha256": sha8, "accelerators": ["npu"],
                            "signature": integrity.sign_digest(key, sha8)},
                           {"name": "fp16", "precision": "fp16", "uri": url16, "sha256": sha16,
                            "accelerators": ["gpu"], "signature": integrity.sign_digest(key, sha16)}],
                       requirements={"minMemory": "1Gi"})
    env.apply(model, idep("detector", namespace, "detector",
                          runtime={"threads": 2, "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}))
    m = env.wait_cond("em", "detector", namespace, "Verified", "True")
    st = m["status"]
    assert st["sha256"] == sha and st["size"] == size and st["phase"] == "Verified"
    assert st["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert st["outputs"][0]["datatype"] == "FP32"
    assert {v["name"]: v["verified"] for v in st["variants"]} == {"int8": True, "fp16": True}
    assert "signature valid" in env.cond(m, "Verified")["message"]

    env.kube.kubectl("wait", "--for=condition=Ready", "idep/detector", "-n", namespace, "--timeout=90s")
    obj = env.get("idep", "detector", namespace)
    assert obj is not None
    rows = {r["device"]: r for r in obj["status"]["devices"]}
    assert {d: r["variant"] for d, r in rows.items()} == {"edge-0": "default", "edge-1": "int8", "edge-2": "fp16"}
    assert rows["edge-1"]["sha256"] == sha8 and all(r["phase"] == "Ready" for r in rows.values())
    assert obj["status"]["placed"] == 3 and obj["status"]["ready"] == 3
    assert env.cond(obj, "Degraded")["status"] == "False"

    kids = env.children(namespace, "detector")
    d1 = kids["edge-1"]
    tpl = d1  # the Pod itself
    assert tpl["metadata"]["annotations"]["edgeai.io/model-sha256"] == sha8
    assert d1["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert tpl["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["edge-1"]
    init_args = next(x for x in tpl["spec"]["initContainers"] if x["name"] == "fetch")["args"]
    assert init_args[:6] == ["fetch", url8, "--sha256", sha8, "--cache", "/var/lib/edgeai/models"]
    assert "--signature" in init_args
    pods = env.items("pods", namespace, "edgeai.io/inference-deployment=detector")
    assert sorted(p["spec"]["nodeName"] for p in pods) == FLEET

    want = [{"inferenceDeployment": f"{namespace}/detector", "deployment": d1["metadata"]["name"],
             "model": "detector", "variant": "int8", "sha256": sha8, "phase": "Ready"}]

    def serving() -> list[dict[str, Any]]:
        rows = ((env.get("edgedevice", "edge-1") or {}).get("status") or {}).get("serving") or []
        return [r for r in rows if r["inferenceDeployment"] == f"{namespace}/detector"]

    # What a device serves is written coalesced (held up to 30 s), after the deployment is Ready.
    wait_for("edge-1 lists what it serves", lambda: serving() == want, 90, env.op)


def _containers(child: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """A workload's server container, and the images all of its containers run."""
    pod = child["spec"]
    (server,) = pod["containers"]
    return server, {c["image"] for c in (*pod["initContainers"], *pod["containers"])}


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_accelerators_get_their_build_family_image_device_and_providers_or_the_cpu_and_why(
        env: Env, namespace: str) -> None:
    """A device-plugin GPU gets the fp16 build in the cuda image with one nvidia.com/gpu and the CUDA list;
    an Ascend NPU that no listed provider drives gets the CPU build in the cpu image and the reason; so does an
    Intel GPU whose provider (OpenVINO, the default) has no runtime image configured."""
    tag = uuid.uuid4().hex[:5]
    gpu, npu, igpu = f"acc-{tag}-gpu", f"acc-{tag}-npu", f"acc-{tag}-igpu"
    labels = {"edgeai.io/test": namespace}
    for node, resource in ((gpu, "nvidia.com/gpu"), (npu, "huawei.com/Ascend310"), (igpu, "gpu.intel.com/i915")):
        env.kube.add_edge_nodes([node], labels=labels, allocatable={resource: "1"})
    try:
        url, sha, _ = env.model_file(f"{namespace}-base.onnx", seed=0)
        url8, sha8, _ = env.model_file(f"{namespace}-int8.onnx", seed=1)
        url16, sha16, _ = env.model_file(f"{namespace}-fp16.onnx", seed=2)
        env.apply(edge_model("acc", namespace, url, sha, variants=[
            {"name": "int8", "precision": "int8", "uri": url8, "sha256": sha8, "accelerators": ["npu"]},
            {"name": "fp16", "precision": "fp16", "uri": url16, "sha256": sha16, "accelerators": ["gpu"]}]),
            idep("listed", namespace, "acc", {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [gpu, npu]}]},
                runtime={"executionProviders": [{"name": "CUDA", "options": {"device_id": "0"}}, {"name": "CPU"}]}),
            idep("defaults", namespace, "acc", {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [igpu]}]}))
        listed = env.wait_cond("idep", "listed", namespace, "Ready", "True", timeout=120)
        defaults = env.wait_cond("idep", "defaults", namespace, "Ready", "True", timeout=120)
        rows = {r["device"]: r for r in (*listed["status"]["devices"], *defaults["status"]["devices"])}
        kids = {**env.children(namespace, "listed"), **env.children(namespace, "defaults")}

        server, images = _containers(kids[gpu])
        assert (rows[gpu]["variant"], rows[gpu]["executionProvider"]) == ("fp16", "CUDA")
        assert rows[gpu]["acceleration"].startswith("CUDA on gpu through nvidia.com/gpu"), rows[gpu]
        assert images == {CUDA_IMAGE}
        assert server["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert json.loads(_flag(server["args"], "--execution-providers") or "null") == [
            {"name": "CUDA", "options": {"device_id": "0"}}, {"name": "CPU"}]
        assert server["terminationMessagePolicy"] == "FallbackToLogsOnError"

        for dev, why in ((npu, "npu (huawei.com/Ascend310): no entry of spec.runtime.executionProviders drives it "
                               "(CANN would)"),
                         (igpu, "gpu (gpu.intel.com/i915): OpenVINO would drive it, but the operator has no runtime "
                                "image for the openvino family (set EDGEAI_RUNTIME_IMAGE_OPENVINO")):
            server, images = _containers(kids[dev])
            assert (rows[dev]["variant"], rows[dev]["executionProvider"]) == ("default", "CPU"), rows[dev]
            assert why in rows[dev]["acceleration"], rows[dev]
            assert images == {CPU_IMAGE}
            assert "limits" not in server["resources"] and "--execution-providers" not in server["args"]
        # The scheduler saw the GPU Pod ask for the device plugin's unit, and placed it.
        pods = env.items("pods", namespace, "edgeai.io/inference-deployment=listed")
        gpu_pod = next(p for p in pods if p["spec"]["nodeName"] == gpu)
        assert gpu_pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    finally:
        for node in (gpu, npu, igpu):
            env.kube.delete_node(node)


def test_requirements_and_unplaced_reasons(env: Env, namespace: str) -> None:
    url, sha, _ = env.model_file(f"{namespace}.onnx")
    env.apply(edge_model("arm", namespace, url, sha, requirements={"arch": ["arm64"], "minMemory": "2Gi"}),
              idep("arm", namespace, "arm"))
    obj = env.wait_cond("idep", "arm", namespace, "Ready", "True")
    assert [r["device"] for r in obj["status"]["devices"]] == ["edge-1"]
    reasons = {u["device"]: u["reason"] for u in obj["status"]["unplaced"]}
    assert {d: reasons[d] for d in ("edge-0", "edge-2")} == {"edge-0": "ArchMismatch", "edge-2": "ArchMismatch"}
    assert all(r == "NotSelected" for d, r in reasons.items() if d not in FLEET)
    assert obj["status"]["selected"] == 3


def test_bad_signature_digest_mismatch_and_unreachable_source_recovers(env: Env, namespace: str) -> None:
    url, sha, _ = env.model_file(f"{namespace}-good.onnx")
    # Digest mismatch: the spec's sha256 is not what the server has.
    wrong = "0" * 64
    env.apply(edge_model("mismatch", namespace, url, wrong), idep("mismatch", namespace, "mismatch"))
    m = env.wait_cond("em", "mismatch", namespace, "Verified", "False", "DigestMismatch")
    assert m["status"]["sha256"] == sha  # the digest it saw
    d = env.wait_cond("idep", "mismatch", namespace, "Ready", "False", "ModelNotVerified")
    assert "DigestMismatch" in env.cond(d, "Ready")["message"]
    assert env.cond(d, "Degraded")["status"] == "True"
    assert not env.children(namespace, "mismatch")

    # A signature made with another key.
    key, other = integrity.generate_private_key(), integrity.generate_private_key("ecdsa-p256")
    env.kube.kubectl("create", "secret", "generic", "k", "-n", namespace,
                     f"--from-literal=public.pem={integrity.public_key_pem(key).decode()}")
    env.apply(edge_model("badsig", namespace, url, sha, signature={
        "publicKeySecretRef": {"name": "k"}, "value": integrity.sign_digest(other, sha)}))
    env.wait_cond("em", "badsig", namespace, "Verified", "False", "BadSignature")

    # The digest matches, but the bytes are not a model onnxruntime can load.
    junk = env.models / f"{namespace}-junk.onnx"
    junk.write_bytes(b"not an onnx graph " * 64)
    d = integrity.hash_file(junk)
    env.apply(edge_model("junk", namespace, env.server.url(junk.name), d.sha256))
    m = env.wait_cond("em", "junk", namespace, "Verified", "False", "InvalidModel")
    assert "onnxruntime" in env.cond(m, "Verified")["message"]

    # Unreachable: the file is not there yet; the operator retries with backoff and recovers.
    late = f"{namespace}-late.onnx"
    env.apply(edge_model("late", namespace, env.server.url(late), sha), idep("late", namespace, "late"))
    m = env.wait_cond("em", "late", namespace, "Verified", "False", "Unreachable")
    assert m["status"]["phase"] == "Retrying"
    shutil.copy(env.models / f"{namespace}-good.onnx", env.models / late)
    env.wait_cond("em", "late", namespace, "Verified", "True", timeout=90)
    env.wait_cond("idep", "late", namespace, "Ready", "True", timeout=60)
    assert sorted(env.children(namespace, "late")) == FLEET

    # A re-verification asked for by annotation (kubectl edgeai model verify) fetches again and says
    # so: the artifact changed on the server behind the same URI, and the check now fails.
    (env.models / late).write_bytes(b"tampered")
    env.kube.kubectl("annotate", "em", "late", "-n", namespace, "edgeai.io/reverify=req-1", "--overwrite")
    m = env.wait_cond("em", "late", namespace, "Verified", "False", "DigestMismatch", timeout=60)
    assert m["status"]["observedReverify"] == "req-1"


def test_child_deleted_by_hand_returns_and_spec_changes_roll(env: Env, namespace: str) -> None:
    url, sha, _ = env.model_file(f"{namespace}-1.onnx", seed=0)
    env.apply(edge_model("m", namespace, url, sha), idep("d", namespace, "m"))
    env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=90)
    before = env.children(namespace, "d")["edge-0"]
    env.kube.kubectl("delete", "pod", before["metadata"]["name"], "-n", namespace, "--wait=false")
    wait_for("child recreated", lambda: (env.children(namespace, "d").get("edge-0") or {}).get(
        "metadata", {}).get("uid") not in (None, before["metadata"]["uid"]), 60, env.op)
    env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)

    # Spec change: fewer devices, new runtime settings.
    sel = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["edge-0", "edge-2"]}]}
    env.apply(idep("d", namespace, "m", sel, runtime={"threads": 3}))
    wait_for("edge-1 workload removed", lambda: sorted(env.children(namespace, "d")) == ["edge-0", "edge-2"],
             60, env.op)
    obj = env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)
    assert obj["status"]["placed"] == 2
    args = env.children(namespace, "d")["edge-2"]["spec"]["containers"][0]["args"]
    assert args[args.index("--threads") + 1] == "3"

    # A new model digest rolls every workload to it.
    url2, sha2, _ = env.model_file(f"{namespace}-2.onnx", seed=5)
    env.apply(edge_model("m", namespace, url2, sha2))
    wait_for("workloads carry the new digest", lambda: all(
        k["metadata"]["annotations"]["edgeai.io/model-sha256"] == sha2
        for k in env.children(namespace, "d").values()), 60, env.op)
    obj = env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)
    assert obj["status"]["modelSha256"] == sha2


def test_offline_device_keeps_its_workload_and_comes_back(env: Env, namespace: str) -> None:
    node = f"edge-o{uuid.uuid4().hex[:5]}"
    env.kube.add_edge_nodes([node], labels={"edgeai.io/test": namespace})
    url, sha, _ = env.model_file(f"{namespace}.onnx")
    sel = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node, "edge-0"]}]}
    try:
        env.apply(edge_model("m", namespace, url, sha), idep("d", namespace, "m", sel))
        env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=90)
        child_uid = env.children(namespace, "d")[node]["metadata"]["uid"]
        _offline_and_back(env, namespace, node, child_uid)
    finally:
        env.kube.delete_node(node)


def _offline_and_back(env: Env, namespace: str, node: str, child_uid: str) -> None:
    try:
        env.kube.set_node_online(node, False)

        def node_not_ready() -> bool:
            n = env.get("node", node) or {}
            conds = n.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] != "True" for c in conds)

        wait_for("the fixture's set_node_online(False) to make the Node NotReady", node_not_ready, 60)
        wait_for("device offline", lambda: (env.get("edgedevice", node) or {}).get("status", {}).get(
            "online") is False, 90, env.op)
        obj = env.wait_cond("idep", "d", namespace, "Degraded", "True", "DevicesOffline", timeout=60)
        assert obj["status"]["offline"] == 1
        assert env.cond(obj, "Ready")["status"] == "True"  # the online part of the fleet is serving
        row = next(r for r in obj["status"]["devices"] if r["device"] == node)
        assert row["phase"] == "Offline"
        assert env.children(namespace, "d")[node]["metadata"]["uid"] == child_uid  # kept, not recreated
        pod = env.items("pods", namespace, f"edgeai.io/device={node}")[0]
        tol = {t["key"]: t for t in pod["spec"]["tolerations"]}
        assert "tolerationSeconds" not in tol["node.kubernetes.io/unreachable"]
    finally:
        env.kube.set_node_online(node, True)
    wait_for("device online again", lambda: (env.get("edgedevice", node) or {}).get("status", {}).get(
        "online") is True, 90, env.op)
    env.wait_cond("idep", "d", namespace, "Degraded", "False", timeout=90)
    # The node re-reports its pod Ready a moment after it is back (as a KubeEdge node does).
    obj = env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)
    assert obj["status"]["offline"] == 0
    assert env.children(namespace, "d")[node]["metadata"]["uid"] == child_uid


def test_model_deletion_reported_and_deployment_deletion_cascades(env: Env, namespace: str) -> None:
    url, sha, _ = env.model_file(f"{namespace}.onnx")
    env.apply(edge_model("m", namespace, url, sha), idep("d", namespace, "m"))
    env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=90)
    env.kube.kubectl("delete", "em", "m", "-n", namespace)
    obj = env.wait_cond("idep", "d", namespace, "Ready", "False", "ModelNotFound")
    assert "existing workloads are kept" in env.cond(obj, "Ready")["message"]
    assert sorted(env.children(namespace, "d")) == FLEET  # a serving fleet is not torn down
    env.kube.kubectl("delete", "idep", "d", "-n", namespace)
    wait_for("workloads garbage-collected", lambda: not env.children(namespace, "d"), 60, env.op)
    wait_for("devices no longer list it", lambda: all(
        not [s for s in (env.get("edgedevice", n) or {}).get("status", {}).get("serving", [])
             if s["inferenceDeployment"] == f"{namespace}/d"] for n in FLEET), 120, env.op)  # held up to 30 s


def _pre_0_9_deployment(ns: str, device: str, owner: dict[str, Any], sha: str) -> dict[str, Any]:
    """A device's Deployment as an operator of 0.1 made it (labels, annotations, owner, pinning)."""
    labels = {"app.kubernetes.io/managed-by": "edgeai-operator", "edgeai.io/inference-deployment": "d",
              "edgeai.io/device": device}
    ann = {"edgeai.io/device": device, "edgeai.io/inference-deployment": "d", "edgeai.io/model-sha256": sha,
           "edgeai.io/variant": "default"}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [device]}]}]}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"d-{device}", "namespace": ns, "labels": labels,
                         "annotations": {**ann, "edgeai.io/spec-hash": "0.1", "edgeai.io/revision": "1"},
                         "ownerReferences": [{"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
                                              "name": "d", "uid": owner["metadata"]["uid"], "controller": True}]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {k: labels[k] for k in list(labels)[1:]}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": labels, "annotations": ann}, "spec": {
                         "affinity": affinity, "tolerations": [{"operator": "Exists"}],
                         "containers": [{"name": "server", "image": CPU_IMAGE}]}}}}


def test_upgrade_from_per_device_deployments_replaces_each_server_once_and_leaves_nothing(
        env: Env, namespace: str) -> None:
    """An operator of 0.1 left a Deployment per device: each device gets its Pod beside the old
    server, which goes only once the Pod is Ready (never a device without a Ready server), once."""
    url, sha, _ = env.model_file(f"{namespace}.onnx")
    env.apply(edge_model("m", namespace, url, sha))
    env.wait_cond("em", "m", namespace, "Verified", "True")
    env.op.stop()  # the old operator's fleet, as it left it
    try:
        env.apply(idep("d", namespace, "m"))
        owner = env.get("idep", "d", namespace)
        assert owner is not None
        env.apply(*(_pre_0_9_deployment(namespace, dev, owner, sha) for dev in FLEET))

        def old_ready() -> list[dict[str, Any]] | None:
            pods = env.items("pods", namespace, "edgeai.io/inference-deployment=d")
            ok = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in (p.get("status") or {}).get("conditions") or [])]
            return ok if len(ok) == len(FLEET) else None

        old = {p["metadata"]["annotations"]["edgeai.io/device"]: p["metadata"]["uid"]
               for p in wait_for("the old servers Ready", old_ready, 90)}
    finally:
        env.op.start()
    env.op.wait_ready()
    seen_without_ready: list[str] = []

    def migrated() -> bool:
        pods = env.items("pods", namespace, "edgeai.io/inference-deployment=d")
        for dev in FLEET:
            if not any(p["metadata"]["annotations"]["edgeai.io/device"] == dev and not p["metadata"].get(
                    "deletionTimestamp") and any(c["type"] == "Ready" and c["status"] == "True"
                                                 for c in (p.get("status") or {}).get("conditions") or [])
                       for p in pods):
                seen_without_ready.append(dev)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return (not env.items("deployments", namespace, "edgeai.io/inference-deployment=d")
                and not env.items("replicasets", namespace) and len(live) == len(FLEET)
                and all(p["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment" for p in live))

    wait_for("every device on its own Pod, the Deployments, ReplicaSets and old Pods gone", migrated, 120, env.op)
    assert seen_without_ready == [], seen_without_ready
    obj = env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=60)
    assert obj["status"]["placed"] == len(FLEET) and obj["status"]["ready"] == len(FLEET)
    kids = env.children(namespace, "d")
    assert sorted(kids) == FLEET and all(kids[d]["metadata"]["uid"] != old[d] for d in FLEET)
    made = [json.loads(line) for line in env.op.log_path.read_text().splitlines() if '"created pod"' in line]
    per_device = collections.Counter(m["device"] for m in made if m.get("deployment") == f"{namespace}/d")
    assert per_device == {d: 1 for d in FLEET}, per_device  # replaced once each


def test_operator_restart_mid_reconcile_converges_without_duplicates(env: Env, namespace: str) -> None:
    nodes = [f"edge-r{uuid.uuid4().hex[:4]}-{i}" for i in range(12)]
    env.kube.add_edge_nodes(nodes, labels={"edgeai.io/test": namespace})
    try:
        _restart_mid_reconcile(env, namespace, nodes)
    finally:
        for n in nodes:
            env.kube.delete_node(n)


def _restart_mid_reconcile(env: Env, namespace: str, nodes: list[str]) -> None:
    wait_for("devices", lambda: all(env.get("edgedevice", n) for n in nodes), 60, env.op)
    url, sha, _ = env.model_file(f"{namespace}.onnx")
    env.apply(edge_model("m", namespace, url, sha))
    env.wait_cond("em", "m", namespace, "Verified", "True")
    env.apply(idep("d", namespace, "m", {"matchLabels": {"edgeai.io/test": namespace}}))
    wait_for("first workloads", lambda: env.children(namespace, "d"), 30, env.op)
    env.op.kill()  # mid-reconcile: some workloads exist, status is partial
    env.op.start()
    env.op.wait_ready()
    obj = env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=120)
    assert obj["status"]["placed"] == len(nodes) and obj["status"]["ready"] == len(nodes)
    kids = env.items("pods", namespace, "edgeai.io/inference-deployment=d")
    assert sorted(k["metadata"]["annotations"]["edgeai.io/device"] for k in kids) == sorted(nodes)  # one each

    # Idempotent: a restart on a converged cluster writes nothing to workloads or status.
    versions = {k["metadata"]["name"]: k["metadata"]["resourceVersion"] for k in kids}
    status_rv = obj["metadata"]["resourceVersion"]
    env.op.stop()
    env.op.start()
    env.op.wait_ready()
    time.sleep(5)
    assert {k["metadata"]["name"]: k["metadata"]["resourceVersion"]
            for k in env.items("pods", namespace, "edgeai.io/inference-deployment=d")} == versions
    after = env.get("idep", "d", namespace)
    assert after is not None and after["metadata"]["resourceVersion"] == status_rv


def test_two_replicas_one_leader_and_failover(env: Env, namespace: str, tmp_path: Path) -> None:
    standby = OperatorProcess(env.kube.kubeconfig, tmp_path / "standby.log", namespace=env.op.namespace,
                              identity="op-b", env={"EDGEAI_RESYNC_SECONDS": "15"})
    standby.start()
    try:
        standby.wait_ready()
        time.sleep(3)
        assert env.op.is_leader() and not standby.is_leader()
        env.op.stop()  # graceful: releases the lease
        wait_for("standby takes over", standby.is_leader, 30, standby)
        url, sha, _ = env.model_file(f"{namespace}.onnx")
        env.apply(edge_model("m", namespace, url, sha), idep("d", namespace, "m"))
        env.wait_cond("idep", "d", namespace, "Ready", "True", timeout=90)
    finally:
        standby.stop()
        env.op.start()
        env.op.wait_ready()
        wait_for("first operator leads again", env.op.is_leader, 40, env.op)


def test_operator_uses_only_what_its_rbac_grants_and_reports_metrics(env: Env) -> None:
    m = env.op.metrics()
    used = set()
    for key in m:
        if key.startswith("edgeai_operator_api_requests_total{"):
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1:-1].split(","))
            used.add((labels["verb"].strip('"'), labels["resource"].strip('"')))
    assert used, "no API requests counted"
    granted = {(v, res) for r in (*rbac.CLUSTER_RULES, *rbac.NAMESPACE_RULES) for res in r.resources for v in r.verbs}
    assert used <= granted, f"requests outside rbac.py: {used - granted}"
    assert m.get('edgeai_operator_devices{online="true"}', 0) >= 3
    assert any(k.startswith("edgeai_operator_reconcile_duration_seconds_bucket") for k in m)
    assert m.get('edgeai_operator_models{state="Verified"}', 0) >= 1
    status, body = env.op.get("/healthz")
    assert status == 200 and json.loads(body)["synced"] is True
    # Structured logs: every line the operator wrote is a JSON object.
    lines = [ln for ln in env.op.log_path.read_text().splitlines() if ln.strip()]
    assert lines and all(json.loads(ln)["level"] for ln in lines[-50:])


def test_examples_apply_twice_unchanged_and_become_ready(env: Env) -> None:
    """examples/ as a user applies them (server-side, as GitOps does), model URIs pointed at our server."""
    build_tabular(env.models / "tabular.onnx")
    build_cnn(env.models / "cnn.onnx")
    docs = []
    for p in sorted((ROOT / "examples").glob("*.yaml")):
        if p.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(p.read_text().replace("http://127.0.0.1:8000/",
                                                                         env.server.url(""))) if d]
    # The examples' health gates hold each wave for 30-60 s of real time, which is what a user wants
    # and what test_rollout.py already proves; here they only make the test wait. Shorter gates keep
    # every field the user wrote (the schema still judges it) and the same waves.
    for d in docs:
        ro = d.get("spec", {}).get("rollout") if d["kind"] == "InferenceDeployment" else None
        if ro:
            ro["pauseSeconds"] = min(ro.get("pauseSeconds", 0), 1)
            ro.setdefault("healthGate", {})["readySeconds"] = 1
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    try:
        env.kube.kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=doc)
        for name in ("tabular-site-a", "cnn-accelerated"):
            env.wait_cond("idep", name, "edgeai-examples", "Ready", "True", timeout=120)
        cnn = env.get("idep", "cnn-accelerated", "edgeai-examples")
        assert sorted(r["device"] for r in cnn["status"]["devices"] if r["device"] in FLEET) == [  # type: ignore[index]
            "edge-1", "edge-2"]
        gw = wait_for("gateway-1 status", lambda: (env.get("edgedevice", "gateway-1") or {}).get("status"), 30)
        assert gw["online"] is False and gw["capabilities"]["accelerators"] == ["cpu", "npu"]
        # Applying the same manifests again changes nothing the user owns: the operator never writes spec.
        before = {d["metadata"]["name"]: d["metadata"]["generation"] for d in env.items("em,idep", "edgeai-examples")}
        env.kube.kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=doc)
        after = {d["metadata"]["name"]: d["metadata"]["generation"] for d in env.items("em,idep", "edgeai-examples")}
        assert after == before
    finally:
        env.kube.kubectl("delete", "namespace", "edgeai-examples", "--wait=false", check=False)
        env.kube.kubectl("delete", "edgedevice", "gateway-1", "--wait=false", check=False)


# ------------------------------------------------------------------------------ oci:// sources


def test_an_oci_source_behind_basic_auth_becomes_verified_and_its_fetch_gets_the_pull_secret(
    env: Env, namespace: str, tmp_path: Path
) -> None:
    from edge_runtime.artifacts import oci
    from edge_runtime.pack import push as pack_push
    from edgeai_api import oci as api
    from tests.runtime.oci_registry import REGISTRY_BIN, running_registry

    if REGISTRY_BIN is None:
        pytest.skip("needs Debian's docker-registry (make test installs it)")
    # The schema names the form of an oci:// URI it refuses.
    p = env.kube.kubectl("apply", "-f", "-", check=False, input=json.dumps(
        edge_model("no-ref", namespace, "oci://127.0.0.1:5000/models/m", "a" * 64)))
    assert p.returncode != 0 and "oci://HOST[:PORT]/REPOSITORY@sha256:<manifest digest>" in p.stderr

    (tmp_path / "reg").mkdir()
    with running_registry(tmp_path / "reg", "edge", "pw-123") as reg:
        data = build_tabular(tmp_path / "m.onnx", seed=3).read_bytes()
        sha = integrity.hash_bytes(data).sha256
        client = oci.Registry(reg.addr, credentials=oci.Credentials("edge", "pw-123"), plain_http=True)
        config = client.push_blob("models/tab", pack_push.EMPTY_CONFIG, api.EMPTY_CONFIG_MEDIA_TYPE)
        layer = client.push_blob("models/tab", data, api.MODEL_LAYER_MEDIA_TYPE)
        manifest = client.push_manifest("models/tab", "1.0", pack_push.image_manifest(layer, config, {})).digest
        env.kube.kubectl("create", "secret", "docker-registry", "regcred", "-n", namespace,
                         f"--docker-server={reg.addr}", "--docker-username=edge", "--docker-password=pw-123")
        # By tag: the operator resolves it once and pins the manifest digest in status.
        uri = f"oci://{reg.addr}/models/tab:1.0"
        env.apply(edge_model("oci-model", namespace, uri, sha,
                             registry={"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}),
                  idep("oci-model", namespace, "oci-model",
                       {"matchLabels": {"kubernetes.io/hostname": "edge-0"}}))
        m = env.wait_cond("em", "oci-model", namespace, "Verified", "True", timeout=90)
        st = m["status"]
        assert st["sha256"] == sha and st["manifestDigest"] == manifest and st["size"] == len(data)
        assert st["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]

        env.kube.kubectl("wait", "--for=condition=Ready", "idep/oci-model", "-n", namespace, "--timeout=90s")
        tpl = env.children(namespace, "oci-model")["edge-0"]["spec"]
        fetch = next(x for x in tpl["initContainers"] if x["name"] == "fetch")
        assert fetch["args"][:4] == ["fetch", uri, "--sha256", sha]
        assert "--plain-http" in fetch["args"] and "--registry-auth-file" in fetch["args"]
        vols = {v["name"]: v for v in tpl["volumes"]}
        assert vols["registry-auth"]["secret"]["secretName"] == "regcred"

        # A wrong digest for the same manifest: refused with the reason, from the manifest alone.
        env.apply(edge_model("oci-wrong", namespace, uri, "b" * 64,
                             registry={"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}))
        bad = env.wait_cond("em", "oci-wrong", namespace, "Verified", "False", "DigestMismatch", timeout=90)
        assert f"is sha256:{sha}, not sha256:{'b' * 64}" in env.cond(bad, "Verified")["message"]
