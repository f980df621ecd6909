"""Shared fixtures.

`kube`: a real Kubernetes API server for integration tests. With $KUBECONFIG set,
the suite runs against that cluster (kind, or a real KubeEdge cluster) and leaves
it as it found it; otherwise it brings up the local plane (hack/plane.py, plane
name "test", 3 kwok edge nodes) once per session and tears it down at the end;
under pytest-xdist (`make test`) each worker has its own plane, "test-gw0", ...
Set EDGEAI_KEEP_PLANE=1 to keep the test plane up between runs (faster loops).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

import plane as localplane  # noqa: E402


class KubeHandle(localplane.Kube):
    """What integration tests get: kubectl, an API client, and the simulated fleet."""

    def __init__(self, kubeconfig: str, kubectl: str, simulated: bool) -> None:
        super().__init__(kubeconfig, kubectl)
        self.simulated = simulated  # False on an external cluster: fleet changes are skipped

    def api_client(self) -> Any:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
        return client.ApiClient(cfg)

    def add_edge_nodes(self, names: list[str], labels: dict[str, str] | None = None,
                       allocatable: dict[str, str] | None = None) -> None:
        self._need_simulated()
        self.create_edge_nodes(names, labels, allocatable)

    def set_node_online(self, name: str, online: bool) -> None:
        self._need_simulated()
        super().set_node_online(name, online)

    def delete_node(self, name: str) -> None:
        self._need_simulated()
        super().delete_node(name)

    def _need_simulated(self) -> None:
        if not self.simulated:
            pytest.skip("changes the simulated fleet: only on the local plane")


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeHandle]:
    external = os.environ.get("KUBECONFIG")
    if external:
        kubectl = os.environ.get("KUBECTL") or str(localplane.binaries()["kubectl"])
        yield KubeHandle(external, kubectl, simulated=False)
        return
    name = os.environ.get("EDGEAI_TEST_PLANE", "test")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        name = f"{name}-{worker}"  # `make test` runs 2 workers: each its own plane, never a shared fleet
    p = localplane.up(name, nodes=3)
    try:
        yield KubeHandle(str(p.kubeconfig), str(localplane.binaries()["kubectl"]), simulated=True)
    finally:
        if not os.environ.get("EDGEAI_KEEP_PLANE"):
            localplane.down(name)


@pytest.fixture
def namespace(kube: KubeHandle) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", ns)
    try:
        yield ns
    finally:
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything that uses the `kube` fixture is an integration test, marked or not.
    for item in items:
        if "kube" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
