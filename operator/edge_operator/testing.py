"""Run the operator for real, for tests, benchmarks and the demo.

`OperatorProcess` starts `python -m edge_operator` as a subprocess against a
kubeconfig (exactly what the Deployment runs), and reads its /metrics and
/healthz. `ModelServer` serves a directory of model files over HTTP on
127.0.0.1, like the artifact store a fleet fetches from. Neither mocks
anything: the operator talks to a real API server, the models are real files.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ModelServer:
    """A threaded static HTTP server over `root`, on 127.0.0.1 or on an address the test's plane made
    (the cloud bridge, for real edge nodes to fetch from)."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        root.mkdir(parents=True, exist_ok=True)

        def handler(*args: Any, **kw: Any) -> _QuietHandler:
            return _QuietHandler(*args, directory=str(root), **kw)

        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="model-server", daemon=True)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (samples only)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


@dataclass
class OperatorProcess:
    kubeconfig: str
    log_path: Path
    namespace: str = "default"  # of the leader Lease
    identity: str = "operator-0"
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    cwd: str | None = None  # `python -m` puts it first on sys.path: another checkout's packages win there
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OperatorProcess:
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": self.kubeconfig,
            "EDGEAI_METRICS_BIND": f"127.0.0.1:{self.port}",
            "EDGEAI_NAMESPACE": self.namespace,
            "POD_NAME": self.identity,
            "EDGEAI_ALLOW_FILE_URIS": "1",
        })
        env.update(self.env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_operator"], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        return self

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/readyz", timeout=2)[0] == 200:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"operator not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics")[1])

    def is_leader(self) -> bool:
        return self.metrics().get("edgeai_operator_leader", 0.0) == 1.0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the running process (Linux), in KiB."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User+system CPU time the process has used so far (Linux)."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, as when a node dies mid-reconcile."""
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def running_operator(kubeconfig: str, log_path: Path, **kw: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kubeconfig, log_path, **kw).start()
    try:
        op.wait_ready()
        yield op
    finally:
        op.stop()
