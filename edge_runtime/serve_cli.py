"""`edge-runtime serve`: verify, load, warm up, then serve the Open Inference Protocol.

Verification happens before the port opens: a server that refuses its
artifact exits non-zero with the reason's exit code and never answers a
request.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.artifacts.integrity import IntegrityError, check_sha256
from edge_runtime.commands import add_signature_args, read_signature_file
from edge_runtime.transport.busy_poll import DEFAULT_WINDOW_US as DEFAULT_BUSY_POLL_US
from edge_runtime.transport.busy_poll import BusyPoll

log = logging.getLogger("edge_runtime.serve")


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _int_from(lo: int, hi: int, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from `lo` to `hi`, the error naming the range (and `unit`)."""

    def check(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number{unit}, got {text!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}{unit}, got {n}")
        return n

    return check


_run_count = _int_from(1, 64)
_heap_mib = _int_from(0, 4096, " (MiB)")
_busy_poll_us = _int_from(0, 100_000, " (microseconds, 0: off)")


def _fraction(text: str) -> float:
    x = float(text)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {x}")
    return x


def _providers_json(text: str) -> list[Any]:
    from edge_runtime.core.providers import ProviderSpecError, parse_json

    try:
        return parse_json(text)
    except ProviderSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _provider_item(text: str) -> Any:
    from edge_runtime.core.providers import ProviderSpecError, parse_item

    try:
        return parse_item(text)
    except ProviderSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a verified ONNX model over the Open Inference Protocol (KServe v2)")
    p.add_argument("--model", required=True, help="model file (as fetched into the cache)")
    p.add_argument("--sha256", required=True, help="expected sha256 of the file as stored")
    p.add_argument("--name", required=True, help="model name in the /v2/models/{name} API")
    p.add_argument("--model-version", help="version label (default: first 12 hex digits of the sha256)")
    add_signature_args(p)
    p.add_argument("--public-key-file", help="PEM public key (or, for OpenSSF bundles, CA certificates); when set, "
                                             "every load must carry a valid signature")
    p.add_argument("--decryption-key-file", help="AES-256-GCM key for an encrypted artifact (decrypted in memory)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=_positive_int, default=8080)
    p.add_argument(
        "--grpc-port", type=_positive_int, default=0,
        help="also serve inference.GRPCInferenceService on this port (0: no gRPC, the default)",
    )
    p.add_argument(
        "--grpc-server", choices=["native", "grpcio"], default="native",
        help="the gRPC port's HTTP/2: native (the runtime's own, edge_runtime/transport/grpc_h2.py: 0.17-0.20 ms a "
        "call with no work, 2.5x the calls at 32 in flight) or grpcio (grpcio's asyncio server: 0.39-0.48 ms here)",
    )
    p.add_argument(
        "--model-cache",
        help="the content-addressed model cache (DIR/sha256/<digest>) that repository loads may read; "
        "default: the cache --model lives in, when it is such an entry",
    )
    p.add_argument(
        "--repository-api", choices=["loopback", "token", "off", "any"], default="loopback",
        help="who may use the repository API (load/unload/index): loopback clients only (default), "
        "bearer-token holders, nobody, or anyone",
    )
    p.add_argument("--repository-token-file", help="file holding the bearer token of --repository-api token")
    p.add_argument("--max-model-bytes", type=int, default=4 << 30, help="a model file larger than this never loads")
    p.add_argument("--load-timeout-s", type=float, default=300.0, help="a repository load taking longer is refused")
    p.add_argument("--threads", type=_positive_int, default=0,
                   help="onnxruntime intra-op threads of each run (0: one per core, or cores / --parallel-runs)")
    p.add_argument(
        "--parallel-runs", type=_run_count, default=1,
        help="batches run at once, each on its own thread with cores/N intra-op threads: more throughput for a "
        "model whose run waits on its own threads (a CNN on a few cores), more latency for a lone request",
    )
    p.add_argument(
        "--intra-op-spinning", choices=["off", "in-run"], default="off",
        help="onnxruntime's waiting workers: off (sleep between parallel sections: a wake-up each, no core ever "
        "held) or in-run (spin within a run, stop when it returns: a large model's run is faster on an idle "
        "device, slower on a busy one)",
    )
    p.add_argument(
        "--heap-keep-mib", type=_heap_mib, default=64,
        help="glibc: take blocks up to 32 MiB from the heap and keep up to this much freed heap mapped for the "
        "next request, instead of unmapping and faulting in every tensor-sized buffer again (0: glibc's defaults)",
    )
    p.add_argument(
        "--busy-poll-us", type=_busy_poll_us, default=DEFAULT_BUSY_POLL_US,
        help="after an answer, poll for the next request this long instead of sleeping, while no request waits "
        "on a model run (0: off). A CPU that sleeps between requests serves the next one slower (here: 150 us "
        "of server time per small request without, 81 us with); costs at most this much CPU per answer",
    )
    p.add_argument("--max-batch-size", type=_positive_int, default=0, help="dynamic batching up to N rows (0/1: off)")
    p.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=0.0,
        help="wait up to this long for a batch to fill once the model is free (0: never wait)",
    )
    p.add_argument(
        "--execution-providers", type=_providers_json, default=None, metavar="JSON",
        help='onnxruntime execution providers to try in order, the CPU last: a JSON list such as '
        '[{"name": "TensorRT", "options": {"device_id": "0"}}, {"name": "CUDA"}, "CPU"] '
        "(names: TensorRT, CUDA, MIGraphX, ROCm, OpenVINO, QNN, CANN, CPU, or onnxruntime's own)",
    )
    p.add_argument(
        "--execution-provider", type=_provider_item, action="append", default=None, metavar="NAME[:K=V,...]",
        help="one provider to try, with its options (repeat it; after those of --execution-providers)",
    )
    p.add_argument(
        "--require-accelerator", action="store_true",
        help="refuse to serve (exit, never Ready) when no provider but the CPU starts",
    )
    p.add_argument(
        "--provider-cache",
        help="writable directory for TensorRT engines and OpenVINO blobs (one subdirectory per model digest)",
    )
    p.add_argument("--fallback-url", help="cloud v2 endpoint (base URL or full .../infer URL)")
    p.add_argument(
        "--fallback-threshold", type=_fraction, default=0.5, help="top-1 confidence below this goes to the cloud"
    )
    p.add_argument("--fallback-timeout-ms", type=float, default=1000.0)
    p.add_argument(
        "--fallback-queue", help="directory of the durable hard-example queue (required with --fallback-url)"
    )
    p.add_argument("--fallback-queue-max-items", type=int, default=10_000)
    p.add_argument(
        "--fallback-protocol", choices=["rest", "grpc"], default="rest",
        help="protocol of the cloud endpoint: rest (URL) or grpc (host:port)",
    )
    p.add_argument(
        "--fallback-binary", action="store_true",
        help="send a REST cloud the binary tensor extension instead of JSON (only if it supports it)",
    )
    p.add_argument(
        "--quality-profile",
        help="reference profile (quality-profile.json, written by `pack` beside the variants): export the population "
        "stability index of the served model's answers and inputs against it",
    )
    p.add_argument(
        "--quality-window-rows", type=int, default=10_000,
        help="rows in the rolling window the quality signals and PSI are computed over",
    )
    p.add_argument(
        "--no-quality", action="store_true",
        help="do not track model quality signals (confidence, margin, classes, features, PSI)",
    )
    p.add_argument(
        "--quality-window-dir",
        help="directory on the node (outliving the Pod) where this revision keeps its rolling window, as "
        "<revision>.json, for the next revision's quality gate; with a gate, the most recent window of another "
        "revision there is loaded as a second reference (needs --quality-profile and --revision)",
    )
    p.add_argument("--revision", help="this revision's identity, the same on every device (names its window file)")
    p.add_argument(
        "--quality-window-interval-s", type=float, default=60.0,
        help="how often the window is written to --quality-window-dir (and once more at shutdown)",
    )
    g = p.add_argument_group(
        "rollout quality gate",
        "spec.rollout.healthGate.quality, passed by the operator to a new revision's Pod: judged into readiness "
        "during the Pod's gate only; a failure exits with code 10 and the reason in --termination-log",
    )
    g.add_argument("--quality-gate-max-psi", type=float, help="fail above this PSI of any signal (needs a profile)")
    g.add_argument("--quality-gate-min-mean-confidence", type=float, help="fail below this mean top-class probability")
    g.add_argument(
        "--quality-gate-max-psi-previous", type=float,
        help="fail above this PSI of any signal against the previous revision's window on this device (needs "
        "--quality-window-dir); without such a window, not judged",
    )
    g.add_argument("--quality-gate-min-requests", type=int, default=200, help="answered requests before judging")
    g.add_argument(
        "--quality-gate-on-insufficient-traffic", choices=["wait", "pass"], default="wait",
        help="with fewer requests: wait (not ready) or pass (ready; unjudged after --quality-gate-window-s)",
    )
    g.add_argument("--quality-gate-window-s", type=float, default=0.0, help="how long pass waits for traffic")
    g.add_argument(
        "--quality-gate-state", help="file keeping the verdict across container restarts (in the Pod's emptyDir)"
    )
    g.add_argument(
        "--termination-log", default="/dev/termination-log",
        help="where a failed gate's reason is written before exiting (Kubernetes shows it in the Pod's status)",
    )
    p.add_argument("--metrics-port", type=_positive_int, help="serve /metrics on this port too (default: same port)")
    p.add_argument("--max-body-bytes", type=int, default=64 << 20, help="larger request bodies get 413")
    p.add_argument("--body-timeout-s", type=float, default=30.0, help="a body not received within this gets 408")
    p.add_argument(
        "--max-connections", type=int, default=512,
        help="open REST connections at most; past it new ones are closed at once (logged, counted)",
    )
    p.add_argument(
        "--header-timeout-s", type=float, default=10.0,
        help="a connection without a complete request head this long after connecting is closed",
    )
    p.add_argument(
        "--max-header-bytes", type=int, default=64 << 10, help="a larger request head gets 431 and is closed"
    )
    p.add_argument("--keep-alive-timeout-s", type=float, default=15.0, help="an idle keep-alive connection is closed")
    p.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=20.0,
        help="on SIGTERM the port closes and requests in flight get this long to finish (under the Pod's grace period)",
    )
    p.add_argument("--error-window-s", type=float, default=60.0, help="window of the error-rate readiness judgement")
    p.add_argument(
        "--max-error-rate", type=_fraction, default=0.5, help="not ready above this share of failed requests"
    )
    p.add_argument(
        "--max-latency-ms", type=_positive_int, default=None,
        help="not ready while most requests of the window take longer than this (default: no latency judgement)",
    )
    p.add_argument("--log-level", default=os.environ.get("EDGEAI_LOG_LEVEL", "info"))
    p.set_defaults(func=run)


