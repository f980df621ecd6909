"""Orchestrate a pack: check inputs, build and measure variants, write the output folder.

Everything is built in a staging folder beside the target (same filesystem)
and renamed into place at the very end, so an error or Ctrl-C at any point
leaves the target as it was: never half a set of variants, never a manifest
pointing at files that are not there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import yaml

from edge_runtime.artifacts import integrity, oci, openssf
from edge_runtime.core import quality
from edge_runtime.pack import push
from edge_runtime.pack import report as rep
from edge_runtime.pack import variants as var
from edge_runtime.pack.errors import PackError
from edge_runtime.pack.manifest import (
    DEFAULT_ENCRYPTION_KEY_KEY,
    DEFAULT_PUBLIC_KEY_KEY,
    PRECISIONS,
    Artifact,
    Precision,
    ProfileFile,
    SecretRef,
    build_edgemodel,
    check_base_uri,
    check_name,
    check_version,
    dns_name,
    sha256sums,
)
from edgeai_api import edgemodel as em

MANIFEST_FILE = "edgemodel.yaml"
REPORT_FILE = "report.json"
SUMS_FILE = "SHA256SUMS"
PUBLIC_KEY_FILE = "public.pem"
SIGNATURE_FILE = "model.sig"  # the OpenSSF bundle, where `model_signing sign` puts it by default
PROFILE_FILE = quality.PROFILE_FILE
_V2_FLOATS = {np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}
# Timing is split into rounds that visit every variant in turn, so a burst of
# load from elsewhere on the machine hits all variants alike instead of one.
TIMING_ROUNDS = 5


@dataclass
class PackOptions:
    model: Path
    output: Path
    name: str | None = None
    namespace: str | None = None
    version: str | None = None
    base_uri: str | None = None
    precisions: Sequence[Precision] = PRECISIONS
    calibration: Path | None = None
    eval_data: Path | None = None
    exclude_ops: Sequence[str] = ()
    exclude_nodes: Sequence[str] = ()
    per_channel: bool = False
    samples: int = 64
    runs: int = 50
    warmup: int = 5
    timing_batch: int = 1
    threads: int = 1
    # Accelerator providers to measure each variant on as well (onnxruntime's or the CRD's names); None:
    # every one this onnxruntime build has. The CPU is always measured, and it alone decides inclusion.
    providers: Sequence[str] | None = None
    seed: int = 0
    dims: Mapping[str, int] = field(default_factory=dict)
    task: Literal["auto", "classifier", "regressor"] = "auto"
    min_agreement: float | None = 0.9
    max_abs_error: float | None = None
    sign_key: Path | None = None
    legacy_signature: bool = False  # sign each sha256 (format digest) instead of one OpenSSF bundle
    public_key_secret: str | None = None
    encryption_key: Path | None = None
    encryption_secret: str | None = None
    force: bool = False
    push: str | None = None  # oci://REGISTRY/REPO[:TAG]: push the builds there as one artifact
    registry_auth: Path | None = None  # a docker config JSON with the registry's credentials
    plain_http: bool = False
    pull_secret: str | None = None  # the dockerconfigjson Secret the EdgeModel names for the cluster


@dataclass
class PackResult:
    output: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    reports: list[rep.VariantReport]
    task: rep.Task
    table: str
    public_key_secret: SecretRef | None
    encryption_secret: SecretRef | None
    pushed: push.Pushed | None = None


def _check_options(o: PackOptions) -> None:
    if min(o.samples, o.runs, o.threads, o.timing_batch) < 1 or o.warmup < 0:
        raise PackError("BadArgument", "--samples, --runs, --threads and --batch must be >= 1, --warmup >= 0")
    if o.min_agreement is not None and not 0.0 <= o.min_agreement <= 1.0:
        raise PackError("BadArgument", f"--min-agreement must be within 0..1, got {o.min_agreement}")
    if o.max_abs_error is not None and not o.max_abs_error >= 0:
        raise PackError("BadArgument", f"--max-abs-error must be >= 0, got {o.max_abs_error}")
    bad = [p for p in o.precisions if p not in PRECISIONS]
    if bad:
        raise PackError("BadArgument", f"precisions must be among {PRECISIONS}, got {bad}")
    for k, v in o.dims.items():
        if v < 1:
            raise PackError("BadArgument", f"--dim {k}={v}: dimensions must be >= 1")


def _check_output(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PackError("OutputExists", f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PackError("OutputExists", f"{out} is not empty; pass --force to replace it")


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PackError("BadKey", f"cannot read {what} {path}: {e.strerror or e}") from e


def _publish(stage: Path, out: Path, force: bool) -> None:
    """Move the finished staging folder to `out` (an empty or, with force, replaced folder)."""
    _check_output(out, force)
    os.chmod(stage, 0o755)  # mkdtemp makes it private; the result is meant to be served
    if out.is_dir():
        if not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            try:
                os.rename(stage, out)
            except OSError:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
            return
    os.rename(stage, out)


def _rows(feed: var.Feed) -> int:
    a = next(iter(feed.values()))
    return int(a.shape[0]) if a.ndim else 1


@dataclass
class _Run:
    """A variant's session on one provider, what it answered and how long it took."""

    session: Any = None
    outputs: list[var.Outputs] | None = None
    timings: list[float] = field(default_factory=list)


