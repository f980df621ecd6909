"""Model quality at the edge, without labels: reference profiles, rolling windows, PSI.

Pure: numpy in, numbers out, no I/O, no metrics library. `pack` builds a
`Profile` from its evaluation (or calibration) data with `build_profile`; the
runtime keeps a `Tracker` per served model version, feeds it the batches it
answered (`Tracker.observe`, vectorized over the batch), and reads a
`Snapshot` when Prometheus scrapes.

Signals, per classifier output (a float output shaped [N, classes], classes >= 2):
- confidence: the top class's probability of each row;
- margin: top-1 minus top-2 probability of each row (small = the model hesitated
  between two classes, even when the top class looks confident);
- class: which class won, as a bounded categorical: the `top_classes` most frequent
  classes of the reference (or classes 0..top_classes-1 without one) plus "other".
Per tabular input (a float input shaped [N, width], width <= MAX_FEATURES): each
feature's values, mean and variance.

Probabilities or logits: a row whose values all lie in [0, 1] and sum to 1
(within 1e-3) is read as probabilities; otherwise the row is softmaxed first
(logits). The same rule as the fallback's `top_confidence`.

Divergence: the population stability index between the window and the
reference, over the reference's bins:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where e_i and a_i are the reference's and the window's shares of bin i. Empty
bins would make it infinite, so both are smoothed with an additive
pseudo-count of PSI_ALPHA (0.5, Jeffreys) per bin: share_i = (count_i + 0.5) /
(n + 0.5 * bins). Numeric signals use the reference's quantile edges (deciles
by default: equal-mass bins, the usual construction, so each bin carries the
same weight); the edges are open at both ends, so a value outside the
reference's range still lands in the first or last bin. Conventional reading:
below 0.1 no meaningful shift, 0.1-0.25 a moderate shift worth a look, above
0.25 a significant shift (`PSI_WATCH`, `PSI_ALERT`). PSI is only reported once
the window holds `min_rows` rows: with few rows its sampling noise (about
(bins - 1) * (1/n + 1/m) for n window and m reference rows) is of the order of
the thresholds themselves.

The window is fixed memory: a ring of `buckets` buckets, each holding per-bin
counts (and per-feature sums) of up to `window_rows / buckets` rows. When the
current bucket is full the oldest one is cleared and reused, so the window
covers the last `window_rows` rows, less the part of one bucket just cleared
(at least `window_rows * (buckets - 1) / buckets`). Nothing is kept per
request.

A second reference: the previous revision's window on the same device (`previous`, a profile in
the same format, written by that revision's runtime from `Tracker.window_profile`). The window is
binned on its edges too (on the same rings when its edges and tracked classes are the reference's,
the usual case of one profile shipped with both builds, so it costs nothing more there), and
`Snapshot.psi_previous` holds the PSI against it. Drift of the data since calibration raises the PSI
against the reference for the old and the new build alike; against the old build's own recent
answers on the same traffic, only a change of the model shows.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROFILE_FORMAT = "edgeai.quality-profile/v1"
PROFILE_FILE = "quality-profile.json"
MAX_PROFILE_BYTES = 1 << 20  # a profile is a few kilobytes; a larger file is refused unread
MAX_FEATURES = 64  # per input; wider inputs (images...) get no per-feature statistics
MAX_BINS = 64
MAX_NAME = 128
DEFAULT_BINS = 10
DEFAULT_TOP_CLASSES = 10
PSI_ALPHA = 0.5
PSI_WATCH = 0.1
PSI_ALERT = 0.25
DEFAULT_WINDOW_ROWS = 10_000
DEFAULT_BUCKETS = 10
DEFAULT_MIN_ROWS = 500
OTHER = "other"
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


class ProfileError(ValueError):
    """A quality profile that cannot be used; the message names the field and the problem."""


# --- classifier outputs -------------------------------------------------------------------------


def class_scores(out: np.ndarray) -> np.ndarray:
    """Rows of class probabilities [rows, classes], in the output's float type: as is if they already
    are probabilities, else softmaxed. Non-finite scores count as 0."""
    s = np.asarray(out).reshape(-1, out.shape[-1])
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    if s.size == 0:
        return s
    lo, hi = s.min(), s.max()
    if not np.isfinite(lo + hi):  # NaN or inf somewhere: rare, so only then the extra pass
        s = np.where(np.isfinite(s), s, 0.0)
        lo, hi = s.min(), s.max()
    if lo >= -1e-6 and hi <= 1 + 1e-6 and float(np.abs(s.sum(axis=1) - 1.0).max()) <= 1e-3:
        return s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return p


def confidence_margin_class(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: top-class probability, top-1 minus top-2, and the top class's index."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    conf = top2[:, 1]
    return conf, conf - top2[:, 0], probs.argmax(axis=1)


def agreement(edge: np.ndarray, cloud: np.ndarray) -> tuple[int, int]:
    """(rows whose top class agrees, rows compared) between two answers to the same request; (0, 0) when
    their shapes differ (nothing comparable)."""
    if edge.shape != cloud.shape or edge.ndim < 1 or edge.shape[-1] < 2:
        return 0, 0
    a = np.asarray(edge).reshape(-1, edge.shape[-1]).argmax(axis=1)
    b = np.asarray(cloud).reshape(-1, cloud.shape[-1]).argmax(axis=1)
    return int((a == b).sum()), int(a.size)


# --- what to track in a model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Which tensors of a model carry quality signals: classifier outputs (name, classes) and tabular
    inputs (name, width)."""

    outputs: tuple[tuple[str, int], ...] = ()
    inputs: tuple[tuple[str, int], ...] = ()


