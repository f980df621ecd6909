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
