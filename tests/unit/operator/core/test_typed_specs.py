"""A spec the typed API cannot read becomes a condition naming the field, never an exception; and
reading specs through the types leaves what the operator writes (and revision hashes) unchanged."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edge_operator.core import revisions as rev
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.status import device_status, invalid_spec_check, model_status, needs_verification
from edge_operator.core.views import ModelState, device_info, idep_info, model_info, node_info
from edgeai_api.serde import serialize
from tests.unit.operator.core.test_planner import NOW, model_body, run


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in status["conditions"] if x["type"] == "Ready")


def test_a_badly_typed_idep_field_is_invalid_spec_and_keeps_what_runs() -> None:
    body = {"metadata": {"name": "d", "namespace": "ns", "uid": "du", "generation": 2},
            "spec": {"model": "m", "runtime": {"threads": "two"}}}
    info = idep_info(body)
    assert info.spec is None and "spec.runtime.threads" in info.spec_error
    p = run(body, model_body())
    r = ready(p.status)
    assert r["status"] == "False" and r["reason"] == "InvalidSpec"
    assert r["message"] == "spec.runtime.threads: expected integer, got 'two'"
    assert p.apply == () and p.delete == ()


def test_a_model_spec_that_does_not_parse_fails_verification_with_the_field_named() -> None:
    body = model_body()
    body["spec"]["variants"][0]["accelerators"] = ["fpga"]
    m = model_info(body)
    assert m.spec is None and m.state == ModelState.FAILED and m.reason == "InvalidSpec"
    assert not m.verified and m.variants == ()  # an earlier Verified status is not trusted
    assert needs_verification(m)
    check = invalid_spec_check(m)
    assert check is not None
    st = model_status(m, check, NOW)
    assert st["phase"] == "Failed" and ready(st)["reason"] == "InvalidSpec"
    assert "spec.variants[0].accelerators[0]" in ready(st)["message"]
    body["status"] = st
    assert not needs_verification(model_info(body))  # reported once per generation


def test_device_capabilities_that_do_not_parse_are_reported_and_not_applied() -> None:
    dev = device_info({"metadata": {"name": "n"}, "spec": {"nodeName": "n", "capabilities": {"arch": "x86"}}})
    assert dev.overrides is None and "spec.capabilities.arch" in dev.spec_error
    node = node_info({"metadata": {"name": "n", "uid": "u"}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})
    st = device_status(dev, node, [], NOW, 60.0)
    assert st["online"] is True and ready(st)["reason"] == "InvalidSpec"


def test_a_revision_template_keeps_the_specs_own_json() -> None:
    runtime = {"threads": 2, "maxErrorRate": 1, "resources": {"requests": {"memory": 134217728, "cpu": "100m"}}}
    fallback = {"url": "https://cloud/v2", "confidenceThreshold": 0.5}
    body = {"metadata": {"name": "d", "namespace": "ns", "generation": 1},
            "spec": {"model": "m", "runtime": runtime, "fallback": fallback}}
    spec = idep_info(body).spec
    assert spec is not None and spec.runtime is not None and spec.fallback is not None
    assert serialize(spec.runtime) == runtime and serialize(spec.fallback) == fallback
    t = rev.template_for(model_info(model_body()), spec.runtime, spec.fallback, RuntimeImages("img"))
    d = t.to_dict()
    assert d["runtime"] == runtime and d["fallback"] == fallback
    # the hash the dict-reading operator computed for the same spec
    assert t.hash() == hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert json.dumps(d["runtime"], sort_keys=True) == json.dumps(runtime, sort_keys=True)  # 1 stays 1, not 1.0
    assert rev.Template.from_dict(d) == t


def test_a_spec_is_parsed_again_whenever_it_changes_and_never_from_a_stale_copy() -> None:
    # The views reuse the last parse of an object's spec while it is equal; the same object (uid)
    # with another spec, or its old dict changed in place afterwards, must never be served stale.
    body = {"metadata": {"name": "d", "namespace": "ns", "uid": "memo-1", "generation": 1},
            "spec": {"model": "a", "runtime": {"threads": 2}}}
    first = idep_info(body)
    assert first.spec is not None and first.spec.model == "a"
    body["spec"]["runtime"]["threads"] = 3  # type: ignore[index]  # in place: the memo kept its own copy
    again = idep_info(body)
    assert again.spec is not None and again.spec.runtime is not None and again.spec.runtime.threads == 3
    bad = idep_info({**body, "spec": {"model": "a", "runtime": {"threads": "x"}}})
    assert bad.spec is None and "spec.runtime.threads" in bad.spec_error
    good = idep_info({**body, "spec": {"model": "b"}})
    assert good.spec is not None and good.spec.model == "b" and good.spec_error == ""


def test_a_revision_entry_is_read_again_when_its_outcome_changes() -> None:
    p = run({"metadata": {"name": "d", "namespace": "ns", "uid": "memo-2", "generation": 1},
             "spec": {"model": "m"}}, model_body())
    entry = dict(p.status["revisions"][0])
    assert [r.outcome for r in rev.history_from_status({"revisions": [entry]})] == [entry["outcome"]]
    changed = {**entry, "outcome": "Failed", "message": "gate"}
    [r] = rev.history_from_status({"revisions": [changed]})
    assert r.outcome == "Failed" and r.message == "gate" and r.number == entry["revision"]


def test_a_template_keeps_an_oci_builds_registry_access_and_leaves_https_templates_unchanged() -> None:
    body = model_body()
    before = rev.template_for(model_info(body), None, None, RuntimeImages("img"))
    assert "pullSecret" not in json.dumps(before.to_dict()) and "plainHTTP" not in json.dumps(before.to_dict())
    body["spec"]["source"]["uri"] = "oci://reg.example/models/m:v1"
    body["spec"]["registry"] = {"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}
    t = rev.template_for(model_info(body), None, None, RuntimeImages("img"))
    d = t.to_dict()
    assert d["source"]["pullSecret"] == "regcred" and d["source"]["plainHTTP"] is True
    assert rev.Template.from_dict(d) == t and t.hash() != before.hash()
