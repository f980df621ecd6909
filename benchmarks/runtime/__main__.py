"""Edge runtime benchmark: raw onnxruntime vs this server (REST and gRPC) vs the stack's ceiling vs KServe and MLServer.

    python -m benchmarks runtime [--quick] [--no-peers] [--models tabular,mobilenet] [--concurrency 1,8,32]
                                 [--providers auto|none|CUDA,...] [--only-providers]

Every server serves the same ONNX file with onnxruntime on 127.0.0.1 and gets
the same request bodies from the same load generators (REST: wrk when present,
else a bounded aiohttp client; gRPC: grpcload, built here from
benchmarks/runtime/grpcload/, or nghttp2's h2load, sending gRPC-framed
ModelInfer messages), one run per (model, server, concurrency), each bounded
in time. A "ceiling" row is the same HTTP/gRPC stack answering a fixed,
precomputed answer with no model work. Before a server is measured, a sample
answer is decoded and compared with raw onnxruntime's output. The peers pin
conflicting dependencies, so each lives in its own venv under
~/.cache/edgeai/bench-venvs/, made here on first use; a peer that fails
to install or start is reported in the table and skipped. Results print as a
table and go to benchmarks/results/runtime.md.

Accelerator providers (--providers; default auto: every one the installed onnxruntime has, none on the
CPU wheel) add rows per provider for the CNN: raw session.run on that provider, and this server with the
provider list the operator gives a Pod on such a device, batching off and on (binary tensors). Their
answers are checked against the CPU's within the tolerance of GPU arithmetic (TF32 convolutions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
import sidevenv  # type: ignore[import-not-found]

from benchmarks.runtime import grpc_load

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("EDGEAI_CACHE", Path.home() / ".cache" / "edgeai"))
VENVS = CACHE / "bench-venvs"
RESULTS = ROOT / "benchmarks" / "results" / "runtime.md"

PEERS = {
    # name: pip requirements (onnxruntime/numpy: the same engine as ours)
    "kserve": ["kserve", "onnxruntime", "numpy"],
    "mlserver": ["mlserver", "onnxruntime", "numpy"],
}

WRK_SCRIPT = r"""
wrk.method = "POST"
local f = io.open(os.getenv("EDGEAI_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("EDGEAI_CTYPE")
local hl = os.getenv("EDGEAI_HLEN")
if hl ~= nil and hl ~= "" then wrk.headers["Inference-Header-Content-Length"] = hl end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EDGEAI %d %d %d %d %f %f\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Point:
    model: str
    server: str
    batching: str
    encoding: str
    concurrency: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    errors: int = 0
    note: str = ""


@dataclass
class Body:
    path: Path
    content_type: str
    header_length: int | None = None
    raw: bytes = b""  # the unframed request (gRPC: the ModelInferRequest message)


@dataclass
class Config:
    quick: bool
    duration: float
    warmup: float
    concurrency: list[int]
    models: list[str]
    peers: list[str]
    rounds: int = 2
    loadgen: str = "wrk"
    grpc: bool = True
    grpc_load: str = "grpcload"  # or "h2load"
    grpcload: Path | None = None  # the built binary
    notes: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- load generators ------------------------------------------------------------


def ensure_wrk() -> str | None:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk from apt")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True, timeout=300)
    return shutil.which("wrk")


def run_wrk(url: str, body: Body, conc: int, duration: float, script: Path) -> tuple[int, int, float, float, float]:
    env = dict(
        os.environ,
        EDGEAI_BODY=str(body.path),
        EDGEAI_CTYPE=body.content_type,
        EDGEAI_HLEN=str(body.header_length or ""),
    )
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{max(1, round(duration))}s", "--timeout", "60s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 120)
    for line in out.stdout.splitlines():
        if line.startswith("EDGEAI "):
            n, status_err, sock_err, dur_us, p50, p99 = line.split()[1:]
            secs = int(dur_us) / 1e6
            return int(n), int(status_err) + int(sock_err), int(n) / secs, float(p50) / 1000, float(p99) / 1000
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def run_aiohttp(url: str, body: Body, conc: int, duration: float) -> tuple[int, int, float, float, float]:
    import aiohttp

    data = body.path.read_bytes()
    headers = {"Content-Type": body.content_type}
    if body.header_length is not None:
        headers["Inference-Header-Content-Length"] = str(body.header_length)
    lat: list[float] = []
    errors = 0

    async def main() -> float:
        nonlocal errors
        deadline = time.perf_counter() + duration
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    async with s.post(url, data=data, headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                    lat.append(time.perf_counter() - t0)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(conc)))
            return time.perf_counter() - start

    secs = asyncio.run(main())
    lat.sort()
    return len(lat), errors, len(lat) / secs, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def ensure_h2load() -> str | None:
    path = shutil.which("h2load")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing h2load (nghttp2-client) from apt")
        subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], capture_output=True, timeout=300)
    return shutil.which("h2load")


