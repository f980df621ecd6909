"""The rollout quality gate's decisions (edge_runtime/core/quality_gate.py): pure, the clock passed in."""

from __future__ import annotations

import pytest

from edge_runtime.core.quality_gate import (
    FAILED,
    JUDGING,
    PASSED,
    Gate,
    GateConfig,
    GateError,
    Signals,
    Thresholds,
    Verdict,
    breaches,
    load_verdict,
)

PSI_GATE = Thresholds(max_psi=0.25, min_mean_confidence=0.6)
CALM = {("class", "p"): 0.02, ("feature", "x[0]"): 0.05}
SHIFTED = {("class", "p"): 0.02, ("feature", "x[3]"): 1.7}


def sig(requests: int, psi: dict[tuple[str, str], float] | None = None, conf: float = 0.9) -> Signals:
    return Signals(requests, requests * 10, ("p", conf), psi if psi is not None else dict(CALM))


def test_breaches_name_the_worst_signal_and_each_threshold() -> None:
    assert breaches(PSI_GATE, sig(100)) == []
    [(check, why)] = breaches(PSI_GATE, sig(100, SHIFTED))
    assert check == "psi" and why == "PSI of feature 'x[3]' against the reference is 1.7 (maxPSI 0.25)"
    found = breaches(PSI_GATE, sig(100, SHIFTED, conf=0.41))
    assert [c for c, _ in found] == ["psi", "confidence"]
    assert found[1][1] == "mean confidence of output 'p' is 0.410 (minMeanConfidence 0.6)"
    assert breaches(Thresholds(max_psi=0.25), sig(100, {})) == []  # no PSI yet: nothing to compare


def test_wait_is_not_ready_until_enough_requests_then_passes_once_and_for_good() -> None:
    g = Gate(GateConfig(PSI_GATE, min_requests=50, wait=True), started=0.0)
    v = g.judge(1e6, sig(49))
    assert not v.ready and v.state == JUDGING and "49 of the 50 requests" in v.reason and not v.decided
    v = g.judge(1e6, sig(50, {}))  # enough requests but the window has no PSI yet: still waiting
    assert not v.ready and "too few for PSI yet" in v.reason
    v = g.judge(1e6, sig(50))
    assert v.ready and v.state == PASSED and v.decided
    # Once passed, a breach is a metric's business, never readiness'.
    later = g.judge(2e6, sig(500, SHIFTED, conf=0.1))
    assert later.ready and later.state == PASSED and not later.decided


def test_a_breach_fails_for_good_with_every_reason() -> None:
    g = Gate(GateConfig(PSI_GATE, min_requests=50), started=0.0)
    v = g.judge(0.0, sig(60, SHIFTED, conf=0.3))
    assert not v.ready and v.state == FAILED and v.decided
    assert v.reason.startswith("quality gate failed after 60 requests: PSI of feature 'x[3]'")
    assert "; mean confidence of output 'p' is 0.300" in v.reason
    again = g.judge(1.0, sig(1000))
    assert not again.ready and again.state == FAILED and not again.decided


def test_pass_is_ready_while_judging_and_passes_unjudged_after_its_window() -> None:
    g = Gate(GateConfig(Thresholds(min_mean_confidence=0.6), min_requests=50, wait=False, window_s=30), started=100.0)
    v = g.judge(129.9, sig(3))
    assert v.ready and v.state == JUDGING and not v.decided
    v = g.judge(130.0, sig(3))
    assert v.ready and v.state == PASSED and v.decided and "without the quality check: 3 of the 50" in v.reason
    # Judged within the window: a breach fails it even under Pass.
    g2 = Gate(GateConfig(Thresholds(min_mean_confidence=0.6), min_requests=50, wait=False, window_s=30), 100.0)
    assert g2.judge(110.0, sig(50, conf=0.2)).state == FAILED


def test_verdict_survives_a_restart_through_its_file_and_junk_is_judged_again() -> None:
    v = Verdict(False, FAILED, "quality gate failed after 60 requests: x")
    restored = load_verdict(v.dumps())
    assert restored == Verdict(False, FAILED, "quality gate failed after 60 requests: x")
    g = Gate(GateConfig(PSI_GATE), started=0.0, restored=restored)
    assert g.judge(0.0, sig(1000)) == restored and g.state == FAILED
    for junk in ("", "{", '{"state": "judging"}', "[]", '{"state": 1}'):
        assert load_verdict(junk) is None


PREV_GATE = Thresholds(max_psi=1.0, max_psi_previous=0.25)


def prev_sig(requests: int, psi_previous: dict[tuple[str, str], float] | None, previous: str | None = "rev3",
             psi: dict[tuple[str, str], float] | None = None) -> Signals:
    return Signals(requests, requests * 10, ("p", 0.9), psi if psi is not None else dict(CALM), previous,
                   psi_previous if psi_previous is not None else {})


