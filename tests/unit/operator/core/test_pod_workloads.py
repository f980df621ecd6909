"""A device's model server Pods: what the operator does next, and how they read as one workload."""

from __future__ import annotations

from dataclasses import replace

from edge_operator.core import pod_workloads as pw
from edge_operator.core.rollout import parse_time
from edge_operator.core.views import ChildInfo, PodInfo

T = "2026-01-01T00:00:00Z"
T0 = parse_time(T) or 0.0
UID = "uid-d"


def pod(name: str, h: str, ready: bool = False, rev: int = 1, owner: str = UID, deleting: bool = False,
        phase: str = "Running", created: str = T) -> PodInfo:
    return PodInfo(namespace="ns", name=name, idep="d", device="edge-0", sha256="a" * 64, node="edge-0", phase=phase,
                   ready=ready, restarts=0, reason="", message="", init_exit_code=None, init_running=False,
                   created=created, deleting=deleting, uid=f"u-{name}", owner_uid=owner, spec_hash=h, revision=rev,
                   variant="default", model="m")


def legacy(name: str = "d-edge-0", deleting: bool = False) -> ChildInfo:
    return ChildInfo(namespace="ns", name=name, uid=f"u-{name}", owner="d", owner_uid=UID, device="edge-0", model="m",
                     spec_hash="old", sha256="a" * 64, variant="default", generation=1, observed_generation=1,
                     replicas=1, updated=1, ready=1, available=1, progress_failed=False, message="", deleting=deleting,
                     revision=1)


def step(want: str, pods: list[PodInfo], surge: bool = True, old: list[ChildInfo] | None = None,
         rev: int = 2, at: float = T0 + 1) -> pw.Step:
    return pw.converge(want, rev, surge, pods, old or [], UID, at)


def test_a_new_template_surges_and_the_old_pod_goes_only_once_the_new_one_is_ready() -> None:
    a = pod("a", "h1", ready=True, rev=1)
    assert step("h2", [a]) == pw.Step(create=True)
    b = pod("b", "h2", rev=2)
    s = step("h2", [a, b])
    assert not s.create and s.delete_pods == () and s.requeue_after is not None  # wait; a serves
    s = step("h2", [a, replace(b, ready=True)])
    assert s.delete_pods == (a,) and not s.create
    assert step("h2", [replace(a, deleting=True), replace(b, ready=True)]) == pw.Step()
    assert step("h2", [replace(b, ready=True)]) == pw.Step()


def test_without_surge_the_old_pods_go_first_and_the_new_one_waits_until_they_are_gone() -> None:
    a = pod("a", "h1", ready=True, rev=1)
    assert step("h2", [a], surge=False) == pw.Step(delete_pods=(a,))
    assert step("h2", [replace(a, deleting=True)], surge=False) == pw.Step()  # still holds the accelerator
    assert step("h2", [], surge=False) == pw.Step(create=True)
    # A Deployment of 0.1 goes first too, and so do its ReplicaSet's Pods (owned by no InferenceDeployment).
    old = legacy()
    assert step("h2", [], surge=False, old=[old]) == pw.Step(delete_legacy=(old,))
    assert step("h2", [pod("rs-pod", "x", owner="")], surge=False, old=[replace(old, deleting=True)]) == pw.Step()


def test_a_0_1_deployment_is_deleted_once_its_replacement_is_ready() -> None:
    old = legacy()
    assert step("h2", [pod("rs", "x", ready=True, owner="")], old=[old]) == pw.Step(create=True)
    new = pod("n", "h2", ready=True, rev=2)
    assert step("h2", [new], old=[old]) == pw.Step(delete_legacy=(old,))


def test_an_undo_to_the_running_template_rewrites_its_revision_and_restarts_nothing() -> None:
    a = pod("a", "h1", ready=True, rev=1)
    assert step("h1", [a], rev=3) == pw.Step(annotate=a)
    # A rollback while the new Pod is not Ready yet: the old one is the target again, the new one goes.
    b = pod("b", "h2", rev=2)
    assert step("h1", [a, b], rev=1) == pw.Step(delete_pods=(b,))


def test_a_pod_deleted_by_hand_is_made_again_once_its_name_is_free() -> None:
    a = pod("a", "h1", ready=True, deleting=True)
    assert step("h1", [a], rev=1) == pw.Step()  # the same name: a create would be refused
    assert step("h1", [], rev=1) == pw.Step(create=True)


def test_an_evicted_pod_is_replaced_but_not_at_once() -> None:
    a = pod("a", "h1", phase="Failed")
    s = step("h1", [a], rev=1, at=T0 + 2)
    assert s == pw.Step(requeue_after=pw.REPLACE_AFTER_SECONDS - 2)
    assert step("h1", [a], rev=1, at=T0 + pw.REPLACE_AFTER_SECONDS) == pw.Step(delete_pods=(a,))


def test_a_device_reads_as_the_wanted_templates_pod_or_its_newest_and_fails_after_the_deadline() -> None:
    a = pod("a", "h1", ready=True, rev=1)
    b = pod("b", "h2", rev=2, created="2026-01-01T00:00:05Z")
    w = pw.workload([a, b], UID, T0 + 10)
    assert w is not None and (w.spec_hash, w.revision, w.ready, w.rolled_out) == ("h2", 2, 0, False)
    w = pw.workload([a, b], UID, T0 + 10, prefer="h1")
    assert w is not None and (w.spec_hash, w.ready, w.rolled_out) == ("h1", 1, True)
    late = pw.workload([b], UID, T0 + 5 + pw.PROGRESS_DEADLINE_SECONDS)
    assert late is not None and late.progress_failed and "ProgressDeadlineExceeded" in late.message
    assert pw.workload([pod("x", "h1", owner="other")], UID, T0) is None
    assert pw.workload([replace(a, deleting=True)], UID, T0) is None


def test_workloads_prefer_pods_over_a_pre_0_9_deployment_and_remove_takes_both() -> None:
    old = legacy()
    assert pw.workloads([], [old], UID, T0) == {"edge-0": old}
    a = pod("a", "h1", ready=True)
    assert pw.workloads([a], [old], UID, T0)["edge-0"].name == "a"
    gone = pw.remove([a, pod("rs", "x", owner="")], [old], UID)
    assert gone == pw.Step(delete_pods=(a,), delete_legacy=(old,))
