"""Maintenance windows: when a rollout may change what a device serves.

Pure (time comes in as a number). `spec.rollout.maintenanceWindows` names a device label (the
site, by default) and, per value of it, a window: a cron schedule of when it opens, in a time
zone, and how long it stays open. A device whose value has a window (or `"*"`, the window of every
other value) only moves to a new revision while its window is open; outside, it keeps serving
what it has and waits without failing the wave. A rollback is never held by a window, and a device
with no workload yet gets one at once: there is nothing running to disturb.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from croniter import CroniterError, croniter

from edgeai_api.inferencedeployment import MaintenanceWindows

DEFAULT_LABEL = "edgeai.io/site"
ANY = "*"
# Any fixed instant: whether a schedule can ever open does not depend on when it is asked.
_REFERENCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


class WindowError(ValueError):
    """spec.rollout.maintenanceWindows is invalid; the message names the field."""


@dataclass(frozen=True)
class Window:
    schedule: str
    duration_s: int
    tz: dt.tzinfo

    def _opened(self, now: float) -> dt.datetime:
        """When the window last opened at or before `now` (local time of the window)."""
        local = dt.datetime.fromtimestamp(now, self.tz)
        it = croniter(self.schedule, local + dt.timedelta(seconds=1))
        return it.get_prev(dt.datetime)  # type: ignore[no-any-return]

    def is_open(self, now: float) -> bool:
        return now < self._opened(now).timestamp() + self.duration_s

    def next_open(self, now: float) -> float:
        """When it opens next after `now` (seconds since the epoch)."""
        local = dt.datetime.fromtimestamp(now, self.tz)
        nxt: dt.datetime = croniter(self.schedule, local).get_next(dt.datetime)
        return nxt.timestamp()


@dataclass(frozen=True)
class Windows:
    label: str
    by_value: Mapping[str, Window]

    def window_of(self, labels: Mapping[str, str]) -> Window | None:
        v = labels.get(self.label)
        w = self.by_value.get(v) if v is not None else None
        return w if w is not None else self.by_value.get(ANY)


def parse_windows(spec: MaintenanceWindows | None, path: str = "spec.rollout.maintenanceWindows") -> Windows | None:
    if spec is None or not spec.windows:
        return None
    out: dict[str, Window] = {}
    for value, w in spec.windows.items():
        where = f"{path}.windows[{value!r}]"
        if not croniter.is_valid(w.schedule) or len(w.schedule.split()) != 5:
            raise WindowError(f"{where}.schedule must be a 5-field cron schedule like \"0 2 * * *\", "
                              f"got {w.schedule!r}")
        if not 1 <= w.duration_minutes <= 7 * 24 * 60:
            raise WindowError(f"{where}.durationMinutes must be from 1 to 10080, got {w.duration_minutes!r}")
        tz_name = w.time_zone or "UTC"
        try:
            tz = zoneinfo.ZoneInfo(tz_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise WindowError(f"{where}.timeZone must be an IANA time zone like Europe/Berlin, got {tz_name!r}") from e
        window = Window(w.schedule, w.duration_minutes * 60, tz)
        try:
            window.next_open(_REFERENCE)  # a schedule that names an impossible date (Feb 30) never opens
        except (CroniterError, ValueError) as e:
            raise WindowError(f"{where}.schedule never opens: {w.schedule!r}") from e
        out[value] = window
    return Windows(spec.label or DEFAULT_LABEL, out)


def closed_to(windows: Windows | None, labels: Mapping[str, Mapping[str, str]], now: float) -> tuple[frozenset[str],
                                                                                                   float | None]:
    """Devices whose window is closed now, and the seconds until the first of them opens."""
    if windows is None:
        return frozenset(), None
    closed: set[str] = set()
    soonest: float | None = None
    # Once per window, not per device: a site's 500 devices share one schedule, and this runs on
    # every reconcile of the deployment.
    opens_in: dict[Window, float | None] = {}  # None: open now
    for dev, lab in labels.items():
        w = windows.window_of(lab)
        if w is None:
            continue
        if w not in opens_in:
            opens_in[w] = None if w.is_open(now) else w.next_open(now) - now
        wait = opens_in[w]
        if wait is None:
            continue
        closed.add(dev)
        soonest = wait if soonest is None else min(soonest, wait)
    return frozenset(closed), soonest
