"""Rollout in waves on N kwok edge devices, against a DaemonSet rolling update on the same nodes.

    python -m benchmarks rollout [--nodes 1000] [--quick] [--plane rollout] [--keep]

One local plane (hack/plane.py) with N simulated edge nodes, two phases in the same run:

1. native baseline: one DaemonSet across the N edge nodes (the operator's pod template,
   `maxSurge 10%, maxUnavailable 0`, so every node keeps a serving pod as the operator's
   per-device surge does). Timed: a good template change until every node runs it Ready;
   then a bad one (pods that never get Ready, `sim.edgeai.io/ready=false`, see
   hack/kwok-stages.yaml): the DaemonSet controller has no health gate and no automatic
   rollback, so it keeps replacing pods until its surge budget is stuck; after a bounded
   wait the template is set back by hand (what `kubectl rollout undo` does) and the time
   until every node is Ready on the good template again is measured.
2. operator: one EdgeModel and one InferenceDeployment over the N devices with
   `canary 10, waves [30%, 100%]` (three waves), `maxUnavailable 10%`, gate `readySeconds 5`.
   Timed: the first revision placed; a good revision (a pod annotation) from the spec change
   until `status.rollout` is Complete with every device on it; a bad revision from the spec
   change to the first gate failure, and from that failure until the fleet is back on the
   last good revision. Devices that ever received the bad revision are counted.

Results print as a table and go to benchmarks/results/rollout.md.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.scale.__main__ import ROOT, Api, native_deployment, node_names, relax_node_monitor, wait

sys.path.insert(0, str(ROOT / "hack"))

import plane as localplane
from edge_operator import constants as c
from edge_operator.placement import Artifact
from edge_operator.testing import ModelServer, OperatorProcess

from edge_runtime.integrity import hash_file
from edge_runtime.models_zoo import build_tabular

RESULTS = ROOT / "benchmarks" / "results" / "rollout.md"
NS = "bench-rollout"
BAD = {"sim.edgeai.io/ready": "false"}
GROUP_PATH = f"/apis/{c.API_VERSION}/namespaces/{NS}"


def log(msg: str) -> None:
    print(f"[rollout {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- native


def daemonset(art: Artifact) -> dict[str, Any]:
    """The operator's pod template, unpinned, as one DaemonSet over every edge node."""
    d = native_deployment(0, "edge-0", art)
    tpl = copy.deepcopy(d["spec"]["template"])
    del tpl["spec"]["affinity"]  # the DaemonSet controller places one per node
    tpl["spec"]["nodeSelector"] = {"node-role.kubernetes.io/edge": ""}
    labels = {"app": "bench-ds"}
    tpl["metadata"]["labels"] = labels
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "bench-ds", "namespace": NS},
        "spec": {"selector": {"matchLabels": labels}, "template": tpl, "revisionHistoryLimit": 3,
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": "10%", "maxUnavailable": 0}}},
    }


def ds_converged(api: Api, n: int) -> tuple[bool, str]:
    d = api.call("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/bench-ds")
    st = d.get("status") or {}
    ok = (st.get("observedGeneration", 0) >= d["metadata"]["generation"] and st.get("updatedNumberScheduled") == n
          and st.get("numberAvailable") == n and st.get("numberReady") == n and not st.get("numberUnavailable"))
    return ok, (f"{st.get('updatedNumberScheduled')} updated, {st.get('numberReady')} ready, "
                f"{st.get('numberUnavailable', 0)} unavailable of {n}")


def ds_patch_annotations(api: Api, ann: dict[str, str | None]) -> None:
    api.call("PATCH", f"/apis/apps/v1/namespaces/{NS}/daemonsets/bench-ds",
             body={"spec": {"template": {"metadata": {"annotations": ann}}}})


def pods_with(api: Api, key: str, value: str) -> int:
    pods = api.list(f"/api/v1/namespaces/{NS}/pods")
    return sum(1 for p in pods if (p["metadata"].get("annotations") or {}).get(key) == value
               and not p["metadata"].get("deletionTimestamp"))


