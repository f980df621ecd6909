"""Fetch an artifact into a content-addressed cache: DIR/sha256/<digest>.

- hashes while streaming (one pass, no second read);
- resumes: bytes already received stay in DIR/partial/<digest> and the next
  attempt (a retry, or a later run after the process was killed) asks for the
  rest with an HTTP Range request;
- writes atomically: the final name appears only by rename after fsync, and
  only once the digest matched, so DIR/sha256/<digest> is always complete and
  correct; on a mismatch the received bytes are deleted;
- a cached digest costs no network I/O (the cached file is re-hashed locally,
  so on-disk corruption is caught and repaired);
- concurrent fetches of one digest on one node take an exclusive file lock,
  so one downloads while the others wait and then find it cached;
- oci://REGISTRY/REPO[...] pulls the blob `sha256` from REPO through the registry's HTTP API
  (artifacts/oci.py), by that digest: the tag or manifest digest in the URI is what the operator
  verified, and never decides which bytes arrive here;
- mirrors (a site cache, `edge-runtime site-cache`) are tried first when given:
  MIRROR/v1/blobs/sha256/<digest>?source=<uri>. A mirror is not trusted: its
  bytes are hashed exactly like the origin's, and any failure of it (refused,
  timeout, 5xx, wrong bytes) falls back to the origin, so the entry in the
  cache is the same either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO

from edge_runtime.artifacts import oci
from edge_runtime.artifacts.integrity import (
    CHUNK,
    DigestMismatch,
    IntegrityError,
    StreamHasher,
    check_sha256,
    hash_file,
    verify_signature,
)
from edgeai_api import oci as oci_ref

log = logging.getLogger("edge_runtime.fetch")

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 4
# A mirror gets one retry (a resume of a cut transfer) before the origin is tried: a dead cache must cost
# seconds, not the origin's whole retry budget.
MIRROR_RETRIES = 1
# How long a mirror that answers "busy" (503 + Retry-After: it is still fetching from the origin) is waited
# on before the origin is tried instead. The wait is the point of the cache: one origin fetch per site.
MIRROR_BUSY_WAIT = 900.0
MIRROR_SCHEMES = ("http", "https", "oci")


def cache_path(cache_dir: str | os.PathLike[str], sha256: str) -> Path:
    return Path(cache_dir) / "sha256" / check_sha256(sha256)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A network failure worth retrying (the bytes received so far are kept); one class for both clients.
_Transient = oci.Transient


RegistryAccess = oci.RegistryAccess


class _Busy(_Transient):
    """503 with Retry-After: the server is working on it (a site cache fetching from the origin)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.1, min(float(value), 30.0)) if value else None
    except ValueError:
        return None  # an HTTP date: not something a cache of ours sends; treat as a plain 503


def _open_oci(uri: str, sha256: str, offset: int, timeout: float,
              access: RegistryAccess) -> tuple[BinaryIO, int, int | None]:
    try:
        ref = oci_ref.parse(uri)
    except oci_ref.OciRefError as e:
        raise IntegrityError("Unreachable", str(e)) from e
    reg = oci.connect(ref, access, timeout=timeout)
    stream, start, total = reg.open_blob(ref.repository, f"sha256:{sha256}", offset)
    return stream, start, total


