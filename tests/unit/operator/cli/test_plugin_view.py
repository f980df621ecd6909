"""kubectl edgeai's tables and verdicts, on plain objects shaped as the operator writes them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from edge_operator.cli import plugin_view as v

SHA_A = "a" * 64
SHA_B = "b" * 64


def device(name: str, online: bool | None = True, serving: list[dict[str, Any]] | None = None,
           site: str = "site-a") -> dict[str, Any]:
    st: dict[str, Any] = {"capabilities": {"arch": "arm64", "site": site, "accelerators": ["npu"]}}
    if online is not None:
        st["online"] = online
    if serving is not None:
        st["serving"] = serving
    return {"metadata": {"name": name}, "status": st}


def idep(name: str, ns: str = "prod", model: str = "resnet", devices: list[dict[str, Any]] | None = None,
         conditions: list[dict[str, Any]] | None = None, generation: int = 1, observed: int | None = 1,
         paused: bool | None = None, **status: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"devices": devices or [], "conditions": conditions or [], **status}
    if observed is not None:
        st["observedGeneration"] = observed
    spec: dict[str, Any] = {"model": model}
    if paused is not None:
        spec["rollout"] = {"paused": paused}
    return {"metadata": {"name": name, "namespace": ns, "generation": generation}, "spec": spec, "status": st}


def cond(t: str, s: bool, reason: str = "R", message: str = "") -> dict[str, Any]:
    return {"type": t, "status": "True" if s else "False", "reason": reason, "message": message}


# --------------------------------------------------------------------------- fleet


def test_fleet_row_per_served_deployment_and_idle_devices() -> None:
    devs = [
        device("edge-1", serving=[{"inferenceDeployment": "prod/det", "deployment": "det-edge-1", "model": "resnet",
                                   "variant": "int8", "sha256": SHA_A, "phase": "Ready"}]),
        device("edge-0", online=False),
    ]
    rows = v.fleet_rows(devs, [])
    assert [(r.device, r.deployment, r.model, r.variant, r.digest, r.phase, r.online) for r in rows] == [
        ("edge-0", "-", "-", "-", "-", "-", "no"),
        ("edge-1", "prod/det", "resnet", "int8", SHA_A[:12], "Ready", "yes"),
    ]
    assert rows[1].sha256 == SHA_A  # the full digest stays available for -o json


def test_deployment_status_fills_placements_the_device_has_not_reported() -> None:
    devs = [device("edge-1", serving=[]), device("edge-2", online=None)]
    deps = [idep("det", devices=[{"device": "edge-1", "variant": "fp16", "sha256": SHA_B, "phase": "Fetching"},
                                 {"device": "edge-2", "phase": "Pending"}])]
    rows = v.fleet_rows(devs, deps)
    assert [(r.device, r.deployment, r.model, r.variant, r.phase, r.online) for r in rows] == [
        ("edge-1", "prod/det", "resnet", "fp16", "Fetching", "yes"),
        ("edge-2", "prod/det", "resnet", "-", "Pending", "unknown"),
    ]


def test_the_device_report_wins_over_the_deployment_and_is_not_duplicated() -> None:
    devs = [device("edge-1", serving=[{"inferenceDeployment": "prod/det", "model": "resnet", "phase": "Ready",
                                       "sha256": SHA_A}])]
    deps = [idep("det", devices=[{"device": "edge-1", "variant": "int8", "sha256": SHA_B, "phase": "Starting"}])]
    rows = v.fleet_rows(devs, deps)
    assert len(rows) == 1
    r = rows[0]
    assert (r.phase, r.digest, r.variant) == ("Ready", SHA_A[:12], "int8")  # gap filled, report kept


def test_namespace_filter_keeps_only_that_namespaces_deployments() -> None:
    devs = [device("edge-1", serving=[{"inferenceDeployment": "prod/a", "model": "m", "phase": "Ready"},
                                      {"inferenceDeployment": "dev/b", "model": "m", "phase": "Ready"}])]
    rows = v.fleet_rows(devs, [idep("c", ns="dev", devices=[{"device": "edge-1", "phase": "Pending"}])],
                        namespace="dev")
    assert [r.deployment for r in rows] == ["dev/b", "dev/c"]


def test_serving_only_hides_idle_devices() -> None:
    rows = v.fleet_rows([device("edge-0"), device("edge-1", serving=[
        {"inferenceDeployment": "p/x", "model": "m", "phase": "Ready"}])], [], show_idle=False)
    assert [r.device for r in rows] == ["edge-1"]


def test_fleet_table_and_summary() -> None:
    rows = v.fleet_rows([device("edge-1", serving=[{"inferenceDeployment": "prod/det", "model": "resnet",
                                                     "variant": "int8", "sha256": SHA_A, "phase": "Ready"}]),
                         device("edge-22", online=False)], [])
    out = v.fleet_table(rows).splitlines()
    assert out[0].split() == ["DEVICE", "ONLINE", "DEPLOYMENT", "MODEL", "VARIANT", "DIGEST", "PHASE"]
    assert out[1].split() == ["edge-1", "yes", "prod/det", "resnet", "int8", SHA_A[:12], "Ready"]
    assert out[2].split() == ["edge-22", "no", "-", "-", "-", "-", "-"]
    # columns line up: every row's MODEL starts where the header's does
    col = out[0].index("MODEL")
    assert out[1][col:].startswith("resnet") and out[2][col:].startswith("-")
    wide = v.fleet_table(rows, wide=True).splitlines()
    assert wide[0].split()[-3:] == ["SITE", "ARCH", "ACCELERATORS"]
    assert wide[1].split()[-3:] == ["site-a", "arm64", "npu"]
    assert v.fleet_summary(rows) == "2 device(s), 1 online, 1 placement(s), 1 serving"
    assert json.loads(v.fleet_json(rows))[0]["sha256"] == SHA_A


def test_fleet_tolerates_objects_without_status() -> None:
    rows = v.fleet_rows([{"metadata": {"name": "new"}}], [{"metadata": {"name": "d", "namespace": "x"}}])
    assert [(r.device, r.online, r.phase) for r in rows] == [("new", "unknown", "-")]


# --------------------------------------------------------------------------- rollout


def test_rollout_pending_until_the_operator_observes_the_generation() -> None:
    vd = v.rollout_verdict(idep("det", generation=3, observed=2, conditions=[cond("Ready", True)]))
    assert vd.state == "pending" and not vd.done and "generation 3" in vd.message


def test_rollout_complete_when_ready_and_not_progressing() -> None:
    vd = v.rollout_verdict(idep("det", conditions=[cond("Ready", True, "DevicesReady"),
                                                   cond("Progressing", False, "Complete"),
                                                   cond("Degraded", False, "Healthy")],
                                placed=3, ready=3, updated=3, selected=4))
    assert vd.state == "complete" and vd.done
    assert "4 selected, 3 placed, 3 updated, 3 ready" in vd.message


def test_offline_devices_do_not_make_a_finished_rollout_a_failure() -> None:
    vd = v.rollout_verdict(idep("det", conditions=[cond("Ready", True), cond("Progressing", False),
                                                   cond("Degraded", True, "DevicesOffline", "2/3 ready, 1 offline")]))
    assert vd.state == "complete" and "DevicesOffline" in vd.message


def test_rollout_failed_when_degraded_and_stuck() -> None:
    vd = v.rollout_verdict(idep("det", conditions=[
        cond("Ready", False, "ModelNotVerified", "x"), cond("Progressing", False, "ModelNotVerified"),
        cond("Degraded", True, "ModelNotVerified", "EdgeModel 'm': DigestMismatch: expected aaa")]))
    assert vd.state == "failed" and vd.done
    assert "ModelNotVerified" in vd.message and "DigestMismatch" in vd.message


def test_rollout_progressing_says_why() -> None:
    vd = v.rollout_verdict(idep("det", conditions=[cond("Ready", False, "DevicesNotReady", "1/3 devices ready"),
                                                   cond("Progressing", True, "RollingOut", "1/3 devices ready")]))
    assert vd.state == "progressing" and not vd.done and vd.message.endswith(": 1/3 devices ready")


def test_paused_rollout_stops_the_watch() -> None:
    vd = v.rollout_verdict(idep("det", paused=True, conditions=[cond("Progressing", True)]))
    assert vd.state == "paused" and vd.done and "rollout resume det" in vd.message


def test_rollout_details_list_conditions_devices_and_unplaced() -> None:
    out = v.rollout_details(idep("det", conditions=[cond("Ready", True, "DevicesReady", "3/3")],
                                 devices=[{"device": "edge-1", "variant": "int8", "sha256": SHA_A, "phase": "Ready"}],
                                 unplaced=[{"device": "edge-9", "reason": "ArchMismatch"}], revision=4))
    assert "revision: 4" in out
    assert any(ln.split()[:3] == ["Ready", "True", "DevicesReady"] for ln in out.splitlines())
    assert any(ln.split() == ["edge-1", "int8", SHA_A[:12], "Ready"] for ln in out.splitlines())
    assert any(ln.split() == ["edge-9", "ArchMismatch"] for ln in out.splitlines())


def test_rollout_details_show_a_line_per_site_cache() -> None:
    out = v.rollout_details(idep("det", siteCaches=[
        {"site": "berlin", "node": "gw-1", "endpoint": "http://10.0.0.7:8090", "ready": True},
        {"site": "paris", "ready": False, "message": "no gateway"},
        {"site": "rome", "endpoint": "http://cache.rome:8090", "message": "a cache the user runs"},
    ]))
    lines = out.splitlines()
    assert lines[0].split() == ["SITE", "CACHE", "NODE", "ENDPOINT", "READY", "MESSAGE"]
    assert lines[1].split() == ["berlin", "gw-1", "http://10.0.0.7:8090", "yes"]
    assert lines[2].split()[:4] == ["paris", "-", "-", "no"]
    assert lines[3].split()[:4] == ["rome", "-", "http://cache.rome:8090", "-"]
    assert "SITE" not in v.rollout_details(idep("det"))


def test_a_rolled_back_rollout_is_a_failure_even_with_a_ready_fleet() -> None:
    obj = idep("det", conditions=[cond("Ready", True, "DevicesReady", "6/6"),
                                  cond("Degraded", True, "RolloutFailed", "x")],
               rollout={"phase": "RolledBack", "revision": 2, "message": "revision 2 failed its health gate"})
    verdict = v.rollout_verdict(obj)
    assert verdict.state == "failed" and "rolled back: revision 2 failed its health gate" in verdict.message


def test_undo_defaults_to_the_previous_revision() -> None:
    assert v.undo_patch(idep("det", revision=5), None) == {"spec": {"rollout": {"rollbackTo": {"revision": 4}}}}
    assert v.undo_patch(idep("det", revision=5), 2) == {"spec": {"rollout": {"rollbackTo": {"revision": 2}}}}
    assert v.undo_patch(idep("det", currentRevision=3), None) == {"spec": {"rollout": {"rollbackTo": {"revision": 2}}}}
    with pytest.raises(ValueError, match="no earlier revision"):
        v.undo_patch(idep("det", revision=1), None)
    # In flight or rolled back: back to what the fleet ran, not merely number - 1.
    assert v.undo_patch(idep("det", revision=7, currentRevision=4), None)["spec"]["rollout"]["rollbackTo"] == {
        "revision": 4}
    hist = [{"revision": 3, "outcome": "Succeeded"}, {"revision": 4, "outcome": "Failed"},
            {"revision": 5, "outcome": "Succeeded"}]
    patch = v.undo_patch(idep("det", revision=5, currentRevision=5, revisions=hist), None, "2026-11-23T00:00:00Z")
    assert patch["spec"]["rollout"]["rollbackTo"] == {"revision": 3, "requestedAt": "2026-11-23T00:00:00Z"}


# --------------------------------------------------------------------------- model verify


def model(conditions: list[dict[str, Any]] | None = None, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "resnet", "namespace": "prod", "generation": generation},
            "spec": {"source": {"uri": "https://models.example/resnet.onnx", "sha256": SHA_A},
                     "signature": {"publicKeySecretRef": {"name": "k"}, "value": "c2ln"}},
            "status": {"conditions": conditions or [], **status}}


def test_model_summary_shows_verdict_digests_and_variants() -> None:
    em = model([dict(cond("Verified", False, "DigestMismatch", f"expected {SHA_A}, got {SHA_B}"),
                     observedGeneration=1)], sha256=SHA_B, size=1234,
               variants=[{"name": "int8", "verified": True, "sha256": SHA_A, "size": 99}])
    out = v.model_summary(em)
    assert f"expected sha256  {SHA_A}" in out and f"seen sha256      {SHA_B}" in out
    assert "Verified         False (DigestMismatch)" in out
    assert "signed           yes" in out
    assert any(ln.split() == ["int8", "True", SHA_A[:12], "99", "-"] for ln in out.splitlines())
    assert v.model_verified(em) is False


def test_model_verdict_is_unknown_for_an_unobserved_generation() -> None:
    em = model([dict(cond("Verified", True), observedGeneration=1)], generation=2)
    assert v.model_verified(em) is None
    assert v.model_verified(model([dict(cond("Verified", True), observedGeneration=2)], generation=2)) is True
    assert "not reported yet" in v.model_summary(model())


def test_verified_since_needs_a_verdict_at_or_after_the_request() -> None:
    asked = dt.datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=dt.UTC)
    before = model([cond("Verified", True)], verifiedAt="2026-01-01T11:59:59Z")
    assert not v.verified_since(before, asked)
    after = model([cond("Verified", True)], verifiedAt="2026-01-01T12:00:00Z")
    assert v.verified_since(after, asked)  # same second: the stamp has whole seconds
    failed = model([dict(cond("Verified", False, "Unreachable"), lastTransitionTime="2026-01-01T12:00:03Z")])
    assert v.verified_since(failed, asked)
    assert v.rfc3339(asked) == "2026-01-01T12:00:00Z"


def test_an_echoed_request_answers_even_when_the_verdict_did_not_move() -> None:
    asked = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    stamp = v.rfc3339(asked)
    still_failing = model([dict(cond("Verified", False, "DigestMismatch"), lastTransitionTime="2025-12-31T00:00:00Z",
                                observedGeneration=1)])
    assert not v.verified_since(still_failing, asked, stamp)
    still_failing["status"]["observedReverify"] = stamp
    assert v.verified_since(still_failing, asked, stamp)
    still_failing["status"]["observedReverify"] = "2025-01-01T00:00:00Z"  # an older request's echo
    assert not v.verified_since(still_failing, asked, stamp)


def test_revision_history_marks_serving_and_target() -> None:
    hist = [{"revision": 1, "outcome": "Succeeded", "digests": {"default": SHA_A}, "createdAt": "t1",
             "reason": "created", "modelVersion": "1.0"},
            {"revision": 2, "outcome": "Failed", "digests": {"default": SHA_B}, "createdAt": "t2",
             "reason": "model builds changed"}]
    out = v.revision_history(idep("det", revision=2, currentRevision=1, revisions=hist))
    rows = [ln.split() for ln in out.splitlines()]
    assert rows[1][:3] == ["1*", "Succeeded", "1.0"] and f"default={SHA_A[:12]}" in rows[1]
    assert rows[2][:2] == ["2+", "Failed"] and rows[2][-3:] == ["model", "builds", "changed"]
    assert v.revision_history(idep("det")) == "no revisions recorded yet"
    details = v.rollout_details(idep("det", rollout={"phase": "Progressing", "revision": 2, "wave": 1, "waves": 3}))
    assert "rollout: revision 2 Progressing, wave 2/3" in details


def test_rollout_details_name_the_devices_that_failed_alone() -> None:
    details = v.rollout_details(idep("det", rollout={"phase": "Complete", "revision": 2, "wave": 2, "waves": 3,
                                                     "failedDevices": ["cam-7", "cam-9"]}))
    assert "failed the gate alone, rolled back (healthGate.maxFailures): cam-7, cam-9" in details
    assert "failed the gate alone" not in v.rollout_details(idep("det", rollout={"phase": "Complete", "revision": 2}))


def test_rollout_details_show_the_policies_as_the_operator_reads_them() -> None:
    obj = idep("det", devices=[{"device": "edge-0", "phase": "Ready"}], devicesNotListed=4000)
    obj["spec"]["rollout"] = {
        "canary": 1, "ramp": {"initial": 2},
        "healthGate": {"readySeconds": 5, "maxFailures": "10%", "quality": {"maxPSI": 0.25}},
        "maintenanceWindows": {"windows": {"berlin": {"schedule": "0 2 * * *", "durationMinutes": 60,
                                                      "timeZone": "Europe/Berlin"}}},
    }
    obj["spec"]["runtimeOverrides"] = [{"deviceSelector": {"matchLabels": {"edgeai.io/site": "slow"}},
                                        "runtime": {"maxLatencyMs": 400}}]
    lines = v.rollout_details(obj).splitlines()
    assert lines[:4] == [
        "waves: ramp from 2 device(s), x2 per wave, after a canary of 1",
        "health gate: readySeconds 5, progressDeadlineSeconds 600, maxFailures 10% per wave, quality maxPSI 0.25; "
        "on failure Rollback",
        "maintenance windows by edgeai.io/site: berlin: 0 2 * * * Europe/Berlin for 60 min (rollbacks are never held)",
        "override for edgeai.io/site=slow: maxLatencyMs 400",
    ]
    assert lines[-1].startswith("... and 4000 more devices")
    # No policy set: nothing printed for it; a spec the operator refuses says why.
    assert not v.rollout_policy(idep("plain"))
    bad = idep("bad")
    bad["spec"]["rollout"] = {"waves": ["50%", "10%"]}
    assert v.rollout_policy(bad) == ["policy: invalid: spec.rollout.waves must grow from one wave to the next: "
                                     "50% then 10%"]


# --------------------------------------------------------------------------- cache status

CACHES = [
    {"site": "berlin", "node": "gw-1", "endpoint": "http://10.0.0.7:8090", "ready": True},
    {"site": "paris", "ready": False, "message": "no node labelled edgeai.io/site-gateway=true"},
    {"site": "rome", "endpoint": "http://cache.rome:8090", "message": "a cache the user runs"},
    {"site": "oslo", "node": "gw-9", "endpoint": "http://10.0.0.9:8090", "ready": False,
     "message": "the cache is not Ready"},
]
STATUS = {"entries": 2, "bytesHeld": 3 * 2**20 + 2**19, "maxBytes": 10 * 2**30, "hits": 3, "misses": 1,
          "hitRatio": 0.75, "bytesServed": 14 * 2**20, "bytesFromOrigin": 3 * 2**20 + 2**19, "originFetches": 1,
          "originFailures": 0, "evictions": 0, "fetching": [], "blobs": []}


def test_cache_targets_follow_status_site_caches() -> None:
    got = v.cache_targets(idep("det", siteCaches=[*CACHES, {"node": "no-site"}, "junk"]))
    assert [(t.site, t.node, t.endpoint, t.ready) for t in got] == [
        ("berlin", "gw-1", "http://10.0.0.7:8090", True), ("paris", "", "", False),
        ("rome", "", "http://cache.rome:8090", None), ("oslo", "gw-9", "http://10.0.0.9:8090", False)]
    assert v.cache_targets(idep("det")) == []


def test_human_bytes() -> None:
    assert [v.human_bytes(n) for n in (0, 1023, 1536, 3 * 2**20 + 2**19, 10 * 2**30, 2**40)] == [
        "0B", "1023B", "1.5KiB", "3.5MiB", "10GiB", "1TiB"]
    assert v.human_bytes(None) == v.human_bytes(True) == "-"


def test_cache_table_numbers_and_reasons() -> None:
    berlin, paris, rome, oslo = v.cache_targets(idep("det", siteCaches=CACHES))
    readings = [
        v.CacheReading(berlin, "direct", STATUS),
        v.CacheReading(paris, "", None),
        v.CacheReading(rome, "direct", None, "http://cache.rome:8090/v1/status: timed out"),
        v.CacheReading(oslo, "direct", dict(STATUS, hits=0, misses=0, hitRatio=0.0, fetching=["ab" * 32])),
    ]
    lines = v.cache_table(readings).splitlines()
    assert lines[0].split() == list(v.CACHE_COLUMNS)
    assert lines[1].split() == ["berlin", "gw-1", "yes", "2", "3.5MiB/10GiB", "3", "1", "75.0%", "14MiB", "3.5MiB",
                                "0"]
    assert lines[2].split()[:11] == ["paris", "-", "no", *["-"] * 8]
    assert lines[2].endswith("no node labelled edgeai.io/site-gateway=true")
    assert lines[3].split()[:3] == ["rome", "-", "-"]
    assert lines[3].endswith("http://cache.rome:8090/v1/status: timed out; a cache the user runs")
    # nothing asked yet: no ratio rather than 0%; an origin fetch in flight is said
    assert lines[4].split()[7] == "-"
    assert lines[4].endswith("fetching 1 from the origin now; the cache is not Ready")
    assert v.cache_summary(readings) == ("4 site(s), 2 of 3 cache(s) read; together they served 28MiB to devices "
                                         "and took 7MiB from the origin")
    rows = json.loads(v.cache_json(readings))
    assert rows[0] == {"site": "berlin", "node": "gw-1", "endpoint": "http://10.0.0.7:8090", "ready": True,
                       "message": "", "via": "direct", "status": STATUS, "error": None}
    assert (rows[1]["via"], rows[1]["status"], rows[2]["error"]) == (None, None,
                                                                     "http://cache.rome:8090/v1/status: timed out")


def test_cache_pod_for_the_api_server_proxy() -> None:
    def pod(name: str, phase: str = "Running", ready: bool = True, created: str = "2026-01-01T00:00:00Z",
            deleting: bool = False, port: int | None = 8090) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = created
        ports = [{"name": "site-cache", "containerPort": port}] if port else []
        return {"metadata": meta, "spec": {"containers": [{"name": "site-cache", "ports": ports}]},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    assert v.cache_pod([]) == "no running cache Pod"
    assert v.cache_pod([pod("a", phase="Pending"), pod("b", deleting=True)]) == "no running cache Pod"
    # Ready before newest; of the Ready ones, the newest
    assert v.cache_pod([pod("old", created="2026-01-01T00:00:00Z"),
                        pod("new", ready=False, created="2026-01-02T00:00:00Z")]) == ("old", 8090)
    assert v.cache_pod([pod("old"), pod("new", created="2026-01-02T00:00:00Z")]) == ("new", 8090)
    assert v.cache_pod([pod("x", port=None)]) == "Pod x declares no port"


def test_rollout_details_point_at_cache_status() -> None:
    out = v.rollout_details(idep("det", siteCaches=CACHES[:1]))
    assert out.splitlines()[-1] == "(what each cache holds and serves: kubectl edgeai cache status det)"
