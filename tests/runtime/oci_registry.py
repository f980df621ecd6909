"""A real distribution registry (Debian's docker-registry) on 127.0.0.1 for the oci:// tests, started
as hack/edgenodes.py starts the plane's: a temporary storage folder, a free port, and optionally Basic
auth from an htpasswd file (bcrypt, made with the system's libcrypt) or Bearer tokens (the registry's
`auth.token`, with a small token service here that signs RS256 JWTs with a certificate the registry
trusts, after checking Basic credentials); and a TCP proxy in front of it that can cut a blob
transfer short, to prove a fetch resumes."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import datetime as dt
import http.client
import http.server
import json
import shutil
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REGISTRY_BIN = shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt(password: str) -> str:
    # The registry's htpasswd accepts bcrypt only; libxcrypt has it, Python's stdlib does not.
    lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
    out = lib.crypt(password.encode(), salt)
    assert out and out.startswith(b"$2y$"), "libcrypt without bcrypt"
    return str(out.decode())


@dataclass
class LocalRegistry:
    addr: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log: Path
    user: str | None = None
    password: str | None = None
    tokens: TokenService | None = None

    def docker_config(self, password: str | None = None, addr: str | None = None) -> bytes:
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        return json.dumps({"auths": {addr or self.addr: {"auth": auth}}}).encode()

    def get(self, path: str, accept: str = "") -> tuple[int, dict[str, str], bytes]:
        """A raw GET, independent of the code under test."""
        host, port = self.addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Accept": accept} if accept else {}
        if self.tokens is not None:
            repo = path.split("/")[2] if path.count("/") > 2 else ""
            headers["Authorization"] = "Bearer " + self.tokens.token(f"repository:{repo}:pull")
        elif self.user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService(threading.Thread):
    """GET /token?service=..&scope=repository:NAME:ACTIONS with Basic credentials -> {"token": JWT}."""

    SERVICE, ISSUER = "edgeai-test-registry", "edgeai-test-issuer"

    def __init__(self, tmp: Path, user: str, password: str) -> None:
        super().__init__(daemon=True)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeai test token signer")])
        now = time.time()
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(dt.datetime.fromtimestamp(now - 3600, dt.UTC))
                     .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_file = tmp / "token-signer.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.user, self.password = user, password
        self.issued: list[str] = []  # the scopes tokens were asked for

        svc = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                want = "Basic " + base64.b64encode(f"{svc.user}:{svc.password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self.send_response(401)
                    self.end_headers()
                    return
                q = parse_qs(urlsplit(self.path).query)
                scope = q.get("scope", [""])[0]
                svc.issued.append(scope)
                body = json.dumps({"token": svc.token(scope)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def token(self, scope: str) -> str:
        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":", 2)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.ISSUER, "sub": self.user, "aud": self.SERVICE, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def run(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def running_registry(tmp: Path, user: str | None = None, password: str | None = None,
                     token: bool = False) -> Iterator[LocalRegistry]:
    """`token`: Bearer tokens from a TokenService that checks `user`/`password`; else htpasswd Basic auth."""
    assert REGISTRY_BIN, "docker-registry is not installed"
    port = free_port()
    cfg: dict[str, Any] = {
        "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "store")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    tokens = None
    if user is not None and password is not None and token:
        tokens = TokenService(tmp, user, password)
        tokens.start()
        cfg["auth"] = {"token": {"realm": tokens.realm, "service": TokenService.SERVICE,
                                 "issuer": TokenService.ISSUER, "rootcertbundle": str(tokens.cert_file)}}
    elif user is not None and password is not None:
        (tmp / "htpasswd").write_text(f"{user}:{bcrypt(password)}\n")
        cfg["auth"] = {"htpasswd": {"realm": "edgeai-test", "path": str(tmp / "htpasswd")}}
    (tmp / "config.yml").write_text(yaml.safe_dump(cfg))
    log = tmp / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(tmp / "config.yml")], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    reg = LocalRegistry(f"127.0.0.1:{port}", proc, log, user, password, tokens)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, _ = reg.get("/v2/")
                if status in (200, 401):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the registry did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield reg
    finally:
        if tokens is not None:
            tokens.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class CutState:
    cut_blob_after: int | None = None  # cut the next blob GET's response after this many bytes
    ranges: list[str | None] = field(default_factory=list)  # the Range header of each blob GET
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int], state: CutState) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.state = state


class _ProxyHandler(socketserver.BaseRequestHandler):
    server: _Proxy

    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        st = self.server.state
        cut = None
        if lines[0].startswith("GET ") and "/blobs/" in lines[0]:
            rng = next((x.split(":", 1)[1].strip() for x in lines[1:] if x.lower().startswith("range:")), None)
            with st.lock:
                st.ranges.append(rng)
                cut, st.cut_blob_after = st.cut_blob_after, None
        up = socket.create_connection(self.server.upstream, timeout=30)
        try:
            up.sendall(head)
            threading.Thread(target=_pump, args=(client, up), daemon=True).start()
            sent = 0
            while True:
                data = up.recv(65536)
                if not data:
                    break
                if cut is not None and sent + len(data) > cut:
                    client.sendall(data[: cut - sent])
                    return  # the connection drops mid-body
                client.sendall(data)
                sent += len(data)
        finally:
            up.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass


@contextmanager
def cutting_proxy(addr: str) -> Iterator[tuple[str, CutState]]:
    host, port = addr.split(":")
    state = CutState()
    srv = _Proxy((host, int(port)), state)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", state
    finally:
        srv.shutdown()
        srv.server_close()
