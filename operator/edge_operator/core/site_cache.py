"""The site cache tier (InferenceDeployment `spec.siteCache`, issue 16). Pure decisions: the sites of
the placed devices, each site's gateway, the cache Deployment run there, the ConfigMap the devices'
fetches read their mirror from, and the status rows.

How it fits together: every device with a site label gets `EDGEAI_FETCH_MIRROR` from the key of its
site in the ConfigMap `<deployment>-site-cache` (core/manifests.py, `MirrorRef`); that ConfigMap holds
`http://<gateway InternalIP>:<port>` for each site whose cache is Ready (or the URL the user named in
`endpoints`). The Pod templates only name the ConfigMap and the key, so a gateway's new address, a
cache becoming Ready or going away, changes no template and rolls no device: a fetch reads the
current value when it starts, and falls back to the origin by itself when the cache is down.

Why only Ready caches are listed: a device on a site whose gateway is off the network would wait a
connection timeout on every fetch before going to the origin; what the API server shows (the cache
Pod's readiness, through KubeEdge) is the best the cloud knows, and the fetch's fallback covers the rest.

Why hostNetwork on a host port: KubeEdge edge nodes usually have no cluster Service network (no
kube-proxy, EdgeMesh optional), so a Service would not reach the devices; the gateway's own address does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_operator.core.manifests import (
    MirrorRef,
    Owner,
    cache_dirs_container,
    child_name,
    container_security,
    host_path_mounts,
    label_value,
    pod_security,
    probe,
    spec_hash,
    tolerations,
)
from edge_operator.core.quantity import QuantityError, quantity_bytes
from edgeai_api import constants as c
from edgeai_api.inferencedeployment import SiteCacheSpec

_CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
COMPONENT = "site-cache"
MOUNT = "/var/cache/edgeai-site"


@dataclass(frozen=True)
class Settings:
    site_label: str
    gateway_label: str
    port: int
    max_bytes: int
    endpoints: Mapping[str, str]


def settings(spec: SiteCacheSpec) -> Settings:
    """The spec with its defaults; ValueError naming the field when maxBytes is not a byte count."""
    try:
        max_bytes = quantity_bytes(spec.max_bytes if spec.max_bytes is not None else c.SITE_CACHE_MAX_BYTES,
                                   "spec.siteCache.maxBytes")
    except QuantityError as e:
        raise ValueError(str(e)) from e
    if max_bytes <= 0:
        raise ValueError("spec.siteCache.maxBytes must be positive")
    return Settings(
        site_label=spec.site_label or c.SITE_LABEL,
        gateway_label=spec.gateway_label or c.SITE_GATEWAY_LABEL,
        port=spec.port or c.SITE_CACHE_PORT,
        max_bytes=max_bytes,
        endpoints=dict(spec.endpoints or {}),
    )


def site_label(spec: SiteCacheSpec | None) -> str | None:
    """The label the revision's templates key the mirror by; None when the cache tier is off."""
    if spec is None:
        return None
    return spec.site_label or c.SITE_LABEL


def config_map_name(idep: str) -> str:
    name = f"{idep}-site-cache"
    return name if len(name) <= 253 else child_name(idep, "site-cache")


def mirror_ref(idep: str, label: str | None, labels: Mapping[str, str]) -> MirrorRef | None:
    """The device's mirror reference: its site's key in the ConfigMap (None: no site cache, or a
    device without a site, whose fetch goes to the origin as before)."""
    if label is None:
        return None
    site = labels.get(label, "")
    if not _CONFIG_MAP_KEY.match(site):
        return None  # label values are valid keys; an empty one is not a site
    return MirrorRef(config_map_name(idep), site)


def sites_of(device_labels: Iterable[Mapping[str, str]], label: str) -> set[str]:
    return {s for labels in device_labels if _CONFIG_MAP_KEY.match(s := labels.get(label, ""))}


