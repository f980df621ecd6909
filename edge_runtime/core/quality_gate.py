"""The quality gate of a new revision's Pod (spec.rollout.healthGate.quality), and quality breaches.

Pure: the signals and the clock come in, a verdict goes out; reading and writing the verdict's file
and exiting are the caller's (serve_cli).

Why a gate in the runtime: the cloud sees an edge Pod only through its status (KubeEdge does not
let it reach the Pod's port), so the runtime judges its own answers, as it does errors and latency
(core/health.py). Why only during the gate: a new revision is a new Pod, so a Pod's early life is
its gate. Once it was judged good (or passed unjudged), a breach never makes it unready: taking a
working model off a line because the data drifted would be worse than the drift; it raises
`edgeai_quality_breach` and the chart's alert instead. The verdict is kept in a file in the Pod's
emptyDir, so a restarted container of the same Pod does not judge again.

A gate's life:
- judging, fewer than `min_requests` answered: with `wait`, not ready (the wave waits for traffic,
  up to its progressDeadlineSeconds); with `pass`, ready, and once `window_s` is over without
  enough traffic it passes unjudged (a device nobody sent traffic to says so, in its log).
- judging, enough answered: every threshold checked (`breaches`); none crossed: passed; any crossed:
  failed, with the reason. A failed gate is final: the caller exits with EXIT_QUALITY_GATE and the
  reason in the termination message, which the operator reads from Pod status and rolls back.

Thresholds:
- max_psi: the largest population stability index of any signal (confidence, margin, predicted
  class, each tabular feature) of the window against the reference profile. 0.25 is the usual
  "significant shift" (core/quality.PSI_ALERT); a model that answers one constant class scores
  several units on the class and confidence signals.
- min_mean_confidence: the mean top-class probability of the answers (the worst classifier output).
  Needs no profile; catches a build that hesitates everywhere (near-uniform probabilities).
- max_psi_previous: the largest PSI of any signal against the previous revision's window on the same
  device (what the build before this one answered to this device's recent traffic), where the node
  still has one. Why beside max_psi: data that drifted since calibration raises the PSI against the
  reference for the old and the new build alike, so max_psi must be loose enough for drift; the new
  build's answers to the same traffic should still look like the old one's. No previous window (the
  first rollout with it, a new device, another layout): the reason says so and the other thresholds
  decide; the gate never fails for lack of one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.core import quality

JUDGING = "judging"
PASSED = "passed"
FAILED = "failed"
STATE_VALUES = {JUDGING: 0, PASSED: 1, FAILED: 2}  # edgeai_quality_gate_state


class GateError(ValueError):
    """A gate setting that cannot work; the message names the flag."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_psi: float | None = None
    min_mean_confidence: float | None = None
    max_psi_previous: float | None = None

    def check(self) -> None:
        if self.max_psi is not None and not self.max_psi > 0:
            raise GateError(f"--quality-gate-max-psi must be > 0, got {self.max_psi}")
        if self.max_psi_previous is not None and not self.max_psi_previous > 0:
            raise GateError(f"--quality-gate-max-psi-previous must be > 0, got {self.max_psi_previous}")
        if self.min_mean_confidence is not None and not 0 <= self.min_mean_confidence <= 1:
            raise GateError(f"--quality-gate-min-mean-confidence must be within 0..1, got {self.min_mean_confidence}")


@dataclass(frozen=True, slots=True)
class GateConfig:
    thresholds: Thresholds
    min_requests: int = 200
    wait: bool = True  # onInsufficientTraffic: Wait (True) or Pass
    window_s: float = 0.0  # with Pass: how long an unjudged Pod may wait for min_requests before it passes

    def check(self) -> None:
        self.thresholds.check()
        t = self.thresholds
        if t.max_psi is None and t.min_mean_confidence is None and t.max_psi_previous is None:
            raise GateError("a quality gate needs --quality-gate-max-psi, --quality-gate-min-mean-confidence or "
                            "--quality-gate-max-psi-previous")
        if self.min_requests < 1:
            raise GateError(f"--quality-gate-min-requests must be >= 1, got {self.min_requests}")
        if self.window_s < 0:
            raise GateError(f"--quality-gate-window-s must be >= 0, got {self.window_s}")


@dataclass(frozen=True, slots=True)
class Signals:
    """What the gate reads of one model version's quality tracker."""

    requests: int  # answered requests in the window
    rows: int  # answered rows in the window
    mean_confidence: tuple[str, float] | None  # (output, window's mean top-class probability), the worst output
    psi: Mapping[tuple[str, str], float]  # (signal, name) -> PSI; empty until the window has enough rows
    previous: str | None = None  # the revision whose window on this device is the second reference, if any
    psi_previous: Mapping[tuple[str, str], float] = field(default_factory=dict)  # like psi, against it


