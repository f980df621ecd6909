"""Connection-level limits for the REST port, enforced before a request exists.

What a port anyone may reach needs (enforced by `http_server`):
- a cap on open connections: past it a new connection is closed at once, with
  a log line (at most one per 10 s) and `edgeai_connections_refused_total
  {reason="max_connections"}`, so the process never runs out of descriptors;
- a header-read deadline: a connection that has not sent a complete request
  head within `header_timeout_s` of connecting (or of starting a request) is
  closed (an idle new connection, a slowloris sending partial headers);
- a header size limit: a request head larger than `max_header_bytes` gets 431
  and the connection is closed, before the parser sees the rest.

Each refusal is counted by reason and logged at most once per 10 s per reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edge_runtime.telemetry.metrics import RuntimeMetrics

log = logging.getLogger("edge_runtime.http")

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 64 << 10
_LOG_EVERY_S = 10.0


class Limits:
    """Shared by every connection of one server."""

    def __init__(
        self,
        metrics: RuntimeMetrics | None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.metrics = metrics
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.open = 0
        self._last_log: dict[str, float] = {}

    def refused(self, reason: str, message: str, **extra: Any) -> None:
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            log.warning(message, extra={"reason": reason, "open_connections": self.open, **extra})
