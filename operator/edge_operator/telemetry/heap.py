"""Where the operator's Python heap is (`/debug/memory`), for fleet-scale memory work.

Served only while tracemalloc traces (PYTHONTRACEMALLOC=N; tracing costs CPU, so it is off by
default). `by=lineno|filename|traceback` is tracemalloc's own grouping: where memory was allocated.
`by=holders` answers the next question, who keeps it: decoded JSON is allocated in one place (the
watch stream's decoder) for every kind of object, so where it was allocated says nothing of what
holds it on. It finds each tree of dicts and lists allocated by a JSON decoder that an object
allocated elsewhere refers to, and sums the tree's size under that holder's type and allocation
line. Approximate by nature: a container CPython takes from its free lists keeps the traceback of
its first allocation, so a few trees are missed or named after another holder.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections import Counter
from typing import Any

# Where decoded JSON is allocated: the watch lines (kube/kopf_patches.decode_line, orjson) and json.loads.
_DECODERS = ("kube/kopf_patches.py", "json/decoder.py")


def _where(tb: tracemalloc.Traceback) -> str:
    """Every frame kept (PYTHONTRACEMALLOC=N keeps N), innermost first: one frame rarely says who holds the memory."""
    return " <- ".join(str(f) for f in reversed(tb))


def _allocated_in(obj: object, filename: str | tuple[str, ...]) -> bool:
    tb = tracemalloc.get_object_traceback(obj)
    return tb is not None and tb[-1].filename.endswith(filename)


def _label(obj: object) -> str:
    tb = tracemalloc.get_object_traceback(obj)
    return f"{type(obj).__qualname__} @ {tb[-1] if tb is not None else '?'}"


def _decoded(obj: object, filename: str | tuple[str, ...]) -> bool:
    return type(obj) in (dict, list) and _allocated_in(obj, filename)


def _tree_size(root: object, filename: str | tuple[str, ...]) -> int:
    """Bytes of `root` and of the decoded JSON it holds (containers allocated in `filename`, and strings).

    Followed by allocation, not through gc's list: CPython does not track a dict of only strings and
    numbers (a condition, a label map), so gc.get_objects() never lists it."""
    size, stack, seen = 0, [root], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        size += sys.getsizeof(o)
        for r in gc.get_referents(o):
            if type(r) is str or _decoded(r, filename):
                stack.append(r)
    return size


def holders(top: int, filename: str | tuple[str, ...] = _DECODERS) -> list[dict[str, Any]]:
    """Who keeps the containers allocated in `filename` alive, by the holder's type and allocation line:
    each decoded tree is counted once, under the objects outside it that refer to its root."""
    gc.collect()
    objs = gc.get_objects()
    held_by: dict[int, list[object]] = {}
    roots: dict[int, object] = {}
    for o in objs:
        if _decoded(o, filename):
            continue
        for r in gc.get_referents(o):
            if _decoded(r, filename):
                roots[id(r)] = r
                held_by.setdefault(id(r), []).append(o)
    del objs
    size: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for i, root in roots.items():
        label = ", ".join(sorted({_label(p) for p in held_by[i]}))
        size[label] += _tree_size(root, filename)
        count[label] += 1
    return [{"where": k, "kib": round(v / 1024, 1), "blocks": count[k]} for k, v in size.most_common(top)]


def memory_report(by: str, top: str) -> tuple[int, dict[str, Any] | str]:
    """The report for `/debug/memory`: the HTTP status and a JSON body, or a message naming what is wrong."""
    if not tracemalloc.is_tracing():
        return 404, "tracemalloc is off: start the operator with PYTHONTRACEMALLOC=1"
    try:
        n = max(1, min(int(top), 500))
    except ValueError:
        return 400, f"top: expected an integer, got {top!r}"
    if by not in ("lineno", "filename", "traceback", "holders"):
        return 400, f"by: expected lineno, filename, traceback or holders, got {by!r}"
    current, peak = tracemalloc.get_traced_memory()
    head = {"tracedMiB": round(current / 2**20, 1), "peakMiB": round(peak / 2**20, 1)}
    if by == "holders":
        return 200, {**head, "top": holders(n)}
    stats = tracemalloc.take_snapshot().statistics(by)
    rows = [{"where": _where(st.traceback), "kib": round(st.size / 1024, 1), "blocks": st.count} for st in stats[:n]]
    return 200, {**head, "top": rows}