def layout_of(
    inputs: Sequence[tuple[str, str, Sequence[int]]], outputs: Sequence[tuple[str, str, Sequence[int]]]
) -> Layout:
    """From (name, v2 datatype, shape with -1 for free dims): floats shaped [N, k] with a fixed k."""

    def pick(specs: Sequence[tuple[str, str, Sequence[int]]], lo: int, hi: int) -> tuple[tuple[str, int], ...]:
        return tuple(
            (n, int(s[1])) for n, d, s in specs if d in _FLOAT_TYPES and len(s) == 2 and lo <= s[1] <= hi
        )

    return Layout(pick(outputs, 2, 1 << 20), pick(inputs, 1, MAX_FEATURES))


# --- histograms and PSI ---------------------------------------------------------------------------


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior edges of (up to) `bins` equal-mass bins of `values`; ties collapse bins."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or bins < 2:
        return np.zeros(0)
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    # A bin is [edge_i, edge_i+1): drop an edge equal to the minimum, or the first bin is always empty.
    out: np.ndarray = edges[edges > v.min()]
    return out


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of `values` over open-ended bins split at `edges` (len(edges) + 1 bins)."""
    idx = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")
    c: np.ndarray = np.bincount(idx.ravel(), minlength=len(edges) + 1)
    return c


def psi(actual: np.ndarray, expected: np.ndarray, alpha: float = PSI_ALPHA) -> float:
    """Population stability index of counts `actual` against counts `expected` (same bins), both
    smoothed with `alpha` per bin."""
    a = np.asarray(actual, dtype=np.float64) + alpha
    e = np.asarray(expected, dtype=np.float64) + alpha
    a /= a.sum()
    e /= e.sum()
    return float(((a - e) * np.log(a / e)).sum())


# --- the reference profile -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hist:
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True, slots=True)
class OutputProfile:
    name: str
    classes: int
    confidence: Hist
    margin: Hist
    tracked: tuple[int, ...]  # the classes counted by name, most frequent first; the rest is "other"
    class_counts: tuple[int, ...]  # len(tracked) + 1: per tracked class, then other

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": self.classes,
            "confidence": self.confidence.as_json(),
            "margin": self.margin.as_json(),
            "class": {"tracked": list(self.tracked), "counts": list(self.class_counts)},
        }


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    hist: Hist
    mean: float
    variance: float

    def as_json(self) -> dict[str, Any]:
        return {**self.hist.as_json(), "mean": self.mean, "variance": self.variance}


@dataclass(frozen=True, slots=True)
class InputProfile:
    name: str
    features: tuple[FeatureProfile, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "width": len(self.features), "features": [f.as_json() for f in self.features]}


@dataclass(frozen=True, slots=True)
class Profile:
    """The reference statistics of a model on known-good data: what the runtime compares its traffic with."""

    rows: int
    outputs: tuple[OutputProfile, ...] = ()
    inputs: tuple[InputProfile, ...] = ()
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "source": self.source,
            "rows": self.rows,
            "psi": {"alpha": PSI_ALPHA, "watch": PSI_WATCH, "alert": PSI_ALERT},
            "outputs": [o.as_json() for o in self.outputs],
            "inputs": [i.as_json() for i in self.inputs],
        }

    def dumps(self) -> str:
        return json.dumps(self.as_json(), indent=1, allow_nan=False) + "\n"

    def check_layout(self, layout: Layout) -> None:
        """The model must have every tensor the profile describes, with the same width."""
        outs, ins = dict(layout.outputs), dict(layout.inputs)
        for o in self.outputs:
            if outs.get(o.name) != o.classes:
                raise ProfileError(
                    f"output '{o.name}' ({o.classes} classes) of the profile is not a classifier output of the model "
                    f"(classifier outputs: {dict(sorted(outs.items()))})"
                )
        for i in self.inputs:
            if ins.get(i.name) != len(i.features):
                raise ProfileError(
                    f"input '{i.name}' ({len(i.features)} features) of the profile is not a tabular input of the "
                    f"model (tabular inputs: {dict(sorted(ins.items()))})"
                )


def _hist(values: np.ndarray, bins: int) -> Hist:
    edges = quantile_edges(values, bins)
    return Hist(tuple(float(x) for x in edges), tuple(int(c) for c in bin_counts(values, edges)))


def build_profile(
    layout: Layout,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    *,
    bins: int = DEFAULT_BINS,
    top_classes: int = DEFAULT_TOP_CLASSES,
    source: str = "",
) -> Profile:
    """The profile of a model's answers `outputs` to `inputs` (every sample, concatenated on axis 0)."""
    if not 2 <= bins <= MAX_BINS:
        raise ProfileError(f"bins must be within 2..{MAX_BINS}, got {bins}")
    rows = 0
    outs = []
    for name, classes in layout.outputs:
        if name not in outputs:
            continue
        probs = class_scores(outputs[name])
        rows = max(rows, len(probs))
        conf, margin, top = confidence_margin_class(probs)
        per_class = np.bincount(top, minlength=classes)
        # Most frequent first, ties by index: a stable choice for the same data.
        tracked = [int(c) for c in np.argsort(-per_class, kind="stable")[: max(0, top_classes)]]
        counts = [int(per_class[c]) for c in tracked] + [int(len(top) - sum(int(per_class[c]) for c in tracked))]
        outs.append(OutputProfile(name, classes, _hist(conf, bins), _hist(margin, bins), tuple(tracked), tuple(counts)))
    ins = []
    for name, width in layout.inputs:
        if name not in inputs:
            continue
        x = np.asarray(inputs[name], dtype=np.float64).reshape(-1, width)
        rows = max(rows, len(x))
        feats = tuple(
            FeatureProfile(_hist(x[:, j], bins), float(x[:, j].mean()), float(x[:, j].var())) for j in range(width)
        )
        ins.append(InputProfile(name, feats))
    return Profile(rows, tuple(outs), tuple(ins), source[:MAX_NAME * 4])


