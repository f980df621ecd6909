"""`edge-runtime pack MODEL.onnx`: variants, digests, signatures, a report and the EdgeModel.

Imports nothing from the `pack` extra at module level: this module is loaded
for every `edge-runtime` invocation, including in the runtime image, which
has no onnx. The heavy work is imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PRECISION_CHOICES = ("fp32", "fp16", "int8")


def _providers(text: str) -> list[str] | None:
    """`auto` -> None (every provider the build has), `cpu` -> [] (the CPU only), else the names."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give auto, cpu, or provider names such as CUDA,TensorRT")
    if names == ["auto"]:
        return None
    return [] if names == ["cpu"] else names


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _precisions(text: str) -> list[str]:
    items = _csv(text)
    bad = [p for p in items if p not in PRECISION_CHOICES]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(PRECISION_CHOICES)}, got {text!r}")
    return items


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not sep or not name or n < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=POSITIVE_INT, got {text!r}")
    return name, n


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return x


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from e
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pack",
        help="build fp32/fp16/int8 variants of an ONNX model, measure them, and write an EdgeModel",
        description=(
            "Check MODEL with the ONNX checker, build fp16 and int8 variants, measure size, latency and "
            "agreement with fp32, optionally sign and encrypt them, and write everything plus an EdgeModel "
            "manifest into OUTPUT. OUTPUT appears complete or not at all."
        ),
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: ./<model stem>-edgemodel)")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists and is not empty")
    g = p.add_argument_group("manifest")
    g.add_argument("--name", help="EdgeModel name (default: from the file name)")
    g.add_argument("--namespace", help="EdgeModel namespace (default: none, kubectl's current one)")
    g.add_argument("--model-version", dest="version", help="human version, spec.version (e.g. 1.2.0)")
    g.add_argument(
        "--base-uri",
        help="where the files will be served from; each uri is BASE_URI/<file> (default: file:// of OUTPUT)",
    )
    g = p.add_argument_group("variants")
    g.add_argument(
        "--precisions",
        type=_precisions,
        default=list(PRECISION_CHOICES),
        help="comma list among fp32,fp16,int8 (default: all; fp32 is always built as the reference)",
    )
    g.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE.npz",
        help="representative inputs, one array per model input (samples on axis 0): int8 becomes static "
        "(QDQ) quantization; the report also measures on them unless --eval-data is given",
    )
    g.add_argument("--exclude-ops", type=_csv, default=[], metavar="OP,...", help="op types to keep in float")
    g.add_argument("--exclude-nodes", type=_csv, default=[], metavar="NODE,...", help="node names to keep in float")
    g.add_argument("--per-channel", action="store_true", help="per-channel int8 weights (often more accurate)")
    g = p.add_argument_group("report")
    g.add_argument(
        "--eval-data",
        type=Path,
        metavar="FILE.npz",
        help="inputs to measure agreement on, same layout as --calibration (default: the calibration data, "
        "else --samples random rows)",
    )
    g.add_argument("--samples", type=_positive, default=64, help="random sample rows for agreement (default 64)")
    g.add_argument("--runs", type=_positive, default=50, help="timed runs per variant (default 50)")
    g.add_argument(
        "--batch",
        type=_positive,
        default=1,
        dest="timing_batch",
        metavar="N",
        help="rows per timed call (default 1; models with a fixed batch dimension use theirs)",
    )
    g.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    g.add_argument("--threads", type=_positive, default=1, help="onnxruntime intra-op threads (default 1)")
    g.add_argument(
        "--providers",
        type=_providers,
        default=None,
        metavar="auto|cpu|NAME,...",
        help="accelerator execution providers to measure every variant on besides the CPU, e.g. CUDA,TensorRT "
        "(default auto: each one this onnxruntime build has; cpu: none). Figures only: the CPU's decide "
        "which variants ship",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the random sample inputs (default 0)")
    g.add_argument(
        "--dim",
        type=_dim,
        action="append",
        default=[],
        metavar="NAME=N",
        help="value for a symbolic non-batch input dimension (default 1); repeatable",
    )
    g.add_argument(
        "--task",
        choices=("auto", "classifier", "regressor"),
        default="auto",
        help="how to compare with fp32: top-1 agreement or max abs error (default: from output shape)",
    )
    g.add_argument(
        "--min-agreement",
        type=_fraction,
        default=0.9,
        help="classifiers: leave out variants whose top-1 agreement with fp32 is below this (default 0.9; 0 = off)",
    )
    g.add_argument("--max-abs-error", type=float, help="leave out variants whose max abs error vs fp32 exceeds this")
    g.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    g = p.add_argument_group("signing and encryption")
    g.add_argument(
        "--sign-key",
        type=Path,
        metavar="PRIVATE.pem",
        help="ECDSA P-256 private key (PEM, unencrypted): sign every build in the OpenSSF model signing format "
        "(model.sig, one bundle over all builds, as `model_signing sign key` makes it)",
    )
    g.add_argument(
        "--legacy-signature",
        action="store_true",
        help="with --sign-key: sign each build's sha256 in the older digest format instead (Ed25519 or P-256)",
    )
    g.add_argument(
        "--public-key-secret",
        metavar="NAME",
        help="Secret holding public.pem, referenced by the manifest (default: <name>-signing)",
    )
    g.add_argument(
        "--encryption-key",
        type=Path,
        metavar="KEYFILE",
        help="32-byte AES-256-GCM key (raw, hex or base64): store every artifact encrypted",
    )
    g.add_argument(
        "--encryption-secret",
        metavar="NAME",
        help="Secret holding the key, referenced by the manifest (default: <name>-decryption)",
    )
    g = p.add_argument_group("OCI registry")
    g.add_argument(
        "--push",
        metavar="oci://REGISTRY/REPO[:TAG]",
        help="push the builds as one OCI artifact (an index, one manifest per build annotated with its "
        "precision and providers); the EdgeModel's URIs become oci://REGISTRY/REPO@sha256:<manifest>",
    )
    g.add_argument("--registry-auth", type=Path, metavar="CONFIG.json",
                   help="docker config JSON with the registry's credentials (e.g. ~/.docker/config.json)")
    g.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP, not HTTPS")
    g.add_argument("--pull-secret", metavar="NAME",
                   help="the kubernetes.io/dockerconfigjson Secret the EdgeModel names (spec.registry.pullSecretRef)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: see the module docstring.
    try:
        from edge_runtime.pack.packer import PackOptions, pack
    except ModuleNotFoundError as e:
        print(
            f"edge-runtime pack: needs the 'pack' extra ({e.name} is missing): pip install 'edgeai-operator[pack]'",
            file=sys.stderr,
        )
        return 1
    output = args.output or Path.cwd() / f"{args.model.stem}-edgemodel"
    result = pack(
        PackOptions(
            model=args.model,
            output=output,
            name=args.name,
            namespace=args.namespace,
            version=args.version,
            base_uri=args.base_uri,
            precisions=args.precisions,
            calibration=args.calibration,
            eval_data=args.eval_data,
            exclude_ops=args.exclude_ops,
            exclude_nodes=args.exclude_nodes,
            per_channel=args.per_channel,
            samples=args.samples,
            runs=args.runs,
            warmup=args.warmup,
            timing_batch=args.timing_batch,
            threads=args.threads,
            providers=args.providers,
            seed=args.seed,
            dims=dict(args.dim),
            task=args.task,
            min_agreement=args.min_agreement or None,
            max_abs_error=args.max_abs_error,
            sign_key=args.sign_key,
            legacy_signature=args.legacy_signature,
            public_key_secret=args.public_key_secret,
            encryption_key=args.encryption_key,
            encryption_secret=args.encryption_secret,
            force=args.force,
            push=args.push,
            registry_auth=args.registry_auth,
            plain_http=args.plain_http,
            pull_secret=args.pull_secret,
        )
    )
    if args.json:
        print(json.dumps(result.report, indent=2))
        return 0
    print(result.table)
    print(f"\nwrote {result.output}/")
    for f in sorted(result.output.iterdir()):
        print(f"  {f.name}")
    ns = f" -n {args.namespace}" if args.namespace else ""
    if result.pushed is not None:
        print(f"\npushed {result.pushed.index}")
        for build, uri in result.pushed.uris.items():
            print(f"  {build}: {uri}")
        if args.pull_secret:
            host = result.pushed.index.removeprefix("oci://").split("/", 1)[0]
            print(f"\nkubectl create secret docker-registry {args.pull_secret}{ns} --docker-server={host} "
                  "--docker-username=... --docker-password=...")
    if result.public_key_secret is not None:
        s = result.public_key_secret
        print(f"\nkubectl create secret generic {s.name}{ns} --from-file={s.key}={result.output / 'public.pem'}")
    if result.encryption_secret is not None:
        s = result.encryption_secret
        print(f"kubectl create secret generic {s.name}{ns} --from-file={s.key}={args.encryption_key}")
    print(f"kubectl apply{ns} -f {result.output / 'edgemodel.yaml'}")
    return 0
