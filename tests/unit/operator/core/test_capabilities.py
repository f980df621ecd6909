"""Capabilities from Nodes, overrides, online state, quantities and selectors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from edge_operator.core.capabilities import from_node, node_health, with_overrides
from edge_operator.core.quantity import QuantityError, format_bytes, parse_quantity, quantity_bytes, quantity_millis
from edge_operator.core.selectors import SelectorError, describe, matches, validate_selector
from edgeai_api.edgedevice import CapabilityOverrides
from edgeai_api.enums import Accelerator


def node(labels: dict[str, str], alloc: dict[str, Any], ready: str | None = "True") -> dict[str, Any]:
    conds = [] if ready is None else [
        {"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]
    return {"metadata": {"name": "n", "labels": labels},
            "status": {"allocatable": alloc, "conditions": conds, "nodeInfo": {"architecture": "arm"}}}


def test_capabilities_from_labels_and_allocatable() -> None:
    n = node({"kubernetes.io/arch": "arm64", "edgeai.io/accelerator": "npu", "edgeai.io/site": "s1",
              "topology.kubernetes.io/zone": "z1"}, {"cpu": "4", "memory": "4Gi"})
    caps = from_node(n)
    assert caps.arch == "arm64" and caps.accelerators == ("cpu", "npu")
    assert caps.memory_bytes == 4 * 2**30 and caps.cpu_millis == 4000
    assert caps.site == "s1" and caps.zone == "z1"
    assert caps.to_status() == {"arch": "arm64", "cpu": "4", "memory": "4Gi", "accelerators": ["cpu", "npu"],
                                "site": "s1", "zone": "z1"}


def test_accelerator_from_device_plugin_resource_and_none_label() -> None:
    caps = from_node(node({"edgeai.io/accelerator": "none"}, {"nvidia.com/gpu": "1", "google.com/tpu": "0"}))
    assert caps.accelerators == ("cpu", "gpu")
    assert caps.arch == "arm"  # falls back to nodeInfo when the label is missing


def test_overrides_replace_field_by_field() -> None:
    caps = from_node(node({"kubernetes.io/arch": "amd64"}, {"memory": "8Gi"}))
    out = with_overrides(caps, CapabilityOverrides(accelerators=(Accelerator.VPU,), memory="2Gi"))
    assert out.accelerators == ("cpu", "vpu") and out.memory == "2Gi" and out.arch == "amd64"


@pytest.mark.parametrize(("ready", "online", "reason"), [
    ("True", True, "KubeletReady"), ("Unknown", False, "NodeStatusUnknown"), (None, False, "NoReadyCondition")])
def test_node_health(ready: str | None, online: bool, reason: str) -> None:
    h = node_health(node({}, {}, ready))
    assert h.online is online and h.reason == reason


@pytest.mark.parametrize(("text", "value"), [
    ("512Mi", Decimal(512 * 2**20)), ("1.5Gi", Decimal(3 * 2**29)), ("250m", Decimal("0.25")),
    ("1e3", Decimal(1000)), ("2k", Decimal(2000)), (3, Decimal(3)), (".5", Decimal("0.5"))])
def test_quantities(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_quantity_errors_name_the_field_and_rounding() -> None:
    with pytest.raises(QuantityError, match=r"spec\.x"):
        parse_quantity("12 GB", "spec.x")
    assert quantity_millis("0.0001") == 1  # rounds up: a fraction of a millicore is still a millicore
    assert quantity_bytes("1.5") == 2
    assert format_bytes(3 * 2**30) == "3Gi" and format_bytes(1536 * 2**20) == "1536Mi" and format_bytes(7) == "7"


def test_selector_semantics_and_validation() -> None:
    labels = {"a": "1", "b": "2"}
    assert matches(None, labels) and matches({}, labels)
    assert matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "c", "operator": "In", "values": ["1"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["1"]}]}, labels)
    with pytest.raises(SelectorError, match=r"matchExpressions\[0\].values"):
        validate_selector({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
    with pytest.raises(SelectorError, match="operator"):
        validate_selector({"matchExpressions": [{"key": "a", "operator": "Equals"}]})
    assert describe({"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"}]}) \
        == "a=1,b in (x,y),!c"
