"""Typed builders for every object the operator creates. Pure: dicts in, dicts out.

One model server per placed device: a Pod the operator owns directly, pinned to the device's node
by required node affinity on `metadata.name` (exactly how the DaemonSet controller pins its pods),
named for the device and the hash of its template. Why a Pod and not a Deployment per device (what
operators of 0.1 made): an update then costs what a DaemonSet's does, one Pod created and one
deleted, instead of a Deployment patched, a ReplicaSet created and scaled up, the old one scaled
down, and their status writes, about 4x the API requests and time on a fleet (docs/scale.md). The
operator does what the Deployment did for it: the new Pod is created beside the old one (surge) and
the old one deleted once the new one is Ready, so a build that never gets Ready never replaces the
one that works (except on a device whose accelerator the Pod holds: see `surges`); a Pod deleted or
evicted is made again; a Pod not Ready within PROGRESS_DEADLINE_SECONDS fails the device
(core/pod_workloads.py). Why affinity and not `nodeName`: it goes through the scheduler, so
resources and taints are honoured and a device without room says so as a scheduling event instead
of a kubelet rejection.

Longer than most modules: the Pod is one literal, so a reviewer reads the whole pod spec the edge
node will run in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_operator.core.acceleration import CPU_ONLY, Acceleration
from edge_operator.core.placement import Artifact
from edgeai_api import constants as c
from edgeai_api.enums import InsufficientTrafficPolicy
from edgeai_api.inferencedeployment import FallbackSpec, QualityGate, ResourceRequirements, RuntimeSpec

_LABEL_VALUE_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class MirrorRef:
    """Where a device's fetch finds its site cache: a key (the device's site) of a ConfigMap the
    operator keeps. A reference, not the URL: a gateway's new address or a cache added at a site
    changes the ConfigMap, never the Pod template, so no device rolls for it; a fetch reads the
    current value when it starts (optional: a site without a cache has no key, and fetches from the
    origin)."""

    config_map: str
    key: str


@dataclass(frozen=True)
class Owner:
    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self, controller: bool = True) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": controller,
            "blockOwnerDeletion": controller,
        }


@dataclass(frozen=True)
class WorkloadInputs:
    """Everything that decides what one device runs. Two equal inputs give byte-equal manifests.

    A rollout planner picks, per device, which WorkloadInputs (which revision)
    to build; this module never decides that.
    """

    namespace: str
    owner: Owner  # the InferenceDeployment
    model: str
    model_version: str | None
    device: str
    node: str
    artifact: Artifact
    image: str
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    fallback: FallbackSpec | None = None
    public_key: SecretRef | None = None
    decryption_key: SecretRef | None = None
    revision: int | None = None
    acceleration: Acceleration = CPU_ONLY  # placement's choice of execution providers for this device
    quality_profile: Artifact | None = None  # the EdgeModel's spec.qualityProfile
    quality_gate: QualityGate | None = None  # spec.rollout.healthGate.quality
    quality_window_seconds: int = 0  # healthGate.readySeconds: how long an unjudged device may pass (Pass)
    # The revision's template hash (revisions.Template.hash): the same on every device of the revision, and
    # the same again when an undo goes back to an identical template (so it restarts no Pod, as the revision
    # number would). Reaches the Pod only with healthGate.quality.maxPSIPrevious (--revision).
    template_hash: str = ""
    mirror: MirrorRef | None = None  # spec.siteCache: the device's site cache, for its fetches


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def label_value(text: str) -> str:
    """`text` if it is a valid label value, else a valid, stable, shortened form of it."""
    if len(text) <= 63 and _LABEL_VALUE_OK.match(text):
        return text
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:54].strip("-_.")
    return f"{cleaned}-{_short_hash(text)}" if cleaned else _short_hash(text)


def child_name(idep: str, device: str) -> str:
    """A DNS-1123 name for the child of `idep` on `device`, stable and unique per pair."""
    base = f"{idep}-{device}".lower()
    base = re.sub(r"[^a-z0-9.-]", "-", base)
    if len(base) <= 63:
        return base.strip("-.")
    return f"{base[:54].strip('-.')}-{_short_hash(idep + '/' + device)}"


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Digest of a manifest, stored on the object so the next reconcile can skip an unchanged write."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def workload_labels(inp: WorkloadInputs) -> dict[str, str]:
    labels = {
        c.L_NAME: "edge-runtime",
        c.L_INSTANCE: label_value(inp.owner.name),
        c.L_COMPONENT: "inference-server",
        c.L_PART_OF: "edgeai",
        c.L_MANAGED_BY: c.OPERATOR_NAME,
        c.L_IDEP: label_value(inp.owner.name),
        c.L_DEVICE: label_value(inp.device),
        c.L_MODEL: label_value(inp.model),
    }
    if inp.model_version:
        labels[c.L_VERSION] = label_value(inp.model_version)
    return labels


def pod_name(idep: str, device: str, template_hash: str) -> str:
    """The Pod serving one template on one device: a second create of it (a reconcile that has not
    seen its first yet, an operator restarted mid-rollout) is refused as AlreadyExists, never a twin."""
    return f"{child_name(idep, device)}-{template_hash[:10]}"


def model_path(sha256: str) -> str:
    return f"{c.CACHE_DIR}/sha256/{sha256}"


PUBLIC_KEY_DIR = "/etc/edgeai/keys/public"
DECRYPTION_KEY_DIR = "/etc/edgeai/keys/decryption"
REGISTRY_AUTH_DIR = "/etc/edgeai/registry"


def _signature_args(inp: WorkloadInputs, artifact: Artifact | None = None) -> list[str]:
    # The Secret at PUBLIC_KEY_DIR/public.pem holds a public key or, for an OpenSSF bundle signed
    # with a certificate, the trust roots: the runtime reads which from the PEM.
    a = artifact or inp.artifact
    if not inp.public_key:
        return []
    if a.bundle:
        return ["--openssf-bundle", a.bundle, "--public-key-file", f"{PUBLIC_KEY_DIR}/public.pem"]
    if a.signature:
        return ["--signature", a.signature, "--public-key-file", f"{PUBLIC_KEY_DIR}/public.pem"]
    return []


def fetch_args(inp: WorkloadInputs) -> list[str]:
    a = inp.artifact
    args = ["fetch", a.uri, "--sha256", a.sha256, "--cache", c.CACHE_DIR, *_signature_args(inp)]
    if a.size:
        args += ["--max-size", str(a.size)]
    if a.pull_secret:
        args += ["--registry-auth-file", f"{REGISTRY_AUTH_DIR}/config.json"]
    if a.plain_http:
        args += ["--plain-http"]
    return args


def fetch_profile_args(inp: WorkloadInputs, profile: Artifact) -> list[str]:
    """The reference profile goes the model's way: into the content-addressed cache, digest and signature
    checked by the same `fetch` (a profile decides whether a rollout passes, so it is trusted like a build)."""
    args = ["fetch", profile.uri, "--sha256", profile.sha256, "--cache", c.CACHE_DIR,
            *_signature_args(inp, profile)]
    return [*args, "--max-size", str(profile.size or c.MAX_QUALITY_PROFILE_BYTES)]


def quality_gate_args(gate: QualityGate, window_seconds: int) -> list[str]:
    """healthGate.quality as the runtime's flags (edge_runtime/core/quality_gate.py judges them)."""
    args: list[str] = []
    if gate.max_psi is not None:
        args += ["--quality-gate-max-psi", str(gate.max_psi)]
    if gate.min_mean_confidence is not None:
        args += ["--quality-gate-min-mean-confidence", str(gate.min_mean_confidence)]
    if gate.max_psi_previous is not None:
        args += ["--quality-gate-max-psi-previous", str(gate.max_psi_previous)]
    args += ["--quality-gate-min-requests", str(gate.min_requests or c.DEFAULT_QUALITY_MIN_REQUESTS)]
    policy = gate.on_insufficient_traffic or InsufficientTrafficPolicy.WAIT
    args += ["--quality-gate-on-insufficient-traffic", policy.value.lower()]
    # The verdict survives a container restart in the Pod's emptyDir (/tmp): a Pod is judged once.
    return [*args, "--quality-gate-window-s", str(window_seconds), "--quality-gate-state", c.QUALITY_GATE_STATE]


