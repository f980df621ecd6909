"""Pod start and memory on a real KubeEdge node, against the native path on the same node.

    python -m benchmarks edge [--plane edge-bench] [--keep]

One local plane with one real KubeEdge node (hack/plane.py up --real-edge 1: cloudcore, edgecore,
containerd, the images built from docker/ in the plane's registry), the operator as a local process.
Timed from `kubectl apply` to Ready, in this order on a node whose containerd has no image yet:

1. native, cold: a plain Deployment pinned to the node running the runtime image with no model
   (`sleep`): image pull + sandbox + container start, the floor of any Pod on that node;
2. native, warm: the same again, image cached;
3. model server, warm image: an InferenceDeployment of a tabular model on the node: the operator
   places it, the Pod pulls nothing, fetches and verifies the model into the node cache, starts the
   server, loads and warms the model, and readiness goes true;
4. model server, warm cache: a second InferenceDeployment of the same model (the cache has it).

Memory (RSS from /proc, MiB) after 3: edgecore, the node's containerd, its shims, cloudcore, and the
model-server container (every process of the Pod's server container cgroup).
Output: a table on stdout, benchmarks/results/edge-<date>.txt and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, localplane, logger, text_table
from edge_operator.testing import ModelServer, OperatorProcess
from edge_runtime.artifacts.integrity import hash_file
from edge_runtime.models_zoo import build_tabular

RESULTS = ROOT / "benchmarks" / "results"
NS = "bench-edge"
log = logger("edge")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pids_matching(pred: Any) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and pred(argv):
                out.append(int(d.name))
    return out


def _ready(kube: localplane.Kube, kind: str, name: str) -> bool:
    p = kube.kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
    if p.returncode != 0:
        return False
    obj = json.loads(p.stdout)
    if kind == "deployment":
        return int((obj.get("status") or {}).get("readyReplicas") or 0) >= 1
    st = obj.get("status") or {}
    return st.get("observedGeneration") == obj["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])


def _timed(kube: localplane.Kube, obj: dict[str, Any], kind: str, timeout: float = 600) -> float:
    t0 = time.monotonic()
    kube.kubectl("apply", "-f", "-", input=json.dumps(obj))
    name = obj["metadata"]["name"]
    while time.monotonic() - t0 < timeout:
        if _ready(kube, kind, name):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise SystemExit(f"{kind}/{name} not Ready after {timeout:.0f}s")


def native(name: str, image: str, node: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeName": node, "automountServiceAccountToken": False, "enableServiceLinks": False,
                         "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["sleep", "infinity"]}]}}}}


def idep(name: str, model: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": model, "deviceSelector": {"matchLabels": {"kubernetes.io/hostname": node}}}}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plane", default="edge-bench")
    ap.add_argument("--keep", action="store_true", help="leave the plane up afterwards")
    a = ap.parse_args(argv)
    import edgenodes  # type: ignore[import-not-found]  # hack/ is outside mypy_path

    why = edgenodes.containers_supported()
    if why:
        print(f"edge benchmark skipped: {why}")
        return 0
    localplane.down(a.plane)  # a fresh node: its containerd has no image yet
    p = localplane.up(a.plane, nodes=0, real_edge=1)
    kube = localplane.Kube(p.kubeconfig)
    st = p.state() or {}
    images, node = st["real_edge"]["images"], st["real_edge"]["nodes"][0]
    edge = edgenodes.real_edge_of(p)
    work = RESULTS / "edge-work"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
        kube.kubectl("create", "namespace", NS, check=False)
        with ModelServer(work / "models", host=edge.net.cloud_ip) as server:
            f = build_tabular(work / "models" / "tab.onnx", seed=5)
            d = hash_file(f)
            kube.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "tab", "namespace": NS},
                "spec": {"version": "1", "source": {"uri": server.url("tab.onnx"), "sha256": d.sha256}}}))
            op = OperatorProcess(str(p.kubeconfig), work / "operator.log",
                                 env={"EDGEAI_RUNTIME_IMAGE": images["runtime"]})
            op.start()
            try:
                op.wait_ready()
                kube.kubectl("wait", "--for=condition=Verified", "edgemodel/tab", "-n", NS, "--timeout=120s")
                for label, obj, kind in (
                    ("native Pod (runtime image, no model), image not cached", native("n1", images["runtime"], node),
                     "deployment"),
                    ("native Pod, image cached", native("n2", images["runtime"], node), "deployment"),
                    ("model server (InferenceDeployment), image cached, model fetched",
                     idep("m1", "tab", node), "inferencedeployment"),
                    ("model server, image and model cached", idep("m2", "tab", node), "inferencedeployment"),
                ):
                    s = _timed(kube, obj, kind)
                    log(f"{label}: {s:.1f}s")
                    rows.append({"what": label, "seconds": round(s, 2)})
                mem = memory(p, edge, node)
            finally:
                op.stop()
    finally:
        if not a.keep:
            localplane.down(a.plane)
    table = text_table(["apply -> Ready on the real KubeEdge node", "seconds"],
                       [[r["what"], f"{r['seconds']:.1f}"] for r in rows])
    mtable = text_table(["process (RSS)", "MiB"], [[k, f"{v / 1024:.0f}"] for k, v in mem.items()])
    print(table)
    print()
    print(mtable)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    (RESULTS / f"edge-{stamp}.txt").write_text(table + "\n\n" + mtable + "\n")
    (RESULTS / f"edge-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "machine": platform.platform(), "starts": rows, "rss_kib": mem}, indent=1))
    return 0


def memory(p: localplane.Plane, edge: Any, node: str) -> dict[str, int]:
    import edgenodes

    comps = {c.name: c.pid for c in p.components()}
    # The node's shims live in its network namespace (children of its containerd).
    in_node = set(edgenodes._netns_pids(edge.net.netns(node)))
    shims = [pid for pid in _pids_matching(lambda argv: b"containerd-shim" in argv[0]) if pid in in_node]

    server = []
    for pid in edgenodes._cgroup_pids(edge.net.cgroup_root(node)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and any(b"/var/lib/edgeai/models/sha256/" in x for x in argv):
            server.append(pid)
    return {
        "edgecore": _rss_kib(comps[f"edgecore-{node}"]),
        "containerd (the node's)": _rss_kib(comps[f"containerd-{node}"]),
        f"containerd shims ({len(shims)})": sum(_rss_kib(s) for s in shims),
        "cloudcore": _rss_kib(comps["cloudcore"]),
        f"model server container ({len(server)} Pods, mean)": sum(_rss_kib(s) for s in server) // max(1, len(server)),
    }