def build(args: argparse.Namespace, busy_poll: BusyPoll | None = None) -> Any:
    """Everything but the socket: returns the ASGI app, model already verified and loaded. `busy_poll`
    (transport/busy_poll.py) is shared by the REST server and the gRPC server on its loop."""
    from edge_runtime.core.access import RepositoryAccess
    from edge_runtime.core.health import ErrorWindow
    from edge_runtime.core.quality import DEFAULT_MIN_ROWS, ProfileError
    from edge_runtime.serving.dataplane import DataPlane
    from edge_runtime.serving.offload import Decoder
    from edge_runtime.serving.repository import ModelSource, Settings, cache_of, default_version
    from edge_runtime.telemetry.metrics import QualityMetrics, RuntimeMetrics
    from edge_runtime.transport.server import App

    check_sha256(args.sha256)
    signature = args.signature
    if args.signature_file:
        signature = read_signature_file(args.signature_file)
    pub = Path(args.public_key_file).read_bytes() if args.public_key_file else None
    key = Path(args.decryption_key_file).read_bytes() if args.decryption_key_file else None
    if pub is not None and signature is None:
        raise IntegrityError("BadSignature", "--public-key-file is set but no --signature was given")
    profile = _read_profile(args.quality_profile) if args.quality_profile else None
    if args.quality_window_rows < 100:
        raise SystemExit("edge-runtime serve: --quality-window-rows must be >= 100")
    if profile is not None and args.no_quality:
        raise SystemExit("edge-runtime serve: --quality-profile and --no-quality contradict each other")
    gate_config = _gate_config(args, profile is not None)
    _check_window_args(args, profile is not None)
    min_rows = min(DEFAULT_MIN_ROWS, args.quality_window_rows // 2)
    if gate_config is not None:
        # PSI is reported from min_rows rows on: a gate judging at minRequests needs it by then.
        min_rows = max(1, min(min_rows, gate_config.min_requests))
    metrics = RuntimeMetrics(
        quality_metrics=QualityMetrics(
            enabled=not args.no_quality,
            window_rows=args.quality_window_rows,
            min_rows=min_rows,
            breach=gate_config.thresholds if gate_config is not None else None,
        )
    )
    fallback = None
    if args.fallback_url:
        if not args.fallback_queue:
            raise SystemExit("edge-runtime serve: --fallback-url needs --fallback-queue DIR (the durable queue)")
        from edge_runtime.fallback.client import Fallback
        from edge_runtime.fallback.hardqueue import HardExampleQueue

        fallback = Fallback(
            args.fallback_url,
            args.fallback_threshold,
            args.fallback_timeout_ms / 1000.0,
            HardExampleQueue(args.fallback_queue, max_items=args.fallback_queue_max_items),
            metrics,
            protocol=args.fallback_protocol,
            binary=args.fallback_binary,
        )
    token = None
    if args.repository_token_file:
        token = Path(args.repository_token_file).read_text().strip()
    try:
        access = RepositoryAccess(args.repository_api, token)
    except ValueError as e:
        raise SystemExit(f"edge-runtime serve: {e}") from e
    cache = Path(args.model_cache) if args.model_cache else cache_of(args.model, args.sha256)
    settings = Settings(
        threads=args.threads or None,
        parallel_runs=args.parallel_runs,
        spin_in_run=args.intra_op_spinning == "in-run",
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        public_key_pem=pub,
        decryption_key=key,
        model_cache=cache,
        max_model_bytes=args.max_model_bytes,
        load_timeout_s=args.load_timeout_s,
        execution_providers=tuple([*(args.execution_providers or ()), *(args.execution_provider or ())]),
        require_accelerator=args.require_accelerator,
        provider_cache=Path(args.provider_cache) if args.provider_cache else None,
    )
    dp = DataPlane(
        settings,
        metrics,
        fallback=fallback,
        error_window=ErrorWindow(args.error_window_s, args.max_error_rate,
                                 max_latency_s=args.max_latency_ms / 1000 if args.max_latency_ms else None),
    )
    version = args.model_version or default_version(args.sha256)
    dp.load_initial(args.name, ModelSource(args.model, args.sha256, version, signature))
    if profile is not None:
        try:
            dp.set_quality_profile(args.name, profile)
        except ProfileError as e:
            raise SystemExit(
                f"edge-runtime serve: --quality-profile {args.quality_profile} does not fit the model: {e}"
            ) from e
    if gate_config is not None:
        _install_gate(dp, args, gate_config)
    separate_metrics = bool(args.metrics_port) and args.metrics_port != args.port
    decoder = Decoder()
    app = App(
        dp,
        max_body_bytes=args.max_body_bytes,
        serve_metrics=not separate_metrics,
        repository_access=access,
        decoder=decoder,
    )
    if args.grpc_port:
        _add_grpc(app, args, access, decoder, busy_poll)
    if args.quality_window_dir:
        _keep_quality_windows(app, dp, args, gate_config is not None)
    return app


def _check_window_args(args: argparse.Namespace, has_profile: bool) -> None:
    from edge_runtime.serving.quality_windows import WindowError, check_revision

    if args.quality_gate_max_psi_previous is not None and not args.quality_window_dir:
        raise SystemExit("edge-runtime serve: --quality-gate-max-psi-previous needs --quality-window-dir "
                         "(where the previous revision's window is)")
    if not args.quality_window_dir:
        return
    if args.no_quality:
        raise SystemExit("edge-runtime serve: --quality-window-dir needs the quality signals: drop --no-quality")
    if not has_profile:
        raise SystemExit("edge-runtime serve: --quality-window-dir needs --quality-profile (the window is kept on "
                         "its bins)")
    if not args.revision:
        raise SystemExit("edge-runtime serve: --quality-window-dir needs --revision (names this revision's window)")
    if not args.quality_window_interval_s > 0:
        raise SystemExit(f"edge-runtime serve: --quality-window-interval-s must be > 0, "
                         f"got {args.quality_window_interval_s}")
    try:
        check_revision(args.revision)
    except WindowError as e:
        raise SystemExit(f"edge-runtime serve: {e}") from e


def _keep_quality_windows(app: Any, dp: Any, args: argparse.Namespace, gated: bool) -> None:
    """With a gate, the previous revision's window on this node as a second reference; in any case this
    revision's window written there while serving and at shutdown (serving/quality_windows.py). Nothing about
    the directory stops the runtime: every problem is logged (and a failed write counted)."""
    import asyncio

    from edge_runtime.core.quality import ProfileError
    from edge_runtime.serving import quality_windows as qw

    d = Path(args.quality_window_dir)
    q = dp.metrics.quality
    q.windows_kept = True
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("cannot make the quality window directory", extra={"path": str(d), "error": str(e)})
    if gated:
        prev, why = qw.load_previous(d, args.revision, dp.quality_layout(args.name), q.min_rows)
        if prev is not None:
            try:
                dp.set_previous_window(args.name, prev.revision, prev.profile)
            except ProfileError as e:  # checked by load_previous already: only a model swapped in between
                prev, why = None, str(e)
        if prev is None:
            log.info("quality gate: no previous revision's window to compare with", extra={
                "model": args.name, "reason": why})
        else:
            log.info("quality gate: comparing with the previous revision's window too", extra={
                "model": args.name, "previous_revision": prev.revision, "rows": prev.profile.rows,
                "age_s": round(prev.age_s)})
    source = f"window of revision {args.revision}, model {args.name}"
    keeper = qw.WindowKeeper(d, args.revision, lambda: dp.quality_window(args.name, source), q.count_window_write,
                             args.quality_window_interval_s)

    async def start() -> None:
        keeper.start()

    async def stop() -> None:
        await asyncio.to_thread(keeper.close)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def _gate_config(args: argparse.Namespace, has_profile: bool) -> Any:
    """The quality gate the flags ask for, or None; SystemExit naming the flag that cannot work."""
    from edge_runtime.core.quality_gate import GateConfig, GateError, Thresholds

    if args.quality_gate_max_psi is None and args.quality_gate_min_mean_confidence is None \
            and args.quality_gate_max_psi_previous is None:
        return None
    if args.no_quality:
        raise SystemExit("edge-runtime serve: a quality gate needs the quality signals: drop --no-quality")
    if args.quality_gate_max_psi is not None and not has_profile:
        raise SystemExit("edge-runtime serve: --quality-gate-max-psi needs --quality-profile (the reference)")
    cfg = GateConfig(
        Thresholds(args.quality_gate_max_psi, args.quality_gate_min_mean_confidence,
                   args.quality_gate_max_psi_previous),
        args.quality_gate_min_requests, args.quality_gate_on_insufficient_traffic == "wait",
        args.quality_gate_window_s,
    )
    try:
        cfg.check()
    except GateError as e:
        raise SystemExit(f"edge-runtime serve: {e}") from e
    return cfg


def _install_gate(dp: Any, args: argparse.Namespace, cfg: Any) -> None:
    """The Pod's gate: restored from --quality-gate-state when a container of this Pod already decided it
    (so it is judged once per Pod, and never again outside its rollout); a new verdict is written there,
    and a failure also to --termination-log before the process exits with EXIT_QUALITY_GATE."""
    import time

    from edge_runtime.core.quality_gate import FAILED, Gate, Verdict, load_verdict
    from edgeai_api.exit_codes import EXIT_QUALITY_GATE

    state = Path(args.quality_gate_state) if args.quality_gate_state else None
    restored = None
    if state is not None and state.is_file():
        restored = load_verdict(state.read_text(errors="replace")[:4096])
        if restored is not None:
            log.info("quality gate already decided in this Pod", extra={"state": restored.state,
                                                                         "reason": restored.reason})

    def decided(v: Verdict) -> None:
        if state is not None:
            try:
                state.write_text(v.dumps())
            except OSError as e:
                log.warning("cannot keep the quality gate's verdict", extra={"path": str(state), "error": str(e)})
        if v.state != FAILED:
            return
        try:
            with open(args.termination_log, "w") as f:
                f.write(v.reason[:4000])
        except OSError as e:
            log.warning("cannot write the termination message", extra={"path": args.termination_log,
                                                                        "error": str(e)})
        for h in logging.getLogger().handlers:
            h.flush()
        # Abrupt on purpose: this build failed its gate; the operator rolls it back on seeing this exit.
        os._exit(EXIT_QUALITY_GATE)

    dp.set_quality_gate(args.name, Gate(cfg, time.monotonic(), restored), decided)


def _read_profile(path: str) -> Any:
    """The reference profile at `path`, read at most MAX_PROFILE_BYTES + 1 bytes; SystemExit naming the problem."""
    from edge_runtime.core.quality import MAX_PROFILE_BYTES, ProfileError, parse_profile

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise SystemExit(f"edge-runtime serve: cannot read --quality-profile {path}: {e.strerror or e}") from e
    try:
        return parse_profile(data)
    except ProfileError as e:
        raise SystemExit(f"edge-runtime serve: --quality-profile {path}: {e}") from e


def _add_grpc(app: Any, args: argparse.Namespace, access: Any, decoder: Any, busy_poll: BusyPoll | None) -> None:
    """Start the gRPC server inside the REST server's event loop, and stop it with it."""
    from edge_runtime.transport.grpc_server import GrpcService

    holder: dict[str, Any] = {}
    service = GrpcService(app.dp, repository_access=access, decoder=decoder)

    async def start() -> None:
        if args.grpc_server == "native":
            from edge_runtime.transport.grpc_h2 import GrpcH2Server

            native = GrpcH2Server(service, args.host, args.grpc_port, max_message_bytes=args.max_body_bytes,
                                  max_connections=args.max_connections, busy_poll=busy_poll)
            port = await native.start()
            holder["stop"] = lambda: native.stop(5)
        else:
            from edge_runtime.transport.grpc_server import make_server

            server, port = make_server(service, args.host, args.grpc_port, max_message_bytes=args.max_body_bytes)
            await server.start()
            holder["stop"] = lambda: server.stop(5)
        log.info("serving gRPC", extra={"host": args.host, "port": port, "http2": args.grpc_server})

    async def stop() -> None:
        if "stop" in holder:
            await holder["stop"]()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.telemetry import logs

    logs.setup(args.log_level)
    from edge_runtime.serving.heap import keep_freed_memory

    if args.heap_keep_mib and not keep_freed_memory(args.heap_keep_mib):
        log.info("--heap-keep-mib: this C library has no glibc malloc thresholds; its defaults stay")
    poll = BusyPoll(args.busy_poll_us / 1e6)
    app = build(args, poll)
    if poll.window_s > 0:
        app.dp.metrics.busy_poll(poll.seconds)
    if args.metrics_port and args.metrics_port != args.port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.host, registry=app.dp.metrics.registry)
    from edge_runtime.transport.http_limits import Limits
    from edge_runtime.transport.http_server import HttpServer
    from edgeai_api.exit_codes import EXIT_OTHER

    limits = Limits(
        app.dp.metrics,
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout_s,
        max_header_bytes=args.max_header_bytes,
    )
    server = HttpServer(
        app,
        limits,
        host=args.host,
        port=args.port,
        keep_alive_timeout_s=args.keep_alive_timeout_s,
        body_timeout_s=args.body_timeout_s,
        shutdown_timeout_s=args.shutdown_timeout_s,
        busy_poll=poll,
        direct_body_max=args.max_body_bytes,
    )
    loop = "uvloop" if _has("uvloop") else "asyncio"
    log.info(
        "serving", extra={"host": args.host, "port": args.port, "model": args.name, "http": "httptools", "loop": loop}
    )
    return 0 if server.run() else EXIT_OTHER


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
