"""The gRPC rows' load generator: grpcload (Go, beside this file), built on first use into the cache.

grpcload is what h2load was for these rows (one connection per client, one call
in flight on each, a status checked per call), with two differences:
- DATA frames as large as the server allows, as the standard Python clients
  (grpcio) send them; h2load's are 16 KiB, like grpc-go's (`-frame 16384`);
- less of the device's CPU per call: the message is kept in memory and written
  with one writev per window, where h2load reads its file again for every frame
  and copies it through nghttp2's buffers (grpcload/main.go says more).
h2load stays as `--grpc-load h2load` and as the fallback where Go is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "grpcload"
_FILES = ("go.mod", "go.sum", "main.go")


def binary_path(cache: Path) -> Path:
    """Where this source's build lives: a new source is a new path, so a stale build is never run."""
    h = hashlib.sha256()
    for name in _FILES:
        h.update(name.encode() + b"\0" + (SOURCE / name).read_bytes())
    return cache / "bin" / f"grpcload-{h.hexdigest()[:12]}" / "grpcload"


def ensure(cache: Path, timeout: float = 600) -> tuple[Path | None, str]:
    """The built binary, or None and why it could not be built."""
    out = binary_path(cache)
    if out.exists():
        return out, ""
    go = shutil.which("go")
    if go is None:
        return None, "go not found"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"grpcload.{os.getpid()}.tmp")  # two builders at once each rename a whole file
    env = dict(os.environ, CGO_ENABLED="0")
    try:
        done = subprocess.run([go, "build", "-trimpath", "-buildvcs=false", "-o", str(tmp), "."], cwd=SOURCE,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"go build took over {timeout:.0f} s"
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None, f"go build failed: {done.stderr.strip()[-400:]}"
    tmp.replace(out)
    return out, ""


@dataclass(frozen=True)
class Result:
    requests: int  # calls that ended within the window, whatever their status
    errors: int  # ... of which not :status 200 with grpc-status 0
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]  # "0", a grpc-status, "http 415", "RST_STREAM ...", "no trailers"
    failed: list[str]  # connections that ended within the window, and why


def run(binary: Path, target: str, body: Path, conc: int, duration: float, warmup: float = 1.0,
        frame: int = 0, calls: int = 0) -> Result:
    """One timed run against host:port; `frame` 0: DATA frames as large as the server allows. `calls` > 0:
    exactly that many calls per connection, all counted, `duration` only a deadline."""
    cmd = [str(binary), "-addr", target, "-data", str(body), f"-c={conc}", f"-d={duration}s", f"-warmup={warmup}s",
           f"-frame={frame}", f"-n={calls}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 180)
    try:
        r = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"grpcload gave no result (exit {done.returncode}): {done.stderr.strip()[-400:]}") from None
    return Result(int(r["requests"]), int(r["errors"]), float(r["rps"]), float(r["p50_ms"]), float(r["p99_ms"]),
                  {str(k): int(v) for k, v in r["statuses"].items()}, [str(x) for x in r.get("failed_connections", [])])
