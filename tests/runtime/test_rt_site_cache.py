"""`edge-runtime site-cache` and `edge-runtime fetch --mirror`, as real processes over real HTTP.

The origin is a small HTTP server in this process that counts what it sends, so "the origin served
it once" is a number it saw, not a guess. Nothing here waits on a clock for an outcome: concurrency
is forced by an origin that holds its answer until every client has asked.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.artifacts import oci
from tests.runtime.conftest import ROOT, Response, free_port, metric_value, request
from tests.runtime.oci_registry import REGISTRY_BIN, running_registry

BLOB = os.urandom(400_000)
DIGEST = hashlib.sha256(BLOB).hexdigest()


class Origin(http.server.ThreadingHTTPServer):
    """Serves `blobs` (path -> bytes) with Range; counts GETs and bytes per path; can serve wrong bytes,
    or hold every answer until `release` is set."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.blobs: dict[str, bytes] = {"/model.onnx": BLOB}
        self.gets: dict[str, int] = {}
        self.bytes_sent = 0
        self.wrong = False
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def url(self, path: str = "/model.onnx") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    server: Origin

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.gets[self.path] = srv.gets.get(self.path, 0) + 1
        srv.release.wait(60)
        data = srv.blobs.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if srv.wrong:
            data = bytes(len(data))
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with srv.lock:
            srv.bytes_sent += len(body)


@pytest.fixture
def origin() -> Iterator[Origin]:
    srv = Origin()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


