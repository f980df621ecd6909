"""`edge-runtime fetch` against a real local HTTP server: cache, resume, atomicity, locking, exit codes."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.artifacts import integrity
from edge_runtime.cli import main

ROOT = Path(__file__).resolve().parents[3]
BLOB = os.urandom(300_000)
DIGEST = hashlib.sha256(BLOB).hexdigest()


class ArtifactServer(http.server.ThreadingHTTPServer):
    """Serves BLOB at /model.onnx with Range support; can cut the first transfer short or ignore Range."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[str | None] = []  # the Range header of each GET
        self.cut_first_at: int | None = None
        self.ignore_range = False
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/model.onnx"


class Handler(http.server.BaseHTTPRequestHandler):
    server: ArtifactServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append(rng)
            cut, srv.cut_first_at = srv.cut_first_at, None
        if self.path != "/model.onnx":
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        else:
            self.send_response(200)
        body = BLOB[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    srv = ArtifactServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(*args: str) -> int:
    return main(["fetch", *args])


def test_fetch_into_content_addressed_cache_then_no_network(
    server: ArtifactServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "sha256" / DIGEST
    assert path.read_bytes() == BLOB
    assert server.requests == [None]
    # Cached: no request at all, even with the server gone.
    server.shutdown()
    assert fetch("http://127.0.0.1:9/unreachable", "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    assert server.requests == [None]
    assert list((tmp_path / "partial").iterdir()) == []


def test_corrupt_cache_entry_is_fetched_again(server: ArtifactServer, tmp_path: Path) -> None:
    final = tmp_path / "sha256" / DIGEST
    final.parent.mkdir(parents=True)
    final.write_bytes(b"bit rot")
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    assert final.read_bytes() == BLOB


def test_digest_mismatch_exit_3_and_nothing_left(
    server: ArtifactServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "ab" * 32
    assert fetch(server.url, "--sha256", wrong, "--cache", str(tmp_path)) == 3
    assert "DigestMismatch" in capsys.readouterr().err
    assert not (tmp_path / "sha256" / wrong).exists()
    assert list((tmp_path / "partial").iterdir()) == []


def test_interrupted_transfer_resumes_with_range(server: ArtifactServer, tmp_path: Path) -> None:
    server.cut_first_at = 123_456
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    assert (tmp_path / "sha256" / DIGEST).read_bytes() == BLOB
    assert server.requests == [None, "bytes=123456-"]


def test_partial_from_a_killed_run_is_resumed(server: ArtifactServer, tmp_path: Path) -> None:
    partial = tmp_path / "partial" / DIGEST
    partial.parent.mkdir(parents=True)
    partial.write_bytes(BLOB[:200_000])
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    assert server.requests == ["bytes=200000-"]
    assert (tmp_path / "sha256" / DIGEST).read_bytes() == BLOB
    assert not partial.exists()


def test_server_ignoring_range_restarts_from_zero(server: ArtifactServer, tmp_path: Path) -> None:
    server.ignore_range = True
    partial = tmp_path / "partial" / DIGEST
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1000)
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path)) == 0
    assert (tmp_path / "sha256" / DIGEST).read_bytes() == BLOB


def test_file_uri_and_errors(tmp_path: Path, server: ArtifactServer) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(BLOB)
    cache = tmp_path / "cache"
    assert fetch(src.as_uri(), "--sha256", DIGEST, "--cache", str(cache)) == 0
    assert (cache / "sha256" / DIGEST).read_bytes() == BLOB
    other = "cd" * 32
    assert fetch((tmp_path / "missing").as_uri(), "--sha256", other, "--cache", str(cache)) == 5
    assert fetch(server.url.replace("model.onnx", "nope"), "--sha256", other, "--cache", str(cache)) == 5
    assert fetch("ftp://example/x", "--sha256", other, "--cache", str(cache)) == 5
    assert fetch(server.url, "--sha256", DIGEST, "--cache", str(tmp_path / "c2"), "--max-size", "1000") == 6
    assert not (tmp_path / "c2" / "sha256" / DIGEST).exists()
    assert fetch("http://127.0.0.1:9/x", "--sha256", other, "--cache", str(cache), "--retries", "0") == 5


def test_signature_checked_before_download(server: ArtifactServer, tmp_path: Path) -> None:
    key = integrity.generate_private_key("ed25519")
    pub = tmp_path / "pub.pem"
    pub.write_bytes(integrity.public_key_pem(key))
    bad = integrity.sign_digest(integrity.generate_private_key("ed25519"), DIGEST)
    cache = str(tmp_path / "c")
    assert (
        fetch(server.url, "--sha256", DIGEST, "--cache", cache, "--signature", bad, "--public-key-file", str(pub)) == 4
    )
    assert server.requests == []
    good = integrity.sign_digest(key, DIGEST)
    assert (
        fetch(server.url, "--sha256", DIGEST, "--cache", cache, "--signature", good, "--public-key-file", str(pub)) == 0
    )


def test_concurrent_fetches_of_one_digest_download_once(server: ArtifactServer, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "fetch", server.url, "--sha256", DIGEST, "--cache", str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert {o[0].strip() for o in outs} == {str(tmp_path / "sha256" / DIGEST).encode()}
    assert server.requests == [None]
    assert (tmp_path / "sha256" / DIGEST).read_bytes() == BLOB
