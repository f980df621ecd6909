"""kopf registrations: indexes that summarise objects, and thin event hooks.

Index handlers return one small summary per object (views.py); kopf keeps
them and, importantly, holds every event handler until all indexes are
filled from the initial lists. Event hooks only hand the event to the manager.
There are no kopf change-handlers, so kopf never writes annotations or
finalizers into the user's objects (GitOps tools see no drift).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from edge_operator.controller import cache
from edge_operator.controller.manager import Manager
from edgeai_api import constants as c

log = logging.getLogger("edge_operator.handlers")

MANAGED_SELECTOR = f"{c.L_MANAGED_BY}={c.OPERATOR_NAME}"


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base, switched off: nothing here has a change-handler that could read a diff.

    kopf builds an object's "essence" on every watch event, for every resource, by deep-copying the
    whole body (status included) and diffing it against the last one stored; only create/update
    handlers ever read the result. This operator registers none (indexes and event hooks only), so
    that copy was a third of its CPU at fleet scale and grew with the size of each status."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


IDLE_WORKER_S = 0.2


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings for a fleet of thousands of objects."""
    settings.peering.standalone = True  # leader election is ours, on a Lease (see leader.py)
    settings.posting.enabled = False  # the controller posts its own, deliberate Events
    settings.persistence.diffbase_storage = NoDiffBase()
    # Recycle every watch regularly, and treat a stream without even a bookmark for 70 s as dead:
    # this is what catches the silently stalled streams kopf users have met (kopf#1276, #787, #955).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    # Initial lists in pages: no multi-MiB response for a 1,000-node fleet (where the API server cannot
    # stream them instead: `use_streaming_lists`).
    settings.watching.chunk_size = 500
    # Watch only what the operator owns, filtered by the API server, not client-side.
    settings.watching.label_selectors["apps", "deployments"] = MANAGED_SELECTOR
    settings.watching.label_selectors["pods"] = MANAGED_SELECTOR
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
    settings.networking.connect_timeout = 10
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60, 120, 300)
    # A per-object worker keeps the last event's whole decoded body while it waits for the next one,
    # for `idle_timeout` (5 s by default). In the initial flood every object's worker is waiting at
    # once: 10,000 Nodes and 10,000 EdgeDevices held in full (hundreds of MiB of transient peak that the
    # allocator then keeps). Workers here do no slow work, so one that has nothing queued may go soon;
    # a later event of the same object starts a new one.
    settings.queueing.idle_timeout = IDLE_WORKER_S


# Streaming lists (sendInitialEvents, "WatchList") are on by default from this Kubernetes minor.
STREAMING_LISTS_SINCE = (1, 34)


def use_streaming_lists(settings: kopf.OperatorSettings, version: tuple[int, int] | None) -> bool:
    """Start each watch with the API server streaming the objects (from its watch cache) instead of a
    paged list, where the server can. Why: a paged list is only good while its continue token is, and
    the token expires with the first etcd compaction after the list began (5 minutes by default). At
    10,000 nodes a busy operator took longer than that to page through the Nodes, got 410 Expired and
    exited, at every start. A stream has no token and no end to reach in time."""
    on = version is not None and version >= STREAMING_LISTS_SINCE
    settings.watching.initial_streaming = on
    return on


def register(registry: kopf.OperatorRegistry, controller: Manager, login_info: kopf.ConnectionInfo) -> None:
    on = kopf.on

    @on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # Our own credentials, so kopf never falls back to importing the `kubernetes` client.
        return login_info

    @on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        configure(settings)
        # kopf passes every index as a keyword argument named by its id.
        controller.bind({name: kwargs[name] for name in cache.ALL_INDEXES})
        controller.start()

    @on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    # --- indexes (what each stores: cache.py) -----------------------------------------------

    @kopf.index("", "v1", "nodes", id=cache.IDX_NODES, registry=registry)
    async def nodes(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.node_entries(body)

    @kopf.index(c.GROUP, c.VERSION, c.PLURAL_DEVICE, id=cache.IDX_DEVICES, registry=registry)
    async def devices(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.device_entries(body)

    @kopf.index(c.GROUP, c.VERSION, c.PLURAL_DEVICE, id=cache.IDX_DEVICES_BY_NODE,
                registry=registry)
    async def devices_by_node(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.devices_by_node_entries(body)

    @kopf.index(c.GROUP, c.VERSION, c.PLURAL_MODEL, id=cache.IDX_MODELS, registry=registry)
    async def models(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.model_entries(body)

    @kopf.index(c.GROUP, c.VERSION, c.PLURAL_IDEP, id=cache.IDX_IDEPS, registry=registry)
    async def ideps(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.idep_entries(body)

    @kopf.index(c.GROUP, c.VERSION, c.PLURAL_IDEP, id=cache.IDX_IDEPS_BY_MODEL,
                registry=registry)
    async def ideps_by_model(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.ideps_by_model_entries(body)

    @kopf.index("apps", "v1", "deployments", id=cache.IDX_CHILDREN, registry=registry,
                labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def children(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.children_entries(body)

    @kopf.index("apps", "v1", "deployments", id=cache.IDX_CHILDREN_BY_DEVICE,
                registry=registry, labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def children_by_device(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.children_by_device_entries(body)

    @kopf.index("apps", "v1", "deployments", id=cache.IDX_SITE_CACHES,
                registry=registry, labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def site_caches(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.site_cache_entries(body)

    @kopf.index("", "v1", "pods", id=cache.IDX_PODS, registry=registry,
                labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def pods(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.pod_entries(body)

    @kopf.index("", "v1", "pods", id=cache.IDX_PODS_BY_DEVICE, registry=registry,
                labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def pods_by_device(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return cache.pods_by_device_entries(body)

    # --- event hooks (run only once every index above is filled) -------------------------

    @on.event("", "v1", "nodes", registry=registry)
    async def node_event(name: str, **_: Any) -> None:
        controller.mark_synced()
        controller.on_node(name)

    @on.event(c.GROUP, c.VERSION, c.PLURAL_DEVICE, registry=registry)
    async def device_event(name: str, **_: Any) -> None:
        controller.mark_synced()
        controller.on_device(name)

    @on.event(c.GROUP, c.VERSION, c.PLURAL_MODEL, registry=registry)
    async def model_event(namespace: str | None, name: str, **_: Any) -> None:
        controller.mark_synced()
        controller.on_model(namespace or "", name)

    @on.event(c.GROUP, c.VERSION, c.PLURAL_IDEP, registry=registry)
    async def idep_event(namespace: str | None, name: str, **_: Any) -> None:
        controller.mark_synced()
        controller.on_idep(namespace or "", name)

    @on.event("apps", "v1", "deployments", registry=registry,
              labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def child_event(type: str, body: kopf.Body, **_: Any) -> None:
        controller.mark_synced()
        controller.on_child(type, body)

    @on.event("", "v1", "pods", registry=registry, labels={c.L_MANAGED_BY: c.OPERATOR_NAME})
    async def pod_event(type: str, body: kopf.Body, **_: Any) -> None:
        controller.mark_synced()
        controller.on_pod(type, body)