def _open(uri: str, offset: int, timeout: float, sha256: str = "",
          access: RegistryAccess | None = None) -> tuple[BinaryIO, int, int | None]:
    """Open `uri` from byte `offset`; returns (stream, actual start offset, total size if known)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "oci":
        return _open_oci(uri, sha256, offset, timeout, access or RegistryAccess())
    if scheme == "file":
        path = urllib.request.url2pathname(urllib.parse.urlsplit(uri).path)
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed there
        except FileNotFoundError as e:
            raise IntegrityError("Unreachable", f"{uri}: no such file") from e
        except OSError as e:
            raise IntegrityError("Unreachable", f"{uri}: {e.strerror}") from e
        size = os.fstat(f.fileno()).st_size
        f.seek(min(offset, size))
        return f, min(offset, size), size
    if scheme not in ("http", "https"):
        raise IntegrityError("Unreachable",
                             f"unsupported URI scheme {scheme!r} in {uri}: use http, https, file or oci")
    req = urllib.request.Request(uri, headers={"User-Agent": "edge-runtime-fetch"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing left to send: what we have is the whole artifact (or garbage the digest will catch).
            return io.BytesIO(b""), offset, offset
        busy = _retry_after(e.headers.get("Retry-After")) if e.code == 503 and e.headers else None
        if busy is not None:
            raise _Busy(f"HTTP 503 from {uri}: {_error_text(e)}", busy) from e
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} from {uri}") from e
        raise IntegrityError("Unreachable", f"HTTP {e.code} {e.reason} from {uri}") from e
    except (urllib.error.URLError, TimeoutError, OSError, HTTPException) as e:
        raise _Transient(f"{uri}: {getattr(e, 'reason', e)}") from e
    return oci.ranged_stream(resp, offset, uri)


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        return e.read(512).decode("utf-8", errors="replace").strip() or str(e.reason)
    except (OSError, HTTPException):
        return str(e.reason)


def _download(uri: str, partial: Path, sha256: str, max_size: int | None, timeout: float, retries: int,
              access: RegistryAccess | None = None, busy_wait: float = 0.0) -> None:
    """Fill `partial` with the whole artifact, resuming and retrying; verify the digest.

    A "busy" answer (503 + Retry-After) is waited on for up to `busy_wait` seconds without using up
    the retries; after that it counts as any other transient failure."""
    attempt = 0
    busy_until = time.monotonic() + busy_wait
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if max_size is not None and have > max_size:
            partial.unlink()
            have = 0
        try:
            stream, start, total = _open(uri, have, timeout, sha256, access)
        except _Busy as e:
            if time.monotonic() + e.retry_after < busy_until:
                log.info("%s is busy; waiting %.1fs", uri, e.retry_after, extra={"uri": uri, "error": str(e)})
                time.sleep(e.retry_after)
                continue
            attempt += 1
            if attempt > retries:
                raise IntegrityError("Unreachable", f"giving up after {attempt} attempts: {e}") from e
            time.sleep(min(0.2 * 2**attempt, 5.0))
            continue
        except _Transient as e:
            attempt += 1
            if attempt > retries:
                raise IntegrityError("Unreachable", f"giving up after {attempt} attempts: {e}") from e
            log.warning("fetch attempt failed; retrying", extra={"uri": uri, "error": str(e), "attempt": attempt})
            time.sleep(min(0.2 * 2**attempt, 5.0))
            continue
        try:
            if total is not None and max_size is not None and total > max_size:
                raise IntegrityError("TooLarge", f"{uri} is {total} bytes, over the limit of {max_size} bytes")
            hasher = StreamHasher(max_size)
            mode = "r+b" if start else "wb"
            if not partial.exists():
                mode = "wb"
            with open(partial, mode) as out:
                if start:
                    # Resume: the kept bytes go through the same hasher first.
                    left = start
                    while left:
                        chunk = out.read(min(CHUNK, left))
                        if not chunk:
                            break
                        hasher.update(chunk)
                        left -= len(chunk)
                    out.seek(start)
                    out.truncate()
                try:
                    while True:
                        chunk = stream.read(CHUNK)
                        if not chunk:
                            break
                        hasher.update(chunk)
                        out.write(chunk)
                except (OSError, TimeoutError, HTTPException) as e:
                    out.flush()
                    os.fsync(out.fileno())
                    attempt += 1
                    if attempt > retries:
                        raise IntegrityError(
                            "Unreachable", f"giving up after {attempt} attempts: transfer from {uri} broke: {e}"
                        ) from e
                    log.warning(
                        "transfer interrupted; will resume",
                        extra={"uri": uri, "have": hasher.size, "error": str(e) or type(e).__name__},
                    )
                    time.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                out.flush()
                os.fsync(out.fileno())
        finally:
            stream.close()
        if total is not None and hasher.size < total:
            attempt += 1
            if attempt > retries:
                raise IntegrityError("Unreachable", f"{uri} ended after {hasher.size} of {total} bytes")
            continue
        digest = hasher.digest()
        if digest.sha256 != sha256:
            partial.unlink(missing_ok=True)
            raise DigestMismatch(sha256, digest.sha256, uri)
        return


def fetch(
    uri: str,
    sha256: str,
    cache_dir: str | os.PathLike[str],
    *,
    signature: str | None = None,
    public_key_pem: bytes | None = None,
    max_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    registry: RegistryAccess | None = None,
    mirrors: Sequence[str] = (),
) -> Path:
    """Make DIR/sha256/<sha256> hold the verified artifact from `uri`; return its path.

    `mirrors` (site caches) are tried first, in order; see `mirror_url`."""
    check_sha256(sha256)
    if signature is not None or public_key_pem is not None:
        if signature is None or public_key_pem is None:
            raise IntegrityError("BadSignature", "a signature needs both --signature and --public-key-file")
        # Either format signs the digest, so it is checked before any byte moves.
        verify_signature(public_key_pem, sha256, signature)
    cache = Path(cache_dir)
    final = cache_path(cache, sha256)
    partial = cache / "partial" / sha256
    final.parent.mkdir(parents=True, exist_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with _locked(cache / "locks" / f"{sha256}.lock"):
        if final.exists():
            if hash_file(final).sha256 == sha256:
                return final
            log.warning("cached artifact is corrupt; fetching it again", extra={"path": str(final)})
            final.unlink()
        _download_via_mirrors(uri, partial, sha256, max_size, timeout, retries, registry, mirrors)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        with contextlib.suppress(OSError):
            _fsync_dir(partial.parent)
    return final


def mirror_url(mirror: str, sha256: str, uri: str, plain_http: bool = False) -> str:
    """The URL of `uri`'s blob on a site cache: MIRROR/v1/blobs/sha256/<digest>?source=<uri>."""
    query = {"source": uri} | ({"plain_http": "1"} if plain_http else {})
    return f"{mirror.rstrip('/')}/v1/blobs/sha256/{sha256}?{urllib.parse.urlencode(query)}"


