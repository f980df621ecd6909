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
  verified, and never decides which bytes arrive here.
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
from collections.abc import Iterator
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
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} from {uri}") from e
        raise IntegrityError("Unreachable", f"HTTP {e.code} {e.reason} from {uri}") from e
    except (urllib.error.URLError, TimeoutError, OSError, HTTPException) as e:
        raise _Transient(f"{uri}: {getattr(e, 'reason', e)}") from e
    return oci.ranged_stream(resp, offset, uri)


def _download(uri: str, partial: Path, sha256: str, max_size: int | None, timeout: float, retries: int,
              access: RegistryAccess | None = None) -> None:
    """Fill `partial` with the whole artifact, resuming and retrying; verify the digest."""
    attempt = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if max_size is not None and have > max_size:
            partial.unlink()
            have = 0
        try:
            stream, start, total = _open(uri, have, timeout, sha256, access)
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
) -> Path:
    """Make DIR/sha256/<sha256> hold the verified artifact from `uri`; return its path."""
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
        _download(uri, partial, sha256, max_size, timeout, retries, registry)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        with contextlib.suppress(OSError):
            _fsync_dir(partial.parent)
    return final
