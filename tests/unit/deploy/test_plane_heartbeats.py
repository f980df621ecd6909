"""The local plane's heartbeat settings scale with the simulated fleet (hack/plane.heartbeats)."""

from __future__ import annotations

import plane  # hack/ (tests/conftest.py puts it on the path)
import pytest


@pytest.mark.parametrize(("nodes", "lease", "grace"), [
    (3, 20, 15), (100, 20, 15), (300, 20, 40), (1000, 20, 40), (2000, 40, 40), (10_000, 200, 200),
    (100_000, 2000, 2000),
])
def test_heartbeat_settings_for_a_fleet(nodes: int, lease: int, grace: int) -> None:
    assert plane.heartbeats(nodes) == (lease, grace)


def test_lease_writes_stay_near_what_a_1000_node_plane_makes_and_grace_covers_four_renewals() -> None:
    for nodes in (1000, 3000, 10_000, 50_000):
        lease, grace = plane.heartbeats(nodes)
        renew = lease / 4  # kwok renews every quarter of the lease
        assert nodes / renew <= 200.0 + 1e-9
        assert grace >= 4 * renew


def test_kwok_keeps_its_defaults_up_to_1000_nodes_and_is_tuned_past_them() -> None:
    import yaml

    assert plane.kwok_tuning(1000) == ("", [])
    doc, flags = plane.kwok_tuning(10_000)
    assert flags == ["--v=WARN"]
    docs = list(yaml.safe_load_all(plane.KWOK_STAGES.read_text() + doc))
    cfg = next(d for d in docs if d["kind"] == "KwokConfiguration")
    assert cfg["apiVersion"] == "config.kwok.x-k8s.io/v1alpha1"
    assert cfg["options"] == {"nodeLeaseParallelism": 32, "nodePlayStageParallelism": 32,
                              "podPlayStageParallelism": 32}


class _Recorder(plane.Kube):
    """Kube with the API calls recorded instead of made (the pacing is pure logic over them)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def apply(self, objs, attempts=1):  # type: ignore[no-untyped-def]
        self.calls.append(("apply", len(objs)))

    def ready_nodes(self, names):  # type: ignore[no-untyped-def]
        self.calls.append(("look", len(names)))
        return len(names)


def test_a_large_fleet_is_created_no_faster_than_kwok_brings_it_up() -> None:
    k = _Recorder()
    k.create_edge_nodes([f"edge-{i}" for i in range(2400)])
    assert k.calls == [("apply", 200)] * 5 + [("look", 1000)] + [("apply", 200)] * 5 + [("look", 2000)] + \
        [("apply", 200)] * 2
    small = _Recorder()
    small.create_edge_nodes([f"edge-{i}" for i in range(1000)])
    assert small.calls == [("apply", 200)] * 5


def test_past_1000_nodes_kwok_reports_node_status_every_5_to_10_minutes_not_every_20_seconds() -> None:
    """kwok v0.7.0 with leases still patched every node's status every 20-45 s (its defaults picked
    the lease-less heartbeat): at 10,000 nodes ~300 patches a second, and the last nodes created
    never got a first status. The plane's own node stages: the first status at once, then 5-10 min."""
    import yaml

    doc, _ = plane.kwok_tuning(10_000)
    stages = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(doc)
              if d and d["kind"] == "Stage"}
    assert set(stages) == {"edgeai-node-initialize", "edgeai-node-status-report"}
    assert all(s["resourceRef"] == {"apiGroup": "v1", "kind": "Node"} for s in stages.values())
    assert "delay" not in stages["edgeai-node-initialize"]
    delay = stages["edgeai-node-status-report"]["delay"]
    assert (delay["durationMilliseconds"], delay["jitterDurationMilliseconds"]) == (300_000, 600_000)
    _, lease_grace = plane.heartbeats(10_000)
    assert lease_grace * 1000 < delay["durationMilliseconds"]  # liveness rides on the lease, not on status
    for s in stages.values():
        assert "phase: Running" in s["next"]["statusTemplate"]
