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
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Api,
    conditions_true,
    fleet,
    localplane,
    logger,
    node_names,
    operator_workload,
    wait,
)
from edge_operator.testing import OperatorProcess
from edgeai_api import constants as c

RESULTS = ROOT / "benchmarks" / "results" / "scale.md"
NS_NATIVE = "bench-native"
NS_OP = "bench-operator"
log = logger("scale")


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
    return conditions_true(o, "Ready")


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

    with fleet(a.plane, a.nodes, (NS_NATIVE, NS_OP), a.threads, a.keep, log) as f:
        api, kube, art = f.api, f.kube, f.art
        op = f.start_operator()
        idle_rss = op.peak_rss_kib()
        f.create_model(NS_OP)

        # 1. native baseline
        natives = [operator_workload(i, nodes[i], art, NS_NATIVE) for i in range(count)]
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