def _mirrors_for(uri: str, mirrors: Sequence[str], access: RegistryAccess | None) -> list[str]:
    usable = [m.strip() for m in mirrors if m.strip()]
    if not usable:
        return []
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme not in MIRROR_SCHEMES:
        return []  # a file:// source is local already
    if access is not None and access.docker_config:
        # A site cache holds no credentials and serves whoever asks: a private registry's blob goes
        # straight from the registry to the device that has the pull secret.
        log.info("not using the site cache for %s: the registry needs credentials", uri)
        return []
    good = []
    for m in usable:
        if urllib.parse.urlsplit(m).scheme in ("http", "https"):
            good.append(m)
        else:
            log.warning("ignoring mirror %r: not an http(s) URL", m, extra={"mirror": m})
    return good


def _download_via_mirrors(uri: str, partial: Path, sha256: str, max_size: int | None, timeout: float,
                          retries: int, access: RegistryAccess | None, mirrors: Sequence[str]) -> None:
    plain_http = bool(access and access.plain_http)
    for mirror in _mirrors_for(uri, mirrors, access):
        try:
            _download(mirror_url(mirror, sha256, uri, plain_http), partial, sha256, max_size, timeout,
                      MIRROR_RETRIES, busy_wait=MIRROR_BUSY_WAIT)
            log.info("fetched %s through the site cache %s", sha256[:12], mirror, extra={"mirror": mirror})
            return
        except IntegrityError as e:
            log.warning("site cache %s failed (%s: %s); falling back", mirror, e.reason, e.message,
                        extra={"mirror": mirror, "reason": e.reason, "error": e.message})
    had_bytes = partial.exists() and partial.stat().st_size > 0
    try:
        _download(uri, partial, sha256, max_size, timeout, retries, access)
    except DigestMismatch:
        if not had_bytes:
            raise
        # The kept bytes may have come from a mirror that went wrong mid-transfer (the mismatch deleted
        # them): the origin alone, from byte 0, decides.
        log.warning("resumed bytes did not verify; fetching %s again from byte 0", uri, extra={"uri": uri})
        _download(uri, partial, sha256, max_size, timeout, retries, access)
