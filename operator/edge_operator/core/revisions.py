"""Revisions of an InferenceDeployment: what the fleet should serve, numbered and remembered.

Pure. A revision is a *template*: the model builds (digest per variant), the key
references, the runtime settings and the images (the cpu one, and one per accelerator family the
operator has: core/runtime_images.py); placement then picks one build per
device. Every change of any of these makes a new revision, like a Deployment's pod
template makes a new ReplicaSet, but the history lives in one place (`status.revisions`)
and carries the whole template, so a rollback to revision 3 needs nothing but status
(and, on the device, the build still in the node's content-addressed cache).

`resolve()` decides which revision the spec asks for now: the newest one when the
template is unchanged, the stable one when the spec went back to it, a new number when
it changed, or a copy of an older one when a person asked for `spec.rollout.rollbackTo`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from edge_operator.core import overrides as ov
from edge_operator.core.manifests import SecretRef
from edge_operator.core.parse_memo import ParseMemo
from edge_operator.core.placement import Artifact
from edge_operator.core.runtime_images import RuntimeImages
from edge_operator.core.views import ModelInfo
from edgeai_api.enums import RevisionOutcome
from edgeai_api.inferencedeployment import FallbackSpec, QualityGate, RevisionRecord, RuntimeOverride, RuntimeSpec
from edgeai_api.serde import parse, serialize

DEFAULT_HISTORY_LIMIT = 10

# Outcomes of a revision, in status.revisions[].outcome, by their short names here.
PROGRESSING = RevisionOutcome.PROGRESSING
SUCCEEDED = RevisionOutcome.SUCCEEDED
FAILED = RevisionOutcome.FAILED
SUPERSEDED = RevisionOutcome.SUPERSEDED
FINAL_BAD = frozenset({FAILED})


@dataclass(frozen=True)
class Template:
    """Everything that decides what a device runs, except which device it is."""

    model: str
    model_version: str | None
    source: Artifact
    variants: tuple[Artifact, ...]
    public_key: SecretRef | None
    decryption_key: SecretRef | None
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    fallback: FallbackSpec | None = None
    image: str = ""  # the cpu family's
    images: tuple[tuple[str, str], ...] = ()  # (family, image) of the accelerator families, sorted
    # The EdgeModel's reference profile, and spec.rollout.healthGate.quality with the gate's window
    # (readySeconds): both reach the Pod as runtime flags, so a change of either is a new revision.
    quality_profile: Artifact | None = None
    quality_gate: QualityGate | None = None
    quality_window_seconds: int = 0
    overrides: tuple[RuntimeOverride, ...] = ()  # spec.runtimeOverrides: per-group runtime settings
    # spec.siteCache's site label: the devices' fetches read their site's mirror from a ConfigMap key,
    # so turning the cache tier on or off (or changing the label) changes the Pod templates: a revision.
    site_cache_label: str | None = None

    def runtime_images(self) -> RuntimeImages:
        return RuntimeImages(self.image, self.images)

    def to_dict(self) -> dict[str, Any]:
        """The template as JSON (a fresh copy: the caller may keep or change it)."""
        return copy.deepcopy(self._json)

    @functools.cached_property
    def _json(self) -> dict[str, Any]:
        # Made once per template: a reconcile asks a template for its hash several times, and a
        # frozen template's JSON cannot change.
        # The JSON of runtime and fallback is the spec's own, so a template's hash is the same
        # whether the spec was read as dicts (before the typed API) or as types.
        d: dict[str, Any] = {
            "model": self.model,
            "source": _artifact_dict(self.source),
            "variants": [_artifact_dict(v) for v in self.variants],
            "runtime": serialize(self.runtime),
            "image": self.image,
        }
        if self.images:
            # Only when set: a cpu-only operator's templates (and their hashes) stay as they were.
            d["images"] = dict(self.images)
        if self.model_version:
            d["modelVersion"] = self.model_version
        if self.public_key:
            d["publicKey"] = {"name": self.public_key.name, "key": self.public_key.key}
        if self.decryption_key:
            d["decryptionKey"] = {"name": self.decryption_key.name, "key": self.decryption_key.key}
        if self.fallback is not None:
            d["fallback"] = serialize(self.fallback)
        # Only when set: the templates (and hashes) of revisions made before these fields existed stay equal.
        if self.quality_profile is not None:
            d["qualityProfile"] = _artifact_dict(self.quality_profile)
        if self.quality_gate is not None:
            d["qualityGate"] = {**serialize(self.quality_gate), "windowSeconds": self.quality_window_seconds}
        if self.overrides:
            d["runtimeOverrides"] = [serialize(o) for o in self.overrides]
        if self.site_cache_label:
            d["siteCacheLabel"] = self.site_cache_label
        return d

    @functools.cached_property
    def _compiled(self) -> tuple[ov.CompiledOverride, ...]:
        try:
            return ov.compile_overrides(self.overrides)
        except ValueError:
            return ()  # checked when the spec made this template (planner); never guessed at later

    def runtime_for(self, labels: Mapping[str, str]) -> RuntimeSpec:
        """The runtime settings of a device with these labels (spec.runtime, then the overrides)."""
        return ov.runtime_for(self.runtime, self._compiled, labels) if self.overrides else self.runtime

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Template:
        def ref(x: Any) -> SecretRef | None:
            return SecretRef(str(x["name"]), str(x["key"])) if isinstance(x, Mapping) and x.get("name") else None

        g = d.get("qualityGate")
        window = g.get("windowSeconds") if isinstance(g, Mapping) else None
        gate = None
        if isinstance(g, Mapping):
            gate = parse(QualityGate, {k: v for k, v in g.items() if k != "windowSeconds"}, "template.qualityGate")

        return Template(
            model=str(d.get("model", "")),
            model_version=d.get("modelVersion"),
            source=_artifact(d.get("source") or {}),
            variants=tuple(_artifact(v) for v in d.get("variants") or []),
            public_key=ref(d.get("publicKey")),
            decryption_key=ref(d.get("decryptionKey")),
            runtime=parse(RuntimeSpec, d.get("runtime") or {}, "template.runtime"),
            fallback=parse(FallbackSpec, d["fallback"], "template.fallback") if d.get("fallback") else None,
            image=str(d.get("image", "")),
            images=tuple(sorted((str(k), str(v)) for k, v in (d.get("images") or {}).items())),
            quality_profile=_artifact(d["qualityProfile"]) if d.get("qualityProfile") else None,
            quality_gate=gate,
            quality_window_seconds=int(window) if isinstance(window, int) else 0,
            overrides=tuple(parse(RuntimeOverride, x, f"template.runtimeOverrides[{i}]")
                            for i, x in enumerate(d.get("runtimeOverrides") or [])),
            site_cache_label=str(d["siteCacheLabel"]) if d.get("siteCacheLabel") else None,
        )

    def hash(self) -> str:
        return self._hash

    @functools.cached_property
    def _hash(self) -> str:
        return hashlib.sha256(json.dumps(self._json, sort_keys=True, separators=(",", ":")).encode()
                              ).hexdigest()[:16]

    def digests(self) -> dict[str, str]:
        """Digest per build, what a person compares across revisions."""
        out = {self.source.name: self.source.sha256}
        for v in self.variants:
            out[v.name] = v.sha256
        return out

    def model_view(self, model: ModelInfo) -> ModelInfo:
        """`model` with this template's builds and keys: what placement needs to place this revision."""
        return replace(model, version=self.model_version, source=self.source, variants=self.variants,
                       public_key=self.public_key, decryption_key=self.decryption_key,
                       quality_profile=self.quality_profile)