def serve_args(inp: WorkloadInputs) -> list[str]:
    a = inp.artifact
    args = ["serve", "--model", model_path(a.sha256), "--sha256", a.sha256, "--name", inp.model]
    if inp.model_version:
        args += ["--model-version", inp.model_version]
    args += _signature_args(inp)
    if inp.decryption_key:
        args += ["--decryption-key-file", f"{DECRYPTION_KEY_DIR}/key"]
    args += ["--host", "0.0.0.0", "--port", str(c.RUNTIME_PORT)]
    rt = inp.runtime
    if rt.grpc_port is not None:
        args += ["--grpc-port", str(rt.grpc_port)]
    for value, flag in ((rt.threads, "--threads"), (rt.parallel_runs, "--parallel-runs"),
                        (rt.max_batch_size, "--max-batch-size"),
                        (rt.max_batch_delay_ms, "--max-batch-delay-ms"), (rt.max_latency_ms, "--max-latency-ms"),
                        (rt.max_error_rate, "--max-error-rate"), (rt.busy_poll_us, "--busy-poll-us")):
        if value is not None:
            args += [flag, str(value)]
    fb = inp.fallback
    if fb and fb.url:
        args += ["--fallback-url", fb.url, "--fallback-threshold", str(fb.confidence_threshold)]
        if fb.timeout_ms is not None:
            args += ["--fallback-timeout-ms", str(fb.timeout_ms)]
        args += ["--fallback-queue", c.FALLBACK_QUEUE_DIR]
    acc = inp.acceleration
    providers = acc.flag()
    if providers is not None:
        args += ["--execution-providers", providers]
    if acc.require and acc.on_accelerator:
        args += ["--require-accelerator"]
    if acc.compiles:
        args += ["--provider-cache", c.PROVIDER_CACHE_DIR]
    if inp.quality_profile is not None:
        args += ["--quality-profile", model_path(inp.quality_profile.sha256)]
    if inp.quality_gate is not None:
        args += quality_gate_args(inp.quality_gate, inp.quality_window_seconds)
    if keeps_quality_windows(inp):
        args += ["--quality-window-dir", c.QUALITY_WINDOWS_DIR, "--revision", quality_revision(inp)]
    return args


