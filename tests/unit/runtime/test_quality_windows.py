"""Quality windows kept on the node (edge_runtime/serving/quality_windows.py): the file a revision writes,
which one the next revision picks, and everything that must be passed over without stopping the runtime."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.core import quality as q
from edge_runtime.serving import quality_windows as qw

LAYOUT = q.Layout(outputs=(("p", 4),), inputs=(("x", 3),))
NOW = 1_800_000_000.0
DAY = 86400.0


def _window(rows: int = 600, seed: int = 0) -> q.Profile:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3000, 3)).astype(np.float32)
    z = x @ np.array([[1.0, -1.0, 0.5, 0.0], [0.5, 1.0, -1.0, 0.2], [-0.3, 0.2, 1.0, -1.0]])
    p = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
    t = q.Tracker(LAYOUT, q.build_profile(LAYOUT, {"x": x}, {"p": p}))
    t.observe({"x": x[:rows]}, {"p": p[:rows]})
    w = t.window_profile("test")
    assert w is not None
    return w


def _put(d: Path, name: str, text: str | bytes, age_s: float = 0.0) -> Path:
    path = d / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_the_newest_window_of_another_revision_is_chosen() -> None:
    e = qw.Entry
    entries = [e("a", NOW - 300, 10), e("b", NOW - 60, 10), e("own", NOW, 10), e("old", NOW - 8 * DAY, 10),
               e("huge", NOW - 1, q.MAX_PROFILE_BYTES + 1), e("empty", NOW - 1, 0)]
    assert qw.choose_previous(entries, "own", NOW) == e("b", NOW - 60, 10)
    assert qw.choose_previous(entries[2:], "own", NOW) is None  # its own, stale, oversized or empty: none
    assert qw.choose_previous([], "own", NOW) is None


def test_a_written_window_is_loaded_by_the_next_revision_and_never_by_its_own(tmp_path: Path) -> None:
    w = _window()
    path = qw.write_window(tmp_path, "rev1", w)
    assert path == tmp_path / "rev1.json" and q.parse_profile(path.read_bytes()) == w
    assert [p.name for p in tmp_path.iterdir()] == ["rev1.json"]  # no temporary file left behind
    prev, why = qw.load_previous(tmp_path, "rev2", LAYOUT, min_rows=500)
    assert prev is not None and why == "" and prev.revision == "rev1" and prev.profile == w
    none, why = qw.load_previous(tmp_path, "rev1", LAYOUT, min_rows=500)
    assert none is None and "no window of another revision" in why
    qw.write_window(tmp_path, "rev1", _window(seed=1))  # a rewrite replaces the file whole
    assert q.parse_profile((tmp_path / "rev1.json").read_bytes()) == _window(seed=1)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not JSON"),
        ('{"format": "something else"}', "format"),
        ("[]", "must be an object"),
    ],
)
def test_a_bad_newest_window_is_passed_over_with_the_reason(tmp_path: Path, content: str, words: str) -> None:
    qw.write_window(tmp_path, "rev1", _window())
    os.utime(tmp_path / "rev1.json", (NOW - 600, NOW - 600))
    _put(tmp_path, "rev2.json", content, age_s=60)
    prev, why = qw.load_previous(tmp_path, "rev3", LAYOUT, min_rows=500, now=NOW)
    # Only the newest is a stand-in for the build being replaced: an older revision's window is not.
    assert prev is None and "window of revision rev2" in why and words in why


def test_foreign_huge_stale_small_and_ill_fitting_files_are_not_used(tmp_path: Path) -> None:
    _put(tmp_path, "notes.txt", "hello")
    _put(tmp_path, ".rev9.json.123.tmp", "{half")  # a writer's temporary file
    (tmp_path / "dir.json").mkdir()
    os.symlink("/etc/hostname", tmp_path / "link.json")
    _put(tmp_path, "huge.json", b" " * (q.MAX_PROFILE_BYTES + 1))
    _put(tmp_path, "stale.json", _window().dumps(), age_s=8 * DAY)
    assert {e.revision for e in qw.list_windows(tmp_path)} == {"huge", "stale"}
    assert qw.load_previous(tmp_path, "new", LAYOUT, min_rows=500, now=NOW)[0] is None
    _put(tmp_path, "small.json", _window(rows=100).dumps(), age_s=5)
    prev, why = qw.load_previous(tmp_path, "new", LAYOUT, min_rows=500, now=NOW)
    assert prev is None and "100 rows, fewer than the 500" in why
    _put(tmp_path, "other.json", _window().dumps(), age_s=1)
    prev, why = qw.load_previous(tmp_path, "new", q.Layout(outputs=(("p", 4),), inputs=(("x", 5),)), 500, now=NOW)
    assert prev is None and "input 'x' (3 features)" in why
    prev, why = qw.load_previous(tmp_path, "new", LAYOUT, 500, now=NOW)
    assert prev is not None and prev.revision == "other" and prev.age_s == pytest.approx(1.0)
    missing, why = qw.load_previous(tmp_path / "nowhere", "new", LAYOUT, 500)
    assert missing is None and "no window of another revision" in why


def test_prune_keeps_its_own_and_the_newest_and_drops_stale_ones(tmp_path: Path) -> None:
    text = _window().dumps()
    for k in range(20):
        _put(tmp_path, f"r{k:02d}.json", text, age_s=100.0 * (20 - k))  # r19 the newest
    _put(tmp_path, "own.json", text, age_s=5000)
    _put(tmp_path, "ancient.json", text, age_s=30 * DAY)
    assert qw.prune(tmp_path, "own", NOW, keep=5) == 17
    assert sorted(e.revision for e in qw.list_windows(tmp_path)) == ["own", "r16", "r17", "r18", "r19"]


def test_revision_names_that_could_leave_the_directory_are_refused() -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65, "r1.json"):
        with pytest.raises(qw.WindowError, match="--revision"):
            qw.check_revision(bad)
    assert qw.check_revision("4f1c2a9b0d3e5f67") == "4f1c2a9b0d3e5f67"


def test_the_keeper_writes_only_a_window_worth_writing_and_counts_failures(tmp_path: Path) -> None:
    counts: dict[str, int] = {}
    current: list[q.Profile | None] = [None]

    def counted(outcome: str) -> None:
        counts[outcome] = counts.get(outcome, 0) + 1

    keeper = qw.WindowKeeper(tmp_path, "rev1", lambda: current[0], counted, interval_s=0.05)
    assert not keeper.write() and counts == {} and not (tmp_path / "rev1.json").exists()
    keeper.start()
    current[0] = _window()
    deadline = time.monotonic() + 30
    while not (tmp_path / "rev1.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    keeper.close()
    assert q.parse_profile((tmp_path / "rev1.json").read_bytes()) == current[0] and counts.get("ok", 0) >= 2
    broken = qw.WindowKeeper(tmp_path / "missing", "rev1", lambda: _window(), counted)
    assert not broken.write() and counts["error"] == 1  # logged and counted, never raised
