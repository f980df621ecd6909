"""Group overrides of runtime settings (spec.runtimeOverrides): per device, in order, part of the revision."""

from __future__ import annotations

from typing import Any

import pytest

from edge_operator.core import overrides as ov
from edge_operator.core import revisions
from edge_operator.core.capabilities import Capabilities
from edge_operator.core.placement import DeviceView
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import model_info
from edgeai_api import constants as c
from edgeai_api.inferencedeployment import RuntimeOverride, RuntimeSpec
from edgeai_api.serde import parse
from tests.unit.operator.core.test_planner import as_child, idep_body, model_body, run

SLOW = {"deviceSelector": {"matchLabels": {"edgeai.io/site": "slow"}}, "runtime": {"maxLatencyMs": 400}}
ONE = {"deviceSelector": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                                "values": ["edge-2"]}]},
       "runtime": {"maxLatencyMs": 900, "threads": 2}}

FLEET = [
    DeviceView("edge-0", "edge-0", {"edgeai.io/site": "fast", "kubernetes.io/hostname": "edge-0"},
               Capabilities(arch="amd64", memory="8Gi")),
    DeviceView("edge-1", "edge-1", {"edgeai.io/site": "slow", "kubernetes.io/hostname": "edge-1"},
               Capabilities(arch="amd64", memory="8Gi")),
    DeviceView("edge-2", "edge-2", {"edgeai.io/site": "slow", "kubernetes.io/hostname": "edge-2"},
               Capabilities(arch="amd64", memory="8Gi")),
]


def compiled(*raw: dict[str, Any]) -> tuple[ov.CompiledOverride, ...]:
    return ov.compile_overrides([parse(RuntimeOverride, r, "o") for r in raw])


def test_each_matching_override_replaces_only_what_it_sets_and_a_later_one_wins() -> None:
    base = RuntimeSpec(threads=1, max_latency_ms=100, max_error_rate=0.2)
    ovs = compiled(SLOW, ONE)
    assert ov.runtime_for(base, ovs, {"edgeai.io/site": "fast"}) == base
    assert ov.runtime_for(base, ovs, {"edgeai.io/site": "slow"}) == RuntimeSpec(threads=1, max_latency_ms=400,
                                                                                 max_error_rate=0.2)
    assert ov.runtime_for(base, ovs, {"edgeai.io/site": "slow", "kubernetes.io/hostname": "edge-2"}) == RuntimeSpec(
        threads=2, max_latency_ms=900, max_error_rate=0.2)


def test_a_bad_override_selector_is_named() -> None:
    bad = {"deviceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}, "runtime": {"threads": 2}}
    with pytest.raises(ValueError, match=r"spec.runtimeOverrides\[1\].deviceSelector.matchExpressions\[0\].values"):
        compiled(SLOW, bad)


def _args(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["spec"]["containers"][0]["args"])


def _idep(overrides: list[dict[str, Any]] | None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body = idep_body(status=status)
    body["spec"]["runtime"] = {"maxLatencyMs": 100}
    if overrides is not None:
        body["spec"]["runtimeOverrides"] = overrides
    return body


def test_each_device_gets_its_groups_settings_and_placement_is_unchanged() -> None:
    p = run(_idep([SLOW, ONE]), model_body(), devices=FLEET)
    by_dev = {m["metadata"]["annotations"][c.A_DEVICE]: m for m in p.apply}
    plain = run(_idep(None), model_body(), devices=FLEET)
    assert p.placement is not None and plain.placement is not None
    assert p.placement.assignments == plain.placement.assignments
    lat = {d: _args(m)[_args(m).index("--max-latency-ms") + 1] for d, m in by_dev.items()}
    assert lat == {"edge-0": "100", "edge-1": "400", "edge-2": "900"}
    assert "--threads" in _args(by_dev["edge-2"]) and _args(by_dev["edge-2"])[_args(by_dev["edge-2"]).index(
        "--threads") + 1] == "2"


def test_overrides_are_part_of_the_revision_and_absent_ones_change_no_hash() -> None:
    m = model_info(model_body())
    plain = revisions.template_for(m, RuntimeSpec(max_latency_ms=100), None, RuntimeImages("img"))
    empty = revisions.template_for(m, RuntimeSpec(max_latency_ms=100), None, RuntimeImages("img"), overrides=())
    with_ov = revisions.template_for(m, RuntimeSpec(max_latency_ms=100), None, RuntimeImages("img"),
                                     overrides=[parse(RuntimeOverride, SLOW, "o")])
    assert plain.hash() == empty.hash() and "runtimeOverrides" not in plain.to_dict()
    assert with_ov.hash() != plain.hash()
    # A revision remembers its overrides: status alone rebuilds the same per-device settings.
    back = revisions.Template.from_dict(with_ov.to_dict())
    assert back.hash() == with_ov.hash()
    assert back.runtime_for({"edgeai.io/site": "slow"}).max_latency_ms == 400


def test_changing_an_override_rolls_only_the_devices_whose_settings_change() -> None:
    first = run(_idep([SLOW]), model_body(), devices=FLEET)
    children = {m["metadata"]["annotations"][c.A_DEVICE]: as_child(m) for m in first.apply}
    converged = run(_idep([SLOW], status=first.status), model_body(), devices=FLEET, children=children)
    assert converged.apply == ()
    changed = dict(SLOW, runtime={"maxLatencyMs": 500})
    p = run(_idep([changed], status=converged.status), model_body(), devices=FLEET, children=children)
    assert p.status["revision"] == first.status["revision"] + 1
    before = {m["metadata"]["annotations"][c.A_DEVICE]: m["spec"] for m in first.apply}
    after = {m["metadata"]["annotations"][c.A_DEVICE]: m["spec"] for m in p.apply}
    # Every workload is told the new revision number (metadata), but only the group's Pods change.
    assert sorted(d for d in after if after[d] != before[d]) == ["edge-1", "edge-2"]


def test_a_battery_group_turns_polling_off_and_the_rest_keep_the_deployments_setting() -> None:
    base = RuntimeSpec(busy_poll_us=1000)
    battery = {"deviceSelector": {"matchLabels": {"edgeai.io/power": "battery"}}, "runtime": {"busyPollUs": 0}}
    ovs = compiled(battery)
    assert ov.runtime_for(base, ovs, {"edgeai.io/power": "battery"}).busy_poll_us == 0
    assert ov.runtime_for(base, ovs, {"edgeai.io/power": "mains"}).busy_poll_us == 1000
