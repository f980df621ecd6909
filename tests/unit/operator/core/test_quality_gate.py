"""healthGate.quality and the EdgeModel's qualityProfile on the operator's side: the reference profile
travels with the revision, a device whose runtime failed its quality gate (exit code and termination
message in Pod status) fails the wave like a crash and is rolled back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edge_operator.core import planner
from edge_operator.core import pod_workloads as pw
from edge_operator.core import revisions as rev
from edge_operator.core.device_phase import device_phase
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import PodInfo, idep_info, model_info, pod_info
from edgeai_api import constants as c
from edgeai_api.enums import WorkloadPhase
from edgeai_api.exit_codes import EXIT_QUALITY_GATE
from tests.unit.operator.core.podsim import pod_of
from tests.unit.operator.core.test_planner_rollout import FLEET, NEW, Cluster, idep, model

PROFILE = {"uri": "https://x/quality-profile.json", "sha256": "e" * 64, "size": 2048}
GATE = {"canary": 1, "waves": ["50%"],
        "healthGate": {"readySeconds": 2, "progressDeadlineSeconds": 30, "quality": {"maxPSI": 0.25}}}


def profiled(sha: str | None = None) -> dict[str, Any]:
    m = model(sha) if sha else model()
    m["spec"]["qualityProfile"] = dict(PROFILE)
    return m


def server_pod(sha: str, exit_code: int | None, message: str = "", ready: bool = False) -> PodInfo:
    status: dict[str, Any] = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
    cs: dict[str, Any] = {"name": "server", "restartCount": 1 if exit_code else 0, "state": {"running": {}}}
    if exit_code is not None:
        cs["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}}
    status["containerStatuses"] = [cs]
    return pod_info({"metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2027-01-01T00:00:00Z",
                                  "annotations": {c.A_SHA256: sha}}, "status": status})


def test_model_info_and_the_template_carry_the_profile_and_old_templates_keep_their_hash() -> None:
    m = model_info(profiled())
    assert m.quality_profile is not None and m.quality_profile.sha256 == "e" * 64
    plain = rev.template_for(model_info(model()), None, None, RuntimeImages("img"))
    t = rev.template_for(m, None, None, RuntimeImages("img"))
    assert t.hash() != plain.hash() and rev.Template.from_dict(t.to_dict()) == t
    assert "qualityProfile" not in plain.to_dict() and "qualityGate" not in plain.to_dict()
    idp = idep_info(idep({}, GATE))
    assert idp.spec is not None and idp.spec.rollout is not None and idp.spec.rollout.health_gate is not None
    g = rev.template_for(m, None, None, RuntimeImages("img"), idp.spec.rollout.health_gate.quality, 2)
    assert g.to_dict()["qualityGate"] == {"maxPSI": 0.25, "windowSeconds": 2}
    assert rev.Template.from_dict(g.to_dict()) == g and g.hash() != t.hash()


def test_pod_that_failed_its_quality_gate_is_a_failed_device_with_the_reason() -> None:
    man = planner.plan(idep_info(idep({}, GATE)), model_info(profiled()), {d.name: d for d in FLEET[:1]}, {}, {},
                       images=RuntimeImages("img"), now="2027-01-01T00:00:00Z", now_ts=1.8e9).apply[0]
    ch = pw.workload([pod_of(man, ready=True)], "du", 1.8e9)
    assert ch is not None
    bad = server_pod(ch.sha256 or "", EXIT_QUALITY_GATE, "quality gate: PSI of class 'probabilities' 3.1 > 0.25")
    ph = device_phase(ch, [bad], True, ch.spec_hash, ch.sha256)
    # Failed even though the Pod reads Ready again (restarted after the exit): a gate's verdict is final.
    assert ph.phase == WorkloadPhase.FAILED and not ph.ready
    assert ph.message == "QualityGateFailed: quality gate: PSI of class 'probabilities' 3.1 > 0.25"
    other = device_phase(ch, [server_pod(ch.sha256 or "", 1, "boom")], True, ch.spec_hash, ch.sha256)
    assert other.phase == WorkloadPhase.READY  # any other exit: the usual restart/maxRestarts rules apply


def test_max_psi_without_a_profile_is_an_invalid_spec_naming_both_sides() -> None:
    p = planner.plan(idep_info(idep({}, GATE)), model_info(model()), {d.name: d for d in FLEET}, {}, {},
                     images=RuntimeImages("img"), now="2027-01-01T00:00:00Z", now_ts=1.8e9)
    assert p.apply == ()
    ready = next(x for x in p.status["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "healthGate.quality.maxPSI" in ready["message"] and "spec.qualityProfile" in ready["message"]


def test_canary_whose_outputs_collapse_is_rolled_back_like_a_crash() -> None:
    k = Cluster()
    k.until(profiled(), GATE, "Complete")
    k.bad = NEW  # its pods never turn Ready: the runtime exited on its quality gate
    k.turn(profiled(NEW), GATE)
    [canary] = [d for d, ch in k.children.items() if ch.sha256 == NEW]
    for name, p in k.pods_made.by_name.items():  # the canary's own Pod: its server exited on the gate
        if p.device == canary and p.sha256 == NEW:
            k.pods_made.by_name[name] = replace(p, server_exit_code=EXIT_QUALITY_GATE,
                                                server_message="quality gate: mean confidence 0.34 < 0.6")
    k.until(profiled(NEW), GATE, "RolledBack", turns=5)  # at once, not after progressDeadlineSeconds
    assert k.ever[2] == {canary}
    assert all(ch.sha256 != NEW for ch in k.children.values())
    assert k.status["revisions"][-1]["outcome"] == "Failed"
    assert "QualityGateFailed: quality gate: mean confidence 0.34 < 0.6" in k.status["revisions"][-1]["message"]


def test_policy_names_the_wrong_quality_field() -> None:
    import pytest

    from edge_operator.core import rollout as ro

    for q, words in (({}, "needs at least one threshold"), ({"maxPSI": 0}, "maxPSI must be"),
                     ({"minMeanConfidence": 1.5}, "minMeanConfidence must be"),
                     ({"maxPSIPrevious": 11}, "maxPSIPrevious must be"),
                     ({"maxPSI": 0.2, "minRequests": 0}, "minRequests must be")):
        with pytest.raises(ro.RolloutSpecError, match=words) as e:
            ro.parse_policy({"healthGate": {"quality": q}})
        assert "spec.rollout.healthGate.quality" in str(e.value)
    assert ro.parse_policy({"healthGate": {"quality": {"maxPSI": 0.25}}}).gated
    assert ro.parse_policy({"healthGate": {"quality": {"maxPSIPrevious": 0.25}}}).gated


def test_a_wave_that_never_saw_traffic_fails_at_its_deadline_and_says_the_quality_gate_waited() -> None:
    k = Cluster()
    k.until(profiled(), GATE, "Complete")
    k.bad = NEW  # not Ready: waiting for traffic that never comes
    k.until(profiled(NEW), GATE, "RolledBack", turns=60)
    msg = k.status["revisions"][-1]["message"]
    assert "made no progress" in msg and "onInsufficientTraffic Wait" in msg
    passing = {**GATE, "healthGate": {**GATE["healthGate"], "quality": {"maxPSI": 0.25,
                                                                         "onInsufficientTraffic": "Pass"}}}
    from edge_operator.core import rollout as ro
    assert not ro.parse_policy(passing).quality_waits and ro.parse_policy(GATE).quality_waits


PREV_GATE = {**GATE, "healthGate": {**GATE["healthGate"], "quality": {"maxPSI": 1.0, "maxPSIPrevious": 0.25}}}


def test_max_psi_previous_without_a_profile_is_an_invalid_spec() -> None:
    gate = {**GATE, "healthGate": {**GATE["healthGate"], "quality": {"maxPSIPrevious": 0.25}}}
    p = planner.plan(idep_info(idep({}, gate)), model_info(model()), {d.name: d for d in FLEET}, {}, {},
                     images=RuntimeImages("img"), now="2027-01-01T00:00:00Z", now_ts=1.8e9)
    ready = next(x for x in p.status["conditions"] if x["type"] == "Ready")
    assert p.apply == () and ready["reason"] == "InvalidSpec"
    assert "healthGate.quality.maxPSIPrevious" in ready["message"] and "spec.qualityProfile" in ready["message"]


def test_every_device_of_a_revision_names_it_by_its_template_hash_and_old_templates_keep_theirs() -> None:
    m = model_info(profiled())
    idp = idep_info(idep({}, PREV_GATE))
    assert idp.spec is not None and idp.spec.rollout is not None and idp.spec.rollout.health_gate is not None
    t = rev.template_for(m, None, None, RuntimeImages("img"), idp.spec.rollout.health_gate.quality, 2)
    assert t.to_dict()["qualityGate"] == {"maxPSI": 1.0, "maxPSIPrevious": 0.25, "windowSeconds": 2}
    assert rev.Template.from_dict(t.to_dict()) == t
    plan = planner.plan(idp, m, {d.name: d for d in FLEET}, {}, {}, images=RuntimeImages("img"),
                        now="2027-01-01T00:00:00Z", now_ts=1.8e9)
    revisions = set()
    for man in plan.apply:
        a = man["spec"]["containers"][0]["args"]
        revisions.add(a[a.index("--revision") + 1])
    assert plan.apply and revisions == {t.hash()}
