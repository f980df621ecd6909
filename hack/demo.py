#!/usr/bin/env python3
"""The README's first command (`make demo`): the whole product on one machine.

1. a real local control plane with a simulated, mixed edge fleet (kwok nodes) and
   one real KubeEdge edge node (cloudcore + edgecore + containerd, its own network);
2. the CRDs, and the operator as a real process;
3. real ONNX models (a CNN packed into signed fp32/fp16/int8 builds, a tabular
   model) served over HTTP on the cloud bridge (127.0.0.1 without a real node);
4. the demo's EdgeModels and InferenceDeployments (namespace edgeai-demo) applied; wait for Ready;
5. the fleet table, and the devices' own status (they agree);
6. one real inference through the model-server Pod on the real KubeEdge node
   (image built from docker/edge-runtime.Dockerfile, pulled by containerd);
7. a bad update stopped at the canary and rolled back by the health gate.

Simulated: the kwok edge nodes and their Pods (no kubelet, no containers).
Real: the API server, etcd, scheduler, controllers, the operator, model
verification, the KubeEdge node, its containers and the inference.

    python hack/demo.py            # bring it all up (idempotent: reuses a running plane)
    python hack/demo.py --down     # stop everything the demo started
    EDGEAI_REAL_EDGE=0 python hack/demo.py   # kwok only, for machines that cannot run containers:
                                             # the runtime of one device is then started by hand
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))
import plane as localplane  # noqa: E402

PLANE = os.environ.get("EDGEAI_DEMO_PLANE", "demo")
STATE = localplane.CACHE / "demo"
NAMESPACE = "edgeai-demo"
NODES = int(os.environ.get("EDGEAI_DEMO_NODES", "6"))
REAL_EDGE = os.environ.get("EDGEAI_REAL_EDGE", "1").lower() not in ("0", "false", "no")
BIN = Path(sys.executable).parent


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m" if sys.stdout.isatty() else f"==> {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ background processes


def _pids() -> dict[str, int]:
    try:
        return dict(json.loads((STATE / "pids.json").read_text()))
    except (OSError, ValueError):
        return {}


def _remember(name: str, pid: int) -> None:
    pids = _pids()
    pids[name] = pid
    (STATE / "pids.json").write_text(json.dumps(pids))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def background(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    old = _pids().get(name)
    if old and _alive(old):
        os.killpg(old, signal.SIGTERM)
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    log.close()
    _remember(name, p.pid)
    return p.pid


def stop_all() -> None:
    for name, pid in _pids().items():
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
            print(f"stopped {name} (pid {pid})")
    (STATE / "pids.json").unlink(missing_ok=True)


# ------------------------------------------------------------------ steps


def models(port: int, kube: localplane.Kube, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Build, pack and sign the example models; returns (served dir, EdgeModel manifests file)."""
    from edge_runtime.artifacts import integrity
    from edge_runtime.models_zoo import build_cnn, build_tabular

    serve_dir = STATE / "models"
    work = STATE / "work"
    work.mkdir(parents=True, exist_ok=True)
    key = work / "signing-p256.pem"  # pack signs in the OpenSSF model signing format: ECDSA P-256
    if not key.exists():
        key.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ecdsa-p256")))
    cnn = build_cnn(work / "defect-detector.onnx", num_classes=4, image=32, seed=7)
    base = f"http://{host}:{port}"
    packed = work / "packed-cnn"
    say("packing the CNN into signed fp32 / fp16 / int8 builds (edge-runtime pack)")
    subprocess.run([str(BIN / "edge-runtime"), "pack", str(cnn), "-o", str(packed), "--force",
                    "--name", "defect-detector", "--namespace", NAMESPACE, "--model-version", "1.0.0",
                    "--base-uri", f"{base}/defect-detector", "--sign-key", str(key),
                    "--public-key-secret", "defect-detector-signing", "--runs", "20", "--min-agreement", "0.8"],
                   check=True)
    shutil.rmtree(serve_dir, ignore_errors=True)
    serve_dir.mkdir(parents=True)
    shutil.copytree(packed, serve_dir / "defect-detector")
    tab = build_tabular(serve_dir / "tabular" / "vibration.onnx", features=16, classes=3, seed=3)
    d = integrity.hash_file(tab)
    extra = {
        "apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "vibration-anomaly", "namespace": NAMESPACE},
        "spec": {"format": "onnx", "version": "0.3.0",
                 "source": {"uri": f"{base}/tabular/vibration.onnx", "sha256": d.sha256, "size": d.size}},
    }
    pub = (packed / "public.pem").read_text()
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "defect-detector-signing", "namespace": NAMESPACE},
              "data": {"public.pem": base64.b64encode(pub.encode()).decode()}}
    kube.kubectl("apply", "-f", "-", input=json.dumps(secret))
    manifests = work / "models.yaml"
    manifests.write_text((packed / "edgemodel.yaml").read_text() + "\n---\n" + json.dumps(extra) + "\n")
    return serve_dir, manifests