def _artifact_dict(a: Artifact) -> dict[str, Any]:
    d: dict[str, Any] = {"name": a.name, "precision": a.precision, "uri": a.uri, "sha256": a.sha256,
                         "accelerators": list(a.accelerators), "verified": a.verified}
    if a.size is not None:
        d["size"] = a.size
    if a.signature:
        d["signature"] = a.signature
    if a.bundle:
        d["bundle"] = a.bundle
    # Only when set: the templates of http(s) builds, and so their hashes, stay as they were.
    if a.pull_secret:
        d["pullSecret"] = a.pull_secret
    if a.plain_http:
        d["plainHTTP"] = True
    return d


def _artifact(d: Mapping[str, Any]) -> Artifact:
    return Artifact(name=str(d.get("name", "")), precision=str(d.get("precision", "")), uri=str(d.get("uri", "")),
                    sha256=str(d.get("sha256", "")), size=d.get("size"), signature=d.get("signature"),
                    bundle=d.get("bundle"),
                    accelerators=tuple(d.get("accelerators") or ()), verified=bool(d.get("verified")),
                    pull_secret=d.get("pullSecret"), plain_http=bool(d.get("plainHTTP")))


def template_for(model: ModelInfo, runtime: RuntimeSpec | None, fallback: FallbackSpec | None,
                 images: RuntimeImages, quality_gate: QualityGate | None = None, quality_window_seconds: int = 0,
                 overrides: Sequence[RuntimeOverride] = (), site_cache_label: str | None = None) -> Template:
    """The template the spec asks for: only verified builds count (an unverified variant is never placed)."""
    return Template(model=model.name, model_version=model.version, source=model.source,
                    variants=tuple(v for v in model.variants if v.verified), public_key=model.public_key,
                    decryption_key=model.decryption_key, runtime=runtime or RuntimeSpec(),
                    fallback=fallback, image=images.cpu, images=images.families,
                    quality_profile=model.quality_profile, quality_gate=quality_gate,
                    quality_window_seconds=quality_window_seconds if quality_gate else 0, overrides=tuple(overrides),
                    site_cache_label=site_cache_label)