def keeps_quality_windows(inp: WorkloadInputs) -> bool:
    """Whether the Pod keeps its window on the node and compares with the previous revision's: only with
    maxPSIPrevious (and the profile it needs), so the Pods of every other spec stay exactly as they were and
    an operator upgrade rolls no device. The first revision with it finds no window (the one before kept
    none) and is judged on its other thresholds; from the next rollout on, each compares with the last."""
    g = inp.quality_gate
    return g is not None and g.max_psi_previous is not None and inp.quality_profile is not None


def quality_revision(inp: WorkloadInputs) -> str:
    """The revision's name for its window file: its template hash (the model digest when built without one)."""
    return inp.template_hash or inp.artifact.sha256[:16]


def _ports(rt: RuntimeSpec) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": c.RUNTIME_PORT, "protocol": "TCP"}]
    if rt.grpc_port is not None:
        ports.append({"name": "grpc", "containerPort": rt.grpc_port, "protocol": "TCP"})
    return ports


def _resources(spec: ResourceRequirements | None, device_resource: str | None = None) -> dict[str, Any]:
    """spec.runtime.resources, plus one of the device plugin's accelerator (a person's own limit wins)."""
    out: dict[str, Any] = {}
    for part, vals in (("requests", spec.requests if spec else None), ("limits", spec.limits if spec else None)):
        if vals:
            out[part] = {k: str(v) for k, v in sorted(vals.items())}
    if device_resource is not None and device_resource not in out.get("limits", {}):
        # Extended resources are limits only (the request defaults to the limit and may not differ).
        out["limits"] = dict(sorted({**out.get("limits", {}), device_resource: "1"}.items()))
    return out


