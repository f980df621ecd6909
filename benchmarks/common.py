"""What the fleet benchmarks share: a local plane of N kwok edge nodes with the CRDs, a verified
model served over HTTP, the operator process, the benchmark's own API client and waits.

Not a suite (no __main__): `python -m benchmarks` only runs packages.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

import plane as localplane  # type: ignore[import-not-found]  # noqa: E402  (hack/ is outside mypy_path)

from edge_operator.core.manifests import Owner, WorkloadInputs, child_name, child_pod  # noqa: E402
from edge_operator.core.placement import Artifact  # noqa: E402
from edge_operator.testing import ModelServer, OperatorProcess, parse_metrics  # noqa: E402
from edge_runtime.artifacts.integrity import hash_file  # noqa: E402
from edge_runtime.models_zoo import build_tabular  # noqa: E402
from edgeai_api import constants as c  # noqa: E402
from edgeai_api.inferencedeployment import RuntimeSpec  # noqa: E402

__all__ = [
    "ROOT",
    "Api",
    "Fleet",
    "Log",
    "conditions_true",
    "fleet",
    "localplane",
    "logger",
    "node_names",
    "operator_workload",
    "relax_node_monitor",
    "text_table",
    "wait",
]
HEARTBEAT_RESOURCES = {"leases", "nodes"}
Log = Callable[[str], None]


def logger(suite: str) -> Log:
    def log(msg: str) -> None:
        print(f"[{suite} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


class ApiHTTPError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """The benchmark's own client: raw JSON, a pooled connection, N threads."""

    def __init__(self, kubeconfig: str, threads: int) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
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
        data: bytes = resp.read()  # type: ignore[no-untyped-call]
        if resp.status >= 400:
            raise ApiHTTPError(resp.status, f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
        return data

    def list(self, path: str) -> builtins.list[dict[str, Any]]:
        # resourceVersion=0: served from the API server's watch cache, as a controller's informer would.
        return self.call("GET", path, query=[("resourceVersion", "0")])["items"]  # type: ignore[no-any-return]

    def create_all(self, path_of: Callable[[dict[str, Any]], str], objs: builtins.list[dict[str, Any]]) -> None:
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


def relax_node_monitor(plane: localplane.Plane, log: Log) -> None:
    """Restart this plane's controller-manager without the node-lifecycle controller.

    With 1,000 kwok nodes on a busy 2-CPU machine kwok sometimes renews node leases late (seen
    past even a 120 s grace); the node blips NotReady, the node-lifecycle controller marks its
    pods NotReady, and kwok, believing them Ready already, never sets them back. That stalls
    either phase at random and measures the machine, not the controllers. No node goes offline
    in these benchmarks, so their own planes run without that controller.
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
    """Poll `pred` until it says done; the monotonic time it did.

    A look that fails on the wire (a list cut off mid-body by a busy API server, a reset connection)
    is a look that saw nothing, not the end of a half-hour benchmark: it counts as "not yet" and is
    named in the timeout message if it keeps failing."""
    import urllib3

    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        try:
            ok, last = pred()
        except ApiHTTPError as e:
            if e.status < 500 and e.status != 429:
                raise  # the benchmark asked for something wrong: waiting will not mend it
            ok, last = False, f"last look failed: {e}"
        except (OSError, urllib3.exceptions.HTTPError) as e:
            ok, last = False, f"last look failed: {type(e).__name__}: {e}"
        if ok:
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s ({last})")


def node_names(n: int) -> list[str]:
    return [f"edge-{i}" for i in range(n)]


def operator_workload(i: int, node: str, art: Artifact, namespace: str) -> dict[str, Any]:
    """A Deployment of exactly the Pod the operator builds for that device, minus the owner: what a person
    would run by hand, one pinned replica per device, rolling with surge as the operator does."""
    inp = WorkloadInputs(
        namespace=namespace,
        owner=Owner(c.API_VERSION, c.KIND_IDEP, f"native-{i}", "x"),
        model="tabular",
        model_version="1.0.0",
        device=node,
        node=node,
        artifact=art,
        image=c.DEFAULT_RUNTIME_IMAGE,
        runtime=RuntimeSpec(threads=1),
    )
    pod = child_pod(inp)
    # Not managed by the operator: its server-side label selector must not see these.
    labels = {**pod["metadata"]["labels"], c.L_MANAGED_BY: "benchmark"}
    annotations = {k: v for k, v in pod["metadata"]["annotations"].items() if k not in (c.A_SPEC_HASH, c.A_REVISION)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": child_name(inp.owner.name, node), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {k: labels[k] for k in (c.L_IDEP, c.L_DEVICE)}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod["spec"]},
        },
    }


def conditions_true(obj: dict[str, Any], kind: str) -> bool:
    return any(x["type"] == kind and x["status"] == "True" for x in (obj.get("status") or {}).get("conditions") or [])


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, for a terminal and a .txt file alike."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


@dataclass
class Fleet:
    """A plane of N kwok edge nodes with the CRDs, namespaces and a model served over HTTP."""

    plane: localplane.Plane
    kube: localplane.Kube
    api: Api
    art: Artifact  # the tabular model as the operator sees it once verified
    tmp: Path
    nodes: int
    log: Log
    op: OperatorProcess | None = field(default=None)

    def start_operator(self, source: Path | None = None, log_name: str = "operator.log") -> OperatorProcess:
        """The operator as its own process, ready and knowing every device online.

        `source`: another checkout of the project (e.g. a git worktree at an earlier commit) whose
        operator runs instead of this one, for a before/after comparison in the same run."""
        env = {"EDGEAI_RESYNC_SECONDS": "3600"}
        if source is not None:
            # Ahead of the editable install's path entries: that checkout's packages win.
            env["PYTHONPATH"] = os.pathsep.join([str(source / "operator"), str(source)])
        self.op = OperatorProcess(
            str(self.plane.kubeconfig),
            self.tmp / log_name,
            namespace="default",
            identity="bench",
            env=env,
            cwd=str(source) if source is not None else None,
        ).start()
        # A fresh operator lists the whole fleet (and whatever a previous round left terminating) first.
        self.op.wait_ready(600)

        def fleet_known() -> tuple[bool, str]:
            devs = self.api.list(f"/apis/{c.API_VERSION}/{c.PLURAL_DEVICE}")
            online = sum(1 for d in devs if (d.get("status") or {}).get("online"))
            return online >= self.nodes, f"{online}/{self.nodes} devices online"

        wait("operator discovers the fleet", fleet_known, 600, 2.0)
        return self.op

    def create_model(self, namespace: str, name: str = "tabular") -> None:
        """The EdgeModel of `art`, waited on until the operator verified it."""
        art = self.art
        model = {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND_MODEL,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"version": "1.0.0", "source": {"uri": art.uri, "sha256": art.sha256, "size": art.size}},
        }
        path = f"/apis/{c.API_VERSION}/namespaces/{namespace}/{c.PLURAL_MODEL}"
        self.api.call("POST", path, body=model)

        def verified() -> tuple[bool, str]:
            m = self.api.call("GET", f"{path}/{name}")
            return conditions_true(m, "Verified"), str((m.get("status") or {}).get("phase"))

        wait("model verified", verified, 120)


@contextlib.contextmanager
def fleet(
    plane_name: str, nodes: int, namespaces: Sequence[str], threads: int, keep: bool, log: Log
) -> Iterator[Fleet]:
    """Bring the plane up (or reuse it), yield the Fleet, stop the operator and the plane after."""
    log(f"plane {plane_name!r} with {nodes} edge nodes")
    t = time.monotonic()
    plane = localplane.up(plane_name, nodes=nodes)
    log(f"plane up in {time.monotonic() - t:.0f}s")
    f: Fleet | None = None
    try:
        relax_node_monitor(plane, log)
        kube = localplane.Kube(plane.kubeconfig)
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
        for ns in namespaces:
            kube.kubectl("create", "namespace", ns, check=False)
        tmp = Path(tempfile.mkdtemp(prefix=f"edgeai-{plane_name}-"))
        with ModelServer(tmp / "models") as server:
            dg = hash_file(build_tabular(tmp / "models" / "tabular.onnx"))
            art = Artifact(
                "default",
                "fp32",
                server.url("tabular.onnx"),
                dg.sha256,
                size=dg.size,
                accelerators=("cpu",),
                verified=True,
            )
            f = Fleet(plane, kube, Api(str(plane.kubeconfig), threads), art, tmp, nodes, log)
            yield f
    finally:
        if f is not None and f.op is not None:
            f.op.stop()
        if not keep:
            localplane.down(plane_name)