# --- reading a profile: every field checked, the path of a bad one named ---------------------------


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: {problem}")


def _obj(doc: Any, where: str) -> dict[str, Any]:
    _need(isinstance(doc, dict), where, "must be an object")
    out: dict[str, Any] = doc
    return out


def _list(doc: Mapping[str, Any], key: str, where: str, limit: int) -> list[Any]:
    v = doc.get(key)
    _need(isinstance(v, list), f"{where}.{key}", "must be a list")
    assert isinstance(v, list)
    _need(len(v) <= limit, f"{where}.{key}", f"at most {limit} entries, got {len(v)}")
    return v


def _int(v: Any, where: str, lo: int = 0, hi: int = 1 << 62) -> int:
    _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, where, f"must be an integer in {lo}..{hi}")
    out: int = v
    return out


def _float(v: Any, where: str) -> float:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    _need(ok, where, "must be a finite number")
    return float(v)


def _name(v: Any, where: str) -> str:
    _need(isinstance(v, str) and 0 < len(v) <= MAX_NAME, where, f"must be a non-empty string of at most {MAX_NAME}")
    out: str = v
    return out


def _read_hist(doc: Any, where: str) -> Hist:
    d = _obj(doc, where)
    edges = tuple(_float(x, f"{where}.edges[{i}]") for i, x in enumerate(_list(d, "edges", where, MAX_BINS - 1)))
    _need(all(a < b for a, b in itertools.pairwise(edges)), f"{where}.edges", "must be strictly increasing")
    counts = tuple(_int(x, f"{where}.counts[{i}]") for i, x in enumerate(_list(d, "counts", where, MAX_BINS)))
    _need(len(counts) == len(edges) + 1, f"{where}.counts", f"needs len(edges) + 1 = {len(edges) + 1} entries")
    _need(sum(counts) > 0, f"{where}.counts", "are all zero: no reference data")
    return Hist(edges, counts)


