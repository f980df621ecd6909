"""A virtualenv of its own for what cannot share the project's: KServe's and MLServer's pinned
dependencies, or another onnxruntime build (onnxruntime-openvino installs the same `onnxruntime`
package the CPU wheel does, so the two cannot live in one environment).

Made on first use under $EDGEAI_CACHE (default ~/.cache/edgeai) and kept: a marker file records the
requirements it was made with, so a changed list installs again and an unchanged one costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGEAI_CACHE", Path.home() / ".cache" / "edgeai"))
MARKER = ".edgeai-ok"


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def project_dependencies(without: Sequence[str] = ()) -> list[str]:
    """pyproject's dependencies, leaving out those whose distribution is named in `without`."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    skip = {w.lower() for w in without}
    return [str(d) for d in deps if re.match(r"[A-Za-z0-9._-]+", str(d)).group(0).lower() not in skip]


def ensure(venv: Path, requirements: Sequence[str], probe: str, timeout: float = 1800) -> str | None:
    """Make `venv` with `requirements` unless it already has them; None when usable, else why not
    (the end of pip's or the probe's output). `probe` is Python the venv must run once installed."""
    marker = venv / MARKER
    want = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    if marker.exists() and marker.read_text().strip() == want:
        return None
    venv.parent.mkdir(parents=True, exist_ok=True)
    logf = venv.parent / f"{venv.name}.install.log"
    start = time.monotonic()
    print(f"[sidevenv] installing {len(requirements)} requirements into {venv} (once; log {logf})",
          file=sys.stderr, flush=True)
    with open(logf, "ab") as out:
        try:
            if not python(venv).exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out,
                               timeout=300)
            subprocess.run([str(python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            *requirements], check=True, stdout=out, stderr=out, timeout=timeout)
            subprocess.run([str(python(venv)), "-c", probe], check=True, stdout=out, stderr=out, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            tail = logf.read_text(errors="replace").strip().splitlines()[-6:] if logf.exists() else []
            return f"{e.__class__.__name__} installing into {venv}: " + " | ".join(tail)[-800:]
    marker.write_text(want + "\n")
    print(f"[sidevenv] {venv} ready in {time.monotonic() - start:.0f}s", file=sys.stderr, flush=True)
    return None
