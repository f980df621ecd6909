"""Real KubeEdge edge nodes, end to end: images from docker/, model servers as real Pods.

The plane here (`test-edge`) has one real KubeEdge node (cloudcore + edgecore + containerd,
in network and mount namespaces of its own, see hack/edgenodes.py) next to two simulated
ones. The chart is installed with its images pointing at the plane's local registry, and
the operator runs **from its image, as a real container** started by a cloud-side
containerd, with the chart's Deployment's args and env and a token of the chart's
ServiceAccount. Every model-server Pod on the real node pulls the runtime image through
containerd, fetches and verifies its model into the node's hostPath cache and serves it.

Set EDGEAI_REAL_EDGE=0 to skip (machines that cannot run containers skip with the reason).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import edgenodes
import numpy as np
import onnxruntime as ort
import plane as localplane
import pytest

from edge_operator.testing import ModelServer, free_port
from edge_runtime.artifacts import integrity
from edge_runtime.models_zoo import OUTPUT, TABULAR_INPUT, build_tabular
from edgeai_api.constants import A_SHA256
from tests.conftest import KubeHandle
from tests.integration.test_chart_install import Helm, token_kubeconfig
from tests.integration.test_operator import wait_for  # its `op` only needs log_tail()
from tests.runtime.conftest import _warmup_fails_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgeai-operator"
PLANE = os.environ.get("EDGEAI_TEST_EDGE_PLANE", "test-edge")
REAL = edgenodes.node_name(0)
SIM = ["edge-0", "edge-1"]
OP_NS = "edgeai-system"
RELEASE = "e2e"


class OperatorContainer:
    """The chart's operator container, run by a cloud-side containerd from the image in the registry."""

    def __init__(self, plane: localplane.Plane, kube: KubeHandle, image: str, workdir: Path) -> None:
        self.plane, self.kube, self.image, self.workdir = plane, kube, image, workdir
        self.port = free_port()
        self.id = f"edgeai-operator-{uuid.uuid4().hex[:6]}"
        self.log_path = workdir / "operator.log"

    def start(self) -> None:
        dep = json.loads(self.kube.kubectl("get", "deployment", f"{RELEASE}-edgeai-operator", "-n", OP_NS,
                                           "-o", "json").stdout)
        spec = dep["spec"]["template"]["spec"]["containers"][0]
        assert spec["image"] == self.image, "the chart must run the image built from docker/operator.Dockerfile"
        env = {e["name"]: e["value"] for e in spec.get("env", []) if "value" in e}
        env |= {"POD_NAMESPACE": OP_NS, "POD_NAME": self.id}
        # What the kubelet would do: expand $(VAR) in args from the container's env.
        args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in spec.get("args", [])]
        args = [a for a in args if not a.startswith("--metrics-bind")] + [f"--metrics-bind=127.0.0.1:{self.port}"]
        kubeconfig = token_kubeconfig(self.kube, OP_NS, f"{RELEASE}-edgeai-operator", self.workdir / "kubeconfig")
        # The container sees the cluster's CA and the token, nothing else of the plane's PKI.
        shutil.copyfile(self.plane.dir / "pki" / "ca.crt", self.workdir / "ca.crt")
        cfg = json.loads(kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["certificate-authority"] = "/etc/edgeai/kube/ca.crt"
        kubeconfig.write_text(json.dumps(cfg))
        for f in (kubeconfig, self.workdir / "ca.crt"):
            f.chmod(0o644)
        env["KUBECONFIG"] = "/etc/edgeai/kube/kubeconfig"
        edgenodes.start_cloud_containerd(self.plane)
        edgenodes.ctr(self.plane, "images", "pull", "--plain-http", self.image)
        run = ["run", "-d", "--net-host", "--read-only", "--cgroup", f"{edgenodes.cloud_cgroup(self.plane)}/{self.id}",
               "--log-uri", f"file://{self.log_path}",
               "--mount", f"type=bind,src={self.workdir},dst=/etc/edgeai/kube,options=rbind:ro",
               "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev:size=67108864"]
        for k, v in env.items():
            run += ["--env", f"{k}={v}"]
        edgenodes.ctr(self.plane, *run, self.image, self.id, "edgeai-operator", *args)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-40:])
        except OSError:
            return "(no operator log)"

    def process_uid(self) -> int:
        out = edgenodes.ctr(self.plane, "tasks", "ls").stdout
        pid = next(int(ln.split()[1]) for ln in out.splitlines() if ln.startswith(self.id))
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Uid:")))

    def stop(self) -> None:
        edgenodes.ctr(self.plane, "tasks", "rm", "-f", self.id, check=False)  # -f: SIGKILL, then remove
        edgenodes.ctr(self.plane, "containers", "rm", self.id, check=False)


