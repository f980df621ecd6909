"""Measures per variant and the decision to keep or drop each one.

Pure: numbers and arrays in, dataclasses and text out. Timing and inference
happen in `variants`; this module only judges what they measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from edge_runtime.core.providers import ProviderRequest

Task = Literal["classifier", "regressor"]


@dataclass(frozen=True)
class Latency:
    runs: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass
class ProviderFigures:
    """One variant measured on one execution provider: the same samples, the same fp32 reference (fp32 on
    the CPU), so the agreement says what running this build there changes."""

    provider: str  # onnxruntime's name, e.g. CUDAExecutionProvider
    latency: Latency | None = None
    top1_agreement: float | None = None
    max_abs_error: float | None = None
    error: str = ""  # why there are no figures (the provider did not start, the build failed there)


@dataclass
class VariantReport:
    name: str
    precision: str
    filename: str = ""
    size: int = 0
    sha256: str = ""
    signature: str | None = None
    latency: Latency | None = None
    # Top-1 agreement with fp32 (classifiers only), in [0, 1].
    top1_agreement: float | None = None
    # Largest absolute difference from fp32 over every float output element.
    max_abs_error: float | None = None
    included: bool = True
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    # The same figures on each accelerator provider pack measured (the CPU's are the ones above).
    providers: list[ProviderFigures] = field(default_factory=list)

    def exclude(self, reason: str) -> None:
        self.included = False
        self.reason = reason


def latency_stats(seconds: Sequence[float]) -> Latency:
    if not seconds:
        raise ValueError("no latency samples")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return Latency(
        runs=len(seconds),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
    )


def guess_task(first_output_shape: Sequence[int]) -> Task:
    """A [batch, classes>=2] output is read as class scores; anything else as values.

    Users with a multi-target regressor of that shape pass --task regressor.
    """
    if len(first_output_shape) == 2 and first_output_shape[1] >= 2:
        return "classifier"
    return "regressor"


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose arg-max class is the same in both score arrays."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(
            f"score arrays must have the same [batch, classes] shape: {reference.shape} vs {candidate.shape}"
        )
    if reference.shape[0] == 0:
        raise ValueError("no rows to compare")
    same = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
    return float(same.mean())


def max_abs_error(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """Largest |fp32 - variant| over every element of every float output.

    Non-float outputs (labels, indices) must match exactly: any difference
    there counts as an infinite error, since it is a different answer.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs but {len(candidate)} candidate outputs")
    worst = 0.0
    for r, c in zip(reference, candidate, strict=True):
        if r.shape != c.shape:
            raise ValueError(f"output shapes differ: {r.shape} vs {c.shape}")
        if r.size == 0:
            continue
        if np.issubdtype(r.dtype, np.floating):
            diff = np.abs(r.astype(np.float64) - c.astype(np.float64))
            if not np.all(np.isfinite(diff)):
                return math.inf
            worst = max(worst, float(diff.max()))
        elif not np.array_equal(r, c):
            return math.inf
    return worst


def apply_floor(
    reports: Sequence[VariantReport],
    *,
    task: Task,
    min_agreement: float | None,
    max_error: float | None,
) -> None:
    """Mark variants whose agreement with fp32 is not good enough as excluded.

    fp32 is the reference and is never judged. A variant already excluded
    (it failed to build or to load) keeps its own reason.
    """
    for r in reports:
        if r.precision == "fp32" or not r.included:
            continue
        if task == "classifier" and min_agreement is not None:
            if r.top1_agreement is None:
                r.exclude("no top-1 agreement measured")
            elif r.top1_agreement < min_agreement:
                r.exclude(f"top-1 agreement with fp32 {r.top1_agreement:.2%} is under the floor {min_agreement:.2%}")
        if r.included and max_error is not None:
            if r.max_abs_error is None:
                r.exclude("no error measured")
            elif not r.max_abs_error <= max_error:
                r.exclude(f"max abs error vs fp32 {r.max_abs_error:.3g} is over the limit {max_error:.3g}")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratios(reports: Sequence[VariantReport]) -> dict[str, dict[str, float | None]]:
    """Size and p50 latency of each variant relative to fp32."""
    base = next((r for r in reports if r.precision == "fp32"), None)
    out: dict[str, dict[str, float | None]] = {}
    for r in reports:
        out[r.name] = {
            "size": _ratio(r.size or None, base.size if base else None),
            "latency_p50": _ratio(
                r.latency.p50_ms if r.latency else None,
                base.latency.p50_ms if base and base.latency else None,
            ),
        }
    return out


def provider_ratios(reports: Sequence[VariantReport]) -> dict[tuple[str, str], float | None]:
    """p50 latency of each (variant, provider) relative to fp32 on the same provider."""
    base = next((r for r in reports if r.precision == "fp32"), None)
    fp32 = {f.provider: f.latency.p50_ms for f in (base.providers if base else []) if f.latency}
    return {
        (r.name, f.provider): _ratio(f.latency.p50_ms if f.latency else None, fp32.get(f.provider))
        for r in reports
        for f in r.providers
    }


def short_provider(name: str) -> str:
    """The CRD's name of a provider (TensorRT, CUDA, OpenVINO...)."""
    return ProviderRequest(name).short