def pod_security() -> dict[str, Any]:
    """The runtime's UID for every container of an edge Pod (the cache-dirs container alone overrides it)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": c.RUNTIME_UID,
        "runAsGroup": c.RUNTIME_UID,
        "fsGroup": c.RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def probe(path: str, period: int, failures: int, port: int | str = "http") -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def cache_dirs_container(image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Hands the node's hostPath directories to the runtime's UID, then exits.

    The kubelet creates a missing hostPath (DirectoryOrCreate) as root, mode 0755, and fsGroup
    does not apply to hostPath volumes: on a real node the non-root fetch could not write the
    cache. This container is root with only CAP_CHOWN and CAP_FOWNER, touches only the top of
    each mounted directory, and runs nothing but coreutils' `install -d`.
    """
    uid = str(c.RUNTIME_UID)
    return {
        "name": "cache-dirs",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["install", "-d", "-o", uid, "-g", uid, "-m", "0750", *(m["mountPath"] for m in mounts)],
        # A failed chown (a read-only or foreign hostPath) reaches the Pod's status from its last log lines.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
        },
        "volumeMounts": mounts,
    }


def host_path_mounts(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One writable mount of each hostPath volume, where the pod's containers mount it."""
    paths = {m["name"]: m["mountPath"] for m in reversed(mounts)}
    return [{"name": v["name"], "mountPath": paths[v["name"]]} for v in volumes if "hostPath" in v]


def tolerations() -> list[dict[str, Any]]:
    """Edge taints, and unreachable/not-ready with no tolerationSeconds: an edge node that loses
    the cloud for an hour must keep serving, not have its workload evicted after 5 minutes."""
    keys = [*c.EDGE_TAINT_KEYS, "node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]
    return [{"key": k, "operator": "Exists"} for k in keys]


def surges(inp: WorkloadInputs) -> bool:
    """Surge (the new server Ready before the old one goes) unless the Pod holds a device-plugin
    accelerator: an edge device has one GPU or NPU, a device plugin hands each unit to one Pod, and a
    surge Pod would wait for the unit its predecessor holds, forever. There the old server goes
    first; the swap is as short as a restart, because the new build is already in the node's cache
    (the fetch is an init container of the new Pod only when it is not)."""
    return inp.acceleration.resource is None


def child_pod(inp: WorkloadInputs) -> dict[str, Any]:
    """The Pod that serves `inp.artifact` on `inp.device`, named for and annotated with its template's hash."""
    a = inp.artifact
    labels = workload_labels(inp)
    env = [
        {"name": "EDGEAI_DEVICE", "value": inp.device},
        {"name": "EDGEAI_INFERENCE_DEPLOYMENT", "value": inp.owner.name},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    cache_mount_rw: dict[str, Any] = {"name": "model-cache", "mountPath": c.CACHE_DIR}
    cache_mount_ro: dict[str, Any] = {"name": "model-cache", "mountPath": c.CACHE_DIR, "readOnly": True}
    volumes: list[dict[str, Any]] = [
        # The content-addressed cache shared by every model on the node: entries are
        # sha256/<digest>, so a rollback finds the previous build still there.
        {"name": "model-cache", "hostPath": {"path": c.CACHE_DIR, "type": "DirectoryOrCreate"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    init_mounts: list[dict[str, Any]] = [cache_mount_rw, {"name": "tmp", "mountPath": "/tmp"}]
    # Only with a site cache: the templates (and hashes) of deployments without one stay as they were.
    fetch_env: dict[str, Any] = {} if inp.mirror is None else {"env": [{
        "name": "EDGEAI_FETCH_MIRROR",
        "valueFrom": {"configMapKeyRef": {"name": inp.mirror.config_map, "key": inp.mirror.key, "optional": True}},
    }]}
    main_mounts: list[dict[str, Any]] = [cache_mount_ro, {"name": "tmp", "mountPath": "/tmp"}]
    if inp.public_key:
        volumes.append({
            "name": "public-key",
            "secret": {
                "secretName": inp.public_key.name,
                "items": [{"key": inp.public_key.key, "path": "public.pem"}],
                "defaultMode": 0o444,
            },
        })
        pk = {"name": "public-key", "mountPath": PUBLIC_KEY_DIR, "readOnly": True}
        init_mounts.append(pk)
        main_mounts.append(pk)
    if a.pull_secret:
        # The registry's credentials, for the fetch only: the server never talks to the registry.
        volumes.append({
            "name": "registry-auth",
            "secret": {
                "secretName": a.pull_secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                "defaultMode": 0o440,
            },
        })
        init_mounts.append({"name": "registry-auth", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True})
    if inp.decryption_key:
        volumes.append({
            "name": "decryption-key",
            "secret": {
                "secretName": inp.decryption_key.name,
                "items": [{"key": inp.decryption_key.key, "path": "key"}],
                "defaultMode": 0o440,
            },
        })
        main_mounts.append({"name": "decryption-key", "mountPath": DECRYPTION_KEY_DIR, "readOnly": True})
    if inp.fallback and inp.fallback.url:
        # Durable on the node: requests queued while the cloud is unreachable survive a restart.
        qdir = f"{c.FALLBACK_QUEUE_DIR}/{inp.namespace}/{inp.owner.name}"
        volumes.append({"name": "fallback-queue", "hostPath": {"path": qdir, "type": "DirectoryOrCreate"}})
        main_mounts.append({"name": "fallback-queue", "mountPath": c.FALLBACK_QUEUE_DIR})
    if keeps_quality_windows(inp):
        # Under the node's model cache, one directory per InferenceDeployment: the windows outlive the Pods,
        # so the next revision's Pod finds this one's. Its own volume, so the cache stays read-only here.
        wdir = f"{c.QUALITY_WINDOWS_NODE_DIR}/{inp.namespace}/{inp.owner.name}"
        volumes.append({"name": "quality-windows", "hostPath": {"path": wdir, "type": "DirectoryOrCreate"}})
        main_mounts.append({"name": "quality-windows", "mountPath": c.QUALITY_WINDOWS_DIR})
    if inp.acceleration.compiles:
        # TensorRT engines and OpenVINO blobs, compiled once per model and device, kept across restarts.
        volumes.append({"name": "provider-cache",
                        "hostPath": {"path": c.PROVIDER_CACHE_DIR, "type": "DirectoryOrCreate"}})
        main_mounts.append({"name": "provider-cache", "mountPath": c.PROVIDER_CACHE_DIR})

    # A person's pod annotations first: ours (below) win on a clash, the CRD refuses our prefix anyway.
    annotations = dict(inp.runtime.pod_annotations or {})
    annotations |= {
        # The digest in the template: a changed model is a changed template, so it rolls.
        c.A_SHA256: a.sha256,
        c.A_VARIANT: a.name,
        c.A_IDEP: inp.owner.name,
        c.A_DEVICE: inp.device,
        c.A_MODEL: inp.model,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(c.RUNTIME_PORT),
        "prometheus.io/path": "/metrics",
    }

    pod_spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [inp.node]}]}
                    ]
                }
            }
        },
        "tolerations": tolerations(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": [
            cache_dirs_container(inp.image, host_path_mounts(volumes, [*init_mounts, *main_mounts])),
            {
                "name": "fetch",
                "image": inp.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["edge-runtime"],
                "args": fetch_args(inp),
                **fetch_env,
                # Why a fetch failed (digest mismatch, unreachable...) reaches the Pod's status, and so
                # the device's phase, from its last log lines.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "securityContext": container_security(),
                "volumeMounts": init_mounts,
            },
            *([] if inp.quality_profile is None else [{
                "name": "fetch-profile",
                "image": inp.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["edge-runtime"],
                "args": fetch_profile_args(inp, inp.quality_profile),
                **fetch_env,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "securityContext": container_security(),
                "volumeMounts": init_mounts,
            }]),
        ],
        "containers": [
            {
                "name": "server",
                "image": inp.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["edge-runtime"],
                "args": serve_args(inp),
                # Why the server exited (a model that does not load, --require-accelerator with no
                # provider starting) reaches the Pod's status, and so the device's phase, from its last
                # log lines: the runtime writes no termination message of its own.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "ports": _ports(inp.runtime),
                "env": env,
                "resources": _resources(inp.runtime.resources, inp.acceleration.resource),
                # Loading a large model can take minutes: the startup probe holds liveness off until then.
                "startupProbe": probe("/v2/health/live", 5, 120),
                "livenessProbe": probe("/v2/health/live", 10, 3),
                # A failed quality gate: the runtime writes why to /dev/termination-log (the default
                # terminationMessagePolicy File) and exits with EXIT_QUALITY_GATE; the Pod's status carries both.
                "readinessProbe": probe("/v2/health/ready", 5, 2),
                "securityContext": container_security(),
                "volumeMounts": main_mounts,
            }
        ],
        "volumes": volumes,
    }
    # Always: a crashed server restarts in place (the kubelet's back-off), as it did under a Deployment.
    pod_spec["restartPolicy"] = "Always"
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": inp.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [inp.owner.reference()],
        },
        "spec": pod_spec,
    }
    # Hashed before the name (made from the hash) and the revision: going back to an identical
    # template under a new revision number (an undo) is the same Pod, its annotation rewritten in place.
    h = spec_hash(manifest)
    manifest["metadata"]["name"] = pod_name(inp.owner.name, inp.device, h)
    annotations[c.A_SPEC_HASH] = h
    if inp.revision is not None:
        annotations[c.A_REVISION] = str(inp.revision)
    return manifest


