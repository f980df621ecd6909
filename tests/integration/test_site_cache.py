"""spec.siteCache on the real plane (issue 16): the operator runs the site's cache on the node labelled
as its gateway, writes the ConfigMap the devices' fetches read their mirror from, points the devices'
fetch init containers at it, reports it in status, and takes it all away when spec.siteCache goes.

The nodes are kwok's: the cache's Pod is scheduled and made Ready like any Pod there; what the cache
does with bytes is tests/runtime/test_rt_site_cache.py's, with real processes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.test_operator import Env, edge_model, env, idep, wait_for

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the operator fixture, shared with test_operator.py

SITE_LABEL = "edgeai.io/site"
GATEWAY_LABEL = "edgeai.io/site-gateway"


def _caches(env: Env, ns: str) -> list[dict[str, Any]]:
    return env.items("deployments", ns, "edgeai.io/site-cache=d")


def _fetch_envs(child: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [ctr.get("env", []) for ctr in child["spec"]["initContainers"]
            if ctr["name"].startswith("fetch")]


def test_site_cache_on_the_gateway_devices_fetch_through_it_and_it_goes_with_the_spec(
    env: Env, namespace: str
) -> None:
    tag = uuid.uuid4().hex[:5]
    site = f"site-{tag}"
    devices = [f"edge-sc{tag}-{i}" for i in range(2)]
    gateway = f"gw-sc{tag}-0"
    env.kube.add_edge_nodes(devices, labels={"edgeai.io/test": namespace, SITE_LABEL: site})
    # The gateway is not one of the deployment's devices: any node of the site labelled so.
    env.kube.add_edge_nodes([gateway], labels={SITE_LABEL: site, GATEWAY_LABEL: "true"})
    try:
        wait_for("devices discovered", lambda: all(env.get("edgedevice", x) for x in devices), 60, env.op)
        url, sha, _ = env.model_file(f"{namespace}.onnx", seed=3)
        env.apply(edge_model("m", namespace, url, sha),
                  idep("d", namespace, "m", {"matchLabels": {"edgeai.io/test": namespace}}, siteCache={}))

        def address() -> str | None:
            node = env.get("node", gateway) or {}
            ips = [a["address"] for a in (node.get("status") or {}).get("addresses") or []
                   if a.get("type") == "InternalIP"]
            return ips[0] if ips else None

        ip = wait_for("the gateway's InternalIP", address, 60, env.op)
        endpoint = f"http://{ip}:8090"

        (cache,) = wait_for("the site's cache Deployment", lambda: _caches(env, namespace), 90, env.op)
        pod = cache["spec"]["template"]["spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [gateway]
        assert pod["hostNetwork"] is True
        assert pod["containers"][0]["args"][:1] == ["site-cache"]
        assert cache["metadata"]["ownerReferences"][0]["kind"] == "InferenceDeployment"

        def cm_data() -> dict[str, str] | None:
            cm = env.get("configmap", "d-site-cache", namespace)
            data = (cm or {}).get("data") or {}
            return data if data.get(site) == endpoint else None

        wait_for("the ConfigMap listing the Ready cache at the gateway's address", cm_data, 120, env.op)

        def rows() -> list[dict[str, Any]] | None:
            st = (env.get("idep", "d", namespace) or {}).get("status") or {}
            got = st.get("siteCaches")
            return got if got and got[0].get("ready") else None

        assert wait_for("status.siteCaches", rows, 120, env.op) == [
            {"site": site, "node": gateway, "endpoint": endpoint, "ready": True}]

        # Every device's fetch reads its site's key of that ConfigMap; the server never gets it.
        kids = wait_for("a workload per device", lambda: (k := env.children(namespace, "d"))
                        and sorted(k) == sorted(devices) and k, 90, env.op)
        for child in kids.values():
            assert _fetch_envs(child)[0] == [{"name": "EDGEAI_FETCH_MIRROR", "valueFrom": {"configMapKeyRef": {
                "name": "d-site-cache", "key": site, "optional": True}}}]

        # Off: the cache and the ConfigMap go, the status rows too, and the devices fetch from the origin.
        env.kube.kubectl("patch", "idep", "d", "-n", namespace, "--type=merge",
                         "-p", json.dumps({"spec": {"siteCache": None}}))
        wait_for("the cache Deployment gone", lambda: not _caches(env, namespace), 90, env.op)
        wait_for("the ConfigMap gone", lambda: env.get("configmap", "d-site-cache", namespace) is None, 90, env.op)
        wait_for("status.siteCaches gone", lambda: "siteCaches" not in (
            (env.get("idep", "d", namespace) or {}).get("status") or {}), 90, env.op)
        wait_for("devices without the mirror", lambda: all(
            _fetch_envs(ch)[0] == [] for ch in env.children(namespace, "d").values()), 120, env.op)
    finally:
        env.kube.kubectl("delete", "idep", "d", "-n", namespace, "--wait=false", check=False)
        for n in [*devices, gateway]:
            env.kube.delete_node(n)
