"""Quality windows kept on the node, so the next revision's gate can compare itself with this one.

`--quality-window-dir DIR --revision ID`: the runtime writes its rolling window (core/quality.Tracker's
`window_profile`, in the profile format `parse_profile` reads, on its reference's bins) to
`DIR/<ID>.json` every `interval_s` and when it stops. The operator passes a directory on the node's
cache hostPath, one per InferenceDeployment, so a window outlives the Pod that wrote it; ID is the
revision's template hash, the same on every device of the revision.

A new revision's runtime with a quality gate loads, at start, the most recent window in DIR written
by another revision (`choose_previous`): that is the previous revision's answers to this device's
recent traffic. What it never does: fail because of this directory. A missing, unreadable, foreign,
oversized, stale (older than `MAX_AGE_S`) or ill-fitting file is passed over with a log line; a
failed write is logged and counted, and the runtime serves on.

Which windows are written: only a gate that passed (or no gate) lets the runtime write, so a build
that failed its gate never becomes the next revision's yardstick, and only a window of `min_rows`
rows or more, so a restarted container does not replace a full window with a nearly empty one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.core import quality

log = logging.getLogger("edge_runtime.quality_windows")

SUFFIX = ".json"
MAX_AGE_S = 7 * 86400.0  # an older window says little about today's traffic
KEEP = 16  # windows kept per directory (one per revision): the newest, and the writer's own
DEFAULT_INTERVAL_S = 60.0
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class WindowError(ValueError):
    """A window setting that cannot work; the message names the flag."""


def check_revision(revision: str) -> str:
    """`revision` if it can name a window file (no path, no hidden file), else WindowError."""
    if not _REVISION.match(revision) or revision.endswith(SUFFIX):
        raise WindowError(f"--revision must be 1-64 letters, digits, '.', '_' or '-' (not first), got {revision!r}")
    return revision


@dataclass(frozen=True, slots=True)
class Entry:
    revision: str
    mtime: float
    size: int


def choose_previous(entries: Iterable[Entry], own: str, now: float, max_age_s: float = MAX_AGE_S) -> Entry | None:
    """The most recently written window of another revision, no older than `max_age_s` and no larger than a
    profile may be; None if there is none. Only the newest is chosen: if it turns out unusable, an older
    revision's window is not a stand-in for the build this one replaces."""
    fresh = [e for e in entries
             if e.revision != own and now - e.mtime <= max_age_s and 0 < e.size <= quality.MAX_PROFILE_BYTES]
    return max(fresh, key=lambda e: (e.mtime, e.revision), default=None)


def list_windows(directory: Path) -> list[Entry]:
    """The window files in `directory` (plain files named <revision>.json); anything else is not ours."""
    out = []
    try:
        with os.scandir(directory) as it:
            for d in it:
                if not d.name.endswith(SUFFIX) or not _REVISION.match(d.name[: -len(SUFFIX)]):
                    continue
                try:
                    if not d.is_file(follow_symlinks=False):
                        continue
                    st = d.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append(Entry(d.name[: -len(SUFFIX)], st.st_mtime, st.st_size))
    except OSError as e:
        log.warning("cannot list the quality windows", extra={"path": str(directory), "error": str(e)})
    return out


@dataclass(frozen=True, slots=True)
class Previous:
    revision: str
    profile: quality.Profile
    age_s: float


def load_previous(
    directory: Path, own: str, layout: quality.Layout, min_rows: int, now: float | None = None
) -> tuple[Previous | None, str]:
    """The previous revision's window that fits `layout`, or None and why (for the log and the gate)."""
    now = time.time() if now is None else now
    chosen = choose_previous(list_windows(directory), own, now)
    if chosen is None:
        return None, f"no window of another revision in {directory} (within {MAX_AGE_S / 86400:g} days)"
    path = directory / f"{chosen.revision}{SUFFIX}"
    what = f"window of revision {chosen.revision} ({path})"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(quality.MAX_PROFILE_BYTES + 1)
        profile = quality.parse_profile(data)
        if not profile.outputs and not profile.inputs:
            raise quality.ProfileError("describes no output and no input")
        if profile.rows < min_rows:
            raise quality.ProfileError(f"has {profile.rows} rows, fewer than the {min_rows} PSI needs")
        profile.check_layout(layout)
    except OSError as e:
        return None, f"{what} unreadable: {e.strerror or e}"
    except quality.ProfileError as e:
        return None, f"{what} not used: {e}"
    return Previous(chosen.revision, profile, max(0.0, now - chosen.mtime)), ""


def write_window(directory: Path, revision: str, profile: quality.Profile) -> Path:
    """`profile` to DIR/<revision>.json, atomically (a reader sees the old file or the new one, never half);
    OSError or ValueError (too large to be read back) on failure."""
    text = profile.dumps().encode()
    if len(text) > quality.MAX_PROFILE_BYTES:
        raise ValueError(f"the window is {len(text)} bytes, more than a profile may be ({quality.MAX_PROFILE_BYTES})")
    final = directory / f"{revision}{SUFFIX}"
    tmp = directory / f".{revision}{SUFFIX}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def prune(directory: Path, own: str, now: float, max_age_s: float = MAX_AGE_S, keep: int = KEEP) -> int:
    """Remove other revisions' windows older than `max_age_s` or beyond the newest `keep`; how many went."""
    others = sorted((e for e in list_windows(directory) if e.revision != own), key=lambda e: -e.mtime)
    gone = 0
    for k, e in enumerate(others):
        if k >= keep - 1 or now - e.mtime > max_age_s:
            try:
                (directory / f"{e.revision}{SUFFIX}").unlink()
                gone += 1
            except OSError:
                pass  # another runtime on the node pruned it first, or it is not ours to remove
    return gone


class WindowKeeper:
    """Writes one model's window every `interval_s` on its own thread, and once more at `close`.

    `window()` gives the profile to write or None (nothing worth writing yet, or a gate not passed);
    `counted(outcome)` counts each write ("ok" or "error")."""

    def __init__(
        self,
        directory: Path,
        revision: str,
        window: Callable[[], quality.Profile | None],
        counted: Callable[[str], None],
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.revision = check_revision(revision)
        self.window = window
        self.counted = counted
        self.interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the thread's write and close's final one never overlap

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="edgeai-quality-window", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def write(self) -> bool:
        """Write the window now if there is one worth writing; True when a file was written."""
        with self._lock:
            try:
                profile = self.window()
                if profile is None:
                    return False
                path = write_window(self.directory, self.revision, profile)
            except (OSError, ValueError) as e:
                self.counted("error")
                log.warning("cannot keep the quality window on the node", extra={
                    "path": str(self.directory), "revision": self.revision, "error": str(e)})
                return False
            self.counted("ok")
            log.debug("quality window written", extra={"path": str(path), "rows": profile.rows})
            prune(self.directory, self.revision, self._clock())
            return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.write()