def _same_error(reports: Sequence[VariantReport]) -> dict[str, str]:
    """Providers that failed every variant alike (not in this build, no device): said once, not per row."""
    errors: dict[str, set[str]] = {}
    for r in reports:
        for f in r.providers:
            errors.setdefault(f.provider, set()).add(f.error)
    return {p: next(iter(e)) for p, e in errors.items() if len(e) == 1 and "" not in e}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _fmt_size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def format_table(reports: Sequence[VariantReport], task: Task) -> str:
    """A fixed-width table for the terminal, one row per variant, plus the reasons for exclusions."""
    rat = ratios(reports)
    header = ["variant", "size", "x fp32", "p50 ms", "p99 ms", "x fp32", "top-1 agree", "max abs err", "manifest"]
    rows = [header]
    for r in reports:
        rows.append(
            [
                r.name,
                _fmt_size(r.size) if r.size else "-",
                _fmt(rat[r.name]["size"], ".2f"),
                _fmt(r.latency.p50_ms if r.latency else None, ".3f"),
                _fmt(r.latency.p99_ms if r.latency else None, ".3f"),
                _fmt(rat[r.name]["latency_p50"], ".2f"),
                _fmt(r.top1_agreement, ".2%") if task == "classifier" else "n/a",
                _fmt(r.max_abs_error, ".3g"),
                "yes" if r.included else "NO",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in reports:
        if not r.included:
            lines.append(f"left out {r.name}: {r.reason}")
    for r in reports:
        for note in r.notes:
            lines.append(f"note {r.name}: {note}")
    if any(r.providers for r in reports):
        lines += ["", provider_table(reports, task)]
    return "\n".join(lines)


def _provider_rows(reports: Sequence[VariantReport], task: Task) -> list[list[str]]:
    rat = provider_ratios(reports)
    skip = _same_error(reports)
    rows = []
    for r in reports:
        for f in r.providers:
            if f.provider in skip:
                continue
            rows.append([
                r.name,
                short_provider(f.provider),
                _fmt(f.latency.p50_ms if f.latency else None, ".3f"),
                _fmt(f.latency.p99_ms if f.latency else None, ".3f"),
                _fmt(rat[(r.name, f.provider)], ".2f"),
                (_fmt(f.top1_agreement, ".2%") if task == "classifier" else "n/a") if not f.error else "-",
                _fmt(f.max_abs_error, ".3g"),
                f.error,
            ])
    return rows


def provider_table(reports: Sequence[VariantReport], task: Task) -> str:
    """Each variant on each accelerator provider, latency relative to fp32 on that provider."""
    header = ["variant", "provider", "p50 ms", "p99 ms", "x fp32", "top-1 agree", "max abs err", "note"]
    rows = [header, *_provider_rows(reports, task)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, 1, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(rows) == 1:
        lines = []
    lines += [f"{short_provider(p)}: {why}" for p, why in _same_error(reports).items()]
    return "on accelerator providers (agreement and error against fp32 on the CPU):\n" + "\n".join(lines)


def markdown_table(title: str, reports: Sequence[VariantReport], task: Task) -> str:
    """The README/doc form: ratios to fp32 beside the agreement."""
    rat = ratios(reports)
    out = [
        f"| {title} | size | size / fp32 | p50 latency | latency / fp32 | top-1 agreement | max abs error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        out.append(
            f"| {r.name}{'' if r.included else ' (left out)'} | {_fmt_size(r.size) if r.size else '-'} "
            f"| {_fmt(rat[r.name]['size'], '.2f')} "
            f"| {_fmt(r.latency.p50_ms if r.latency else None, '.3f')} ms "
            f"| {_fmt(rat[r.name]['latency_p50'], '.2f')} "
            f"| {_fmt(r.top1_agreement, '.1%') if task == 'classifier' else 'n/a'} "
            f"| {_fmt(r.max_abs_error, '.2g')} |"
        )
    return "\n".join(out)


def markdown_provider_table(title: str, reports: Sequence[VariantReport], task: Task) -> str:
    """The README/doc form of `provider_table`."""
    out = [
        f"| {title} | provider | p50 latency | latency / fp32 there | top-1 agreement | max abs error | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in _provider_rows(reports, task):
        out.append(f"| {row[0]} | {row[1]} | {row[2]} ms | {row[4]} | {row[5]} | {row[6]} | {row[7]} |")
    out += [f"| (every build) | {short_provider(p)} | - | - | - | - | {why} |"
            for p, why in _same_error(reports).items()]
    return "\n".join(out)


def report_json(
    *,
    model: dict[str, Any],
    task: Task,
    settings: dict[str, Any],
    reports: Sequence[VariantReport],
    manifest_file: str,
) -> dict[str, Any]:
    rat = ratios(reports)
    prat = provider_ratios(reports)
    variants = []
    for r in reports:
        d = asdict(r)
        d["ratio_to_fp32"] = rat[r.name]
        for one in (d, *d["providers"]):
            if one["max_abs_error"] is not None and math.isinf(one["max_abs_error"]):
                one["max_abs_error"] = "inf"  # JSON has no infinity
        for f in d["providers"]:
            f["latency_p50_to_fp32"] = prat[(r.name, f["provider"])]
        variants.append(d)
    return {
        "model": model,
        "task": task,
        "settings": settings,
        "variants": variants,
        "manifest": manifest_file,
    }
