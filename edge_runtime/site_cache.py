"""`edge-runtime site-cache`: one small caching server per site, between the devices and the origin.

    GET|HEAD /v1/blobs/sha256/<hex>?source=<origin URI>[&plain_http=1]
    GET      /v1/status    JSON: entries, bytes held, hits, misses, bytes served, from origin, hit ratio
    GET      /metrics      Prometheus (edgeai_site_cache_*)
    GET      /healthz

A hit is the stored file (ETag = the digest, ranges answered 206 so a device resumes a cut
download). A miss fetches from the origin with the runtime's own fetch (http/https, or oci://
anonymously, over plain HTTP when asked), which verifies the sha256 before the bytes are renamed
into DIR/sha256/<hex>: nothing is served or kept that did not match. Concurrent misses of one digest
share one origin fetch. The store is bounded by --max-bytes, least recently used out first.

The cache is not trusted by its clients (they hash what they get and fall back to the origin on any
failure) but it still never serves unverified bytes, so one bad origin answer cannot reach a site.
A site has tens of devices, not thousands: a thread per connection is plenty.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from edge_runtime.artifacts import fetch as fetching
from edge_runtime.artifacts.integrity import IntegrityError, hash_file
from edge_runtime.telemetry import logs
from edgeai_api import oci as oci_ref

# prometheus_client and the metrics module (numpy) are imported by the server only: this module is
# loaded by every `edge-runtime` command's parser, and `fetch` in an init container must start fast.

log = logging.getLogger("edge_runtime.site_cache")

DEFAULT_PORT = 8090
DEFAULT_MAX_BYTES = 10 << 30
SOURCE_SCHEMES = ("http", "https", "oci")
CHUNK = 1 << 20
_BLOB = re.compile(r"^/v1/blobs/sha256/([^/]*)$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class CacheError(Exception):
    """An answer other than the blob: HTTP status, a stable reason, a message naming the problem."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


@dataclass
class _Flight:
    """One origin fetch in progress; every request for its digest waits on `done`."""

    done: threading.Event = field(default_factory=threading.Event)
    error: IntegrityError | None = None


@dataclass
class Counters:
    hits: int = 0
    misses: int = 0
    origin_fetches: int = 0
    origin_failures: int = 0
    bytes_served: int = 0
    bytes_from_origin: int = 0
    evictions: int = 0


