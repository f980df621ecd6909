"""Errors of talking to the API server.

`RetryableError` is an expected failure: the work queues log it without a traceback and retry with
backoff. It lives here, at the bottom of the I/O layer, so the API client does not import the
queues that retry it.
"""

from __future__ import annotations


class RetryableError(Exception):
    """An expected failure (an API error, a write refused): logged without a traceback, retried
    with backoff."""


class ApiError(RetryableError):
    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def namespace_terminating(self) -> bool:
        """Writes into a namespace being deleted: nothing to do, the namespace takes everything."""
        return self.status == 403 and "being terminated" in self.message