def parse_profile(text: str | bytes) -> Profile:
    """A profile from its JSON text; ProfileError naming the field for anything malformed."""
    if len(text) > MAX_PROFILE_BYTES:
        raise ProfileError(f"larger than {MAX_PROFILE_BYTES} bytes ({len(text)})")
    try:
        doc = _obj(json.loads(text), "profile")
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ProfileError):
            raise
        raise ProfileError(f"not JSON: {e}") from e
    fmt = doc.get("format")
    _need(fmt == PROFILE_FORMAT, "format", f"must be {PROFILE_FORMAT!r}, got {fmt!r}")
    rows = _int(doc.get("rows"), "rows", 1)
    source = doc.get("source", "")
    _need(isinstance(source, str), "source", "must be a string")
    outs = []
    for i, o in enumerate(_list(doc, "outputs", "profile", 16)):
        w = f"outputs[{i}]"
        od = _obj(o, w)
        classes = _int(od.get("classes"), f"{w}.classes", 2, 1 << 20)
        cd = _obj(od.get("class"), f"{w}.class")
        tracked = tuple(
            _int(c, f"{w}.class.tracked[{k}]", 0, classes - 1) for k, c in enumerate(_list(cd, "tracked", w, 100))
        )
        _need(len(set(tracked)) == len(tracked), f"{w}.class.tracked", "has duplicates")
        counts = tuple(_int(c, f"{w}.class.counts[{k}]") for k, c in enumerate(_list(cd, "counts", w, 101)))
        _need(len(counts) == len(tracked) + 1, f"{w}.class.counts", "needs len(tracked) + 1 entries (the last: other)")
        outs.append(
            OutputProfile(
                _name(od.get("name"), f"{w}.name"), classes,
                _read_hist(od.get("confidence"), f"{w}.confidence"), _read_hist(od.get("margin"), f"{w}.margin"),
                tracked, counts,
            )
        )
    ins = []
    for i, inp in enumerate(_list(doc, "inputs", "profile", 16)):
        w = f"inputs[{i}]"
        idoc = _obj(inp, w)
        feats = []
        for j, f in enumerate(_list(idoc, "features", w, MAX_FEATURES)):
            fw = f"{w}.features[{j}]"
            fd = _obj(f, fw)
            var = _float(fd.get("variance"), f"{fw}.variance")
            _need(var >= 0, f"{fw}.variance", "must be >= 0")
            feats.append(FeatureProfile(_read_hist(fd, fw), _float(fd.get("mean"), f"{fw}.mean"), var))
        _need(len(feats) > 0, f"{w}.features", "is empty")
        if "width" in idoc:
            _need(idoc["width"] == len(feats), f"{w}.width", f"says {idoc['width']}, {len(feats)} features given")
        ins.append(InputProfile(_name(idoc.get("name"), f"{w}.name"), tuple(feats)))
    names = [o.name for o in outs]
    _need(len(set(names)) == len(names), "outputs", "names repeat")
    names = [x.name for x in ins]
    _need(len(set(names)) == len(names), "inputs", "names repeat")
    return Profile(rows, tuple(outs), tuple(ins), source)


# --- the rolling window ------------------------------------------------------------------------------


def feature_name(inp: str, j: int) -> str:
    return f"{inp}[{j}]"


class _Ring:
    """Per-bin counts of one signal for each bucket of the ring: [buckets, bins], int64."""

    __slots__ = ("counts", "edges")

    def __init__(self, buckets: int, edges: np.ndarray) -> None:
        self.edges = edges
        self.counts = np.zeros((buckets, len(edges) + 1), dtype=np.int64)


@dataclass(slots=True)
class _Output:
    name: str
    classes: int
    slot_of: np.ndarray  # class index -> counter slot (len(labels) - 1 = other)
    labels: tuple[str, ...]
    conf_bounds: np.ndarray
    conf_hist: np.ndarray  # cumulative Prometheus histogram buckets (last: above every bound)
    margin_hist: np.ndarray
    conf_sum: float = 0.0
    margin_sum: float = 0.0
    class_total: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    profile: OutputProfile | None = None
    conf_ring: _Ring | None = None
    margin_ring: _Ring | None = None
    class_ring: np.ndarray | None = None  # [buckets, slots]
    conf_window: np.ndarray | None = None  # [buckets, 2]: sum of confidences, rows (the window's mean)
    prev: _OutBins | None = None


@dataclass(slots=True)
class _OutBins:
    """One classifier output's window on the bins of the previous revision's window. A ring (or the class
    counts) may be the reference's own object when the bins are the same: then it is counted once."""

    profile: OutputProfile
    slot_of: np.ndarray
    conf: _Ring
    margin: _Ring
    classes: np.ndarray  # [buckets, slots]


@dataclass(slots=True)
class _InBins:
    """One tabular input's window on the bins of the previous revision's window (see _OutBins)."""

    profile: InputProfile
    edges_by_rank: np.ndarray
    offsets: np.ndarray
    ring: np.ndarray  # [buckets, width, bins]


