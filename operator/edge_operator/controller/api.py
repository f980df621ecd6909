"""The part of the API client the reconcilers use, and best-effort Events.

A Protocol, so reconcilers are tested against a small in-memory fake and run against `KubeApi`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from edge_operator.controller.status_writer import StatusApi
from edge_operator.kube.kubeapi import Ref


class ControllerApi(StatusApi, Protocol):
    async def apply(self, obj: Mapping[str, Any]) -> Mapping[str, Any]: ...

    async def create(self, obj: Mapping[str, Any]) -> Mapping[str, Any] | None: ...

    async def patch(self, ref: Ref, body: Mapping[str, Any]) -> Mapping[str, Any] | None: ...

    async def delete(self, ref: Ref, uid: str | None = None) -> bool: ...

    async def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class EventRecorder:
    """Posts Events off the reconcile path: an Event must never slow or fail a reconcile."""

    def __init__(self, api: ControllerApi) -> None:
        self.api = api
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.create_task(self.api.event(involved, type_, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the Events in flight (tests; shutdown does not wait, as before)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
