"""The one layer that talks to the Kubernetes API for writes and point reads.

A thin asyncio client over aiohttp, built from kopf's own login result (so no
`kubernetes` package is imported into the operator: it costs tens of MiB).
kopf streams the watches; this client does the rest: server-side apply of
children, status merge patches, Secret reads, the leader Lease and Events.

Every request is counted by verb, resource and status code, and the
(verb, group, resource) triples seen are kept so a test can prove they all
fall inside `rbac.py`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from edge_operator.kube.errors import ApiError
from edge_operator.telemetry import metrics
from edgeai_api import constants as c

log = logging.getLogger("edge_operator.kubeapi")

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON = "application/json"


@dataclass(frozen=True)
class Ref:
    """Where an object lives in the API."""

    api_version: str
    plural: str
    name: str | None = None
    namespace: str | None = None
    subresource: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    def path(self) -> str:
        base = f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        if self.namespace:
            base += f"/namespaces/{self.namespace}"
        base += f"/{self.plural}"
        if self.name:
            base += f"/{self.name}"
        if self.subresource:
            base += f"/{self.subresource}"
        return base

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Pod"): "pods",
    (c.API_VERSION, c.KIND_DEVICE): c.PLURAL_DEVICE,
    (c.API_VERSION, c.KIND_MODEL): c.PLURAL_MODEL,
    (c.API_VERSION, c.KIND_IDEP): c.PLURAL_IDEP,
}


def ref_of(obj: Mapping[str, Any], subresource: str | None = None) -> Ref:
    meta = obj["metadata"]
    plural = PLURALS[(obj["apiVersion"], obj["kind"])]
    return Ref(obj["apiVersion"], plural, meta["name"], meta.get("namespace"), subresource)


def parse_version(doc: Any) -> tuple[int, int] | None:
    """(major, minor) of a /version document; minors like "34+" (some distributions) count as 34."""
    if not isinstance(doc, Mapping):
        return None
    try:
        major = int(re.sub(r"\D", "", str(doc.get("major", ""))))
        minor = int(re.sub(r"\D", "", str(doc.get("minor", ""))))
    except ValueError:
        return None
    return major, minor


def _verb(method: str, ref: Ref) -> str:
    if method == "GET":
        return "get" if ref.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]


@dataclass
class KubeApi:
    info: kopf.ConnectionInfo
    timeout: float = 30.0
    used: set[tuple[str, str, str]] = field(default_factory=set)
    connections: int = 64
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls, settings: kopf.OperatorSettings) -> KubeApi:
        """In-cluster service account first, then $KUBECONFIG / ~/.kube/config."""
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise kopf.LoginError("no service account and no kubeconfig: cannot reach the Kubernetes API")
        return cls(info)

    def separate(self, connections: int = 2) -> KubeApi:
        """The same cluster and credentials over connections of its own: for calls that must not wait
        behind bulk traffic. The Lease renewal is one: at 10,000 devices, 64 connections busy with
        Pod creates and Events for over 10 s made renewals time out waiting for a connection, and
        the operator lost its leadership mid-rollout."""
        return KubeApi(self.info, timeout=self.timeout, used=self.used, connections=connections)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self.info.as_ssl_context()),
                headers={**self.info.as_http_headers(), "User-Agent": f"{c.OPERATOR_NAME}/{c.PACKAGE_VERSION}"},
                # sock_connect, not connect: aiohttp's `connect` also counts the wait for a free pooled
                # connection, so a busy pool failed requests as "Connection timeout" after 10 s while
                # the API server was reachable; `total` still bounds the whole call.
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        ref: Ref,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        verb = _verb(method, ref)
        self.used.add((verb, ref.group, ref.resource))
        url = self.info.server.rstrip("/") + ref.path()
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        headers = {"Content-Type": content_type, "Accept": JSON} if data is not None else {"Accept": JSON}
        # A few quick retries for throttling and API-server restarts; anything longer is
        # the work queue's job (per-key exponential backoff), never a hot loop here.
        for attempt in range(3):
            start = time.monotonic()
            try:
                async with self._get_session().request(
                    method, url, data=data, params=params, headers=headers
                ) as resp:
                    text = await resp.text()
                    code = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as e:
                metrics.API_REQUESTS.labels(verb, ref.resource, "error").inc()
                if attempt == 2:
                    raise ApiError(0, "Unreachable", str(e) or type(e).__name__, method, ref.path()) from e
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            metrics.API_REQUESTS.labels(verb, ref.resource, str(code)).inc()
            metrics.API_LATENCY.labels(verb).observe(time.monotonic() - start)
            if (code == 429 or code in (500, 502, 503, 504)) and attempt < 2:
                delay = min(float(retry_after or 1), 5.0)
                await asyncio.sleep(delay)
                continue
            if code >= 400:
                try:
                    status = json.loads(text)
                    reason, message = status.get("reason", ""), status.get("message", text)
                except ValueError:
                    reason, message = "", text[:500]
                raise ApiError(code, reason, message, method, ref.path())
            return json.loads(text) if text else {}
        raise ApiError(503, "ServiceUnavailable", "retries exhausted", method, ref.path())

    async def server_version(self) -> tuple[int, int] | None:
        """The API server's (major, minor) from /version (readable by any client), None when it does not say."""
        try:
            async with self._get_session().get(self.info.server.rstrip("/") + "/version") as resp:
                if resp.status != 200:
                    return None
                doc = json.loads(await resp.text())
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return parse_version(doc)

    # --- operations the controller uses ---------------------------------------------

    async def get(self, ref: Ref) -> dict[str, Any]:
        return await self.request("GET", ref)

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields we set: create or update in one call,
        and fields we stop setting are removed."""
        return await self.request(
            "PATCH", ref_of(obj), body=obj, content_type=APPLY,
            params={"fieldManager": c.FIELD_MANAGER, "force": "true"},
        )

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists."""
        r = ref_of(obj)
        try:
            return await self.request("POST", Ref(r.api_version, r.plural, None, r.namespace), body=obj,
                                      params={"fieldManager": c.FIELD_MANAGER})
        except ApiError as e:
            if e.conflict:
                return None
            raise

    async def patch(self, ref: Ref, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """A merge patch (metadata.uid in `body` makes it a precondition); None when the object is gone."""
        try:
            return await self.request("PATCH", ref, body=body, content_type=MERGE,
                                      params={"fieldManager": c.FIELD_MANAGER})
        except ApiError as e:
            if e.not_found or e.conflict:
                return None
            raise

    async def patch_status(self, ref: Ref, status_patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", Ref(ref.api_version, ref.plural, ref.name, ref.namespace, "status"),
            body={"status": status_patch}, content_type=MERGE,
            params={"fieldManager": c.FIELD_MANAGER},
        )

    async def delete(self, ref: Ref, uid: str | None = None) -> bool:
        """Delete in the background (children go through the garbage collector). False if gone."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}  # never delete a same-named successor
        try:
            await self.request("DELETE", ref, body=body)
            return True
        except ApiError as e:
            if e.not_found or e.conflict:
                return False
            raise

    async def secret_value(self, namespace: str, name: str, key: str) -> bytes:
        """One key of a Secret, decoded. Raises ApiError(404) if the Secret is missing,
        KeyError if the key is."""
        s = await self.get(Ref("v1", "secrets", name, namespace))
        data = s.get("data") or {}
        if key not in data:
            raise KeyError(key)
        return base64.b64decode(data[key])

    async def event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """Post a core/v1 Event on an object; failures are logged, never raised (events are best effort)."""
        ns = involved.get("namespace") or "default"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": ns},
            "involvedObject": dict(involved),
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": c.OPERATOR_NAME},
            "reportingComponent": f"{c.GROUP}/{c.OPERATOR_NAME}",
            "reportingInstance": c.OPERATOR_NAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.request("POST", Ref("v1", "events", None, ns), body=ev)
        except ApiError as e:
            if not e.namespace_terminating:
                log.warning("could not post event %s on %s: %s", reason, involved.get("name"), e)