@dataclass(slots=True)
class _Input:
    name: str
    width: int
    sums: np.ndarray  # [buckets, width]
    sumsq: np.ndarray
    profile: InputProfile | None = None
    edges: np.ndarray | None = None  # [width, max edges], padded with +inf
    edges_by_rank: np.ndarray | None = None  # the same, transposed: [max edges, width]
    offsets: np.ndarray | None = None  # feature j's bins start at j * bins in the flattened ring
    ring: np.ndarray | None = None  # [buckets, width, bins]
    prev: _InBins | None = None


@dataclass(frozen=True, slots=True)
class OutputSnapshot:
    name: str
    bounds: tuple[float, ...]
    confidence: tuple[int, ...]  # per bound, not cumulative; then the count above the last bound
    confidence_sum: float
    margin: tuple[int, ...]
    margin_sum: float
    classes: dict[str, int]  # lifetime counts per label (tracked classes, then "other")
    window_confidence_mean: float | None = None  # mean top-class probability over the window


@dataclass(frozen=True, slots=True)
class Snapshot:
    window_rows: int
    outputs: tuple[OutputSnapshot, ...]
    feature_mean: dict[str, float]  # over the window, by feature name
    feature_variance: dict[str, float]
    psi: dict[tuple[str, str], float]  # (signal, name) -> PSI; only with a profile and min_rows rows
    fallback_ratio: float | None  # low-confidence requests / requests, over the window
    cloud_agreed: int  # lifetime rows where the cloud's top class matched the edge's
    cloud_compared: int
    cloud_agreement_ratio: float | None  # over the window
    window_requests: int = 0  # answered requests in the window (the quality gate's minRequests counts them)
    # Against the previous revision's window on this device, when the tracker has one: its revision, and
    # (signal, name) -> PSI over its bins (from min_rows rows on, like `psi`).
    previous: str | None = None
    psi_previous: dict[tuple[str, str], float] = field(default_factory=dict)