def signals_of(s: quality.Snapshot) -> Signals:
    worst: tuple[str, float] | None = None
    for o in s.outputs:
        m = o.window_confidence_mean
        if m is not None and (worst is None or m < worst[1]):
            worst = (o.name, m)
    return Signals(s.window_requests, s.window_rows, worst, dict(s.psi), s.previous, dict(s.psi_previous))


def breaches(t: Thresholds, s: Signals) -> list[tuple[str, str]]:
    """(check, reason) for every threshold the signals cross: check is "psi", "psi_previous" or "confidence"."""
    out: list[tuple[str, str]] = []
    if t.max_psi is not None and s.psi:
        (signal, name), worst = max(s.psi.items(), key=lambda kv: kv[1])
        if worst > t.max_psi:
            out.append(("psi", f"PSI of {signal} '{name}' against the reference is {worst:.3g} "
                               f"(maxPSI {t.max_psi:g})"))
    if t.max_psi_previous is not None and s.previous is not None and s.psi_previous:
        (signal, name), worst = max(s.psi_previous.items(), key=lambda kv: kv[1])
        if worst > t.max_psi_previous:
            out.append(("psi_previous", f"PSI of {signal} '{name}' against the previous revision's window "
                                        f"(revision {s.previous}) is {worst:.3g} "
                                        f"(maxPSIPrevious {t.max_psi_previous:g})"))
    if t.min_mean_confidence is not None and s.mean_confidence is not None:
        name, mean = s.mean_confidence
        if mean < t.min_mean_confidence:
            out.append(("confidence", f"mean confidence of output '{name}' is {mean:.3f} "
                                      f"(minMeanConfidence {t.min_mean_confidence:g})"))
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    ready: bool
    state: str  # JUDGING, PASSED or FAILED
    reason: str
    decided: bool = False  # this call decided it: the caller records it (and exits on FAILED)

    def dumps(self) -> str:
        return json.dumps({"state": self.state, "reason": self.reason})


def load_verdict(text: str) -> Verdict | None:
    """A verdict written by `Verdict.dumps`; None for anything else (the Pod is then judged again)."""
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("state") not in (PASSED, FAILED):
        return None
    state = str(doc["state"])
    reason = str(doc.get("reason") or "")[:1000]
    return Verdict(state == PASSED, state, reason)


class Gate:
    """One Pod's gate. Not thread-safe: the event loop's readiness calls it."""

    def __init__(self, config: GateConfig, started: float, restored: Verdict | None = None) -> None:
        config.check()
        self.config = config
        self.started = started
        self.verdict: Verdict | None = restored

    @property
    def state(self) -> str:
        return self.verdict.state if self.verdict is not None else JUDGING

    def judge(self, now: float, s: Signals) -> Verdict:
        if self.verdict is not None:
            return self.verdict
        cfg = self.config
        t = cfg.thresholds
        judges_previous = t.max_psi_previous is not None and s.previous is not None
        has_psi = (t.max_psi is None or bool(s.psi)) and (not judges_previous or bool(s.psi_previous))
        enough = s.requests >= cfg.min_requests and has_psi
        if not enough:
            seen = f"{s.requests} of the {cfg.min_requests} requests it needs"
            if s.requests >= cfg.min_requests:
                seen = f"{s.rows} rows, too few for PSI yet"
            if cfg.wait:
                return Verdict(False, JUDGING, f"quality gate: waiting for traffic to judge: {seen} "
                                               "(healthGate.quality.onInsufficientTraffic Wait)")
            if now - self.started < cfg.window_s:
                return Verdict(True, JUDGING, f"quality gate: judging: {seen}")
            return self._decide(Verdict(True, PASSED, f"quality gate passed without the quality check: {seen} "
                                                      f"within {cfg.window_s:g}s (onInsufficientTraffic Pass)"))
        found = breaches(t, s)
        # Said in the verdict either way, so a person reading it knows what the gate compared with.
        note = ""
        if t.max_psi_previous is not None:
            note = (f" (compared with the previous revision's window: revision {s.previous})" if judges_previous
                    else " (no previous revision's window on this device: maxPSIPrevious not judged)")
        if found:
            why = "; ".join(r for _, r in found)
            return self._decide(Verdict(False, FAILED, f"quality gate failed after {s.requests} requests: {why}"
                                                       f"{note if not judges_previous else ''}"))
        return self._decide(Verdict(True, PASSED, f"quality gate passed after {s.requests} requests{note}"))

    def _decide(self, v: Verdict) -> Verdict:
        self.verdict = Verdict(v.ready, v.state, v.reason)
        return Verdict(v.ready, v.state, v.reason, decided=True)
