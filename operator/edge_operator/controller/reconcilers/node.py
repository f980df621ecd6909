"""Node discovery: one EdgeDevice per edge Node; a discovered one goes when its Node is no longer edge."""

from __future__ import annotations

import logging

from edge_operator.controller.api import ControllerApi
from edge_operator.controller.cache import Cache
from edge_operator.controller.keys import NodeKey
from edge_operator.core.manifests import edge_device_for_node
from edge_operator.kube.kubeapi import Ref
from edgeai_api import constants as c

log = logging.getLogger("edge_operator.controller")


class NodeReconciler:
    metrics_label = "node"

    def __init__(self, api: ControllerApi, cache: Cache) -> None:
        self.api = api
        self.cache = cache

    async def reconcile(self, key: NodeKey) -> None:
        name = key.name
        node = self.cache.node(name)
        dev = self.cache.device(name)
        if node is not None and node.edge and not node.deleting and dev is None:
            created = await self.api.create(edge_device_for_node(name, node.uid))
            if created is not None:
                log.info("discovered edge device", extra={"device": name})
        elif node is not None and not node.edge and dev is not None and dev.discovered and not dev.deleting:
            await self.api.delete(Ref(c.API_VERSION, c.PLURAL_DEVICE, name), uid=dev.uid)
            log.info("removed device: node is no longer labelled edge", extra={"device": name})
