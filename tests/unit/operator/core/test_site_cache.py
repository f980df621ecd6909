"""core/site_cache.py: sites, gateways, the cache Deployment, the ConfigMap, status rows; and what
spec.siteCache does to the devices' Pod templates (planner, manifests)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_operator.core import planner, site_cache
from edge_operator.core.manifests import Owner
from edge_operator.core.site_cache import GatewayNode, SiteCacheInfo
from edgeai_api import constants as c
from edgeai_api.inferencedeployment import SiteCacheSpec
from tests.unit.operator.core.test_planner import as_child, idep_body, model_body, run

OWNER = Owner(c.API_VERSION, c.KIND_IDEP, "d", "du")
S = site_cache.settings(SiteCacheSpec())


def gw(name: str, site: str, address: str = "10.0.0.1", online: bool = True, gateway: str = "true") -> GatewayNode:
    return GatewayNode(name, {c.SITE_LABEL: site, c.SITE_GATEWAY_LABEL: gateway}, address, online)


def running(site: str, node: str, ready: bool, spec_hash: str | None = None) -> SiteCacheInfo:
    want = site_cache.cache_deployment(OWNER, "ns", site, node, S, "img")
    return SiteCacheInfo("ns", want["metadata"]["name"], f"uid-{site}", "d", "du", site, node,
                         spec_hash or want["metadata"]["annotations"][c.A_SPEC_HASH], ready)


def test_settings_defaults_and_a_bad_size() -> None:
    assert (S.site_label, S.gateway_label, S.port, S.max_bytes) == (c.SITE_LABEL, c.SITE_GATEWAY_LABEL, 8090,
                                                                      10 << 30)
    assert site_cache.settings(SiteCacheSpec(max_bytes="512Mi", port=9000)).max_bytes == 512 << 20
    with pytest.raises(ValueError, match=r"spec\.siteCache\.maxBytes"):
        site_cache.settings(SiteCacheSpec(max_bytes="lots"))


def test_mirror_ref_by_the_devices_site() -> None:
    ref = site_cache.mirror_ref("d", c.SITE_LABEL, {c.SITE_LABEL: "berlin-1"})
    assert ref is not None and (ref.config_map, ref.key) == ("d-site-cache", "berlin-1")
    assert site_cache.mirror_ref("d", c.SITE_LABEL, {}) is None  # no site: the origin, as before
    assert site_cache.mirror_ref("d", None, {c.SITE_LABEL: "x"}) is None  # tier off


def test_gateway_choice_prefers_online_with_an_address_then_name() -> None:
    nodes = [gw("g-b", "a"), gw("g-a", "a", online=False), gw("g-c", "a", address=""), gw("h", "b"),
             gw("not-gw", "c", gateway="false"),
             GatewayNode("no-site", {c.SITE_GATEWAY_LABEL: "true"}, "1.2.3.4", True)]
    got = site_cache.gateways(nodes, S)
    assert {k: v.name for k, v in got.items()} == {"a": "g-b", "b": "h"}


def test_plan_runs_a_cache_per_site_with_a_gateway_and_lists_it_once_ready() -> None:
    gws = {"a": gw("g-a", "a", "10.0.0.7"), "b": gw("g-b", "b", "fd00::7")}
    p = site_cache.plan(OWNER, "ns", S, {"a", "b", "c"}, gws, [], "img")
    assert sorted(m["metadata"]["annotations"][c.A_SITE] for m in p.apply) == ["a", "b"]
    assert p.delete == () and p.config_map is not None and p.config_map["data"] == {}
    rows = {r["site"]: r for r in p.rows}
    assert rows["a"] == {"site": "a", "node": "g-a", "ready": False, "endpoint": "http://10.0.0.7:8090",
                         "message": "the cache is not Ready: its devices fetch from the origin meanwhile"}
    assert rows["b"]["endpoint"] == "http://[fd00::7]:8090"
    assert rows["c"]["ready"] is False and "edgeai.io/site-gateway=true" in rows["c"]["message"]

    # Ready: listed in the ConfigMap; the unchanged Deployment is not applied again.
    p = site_cache.plan(OWNER, "ns", S, {"a", "b", "c"}, gws, [running("a", "g-a", True)], "img")
    assert [m["metadata"]["annotations"][c.A_SITE] for m in p.apply] == ["b"]
    assert p.config_map is not None and p.config_map["data"] == {"a": "http://10.0.0.7:8090"}
    assert p.config_map["metadata"]["name"] == "d-site-cache"
    assert p.config_map["metadata"]["ownerReferences"][0]["uid"] == "du"


def test_plan_moves_drops_and_turns_off() -> None:
    # The gateway moved: the Deployment is re-applied for the new node, not listed until Ready there.
    p = site_cache.plan(OWNER, "ns", S, {"a"}, {"a": gw("g-new", "a")}, [running("a", "g-old", True)], "img")
    assert [m["metadata"]["annotations"][c.A_NODE] for m in p.apply] == ["g-new"]
    assert p.config_map is not None and p.config_map["data"] == {}
    # A site with no devices left: its cache goes.
    old = running("z", "g-z", True)
    p = site_cache.plan(OWNER, "ns", S, {"a"}, {"a": gw("g-a", "a"), "z": gw("g-z", "z")}, [old], "img")
    assert p.delete == (old,)
    # Off: every cache goes, and the ConfigMap with them (None).
    p = site_cache.plan(OWNER, "ns", None, {"a"}, {}, [old], "img")
    assert p.delete == (old,) and p.config_map is None and p.rows == () and p.apply == ()


def test_user_endpoints_replace_the_operator_run_cache() -> None:
    s = site_cache.settings(SiteCacheSpec(endpoints={"a": "http://cache.site-a.svc:8090"}))
    p = site_cache.plan(OWNER, "ns", s, {"a"}, {"a": gw("g-a", "a")}, [], "img")
    assert p.apply == ()
    assert p.config_map is not None and p.config_map["data"] == {"a": "http://cache.site-a.svc:8090"}
    assert p.rows[0]["endpoint"] == "http://cache.site-a.svc:8090" and "ready" not in p.rows[0]


def test_cache_deployment_is_pinned_on_the_host_network_with_the_cpu_image() -> None:
    s = site_cache.settings(SiteCacheSpec(port=9100, max_bytes="1Gi"))
    m = site_cache.cache_deployment(OWNER, "ns", "a", "g-a", s, "runtime:cpu")
    assert site_cache.site_cache_info({**m, "status": {"readyReplicas": 1}}) == SiteCacheInfo(
        "ns", m["metadata"]["name"], "", "d", "du", "a", "g-a", m["metadata"]["annotations"][c.A_SPEC_HASH], True)
    pod = m["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["automountServiceAccountToken"] is False
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g-a"]}]}]
    assert {t["key"] for t in pod["tolerations"]} >= {c.EDGE_NODE_LABEL, "node.kubernetes.io/unreachable"}
    (ctr,) = pod["containers"]
    assert ctr["image"] == "runtime:cpu" and ctr["command"] == ["edge-runtime"]
    assert ctr["args"][:1] == ["site-cache"] and ctr["args"][ctr["args"].index("--max-bytes") + 1] == str(1 << 30)
    assert ctr["ports"] == [{"name": "site-cache", "containerPort": 9100, "hostPort": 9100, "protocol": "TCP"}]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 9100}
    assert pod["volumes"][0]["hostPath"]["path"] == f"{c.SITE_CACHE_DIR}/ns.d"
    assert m["spec"]["strategy"] == {"type": "Recreate"}
    # Not a device's workload: the device index skips it.
    from edge_operator.core.views import child_info

    assert child_info(m) is None


def _with_site_cache(body: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body["spec"]["siteCache"] = spec or {}
    return body


def test_devices_fetch_through_their_sites_configmap_key_and_turning_it_on_is_a_revision() -> None:
    off = run(idep_body(), model_body())
    on = run(_with_site_cache(idep_body()), model_body())
    for m in on.apply:
        for ctr in m["spec"]["initContainers"][1:]:
            assert ctr["env"] == [{"name": "EDGEAI_FETCH_MIRROR", "valueFrom": {"configMapKeyRef": {
                "name": "d-site-cache", "key": "a", "optional": True}}}]
    # The server container never gets it: only fetches go through the cache.
    assert all(e["name"] != "EDGEAI_FETCH_MIRROR" for e in on.apply[0]["spec"]["containers"][0]
               ["env"])
    # Without spec.siteCache the templates are byte-for-byte what they were (no env on the fetch).
    assert all("env" not in ctr for m in off.apply for ctr in m["spec"]["initContainers"])
    # On: a new template, so a new revision rolled out in waves like any other change.
    assert on.status["revisions"][-1]["hash"] != off.status["revisions"][-1]["hash"]
    # A gateway's address, or a cache becoming Ready, is not in the template: nothing rolls for it.
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in on.apply}
    again = run(_with_site_cache(idep_body(status=on.status)), model_body(), children=children)
    assert again.apply == ()


def test_a_bad_max_bytes_is_an_invalid_spec_not_a_crash() -> None:
    p = run(_with_site_cache(idep_body(), {"maxBytes": "lots"}), model_body())
    ready = next(x for x in p.status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.siteCache.maxBytes" in ready["message"]
    assert planner  # the planner is what reports it