def run_h2load(target: str, body: Body, conc: int, duration: float) -> tuple[int, int, float, float, float]:
    """gRPC unary calls over h2load: one connection per client, one call in flight on each (like wrk's -c)."""
    logf = body.path.with_suffix(".h2log")
    logf.unlink(missing_ok=True)
    url = f"http://{target}/inference.GRPCInferenceService/ModelInfer"
    cmd = [
        "h2load", "-t1", f"-c{conc}", "-m1", f"-D{max(1, round(duration))}", "--warm-up-time=1",
        "-d", str(body.path), "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"--log-file={logf}", url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    lat: list[float] = []
    errors = 0
    if logf.exists():
        for line in logf.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                if parts[1] != "200":
                    errors += 1
                lat.append(int(parts[2]) / 1000.0)
    if not lat:
        raise RuntimeError(f"h2load gave no result: {out.stdout[-400:]} {out.stderr[-300:]}")
    lat.sort()
    return len(lat), errors, len(lat) / max(1, round(duration)), lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


# --- raw onnxruntime ----------------------------------------------------------------


CPU = "CPUExecutionProvider"


def short(provider: str) -> str:
    from edge_runtime.core.providers import ProviderRequest

    return ProviderRequest(provider).short


def raw_label(provider: str = CPU) -> str:
    return "raw session.run (in-process)" + ("" if provider == CPU else f" on {short(provider)}")


def raw_point(model: dict[str, Any], kind: str, conc: int, duration: float, provider: str = CPU) -> Point:
    """Raw onnxruntime's best on these cores for `conc` one-row requests: `conc` callers at once, or (when
    that oversubscribes the cores: every run already uses all of them) one caller after another, or one
    caller per core on a session of one thread each (no run waits on its own threads: what the runtime's
    --parallel-runs does, so its rows are held to the same)."""
    best = _raw_point(model, kind, conc, duration, provider)
    if conc > 1:
        serial = _raw_point(model, kind, 1, duration, provider)
        if (serial.rps or 0) > (best.rps or 0):
            best = Point(kind, best.server, "-", "1 caller", conc, serial.p50_ms, serial.p99_ms, serial.rps)
    cores = len(os.sched_getaffinity(0))
    if provider == CPU and 1 < cores <= conc:
        per_core = _raw_point(model, kind, cores, duration, provider, threads=1)
        if (per_core.rps or 0) > (best.rps or 0):
            best = Point(kind, best.server, "-", f"{cores} callers x 1 thread", conc, per_core.p50_ms,
                         per_core.p99_ms, per_core.rps)
    return best


def _raw_point(model: dict[str, Any], kind: str, conc: int, duration: float, provider: str = CPU,
               threads: int = 0) -> Point:
    import onnxruntime as ort

    if provider == CPU:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model["path"]), opts, providers=[CPU])
    else:
        from edge_runtime.pack.variants import provider_session  # the runtime's way: libraries preloaded

        sess = provider_session(Path(model["path"]).read_bytes(), provider, threads=0,
                                cache_dir=CACHE / "bench-runtime" / "provider-cache")
    feeds = {model["input"]: model["sample"]}
    for _ in range(3):
        sess.run(None, feeds)
    lat: list[list[float]] = [[] for _ in range(conc)]
    deadline = time.perf_counter() + duration

    def loop(i: int) -> None:
        mine = lat[i]
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            sess.run(None, feeds)
            mine.append(time.perf_counter() - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    allv = sorted(x for xs in lat for x in xs)
    return Point(
        kind,
        raw_label(provider),
        "-",
        "-",
        conc,
        allv[len(allv) // 2] * 1000,
        allv[int(len(allv) * 0.99)] * 1000,
        len(allv) / secs,
    )


# --- servers ---------------------------------------------------------------------------


Starter = Callable[[dict[str, Any], str, int, Path, int], "subprocess.Popen[bytes]"]


@dataclass
class ServerSpec:
    label: str
    batching: str
    encoding: str
    start: Starter
    body: Callable[[dict[str, Any]], Body]
    proto: str = "rest"  # "grpc": measured with h2load on the gRPC port
    provider: str = "CPUExecutionProvider"


def wait_ready(port: int, name: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v2/models/{name}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not ready within {timeout:.0f}s")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"port {port} not open within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _popen(
    cmd: list[str], logf: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = open(logf, "wb")  # noqa: SIM115 - lives as long as the server
    # Own process group, so the peers' worker processes are stopped with them.
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or ROOT, env=env, start_new_session=True)


def start_edge(extra: list[str]) -> Starter:
    def start(model: dict[str, Any], name: str, port: int, logf: Path, grpc_port: int) -> subprocess.Popen[bytes]:
        import hashlib

        sha = hashlib.sha256(Path(model["path"]).read_bytes()).hexdigest()
        cmd = [
            sys.executable,
            "-m",
            "edge_runtime.cli",
            "serve",
            "--model",
            str(model["path"]),
            "--sha256",
            sha,
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--grpc-port",
            str(grpc_port),
            *extra,
        ]
        return _popen(cmd, logf)

    return start


def start_ceiling(workdir: Path, kind: str, extra: tuple[str, ...] = ()) -> Starter:
    def start(model: dict[str, Any], name: str, port: int, logf: Path, grpc_port: int) -> subprocess.Popen[bytes]:
        rest, grpc_answer = _answers(model, workdir, kind)
        cmd = [sys.executable, "-m", "benchmarks.runtime.ceiling", str(port), str(grpc_port), str(rest),
               str(grpc_answer), *extra]
        return _popen(cmd, logf)

    return start


def _answers(model: dict[str, Any], workdir: Path, kind: str) -> tuple[Path, Path]:
    """The bytes a real answer takes (REST JSON with binary output, gRPC message), from raw onnxruntime."""
    import onnxruntime as ort

    from edge_runtime.core.codec import encode_response
    from edge_runtime.core.grpc_codec import encode_infer_response
    from edge_runtime.core.protocol import InferenceResponse, OutputTensor

    sess = ort.InferenceSession(str(model["path"]), providers=["CPUExecutionProvider"])
    y = sess.run(None, {model["input"]: model["sample"]})[0]
    resp = InferenceResponse("m", "1", [OutputTensor(sess.get_outputs()[0].name, y, True)])
    rest = workdir / f"{kind}.answer.bin"
    rest.write_bytes(encode_response(resp).body)
    grpc_answer = workdir / f"{kind}.answer.grpc"
    grpc_answer.write_bytes(encode_infer_response(resp).SerializeToString())
    return rest, grpc_answer


def start_kserve(model: dict[str, Any], name: str, port: int, logf: Path, grpc_port: int) -> subprocess.Popen[bytes]:
    py = VENVS / "kserve" / "bin" / "python"
    script = str(HERE / "peers" / "kserve_server.py")
    return _popen([str(py), script, str(model["path"]), name, str(port), str(grpc_port)], logf)


def start_mlserver(batch: bool) -> Starter:
    def start(model: dict[str, Any], name: str, port: int, logf: Path, grpc_port: int) -> subprocess.Popen[bytes]:
        d = Path(tempfile.mkdtemp(prefix="mlserver-"))
        shutil.copy(HERE / "peers" / "mlserver_runtime.py", d / "peer_mlserver.py")
        settings = {
            "http_port": port,
            "grpc_port": grpc_port,
            "metrics_port": free_port(),
            "host": "127.0.0.1",
            "parallel_workers": 0,
            "debug": False,
        }
        (d / "settings.json").write_text(json.dumps(settings))
        ms: dict[str, Any] = {
            "name": name,
            "implementation": "peer_mlserver.OnnxRuntime",
            "parameters": {"uri": str(model["path"])},
        }
        if batch:
            ms.update({"max_batch_size": 32, "max_batch_time": 0.002})
        (d / "model-settings.json").write_text(json.dumps(ms))
        env = dict(os.environ, PYTHONPATH=str(d))
        return _popen([str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(d)], logf, cwd=d, env=env)

    return start


def json_body(model: dict[str, Any], workdir: Path, kind: str) -> Body:
    p = workdir / f"{kind}.json"
    if not p.exists():
        x = model["sample"]
        from edge_runtime.core.codec import encode_request

        data, _ = encode_request([(model["input"], x)])
        p.write_bytes(data)
    return Body(p, "application/json")


def binary_body(model: dict[str, Any], workdir: Path, kind: str) -> Body:
    from edge_runtime.core.codec import encode_request

    data, hlen = encode_request([(model["input"], model["sample"])], binary=True, binary_output=True)
    p = workdir / f"{kind}.bin"
    p.write_bytes(data)
    return Body(p, "application/octet-stream", hlen)


def grpc_body(model: dict[str, Any], workdir: Path, kind: str) -> Body:
    from edge_runtime.core.grpc_codec import encode_infer_request
    from edge_runtime.core.protocol import InferenceRequest, Tensor

    x = model["sample"]
    msg = encode_infer_request("m", InferenceRequest([Tensor(model["input"], "FP32", tuple(x.shape), x)]))
    raw = msg.SerializeToString()
    p = workdir / f"{kind}.grpc"
    p.write_bytes(b"\0" + len(raw).to_bytes(4, "big") + raw)  # gRPC length-prefixed message
    return Body(p, "application/grpc", None, raw)


# --- peers' virtualenvs ------------------------------------------------------------------


def ensure_venv(name: str) -> str | None:
    """Make the peer's venv on first use; returns why it is unusable, or None."""
    why: str | None = sidevenv.ensure(VENVS / name, PEERS[name], f"import {name}")
    return why


def peer_version(name: str) -> str:
    try:
        out = subprocess.run(
            [str(VENVS / name / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version('{name}'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()
    except OSError:
        return "?"


# --- the run -------------------------------------------------------------------------------


def measure(
    cfg: Config, url: str, body: Body, conc: int, script: Path, scale: float = 1.0, proto: str = "rest"
) -> tuple[int, int, float, float, float]:
    duration = cfg.duration * scale
    if proto == "grpc":
        if cfg.grpcload is not None:
            r = grpc_load.run(cfg.grpcload, url, body.path, conc, duration, warmup=1.0)
            if r.failed:
                raise RuntimeError(f"grpcload: {'; '.join(r.failed)}")
            return r.requests, r.errors, r.rps, r.p50_ms, r.p99_ms
        return run_h2load(url, body, conc, duration)  # both warm up on their own (1 s)
    if cfg.loadgen == "wrk":
        run_wrk(url, body, conc, cfg.warmup * scale, script)
        return run_wrk(url, body, conc, duration, script)
    run_aiohttp(url, body, conc, cfg.warmup * scale)
    return run_aiohttp(url, body, conc, duration)


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes] | None
    url: str
    body: Body | None
    points: list[Point]
    logf: Path


def _check_sample(url: str, body: Body, expected: Any, proto: str, provider: str = CPU) -> None:
    """One request, its answer decoded and compared with raw onnxruntime's output for the same input."""
    import numpy as np

    if proto == "grpc":
        import grpc

        from edge_runtime import oip
        from edge_runtime.core.grpc_codec import decode_infer_response

        with grpc.insecure_channel(url) as ch:
            call = ch.unary_unary(oip.method("ModelInfer"), request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
            data = call(body.raw, timeout=120)
        got = decode_infer_response(oip.ModelInferResponse.FromString(data), len(data)).outputs[0].data
    else:
        from edge_runtime.core.codec import decode_response

        headers = {"Content-Type": body.content_type}
        if body.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(body.header_length)
        req = urllib.request.Request(url, data=body.path.read_bytes(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                hl = r.headers.get("Inference-Header-Content-Length")
                got = next(iter(decode_response(r.read(), int(hl) if hl else None).values()))
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"sample request answered HTTP {e.code}") from e
    got = np.asarray(got, np.float32).reshape(expected.shape)
    # An accelerator's arithmetic (TF32 or fp16 convolutions) differs from the CPU's in the low bits.
    rtol, atol = (1e-4, 1e-5) if provider == CPU else (2e-2, 2e-3)
    if not np.allclose(got, expected, rtol=rtol, atol=atol) or (got.argmax(-1) != expected.argmax(-1)).any():
        raise RuntimeError(f"sample answer differs from raw onnxruntime's on the CPU (provider {provider})")


def start_all(cfg: Config, specs: list[ServerSpec], model: dict[str, Any], kind: str, workdir: Path) -> list[Running]:
    """Start every server for one model; a server that fails is kept with the reason in its points."""
    running: list[Running] = []
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model["path"]), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {model["input"]: model["sample"]})[0]
    for spec in specs:
        port = free_port()
        gport = free_port()
        label = "".join(ch if ch.isalnum() else "-" for ch in spec.label)
        logf = workdir / f"{label}-{spec.batching.replace('/', '')}-{spec.encoding}-{kind}.log"
        points = [Point(kind, spec.label, spec.batching, spec.encoding, c) for c in cfg.concurrency]
        url = f"127.0.0.1:{gport}" if spec.proto == "grpc" else f"http://127.0.0.1:{port}/v2/models/m/infer"
        r = Running(spec, None, url, None, points, logf)
        running.append(r)
        try:
            r.proc = spec.start(model, "m", port, logf, gport)
            wait_ready(port, "m", r.proc)
            if spec.proto == "grpc":
                wait_port(gport, r.proc)
            r.body = spec.body(model)
            if not spec.label.endswith("ceiling"):
                _check_sample(url, r.body, expected, spec.proto, spec.provider)
        except Exception as e:
            tail = logf.read_text(errors="replace").strip().splitlines()[-1:] if logf.exists() else []
            for p in points:
                p.note = f"failed: {e}; {' '.join(tail)[:120]}"
            if r.proc is not None:
                stop(r.proc)
            r.proc = None
    return running


def measure_rounds(cfg: Config, running: list[Running], kind: str, script: Path, model: dict[str, Any]) -> list[Point]:
    """Interleave servers within each round so a burst of load from elsewhere hits them all alike; keep the best.
    Raw onnxruntime on the CPU is measured the same way: once per round and concurrency, before that round's
    servers, for as long as each of them, best round kept (returned, one per concurrency). Each row gets the
    same number of chances of the same length: raw must not be the best of more, or shorter, tries than the
    servers it is the reference for (nor of fewer)."""
    # A CNN request takes tens of ms and 32 of them seconds: longer windows so that every server completes
    # many requests in each.
    scale = 2.0 if kind == "mobilenet" else 1.0
    raw: list[Point | None] = [None] * len(cfg.concurrency)
    for rnd in range(cfg.rounds):
        for i, c in enumerate(cfg.concurrency):
            log(f"{kind:9s} round {rnd + 1} {raw_label()} c={c}")
            got = raw_point(model, kind, c, cfg.duration * scale)
            best = raw[i]
            if best is None or (got.rps or 0) > (best.rps or 0):
                raw[i] = got
            for r in running:
                if r.proc is None or r.body is None:
                    continue
                p = r.points[i]
                log(
                    f"{kind:9s} round {rnd + 1} {r.spec.label:20s} batching={r.spec.batching:3s} "
                    f"{r.spec.encoding:6s} c={c}"
                )
                try:
                    n, errors, rps, p50, p99 = measure(cfg, r.url, r.body, c, script, scale, r.spec.proto)
                    if n == 0:
                        p.note = p.note or f"no response within {cfg.duration * scale:g} s"
                        continue
                except Exception as e:
                    p.note = f"failed: {e}"[:160]
                    continue
                if p.rps is None or rps > p.rps:
                    p.p50_ms, p.p99_ms, p.rps, p.errors = p50, p99, rps, errors
    return [p for p in raw if p is not None]


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(points: list[Point]) -> str:
    head = "| model | server | batching | body | conc | p50 ms | p99 ms | req/s | errors / note |\n"
    head += "|---|---|---|---|---:|---:|---:|---:|---|\n"
    rows = []
    for p in points:
        note = p.note or (str(p.errors) if p.errors else "")
        rows.append(
            f"| {p.model} | {p.server} | {p.batching} | {p.encoding} | {p.concurrency} | "
            f"{fmt(p.p50_ms, 3)} | {fmt(p.p99_ms, 3)} | {fmt(p.rps, 0)} | {note} |"
        )
    return head + "\n".join(rows) + "\n"


def _best(points: list[Point], **match: Any) -> Point | None:
    cands = [p for p in points if all(getattr(p, k) == v for k, v in match.items()) and p.rps is not None]
    return max(cands, key=lambda p: p.rps or 0, default=None)


def _setting(p: Point) -> str:
    flags = p.server.removeprefix("edge-runtime").strip()
    return f"{flags or 'one run at a time'}, batching {p.batching}"


def _best_setting(points: list[Point], kind: str, enc: str, c: int) -> Point | None:
    """This server's best row under any of its settings (each a flag a user can set: `spec.runtime`), not the
    rows that turn a feature off to show its cost (--no-quality) or run on an accelerator (their own lines)."""
    cands = [p for p in points if p.model == kind and p.encoding == enc and p.concurrency == c and p.rps
             and (p.server == "edge-runtime" or p.server.startswith("edge-runtime --"))
             and "--no-quality" not in p.server]
    return max(cands, key=lambda p: p.rps or 0, default=None)


def verdicts(points: list[Point]) -> list[str]:
    out = []
    for kind in sorted({p.model for p in points}):
        concs = sorted({p.concurrency for p in points if p.model == kind})
        for c in concs:
            raw = _best(points, model=kind, server="raw session.run (in-process)", concurrency=c)
            for enc in ("json", "binary", "grpc"):
                ours = _best_setting(points, kind, enc, c)
                ceil = _best(points, model=kind, server="stack ceiling", encoding=enc, concurrency=c)
                if ours is None or raw is None or raw.rps is None:
                    continue
                line = (f"{kind} c={c} {enc}: {ours.rps:.0f} req/s = {100 * (ours.rps or 0) / raw.rps:.0f}% of raw "
                        f"({_setting(ours)})")
                if ceil is not None and ceil.rps:
                    line += f", {100 * (ours.rps or 0) / ceil.rps:.0f}% of the stack's ceiling ({ceil.rps:.0f} req/s)"
                if c == 1 and ours.p50_ms is not None and raw.p50_ms is not None:
                    line += f"; p50 overhead over raw session.run {ours.p50_ms - raw.p50_ms:.3f} ms"
                out.append(line)
            accel_labels = {p.server for p in points if p.model == kind and p.server.startswith("edge-runtime on ")}
            for label in sorted(accel_labels):
                prov = label.removeprefix("edge-runtime on ")
                raw_p = _best(points, model=kind, server=f"{raw_label()} on {prov}", concurrency=c)
                ours = _best(points, model=kind, server=label, concurrency=c)
                if ours is None or raw_p is None or not raw_p.rps:
                    continue
                line = (f"{kind} c={c} on {prov}: {ours.rps:.0f} req/s (batching {ours.batching}) = "
                        f"{100 * (ours.rps or 0) / raw_p.rps:.0f}% of raw session.run on {prov}")
                if c == 1 and ours.p50_ms is not None and raw_p.p50_ms is not None:
                    line += f"; p50 overhead {ours.p50_ms - raw_p.p50_ms:.3f} ms"
                out.append(line)
        top_c = max(concs, default=0)
        best_ours = _best(points, model=kind, server="edge-runtime", concurrency=top_c)
        peers = [p for p in points if p.model == kind and p.server.startswith(("kserve", "mlserver"))
                 and p.concurrency == top_c and p.rps]
        best_peer = max(peers, key=lambda p: p.rps or 0, default=None)
        if best_ours and best_peer and best_peer.rps:
            out.append(
                f"{kind}: conc {top_c} best throughput {best_ours.rps:.0f} req/s vs best peer "
                f"{best_peer.rps:.0f} req/s ({best_peer.server} {best_peer.encoding}) = "
                f"{(best_ours.rps or 0) / best_peer.rps:.2f}x"
            )
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks runtime", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (a couple of minutes in all)")
    ap.add_argument("--duration", type=float, help="seconds per measured point (default 8, quick 3)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rounds", type=int, help="interleaved rounds, best kept (default 2, quick 1)")
    ap.add_argument("--models", default="tabular,mobilenet")
    ap.add_argument("--peers", default="kserve,mlserver", help="comma list, or '' for none")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-grpc", action="store_true", help="REST rows only")
    ap.add_argument("--grpc-load", choices=("grpcload", "h2load"), default="grpcload",
                    help="gRPC load generator: grpcload (Go, built here on first use) or nghttp2's h2load")
    ap.add_argument(
        "--quality", action="store_true",
        help="also measure edge-runtime with --no-quality (JSON rows), to show what quality tracking costs",
    )
    ap.add_argument(
        "--spinning", action="store_true",
        help="also measure edge-runtime with --intra-op-spinning in-run (binary and gRPC, batching on)",
    )
    ap.add_argument(
        "--parallel-runs", type=int, default=-1, metavar="K",
        help="also measure the CNN on edge-runtime with --parallel-runs K, batching off and on (binary and gRPC); "
             "default: one run per core when there are several, 0: not",
    )
    ap.add_argument(
        "--providers", default="auto",
        help="accelerator providers to add CNN rows for: auto (each one this onnxruntime has), none, or names",
    )
    ap.add_argument("--only-providers", action="store_true",
                    help="of this server, only the accelerator rows (raw CPU rows stay, as the reference)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    cfg = Config(
        quick=args.quick,
        duration=args.duration or (3.0 if args.quick else 6.0),
        warmup=1.0 if args.quick else 2.0,
        concurrency=[int(c) for c in args.concurrency.split(",") if c],
        models=[m for m in args.models.split(",") if m],
        peers=[] if args.no_peers else [p for p in args.peers.split(",") if p],
        rounds=args.rounds or (1 if args.quick else 2),
        grpc=not args.no_grpc,
        grpc_load=args.grpc_load,
    )
    from benchmarks.runtime.models import build
    from edge_runtime.pack.variants import accelerator_providers

    wanted = None if args.providers == "auto" else [] if args.providers == "none" else args.providers.split(",")
    accel, missing = accelerator_providers(wanted)
    cfg.notes += [f"{short(p)}: {why}" for p, why in missing.items()]
    if accel:
        cfg.notes.append("accelerator rows: " + ", ".join(short(p) for p in accel) + " (CNN only)")

    workdir = CACHE / "bench-runtime"
    workdir.mkdir(parents=True, exist_ok=True)
    models = build(workdir / "models")
    if ensure_wrk() is None:
        cfg.loadgen = "aiohttp"
        cfg.notes.append("wrk not found: load generator is the bounded aiohttp client")
    if cfg.grpc and cfg.grpc_load == "grpcload":
        cfg.grpcload, why = grpc_load.ensure(CACHE)
        if cfg.grpcload is None:
            cfg.grpc_load = "h2load"
            cfg.notes.append(f"grpcload: {why}; gRPC load generator is h2load")
    if cfg.grpc and cfg.grpc_load == "h2load" and ensure_h2load() is None:
        cfg.grpc = False
        cfg.notes.append("h2load not found: no gRPC rows")
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)

    peer_problem = {p: ensure_venv(p) for p in cfg.peers}
    for p, why in peer_problem.items():
        if why:
            cfg.notes.append(f"{p}: {why}")
        else:
            cfg.notes.append(f"{p} {peer_version(p)} (own venv {VENVS / p})")

    points: list[Point] = []
    for kind in cfg.models:
        model = models[kind]
        for prov in accel if kind == "mobilenet" else []:  # the CPU's: in the servers' rounds (measure_rounds)
            for c in cfg.concurrency:
                log(f"{kind:9s} {raw_label(prov)} c={c}")
                best = max((raw_point(model, kind, c, min(cfg.duration, 3.0), prov) for _ in range(cfg.rounds)),
                           key=lambda p: p.rps or 0)
                points.append(best)
        jb: Callable[[dict[str, Any]], Body] = lambda m, k=kind: json_body(m, workdir, k)  # noqa: E731
        bb: Callable[[dict[str, Any]], Body] = lambda m, k=kind: binary_body(m, workdir, k)  # noqa: E731
        gb: Callable[[dict[str, Any]], Body] = lambda m, k=kind: grpc_body(m, workdir, k)  # noqa: E731
        ceiling_body = jb if kind == "tabular" else bb
        specs = [
            ServerSpec("stack ceiling", "-", "json" if kind == "tabular" else "binary",
                       start_ceiling(workdir, kind), ceiling_body),
            ServerSpec("stack ceiling", "-", "grpc", start_ceiling(workdir, kind), gb, proto="grpc"),
            # grpcio's asyncio server, the runtime's before its own HTTP/2 (serve --grpc-server grpcio).
            ServerSpec("stack ceiling, grpcio", "-", "grpc",
                       start_ceiling(workdir, kind, ("--grpc-server", "grpcio")), gb, proto="grpc"),
            ServerSpec("edge-runtime", "off", "json", start_edge([]), jb),
            ServerSpec("edge-runtime", "off", "grpc", start_edge([]), gb, proto="grpc"),
            ServerSpec("edge-runtime", "on", "json", start_edge(["--max-batch-size", "32"]), jb),
            ServerSpec("edge-runtime", "on", "binary", start_edge(["--max-batch-size", "32"]), bb),
            ServerSpec("edge-runtime", "on", "grpc", start_edge(["--max-batch-size", "32"]), gb, proto="grpc"),
            ServerSpec("edge-runtime --grpc-server grpcio", "on", "grpc",
                       start_edge(["--max-batch-size", "32", "--grpc-server", "grpcio"]), gb, proto="grpc"),
        ]
        if args.only_providers:
            specs = []
        for prov in accel if kind == "mobilenet" else []:
            eps = ["--execution-providers", json.dumps([prov, CPU]), "--require-accelerator",
                   "--provider-cache", str(workdir / "provider-cache")]
            specs += [
                ServerSpec(f"edge-runtime on {short(prov)}", "off", "binary", start_edge(eps), bb, provider=prov),
                ServerSpec(f"edge-runtime on {short(prov)}", "on", "binary",
                           start_edge([*eps, "--max-batch-size", "32"]), bb, provider=prov),
            ]
        if args.quality:
            # The rows above track model quality (the default); these do not: the difference is its cost.
            specs += [
                ServerSpec("edge-runtime --no-quality", "off", "json", start_edge(["--no-quality"]), jb),
                ServerSpec("edge-runtime --no-quality", "on", "json",
                           start_edge(["--no-quality", "--max-batch-size", "32"]), jb),
            ]
        if args.spinning:
            # onnxruntime's workers spinning within each run (model.session_options): the CNN's wake-ups.
            spin = ["--intra-op-spinning", "in-run", "--max-batch-size", "32"]
            specs += [
                ServerSpec("edge-runtime --intra-op-spinning in-run", "on", "binary", start_edge(spin), bb),
                ServerSpec("edge-runtime --intra-op-spinning in-run", "on", "grpc", start_edge(spin), gb,
                           proto="grpc"),
            ]
        runs = len(os.sched_getaffinity(0)) if args.parallel_runs < 0 else args.parallel_runs
        if runs > 1 and kind != "tabular":  # the tabular model runs on the event loop: one run at a time
            # K runs at once, each on cores/K intra-op threads (Settings.parallel_runs): single requests, or
            # batches of what arrived meanwhile.
            par = ["--parallel-runs", str(runs)]
            label = f"edge-runtime --parallel-runs {runs}"
            specs += [
                ServerSpec(label, "off", "binary", start_edge(par), bb),
                ServerSpec(label, "off", "grpc", start_edge(par), gb, proto="grpc"),
                ServerSpec(label, "on", "binary", start_edge([*par, "--max-batch-size", "32"]), bb),
                ServerSpec(label, "on", "grpc", start_edge([*par, "--max-batch-size", "32"]), gb, proto="grpc"),
            ]
        if not cfg.grpc:
            specs = [sp for sp in specs if sp.proto != "grpc"]
        if "kserve" in cfg.peers:
            specs.append(ServerSpec("kserve ModelServer", "n/a", "json", start_kserve, jb))
            if cfg.grpc:
                specs.append(ServerSpec("kserve ModelServer", "n/a", "grpc", start_kserve, gb, proto="grpc"))
        if "mlserver" in cfg.peers:
            specs.append(ServerSpec("mlserver", "off", "json", start_mlserver(False), jb))
            specs.append(ServerSpec("mlserver", "on", "json", start_mlserver(True), jb))
            if cfg.grpc:
                specs.append(ServerSpec("mlserver", "off", "grpc", start_mlserver(False), gb, proto="grpc"))
        usable = []
        for spec in specs:
            peer = spec.label.split()[0]
            if peer_problem.get(peer):
                points += [
                    Point(kind, spec.label, spec.batching, spec.encoding, c, note=peer_problem[peer] or "")
                    for c in cfg.concurrency
                ]
            else:
                usable.append(spec)
        running = start_all(cfg, usable, model, kind, workdir)
        try:
            points += measure_rounds(cfg, running, kind, script, model)
        finally:
            for r in running:
                if r.proc is not None:
                    stop(r.proc)
        # An accelerator's raw rows once more after the servers, best kept: a burst of outside load during
        # their first measurement must not flatter the servers.
        for prov in accel if kind == "mobilenet" else []:
            for i, c in enumerate(cfg.concurrency):
                again = raw_point(model, kind, c, min(cfg.duration, 3.0), prov)
                mine = [p for p in points if p.model == kind and p.server == raw_label(prov)]
                if (again.rps or 0) > (mine[i].rps or 0):
                    points[points.index(mine[i])] = again
        points += [p for r in running for p in r.points]

    header = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load generators: {cfg.loadgen} (1 thread), gRPC {cfg.grpc_load}, "
        f"{cfg.duration:g} s per point after {cfg.warmup:g} s warm-up; "
        f"all servers of a model up at once, measured interleaved in {cfg.rounds} round(s), raw session.run "
        "first in each, best round kept for every row (the machine is shared: interleaving spreads outside load "
        "over all of them alike).",
        "Models: tabular MLP [N,16]->[N,3]; MobileNetV2-sized CNN [N,3,224,224]->[N,1000] (3.5 M params). "
        "Every request carries one row (batch 1). Batching on: --max-batch-size 32, no added delay "
        "(MLServer: max_batch_size 32, max_batch_time 2 ms).",
        *cfg.notes,
    ]
    text = table(points)
    summary = verdicts(points)
    print()
    print("\n".join(header))
    print()
    print(text)
    print("\n".join(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "### Edge runtime benchmark\n\n"
        + "\n".join(f"- {h}" for h in header)
        + "\n\n"
        + text
        + "\n"
        + "\n".join(f"- {s}" for s in summary)
        + "\n"
    )
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
