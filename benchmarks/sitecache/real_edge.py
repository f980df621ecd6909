"""`python -m benchmarks sitecache --real-edge`: time to fetch a model on a real KubeEdge edge node, from
the origin over an emulated WAN link, and through a site cache on a miss (the site's first device) and
on a hit (every later device), side by side in one run.

Real parts: one local plane with one real KubeEdge node (hack/plane.py up --real-edge 1: cloudcore,
edgecore, the node's containerd, the images built from docker/ in the plane's registry). The origin is
the suite's HTTP server with a paced uplink (--origin-mbit, a token bucket: the emulated WAN between the
cloud and the site), on the cloud bridge's address. The site cache is a real `edge-runtime site-cache`
process on that address too, reached by the node over its own link as a gateway is reached over a site's
LAN; its uplink to the origin is the paced one. Each device is a Pod on the real node running the
operator's own `fetch` init container (built by core/manifests.child_pod for a device with
spec.siteCache: the runtime image, its args, its security context and memory limit, its mirror read by
KubeEdge from the real `<name>-site-cache` ConfigMap), into an empty model cache of its own, timed by a
wrapper around the command (the fetch's whole run, Python start-up included) that hashes what the
device kept. Then (unless --no-operator) each path once more through a model server the operator itself
places on the node (an InferenceDeployment, with spec.siteCache.endpoints naming the cache), timed by its
`fetch` init container's start and end in the Pod's status (whole seconds), the node's copy hashed.
Every row is checked against the origin's and the cache's own counters: a "hit" that reached the
origin, or a "miss" that bypassed the cache, fails the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, localplane, logger, text_table
from benchmarks.sitecache.__main__ import Origin, start_cache
from edge_operator.core import site_cache
from edge_operator.core.manifests import Owner, WorkloadInputs, child_pod
from edge_operator.core.placement import Artifact
from edge_operator.testing import OperatorProcess
from edge_runtime.models_zoo import build_tabular
from edgeai_api import constants as c

NS = "bench-sitecache"
IDEP = "bench"  # the InferenceDeployment the ConfigMap and the fetch containers are named for
SITE = "site-a"
RESULTS = ROOT / "benchmarks" / "results"
log = logger("sitecache real-edge")

# Runs the fetch container's own command and times it; then hashes what the device kept, so every row
# shows the bytes are the artifact's whichever way they came. The result goes to the termination
# message, which the node reports in the Pod's status (kubectl logs needs cloudStream, off here).
WRAPPER = r"""
import hashlib, json, subprocess, sys, time
argv = sys.argv[1:]
t = time.monotonic()
rc = subprocess.call(argv)
out = {"rc": rc, "seconds": round(time.monotonic() - t, 3)}
if rc == 0:
    want = argv[argv.index("--sha256") + 1]
    h, n = hashlib.sha256(), 0
    with open(argv[argv.index("--cache") + 1] + "/sha256/" + want, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
            n += len(b)
    out.update(sha256=h.hexdigest(), bytes=n)
with open("/dev/termination-log", "w") as f:
    f.write(json.dumps(out))
sys.exit(rc)
"""


def hidden_for(mib: float) -> int:
    """The tabular model's hidden width for a model of about `mib` MiB (its hidden x hidden float32 layer)."""
    return max(32, int((mib * 2**20 / 4) ** 0.5))


def fetch_pod(name: str, node: str, image: str, uri: str, sha: str, size: int, through_cache: bool) -> dict[str, Any]:
    """A device's fetch, as the operator builds it, in a Pod of its own on the real node."""
    owner = Owner(c.API_VERSION, c.KIND_IDEP, IDEP, "bench")
    mirror = site_cache.mirror_ref(IDEP, c.SITE_LABEL, {c.SITE_LABEL: SITE}) if through_cache else None
    inp = WorkloadInputs(namespace=NS, owner=owner, model="bench", model_version="1", device=node, node=node,
                         artifact=Artifact("default", "fp32", uri, sha, size=size, verified=True), image=image,
                         mirror=mirror)
    tmpl = child_pod(inp)["spec"]
    (fetch,) = [ctr for ctr in tmpl["initContainers"] if ctr["name"] == "fetch"]
    fetch = dict(fetch, command=["python", "-c", WRAPPER], args=[*fetch["command"], *fetch["args"]],
                 terminationMessagePolicy="File")
    # A device that has never had the model: an empty cache where the node's would be.
    volumes = [{"name": m["name"], "emptyDir": {}} for m in fetch["volumeMounts"]]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
                     "enableServiceLinks": False, "securityContext": tmpl["securityContext"],
                     "tolerations": tmpl["tolerations"], "containers": [fetch], "volumes": volumes}}


