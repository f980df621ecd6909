"""The plan memo: reuse only for the same objects, never across the clock, and only one plan's worth."""

from __future__ import annotations

from edge_operator.core import pod_workloads as pw
from edge_operator.core.plan_memo import PlanMemo
from tests.unit.operator.core.test_pod_workloads import T0, UID, pod


def test_a_key_matches_when_equal() -> None:
    m = PlanMemo()
    a = pod("a", "h1", ready=True)
    m.keep("x", (1, "s", a), "kept")
    assert m.get("x", (1, "s", a)) == "kept"
    assert m.get("x", (1, "s", pod("a", "h1", ready=True))) == "kept"  # another object, equal: same result
    assert m.get("x", (1, "s", pod("a", "h1", ready=False))) is None
    assert m.get("x", (2, "s", a)) is None
    assert m.get("x", (1, "s")) is None
    assert m.done() == (2, 3)


def test_only_what_the_last_plan_used_is_kept() -> None:
    m = PlanMemo()
    m.keep("a", (1,), "A")
    m.keep("b", (1,), "B")
    m.done()
    assert m.get("a", (1,)) == "A"
    m.done()  # "b" was not asked for in that plan
    assert len(m) == 1 and m.get("b", (1,)) is None and m.get("a", (1,)) == "A"


def test_a_pod_not_ready_is_summed_up_afresh_so_its_deadline_still_fails_the_device() -> None:
    m = PlanMemo()
    waiting = pod("a", "h1")
    first = pw.workloads([waiting], [], UID, T0 + 1, m)["edge-0"]
    m.done()
    late = pw.workloads([waiting], [], UID, T0 + pw.PROGRESS_DEADLINE_SECONDS + 1, m)["edge-0"]
    assert not first.progress_failed and late.progress_failed and "ProgressDeadlineExceeded" in late.message


def test_a_ready_pod_keeps_its_summary_until_the_pod_changes() -> None:
    m = PlanMemo()
    ready = pod("a", "h1", ready=True)
    first = pw.workloads([ready], [], UID, T0, m)["edge-0"]
    m.done()
    assert pw.workloads([ready], [], UID, T0 + 9999, m)["edge-0"] is first
    m.done()
    moved = pw.workloads([pod("a", "h1", ready=False)], [], UID, T0 + 1, m)["edge-0"]
    assert moved is not first and moved.ready == 0