@dataclass
class _Built(_Run):
    report: rep.VariantReport = field(default_factory=lambda: rep.VariantReport("", ""))
    data: bytes | None = None
    # Accelerator provider -> the same build run there.
    on: dict[str, _Run] = field(default_factory=dict)


def pack(o: PackOptions) -> PackResult:
    _check_options(o)
    out = Path(o.output).absolute()
    _check_output(out, o.force)

    # Keys and names first: a bad key should fail in a second, not after quantizing.
    sign_key = None
    sign_key_pem = b""
    if o.sign_key is not None:
        sign_key_pem = _read_key_file(o.sign_key, "signing key")
        sign_key = integrity.load_private_key(sign_key_pem)
        if not o.legacy_signature and integrity.key_algorithm(sign_key) != "ecdsa-p256":
            raise integrity.IntegrityError(
                "BadKey", "the OpenSSF model signing format needs an ECDSA P-256 key (edge-runtime keygen "
                          "--algorithm ecdsa-p256); an Ed25519 key signs only with --legacy-signature")
    enc_key = None
    if o.encryption_key is not None:
        enc_key = integrity.parse_encryption_key(_read_key_file(o.encryption_key, "encryption key"))
    name = check_name(o.name) if o.name else dns_name(Path(o.model).stem)
    if o.namespace:
        check_name(o.namespace, "--namespace")
    if o.version is not None:
        check_version(o.version)
    for secret, what in ((o.public_key_secret, "--public-key-secret"), (o.encryption_secret, "--encryption-secret")):
        if secret is not None:
            check_name(secret, what)
    base_uri = check_base_uri(o.base_uri or out.as_uri())
    access = None
    if o.push is not None:
        push.check_target(o.push)
        if o.base_uri is not None:
            raise PackError("BadArgument", "--push names where the builds are served from; drop --base-uri")
        if o.pull_secret is not None:
            check_name(o.pull_secret, "--pull-secret")
        auth = _read_key_file(o.registry_auth, "registry credentials") if o.registry_auth else None
        access = oci.RegistryAccess(auth, o.plain_http)
    elif o.pull_secret is not None or o.registry_auth is not None or o.plain_http:
        raise PackError("BadArgument", "--pull-secret, --registry-auth and --plain-http go with --push")
    pub_ref = SecretRef(o.public_key_secret or f"{name}-signing", DEFAULT_PUBLIC_KEY_KEY) if sign_key else None
    enc_ref = SecretRef(o.encryption_secret or f"{name}-decryption", DEFAULT_ENCRYPTION_KEY_KEY) if enc_key else None

    model = var.load_checked(Path(o.model))
    calibration = var.npz_feeds(Path(o.calibration), model.inputs) if o.calibration is not None else None
    # What the report measures on: the user's evaluation data, else their
    # calibration data (real inputs, if slightly flattering to static int8),
    # else deterministic synthetic inputs.
    if o.eval_data is not None:
        feeds, sample_source = var.npz_feeds(Path(o.eval_data), model.inputs), str(o.eval_data)
    elif calibration is not None:
        feeds, sample_source = calibration, f"{o.calibration} (calibration data)"
    else:
        feeds = var.random_feeds(model.inputs, samples=o.samples, seed=o.seed, dims=o.dims)
        sample_source = f"random (seed {o.seed})"
    real_data = o.eval_data is not None or calibration is not None
    dynamic = var.batch_is_dynamic(model.inputs)
    timing_feed = var.batch_of(feeds[0], o.timing_batch, dynamic)

    fp32_sess = var.session(model.data, threads=o.threads)
    try:
        reference = var.run_all(fp32_sess, feeds)
    except Exception as e:
        raise PackError("InvalidModel", f"the fp32 model fails on sample inputs: {var.short_error(e)}") from e
    probe = reference[0][0]
    task: rep.Task = rep.guess_task(probe.shape) if o.task == "auto" else o.task
    if task == "classifier" and (probe.ndim != 2 or not np.issubdtype(probe.dtype, np.floating)):
        raise PackError(
            "BadArgument", f"--task classifier needs a [batch, classes] float first output, got {probe.shape}"
        )
    # Scores of every sample, for top-1 agreement.
    scores = var.concat(reference, 0) if task == "classifier" else None
    precisions = ["fp32", *[p for p in PRECISIONS if p in o.precisions and p != "fp32"]]
    stem = Path(o.model).stem

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise PackError("Unwritable", f"cannot create the output beside {out}: {e.strerror or e}") from e
    try:
        accel, missing = var.accelerator_providers(o.providers)
        with tempfile.TemporaryDirectory(prefix="edgeai-pack-") as scratch:
            built = _build_variants(o, model, precisions, feeds, calibration, reference, fp32_sess, Path(scratch))
            _on_providers(built, accel, missing, feeds, reference, o, Path(scratch) / "provider-cache")
            _time(built, timing_feed, o)
        reports = [b.report for b in built]
        for b in built:
            _figures(b, reference, scores, b.report)
            for f in b.report.providers:
                if f.provider in b.on:
                    _figures(b.on[f.provider], reference, scores, f)
        rep.apply_floor(reports, task=task, min_agreement=o.min_agreement, max_error=o.max_abs_error)

        artifacts: dict[str, Artifact] = {}
        for b in built:
            r = b.report
            if not r.included or b.data is None:
                continue
            r.filename = f"{stem}.{r.name}.onnx" + (".enc" if enc_key else "")
            stored = integrity.encrypt(b.data, enc_key) if enc_key else b.data
            (stage / r.filename).write_bytes(stored)
            d = integrity.hash_bytes(stored)
            r.sha256, r.size = d.sha256, d.size
            if sign_key is not None and o.legacy_signature:
                r.signature = integrity.sign_digest(sign_key, d.sha256)
            precision = cast(Precision, r.precision)
            artifacts[r.name] = Artifact(r.name, precision, r.filename, r.sha256, r.size, r.signature)
        for b in built:
            # Excluded variants still show their size in the report, unencrypted.
            if not b.report.size and b.data is not None:
                b.report.size = len(b.data)

        profile = _quality_profile(model, feeds, reference, sample_source) if real_data else None
        profile_file = None
        if profile is not None:
            # The reference the runtime compares its traffic with: listed in SHA256SUMS like the variants,
            # referenced by sha256 in the manifest (spec.qualityProfile) and signed like them, because a
            # rollout's quality gate trusts it.
            text = profile.dumps().encode()
            (stage / PROFILE_FILE).write_bytes(text)
            pd = integrity.hash_bytes(text)
            psig = integrity.sign_digest(sign_key, pd.sha256) if sign_key is not None and o.legacy_signature else None
            profile_file = ProfileFile(PROFILE_FILE, pd.sha256, pd.size, psig)
        bundle = None
        if sign_key is not None and not o.legacy_signature:
            # One bundle over every build (and the profile), as `model_signing sign key` makes it over a directory.
            signed_files = [a.filename for a in artifacts.values()] + ([PROFILE_FILE] if profile_file else [])
            openssf.sign_files(stage, signed_files, sign_key_pem, stage / SIGNATURE_FILE)
            bundle = (stage / SIGNATURE_FILE).read_text()
        pushed = None
        registry = None
        if o.push is not None and access is not None:
            pushed = push.push(o.push, [(a, stage / a.filename) for a in artifacts.values()], access=access,
                               name=name, version=o.version,
                               profile=stage / PROFILE_FILE if profile_file is not None else None)
            registry = em.RegistryAccess(
                pull_secret_ref=em.LocalObjectRef(name=o.pull_secret) if o.pull_secret else None,
                plain_http=True if o.plain_http else None)
            if registry.pull_secret_ref is None and registry.plain_http is None:
                registry = None
        manifest = build_edgemodel(
            name=name,
            namespace=o.namespace,
            version=o.version,
            base_uri=base_uri,
            source=artifacts["fp32"],
            variants=[a for a in artifacts.values() if a.name != "fp32"],
            public_key_secret=pub_ref,
            encryption_secret=enc_ref,
            bundle=bundle,
            quality_profile=profile_file,
            uris=pushed.uris if pushed else None,
            registry=registry,
        )
        (stage / MANIFEST_FILE).write_text(yaml.safe_dump(manifest, sort_keys=False))
        sums = sha256sums(list(artifacts.values()))
        if profile_file is not None:
            sums += f"{profile_file.sha256}  {PROFILE_FILE}\n"
        (stage / SUMS_FILE).write_text(sums)
        if sign_key is not None:
            (stage / PUBLIC_KEY_FILE).write_bytes(integrity.public_key_pem(sign_key))
        report = rep.report_json(
            model={
                "path": str(model.path),
                "name": name,
                "sha256": integrity.hash_bytes(model.data).sha256,
                "inputs": [s.describe() for s in model.inputs],
                "outputs": [s.describe() for s in model.outputs],
                "ops": dict(sorted(model.op_counts.items())),
            },
            task=task,
            settings={
                "samples": sum(_rows(f) for f in feeds),
                "sample_source": sample_source,
                "int8_mode": "static" if o.calibration else "dynamic",
                "timing": {
                    "runs": o.runs,
                    "warmup": o.warmup,
                    "threads": o.threads,
                    "batch": o.timing_batch if dynamic else var.fixed_batch(model.inputs),
                },
                "min_agreement": o.min_agreement,
                "max_abs_error": o.max_abs_error,
                "signed": sign_key is not None,
                "signatureFormat": None if sign_key is None else ("digest" if o.legacy_signature else "openssf"),
                "encrypted": enc_key is not None,
                "onnxruntime": var.ort_version(),
                "providers": {"measured": ["CPUExecutionProvider", *accel], "unavailable": missing},
                "quality_profile": PROFILE_FILE if profile is not None else None,
            },
            reports=reports,
            manifest_file=MANIFEST_FILE,
        )
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        _publish(stage, out, o.force)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise PackError("Unwritable", f"writing {out} failed, nothing was left behind: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return PackResult(out, manifest, report, reports, task, rep.format_table(reports, task), pub_ref, enc_ref,
                      pushed)