def run_pod(kube: Any, pod: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Apply, wait for the Pod to end, return the wrapper's result; the Pod is deleted."""
    name = pod["metadata"]["name"]
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = json.loads(kube.kubectl("get", "pod", name, "-n", NS, "-o", "json").stdout)
            st = got.get("status") or {}
            if st.get("phase") in ("Succeeded", "Failed"):
                term = ((st.get("containerStatuses") or [{}])[0].get("state") or {}).get("terminated") or {}
                try:
                    return dict(json.loads(term.get("message") or ""))
                except ValueError:
                    raise SystemExit(f"pod {name} ended {st.get('phase')} without a result: {term}") from None
            time.sleep(0.3)
        raise SystemExit(f"pod {name} did not finish in {timeout:.0f}s")
    finally:
        kube.kubectl("delete", "pod", name, "-n", NS, "--wait=false", check=False)


def cache_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v1/status", timeout=10) as r:
        return dict(json.loads(r.read()))


def run(plane_name: str, reps: int, model_mib: float, mbit: float, keep: bool, operator: bool = True) -> int:
    import edgenodes  # type: ignore[import-not-found]  # hack/ is outside mypy_path

    why = edgenodes.containers_supported()
    if why:
        print(f"sitecache --real-edge skipped: {why}")
        return 0
    load0 = os.getloadavg()
    p = localplane.up(plane_name, nodes=0, real_edge=1)
    kube = localplane.Kube(p.kubeconfig)
    st = p.state() or {}
    image, node = st["real_edge"]["images"]["runtime"], st["real_edge"]["nodes"][0]
    edge = edgenodes.real_edge_of(p)
    host = edge.net.cloud_ip  # the cloud side of the node's link: where the origin and the gateway's cache listen
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sitecache-edge-") as d:
            tmp = Path(d)
            model = build_tabular(tmp / "model.onnx", hidden=hidden_for(model_mib), seed=7)
            data = model.read_bytes()
            sha, size = hashlib.sha256(data).hexdigest(), len(data)
            origin = Origin(data, mbit, host=host)
            threading.Thread(target=origin.serve_forever, daemon=True).start()
            uri = f"http://{host}:{origin.server_address[1]}/model.onnx"
            log(f"model {size / 2**20:.1f} MiB; origin {uri}, uplink {mbit:g} Mbit/s; node {node}; {reps} reps")
            kube.kubectl("create", "namespace", NS, check=False)
            try:
                rows = _measure(kube, tmp, node, image, uri, sha, size, origin, host, reps)
                if operator:
                    rows += _operator_rows(kube, p, node, image, uri, sha, origin, host, tmp)
            finally:
                origin.shutdown()
                origin.server_close()
                kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    finally:
        if not keep:
            localplane.down(plane_name)
    return report(rows, size, mbit, reps, load0)


def _measure(kube: Any, tmp: Path, node: str, image: str, uri: str, sha: str, size: int, origin: Origin,
             host: str, reps: int) -> list[dict[str, Any]]:
    # The image onto the node first: no row pays for a pull.
    warm = fetch_pod("warm-up", node, image, uri, sha, size, through_cache=False)
    warm["spec"]["containers"][0].update(command=["python", "-c", "open('/dev/termination-log','w').write('{}')"],
                                         args=[])
    run_pod(kube, warm)
    rows = []
    for rep in range(reps):
        proc, url = start_cache(tmp, rep, host=host)  # an empty cache each repetition: its first device misses
        try:
            cm = site_cache.config_map(Owner(c.API_VERSION, c.KIND_IDEP, IDEP, "bench"), NS, {SITE: url})
            del cm["metadata"]["ownerReferences"]  # no InferenceDeployment here: the GC would take it away
            kube.kubectl("apply", "-f", "-", input=json.dumps(cm))
            for mode, through in (("origin", False), ("miss", True), ("hit", True)):
                before = cache_status(url)
                origin.reset()
                got = run_pod(kube, fetch_pod(f"fetch-{mode}-{rep}", node, image, uri, sha, size, through))
                after = cache_status(url)
                row = {"mode": mode, "rep": rep, **got, "origin_bytes": origin.bytes_sent,
                       "cache_hits": after["hits"] - before["hits"], "cache_misses": after["misses"] - before["misses"]}
                log(f"rep {rep + 1}/{reps} {mode}: {row}")
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


def _operator_rows(kube: Any, p: Any, node: str, image: str, uri: str, sha: str, origin: Origin, host: str,
                   tmp: Path) -> list[dict[str, Any]]:
    """The same three paths once more, each through a model server the operator itself places on the node
    (an InferenceDeployment; spec.siteCache.endpoints naming the cache for the miss and the hit), timed by
    the Pod's `fetch` init container's start and end in its status: whole seconds, a cross-check."""
    import edgenodes

    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
    kube.kubectl("label", "node", node, f"{c.SITE_LABEL}={SITE}", "--overwrite")
    kube.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": "bench", "namespace": NS},
        "spec": {"version": "1", "source": {"uri": uri, "sha256": sha}}}))
    node_copy = edgenodes.hostfs(p.dir, node, c.CACHE_DIR) / "sha256" / sha
    op = OperatorProcess(str(p.kubeconfig), tmp / "operator.log", env={"EDGEAI_RUNTIME_IMAGE": image}, cwd=str(ROOT))
    op.start()
    proc, url = start_cache(tmp, 99, host=host)
    rows = []
    try:
        op.wait_ready()
        kube.kubectl("wait", "--for=condition=Verified", "edgemodel/bench", "-n", NS, "--timeout=300s")
        for mode in ("origin", "miss", "hit"):
            name = f"op-{mode}"
            node_copy.unlink(missing_ok=True)  # a node that has never had the model
            spec: dict[str, Any] = {"model": "bench",
                                    "deviceSelector": {"matchLabels": {"kubernetes.io/hostname": node}}}
            if mode != "origin":
                spec["siteCache"] = {"endpoints": {SITE: url}}
            before = cache_status(url)
            origin.reset()
            kube.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
                "metadata": {"name": name, "namespace": NS}, "spec": spec}))
            term = _fetch_terminated(kube, name, node)
            after = cache_status(url)
            started, finished = (dt.datetime.fromisoformat(term[k].replace("Z", "+00:00"))
                                 for k in ("startedAt", "finishedAt"))
            ok = term.get("exitCode") == 0 and hashlib.sha256(node_copy.read_bytes()).hexdigest() == sha
            row = {"mode": f"operator-{mode}", "rep": 0, "rc": 0 if ok else 1,
                   "seconds": (finished - started).total_seconds(), "sha256": sha if ok else None,
                   "bytes": node_copy.stat().st_size if ok else 0, "origin_bytes": origin.bytes_sent,
                   "cache_hits": after["hits"] - before["hits"], "cache_misses": after["misses"] - before["misses"]}
            log(f"operator {mode}: {row}")
            rows.append(row)
            kube.kubectl("delete", "inferencedeployment", name, "-n", NS, "--wait=true", "--timeout=120s", check=False)
            _wait_gone(kube, name)
    finally:
        op.stop()
        proc.terminate()
        proc.wait(10)
        kube.kubectl("label", "node", node, f"{c.SITE_LABEL}-", check=False)
    return rows


