"""Operator at fleet scale: N InferenceDeployments vs N plain Deployments on N kwok edge nodes.

    python -m benchmarks scale [--nodes 1000] [--count N] [--plane scale] [--keep]

On a dedicated local plane (hack/plane.py) with N simulated edge nodes:

1. native baseline: N Deployments, each one replica pinned to one edge node with
   exactly the pod template the operator would build, created directly; timed from
   the first create until every one is Available;
2. operator path: N InferenceDeployments with mixed selectors (matchLabels,
   matchExpressions In, label combinations), each selecting one device; timed from
   the first create until every one reports Ready=True for its generation.

Both are created the same way (the same client, the same concurrency) after the
fleet, the CRDs, the verified model and the operator are up; the native objects
are deleted before the operator path runs. Reported: time to all Ready and the
ratio, the operator's peak RSS (VmHWM), API requests the operator made, and API
requests the whole cluster served during each phase (node heartbeats excluded).
Results print as a table and go to benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

import plane as localplane  # noqa: E402
from edge_operator import constants as c  # noqa: E402
from edge_operator.manifests import Owner, WorkloadInputs, child_deployment  # noqa: E402
from edge_operator.placement import Artifact  # noqa: E402
from edge_operator.testing import ModelServer, OperatorProcess, parse_metrics  # noqa: E402

from edge_runtime.integrity import hash_file  # noqa: E402
from edge_runtime.models_zoo import build_tabular  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.md"
NS_NATIVE = "bench-native"
NS_OP = "bench-operator"
HEARTBEAT_RESOURCES = {"leases", "nodes"}


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Api:
    """The benchmark's own client: raw JSON, a pooled connection, N threads."""

    def __init__(self, kubeconfig: str, threads: int) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = threads * 2
        self.client = client.ApiClient(cfg)
        self.threads = threads

    def call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None) -> Any:
        data = self._raw(method, path, body, query)
        return json.loads(data) if data else None

    def _raw(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None) -> bytes:
        # PATCH bodies are JSON merge patches; the API server refuses plain application/json there.
        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        args = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            body=body,
            header_params={"Content-Type": ctype, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = self.client.call_api(*args, _request_timeout=60)
        data: bytes = resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
        return data

    def list(self, path: str) -> list[dict[str, Any]]:
        # resourceVersion=0: served from the API server's watch cache, as a controller's informer would.
        return self.call("GET", path, query=[("resourceVersion", "0")])["items"]  # type: ignore[no-any-return]

    def create_all(self, path_of: Callable[[dict[str, Any]], str], objs: list[dict[str, Any]]) -> None:
        def one(o: dict[str, Any]) -> None:
            self.call("POST", path_of(o), body=o)

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, objs))

    def apiserver_requests(self) -> int:
        """Requests the API server has served, heartbeats (nodes, leases) and watches excluded."""
        text = self._raw("GET", "/metrics")
        total = 0
        for key, value in parse_metrics(text.decode()).items():
            if not key.startswith("apiserver_request_total{"):
                continue
            labels = dict(p.split("=", 1) for p in key[key.index("{") + 1 : -1].split(","))
            if labels.get("resource", "").strip('"') in HEARTBEAT_RESOURCES or labels.get("verb") == '"WATCH"':
                continue
            total += int(value)
        return total


def relax_node_monitor(plane: localplane.Plane) -> None:
    """Restart this plane's controller-manager without the node-lifecycle controller.

    With 1,000 kwok nodes on a busy 2-CPU machine kwok sometimes renews node leases late (seen
    past even a 120 s grace); the node blips NotReady, the node-lifecycle controller marks its
    pods NotReady, and kwok, believing them Ready already, never sets them back. That stalls
    either phase at random and measures the machine, not the controllers. No node goes offline
    in this benchmark, so the benchmark's own plane runs without that controller.
    """
    st = plane.state() or {}
    comps = plane.components()
    for i, comp in enumerate(comps):
        if comp.name != "kube-controller-manager":
            continue
        cmd = [a + ",-node-lifecycle-controller" if a.startswith("--controllers=") else a for a in comp.cmd]
        if comp.alive():
            os.killpg(comp.pid, signal.SIGTERM)
            for _ in range(100):
                if not comp.alive():
                    break
                time.sleep(0.1)
        comps[i] = localplane._start(plane, comp.name, cmd)
        localplane._save(plane, st["server"], comps, {k: v for k, v in st.items() if k not in ("server", "components")})
        log("controller-manager restarted without the node-lifecycle controller")


def wait(what: str, pred: Callable[[], tuple[bool, str]], timeout: float, interval: float = 0.5) -> float:
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        ok, last = pred()
        if ok:
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s ({last})")


def node_names(n: int) -> list[str]:
    return [f"edge-{i}" for i in range(n)]