@dataclass(frozen=True)
class Revision:
    number: int
    template: Template
    created: str
    reason: str
    outcome: RevisionOutcome = PROGRESSING
    message: str = ""
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        # The template is the operator's own: the schema preserves unknown fields there.
        return dict(serialize(RevisionRecord(
            revision=self.number, hash=self.hash or self.template.hash(), digests=self.template.digests(),
            model_version=self.template.model_version or None, created_at=self.created, reason=self.reason,
            outcome=self.outcome, message=self.message[:500] or None,
            extra={"template": self.template._json})))  # serialize copies it: no need to copy twice

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Revision | None:
        try:
            r = parse(RevisionRecord, d, "status.revisions[]")
            t = Template.from_dict(r.extra["template"])
            return Revision(r.revision, t, r.created_at or "", r.reason or "", r.outcome or PROGRESSING,
                            r.message or "", r.hash or t.hash())
        except (KeyError, TypeError, ValueError):  # ApiTypeError is a ValueError
            return None  # a hand-edited entry we cannot read is dropped, never guessed at


# Revisions parsed last, by number and template hash (an undo makes a new revision of an old
# template: same hash): every reconcile reads the history from status, and an entry changes only
# when its outcome does.
_PARSED: ParseMemo[Revision | None] = ParseMemo()


def _revision(d: Mapping[str, Any]) -> Revision | None:
    key = (d.get("revision"), d.get("hash"))
    if not (isinstance(key[0], int) and isinstance(key[1], str)):
        return Revision.from_dict(d)
    return _PARSED.get(key, d, lambda raw: Revision.from_dict(cast(Mapping[str, Any], raw)))


def history_from_status(status: Mapping[str, Any]) -> list[Revision]:
    out = [r for r in (_revision(x) for x in status.get("revisions") or [] if isinstance(x, Mapping))
           if r is not None]
    return sorted(out, key=lambda r: r.number)


def find(history: Sequence[Revision], number: int | None) -> Revision | None:
    if number is None:
        return None
    return next((r for r in history if r.number == number), None)


def with_outcome(history: Sequence[Revision], number: int, outcome: RevisionOutcome,
                 message: str = "") -> list[Revision]:
    return [replace(r, outcome=outcome, message=message or r.message) if r.number == number else r
            for r in history]


def prune(history: Sequence[Revision], keep: set[int], limit: int) -> list[Revision]:
    """The newest `limit` revisions, plus every revision in `keep` (a device runs it, it is stable or
    the target): a device never runs a revision the history has forgotten."""
    ordered = sorted(history, key=lambda r: r.number)
    recent = {r.number for r in ordered[-limit:]}
    return [r for r in ordered if r.number in recent or r.number in keep]


@dataclass(frozen=True)
class Resolution:
    target: int  # the revision the fleet should move to
    history: list[Revision]
    pin: dict[str, Any] | None  # status.rollout.pin: {revision, specHash} while an undo holds
    observed_rollback: dict[str, Any] | None  # the last spec.rollout.rollbackTo acted on
    error: str = ""  # a rollbackTo that names no revision in the history


