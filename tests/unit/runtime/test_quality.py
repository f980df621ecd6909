"""core/quality: profiles, the rolling window, PSI, confidence and margin, the bounded class counter."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edge_runtime.core import quality as q

LAYOUT = q.Layout(outputs=(("p", 4),), inputs=(("x", 3),))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _data(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed 'model': logits are a linear map of the features, so shifted inputs shift the outputs too."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 3)) + shift
    w = np.array([[1.0, -1.0, 0.5, 0.0], [0.5, 1.0, -1.0, 0.2], [-0.3, 0.2, 1.0, -1.0]])
    return x.astype(np.float32), _softmax(x @ w * 2).astype(np.float32)


def _profile(rows: int = 4000) -> q.Profile:
    x, p = _data(rows, seed=0)
    return q.build_profile(LAYOUT, {"x": x}, {"p": p}, source="unit")


def test_probabilities_are_read_as_is_and_logits_are_softmaxed() -> None:
    probs = np.array([[0.7, 0.2, 0.1]], dtype=np.float32)
    assert np.allclose(q.class_scores(probs), probs)
    logits = np.array([[2.0, 1.0, 0.0]])
    assert np.allclose(q.class_scores(logits), _softmax(logits))
    conf, margin, top = q.confidence_margin_class(q.class_scores(probs))
    assert conf[0] == pytest.approx(0.7) and margin[0] == pytest.approx(0.5) and top[0] == 0


def test_non_finite_scores_do_not_poison_the_statistics() -> None:
    s = q.class_scores(np.array([[np.nan, 1.0, 0.0]]))
    assert np.all(np.isfinite(s)) and s.sum() == pytest.approx(1.0)


def test_layout_picks_classifier_outputs_and_narrow_float_inputs() -> None:
    inputs = [("x", "FP32", (-1, 16)), ("img", "FP32", (-1, 3, 8, 8)), ("ids", "INT64", (-1, 4))]
    lay = q.layout_of(
        [*inputs, ("wide", "FP32", (-1, 65))],
        [("p", "FP32", (-1, 10)), ("s", "FP32", (-1, 1)), ("free", "FP32", (-1, -1))],
    )
    assert lay == q.Layout(outputs=(("p", 10),), inputs=(("x", 16),))


def test_profile_round_trips_through_json() -> None:
    prof = _profile()
    assert q.parse_profile(prof.dumps()) == prof
    doc = json.loads(prof.dumps())
    assert doc["format"] == q.PROFILE_FORMAT and doc["rows"] == 4000
    # Deciles: 10 equal-mass bins of the reference.
    counts = doc["inputs"][0]["features"][0]["counts"]
    assert len(counts) == 10 and max(counts) - min(counts) <= 2


def _doc() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(_profile(500).dumps())
    return out


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="v0"), "format"),
        (lambda d: d.update(rows=0), "rows"),
        (lambda d: d["outputs"][0]["confidence"]["edges"].reverse(), "outputs[0].confidence.edges: must be strictly"),
        (lambda d: d["outputs"][0]["margin"]["counts"].pop(), "outputs[0].margin.counts: needs"),
        (lambda d: d["inputs"][0]["features"][1].update(mean="x"), "inputs[0].features[1].mean"),
        (lambda d: d["inputs"][0]["features"][1].update(variance=-1), "inputs[0].features[1].variance"),
        (lambda d: d["inputs"][0]["features"][2]["edges"].__setitem__(0, None), "inputs[0].features[2].edges[0]"),
        (lambda d: d["outputs"][0]["class"]["tracked"].append(9), "outputs[0].class.tracked[4]"),
        (lambda d: d["inputs"][0].update(width=7), "inputs[0].width"),
        (lambda d: d.update(inputs={}), "profile.inputs: must be a list"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_field(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    d = _doc()
    mutate(d)
    with pytest.raises(q.ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        q.parse_profile(json.dumps(d))


def test_not_json_and_too_large_are_refused() -> None:
    with pytest.raises(q.ProfileError, match="not JSON"):
        q.parse_profile(b"{nope")
    with pytest.raises(q.ProfileError, match="larger than"):
        q.parse_profile(b" " * (q.MAX_PROFILE_BYTES + 1))


def test_a_profile_must_fit_the_model() -> None:
    with pytest.raises(q.ProfileError, match="output 'p'"):
        q.Tracker(q.Layout(outputs=(("p", 5),), inputs=(("x", 3),)), _profile())
    with pytest.raises(q.ProfileError, match="input 'x'"):
        q.Tracker(q.Layout(outputs=(("p", 4),)), _profile())


def test_psi_is_zero_on_identical_counts_and_grows_with_the_shift() -> None:
    ref = np.array([100, 100, 100, 100])
    assert q.psi(ref, ref) == pytest.approx(0.0)
    small = q.psi(np.array([110, 100, 95, 95]), ref)
    large = q.psi(np.array([250, 100, 40, 10]), ref)
    assert 0 < small < q.PSI_WATCH < q.PSI_ALERT < large
    # An empty bin is smoothed, not infinite.
    assert np.isfinite(q.psi(np.array([0, 0, 0, 400]), ref))


def test_same_distribution_stays_low_and_shifted_one_crosses_the_alert() -> None:
    prof = _profile()
    same = q.Tracker(LAYOUT, prof)
    x, p = _data(3000, seed=1)
    for k in range(0, 3000, 7):  # batches of odd sizes, as requests come
        same.observe({"x": x[k : k + 7]}, {"p": p[k : k + 7]})
    s = same.snapshot()
    assert s.window_rows == 3000
    features = {("feature", f"x[{j}]") for j in range(3)}
    assert set(s.psi) == {("confidence", "p"), ("margin", "p"), ("class", "p"), *features}
    assert max(s.psi.values()) < q.PSI_WATCH, s.psi

    shifted = q.Tracker(LAYOUT, prof)
    x, p = _data(3000, seed=2, shift=1.0)
    shifted.observe({"x": x}, {"p": p})
    s = shifted.snapshot()
    assert all(s.psi["feature", f"x[{j}]"] > q.PSI_ALERT for j in range(3)), s.psi
    assert s.psi["class", "p"] > q.PSI_WATCH
    assert s.feature_mean["x[0]"] == pytest.approx(1.0, abs=0.1)
    assert s.feature_variance["x[0]"] == pytest.approx(1.0, abs=0.15)


def test_psi_waits_for_min_rows() -> None:
    t = q.Tracker(LAYOUT, _profile(), min_rows=100)
    x, p = _data(99, seed=3)
    t.observe({"x": x}, {"p": p})
    assert t.snapshot().psi == {}
    t.observe({"x": x[:1]}, {"p": p[:1]})
    assert t.snapshot().psi


def test_the_window_forgets_old_rows_and_keeps_fixed_memory() -> None:
    t = q.Tracker(LAYOUT, _profile(), window_rows=1000, buckets=10, min_rows=100)
    before = t.inputs[0].ring.nbytes if t.inputs[0].ring is not None else 0
    x, p = _data(5000, seed=4, shift=1.0)
    t.observe({"x": x}, {"p": p})  # one big batch: split across the buckets, the window keeps its last rows
    s = t.snapshot()
    assert s.window_rows == 900 and s.psi["feature", "x[0]"] > q.PSI_ALERT
    x, p = _data(1000, seed=5)
    for k in range(0, 1000, 7):
        t.observe({"x": x[k : k + 7]}, {"p": p[k : k + 7]})
    s = t.snapshot()
    # The shifted rows have rotated out: the window is the last 900-1000 rows of the reference distribution.
    assert 900 <= s.window_rows <= 1000
    assert s.psi["feature", "x[0]"] < q.PSI_WATCH
    assert (t.inputs[0].ring.nbytes if t.inputs[0].ring is not None else 0) == before


def test_histograms_and_class_counter_are_lifetime_and_bounded() -> None:
    lay = q.Layout(outputs=(("p", 50),))
    t = q.Tracker(lay, top_classes=3)
    probs = np.full((6, 50), 0.5 / 49)
    for row, cls in enumerate([0, 1, 2, 3, 40, 1]):
        probs[row, cls] = 0.5
    t.observe({}, {"p": probs})
    o = t.snapshot().outputs[0]
    assert o.classes == {"0": 1, "1": 2, "2": 1, "other": 2}
    assert sum(o.confidence) == 6 and o.confidence_sum == pytest.approx(3.0)
    # 0.5 falls in the le=0.5 bucket (index 4 of CONFIDENCE_BOUNDS).
    assert o.confidence[q.CONFIDENCE_BOUNDS.index(0.5)] == 6


def test_profile_tracks_the_reference_s_most_frequent_classes() -> None:
    lay = q.Layout(outputs=(("p", 30),))
    probs = np.full((100, 30), 0.01)
    probs[np.arange(100), np.where(np.arange(100) < 60, 17, 5)] = 0.71
    prof = q.build_profile(lay, {}, {"p": probs}, top_classes=2)
    assert prof.outputs[0].tracked[:2] == (17, 5) and prof.outputs[0].class_counts == (60, 40, 0)
    t = q.Tracker(lay, prof)
    t.observe({}, {"p": probs[:3]})
    assert t.snapshot().outputs[0].classes == {"17": 3, "5": 0, "other": 0}


def test_fallback_ratio_and_cloud_agreement() -> None:
    t = q.Tracker(LAYOUT)
    t.record_requests(3, None)
    assert t.snapshot().fallback_ratio is None  # no fallback configured: no ratio
    t.record_requests(4, 1)
    edge = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    cloud = np.array([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    t.record_cloud(*q.agreement(edge, cloud))
    s = t.snapshot()
    assert s.fallback_ratio == pytest.approx(1 / 7)
    assert (s.cloud_agreed, s.cloud_compared) == (2, 3) and s.cloud_agreement_ratio == pytest.approx(2 / 3)
    assert q.agreement(edge, cloud[:2]) == (0, 0)



# --- the exporter (telemetry.metrics.QualityMetrics) ----------------------------------------------


def test_exporter_stages_requests_flushes_on_scrape_and_keeps_three_versions() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from edge_runtime.telemetry.metrics import QUALITY_FLUSH_REQUESTS, QualityMetrics, RuntimeMetrics

    qm = QualityMetrics(window_rows=1000, min_rows=10)
    qm.profiles["m"] = _profile()
    metrics = RuntimeMetrics(CollectorRegistry(), process=False, quality_metrics=qm)
    entry = qm.track("m", "v1", LAYOUT, ("p",))
    x, p = _data(QUALITY_FLUSH_REQUESTS - 1, seed=7)
    for k in range(len(x)):
        entry.stage({"x": x[k : k + 1]}, [p[k : k + 1]], fallback=k == 0)
    assert entry.tracker.snapshot().window_rows == 0  # staged, not yet computed
    text = generate_latest(metrics.registry).decode()  # a scrape flushes
    assert f'edgeai_quality_window_rows{{model="m",version="v1"}} {float(len(x))}' in text
    assert f'edgeai_quality_fallback_ratio{{model="m",version="v1"}} {1 / len(x)}' in text
    assert 'edgeai_quality_psi{model="m",name="x[0]",signal="feature",version="v1"}' in text
    assert 'edgeai_quality_predictions_total{class="other",model="m",output="p",version="v1"}' in text
    for v in ("v2", "v3", "v4"):
        qm.track("m", v, LAYOUT, ("p",))
    assert [k for k in qm.entries] == [("m", "v2"), ("m", "v3"), ("m", "v4")]


def test_exporter_off_registers_nothing() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from edge_runtime.telemetry.metrics import QualityMetrics, RuntimeMetrics

    metrics = RuntimeMetrics(CollectorRegistry(), process=False, quality_metrics=QualityMetrics(enabled=False))
    assert b"edgeai_quality" not in generate_latest(metrics.registry)


# --- the window as a profile, and the previous revision's window as a second reference ---------------


def _fed(t: q.Tracker, rows: int, seed: int, shift: float = 0.0, step: int = 7) -> q.Tracker:
    x, p = _data(rows, seed=seed, shift=shift)
    for k in range(0, rows, step):
        t.observe({"x": x[k : k + step]}, {"p": p[k : k + step]})
    return t


def test_the_window_round_trips_as_a_profile_on_the_references_bins() -> None:
    prof = _profile()
    assert q.Tracker(LAYOUT, prof).window_profile() is None  # nothing answered yet
    assert q.Tracker(LAYOUT).window_profile() is None  # no reference: no bins to keep it on
    t = _fed(q.Tracker(LAYOUT, prof, window_rows=2000, buckets=10), 2500, seed=1)
    w = t.window_profile("window of revision a")
    assert w is not None and w.rows == t.rows == t.snapshot().window_rows
    again = q.parse_profile(w.dumps())
    assert again == w and again.source == "window of revision a"
    [o] = w.outputs
    assert o.confidence.edges == prof.outputs[0].confidence.edges and o.tracked == prof.outputs[0].tracked
    assert sum(o.confidence.counts) == sum(o.class_counts) == w.rows
    f0 = w.inputs[0].features[0]
    assert f0.hist.edges == prof.inputs[0].features[0].hist.edges and sum(f0.hist.counts) == w.rows
    assert f0.mean == pytest.approx(t.snapshot().feature_mean["x[0]"])
    # The window against itself as the reference: no divergence at all.
    assert max(_fed(q.Tracker(LAYOUT, w), 0, seed=0).snapshot().psi.values(), default=0.0) == 0.0


def test_psi_against_the_previous_window_is_psi_with_that_window_as_the_reference() -> None:
    prof = _profile()
    before = _fed(q.Tracker(LAYOUT, prof), 3000, seed=1, shift=0.5).window_profile("rev a")
    # Another reference for the previous window (other edges, other tracked classes): binned separately.
    x, p = _data(3000, seed=9, shift=-1.0)
    other = q.build_profile(LAYOUT, {"x": x}, {"p": p}, bins=7, top_classes=2)

    def small(reference: q.Profile | None, previous: q.Profile | None = None) -> q.Tracker:
        # 3000 rows through a 1000-row window: it turns over, and the second reference's rings with it.
        t = q.Tracker(LAYOUT, reference, window_rows=1000, buckets=10, min_rows=100, previous=previous,
                      previous_revision="a")
        return _fed(t, 3000, seed=2, shift=0.5)

    own = small(prof).snapshot().psi
    for previous in (before, other):
        assert previous is not None
        t = small(prof, previous)
        alone = small(previous)
        s = t.snapshot()
        assert s.previous == "a"
        assert s.psi_previous == pytest.approx(alone.snapshot().psi)
        assert s.psi == pytest.approx(own)  # the reference's PSI is untouched by the second reference
    # Same bins as the reference (one profile shipped with both builds): the same rings, counted once.
    t = q.Tracker(LAYOUT, prof, previous=before)
    assert t.outputs[0].prev is not None and t.outputs[0].prev.conf is t.outputs[0].conf_ring
    assert t.outputs[0].prev.classes is t.outputs[0].class_ring
    assert t.inputs[0].prev is not None and t.inputs[0].prev.ring is t.inputs[0].ring
    t = q.Tracker(LAYOUT, prof, previous=other)
    assert t.outputs[0].prev is not None and t.outputs[0].prev.conf is not t.outputs[0].conf_ring


def test_drift_both_builds_see_is_small_against_the_previous_window_and_a_broken_build_is_not() -> None:
    prof = _profile()
    drifted = _fed(q.Tracker(LAYOUT, prof), 3000, seed=1, shift=1.0).window_profile()
    assert drifted is not None
    same = _fed(q.Tracker(LAYOUT, prof, previous=drifted, previous_revision="a"), 3000, seed=2, shift=1.0).snapshot()
    assert max(same.psi.values()) > q.PSI_ALERT  # the data moved since calibration...
    assert max(same.psi_previous.values()) < q.PSI_WATCH, same.psi_previous  # ...for the old build too
    broken = q.Tracker(LAYOUT, prof, previous=drifted, previous_revision="a")
    x, _ = _data(3000, seed=2, shift=1.0)
    constant = np.tile(np.array([[0.97, 0.01, 0.01, 0.01]], dtype=np.float32), (3000, 1))
    broken.observe({"x": x}, {"p": constant})
    s = broken.snapshot()
    assert s.psi_previous["class", "p"] > 1 and s.psi_previous["confidence", "p"] > 1
    assert s.psi_previous["feature", "x[0]"] < q.PSI_WATCH  # same traffic: only the answers differ


def test_a_previous_window_must_fit_the_model_and_waits_for_min_rows_like_psi() -> None:
    prev = _fed(q.Tracker(LAYOUT, _profile()), 1000, seed=1).window_profile()
    assert prev is not None
    with pytest.raises(q.ProfileError, match="input 'x'"):
        q.Tracker(q.Layout(outputs=(("p", 4),)), previous=prev)
    t = _fed(q.Tracker(LAYOUT, previous=prev, previous_revision="a", min_rows=100), 99, seed=2)
    assert t.snapshot().psi_previous == {} and t.snapshot().previous == "a"
    _fed(t, 1, seed=3)
    assert set(t.snapshot().psi_previous) == {("confidence", "p"), ("margin", "p"), ("class", "p"),
                                              *(("feature", f"x[{j}]") for j in range(3))}
    assert q.Tracker(LAYOUT).snapshot().previous is None