def selector(i: int, node: str) -> dict[str, Any]:
    """Mixed selector shapes, each selecting exactly `node` (so the work equals the baseline's)."""
    profile = localplane.PROFILES[i % len(localplane.PROFILES)]
    match i % 3:
        case 0:
            return {"matchLabels": {"kubernetes.io/hostname": node}}
        case 1:
            return {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
        case _:
            return {
                "matchLabels": {"edgeai.io/site": profile["site"]},
                "matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
                    {"key": "edgeai.io/quarantine", "operator": "DoesNotExist"},
                ],
            }


def native_deployment(i: int, node: str, art: Artifact) -> dict[str, Any]:
    """Exactly the workload the operator builds for that device, minus the owner."""
    inp = WorkloadInputs(
        namespace=NS_NATIVE,
        owner=Owner(c.API_VERSION, c.KIND_IDEP, f"native-{i}", "x"),
        model="tabular",
        model_version="1.0.0",
        device=node,
        node=node,
        artifact=art,
        image=c.DEFAULT_RUNTIME_IMAGE,
        runtime={"threads": 1},
    )
    d = child_deployment(inp)
    del d["metadata"]["ownerReferences"]
    # Not managed by the operator: its server-side label selector must not see these.
    for labels in (d["metadata"]["labels"], d["spec"]["template"]["metadata"]["labels"]):
        labels[c.L_MANAGED_BY] = "benchmark"
    return d


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    create_seconds: float = 0.0
    cluster_requests: int = 0