def resolve(
    history: Sequence[Revision],
    spec_template: Template,
    target: int | None,
    stable: int | None,
    pin: Mapping[str, Any] | None,
    rollback_to: Mapping[str, Any] | None,
    observed_rollback: Mapping[str, Any] | None,
    now: str,
) -> Resolution:
    """Which revision the fleet should move to, and the history with any new revision recorded.

    - A `rollbackTo` not acted on yet: a new revision with the template of the one named, pinned
      for as long as the rest of the spec stays as it is (a later spec change wins, as in Git).
    - A pin still holding: its revision.
    - The spec's template equal to the current target's or the stable one's: that revision.
    - Otherwise a new revision, the previous target superseded if it was still rolling.
    """
    hist = list(history)
    spec_hash = spec_template.hash()
    next_number = max((r.number for r in hist), default=0) + 1
    rb = dict(rollback_to) if rollback_to else None
    if rb is not None and rb != (dict(observed_rollback) if observed_rollback else None):
        wanted = find(hist, _int(rb.get("revision")))
        if wanted is None:
            known = ", ".join(str(r.number) for r in hist) or "none"
            return Resolution(target or 0, hist, dict(pin) if pin else None, dict(observed_rollback or {}) or None,
                              f"spec.rollout.rollbackTo.revision {rb.get('revision')} is not in the revision "
                              f"history (known: {known})")
        hist = _supersede(hist, target, stable)
        if stable is not None and wanted.template.hash() == _hash_of(hist, stable):
            # Back to what the fleet ran last: no new number, the in-flight rollout just stops.
            return Resolution(stable, hist, {"revision": stable, "specHash": spec_hash}, rb)
        new = Revision(next_number, wanted.template, now, f"rollback to revision {wanted.number} (requested)",
                       hash=wanted.template.hash())
        return Resolution(new.number, [*hist, new], {"revision": new.number, "specHash": spec_hash}, rb)
    if pin and pin.get("specHash") == spec_hash and find(hist, _int(pin.get("revision"))) is not None:
        return Resolution(int(pin["revision"]), hist, dict(pin), dict(observed_rollback) if observed_rollback else None)
    observed = dict(observed_rollback) if observed_rollback else (rb if rb else None)
    if target is not None and _hash_of(hist, target) == spec_hash:
        return Resolution(target, hist, None, observed)
    if stable is not None and _hash_of(hist, stable) == spec_hash:
        return Resolution(stable, _supersede(hist, target, stable), None, observed)
    reason = "created" if not hist else _why(find(hist, target), spec_template)
    new = Revision(next_number, spec_template, now, reason, hash=spec_hash)
    return Resolution(new.number, [*_supersede(hist, target, stable), new], None, observed)


def _supersede(hist: list[Revision], target: int | None, stable: int | None) -> list[Revision]:
    cur = find(hist, target)
    if cur is not None and cur.number != stable and cur.outcome == PROGRESSING:
        return with_outcome(hist, cur.number, SUPERSEDED)
    return hist


def _hash_of(hist: Sequence[Revision], number: int) -> str | None:
    r = find(hist, number)
    return r.hash if r is not None else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _why(prev: Revision | None, new: Template) -> str:
    """A short human reason: what changed from the previous target."""
    if prev is None:
        return "spec changed"
    old = prev.template
    parts = []
    if old.digests() != new.digests():
        parts.append("model builds changed")
    if old.model_version != new.model_version:
        parts.append(f"model version {old.model_version or '-'} -> {new.model_version or '-'}")
    if old.runtime != new.runtime:
        parts.append("runtime settings changed")
    if old.fallback != new.fallback:
        parts.append("fallback changed")
    if old.image != new.image:
        parts.append(f"image {old.image} -> {new.image}")
    for fam in sorted({f for f, _ in (*old.images, *new.images)}):
        was, now = old.runtime_images().image(fam), new.runtime_images().image(fam)
        if was != now:
            parts.append(f"{fam} image {was or '-'} -> {now or '-'}")
    if (old.public_key, old.decryption_key) != (new.public_key, new.decryption_key):
        parts.append("key references changed")
    if old.model != new.model:
        parts.append(f"model {old.model} -> {new.model}")
    return "; ".join(parts) or "spec changed"
