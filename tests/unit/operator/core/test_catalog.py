"""Label indexes: candidates are a superset of matches, found without scanning the fleet."""

from __future__ import annotations

import random

from edge_operator.core.capabilities import Capabilities
from edge_operator.core.catalog import DeviceCatalog, SelectorIndex, anchor_terms
from edge_operator.core.placement import DeviceView
from edge_operator.core.selectors import matches

SITES = ["a", "b", "c"]


def fleet(n: int) -> DeviceCatalog:
    return DeviceCatalog({f"d{i}": DeviceView(f"d{i}", f"d{i}", {
        "host": f"d{i}", "site": SITES[i % 3], **({"gpu": "yes"} if i % 5 == 0 else {})}, Capabilities())
        for i in range(n)})


SELECTORS = [
    None,
    {},
    {"matchLabels": {"host": "d7"}},
    {"matchLabels": {"site": "b", "host": "d4"}},
    {"matchExpressions": [{"key": "host", "operator": "In", "values": ["d1", "d2", "d99"]}]},
    {"matchExpressions": [{"key": "site", "operator": "In", "values": ["a", "c"]},
                          {"key": "gpu", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "site", "operator": "NotIn", "values": ["a"]}]},
    {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]},
]


def test_anchor_terms() -> None:
    assert anchor_terms(None) is None and anchor_terms({}) is None
    assert anchor_terms({"matchLabels": {"b": "2", "a": "1"}}) == [("a", "1")]
    assert anchor_terms({"matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]},
                                              {"key": "h", "operator": "In", "values": ["z"]}]}) == [("h", "z")]
    assert anchor_terms({"matchExpressions": [{"key": "k", "operator": "Exists"}]}) is None


def test_device_candidates_cover_every_match_and_stay_small_when_anchored() -> None:
    cat = fleet(300)
    for sel in SELECTORS:
        want = {n for n, v in cat.items() if matches(sel, v.labels)}
        got = {v.name for v in cat.candidates(sel)}
        assert want <= got, sel
    assert len(cat.candidates({"matchLabels": {"host": "d7"}})) == 1


def test_catalog_updates_one_device_at_a_time() -> None:
    cat = fleet(10)
    cat.put(DeviceView("d3", "d3", {"host": "d3", "site": "z"}, Capabilities()))
    assert [v.name for v in cat.candidates({"matchLabels": {"site": "z"}})] == ["d3"]
    assert "d3" not in {v.name for v in cat.candidates({"matchLabels": {"site": "a"}})}
    cat.remove("d3")
    assert cat.candidates({"matchLabels": {"site": "z"}}) == [] and len(cat) == 9


def test_selector_index_finds_every_selector_a_label_set_may_match() -> None:
    idx = SelectorIndex()
    for i, sel in enumerate(SELECTORS):
        idx.put(i, sel)
    rng = random.Random(1)
    for _ in range(200):
        labels = {"host": f"d{rng.randrange(20)}", "site": rng.choice(SITES)}
        if rng.random() < 0.3:
            labels["gpu"] = "yes"
        want = {i for i, sel in enumerate(SELECTORS) if matches(sel, labels)}
        assert want <= idx.candidates(labels)
    assert idx.candidates({"host": "d7", "site": "q"}) == {0, 1, 2, 6, 7}  # anchored misses left out
    idx.put(2, {"matchLabels": {"host": "d8"}})
    assert 2 not in idx.candidates({"host": "d7"})
    idx.remove(2)
    assert 2 not in idx.candidates({"host": "d8"}) and len(idx) == len(SELECTORS) - 1


def test_placement_through_the_catalog_counts_the_unselected() -> None:
    from edge_operator.core.placement import Artifact, Requirements, place

    cat = fleet(300)
    src = Artifact("default", "fp32", "https://m", "a" * 64, verified=True)
    sel = {"matchLabels": {"host": "d7"}}
    p = place(sel, Requirements(), src, [], cat.candidates(sel), fleet_size=len(cat))
    assert [a.device for a in p.assignments] == ["d7"] and p.not_selected == 299