@dataclass(frozen=True)
class GatewayNode:
    name: str
    labels: Mapping[str, str]
    address: str  # InternalIP ("" when the node reports none)
    online: bool
    deleting: bool = False


def gateways(nodes: Iterable[GatewayNode], s: Settings) -> dict[str, GatewayNode]:
    """The gateway of each site: a node labelled `gateway_label=true` with a site; of several, an
    online one with an address first, then by name (stable, so a cache does not move back and forth)."""
    best: dict[str, GatewayNode] = {}
    for n in nodes:
        if n.deleting or n.labels.get(s.gateway_label) != "true":
            continue
        site = n.labels.get(s.site_label, "")
        if not _CONFIG_MAP_KEY.match(site):
            continue
        cur = best.get(site)
        if cur is None or _rank(n) < _rank(cur):
            best[site] = n
    return best


def _rank(n: GatewayNode) -> tuple[bool, bool, str]:
    return (not n.online, not n.address, n.name)


# --- what runs: the cache Deployments -------------------------------------------------------------


@dataclass(frozen=True)
class SiteCacheInfo:
    """A site cache Deployment the operator owns, as the watch shows it."""

    namespace: str
    name: str
    uid: str
    owner: str  # the InferenceDeployment
    owner_uid: str
    site: str
    node: str
    spec_hash: str | None
    ready: bool
    deleting: bool = False