def native_phase(api: Api, art: Artifact, n: int, bad_wait: float, timeout: float) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.monotonic()
    api.call("POST", f"/apis/apps/v1/namespaces/{NS}/daemonsets", body=daemonset(art))
    out["initial"] = wait("DaemonSet: every node Ready", lambda: ds_converged(api, n), timeout, 1.0) - t0
    log(f"native: initial {out['initial']:.1f}s")

    t0 = time.monotonic()
    ds_patch_annotations(api, {"bench.edgeai.io/rev": "2"})
    out["good"] = wait("DaemonSet: good update", lambda: ds_converged(api, n), timeout, 1.0) - t0
    log(f"native: good update {out['good']:.1f}s")

    t0 = time.monotonic()
    ds_patch_annotations(api, {"bench.edgeai.io/rev": "3", **BAD})
    time.sleep(bad_wait)  # no gate, no rollback: it goes on until its surge budget is stuck
    out["exposed"] = pods_with(api, "sim.edgeai.io/ready", "false")
    log(f"native: bad update left {bad_wait:.0f}s: {out['exposed']:.0f} nodes got it; undoing by hand")
    t_undo = time.monotonic()
    ds_patch_annotations(api, {"bench.edgeai.io/rev": "2", "sim.edgeai.io/ready": None})
    out["restore"] = wait("DaemonSet: undo", lambda: ds_converged(api, n), timeout, 1.0) - t_undo
    log(f"native: undo converged in {out['restore']:.1f}s")
    api.call("DELETE", f"/apis/apps/v1/namespaces/{NS}/daemonsets/bench-ds")

    def gone() -> tuple[bool, str]:
        k = len(api.list(f"/api/v1/namespaces/{NS}/pods"))
        return k == 0, f"{k} pods left"

    wait("native pods gone", gone, timeout, 2.0)
    return out


# --------------------------------------------------------------------------- operator


def idep_status(api: Api) -> dict[str, Any]:
    return api.call("GET", f"{GROUP_PATH}/{c.PLURAL_IDEP}/fleet").get("status") or {}


def rollout_at(st: dict[str, Any]) -> str:
    r = st.get("rollout") or {}
    return (f"revision {r.get('revision')} {r.get('phase')} wave {int(r.get('wave') or 0) + 1}/{r.get('waves')}, "
            f"{st.get('updated')} updated, {st.get('ready')} ready of {st.get('placed')}")


def wait_rollout(api: Api, what: str, revision: int, phases: tuple[str, ...], n: int, timeout: float,
                 seen: dict[str, int] | None = None) -> float:
    last_print = [0.0]

    def check() -> tuple[bool, str]:
        st = idep_status(api)
        r = st.get("rollout") or {}
        if seen is not None:
            on = sum(1 for row in st.get("devices") or [] if row.get("revision") == revision)
            seen["max"] = max(seen.get("max", 0), on)
        if time.monotonic() - last_print[0] >= 10:
            last_print[0] = time.monotonic()
            log(f"  {what}: {rollout_at(st)}")
        done = r.get("revision") == revision and r.get("phase") in phases
        if done and phases[0] in ("Complete", "RolledBack"):
            done = st.get("ready") == n
        return done, rollout_at(st)

    return wait(what, check, timeout, 0.5)


def operator_phase(api: Api, art: Artifact, n: int, deadline: int, timeout: float) -> dict[str, float]:
    out: dict[str, float] = {}
    model = {"apiVersion": c.API_VERSION, "kind": c.KIND_MODEL, "metadata": {"name": "tabular", "namespace": NS},
             "spec": {"version": "1.0.0", "source": {"uri": art.uri, "sha256": art.sha256, "size": art.size}}}
    api.call("POST", f"{GROUP_PATH}/{c.PLURAL_MODEL}", body=model)
    rollout = {"canary": 10, "waves": ["30%", "100%"], "maxUnavailable": "10%",
               "healthGate": {"readySeconds": 5, "progressDeadlineSeconds": deadline}, "onFailure": "Rollback"}
    idep = {"apiVersion": c.API_VERSION, "kind": c.KIND_IDEP, "metadata": {"name": "fleet", "namespace": NS},
            "spec": {"model": "tabular", "runtime": {"threads": 1}, "rollout": rollout}}
    t0 = time.monotonic()
    api.call("POST", f"{GROUP_PATH}/{c.PLURAL_IDEP}", body=idep)
    out["initial"] = wait_rollout(api, "first revision", 1, ("Complete",), n, timeout) - t0
    log(f"operator: revision 1 on {n} devices in {out['initial']:.1f}s")

    def patch(ann: dict[str, str]) -> None:
        api.call("PATCH", f"{GROUP_PATH}/{c.PLURAL_IDEP}/fleet",
                 body={"spec": {"runtime": {"podAnnotations": ann}}})

    t0 = time.monotonic()
    patch({"bench.edgeai.io/rev": "2"})
    out["good"] = wait_rollout(api, "good revision", 2, ("Complete",), n, timeout) - t0
    log(f"operator: revision 2 through 3 waves in {out['good']:.1f}s")

    seen: dict[str, int] = {}
    t0 = time.monotonic()
    patch({"bench.edgeai.io/rev": "3", **BAD})
    t_fail = wait_rollout(api, "bad revision fails its gate", 3, ("RollingBack", "RolledBack"), n, timeout, seen)
    out["to_failure"] = t_fail - t0
    t_back = wait_rollout(api, "rolled back", 3, ("RolledBack",), n, timeout, seen)
    out["restore"] = t_back - t_fail
    out["exposed"] = seen.get("max", 0)
    st = idep_status(api)
    assert st.get("currentRevision") == 2, st.get("currentRevision")
    # The mechanism alone: the same fleet, one wave and no gate (spec.rollout removed).
    t0 = time.monotonic()
    api.call("PATCH", f"{GROUP_PATH}/{c.PLURAL_IDEP}/fleet",
             body={"spec": {"rollout": None, "runtime": {"podAnnotations": {"bench.edgeai.io/rev": "4",
                                                                             "sim.edgeai.io/ready": None}}}})
    out["good_flat"] = wait_rollout(api, "one wave, no gate", 4, ("Complete",), n, timeout) - t0
    log(f"operator: failure after {out['to_failure']:.1f}s, rolled back {out['restore']:.1f}s later, "
        f"{out['exposed']} devices got the bad revision")
    return out


