"""`pack` on a trained model with real data: size, latency, agreement and accuracy per build and provider.

    python -m benchmarks pack [--providers auto|cpu|CUDA,...] [--batches 1,32] [--runs 200]
                              [--onnxruntime onnxruntime-openvino]

Trains the digits CNN (benchmarks/pack/digits.py: scikit-learn's digits, 32x32, ~99% held-out accuracy;
cached under $EDGEAI_CACHE/bench-pack by its settings), packs it with `pack` itself (static int8 calibrated
on 256 training images, agreement measured on the 360 held-out ones) once per timing batch, and runs
every build on every provider measured over the held-out images once more for its accuracy against the
true labels. `--onnxruntime DIST` runs the same under another onnxruntime build (its providers: e.g.
onnxruntime-openvino's OpenVINO on this CPU), in a virtualenv of its own made on first use. The
baseline is the fp32 model on the same provider in the same run; the table ends with
the seeds' claim ("int8: 4x smaller, 2x faster") beside what this machine measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.pack import digits

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGEAI_CACHE", Path.home() / ".cache" / "edgeai")) / "bench-pack"
RESULTS = ROOT / "benchmarks" / "results" / "pack.md"


def log(msg: str) -> None:
    print(f"[bench pack] {msg}", file=sys.stderr, flush=True)


def trained(cfg: digits.Config) -> digits.Trained:
    key = hashlib.sha256((json.dumps(asdict(cfg)) + Path(digits.__file__).read_text()).encode()).hexdigest()[:16]
    d = CACHE / key
    meta = d / "trained.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return digits.Trained(d / "digits.onnx", d / "calibration.npz", d / "evaluation.npz",
                              np.asarray(m["test_y"]), m["accuracy"])
    log(f"training the digits CNN ({cfg.epochs} epochs; once, cached in {d})")
    t = digits.build(d, cfg)
    meta.write_text(json.dumps({"test_y": t.test_y.tolist(), "accuracy": t.accuracy}))
    return t


def accuracies(out: Path, reports: list[Any], trained_model: digits.Trained, providers: list[str],
               threads: int) -> dict[tuple[str, str], float]:
    """Each shipped build on each provider, over the held-out images, against the true labels."""
    from edge_runtime.pack import variants as var

    x = np.load(trained_model.evaluation)[digits.INPUT]
    acc: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as cache:
        for r in reports:
            if not r.included or not r.filename:
                continue
            data = (out / r.filename).read_bytes()
            for p in providers:
                try:
                    sess = (var.session(data, threads=threads) if p == "CPUExecutionProvider"
                            else var.provider_session(data, p, threads=threads, cache_dir=Path(cache)))
                except RuntimeError:
                    continue
                scores = np.concatenate([sess.run(None, {digits.INPUT: x[i:i + 32]})[0]
                                         for i in range(0, len(x), 32)])
                acc[(r.name, p)] = digits.accuracy(scores, trained_model.test_y)
    return acc


def in_venv(dist: str, argv: list[str]) -> int:
    """Run this benchmark again under a venv whose onnxruntime is `dist` (they all install the same
    `onnxruntime` package, so each build needs an environment of its own)."""
    sys.path.insert(0, str(ROOT / "hack"))
    import sidevenv  # type: ignore[import-not-found]

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*sidevenv.project_dependencies(without=["onnxruntime"]), dist,
            *project["optional-dependencies"]["pack"], "scikit-learn>=1.4"]
    venv = sidevenv.CACHE / "bench-venvs" / f"pack-{dist}"
    why = sidevenv.ensure(venv, reqs, "import onnxruntime, onnx, onnxconverter_common, sklearn")
    if why is not None:
        print(f"cannot make the {dist} environment: {why}", file=sys.stderr)
        return 1
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT)]))
    return subprocess.run([str(sidevenv.python(venv)), "-m", "benchmarks", "pack", *argv], cwd=ROOT, env=env,
                          check=False).returncode


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pack", description=__doc__.split("\n")[0])
    ap.add_argument("--providers", default="auto", help="auto (every provider this onnxruntime has), cpu, or names")
    ap.add_argument("--batches", default="1,32", help="rows per timed call, one pack per value")
    ap.add_argument("--runs", type=int, default=200, help="timed calls per build and provider")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (pack's default: 1)")
    ap.add_argument("--epochs", type=int, default=digits.Config.epochs)
    ap.add_argument("--onnxruntime", metavar="DIST",
                    help="another onnxruntime build to measure under, e.g. onnxruntime-openvino (own venv)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.onnxruntime:
        rest = [a for i, a in enumerate(argv) if a != "--onnxruntime" and (i == 0 or argv[i - 1] != "--onnxruntime")
                and not a.startswith("--onnxruntime=")]
        return in_venv(args.onnxruntime, rest)
    from edge_runtime.pack import report as rep
    from edge_runtime.pack.cli import _providers
    from edge_runtime.pack.packer import PackOptions, pack

    cfg = digits.Config(epochs=args.epochs)
    model = trained(cfg)
    batches = [int(b) for b in args.batches.split(",") if b]
    runs: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        for b in batches:
            log(f"pack, timing batch {b}")
            runs[b] = pack(PackOptions(model=model.model, output=Path(tmp) / f"b{b}", calibration=model.calibration,
                                       eval_data=model.evaluation, runs=args.runs, warmup=10, timing_batch=b,
                                       threads=args.threads, providers=_providers(args.providers)))
        first = runs[batches[0]]
        measured = first.report["settings"]["providers"]["measured"]
        log("accuracy of every build on every provider")
        acc = accuracies(first.output, first.reports, model, measured, args.threads)

    def figures(reports: list[Any], variant: str, provider: str) -> tuple[Any, float | None, float | None]:
        r = next(x for x in reports if x.name == variant)
        if provider == "CPUExecutionProvider":
            return r.latency, r.top1_agreement, rep.ratios(reports)[variant]["latency_p50"]
        f = next((f for f in r.providers if f.provider == provider), None)
        if f is None:
            return None, None, None
        return f.latency, f.top1_agreement, rep.provider_ratios(reports).get((variant, provider))

    head = ["build", "provider", "size", "size / fp32"]
    for b in batches:
        head += [f"p50 ms, batch {b}", "/ fp32"]
    head += ["top-1 agreement with fp32", "held-out accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    size_ratio = rep.ratios(first.reports)
    for r in first.reports:
        for p in measured:
            row = [r.name, rep.short_provider(p), f"{r.size / 1024:.0f} KiB", f"{size_ratio[r.name]['size']:.2f}"]
            agree = None
            for b in batches:
                lat, agree_b, ratio = figures(runs[b].reports, r.name, p)
                agree = agree if agree is not None else agree_b
                row += [f"{lat.p50_ms:.3f}" if lat else "-", f"{ratio:.2f}" if ratio else "-"]
            a = acc.get((r.name, p))
            row += [f"{agree:.1%}" if agree is not None else "-", f"{a:.1%}" if a is not None else "-"]
            lines.append("| " + " | ".join(row) + " |")
    unavailable = first.report["settings"]["providers"]["unavailable"]
    lines += [f"| (every build) | {rep.short_provider(p)} | | | {why} |" for p, why in unavailable.items()]

    verdicts = []
    for p in measured:
        speed = []
        for b in batches:
            _, _, ratio = figures(runs[b].reports, "int8", p)
            if ratio:
                speed.append(f"{1 / ratio:.2f}x as fast as fp32 at batch {b}")
        if speed:
            verdicts.append(f"int8 on {rep.short_provider(p)}: {1 / (size_ratio['int8']['size'] or 1):.1f}x smaller, "
                            + ", ".join(speed) + " (the seeds: 4x smaller, 2x faster)")
    header = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, onnxruntime {first.report['settings']['onnxruntime']}, "
        f"{args.threads} intra-op thread(s), {args.runs} timed calls per build, provider and batch.",
        f"Model: CNN trained on scikit-learn's digits (32x32, 3 conv stages, 155k params), numpy training "
        f"accuracy on 360 held-out images {model.accuracy:.1%}; int8 is static QDQ calibrated on 256 training "
        "images; agreement and accuracy on the held-out images.",
    ]
    text = "\n".join(lines)
    print("\n".join(header) + "\n\n" + text + "\n\n" + "\n".join(verdicts))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("### pack on a trained model\n\n" + "\n".join(f"- {h}" for h in header) + "\n\n" + text + "\n\n"
                   + "\n".join(f"- {v}" for v in verdicts) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
