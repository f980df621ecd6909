"""The kopf registrations: only indexes and event hooks, so kopf's diff base may be switched off."""

from __future__ import annotations

from typing import Any

import kopf

from edge_operator.controller import handlers


class _Manager:
    """register() only keeps a reference; none of these registrations runs here."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"register() must not call the manager ({name})")


def _registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, _Manager(), kopf.ConnectionInfo(server="https://127.0.0.1:1"))  # type: ignore[arg-type]
    return registry


def test_no_change_or_daemon_handlers_read_a_diff() -> None:
    # NoDiffBase is only safe while nothing reads kopf's diff: a create/update/delete handler, a
    # daemon or a timer added here must also bring kopf's diff base back.
    registry = _registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert len(registry._indexing.get_all_handlers()) == 11
    assert len(registry._watching.get_all_handlers()) == 6


def test_the_diff_base_copies_nothing_and_stores_nothing() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    store = settings.persistence.diffbase_storage
    assert isinstance(store, handlers.NoDiffBase)
    body = kopf.Body({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}},
                      "spec": {"x": 1}, "status": {"big": list(range(1000))}})
    assert store.build(body=body) == {}
    assert store.fetch(body=body) is None
    patch = kopf.Patch()
    store.store(body=body, patch=patch, essence=kopf.BodyEssence())
    assert not patch  # never an annotation written into the user's object