class WorkloadHashes:
    """The template hash `child_pod(inp)` would annotate, without building it while `inp` is unchanged.

    Pure and bounded. A reconcile compares every placed device's wanted hash with what runs there;
    building each manifest and hashing its JSON for that was most of a converged reconcile's cost.
    Kept per workload slot (namespace, deployment, device) and reused while the inputs are equal
    (frozen dataclasses: equal inputs give byte-equal manifests, see WorkloadInputs)."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._last: dict[tuple[str, str, str], tuple[WorkloadInputs, str]] = {}

    def get(self, inp: WorkloadInputs) -> str:
        slot = (inp.namespace, inp.owner.name, inp.device)
        hit = self._last.get(slot)
        if hit is not None and hit[0] == inp:
            return hit[1]
        h: str = child_pod(inp)["metadata"]["annotations"][c.A_SPEC_HASH]
        if len(self._last) >= self.limit:
            del self._last[next(iter(self._last))]
        self._last[slot] = (inp, h)
        return h


WORKLOAD_HASHES = WorkloadHashes()


def edge_device_for_node(node_name: str, node_uid: str) -> dict[str, Any]:
    """The EdgeDevice discovered for an edge Node. Owned by the Node: deleting the Node
    deletes the device through the garbage collector, with no finalizer."""
    owner = Owner("v1", "Node", node_name, node_uid)
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_DEVICE,
        "metadata": {
            "name": node_name,
            "labels": {
                c.L_MANAGED_BY: c.OPERATOR_NAME,
                c.L_PART_OF: "edgeai",
                c.L_DISCOVERED: "true",
            },
            "ownerReferences": [owner.reference(controller=False)],
        },
        "spec": {"nodeName": node_name},
    }