class SiteCache:
    """One `edge-runtime site-cache` process."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.dir = tmp / f"site-cache-{self.port}"
        self.log = tmp / f"site-cache-{self.port}.log"
        cmd = [sys.executable, "-m", "edge_runtime.cli", "site-cache", "--host", "127.0.0.1",
               "--port", str(self.port), "--dir", str(self.dir), *extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=ROOT,
                                         env=dict(os.environ, EDGEAI_LOG_LEVEL="info"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if request(self.port, "GET", "/healthz", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"site cache not live: {self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blob(self, source: str, digest: str = DIGEST, method: str = "GET",
             headers: dict[str, str] | None = None) -> Response:
        from urllib.parse import quote

        return request(self.port, method, f"/v1/blobs/sha256/{digest}?source={quote(source, safe='')}",
                       headers=headers, timeout=60)

    def status(self) -> dict[str, Any]:
        r = request(self.port, "GET", "/v1/status")
        assert r.status == 200
        return dict(r.json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def site_cache(tmp_path: Path) -> Iterator[Any]:
    started: list[SiteCache] = []

    def start(*extra: str) -> SiteCache:
        started.append(SiteCache(tmp_path, *extra))
        return started[-1]

    yield start
    for c in started:
        c.stop()


def fetch(cache: Path, uri: str, *extra: str, digest: str = DIGEST,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "fetch", uri, "--sha256", digest, "--cache", str(cache),
           "--timeout", "10", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})


# --- the cache server ---------------------------------------------------------------------------


def test_miss_then_hit_the_origin_serves_once(origin: Origin, site_cache: Any) -> None:
    c = site_cache()
    first = c.blob(origin.url())
    assert first.status == 200 and first.body == BLOB
    assert first.headers["etag"] == f'"sha256:{DIGEST}"' and first.headers["accept-ranges"] == "bytes"
    second = c.blob(origin.url())
    assert second.status == 200 and second.body == BLOB
    assert origin.gets == {"/model.onnx": 1} and origin.bytes_sent == len(BLOB)
    assert (c.dir / "sha256" / DIGEST).read_bytes() == BLOB
    s = c.status()
    assert (s["hits"], s["misses"], s["entries"], s["bytesHeld"]) == (1, 1, 1, len(BLOB))
    assert s["bytesServed"] == 2 * len(BLOB) and s["bytesFromOrigin"] == len(BLOB) and s["hitRatio"] == 0.5
    metrics = request(c.port, "GET", "/metrics").body.decode()
    assert metric_value(metrics, "edgeai_site_cache_hits_total") == 1
    assert metric_value(metrics, "edgeai_site_cache_bytes_served_total") == 2 * len(BLOB)
    assert metric_value(metrics, "edgeai_site_cache_hit_ratio") == 0.5
    assert metric_value(metrics, "edgeai_site_cache_bytes_held") == len(BLOB)


def test_ranges_resume_and_head(origin: Origin, site_cache: Any) -> None:
    c = site_cache()
    head = c.blob(origin.url(), method="HEAD")  # a HEAD warms the cache too
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(BLOB))
    tail = c.blob(origin.url(), headers={"Range": "bytes=1000-"})
    assert tail.status == 206 and tail.body == BLOB[1000:]
    assert tail.headers["content-range"] == f"bytes 1000-{len(BLOB) - 1}/{len(BLOB)}"
    mid = c.blob(origin.url(), headers={"Range": "bytes=10-19"})
    assert mid.status == 206 and mid.body == BLOB[10:20]
    suffix = c.blob(origin.url(), headers={"Range": "bytes=-5"})
    assert suffix.status == 206 and suffix.body == BLOB[-5:]
    past = c.blob(origin.url(), headers={"Range": f"bytes={len(BLOB)}-"})
    assert past.status == 416 and past.headers["content-range"] == f"bytes */{len(BLOB)}"
    assert past.json()["reason"] == "BadRange"
    assert c.blob(origin.url(), headers={"Range": "bytes=0-1,5-6"}).status == 416
    assert origin.gets == {"/model.onnx": 1}


def test_concurrent_clients_of_one_digest_make_one_origin_fetch(origin: Origin, site_cache: Any) -> None:
    c = site_cache()
    origin.release.clear()  # the origin answers nobody until every client is waiting on the cache
    results: list[Response] = []
    lock = threading.Lock()

    def client() -> None:
        r = c.blob(origin.url())
        with lock:
            results.append(r)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while c.status()["misses"] < 8:
        assert time.monotonic() < deadline, c.status()
        time.sleep(0.05)
    origin.release.set()
    for t in threads:
        t.join(60)
    assert [r.status for r in results] == [200] * 8 and all(r.body == BLOB for r in results)
    assert origin.gets == {"/model.onnx": 1}
    assert c.status()["originFetches"] == 1


def test_origin_serving_wrong_bytes_is_a_502_and_nothing_is_stored(origin: Origin, site_cache: Any) -> None:
    c = site_cache()
    origin.wrong = True
    r = c.blob(origin.url())
    assert r.status == 502
    assert r.json()["reason"] == "DigestMismatch" and DIGEST in r.json()["error"]
    assert list((c.dir / "sha256").iterdir()) == []
    assert not any(p.stat().st_size for p in (c.dir / "partial").glob("*"))
    s = c.status()
    assert s["entries"] == 0 and s["originFailures"] == 1 and s["bytesServed"] == 0
    # The origin fixed: the next request fetches again and serves the right bytes.
    origin.wrong = False
    assert c.blob(origin.url()).body == BLOB


def test_origin_down_is_a_502_naming_it(site_cache: Any) -> None:
    c = site_cache("--retries", "0", "--timeout", "2")
    r = c.blob(f"http://127.0.0.1:{free_port()}/model.onnx")
    assert r.status == 502 and r.json()["reason"] == "Unreachable"


def test_bad_requests_are_400s_naming_the_problem(origin: Origin, site_cache: Any) -> None:
    c = site_cache()
    r = request(c.port, "GET", f"/v1/blobs/sha256/{'X' * 64}?source={origin.url()}")
    assert (r.status, r.json()["reason"]) == (400, "InvalidDigest")
    r = request(c.port, "GET", f"/v1/blobs/sha256/{DIGEST}")
    assert (r.status, r.json()["reason"]) == (400, "MissingSource")
    r = c.blob("file:///etc/passwd")
    assert (r.status, r.json()["reason"]) == (400, "UnsupportedSource") and "'file'" in r.json()["error"]
    r = c.blob("oci://no-repository")
    assert (r.status, r.json()["reason"]) == (400, "UnsupportedSource")
    assert request(c.port, "GET", "/v2/anything").status == 404
    assert origin.gets == {}


def test_allow_source_limits_what_the_cache_fetches(origin: Origin, site_cache: Any) -> None:
    c = site_cache("--allow-source", "https://models.example.com/")
    r = c.blob(origin.url())
    assert (r.status, r.json()["reason"]) == (403, "SourceNotAllowed") and origin.gets == {}


def test_least_recently_used_blob_is_evicted_under_max_bytes(origin: Origin, site_cache: Any) -> None:
    blobs = {f"/m{i}": os.urandom(100_000) for i in range(3)}
    origin.blobs.update(blobs)
    digests = {p: hashlib.sha256(b).hexdigest() for p, b in blobs.items()}
    c = site_cache("--max-bytes", "250000")
    for p in ("/m0", "/m1"):
        assert c.blob(origin.url(p), digests[p]).status == 200
    assert c.blob(origin.url("/m0"), digests["/m0"]).status == 200  # m0 used last: m1 is the oldest now
    assert c.blob(origin.url("/m2"), digests["/m2"]).status == 200
    held = {x.name for x in (c.dir / "sha256").iterdir()}
    assert held == {digests["/m0"], digests["/m2"]}
    s = c.status()
    assert s["entries"] == 2 and s["bytesHeld"] == 200_000 and s["evictions"] == 1
    assert c.blob(origin.url("/m1"), digests["/m1"]).body == blobs["/m1"]
    assert origin.gets["/m1"] == 2 and origin.gets["/m0"] == 1
    # A blob larger than the whole cache is refused; devices go to the origin for it.
    origin.blobs["/big"] = os.urandom(300_000)
    r = c.blob(origin.url("/big"), hashlib.sha256(origin.blobs["/big"]).hexdigest())
    assert (r.status, r.json()["reason"]) == (502, "TooLarge")


def test_a_restarted_cache_keeps_what_it_holds(origin: Origin, site_cache: Any, tmp_path: Path) -> None:
    c = site_cache()
    assert c.blob(origin.url()).status == 200
    c.stop()
    again = site_cache("--dir", str(c.dir))
    assert again.status()["entries"] == 1
    assert again.blob(origin.url()).body == BLOB and origin.gets == {"/model.onnx": 1}


@pytest.mark.skipif(REGISTRY_BIN is None, reason="needs Debian's docker-registry (make test installs it)")
def test_oci_source_over_plain_http(site_cache: Any, tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    with running_registry(tmp_path / "registry") as reg:
        client = oci.Registry(reg.addr, plain_http=True)
        client.push_blob("models/m", BLOB, "application/vnd.edgeai.model.onnx.v1")
        uri = f"oci://{reg.addr}/models/m:1.0"
        c = site_cache()
        r = request(c.port, "GET", f"/v1/blobs/sha256/{DIGEST}?source={uri}&plain_http=1")
        assert r.status == 200 and r.body == BLOB
        out = fetch(tmp_path / "dev", uri, "--plain-http", "--mirror", c.url)
        assert out.returncode == 0, out.stderr
        assert c.status()["hits"] == 1


# --- fetch through the cache --------------------------------------------------------------------


def test_fetch_through_the_mirror(origin: Origin, site_cache: Any, tmp_path: Path) -> None:
    c = site_cache()
    for device in ("dev-a", "dev-b", "dev-c"):
        out = fetch(tmp_path / device, origin.url(), "--mirror", c.url)
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.strip()).read_bytes() == BLOB
    assert origin.gets == {"/model.onnx": 1}
    s = c.status()
    assert (s["hits"], s["misses"]) == (2, 1)
    # The environment variable does the same (the operator sets it from a ConfigMap), first mirror dead.
    dead = f"http://127.0.0.1:{free_port()}"
    out = fetch(tmp_path / "dev-d", origin.url(), env={"EDGEAI_FETCH_MIRROR": f"{dead}, {c.url}"})
    assert out.returncode == 0, out.stderr
    assert origin.gets == {"/model.onnx": 1} and c.status()["hits"] == 3


def test_fetch_resumes_through_the_mirror(origin: Origin, site_cache: Any, tmp_path: Path) -> None:
    c = site_cache()
    partial = tmp_path / "dev" / "partial" / DIGEST
    partial.parent.mkdir(parents=True)
    partial.write_bytes(BLOB[:150_000])  # a transfer a killed init container left behind
    out = fetch(tmp_path / "dev", origin.url(), "--mirror", c.url)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dev" / "sha256" / DIGEST).read_bytes() == BLOB
    assert c.status()["bytesServed"] == len(BLOB) - 150_000


def test_mirror_down_falls_back_to_the_origin(origin: Origin, tmp_path: Path) -> None:
    out = fetch(tmp_path / "dev", origin.url(), "--mirror", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dev" / "sha256" / DIGEST).read_bytes() == BLOB
    assert origin.gets == {"/model.onnx": 1}
    assert "falling back" in out.stderr


def test_mirror_serving_wrong_bytes_falls_back_and_is_still_verified(origin: Origin, tmp_path: Path) -> None:
    liar = Origin()  # answers any path with zeros of the blob's length
    liar.blobs = {}
    liar.wrong = True

    class _Any(dict[str, bytes]):
        def get(self, key: str, default: Any = None) -> bytes:  # type: ignore[override]
            return BLOB

    liar.blobs = _Any()
    threading.Thread(target=liar.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{liar.server_address[1]}"
        out = fetch(tmp_path / "dev", origin.url(), "--mirror", mirror)
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "dev" / "sha256" / DIGEST).read_bytes() == BLOB
        assert sum(liar.gets.values()) == 1 and origin.gets == {"/model.onnx": 1}
        assert "DigestMismatch" in out.stderr
    finally:
        liar.shutdown()
        liar.server_close()


def test_fetch_waits_on_a_busy_cache_rather_than_going_to_the_origin(
    origin: Origin, site_cache: Any, tmp_path: Path
) -> None:
    c = site_cache("--miss-wait", "0.2")
    origin.release.clear()  # the cache's origin fetch outlasts --miss-wait: the cache answers 503s

    def released_once_busy() -> None:
        deadline = time.monotonic() + 60
        while c.status()["misses"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        origin.release.set()

    t = threading.Thread(target=released_once_busy)
    t.start()
    out = fetch(tmp_path / "dev", origin.url(), "--mirror", c.url)
    t.join(60)
    assert out.returncode == 0, out.stderr
    assert origin.gets == {"/model.onnx": 1} and c.status()["originFetches"] == 1