def _quality_profile(
    model: var.LoadedModel, feeds: Sequence[var.Feed], reference: Sequence[var.Outputs], source: str
) -> quality.Profile | None:
    """The fp32 model's quality profile on the user's data (core/quality.py): None when the model has no
    classifier output and no tabular input, so nothing to compare."""

    def specs(tensors: Sequence[var.TensorSpec]) -> list[tuple[str, str, tuple[int, ...]]]:
        return [
            (t.name, _V2_FLOATS.get(t.dtype, "OTHER"), tuple(d if isinstance(d, int) else -1 for d in t.shape))
            for t in tensors
        ]

    layout = quality.layout_of(specs(model.inputs), specs(model.outputs))
    if not layout.outputs and not layout.inputs:
        return None
    wanted_in = {n for n, _ in layout.inputs}
    inputs = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in wanted_in}
    index = {t.name: i for i, t in enumerate(model.outputs)}
    outputs = {n: var.concat(reference, index[n]) for n, _ in layout.outputs}
    return quality.build_profile(layout, inputs, outputs, source=source)


def _build_variants(
    o: PackOptions,
    model: var.LoadedModel,
    precisions: Sequence[str],
    feeds: Sequence[var.Feed],
    calibration: Sequence[var.Feed] | None,
    reference: list[var.Outputs],
    fp32_sess: Any,
    scratch: Path,
) -> list[_Built]:
    built: list[_Built] = []
    for p in precisions:
        b = _Built(report=rep.VariantReport(name=p, precision=p))
        built.append(b)
        if p == "fp32":
            b.data, b.session, b.outputs = model.data, fp32_sess, reference
            continue
        try:
            if p == "fp16":
                b.data, notes = var.to_fp16(model)
                b.report.notes.extend(notes)
            else:
                q = var.to_int8(
                    model,
                    scratch,
                    calibration=calibration,
                    check_feeds=feeds,
                    reference=reference,
                    exclude_ops=o.exclude_ops,
                    exclude_nodes=o.exclude_nodes,
                    per_channel=o.per_channel,
                    threads=o.threads,
                )
                b.report.notes.extend(q.notes)
                if q.quantized:
                    b.report.notes.insert(
                        0,
                        f"{q.mode} quantization of " + ", ".join(f"{op} x{c}" for op, c in sorted(q.quantized.items())),
                    )
                if q.data is None:
                    b.report.exclude(f"int8 build failed: {q.failure}")
                    continue
                b.data = q.data
            b.session = var.session(b.data, threads=o.threads)
            b.outputs = var.run_all(b.session, feeds)
            var.check_outputs(reference, b.outputs)
        except PackError:
            raise
        except Exception as e:
            b.report.exclude(f"{p} variant does not build, load or run: {var.short_error(e)}")
            b.data = b.session = b.outputs = None
    return built