def _pods(kube: Any, idep: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-n", NS, "-l", f"{c.L_IDEP}={idep}", "-o", "json").stdout
    return list(json.loads(out).get("items") or [])


def _fetch_terminated(kube: Any, idep: str, node: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in _pods(kube, idep):
            if pod["spec"].get("nodeName") != node:
                continue
            for st in (pod.get("status") or {}).get("initContainerStatuses") or []:
                term = (st.get("state") or {}).get("terminated")
                if st["name"] == "fetch" and term:
                    return dict(term)
        time.sleep(0.5)
    raise SystemExit(f"{idep}: no finished fetch init container on {node} after {timeout:.0f}s")


def _wait_gone(kube: Any, idep: str, timeout: float = 180) -> None:
    # The model server must be gone before the next row: its model load would share the CPUs.
    deadline = time.monotonic() + timeout
    while _pods(kube, idep) and time.monotonic() < deadline:
        time.sleep(0.5)


EXPECT = {  # what the origin and the cache must have seen for each row to be what it says
    "origin": lambda r, size: r["origin_bytes"] == size and r["cache_hits"] == r["cache_misses"] == 0,
    "miss": lambda r, size: r["origin_bytes"] == size and (r["cache_hits"], r["cache_misses"]) == (0, 1),
    "hit": lambda r, size: r["origin_bytes"] == 0 and (r["cache_hits"], r["cache_misses"]) == (1, 0),
}
EXPECT.update({f"operator-{k}": v for k, v in list(EXPECT.items())})
LABELS = {"origin": "from the origin (no cache)", "miss": "through the cache, miss (the site's first device)",
          "hit": "through the cache, hit (every later device)"}
LABELS.update({"operator-origin": "the operator's model server Pod: from the origin [whole s]",
               "operator-miss": "the operator's model server Pod: cache miss [whole s]",
               "operator-hit": "the operator's model server Pod: cache hit [whole s]"})


def report(rows: list[dict[str, Any]], size: int, mbit: float, reps: int, load0: tuple[float, float, float]) -> int:
    bad = [r for r in rows if r.get("rc") != 0 or r.get("bytes") != size
           or not EXPECT[r["mode"]](r, size)]
    sha_ok = all(r.get("sha256") == rows[0].get("sha256") for r in rows)
    table = []
    for mode in LABELS:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        secs = [r["seconds"] for r in mine]
        origin_bytes = statistics.mean(r["origin_bytes"] for r in mine)
        table.append([LABELS[mode], str(len(secs)), f"{statistics.median(secs):.2f}", f"{min(secs):.2f}",
                      f"{max(secs):.2f}", f"{origin_bytes / size:.0f} x", f"{origin_bytes * 8 / (mbit * 1e6):.2f}",
                      f"{sum(r['cache_hits'] for r in mine)}/{sum(r['cache_misses'] for r in mine)}"])
    load1 = os.getloadavg()
    labelled = "every row as labelled (origin and cache counters)" if not bad else f"{len(bad)} row(s) NOT as labelled"
    # UPLINK s: the origin's bytes at the emulated rate, the floor any path through the WAN pays.
    head = ["fetch on the real KubeEdge node", "RUNS", "p50 s", "min s", "max s", "ORIGIN BYTES", "UPLINK s",
            "CACHE HIT/MISS"]
    out = (f"site cache on a real edge node: one {size / 2**20:.1f} MiB model, origin uplink {mbit:g} Mbit/s "
           f"(emulated WAN: a token bucket at the origin), {reps} repetitions, {os.cpu_count()} CPUs\n"
           + text_table(head, table)
           + f"\n(load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end; each time is the fetch "
             "container's whole run on the node, Python start-up and sha256 included)\n"
           + f"every device's bytes: sha256 {rows[0].get('sha256', '?')[:12]}..., {size:,} bytes, "
             f"{'the same in every row' if sha_ok else 'NOT THE SAME IN EVERY ROW'}; "
             f"{labelled}")
    print(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    (RESULTS / f"sitecache-edge-{stamp}.txt").write_text(out + "\n")
    (RESULTS / f"sitecache-edge-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "size": size, "origin_mbit": mbit, "load": [load0, load1], "rows": rows}, indent=1))
    return 0 if sha_ok and not bad else 1