def test_a_breach_against_the_previous_revisions_window_names_it_and_its_revision() -> None:
    assert breaches(PREV_GATE, prev_sig(100, CALM)) == []
    [(check, why)] = breaches(PREV_GATE, prev_sig(100, SHIFTED))
    assert check == "psi_previous"
    assert why == ("PSI of feature 'x[3]' against the previous revision's window (revision rev3) is 1.7 "
                   "(maxPSIPrevious 0.25)")
    # Drift since calibration (0.6 against the reference, within a loose maxPSI) that the previous build saw
    # too: no breach.
    assert breaches(PREV_GATE, prev_sig(100, CALM, psi={("feature", "x[3]"): 0.6})) == []
    g = Gate(GateConfig(PREV_GATE, min_requests=50), started=0.0)
    v = g.judge(0.0, prev_sig(60, SHIFTED))
    assert v.state == FAILED and v.decided and v.reason == (
        "quality gate failed after 60 requests: PSI of feature 'x[3]' against the previous revision's window "
        "(revision rev3) is 1.7 (maxPSIPrevious 0.25)")


def test_a_build_like_the_previous_one_passes_and_says_what_it_compared_with() -> None:
    g = Gate(GateConfig(PREV_GATE, min_requests=50), started=0.0)
    v = g.judge(0.0, prev_sig(50, {}))  # the previous window's PSI not there yet: waits like maxPSI does
    assert not v.ready and v.state == JUDGING and "too few for PSI yet" in v.reason
    v = g.judge(0.0, prev_sig(50, CALM))
    assert v.ready and v.state == PASSED
    assert v.reason == ("quality gate passed after 50 requests "
                        "(compared with the previous revision's window: revision rev3)")


def test_without_a_previous_window_the_other_thresholds_decide_and_the_reason_says_so() -> None:
    g = Gate(GateConfig(PREV_GATE, min_requests=50), started=0.0)
    v = g.judge(0.0, prev_sig(50, {}, previous=None))  # never waits for a window that is not there
    assert v.ready and v.state == PASSED
    assert v.reason.endswith("(no previous revision's window on this device: maxPSIPrevious not judged)")
    g = Gate(GateConfig(PREV_GATE, min_requests=50), started=0.0)
    v = g.judge(0.0, prev_sig(50, {}, previous=None, psi={("class", "p"): 4.0}))
    assert v.state == FAILED and "against the reference is 4 (maxPSI 1)" in v.reason
    assert "maxPSIPrevious not judged" in v.reason
    # maxPSIPrevious alone, nothing to compare with: passes on its requests, never fails for lack of a window.
    only = Gate(GateConfig(Thresholds(max_psi_previous=0.25), min_requests=50), started=0.0)
    assert only.judge(0.0, Signals(49, 490, None, {})).state == JUDGING
    assert only.judge(0.0, Signals(50, 500, None, {})).state == PASSED


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        (GateConfig(Thresholds()), "needs --quality-gate-max-psi, --quality-gate-min-mean-confidence or "
                                   "--quality-gate-max-psi-previous"),
        (GateConfig(Thresholds(max_psi=0)), "--quality-gate-max-psi must be > 0"),
        (GateConfig(Thresholds(max_psi_previous=-1)), "--quality-gate-max-psi-previous must be > 0"),
        (GateConfig(Thresholds(min_mean_confidence=2)), "within 0..1"),
        (GateConfig(Thresholds(max_psi=0.2), min_requests=0), "--quality-gate-min-requests must be >= 1"),
        (GateConfig(Thresholds(max_psi=0.2), window_s=-1), "--quality-gate-window-s must be >= 0"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(cfg: GateConfig, words: str) -> None:
    with pytest.raises(GateError, match=words.replace(".", r"\.")):
        Gate(cfg, started=0.0)


def test_signals_read_the_windows_mean_confidence_not_the_lifetime_one() -> None:
    import numpy as np

    from edge_runtime.core import quality
    from edge_runtime.core.quality_gate import signals_of

    t = quality.Tracker(quality.Layout(outputs=(("p", 2),)), window_rows=100, buckets=10, min_rows=10)
    sure = np.tile(np.array([[0.95, 0.05]]), (100, 1))
    unsure = np.tile(np.array([[0.55, 0.45]]), (100, 1))
    t.observe({}, {"p": sure})
    t.record_requests(4, None)
    assert signals_of(t.snapshot()).mean_confidence == ("p", pytest.approx(0.95))
    t.observe({}, {"p": unsure})  # the window turned over: the sure rows are gone from it
    s = signals_of(t.snapshot())
    assert s.mean_confidence == ("p", pytest.approx(0.55)) and s.rows >= 90
    assert t.snapshot().outputs[0].confidence_sum == pytest.approx(150.0)  # lifetime still has both