def site_cache_info(body: Mapping[str, Any]) -> SiteCacheInfo | None:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(c.L_COMPONENT) != COMPONENT or not labels.get(c.L_SITE_CACHE):
        return None
    owner = next((o for o in meta.get("ownerReferences") or []
                  if o.get("controller") and o.get("kind") == c.KIND_IDEP), None)
    if owner is None:
        return None
    ann = meta.get("annotations") or {}
    st = body.get("status") or {}
    return SiteCacheInfo(
        namespace=str(meta.get("namespace", "")),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        owner=str(owner.get("name")),
        owner_uid=str(owner.get("uid")),
        site=str(ann.get(c.A_SITE, "")),
        node=str(ann.get(c.A_NODE, "")),
        spec_hash=ann.get(c.A_SPEC_HASH),
        ready=int(st.get("readyReplicas") or 0) >= 1,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def cache_name(idep: str, site: str) -> str:
    return child_name(idep, f"site-cache-{site}")


def host_dir(namespace: str, idep: str) -> str:
    # One directory per deployment: two caches never evict each other's blobs.
    return f"{c.SITE_CACHE_DIR}/{namespace}.{idep}"


def cache_deployment(owner: Owner, namespace: str, site: str, node: str, s: Settings, image: str) -> dict[str, Any]:
    """The site's cache: one replica pinned to the gateway node, on the host's network and port."""
    sel = {c.L_SITE_CACHE: label_value(owner.name), c.A_SITE: label_value(site)}
    labels = {
        c.L_NAME: "edge-runtime",
        c.L_INSTANCE: label_value(owner.name),
        c.L_COMPONENT: COMPONENT,
        c.L_PART_OF: "edgeai",
        c.L_MANAGED_BY: c.OPERATOR_NAME,
        **sel,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "blobs", "hostPath": {"path": host_dir(namespace, owner.name), "type": "DirectoryOrCreate"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "blobs", "mountPath": MOUNT}, {"name": "tmp", "mountPath": "/tmp"}]
    pod_spec: dict[str, Any] = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
        "tolerations": tolerations(),
        "hostNetwork": True,
        # The node's resolver: an edge node may have no cluster DNS, and origins are outside names.
        "dnsPolicy": "Default",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": [cache_dirs_container(image, host_path_mounts(volumes, mounts))],
        "containers": [{
            "name": "site-cache",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["edge-runtime"],
            "args": ["site-cache", "--host", "0.0.0.0", "--port", str(s.port), "--dir", MOUNT,
                     "--max-bytes", str(s.max_bytes)],
            "env": [{"name": "EDGEAI_SITE", "value": site}],
            # Declared so the scheduler refuses a second cache on the same gateway port (another
            # deployment's) with an event saying so, instead of a crash loop on a taken port.
            "ports": [{"name": "site-cache", "containerPort": s.port, "hostPort": s.port, "protocol": "TCP"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": probe("/healthz", 5, 2, s.port),
            "livenessProbe": probe("/healthz", 10, 3, s.port),
            "securityContext": container_security(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": cache_name(owner.name, site),
            "namespace": namespace,
            "labels": labels,
            "annotations": {c.A_SITE: site, c.A_NODE: node, c.A_IDEP: owner.name},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            # The host port is the node's: the old Pod must go before the new one can bind it.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": sel},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    manifest["metadata"]["annotations"][c.A_SPEC_HASH] = spec_hash(manifest)
    return manifest


def config_map(owner: Owner, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(owner.name),
            "namespace": namespace,
            "labels": {c.L_NAME: "edge-runtime", c.L_INSTANCE: label_value(owner.name), c.L_COMPONENT: COMPONENT,
                       c.L_PART_OF: "edgeai", c.L_MANAGED_BY: c.OPERATOR_NAME},
            "ownerReferences": [owner.reference()],
        },
        "data": dict(sorted(data.items())),
    }


@dataclass(frozen=True)
class Plan:
    apply: tuple[dict[str, Any], ...]  # cache Deployments to create or update
    delete: tuple[SiteCacheInfo, ...]
    config_map: dict[str, Any] | None  # None: the tier is off (delete the ConfigMap if there is one)
    rows: tuple[dict[str, Any], ...]  # status.siteCaches


def plan(owner: Owner, namespace: str, s: Settings | None, sites: set[str], gws: Mapping[str, GatewayNode],
         running: Sequence[SiteCacheInfo], image: str) -> Plan:
    """Which caches run where, what the devices read, what the status says, for one deployment.

    `sites`: the sites of its placed devices; `gws`: each site's gateway; `running`: its cache
    Deployments now. Off (`s` None): every cache goes, and so does the ConfigMap."""
    if s is None:
        return Plan((), tuple(r for r in running if not r.deleting), None, ())
    by_site = {r.site: r for r in running if not r.deleting}
    apply: list[dict[str, Any]] = []
    keep: set[str] = set()
    data: dict[str, str] = {site: url for site, url in s.endpoints.items() if _CONFIG_MAP_KEY.match(site)}
    rows: list[dict[str, Any]] = []
    for site in sorted(sites | set(data)):
        if site in s.endpoints:
            rows.append({"site": site, "endpoint": s.endpoints[site], "message": "a cache the user runs "
                         "(spec.siteCache.endpoints)"})
            continue
        gw = gws.get(site)
        if gw is None:
            rows.append({"site": site, "ready": False, "message": f"no node labelled {s.gateway_label}=true with "
                         f"{s.site_label}={site}: its devices fetch from the origin"})
            continue
        keep.add(site)
        want = cache_deployment(owner, namespace, site, gw.name, s, image)
        cur = by_site.get(site)
        if cur is None or cur.spec_hash != want["metadata"]["annotations"][c.A_SPEC_HASH]:
            apply.append(want)
        ready = cur is not None and cur.ready and cur.node == gw.name
        row: dict[str, Any] = {"site": site, "node": gw.name, "ready": ready}
        if gw.address:
            row["endpoint"] = f"http://{_host(gw.address)}:{s.port}"
            if ready:
                data[site] = row["endpoint"]
            else:
                row["message"] = "the cache is not Ready: its devices fetch from the origin meanwhile"
        else:
            row["message"] = f"node {gw.name} reports no InternalIP: its devices fetch from the origin"
        rows.append(row)
    delete = tuple(r for site, r in sorted(by_site.items()) if site not in keep)
    return Plan(tuple(apply), delete, config_map(owner, namespace, data), tuple(rows))


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # an IPv6 literal in a URL
