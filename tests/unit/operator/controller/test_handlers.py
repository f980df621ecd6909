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


def test_initial_lists_stream_where_the_api_server_can_and_page_elsewhere() -> None:
    import kopf

    from edge_operator.controller.handlers import configure, use_streaming_lists
    from edge_operator.kube.kubeapi import parse_version

    assert parse_version({"major": "1", "minor": "34"}) == (1, 34)
    assert parse_version({"major": "1", "minor": "33+"}) == (1, 33)
    assert parse_version({"major": "", "minor": "x"}) is None and parse_version([]) is None
    for version, streams in (((1, 34), True), ((1, 35), True), ((2, 0), True), ((1, 33), False), (None, False)):
        settings = kopf.OperatorSettings()
        configure(settings)
        assert use_streaming_lists(settings, version) is streams
        assert settings.watching.initial_streaming is streams
        assert settings.watching.chunk_size == 500  # the paged list, where it is used