def deployments() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
         "metadata": {"name": "defect-detection", "namespace": NAMESPACE},
         "spec": {"model": "defect-detector",
                  "deviceSelector": {"matchExpressions": [
                      {"key": "edgeai.io/site", "operator": "In", "values": ["site-a", "site-b"]}]},
                  "runtime": {"threads": 1, "maxBatchSize": 8, "maxBatchDelayMs": 2},
                  # A canary, then site by site, each wave Ready 2 s before the next; a wave that
                  # makes no progress for 15 s is rolled back.
                  "rollout": {"canary": 1, "orderBy": "edgeai.io/site",
                              "healthGate": {"readySeconds": 2, "progressDeadlineSeconds": 15}}}},
        {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
         "metadata": {"name": "vibration-anomaly", "namespace": NAMESPACE},
         "spec": {"model": "vibration-anomaly",
                  "deviceSelector": {"matchExpressions": [
                      {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}}},
    ]


def wait_ready(kube: localplane.Kube, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = json.loads(kube.kubectl("get", "inferencedeployments", "-n", NAMESPACE, "-o", "json").stdout)
        lines, ready = [], 0
        for item in out["items"]:
            st = item.get("status", {})
            cond = {c["type"]: c for c in st.get("conditions", [])}
            r = cond.get("Ready", {})
            ok = r.get("status") == "True"
            ready += ok
            lines.append(f"   {item['metadata']['name']:<20} ready {st.get('readyDevices', st.get('ready', 0))}"
                         f"/{st.get('placedDevices', st.get('placed', 0))}"
                         f"  {r.get('reason', 'Pending')}: {r.get('message', '')[:70]}")
        text = "\n".join(lines)
        if text != last:
            print(text, flush=True)
            last = text
        if out["items"] and ready == len(out["items"]):
            return
        time.sleep(2)
    raise SystemExit(f"not Ready after {timeout:.0f}s; operator log: {STATE / 'operator.log'}")


def bad_update(kube: localplane.Kube, env: dict[str, str], timeout: float = 120) -> None:
    """Ship a build whose pods never get Ready and watch the gate catch it on the canary."""
    kube.kubectl("patch", "inferencedeployment", "defect-detection", "-n", NAMESPACE, "--type=merge", "-p",
                 json.dumps({"spec": {"runtime": {"podAnnotations": {"sim.edgeai.io/ready": "false"}}}}))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        st = json.loads(kube.kubectl("get", "inferencedeployment", "defect-detection", "-n", NAMESPACE,
                                     "-o", "json").stdout).get("status", {})
        r = st.get("rollout") or {}
        on_bad = sum(1 for d in st.get("devices") or [] if d.get("revision") == r.get("revision"))
        line = (f"   revision {r.get('revision')}: {r.get('phase')}, wave {int(r.get('wave') or 0) + 1}/"
                f"{r.get('waves')}, {on_bad} device(s) given it; serving revision {st.get('currentRevision')}")
        if line != last:
            print(line, flush=True)
            last = line
        if r.get("phase") == "RolledBack" and r.get("revision") == st.get("revision"):
            print(f"   why: {r.get('message', '')}", flush=True)
            break
        time.sleep(1)
    else:
        raise SystemExit(f"no rollback after {timeout:.0f}s; operator log: {STATE / 'operator.log'}")
    hist = subprocess.run([str(BIN / "kubectl-edgeai"), "rollout", "history", "defect-detection", "-n", NAMESPACE],
                          env=env, capture_output=True, text=True)
    print(hist.stdout or hist.stderr)


def run_one_runtime(kube: localplane.Kube) -> None:
    """Start one device's edge runtime exactly as its Pod spec says, and infer through it."""
    pods = json.loads(kube.kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                   "app.kubernetes.io/managed-by=edgeai-operator", "-o", "json").stdout)["items"]
    dep = next(d for d in pods if "defect-detection" in d["metadata"]["name"])
    pod = dep["spec"]
    say(f"starting the edge runtime of {dep['metadata']['name']} as its Pod spec says "
        f"({len(pod.get('initContainers', []))} init + {len(pod['containers'])} container)")
    root = STATE / "pod"
    shutil.rmtree(root, ignore_errors=True)
    # Volumes, materialised locally: hostPath/emptyDir as folders, Secrets as their files.
    vol_dirs: dict[str, Path] = {}
    for v in pod.get("volumes", []):
        d = root / "volumes" / v["name"]
        d.mkdir(parents=True)
        if "secret" in v:
            sec = json.loads(kube.kubectl("get", "secret", v["secret"]["secretName"], "-n", NAMESPACE,
                                          "-o", "json").stdout)
            items = v["secret"].get("items") or [{"key": k, "path": k} for k in sec.get("data", {})]
            for it in items:
                (d / it["path"]).write_bytes(base64.b64decode(sec["data"][it["key"]]))
        vol_dirs[v["name"]] = d

    def localize(c: dict[str, Any], port: int | None) -> tuple[list[str], dict[str, str]]:
        mounts = sorted(((m["mountPath"], vol_dirs[m["name"]]) for m in c.get("volumeMounts", [])),
                        key=lambda t: -len(t[0]))
        args = []
        for a in [*c.get("command", []), *c.get("args", [])]:
            for mp, d in mounts:
                if a == mp or a.startswith(mp + "/"):
                    a = str(d) + a[len(mp):]
                    break
            args.append(a)
        # Differences from the Pod, stated: the console script is this checkout's; servers bind
        # to 127.0.0.1 on a free port (rules of this machine), not 0.0.0.0:8080.
        if args and args[0] == "edge-runtime":
            args[0] = str(BIN / "edge-runtime")
        if port is not None:
            for flag, val in (("--host", "127.0.0.1"), ("--port", str(port))):
                if flag in args:
                    args[args.index(flag) + 1] = val
        env = dict(os.environ)
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        return args, env

    for ic in pod.get("initContainers", []):
        if ic["name"] == "cache-dirs":
            continue  # hands a node's hostPath dirs to the runtime's UID: nothing to do for local folders
        args, env = localize(ic, None)
        print("   init:", " ".join(args[1:]))
        subprocess.run(args, env=env, check=True)
    main = pod["containers"][0]
    port = free_port()
    args, env = localize(main, port)
    print("   main:", " ".join(args[1:]))
    background("runtime", args, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        raise SystemExit(f"runtime not ready; log: {STATE / 'runtime.log'}")
    model = args[args.index("--name") + 1]
    say("one real inference through the edge runtime")
    infer_and_show(url, model)
    print(f"   metrics: {url}/metrics   log: {STATE / 'runtime.log'}")


def infer_on_real_pod(kube: localplane.Kube, node: str) -> None:
    """One real inference through the model-server Pod on the real KubeEdge node, from the cloud."""
    pods = json.loads(kube.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=edgeai-operator",
                                   "--field-selector", f"spec.nodeName={node}", "-o", "json").stdout)["items"]
    pod = next(p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in p["status"].get("conditions", [])))
    srv = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "server")
    ip = pod["status"]["podIP"]
    args = next(c for c in pod["spec"]["containers"] if c["name"] == "server")["args"]
    model = args[args.index("--name") + 1]
    say(f"one real inference through Pod {pod['metadata']['name']} on the real KubeEdge node {node}")
    print(f"   image {srv['image']} (pulled by the node's containerd), pod IP {ip}")
    infer_and_show(f"http://{ip}:8080", model)