def run_phase(
    api: Api,
    name: str,
    objs: list[dict[str, Any]],
    path_of: Callable[[dict[str, Any]], str],
    list_path: str,
    ready: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> Phase:
    before = api.apiserver_requests()
    t0 = time.monotonic()
    api.create_all(path_of, objs)
    t_created = time.monotonic()
    n = len(objs)

    def all_ready() -> tuple[bool, str]:
        k = sum(1 for o in api.list(list_path) if ready(o))
        return k >= n, f"{k}/{n} ready"

    t_done = wait(f"{name}: all ready", all_ready, timeout)
    ph = Phase(name, t_done - t0, t_created - t0, api.apiserver_requests() - before)
    log(f"{name}: {n} ready in {ph.seconds:.1f}s (created in {ph.create_seconds:.1f}s)")
    return ph


def deployment_ready(d: dict[str, Any]) -> bool:
    st = d.get("status") or {}
    return bool(
        st.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and st.get("availableReplicas") == 1
        and st.get("updatedReplicas") == 1
    )


def idep_ready(o: dict[str, Any]) -> bool:
    st = o.get("status") or {}
    if st.get("observedGeneration") != o["metadata"]["generation"]:
        return False
    return any(x["type"] == "Ready" and x["status"] == "True" for x in st.get("conditions") or [])


def operator_requests(op: OperatorProcess) -> int:
    return int(
        sum(
            v
            for k, v in op.metrics().items()
            if k.startswith("edgeai_operator_api_requests_total{") and 'resource="leases"' not in k
        )
    )


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--count", type=int, default=None, help="objects per phase (default: one per node)")
    ap.add_argument("--plane", default="scale")
    ap.add_argument("--threads", type=int, default=16, help="client concurrency for creating objects")
    ap.add_argument("--timeout", type=float, default=900.0, help="per phase")
    ap.add_argument("--keep", action="store_true", help="leave the plane up afterwards")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(list(argv) if argv is not None else None)
    count = min(a.count or a.nodes, a.nodes)
    nodes = node_names(a.nodes)

    log(f"plane {a.plane!r} with {a.nodes} edge nodes")
    t = time.monotonic()
    plane = localplane.up(a.plane, nodes=a.nodes)
    log(f"plane up in {time.monotonic() - t:.0f}s")
    relax_node_monitor(plane)
    kube = localplane.Kube(plane.kubeconfig)
    api = Api(str(plane.kubeconfig), a.threads)
    op: OperatorProcess | None = None
    try:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
        for ns in (NS_NATIVE, NS_OP):
            kube.kubectl("create", "namespace", ns, check=False)
        tmp = Path(tempfile.mkdtemp(prefix="edgeai-scale-"))
        with ModelServer(tmp / "models") as server:
            model_path = build_tabular(tmp / "models" / "tabular.onnx")
            dg = hash_file(model_path)
            art = Artifact(
                "default",
                "fp32",
                server.url("tabular.onnx"),
                dg.sha256,
                size=dg.size,
                accelerators=("cpu",),
                verified=True,
            )

            op = OperatorProcess(
                str(plane.kubeconfig),
                tmp / "operator.log",
                namespace="default",
                identity="bench",
                env={"EDGEAI_RESYNC_SECONDS": "3600"},
            ).start()
            op.wait_ready(120)

            def fleet_known() -> tuple[bool, str]:
                devs = api.list(f"/apis/{c.API_VERSION}/{c.PLURAL_DEVICE}")
                online = sum(1 for d in devs if (d.get("status") or {}).get("online"))
                return online >= a.nodes, f"{online}/{a.nodes} devices online"

            wait("operator discovers the fleet", fleet_known, 600, 2.0)
            idle_rss = op.peak_rss_kib()
            model = {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND_MODEL,
                "metadata": {"name": "tabular", "namespace": NS_OP},
                "spec": {"version": "1.0.0", "source": {"uri": art.uri, "sha256": art.sha256, "size": art.size}},
            }
            api.call("POST", f"/apis/{c.API_VERSION}/namespaces/{NS_OP}/{c.PLURAL_MODEL}", body=model)

            def verified() -> tuple[bool, str]:
                m = api.call("GET", f"/apis/{c.API_VERSION}/namespaces/{NS_OP}/{c.PLURAL_MODEL}/tabular")
                ok = any(
                    x["type"] == "Verified" and x["status"] == "True"
                    for x in (m.get("status") or {}).get("conditions") or []
                )
                return ok, str((m.get("status") or {}).get("phase"))

            wait("model verified", verified, 120)

            # 1. native baseline
            natives = [native_deployment(i, nodes[i], art) for i in range(count)]
            native = run_phase(
                api,
                "native Deployments",
                natives,
                lambda o: f"/apis/apps/v1/namespaces/{NS_NATIVE}/deployments",
                f"/apis/apps/v1/namespaces/{NS_NATIVE}/deployments",
                deployment_ready,
                a.timeout,
            )
            kube.kubectl("delete", "deployments", "--all", "-n", NS_NATIVE, "--wait=false", timeout=600)

            def native_gone() -> tuple[bool, str]:
                n = len(api.list(f"/api/v1/namespaces/{NS_NATIVE}/pods"))
                return n == 0, f"{n} pods left"

            wait("native pods gone", native_gone, 600, 2.0)

            # 2. operator path
            ops_before = operator_requests(op)
            cpu_before = op.cpu_seconds() or 0.0
            ideps = [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": c.KIND_IDEP,
                    "metadata": {"name": f"idep-{i}", "namespace": NS_OP},
                    "spec": {"model": "tabular", "deviceSelector": selector(i, nodes[i]), "runtime": {"threads": 1}},
                }
                for i in range(count)
            ]
            operator = run_phase(
                api,
                "InferenceDeployments",
                ideps,
                lambda o: f"/apis/{c.API_VERSION}/namespaces/{NS_OP}/{c.PLURAL_IDEP}",
                f"/apis/{c.API_VERSION}/namespaces/{NS_OP}/{c.PLURAL_IDEP}",
                idep_ready,
                a.timeout,
            )
            op_requests = operator_requests(op) - ops_before
            op_cpu = (op.cpu_seconds() or 0.0) - cpu_before
            peak = op.peak_rss_kib() or 0
            m = op.metrics()
            for k, v in sorted(m.items()):
                if k.startswith(
                    (
                        "edgeai_operator_reconcile_duration_seconds_sum",
                        "edgeai_operator_reconcile_duration_seconds_count",
                        "edgeai_operator_api_requests_total",
                        "edgeai_operator_writes_skipped_total",
                        "edgeai_operator_watch_events_total",
                        "edgeai_operator_api_request_duration_seconds_sum",
                        "edgeai_operator_api_request_duration_seconds_count",
                    )
                ):
                    log(f"  {k} {v:g}")
            children = len(api.list(f"/apis/apps/v1/namespaces/{NS_OP}/deployments"))
            assert children == count, f"expected {count} workloads, found {children}"
    finally:
        if op is not None:
            op.stop()
        if not a.keep:
            localplane.down(a.plane)

    ratio = operator.seconds / native.seconds if native.seconds else float("nan")
    rows = [
        ("time to all Ready (s)", f"{native.seconds:.1f}", f"{operator.seconds:.1f}", f"{ratio:.2f}x"),
        ("of which creating the objects (s)", f"{native.create_seconds:.1f}", f"{operator.create_seconds:.1f}", ""),
        (
            "API requests served by the cluster (no heartbeats)",
            str(native.cluster_requests),
            str(operator.cluster_requests),
            f"{operator.cluster_requests / native.cluster_requests:.2f}x" if native.cluster_requests else "",
        ),
        ("API requests made by the operator", "-", str(op_requests), f"{op_requests / count:.1f} per object"),
        ("operator CPU time during the phase (s)", "-", f"{op_cpu:.1f}", ""),
        ("operator peak RSS (MiB)", "-", f"{peak / 1024:.0f}", f"idle with the fleet: {(idle_rss or 0) / 1024:.0f}"),
    ]
    lines = [
        "### Scale benchmark: InferenceDeployments vs plain Deployments",
        "",
        f"- {a.nodes} kwok edge nodes, {count} objects per phase (each selects/pins one device), "
        f"client concurrency {a.threads}; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, Kubernetes {localplane.K8S_VERSION}.",
        "- native: Deployments created directly, the same pod template the operator builds; operator: "
        "InferenceDeployments with mixed selectors, the operator places, creates and reports.",
        "",
        "| measure | native Deployments | InferenceDeployments | ratio / note |",
        "|---|---:|---:|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows],
        "",
        f"Target: within 1.5x of native, peak RSS under 300 MiB: "
        f"{'met' if ratio <= 1.5 and peak / 1024 < 300 else 'NOT met'}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.count is None or a.count == a.nodes:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        log(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
