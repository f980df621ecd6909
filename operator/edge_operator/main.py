"""`edgeai-operator` / `python -m edge_operator`: run the operator.

One process: kopf's watch machinery, the controller's work queues, Lease
leader election, and one HTTP port for /metrics, /healthz (liveness: workers,
background tasks and the lease are alive; a stalled event loop fails it by
not answering) and /readyz (caches synced).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_operator.controller import config, handlers
from edge_operator.controller.manager import Manager
from edge_operator.kube import kopf_patches
from edge_operator.kube.kubeapi import KubeApi
from edge_operator.telemetry import logs, metrics
from edge_operator.telemetry.heap import memory_report

log = logging.getLogger("edge_operator")


async def _serve_http(ctl: Manager, host: str, port: int) -> web.AppRunner:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = ctl.healthy()
        return web.Response(status=200 if ok else 500, text=json.dumps(detail), content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        ok = ctl.synced.is_set()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "caches not synced")

    async def memory(request: web.Request) -> web.Response:
        status, body = await asyncio.to_thread(memory_report, request.query.get("by", "lineno"),
                                               request.query.get("top", "40"))
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/debug/memory", memory)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run(cfg: config.OperatorConfig) -> None:
    kopf_patches.install()  # before kopf makes its toggle sets: a start linear in the objects watched
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    api = KubeApi.from_environment(settings)
    version = await api.server_version()
    streaming = handlers.use_streaming_lists(settings, version)
    ctl = Manager(api, cfg)
    metrics.register_fleet(ctl.snapshot)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, ctl, api.info)
    runner = await _serve_http(ctl, cfg.metrics_host, cfg.metrics_port)
    log.info("starting", extra={"identity": cfg.identity, "leaseNamespace": cfg.namespace,
                                "leaderElection": cfg.leader_election, "image": cfg.images.cpu,
                                "images": dict(cfg.images.families),
                                "metrics": f"{cfg.metrics_host}:{cfg.metrics_port}",
                                "kubernetes": ".".join(map(str, version)) if version else "unknown",
                                "streamingLists": streaming})
    try:
        await kopf.operator(registry=registry, settings=settings, clusterwide=True, standalone=True)
    finally:
        await runner.cleanup()
        await api.close()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config.parse(argv)
    logs.setup(cfg.log_level)
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
