"""kind-config.yaml cannot be run here (no Docker engine): check what kind and the kubelet would check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
# The kubelet refuses --node-labels in kubernetes.io / k8s.io outside this set (NodeRestriction).
KUBELET_ALLOWED = {
    "kubernetes.io/arch", "kubernetes.io/hostname", "kubernetes.io/os", "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
}


def _load() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "kind-config.yaml").read_text()))


def test_one_control_plane_and_two_edge_workers() -> None:
    cfg = _load()
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]


def test_workers_carry_the_kubeedge_taint_at_registration() -> None:
    for node in _load()["nodes"][1:]:
        patches = [yaml.safe_load(p) for p in node["kubeadmConfigPatches"]]
        join = next(p for p in patches if p["kind"] == "JoinConfiguration")
        assert {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"} in join["nodeRegistration"]["taints"]


def test_worker_labels_are_ones_the_kubelet_accepts() -> None:
    for node in _load()["nodes"][1:]:
        for key in node["labels"]:
            prefix = key.split("/", 1)[0] if "/" in key else ""
            restricted = prefix.endswith("kubernetes.io") or prefix.endswith("k8s.io")
            assert not restricted or key in KUBELET_ALLOWED or prefix.startswith(("kubelet.", "node.")), key


def test_kind_up_adds_the_edge_role_labels() -> None:
    script = (ROOT / "hack" / "kind-up.sh").read_text()
    assert "node-role.kubernetes.io/edge=" in script and "node-role.kubernetes.io/agent=" in script