class EdgeEnv:
    def __init__(self, kube: KubeHandle, plane: localplane.Plane, server: ModelServer, models: Path,
                 op: OperatorContainer, images: dict[str, str]) -> None:
        self.kube, self.plane, self.server, self.models, self.op, self.images = kube, plane, server, models, op, images
        edge = edgenodes.real_edge_of(plane)
        assert edge
        self.edge = edge

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                 "items": list(objs)}))

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        p = self.kube.kubectl("get", kind, name, "-o", "json", *(["-n", ns] if ns else []), check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def items(self, kind: str, ns: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json", "-n", ns, *(["-l", selector] if selector else [])]
        return list(json.loads(self.kube.kubectl(*args).stdout)["items"])

    def cond(self, obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def wait(self, what: str, pred: Callable[[], Any], timeout: float = 180) -> Any:
        return wait_for(what, pred, timeout, self.op)  # type: ignore[arg-type]

    def model(self, ns: str, name: str, seed: int = 0, path: Path | None = None) -> tuple[str, int]:
        """An EdgeModel over a real ONNX file served from the cloud bridge; returns (sha256, size)."""
        f = path or build_tabular(self.models / f"{ns}-{name}-{seed}.onnx", seed=seed)
        d = integrity.hash_file(f)
        self.apply({"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"version": f"1.0.{seed}", "source": {"uri": self.server.url(f.name), "sha256": d.sha256}}})
        def verified() -> bool:
            obj = self.get("edgemodel", name, ns) or {}
            return bool(self.cond(obj, "Verified").get("status") == "True"
                        and (obj.get("status") or {}).get("sha256") == d.sha256)

        self.wait(f"EdgeModel {name} Verified at {d.sha256[:12]}", verified)
        return d.sha256, d.size

    def deployment(self, ns: str, name: str, model: str, nodes: list[str], **spec: Any) -> None:
        self.apply({"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"model": model, "deviceSelector": {"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}, **spec}})

    def ready(self, ns: str, name: str, timeout: float = 300) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get("idep", name, ns)
            ok = self.cond(obj, "Ready").get("status") == "True"
            return obj if ok and obj and obj["status"].get("observedGeneration") == obj["metadata"]["generation"] \
                else None
        return dict(self.wait(f"InferenceDeployment {name} Ready", check, timeout))

    def pods_on(self, ns: str, idep: str, node: str) -> list[dict[str, Any]]:
        return [p for p in self.items("pods", ns, f"edgeai.io/inference-deployment={idep}")
                if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")]

    def real_pod(self, ns: str, idep: str) -> dict[str, Any]:
        def one_ready() -> dict[str, Any] | None:
            ready = [p for p in self.pods_on(ns, idep, REAL) if any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
            return ready[0] if len(ready) == 1 else None
        return dict(self.wait(f"one Ready pod of {idep} on {REAL}", one_ready))

    def cache_file(self, sha: str) -> Path:
        return edgenodes.hostfs(self.plane.dir, REAL, "/var/lib/edgeai") / "models" / "sha256" / sha


def infer_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": TABULAR_INPUT, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def infer_via(url: str, x: np.ndarray, timeout: float = 10) -> np.ndarray:
    req = urllib.request.Request(url, data=infer_body(x), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    (o,) = [o for o in out["outputs"] if o["name"] == OUTPUT]
    return np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])


def in_node(env: EdgeEnv, url: str, body: bytes | None = None) -> tuple[int, str]:
    """An HTTP request made from inside the real node's network namespace (what the site sees)."""
    code = ("import sys,urllib.request as u\n"
            "req=u.Request(sys.argv[1],data=(sys.argv[2].encode() if len(sys.argv)>2 else None),"
            "headers={'Content-Type':'application/json'})\n"
            "try:\n r=u.urlopen(req,timeout=10);print(r.status);print(r.read().decode())\n"
            "except u.HTTPError as e:\n print(e.code);print(e.read().decode())\n"
            "except OSError as e:\n print(0);print(e)\n")
    args = [url] + ([body.decode()] if body is not None else [])
    p = edgenodes.exec_in_node(env.plane, REAL, "python3", "-c", code, *args)
    status, _, text = p.stdout.partition("\n")
    return int(status or 0), text


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeEnv]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("real edge nodes are brought up by the local plane")
    if os.environ.get("EDGEAI_REAL_EDGE", "1").lower() in ("0", "false", "no"):
        pytest.skip("EDGEAI_REAL_EDGE=0: real edge nodes off")
    why = edgenodes.containers_supported()
    if why:
        pytest.skip(f"no real edge nodes on this machine: {why}")
    p = localplane.up(PLANE, nodes=len(SIM), real_edge=1)
    tmp = tmp_path_factory.mktemp("real-edge")
    try:
        kube = KubeHandle(str(p.kubeconfig), str(localplane.binaries()["kubectl"]), simulated=True)
        edge_state = edgenodes.real_edge_of(p)
        assert edge_state
        images = dict((p.state() or {})["real_edge"]["images"])
        op_repo, _, op_tag = images["operator"].rpartition(":")
        rt_repo, _, rt_tag = images["runtime"].rpartition(":")
        helm = Helm(kube, tmp / "helm")
        if kube.ok("get", "namespace", OP_NS):
            helm("uninstall", RELEASE, "-n", OP_NS, check=False)
        helm("upgrade", "--install", RELEASE, str(CHART), "-n", OP_NS, "--create-namespace",
             "--set", f"image.repository={op_repo}", "--set", f"image.tag={op_tag}",
             "--set", f"runtime.images.cpu.repository={rt_repo}", "--set", f"runtime.images.cpu.tag={rt_tag}",
             "--set", "replicaCount=1", "--set", "operator.resyncSeconds=15",
             "--set", "operator.heartbeatResolutionSeconds=30")
        (tmp / "models").mkdir()
        with ModelServer(tmp / "models", host=edge_state.net.cloud_ip) as server:
            opdir = tmp / "op"
            opdir.mkdir()
            opdir.chmod(0o755)
            op = OperatorContainer(p, kube, images["operator"], opdir)
            op.start()
            try:
                wait_for("the operator container Ready", lambda: op.get("/readyz")[0] == 200, 120, op)  # type: ignore[arg-type]
                yield EdgeEnv(kube, p, server, tmp / "models", op, images)
            finally:
                op.stop()
                helm("uninstall", RELEASE, "-n", OP_NS, check=False)
    finally:
        if not os.environ.get("EDGEAI_KEEP_PLANE"):
            localplane.down(PLANE)


@pytest.fixture
def ns(edge: EdgeEnv) -> Iterator[str]:
    name = f"e-{uuid.uuid4().hex[:6]}"
    edge.kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        edge.kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --------------------------------------------------------------------------- the node and the operator


def test_real_node_is_what_keadm_join_makes_and_is_discovered(edge: EdgeEnv) -> None:
    node = edge.get("node", REAL)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert "node-role.kubernetes.io/edge" in labels and "node-role.kubernetes.io/agent" in labels
    assert not node["spec"].get("taints")  # keadm join adds no taint unless asked
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert "kubeedge" in node["status"]["nodeInfo"]["kubeletVersion"]
    dev = edge.wait("the EdgeDevice of the real node online", lambda: (lambda d: d if d and (d.get("status") or {})
                    .get("online") is True else None)(edge.get("edgedevice", REAL)))
    assert dev["status"]["capabilities"]["arch"] == "amd64"


def test_operator_runs_from_its_image_as_a_non_root_container(edge: EdgeEnv) -> None:
    assert edge.op.process_uid() == 65532
    code, text = edge.op.get("/metrics")
    assert code == 200 and "edgeai_operator" in text


# --------------------------------------------------------------------------- serving


def test_model_server_is_a_real_pod_that_answers_like_onnxruntime(edge: EdgeEnv, ns: str) -> None:
    sha, size = edge.model(ns, "tab", seed=11)
    t0 = time.monotonic()
    edge.deployment(ns, "d", "tab", [REAL], runtime={"grpcPort": 9000})
    edge.ready(ns, "d")
    took = time.monotonic() - t0
    pod = edge.real_pod(ns, "d")
    server = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "server")
    assert server["image"] == edge.images["runtime"] and server["restartCount"] == 0
    inits = {c["name"]: c for c in pod["status"]["initContainerStatuses"]}
    assert inits["fetch"]["state"]["terminated"]["exitCode"] == 0
    # The verified artifact is in the node's own cache, owned by the runtime's UID.
    cached = edge.cache_file(sha)
    assert integrity.hash_file(cached).sha256 == sha and cached.stat().st_size == size
    assert cached.stat().st_uid == 65532
    # The server process: UID 65532, read-only root filesystem.
    pid = server_pid(edge, sha)
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(r"^Uid:\s+65532\s", status, re.M), status
    root_opts = next(ln.split()[5] for ln in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                     if ln.split()[4] == "/")
    assert root_opts.split(",")[0] == "ro"
    # A real inference through the Pod's IP equals a direct onnxruntime run on the same file.
    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    got = infer_via(f"http://{pod['status']['podIP']}:8080/v2/models/tab/infer", x)
    sess = ort.InferenceSession(str(edge.models / f"{ns}-tab-11.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run([OUTPUT], {TABULAR_INPUT: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The same over gRPC (spec.runtime.grpcPort), with the standard Triton client, unchanged.
    np.testing.assert_allclose(grpc_infer(f"{pod['status']['podIP']}:9000", "tab", x), want, rtol=1e-5, atol=1e-6)
    dev = edge.wait("the device reporting what it serves", lambda: [
        s for s in ((edge.get("edgedevice", REAL) or {}).get("status") or {}).get("serving") or []
        if s.get("inferenceDeployment") == f"{ns}/d" and s.get("sha256") == sha and s.get("phase") == "Ready"])
    assert dev
    print(f"\nreal node: apply -> InferenceDeployment Ready in {took:.1f}s")


def grpc_infer(target: str, model: str, x: np.ndarray) -> np.ndarray:
    """tritonclient's gRPC client, in its own process (its generated protobuf package stays out of ours)."""
    code = (
        "import sys, json, numpy as np, tritonclient.grpc as g\n"
        "c = g.InferenceServerClient(sys.argv[1])\n"
        "x = np.asarray(json.loads(sys.argv[3]), dtype=np.float32)\n"
        f"i = g.InferInput('{TABULAR_INPUT}', list(x.shape), 'FP32'); i.set_data_from_numpy(x)\n"
        "r = c.infer(sys.argv[2], [i])\n"
        f"print(json.dumps(r.as_numpy('{OUTPUT}').tolist()))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, target, model, json.dumps(x.tolist())], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return np.asarray(json.loads(p.stdout), dtype=np.float32)


def server_pid(edge: EdgeEnv, sha: str) -> int:
    """The model server's process for digest `sha` on the real node, found from the host."""
    net = edge.edge.net
    for pid in edgenodes._cgroup_pids(net.cgroup_root(REAL)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and f"/var/lib/edgeai/models/sha256/{sha}".encode() in argv:
            return pid
    raise AssertionError(f"no server process for {sha[:12]} on {REAL}")


def test_digest_replaced_behind_the_uri_is_refused_at_the_edge(edge: EdgeEnv, ns: str) -> None:
    sha, _ = edge.model(ns, "swap", seed=21)
    # After the operator verified it, the file behind the URI is replaced by another model.
    path = edge.models / f"{ns}-swap-21.onnx"
    build_tabular(path, seed=22)
    assert integrity.hash_file(path).sha256 != sha
    edge.deployment(ns, "d", "swap", [REAL])

    def fetch_failed() -> dict[str, Any] | None:
        st = (edge.get("idep", "d", ns) or {}).get("status") or {}
        devs = [d for d in st.get("devices") or [] if d.get("device") == REAL and d.get("phase") == "FetchFailed"]
        return devs[0] if devs else None

    dev = edge.wait("the real device FetchFailed", fetch_failed)
    assert "DigestMismatch" in dev.get("message", ""), dev
    # Nothing unverified is served: the server never started, nothing under either digest in the cache.
    for pod in edge.pods_on(ns, "d", REAL):
        for c in pod["status"].get("containerStatuses") or []:
            assert "running" not in (c.get("state") or {}) and not c.get("ready")
    assert not edge.cache_file(sha).exists()
    assert not edge.cache_file(integrity.hash_file(path).sha256).exists()


def test_an_oci_model_is_pulled_from_the_registry_by_a_real_pod_with_its_pull_secret(edge: EdgeEnv, ns: str) -> None:
    from edge_runtime.artifacts import oci
    from edge_runtime.pack import push as pack_push
    from edgeai_api import oci as api

    # The plane's own registry, on the cloud bridge, where the node pulls its images from.
    addr, repo = edge.edge.net.registry, f"edgeai-tests/{ns}"
    f = build_tabular(edge.models / f"{ns}-oci-41.onnx", seed=41)
    data = f.read_bytes()
    sha = integrity.hash_bytes(data).sha256
    client = oci.Registry(addr, plain_http=True)
    config = client.push_blob(repo, pack_push.EMPTY_CONFIG, api.EMPTY_CONFIG_MEDIA_TYPE)
    layer = client.push_blob(repo, data, api.MODEL_LAYER_MEDIA_TYPE)
    manifest = client.push_manifest(repo, "v1", pack_push.image_manifest(layer, config, {})).digest
    # That registry asks for no credentials; the Secret still travels to the node's init container.
    edge.kube.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns, f"--docker-server={addr}",
                      "--docker-username=edge", "--docker-password=unused")
    edge.apply({"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "ocim", "namespace": ns},
                "spec": {"source": {"uri": f"oci://{addr}/{repo}:v1", "sha256": sha},
                         "registry": {"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}}})
    m = edge.wait("the oci:// EdgeModel Verified", lambda: (lambda o: o if edge.cond(o, "Verified").get("status")
                                                           == "True" else None)(edge.get("edgemodel", "ocim", ns)))
    assert m["status"]["manifestDigest"] == manifest and m["status"]["sha256"] == sha
    # The tag moves after verification: the Pod still gets the verified blob, by its digest.
    other = build_tabular(edge.models / f"{ns}-oci-42.onnx", seed=42).read_bytes()
    moved = client.push_blob(repo, other, api.MODEL_LAYER_MEDIA_TYPE)
    client.push_manifest(repo, "v1", pack_push.image_manifest(moved, config, {}))
    edge.deployment(ns, "d", "ocim", [REAL])
    edge.ready(ns, "d")
    pod = edge.real_pod(ns, "d")
    inits = {c["name"]: c for c in pod["status"]["initContainerStatuses"]}
    assert inits["fetch"]["state"]["terminated"]["exitCode"] == 0
    assert edge.cache_file(sha).read_bytes() == data
    x = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    got = infer_via(f"http://{pod['status']['podIP']}:8080/v2/models/ocim/infer", x)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run([OUTPUT], {TABULAR_INPUT: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- rollout


def test_rollout_across_real_and_simulated_devices_and_a_bad_build_rolled_back(edge: EdgeEnv, ns: str) -> None:
    edge.model(ns, "m", seed=31)
    rollout = {"canary": 1, "waves": [], "orderBy": "edgeai.io/site",
               "healthGate": {"readySeconds": 3, "progressDeadlineSeconds": 90}}
    edge.deployment(ns, "d", "m", [REAL, *SIM], rollout=rollout)
    edge.ready(ns, "d")
    sha2, _ = edge.model(ns, "m", seed=32)
    st = edge.wait("revision 2 complete", lambda: (lambda s: s if (s.get("rollout") or {}).get("phase") == "Complete"
                   and s.get("currentRevision") == 2 else None)((edge.get("idep", "d", ns) or {}).get("status") or {}))
    assert {d["device"]: d["sha256"] for d in st["devices"]} == {n: sha2 for n in [REAL, *SIM]}
    good = edge.real_pod(ns, "d")
    url = f"http://{good['status']['podIP']}:8080/v2/models/m/infer"
    x = np.ones((1, 16), dtype=np.float32)
    before = infer_via(url, x)

    # A build that loads but fails its warm-up on the real node: a real reason, not a simulated one.
    bad = _warmup_fails_model(edge.models / f"{ns}-bad.onnx")
    edge.model(ns, "m", path=bad)
    answered = []

    def rolled_back() -> dict[str, Any] | None:
        answered.append(infer_via(url, x))  # the old server keeps answering throughout
        s = (edge.get("idep", "d", ns) or {}).get("status") or {}
        return s if (s.get("rollout") or {}).get("phase") == "RolledBack" else None

    st = edge.wait("the bad revision rolled back", rolled_back, 300)
    assert st["currentRevision"] == 2
    assert edge.cond(edge.get("idep", "d", ns), "Degraded").get("reason") == "RolloutFailed"
    assert answered and all(np.array_equal(a, before) for a in answered)
    edge.wait("every device Ready on revision 2 again", lambda: all(
        d["sha256"] == sha2 and d["phase"] == "Ready" for d in (edge.get("idep", "d", ns) or {})["status"]["devices"]))
    after = edge.real_pod(ns, "d")
    assert after["metadata"]["uid"] == good["metadata"]["uid"]  # the same Pod served throughout
    assert np.array_equal(infer_via(url, x), before)


def _quality_profile(edge: EdgeEnv, good: Path) -> tuple[str, dict[str, Any]]:
    """What `pack --eval-data` ships with a model: the good build's profile on its evaluation data,
    beside the builds; returns its spec.qualityProfile."""
    from edge_runtime.core import quality

    x = np.random.default_rng(500).standard_normal((3000, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(good), providers=["CPUExecutionProvider"])
    layout = quality.layout_of([(TABULAR_INPUT, "FP32", (-1, 16))], [(OUTPUT, "FP32", (-1, 3))])
    text = quality.build_profile(layout, {TABULAR_INPUT: x}, {OUTPUT: sess.run([OUTPUT], {TABULAR_INPUT: x})[0]}
                                 ).dumps().encode()
    path = edge.models / f"{good.stem}.quality-profile.json"
    path.write_bytes(text)
    d = integrity.hash_bytes(text)
    return d.sha256, {"uri": edge.server.url(path.name), "sha256": d.sha256, "size": d.size}


def test_a_build_that_passes_every_check_but_quality_is_rolled_back_at_the_canary(edge: EdgeEnv, ns: str) -> None:
    """The issue's test: a new revision whose build answers one constant class loads, warms up and
    answers every request with 200, so readiness, errors, latency and restarts all pass; its runtime's
    quality gate (healthGate.quality, against the profile shipped with the model) fails it while
    traffic is sent to it, and the operator rolls it back from Pod status alone."""
    good = build_tabular(edge.models / f"{ns}-q-good.onnx", seed=51)
    broken = build_tabular(edge.models / f"{ns}-q-broken.onnx", seed=51, constant_class=0)
    profile_sha, profile = _quality_profile(edge, good)

    def model(path: Path) -> str:
        d = integrity.hash_file(path)
        edge.apply({"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "q", "namespace": ns},
                    "spec": {"source": {"uri": edge.server.url(path.name), "sha256": d.sha256},
                             "qualityProfile": profile}})
        return d.sha256

    sha1 = model(good)
    rollout = {"canary": 1, "healthGate": {"readySeconds": 3, "progressDeadlineSeconds": 240,
                                           "quality": {"maxPSI": 0.25, "minRequests": 30}}}
    edge.deployment(ns, "d", "q", [REAL], rollout=rollout)
    rng = np.random.default_rng(7)
    codes: dict[str, list[int]] = {}  # per build: HTTP status of every request sent to its Pod

    def feed(sha: str) -> None:
        """Traffic like the evaluation data to the newest Pod of build `sha`, at its Pod IP (no Service:
        a not-Ready Pod still gets it), as the site's clients would send."""
        pods = [p for p in edge.pods_on(ns, "d", REAL) if p["status"].get("podIP")
                and p["metadata"]["annotations"].get(A_SHA256) == sha]
        if not pods:
            return
        pod = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
        for _ in range(5):
            x = rng.standard_normal((10, 16)).astype(np.float32)
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"http://{pod['status']['podIP']}:8080/v2/models/q/infer", data=infer_body(x),
                    headers={"Content-Type": "application/json"}), timeout=5).close()
                codes.setdefault(sha, []).append(200)
            except urllib.error.HTTPError as e:
                codes.setdefault(sha, []).append(e.code)
            except OSError:
                return  # not listening (yet, or any more)

    # Revision 1, the good build: its Pod is not Ready until it has been judged (Wait), then passes.
    def ready_after_traffic() -> dict[str, Any] | None:
        feed(sha1)
        obj = edge.get("idep", "d", ns)
        return obj if edge.cond(obj, "Ready").get("status") == "True" else None

    edge.wait("revision 1 judged on its traffic and Ready", ready_after_traffic, 300)
    assert integrity.hash_file(edge.cache_file(profile_sha)).sha256 == profile_sha  # fetched and checked
    good_pod = edge.real_pod(ns, "d")
    args = next(c for c in good_pod["spec"]["containers"] if c["name"] == "server")["args"]
    assert args[args.index("--quality-profile") + 1] == f"/var/lib/edgeai/models/sha256/{profile_sha}"

    # Revision 2, the broken build, while traffic is sent to it.
    sha2 = model(broken)
    exits: list[dict[str, Any]] = []

    def rolled_back() -> dict[str, Any] | None:
        feed(sha2)
        for p in edge.pods_on(ns, "d", REAL):
            for cs in p["status"].get("containerStatuses") or []:
                term = (cs.get("lastState") or {}).get("terminated")  # a container that ended and was restarted
                if cs["name"] == "server" and term:
                    exits.append(term)
        s = (edge.get("idep", "d", ns) or {}).get("status") or {}
        return s if (s.get("rollout") or {}).get("phase") == "RolledBack" else None

    st = edge.wait("the constant-class build rolled back at the canary", rolled_back, 300)
    failed = next(r for r in st["revisions"] if r["revision"] == 2)
    assert failed["outcome"] == "Failed", failed
    assert "QualityGateFailed: quality gate failed after" in failed["message"] and "PSI of" in failed["message"]
    assert st["currentRevision"] == 1
    # It passed every other check: every request it got was answered, and it exited only on its gate.
    assert codes.get(sha2) and set(codes[sha2]) == {200}, codes
    # (QualityGateFailed above is what the operator makes of exit code 10; the Pod may be gone by now.)
    assert all(t["exitCode"] == 10 for t in exits), exits
    edge.wait("the device Ready on the good build again", lambda: all(
        d["sha256"] == sha1 and d["phase"] == "Ready" for d in (edge.get("idep", "d", ns) or {})["status"]["devices"]))
    assert edge.real_pod(ns, "d")["metadata"]["uid"] == good_pod["metadata"]["uid"]  # it served throughout


# --------------------------------------------------------------------------- offline


def test_partition_and_reboot_offline_then_catch_up(edge: EdgeEnv, ns: str) -> None:
    edge.model(ns, "steady", seed=41)
    edge.model(ns, "moving", seed=42)
    edge.deployment(ns, "steady", "steady", [REAL])
    edge.deployment(ns, "moving", "moving", [REAL, *SIM])
    edge.ready(ns, "steady")
    edge.ready(ns, "moving")
    pod = edge.real_pod(ns, "steady")
    x = np.ones((1, 16), dtype=np.float32)
    want = infer_via(f"http://{pod['status']['podIP']}:8080/v2/models/steady/infer", x)
    body = infer_body(x)

    localplane_partition(edge, cut=True)
    try:
        edge.wait("the real device Offline in the cloud", lambda: ((edge.get("edgedevice", REAL) or {}).get(
            "status") or {}).get("online") is False, 180)
        # The site still serves, inside its own network.
        code, text = in_node(edge, f"http://{pod['status']['podIP']}:8080/v2/models/steady/infer", body)
        assert code == 200 and np.allclose(_output(text), want), text
        # A rollout does not block on the offline device (offlineDevices: Skip, the default).
        sha_new, _ = edge.model(ns, "moving", seed=43)
        st = edge.wait("the rollout complete without the offline device", lambda: (lambda s: s if (
            s.get("rollout") or {}).get("phase") == "Complete" and s.get("currentRevision") == 2 else None)(
            (edge.get("idep", "moving", ns) or {}).get("status") or {}), 240)
        phases = {d["device"]: d["phase"] for d in st["devices"]}
        assert phases[REAL] == "Offline" and all(phases[n] == "Ready" for n in SIM), phases

        # A reboot with the link still down: every container gone, /run wiped, edgecore and containerd
        # started again. The model server comes back from KubeEdge's local store and the node's cache.
        edgenodes.reboot(edge.plane, REAL)
        ip = edge.wait("the steady server back and Ready inside the site", lambda: _ready_server_ip(edge), 180)
        code, text = in_node(edge, f"http://{ip}:8080/v2/models/steady/infer", body)
        assert code == 200 and np.allclose(_output(text), want), text
    finally:
        localplane_partition(edge, cut=False)
    edge.wait("the real device online again", lambda: ((edge.get("edgedevice", REAL) or {}).get(
        "status") or {}).get("online") is True, 180)
    edge.ready(ns, "moving")
    st = edge.ready(ns, "steady")
    # Nothing that did not change was redeployed: the same Pod.
    assert edge.real_pod(ns, "steady")["metadata"]["uid"] == pod["metadata"]["uid"]
    # What did change while the device was away reaches it now (its new Pod starts once the cloud sees
    # the node again: Ready may hold a moment before that, while the device still reads Offline).
    def caught_up() -> dict[str, Any] | None:
        rows = {d["device"]: d for d in ((edge.get("idep", "moving", ns) or {}).get("status") or {}).get("devices", [])}
        row = rows.get(REAL) or {}
        return row if row.get("sha256") == sha_new and row.get("phase") == "Ready" else None

    edge.wait("the real device on the revision it missed, Ready", caught_up, 240)


def localplane_partition(edge: EdgeEnv, cut: bool) -> None:
    edgenodes.partition(edge.plane, REAL, cut=cut)


def _output(text: str) -> np.ndarray:
    out = json.loads(text)
    (o,) = [o for o in out["outputs"] if o["name"] == OUTPUT]
    return np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])


def _ready_server_ip(edge: EdgeEnv) -> str | None:
    """The IP of a running `steady` model server on the real node that answers ready, seen from the node."""
    for pid in edgenodes._cgroup_pids(edge.edge.net.cgroup_root(REAL)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" not in argv or b"steady" not in argv:
            continue
        p = edgenodes.exec_in_node(edge.plane, REAL, "nsenter", "-t", str(pid), "-n", "ip", "-4", "-o", "addr",
                                   "show", "eth0")
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", p.stdout)
        if m and in_node(edge, f"http://{m.group(1)}:8080/v2/health/ready")[0] == 200:
            return m.group(1)
    return None