class BlobStore:
    """DIR/sha256/<hex>, verified blobs only, bounded, least recently used out first."""

    def __init__(self, root: Path, max_bytes: int, *, timeout: float = fetching.DEFAULT_TIMEOUT,
                 retries: int = fetching.DEFAULT_RETRIES, miss_wait: float = 20.0) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.retries = retries
        self.miss_wait = miss_wait
        self.counters = Counters()
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # hex -> size; last = most recently used
        self._flights: dict[str, _Flight] = {}
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        """Take over what a previous run stored, oldest use first; anything that no longer hashes to its
        name (a disk error, a hand edit) is dropped rather than served."""
        found = []
        for p in (self.root / "sha256").iterdir():
            if not _HEX.match(p.name) or not p.is_file():
                continue
            if hash_file(p).sha256 != p.name:
                log.warning("dropping a corrupt cache entry", extra={"sha256": p.name})
                p.unlink(missing_ok=True)
                continue
            st = p.stat()
            found.append((st.st_atime, p.name, st.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = size
        self._evict(keep=None)

    def _path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    def held(self) -> int:
        return sum(self._entries.values())

    def _evict(self, keep: str | None) -> None:
        # Under the lock. An evicted file may still be open for a client being served: unlinking it
        # leaves that transfer whole.
        while self.held() > self.max_bytes and len(self._entries) > (1 if keep in self._entries else 0):
            victim = next(iter(self._entries))
            if victim == keep:
                self._entries.move_to_end(victim)
                continue
            size = self._entries.pop(victim)
            self._path(victim).unlink(missing_ok=True)
            self.counters.evictions += 1
            log.info("evicted", extra={"sha256": victim, "bytes": size})

    def _open_held(self, sha256: str) -> tuple[BinaryIO, int] | None:
        # Under the lock, so eviction cannot remove the file between the look-up and the open.
        if sha256 not in self._entries:
            return None
        try:
            f = open(self._path(sha256), "rb")  # noqa: SIM115 - the caller streams and closes it
        except FileNotFoundError:
            del self._entries[sha256]  # removed behind our back: fetch it again
            return None
        self._entries.move_to_end(sha256)
        return f, os.fstat(f.fileno()).st_size

    def open(self, sha256: str, source: str, plain_http: bool, count: bool = True) -> tuple[BinaryIO, int]:
        """The verified blob, open, and its size: from the store or, on a miss, after the (shared)
        origin fetch. CacheError 502 when the origin fails, 503 + Retry-After when it takes longer
        than --miss-wait (the client asks again; the fetch goes on)."""
        with self._lock:
            held = self._open_held(sha256)
            if held is not None:
                if count:
                    self.counters.hits += 1
                return held
            if count:
                self.counters.misses += 1
            flight = self._flights.get(sha256)
            if flight is None:
                flight = self._flights[sha256] = _Flight()
                self.counters.origin_fetches += 1
                threading.Thread(target=self._fetch, args=(sha256, source, plain_http, flight),
                                 name=f"origin-{sha256[:12]}", daemon=True).start()
        if not flight.done.wait(self.miss_wait):
            raise CacheError(503, "Fetching", f"still fetching {sha256} from the origin; ask again",
                             {"Retry-After": "2"})
        if flight.error is not None:
            raise CacheError(502, flight.error.reason, f"origin fetch failed: {flight.error.reason}: "
                                                       f"{flight.error.message}")
        with self._lock:
            held = self._open_held(sha256)
        if held is None:  # evicted in the instant between its arrival and this open: vanishingly rare
            raise CacheError(503, "Evicted", f"{sha256} was evicted before it could be served; ask again",
                             {"Retry-After": "1"})
        return held

    def _fetch(self, sha256: str, source: str, plain_http: bool, flight: _Flight) -> None:
        partial = self.root / "partial" / sha256
        kept = partial.stat().st_size if partial.exists() else 0
        started = time.monotonic()
        log.info("fetching from the origin", extra={"sha256": sha256, "source": source})
        try:
            path = fetching.fetch(source, sha256, self.root, max_size=self.max_bytes, timeout=self.timeout,
                                  retries=self.retries, registry=fetching.RegistryAccess(None, plain_http))
            size = path.stat().st_size
            with self._lock:
                self._entries[sha256] = size
                self._entries.move_to_end(sha256)
                self.counters.bytes_from_origin += max(0, size - kept)
                self._evict(keep=sha256)
            log.info("fetched from the origin", extra={"sha256": sha256, "bytes": size,
                                                       "seconds": round(time.monotonic() - started, 3)})
        except IntegrityError as e:
            flight.error = e
            with self._lock:
                self.counters.origin_failures += 1
            log.warning("origin fetch failed", extra={"sha256": sha256, "source": source, "reason": e.reason,
                                                      "error": e.message})
        except Exception as e:  # a bug must still release the waiters, with its reason
            flight.error = IntegrityError("InternalError", f"{type(e).__name__}: {e}")
            with self._lock:
                self.counters.origin_failures += 1
            log.exception("origin fetch crashed", extra={"sha256": sha256})
        finally:
            with self._lock:
                self._flights.pop(sha256, None)
            flight.done.set()

    def served(self, n: int) -> None:
        with self._lock:
            self.counters.bytes_served += n

    def status(self) -> dict[str, Any]:
        with self._lock:
            c = self.counters
            asked = c.hits + c.misses
            return {
                "entries": len(self._entries),
                "bytesHeld": self.held(),
                "maxBytes": self.max_bytes,
                "hits": c.hits,
                "misses": c.misses,
                "hitRatio": round(c.hits / asked, 4) if asked else 0.0,
                "bytesServed": c.bytes_served,
                "bytesFromOrigin": c.bytes_from_origin,
                "originFetches": c.origin_fetches,
                "originFailures": c.origin_failures,
                "evictions": c.evictions,
                "fetching": sorted(self._flights),
                "blobs": [{"sha256": k, "size": v} for k, v in reversed(self._entries.items())],
            }

    def numbers(self) -> dict[str, float]:
        s = self.status()
        return {
            "hits": s["hits"], "misses": s["misses"], "origin_fetches": s["originFetches"],
            "origin_failures": s["originFailures"], "bytes_served": s["bytesServed"],
            "bytes_from_origin": s["bytesFromOrigin"], "evictions": s["evictions"], "entries": s["entries"],
            "bytes_held": s["bytesHeld"], "max_bytes": s["maxBytes"], "hit_ratio": s["hitRatio"],
        }


# --- requests -------------------------------------------------------------------


def parse_blob_request(raw_digest: str, query: str, allowed: tuple[str, ...] = ()) -> tuple[str, str, bool]:
    """(sha256, source, plain_http) of a blob request, or CacheError 400 naming what is wrong."""
    if not _HEX.match(raw_digest):
        raise CacheError(400, "InvalidDigest", f"{raw_digest!r} is not a sha256 digest (64 lowercase hex)")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    sources = params.get("source", [])
    if len(sources) != 1 or not sources[0]:
        raise CacheError(400, "MissingSource", "give the origin as ?source=<http(s) or oci URI>, exactly once")
    source = sources[0]
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme not in SOURCE_SCHEMES:
        raise CacheError(400, "UnsupportedSource",
                         f"source scheme {scheme or '(none)'!r} in {source!r}: the cache fetches http, https "
                         "or oci URIs only")
    if scheme == "oci":
        try:
            oci_ref.parse(source)
        except oci_ref.OciRefError as e:
            raise CacheError(400, "UnsupportedSource", f"source {source!r}: {e}") from e
    if allowed and not any(source.startswith(a) for a in allowed):
        raise CacheError(403, "SourceNotAllowed", f"source {source!r} is not under any --allow-source prefix")
    plain = params.get("plain_http", ["0"])[-1] in ("1", "true")
    return raw_digest, source, plain


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`bytes=N-`, `bytes=N-M` or `bytes=-K` -> (first, last) inclusive; None for no Range;
    CacheError 416 for a range this file cannot satisfy or one this server does not take."""
    if header is None:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    bad = {"Content-Range": f"bytes */{size}"}
    if not m or (not m.group(1) and not m.group(2)):
        raise CacheError(416, "BadRange", f"Range {header!r}: only one range, bytes=N-, N-M or -K", bad)
    if not m.group(1):
        k = int(m.group(2))
        if k == 0 or size == 0:
            raise CacheError(416, "BadRange", f"Range {header!r}: an empty suffix of a {size}-byte blob", bad)
        return max(0, size - k), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    if first >= size or last < first:
        raise CacheError(416, "BadRange", f"Range {header!r} is outside the blob's {size} bytes", bad)
    return first, min(last, size - 1)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], store: BlobStore, allowed: tuple[str, ...]) -> None:
        super().__init__(addr, _Handler)
        self.store = store
        self.allowed = allowed
        from prometheus_client import CollectorRegistry

        from edge_runtime.telemetry.metrics import SiteCacheCollector

        self.registry = CollectorRegistry()
        self.registry.register(SiteCacheCollector(store.numbers))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "edge-runtime-site-cache"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format % args, extra={"client": self.client_address[0]})

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            m = _BLOB.match(url.path)
            if m:
                self._blob(*parse_blob_request(m.group(1), url.query, self.server.allowed), head=head)
            elif url.path == "/v1/status":
                self._send(200, orjson.dumps(self.server.store.status()), "application/json", head=head)
            elif url.path == "/metrics":
                from prometheus_client import generate_latest
                from prometheus_client.exposition import CONTENT_TYPE_LATEST

                self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, head=head)
            elif url.path == "/healthz":
                self._send(200, b'{"status":"ok"}', "application/json", head=head)
            else:
                raise CacheError(404, "NotFound", f"no such path {url.path!r}: /v1/blobs/sha256/<hex>?source=..., "
                                                  "/v1/status, /metrics, /healthz")
        except CacheError as e:
            body = orjson.dumps({"error": e.message, "reason": e.reason})
            self._send(e.status, body, "application/json", head=head, headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a device cut off mid-transfer resumes with Range)

    def _send(self, status: int, body: bytes, ctype: str, *, head: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _blob(self, sha256: str, source: str, plain_http: bool, *, head: bool) -> None:
        store = self.server.store
        f, size = store.open(sha256, source, plain_http, count=not head)
        with f:
            rng = parse_range(self.headers.get("Range"), size)
            first, last = rng if rng is not None else (0, size - 1)
            length = last - first + 1 if size else 0
            self.send_response(206 if rng is not None else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", f'"sha256:{sha256}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            if rng is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if head:
                return
            f.seek(first)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                # Counted before the write, taken back if it fails: once the client holds the last
                # byte it may ask /v1/status at once, and must find the bytes it received counted.
                store.served(len(chunk))
                try:
                    self.wfile.write(chunk)
                except BaseException:
                    store.served(-len(chunk))
                    raise
                left -= len(chunk)


# --- the command ----------------------------------------------------------------


def serve(args: argparse.Namespace, ready: Callable[[_Server], None] | None = None) -> int:
    logs.setup(args.log_level)
    store = BlobStore(Path(args.dir), args.max_bytes, timeout=args.timeout, retries=args.retries,
                      miss_wait=args.miss_wait)
    httpd = _Server((args.host, args.port), store, tuple(args.allow_source or ()))

    def _stop(signum: int, _frame: object) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("site cache listening", extra={"host": args.host, "port": httpd.server_address[1], "dir": args.dir,
                                            "max_bytes": args.max_bytes, "entries": len(store.status()["blobs"])})
    if ready is not None:
        ready(httpd)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]i?)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a byte count such as 10737418240, 512Mi or 10Gi")
    mult = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    if int(m.group(1)) * mult <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return int(m.group(1)) * mult


def register(sub: Any) -> None:
    p = sub.add_parser("site-cache", help="a site's caching server: devices fetch through it (fetch --mirror)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--dir", default=os.environ.get("EDGEAI_SITE_CACHE_DIR", "/var/cache/edgeai-site"),
                   help="where verified blobs are kept (DIR/sha256/<hex>)")
    p.add_argument("--max-bytes", type=_size, default=DEFAULT_MAX_BYTES,
                   help="keep at most this many bytes (e.g. 20Gi), least recently used out first; "
                        "a blob larger than this is never cached (502 TooLarge: devices use the origin)")
    p.add_argument("--timeout", type=float, default=fetching.DEFAULT_TIMEOUT, help="origin timeout per attempt, s")
    p.add_argument("--retries", type=int, default=fetching.DEFAULT_RETRIES, help="origin retries (each resumes)")
    p.add_argument("--miss-wait", type=float, default=20.0,
                   help="hold a request this long for an origin fetch, then answer 503 + Retry-After "
                        "(keep it under the devices' fetch --timeout)")
    p.add_argument("--allow-source", action="append", metavar="PREFIX",
                   help="fetch only sources starting with one of these (repeatable; default: any http(s)/oci)")
    p.add_argument("--log-level", default=os.environ.get("EDGEAI_LOG_LEVEL", "info"))
    p.set_defaults(func=serve)
