"""The Lease's API client has connections of its own: a renewal never waits behind bulk traffic.

A real HTTP server on 127.0.0.1 holds the operator's only pooled connection with a request it
does not answer until the test says so; the Lease request must be answered meanwhile.
"""

from __future__ import annotations

import asyncio

import kopf
from aiohttp import web

from edge_operator.kube.kubeapi import KubeApi, Ref

LEASE = Ref("coordination.k8s.io/v1", "leases", "edgeai-operator", "default")
SLOW = Ref("v1", "configmaps", "slow", "x")


async def _scenario() -> tuple[bool, dict[str, object]]:
    release = asyncio.Event()
    holding = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        holding.set()
        await release.wait()
        return web.json_response({"kind": "ConfigMap"})

    async def lease(_: web.Request) -> web.Response:
        return web.json_response({"kind": "Lease"})

    app = web.Application()
    app.router.add_get(SLOW.path(), slow)
    app.router.add_get(LEASE.path(), lease)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api = KubeApi(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"), connections=1)
    lease_api = api.separate()
    try:
        bulk = asyncio.create_task(api.get(SLOW))
        await asyncio.wait_for(holding.wait(), 60)  # the only bulk connection is now busy
        got = await asyncio.wait_for(lease_api.get(LEASE), 60)
        still_held = not bulk.done()
        release.set()
        await bulk
        return still_held, got
    finally:
        release.set()
        await api.close()
        await lease_api.close()
        await runner.cleanup()


def test_a_lease_request_is_answered_while_the_bulk_pool_is_busy() -> None:
    still_held, got = asyncio.run(_scenario())
    assert still_held and got == {"kind": "Lease"}
    api = KubeApi(kopf.ConnectionInfo(server="http://127.0.0.1:1"))
    assert api.separate().used is api.used  # one record of the calls the operator made