def infer_and_show(url: str, model: str) -> None:
    """One inference on random input shaped as the model's metadata says; prints the answer."""
    with urllib.request.urlopen(f"{url}/v2/models/{model}", timeout=10) as r:
        meta = json.loads(r.read())
    inp = meta["inputs"][0]
    shape = [1 if d < 0 else d for d in inp["shape"]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    body = json.dumps({"inputs": [{"name": inp["name"], "shape": shape, "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as r:
        out = json.loads(r.read())
    ms = (time.perf_counter() - t0) * 1000
    probs = out["outputs"][0]["data"]
    top = int(np.argmax(probs))
    print(f"   POST {url}/v2/models/{model}/infer  ->  class {top} (p={probs[top]:.3f}) in {ms:.1f} ms")
    print(f"   model sha256 served: {meta.get('parameters', {}).get('sha256', '?')}")


def wait_devices_agree(kube: localplane.Kube, timeout: float = 90) -> None:
    """Wait until every device's own status lists what the InferenceDeployments say it serves.

    The operator writes a device's `serving` coarsely (it is informational); the demo's tables
    are printed once both views agree, so `kubectl get ed` never contradicts the fleet table.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ideps = json.loads(kube.kubectl("get", "inferencedeployments", "-n", NAMESPACE, "-o", "json").stdout)
        want = {(f"{NAMESPACE}/{i['metadata']['name']}", d["device"]) for i in ideps["items"]
                for d in (i.get("status") or {}).get("devices") or [] if d.get("phase") == "Ready"}
        devs = json.loads(kube.kubectl("get", "edgedevices", "-o", "json").stdout)["items"]
        have = {(s.get("inferenceDeployment"), d["metadata"]["name"]) for d in devs
                for s in (d.get("status") or {}).get("serving") or [] if s.get("phase") == "Ready"}
        if want and want <= have:
            return
        time.sleep(1)
    print("   (the devices' own status has not caught up yet; it is written every few seconds)")


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    real = 0
    if REAL_EDGE:
        import edgenodes

        why = edgenodes.containers_supported()
        if why:
            say(f"no real KubeEdge node on this machine ({why}): simulated fleet only. "
                "EDGEAI_REAL_EDGE=0 skips this check.")
        else:
            real = 1
    say(f"local control plane '{PLANE}' with {NODES} simulated edge nodes (kwok)"
        + (f" and {real} real KubeEdge node (first run: images and KubeEdge are built, see README)" if real else ""))
    p = localplane.up(PLANE, nodes=NODES, real_edge=real)
    kube = localplane.Kube(p.kubeconfig)
    real_state = (p.state() or {}).get("real_edge") or {}
    host = "127.0.0.1"
    # The simulated GPU nodes run the fp16 build on CUDA, which needs a cuda-family runtime image (one
    # image per onnxruntime build); kwok never pulls it. Without it they would get the CPU build.
    op_env: dict[str, str] = {"EDGEAI_RUNTIME_IMAGE_CUDA": "ghcr.io/edgeai/edge-runtime-cuda:0.1.0"}
    if real_state:
        import edgenodes

        edge = edgenodes.real_edge_of(p)
        assert edge
        host = edge.net.cloud_ip  # the nodes reach the cloud's servers on the cloud bridge
        op_env["EDGEAI_RUNTIME_IMAGE"] = real_state["images"]["runtime"]
    env = dict(os.environ, KUBECONFIG=str(p.kubeconfig))
    say("installing the CRDs")
    kube.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for crd in ("edgemodels", "edgedevices", "inferencedeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}.edgeai.io", "--timeout=60s")
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    port = free_port()
    serve_dir, model_manifests = models(port, kube, host)
    say(f"serving the model files on http://{host}:{port}/")
    background("model-server", [sys.executable, "-m", "http.server", str(port), "--bind", host,
                                "--directory", str(serve_dir)])
    mport = free_port()
    say(f"starting the operator (metrics on http://127.0.0.1:{mport}/metrics, log {STATE / 'operator.log'})")
    background("operator", [str(BIN / "edgeai-operator"), "--namespace", "default",
                            "--metrics-bind", f"127.0.0.1:{mport}"],
               env=dict(env, EDGEAI_RESYNC_SECONDS="60", **op_env))
    say("applying the demo EdgeModels and InferenceDeployments")
    kube.kubectl("apply", "-f", str(model_manifests))
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": deployments()}))
    kube.kubectl("wait", "--for=condition=Verified", "edgemodel", "--all", "-n", NAMESPACE, "--timeout=120s")
    print(kube.kubectl("get", "edgemodels", "-n", NAMESPACE).stdout)
    say("waiting for every InferenceDeployment to be Ready")
    wait_ready(kube)
    wait_devices_agree(kube)
    say("the fleet (kubectl edgeai fleet)")
    fleet = subprocess.run([str(BIN / "kubectl-edgeai"), "fleet", "-A"], env=env, capture_output=True, text=True)
    print(fleet.stdout or fleet.stderr)
    print(kube.kubectl("get", "edgeai", "-A").stdout)
    if real_state:
        infer_on_real_pod(kube, real_state["nodes"][0])
    else:
        run_one_runtime(kube)
    say("a bad update (simulated: its pods never get Ready): the health gate stops it at the canary and "
        "rolls back by itself")
    bad_update(kube, env)
    if real_state:
        say(f"done in {time.monotonic() - t0:.0f}s. Simulated: the {NODES} kwok edge nodes and their Pods. "
            f"Real: API server, scheduler, controllers, operator, verification, the KubeEdge node "
            f"{real_state['nodes'][0]} with its containerd, and the model-server Pod above.")
    else:
        say(f"done in {time.monotonic() - t0:.0f}s. Simulated: the {NODES} edge nodes and their Pods (kwok). "
            "Real: API server, scheduler, controllers, operator, verification, and the runtime above.")
    print(f"   export KUBECONFIG={p.kubeconfig}   # then: kubectl get edgeai -A")
    print("   make down                          # stop everything the demo started")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--down", action="store_true", help="stop everything the demo started")
    a = ap.parse_args()
    if a.down:
        STATE.mkdir(parents=True, exist_ok=True)
        stop_all()
        localplane.down(PLANE)
        return 0
    up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
