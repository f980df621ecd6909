"""The site cache tier (issue 16): bytes the origin serves for one model rolled out to N devices at S
sites, and the wall time of that rollout's fetches, without and with a cache per site, in one run.

    python -m benchmarks sitecache [--devices 24] [--sites 3] [--concurrency 8] [--hidden 1024]
                                   [--origin-mbit 50]
    python -m benchmarks sitecache --real-edge [--plane sitecache-edge] [--reps 3] [--model-mib 32]
                                   [--origin-mbit 50] [--keep] [--no-operator]

Real parts: an origin HTTP server here that counts every byte it sends; S real `edge-runtime site-cache`
processes; N real `edge-runtime fetch` processes (at most --concurrency at a time, as a wave of
init containers would), device i at site i mod S, each into its own content-addressed cache, verified.
The model is the zoo's tabular MLP made a few MB (--hidden). The origin's uplink is shared and limited
to --origin-mbit (a token bucket; 0: unlimited) because the point of a site cache is the WAN link
between the cloud and a site: on loopback alone every fetch is as fast as process start-up.
Target: the origin serves S x the artifact with the cache, N x without.

--real-edge: time to fetch on a real KubeEdge node, from the origin and through a site cache on a miss
and on a hit (benchmarks/sitecache/real_edge.py says how).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import text_table

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 64 << 10


def log(msg: str) -> None:
    print(f"[bench sitecache] {msg}", file=sys.stderr, flush=True)


class Origin(http.server.ThreadingHTTPServer):
    """Serves one file with Range, through a shared uplink of `mbit` Mbit/s; counts bytes and GETs."""

    daemon_threads = True

    def __init__(self, data: bytes, mbit: float, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.data = data
        self.rate = mbit * 1e6 / 8 if mbit > 0 else 0.0  # bytes per second
        self.lock = threading.Lock()
        self.next_free = 0.0
        self.bytes_sent = 0
        self.gets = 0

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = self.gets = 0

    def pace(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + n / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Origin

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.gets += 1
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(srv.data) - 1}/{len(srv.data)}")
        else:
            self.send_response(200)
        body = memoryview(srv.data)[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), CHUNK):
            chunk = body[i:i + CHUNK]
            srv.pace(len(chunk))
            self.wfile.write(chunk)
            with srv.lock:
                srv.bytes_sent += len(chunk)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cache(tmp: Path, i: int, host: str = "127.0.0.1") -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "edge_runtime.cli", "site-cache", "--host", host, "--port", str(port),
           "--dir", str(tmp / f"site-{i}"), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"site cache {i} did not start")


def rollout(tmp: Path, uri: str, sha: str, devices: int, mirrors: list[str],
            concurrency: int) -> tuple[float, list[float]]:
    """N fetches, device i through mirrors[i % S] when given; (wall seconds, per-device seconds)."""

    def one(i: int) -> float:
        cmd = [sys.executable, "-m", "edge_runtime.cli", "fetch", uri, "--sha256", sha,
               "--cache", str(tmp / f"device-{i}")]
        if mirrors:
            cmd += ["--mirror", mirrors[i % len(mirrors)]]
        t = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"device {i}: fetch exited {p.returncode}: {p.stderr[-500:]}")
        return time.monotonic() - t

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        each = list(pool.map(one, range(devices)))
    return time.monotonic() - t0, each


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks sitecache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=24)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024, help="the tabular model's hidden width (size ~ 4 x hidden^2)")
    ap.add_argument("--origin-mbit", type=float, default=50.0, help="the origin's shared uplink (0: unlimited)")
    ap.add_argument("--real-edge", action="store_true", help="time fetches on a real KubeEdge node instead")
    ap.add_argument("--plane", default="sitecache-edge", help="with --real-edge: the local plane's name")
    ap.add_argument("--reps", type=int, default=3, help="with --real-edge: repetitions of each path")
    ap.add_argument("--model-mib", type=float, default=32.0, help="with --real-edge: the model's size")
    ap.add_argument("--keep", action="store_true", help="with --real-edge: leave the plane up afterwards")
    ap.add_argument("--no-operator", action="store_true", help="with --real-edge: skip the rows of model servers "
                    "the operator places (one run of each path, timed in whole seconds)")
    args = ap.parse_args(argv)
    if args.real_edge:
        from benchmarks.sitecache import real_edge

        return real_edge.run(args.plane, args.reps, args.model_mib, args.origin_mbit, args.keep,
                             operator=not args.no_operator)

    from edge_runtime.models_zoo import build_tabular

    with tempfile.TemporaryDirectory(prefix="bench-sitecache-") as d:
        tmp = Path(d)
        model = build_tabular(tmp / "model.onnx", hidden=args.hidden)
        data = model.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        size = len(data)
        origin = Origin(data, args.origin_mbit)
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{origin.server_address[1]}/model.onnx"
        log(f"model {size / 1e6:.2f} MB; {args.devices} devices at {args.sites} sites, {args.concurrency} fetches "
            f"at a time; origin uplink {args.origin_mbit or 'unlimited'} Mbit/s")
        rows = []
        try:
            log("rollout without a site cache")
            wall, each = rollout(tmp / "without", uri, sha, args.devices, [], args.concurrency)
            rows.append(("origin only", origin.bytes_sent, origin.gets, args.devices * size, wall, each))
            origin.reset()
            caches = [start_cache(tmp, i) for i in range(args.sites)]
            try:
                log("rollout through a cache per site (cold caches)")
                wall, each = rollout(tmp / "with", uri, sha, args.devices, [u for _, u in caches], args.concurrency)
                rows.append(("site cache", origin.bytes_sent, origin.gets, args.sites * size, wall, each))
            finally:
                for proc, _ in caches:
                    proc.terminate()
                    proc.wait(10)
        finally:
            origin.shutdown()
            origin.server_close()

    # The uplink's busy time follows from the bytes and the rate (the token bucket's own arithmetic):
    # what the cache saves on the link a site shares, apart from this machine's process start-up.
    rate = args.origin_mbit * 1e6 / 8
    head = ["MODE", "ORIGIN BYTES", "x ARTIFACT", "TARGET", "ORIGIN GETS", "UPLINK BUSY s", "WALL s", "FETCH p50 s",
            "FETCH max s"]
    table = [[mode, f"{b:,}", f"{b / size:.2f}", f"{t / size:.0f} x", str(g), f"{b / rate:.2f}" if rate else "-",
              f"{w:.2f}", f"{statistics.median(e):.2f}", f"{max(e):.2f}"] for mode, b, g, t, w, e in rows]
    print(f"\nsite cache: one {size / 1e6:.2f} MB model to {args.devices} devices at {args.sites} sites "
          f"({args.concurrency} concurrent fetches, origin uplink "
          f"{f'{args.origin_mbit:g} Mbit/s' if args.origin_mbit else 'unlimited'}; {os.cpu_count()} CPUs)")
    print(text_table(head, table))
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} at the end: WALL and FETCH include each fetch's process start-up and "
          "hashing, which compete for the CPUs)")
    ok = rows[1][1] == args.sites * size
    print(f"\norigin bytes with the cache {'==' if ok else '!='} sites x artifact ({args.sites} x {size:,})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