# --------------------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks rollout", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="60 nodes: a few minutes")
    ap.add_argument("--plane", default="rollout")
    ap.add_argument("--deadline", type=int, default=60, help="healthGate.progressDeadlineSeconds for the bad wave")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per step")
    ap.add_argument("--keep", action="store_true", help="leave the plane up afterwards")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(list(argv) if argv is not None else None)
    n = 60 if a.quick else a.nodes
    node_names(n)

    log(f"plane {a.plane!r} with {n} edge nodes")
    t = time.monotonic()
    plane = localplane.up(a.plane, nodes=n)
    log(f"plane up in {time.monotonic() - t:.0f}s")
    relax_node_monitor(plane)
    kube = localplane.Kube(plane.kubeconfig)
    api = Api(str(plane.kubeconfig), 8)
    op: OperatorProcess | None = None
    try:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
        kube.kubectl("create", "namespace", NS, check=False)
        tmp = Path(tempfile.mkdtemp(prefix="edgeai-rollout-"))
        with ModelServer(tmp / "models") as server:
            path = build_tabular(tmp / "models" / "tabular.onnx")
            dg = hash_file(path)
            art = Artifact("default", "fp32", server.url("tabular.onnx"), dg.sha256, size=dg.size,
                           accelerators=("cpu",), verified=True)
            native = native_phase(api, art, n, bad_wait=float(a.deadline), timeout=a.timeout)

            op = OperatorProcess(str(plane.kubeconfig), tmp / "operator.log", namespace="default",
                                 identity="bench", env={"EDGEAI_RESYNC_SECONDS": "3600"}).start()
            op.wait_ready(120)

            def fleet_known() -> tuple[bool, str]:
                devs = api.list(f"/apis/{c.API_VERSION}/{c.PLURAL_DEVICE}")
                online = sum(1 for d in devs if (d.get("status") or {}).get("online"))
                return online >= n, f"{online}/{n} devices online"

            wait("operator discovers the fleet", fleet_known, 600, 2.0)
            oper = operator_phase(api, art, n, a.deadline, a.timeout)
            peak = op.peak_rss_kib() or 0
    finally:
        if op is not None:
            op.stop()
        if not a.keep:
            localplane.down(a.plane)

    def ratio(o: float, nat: float) -> str:
        return f"{o / nat:.2f}x" if nat else "-"

    rows = [
        ("first revision on every device (s)", f"{native['initial']:.1f}", f"{oper['initial']:.1f}",
         ratio(oper["initial"], native["initial"])),
        ("good update, spec change -> every device updated (s)", f"{native['good']:.1f}", f"{oper['good']:.1f}",
         ratio(oper["good"], native["good"])),
        ("good update, one wave and no gate (s)", f"{native['good']:.1f}", f"{oper['good_flat']:.1f}",
         ratio(oper["good_flat"], native["good"])),
        ("bad update: devices that received it", f"{native['exposed']:.0f}", f"{oper['exposed']:.0f}",
         ratio(oper["exposed"], native["exposed"])),
        ("bad update: spec change -> first failure seen (s)", "never (no gate)", f"{oper['to_failure']:.1f}", ""),
        ("bad update: failure/undo -> fleet restored (s)", f"{native['restore']:.1f} (by hand)",
         f"{oper['restore']:.1f} (automatic)", ratio(oper["restore"], native["restore"])),
    ]
    head = ("", "DaemonSet (native)", "edgeai operator", "operator/native")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    table = "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])
    env = (f"{n} kwok edge devices, 3 waves (canary 10, 30%, 100%), maxUnavailable 10% (DaemonSet: maxSurge 10%), "
           f"gate readySeconds 5, progressDeadlineSeconds {a.deadline}; operator peak RSS {peak / 1024:.0f} MiB; "
           f"{platform.machine()}, {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(table)
    print(env)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(f"# python -m benchmarks rollout --nodes {n}\n\n```\n{table}\n```\n\n{env}\n")
    log(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