def _figures(run: _Run, reference: Sequence[var.Outputs], scores: np.ndarray | None,
             into: rep.VariantReport | rep.ProviderFigures) -> None:
    if run.timings:
        into.latency = rep.latency_stats(run.timings)
    if run.outputs is not None:
        into.max_abs_error = rep.max_abs_error(var.flatten_outputs(reference), var.flatten_outputs(run.outputs))
        if scores is not None:
            into.top1_agreement = rep.top1_agreement(scores, var.concat(run.outputs, 0))


def _on_providers(built: Sequence[_Built], accel: Sequence[str], missing: Mapping[str, str],
                  feeds: Sequence[var.Feed], reference: Sequence[var.Outputs], o: PackOptions, cache: Path) -> None:
    """Each build that runs on the CPU, run again on every accelerator provider: the same samples, compared
    with the same fp32-on-CPU reference. A provider that cannot take a build says why in the report; it
    never fails the pack (the CPU figures decide what ships)."""
    for b in built:
        if b.session is None or b.data is None:
            continue
        for name, why in missing.items():
            b.report.providers.append(rep.ProviderFigures(name, error=why))
        for name in accel:
            fig = rep.ProviderFigures(name)
            b.report.providers.append(fig)
            try:
                run = _Run(var.provider_session(b.data, name, threads=o.threads, cache_dir=cache))
                run.outputs = var.run_all(run.session, feeds)
                var.check_outputs(reference, run.outputs)
            except Exception as e:
                fig.error = var.short_error(e)
                continue
            b.on[name] = run


def _time(built: Sequence[_Built], feed: var.Feed, o: PackOptions) -> None:
    live: list[_Run] = [r for b in built for r in (b, *b.on.values()) if r.session is not None]
    rounds = max(1, min(TIMING_ROUNDS, o.runs))
    for i in range(rounds):
        n = o.runs // rounds + (1 if i < o.runs % rounds else 0)
        for b in live:
            b.timings.extend(var.time_runs(b.session, feed, runs=n, warmup=o.warmup if i == 0 else 0))