CONFIDENCE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class Tracker:
    """The quality signals of one model version: lifetime histograms and counters, and a rolling window
    compared with the reference profile (if any). Not thread-safe: one caller at a time."""

    def __init__(
        self,
        layout: Layout,
        profile: Profile | None = None,
        *,
        window_rows: int = DEFAULT_WINDOW_ROWS,
        buckets: int = DEFAULT_BUCKETS,
        min_rows: int = DEFAULT_MIN_ROWS,
        top_classes: int = DEFAULT_TOP_CLASSES,
        previous: Profile | None = None,
        previous_revision: str = "",
    ) -> None:
        """`previous`: the previous revision's window on this device (ProfileError if it does not fit the
        layout), named `previous_revision` in the snapshot."""
        if buckets < 2 or window_rows < buckets:
            raise ValueError("a window needs at least 2 buckets and one row per bucket")
        if profile is not None:
            profile.check_layout(layout)
        if previous is not None:
            previous.check_layout(layout)
        self.previous = previous
        self.previous_revision = previous_revision
        self.layout = layout
        self.profile = profile
        self.buckets = buckets
        self.bucket_rows = window_rows // buckets
        self.min_rows = min_rows
        self._cur = 0
        self._rows = np.zeros(buckets, dtype=np.int64)
        self._requests = np.zeros(buckets, dtype=np.int64)
        self._fallbacks = np.zeros(buckets, dtype=np.int64)
        self._agreed = np.zeros(buckets, dtype=np.int64)
        self._compared = np.zeros(buckets, dtype=np.int64)
        self._agreed_total = 0
        self._compared_total = 0
        self._fallback_on = False
        out_profiles = {o.name: o for o in profile.outputs} if profile else {}
        in_profiles = {i.name: i for i in profile.inputs} if profile else {}
        bounds = np.array(CONFIDENCE_BOUNDS)
        self.outputs: list[_Output] = []
        for name, classes in layout.outputs:
            op = out_profiles.get(name)
            tracked = op.tracked if op else tuple(range(min(classes, top_classes)))
            slot_of = np.full(classes, len(tracked), dtype=np.int64)
            slot_of[list(tracked)] = np.arange(len(tracked))
            o = _Output(
                name, classes, slot_of, (*(str(c) for c in tracked), OTHER), bounds,
                np.zeros(len(bounds) + 1, dtype=np.int64), np.zeros(len(bounds) + 1, dtype=np.int64),
                class_total=np.zeros(len(tracked) + 1, dtype=np.int64),
                conf_window=np.zeros((buckets, 2)),
            )
            if op is not None:
                o.profile = op
                o.conf_ring = _Ring(buckets, np.array(op.confidence.edges))
                o.margin_ring = _Ring(buckets, np.array(op.margin.edges))
                o.class_ring = np.zeros((buckets, len(tracked) + 1), dtype=np.int64)
            self.outputs.append(o)
        self.inputs: list[_Input] = []
        for name, width in layout.inputs:
            i = _Input(name, width, np.zeros((buckets, width)), np.zeros((buckets, width)))
            ip = in_profiles.get(name)
            if ip is not None:
                i.profile = ip
                most = max(len(f.hist.edges) for f in ip.features)
                edges = np.full((width, max(most, 1)), np.inf)
                for j, f in enumerate(ip.features):
                    edges[j, : len(f.hist.edges)] = f.hist.edges
                i.edges = edges
                i.edges_by_rank = np.ascontiguousarray(edges.T)
                i.ring = np.zeros((buckets, width, edges.shape[1] + 1), dtype=np.int64)
                i.offsets = np.arange(width, dtype=np.intp)[None, :] * (edges.shape[1] + 1)
            self.inputs.append(i)
        if previous is not None:
            prev_out = {o.name: o for o in previous.outputs}
            prev_in = {i.name: i for i in previous.inputs}
            for o in self.outputs:
                if o.name in prev_out:
                    o.prev = self._out_bins(o, prev_out[o.name])
            for i in self.inputs:
                if i.name in prev_in:
                    i.prev = self._in_bins(i, prev_in[i.name])

    def _out_bins(self, o: _Output, op: OutputProfile) -> _OutBins:
        def ring(own: _Ring | None, hist: Hist) -> _Ring:
            edges = np.array(hist.edges)
            return own if own is not None and np.array_equal(own.edges, edges) else _Ring(self.buckets, edges)

        if o.class_ring is not None and o.profile is not None and o.profile.tracked == op.tracked:
            slot_of, classes = o.slot_of, o.class_ring
        else:
            slot_of = np.full(o.classes, len(op.tracked), dtype=np.int64)
            slot_of[list(op.tracked)] = np.arange(len(op.tracked))
            classes = np.zeros((self.buckets, len(op.tracked) + 1), dtype=np.int64)
        return _OutBins(op, slot_of, ring(o.conf_ring, op.confidence), ring(o.margin_ring, op.margin), classes)

    def _in_bins(self, i: _Input, ip: InputProfile) -> _InBins:
        most = max(len(f.hist.edges) for f in ip.features)
        edges = np.full((i.width, max(most, 1)), np.inf)
        for j, f in enumerate(ip.features):
            edges[j, : len(f.hist.edges)] = f.hist.edges
        if i.edges is not None and i.ring is not None and i.edges_by_rank is not None and i.offsets is not None \
                and i.edges.shape == edges.shape and np.array_equal(i.edges, edges):
            return _InBins(ip, i.edges_by_rank, i.offsets, i.ring)
        return _InBins(
            ip, np.ascontiguousarray(edges.T), np.arange(i.width, dtype=np.intp)[None, :] * (edges.shape[1] + 1),
            np.zeros((self.buckets, i.width, edges.shape[1] + 1), dtype=np.int64),
        )

    # --- updates ---------------------------------------------------------------------------------

    def observe(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Add a batch of answered rows: tensors by name, rows on axis 0 (missing names are skipped).

        The lifetime histograms and counters take the whole batch at once. The window takes its last
        `window_rows` rows (earlier ones would be rotated out by the batch itself), split at the current
        bucket's end: one slice per bucket, never one per row, so the window never exceeds its rows."""
        per_out: list[tuple[_Output, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for o in self.outputs:
            arr = outputs.get(o.name)
            if arr is None or arr.size == 0:
                continue
            conf, margin, top = confidence_margin_class(class_scores(arr))
            o.conf_hist += np.bincount(np.searchsorted(o.conf_bounds, conf), minlength=len(o.conf_bounds) + 1)
            o.margin_hist += np.bincount(np.searchsorted(o.conf_bounds, margin), minlength=len(o.conf_bounds) + 1)
            o.conf_sum += float(conf.sum())
            o.margin_sum += float(margin.sum())
            slot = o.slot_of[top]
            o.class_total += np.bincount(slot, minlength=len(o.labels))
            per_out.append((o, conf, margin, slot, top))
        per_in: list[tuple[_Input, np.ndarray]] = []
        for i in self.inputs:
            arr = inputs.get(i.name)
            if arr is not None and arr.size:
                per_in.append((i, np.asarray(arr, dtype=np.float64).reshape(-1, i.width)))
        n = max([len(c) for _, c, _, _, _ in per_out] + [len(x) for _, x in per_in], default=0)
        start = max(0, n - self.bucket_rows * self.buckets)
        while start < n:
            end = start + min(n - start, self.bucket_rows - int(self._rows[self._cur]))
            self._window(
                self._cur,
                [(o, c[start:end], m[start:end], k[start:end], t[start:end]) for o, c, m, k, t in per_out],
                [(i, x[start:end]) for i, x in per_in],
            )
            self._rows[self._cur] += end - start
            if self._rows[self._cur] >= self.bucket_rows:
                self._advance()
            start = end

    @staticmethod
    def _window(
        b: int,
        per_out: list[tuple[_Output, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        per_in: list[tuple[_Input, np.ndarray]],
    ) -> None:
        for o, conf, margin, slot, top in per_out:
            if o.conf_window is not None:
                o.conf_window[b] += (float(conf.sum()), len(conf))
            if o.class_ring is not None and o.conf_ring is not None and o.margin_ring is not None:
                o.class_ring[b] += np.bincount(slot, minlength=len(o.labels))
                o.conf_ring.counts[b] += bin_counts(conf, o.conf_ring.edges)
                o.margin_ring.counts[b] += bin_counts(margin, o.margin_ring.edges)
            p = o.prev
            if p is not None:
                # Only the bins the reference does not share (see _OutBins).
                if p.conf is not o.conf_ring:
                    p.conf.counts[b] += bin_counts(conf, p.conf.edges)
                if p.margin is not o.margin_ring:
                    p.margin.counts[b] += bin_counts(margin, p.margin.edges)
                if p.classes is not o.class_ring:
                    p.classes[b] += np.bincount(p.slot_of[top], minlength=p.classes.shape[1])
        for i, x in per_in:
            i.sums[b] += x.sum(axis=0)
            i.sumsq[b] += np.square(x).sum(axis=0)
            if i.edges_by_rank is not None and i.ring is not None and i.offsets is not None:
                i.ring[b] += _feature_bins(x, i.edges_by_rank, i.offsets, i.ring.shape[2])
            if i.prev is not None and i.prev.ring is not i.ring:
                i.prev.ring[b] += _feature_bins(x, i.prev.edges_by_rank, i.prev.offsets, i.prev.ring.shape[2])

    def record_requests(self, requests: int, fallbacks: int | None) -> None:
        """Answered requests; `fallbacks`: how many of them the fallback policy judged low-confidence
        (None: no fallback configured)."""
        self._requests[self._cur] += requests
        if fallbacks is not None:
            self._fallback_on = True
            self._fallbacks[self._cur] += fallbacks

    def record_cloud(self, agreed: int, compared: int) -> None:
        self._agreed[self._cur] += agreed
        self._compared[self._cur] += compared
        self._agreed_total += agreed
        self._compared_total += compared

    def _advance(self) -> None:
        b = self._cur = (self._cur + 1) % self.buckets
        for arr in (self._rows, self._requests, self._fallbacks, self._agreed, self._compared):
            arr[b] = 0
        for o in self.outputs:
            if o.conf_window is not None:
                o.conf_window[b] = 0
            if o.class_ring is not None and o.conf_ring is not None and o.margin_ring is not None:
                o.class_ring[b] = 0
                o.conf_ring.counts[b] = 0
                o.margin_ring.counts[b] = 0
            if o.prev is not None:  # a shared ring cleared twice is still clear
                o.prev.classes[b] = 0
                o.prev.conf.counts[b] = 0
                o.prev.margin.counts[b] = 0
        for i in self.inputs:
            i.sums[b] = 0
            i.sumsq[b] = 0
            if i.ring is not None:
                i.ring[b] = 0
            if i.prev is not None:
                i.prev.ring[b] = 0

    # --- reading ---------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows in the window."""
        return int(self._rows.sum())

    def snapshot(self) -> Snapshot:
        n = int(self._rows.sum())
        psis: dict[tuple[str, str], float] = {}
        prev_psi: dict[tuple[str, str], float] = {}
        judge = n >= self.min_rows
        outs = []
        for o in self.outputs:
            wsum, wn = o.conf_window.sum(axis=0) if o.conf_window is not None else (0.0, 0.0)
            outs.append(
                OutputSnapshot(
                    o.name, CONFIDENCE_BOUNDS, tuple(int(x) for x in o.conf_hist), o.conf_sum,
                    tuple(int(x) for x in o.margin_hist), o.margin_sum,
                    dict(zip(o.labels, (int(x) for x in o.class_total), strict=True)),
                    float(wsum / wn) if wn else None,
                )
            )
            if judge and o.profile is not None and o.conf_ring and o.margin_ring and o.class_ring is not None:
                psis["confidence", o.name] = psi(o.conf_ring.counts.sum(axis=0), np.array(o.profile.confidence.counts))
                psis["margin", o.name] = psi(o.margin_ring.counts.sum(axis=0), np.array(o.profile.margin.counts))
                psis["class", o.name] = psi(o.class_ring.sum(axis=0), np.array(o.profile.class_counts))
            if judge and o.prev is not None:
                p = o.prev
                prev_psi["confidence", o.name] = psi(p.conf.counts.sum(axis=0), np.array(p.profile.confidence.counts))
                prev_psi["margin", o.name] = psi(p.margin.counts.sum(axis=0), np.array(p.profile.margin.counts))
                prev_psi["class", o.name] = psi(p.classes.sum(axis=0), np.array(p.profile.class_counts))
        mean: dict[str, float] = {}
        var: dict[str, float] = {}
        for i in self.inputs:
            if n == 0:
                break
            m = i.sums.sum(axis=0) / n
            v = np.maximum(i.sumsq.sum(axis=0) / n - m * m, 0.0)
            window = i.ring.sum(axis=0) if i.ring is not None else None
            prev_window = i.prev.ring.sum(axis=0) if judge and i.prev is not None else None
            for j in range(i.width):
                fname = feature_name(i.name, j)
                mean[fname], var[fname] = float(m[j]), float(v[j])
                if judge and window is not None and i.profile is not None:
                    ref = i.profile.features[j].hist.counts
                    psis["feature", fname] = psi(window[j, : len(ref)], np.array(ref))
                if prev_window is not None and i.prev is not None:
                    ref = i.prev.profile.features[j].hist.counts
                    prev_psi["feature", fname] = psi(prev_window[j, : len(ref)], np.array(ref))
        req = int(self._requests.sum())
        compared = int(self._compared.sum())
        return Snapshot(
            n, tuple(outs), mean, var, psis,
            int(self._fallbacks.sum()) / req if self._fallback_on and req else None,
            self._agreed_total, self._compared_total,
            int(self._agreed.sum()) / compared if compared else None,
            req,
            self.previous_revision if self.previous is not None else None,
            prev_psi,
        )

    def window_profile(self, source: str = "") -> Profile | None:
        """The window as a profile (the format `parse_profile` reads) on the reference's bins: what the next
        revision on this device compares itself with. None without a reference or an empty window."""
        n = int(self._rows.sum())
        if n == 0 or self.profile is None:
            return None
        outs = []
        for o in self.outputs:
            if o.profile is None or o.conf_ring is None or o.margin_ring is None or o.class_ring is None:
                continue
            conf = o.conf_ring.counts.sum(axis=0)
            if not conf.sum():
                continue
            outs.append(OutputProfile(
                o.name, o.classes,
                Hist(o.profile.confidence.edges, tuple(int(c) for c in conf)),
                Hist(o.profile.margin.edges, tuple(int(c) for c in o.margin_ring.counts.sum(axis=0))),
                o.profile.tracked, tuple(int(c) for c in o.class_ring.sum(axis=0)),
            ))
        ins = []
        for i in self.inputs:
            if i.profile is None or i.ring is None:
                continue
            window = i.ring.sum(axis=0)
            rows = int(window[0].sum())
            if not rows:
                continue
            m = i.sums.sum(axis=0) / rows
            v = np.maximum(i.sumsq.sum(axis=0) / rows - m * m, 0.0)
            feats = []
            for j, f in enumerate(i.profile.features):
                counts = tuple(int(c) for c in window[j, : len(f.hist.edges) + 1])
                if not sum(counts) or not (math.isfinite(m[j]) and math.isfinite(v[j])):
                    break  # a feature with only non-finite values: this input cannot be described
                feats.append(FeatureProfile(Hist(f.hist.edges, counts), float(m[j]), float(v[j])))
            else:
                ins.append(InputProfile(i.name, tuple(feats)))
        if not outs and not ins:
            return None
        return Profile(n, tuple(outs), tuple(ins), source[: MAX_NAME * 4])


def _feature_bins(x: np.ndarray, edges_by_rank: np.ndarray, offsets: np.ndarray, bins: int) -> np.ndarray:
    """Counts [width, bins] of a [rows, width] block over per-feature edges (`edges_by_rank`: [edges, width],
    padded with +inf). The bin of every value of every feature at once: count the edges at or below it, one
    pass per edge rank over the whole block (at most MAX_BINS passes, never one per value)."""
    idx = np.zeros(x.shape, dtype=np.uint8)  # bins <= MAX_BINS
    above = np.empty(x.shape, dtype=bool)
    for edge in edges_by_rank:
        np.greater_equal(x, edge, out=above)
        idx += above.view(np.uint8)
    flat = idx + offsets
    counts: np.ndarray = np.bincount(flat.ravel(), minlength=x.shape[1] * bins).reshape(x.shape[1], -1)
    return counts
