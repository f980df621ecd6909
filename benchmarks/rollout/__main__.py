"""Rollout in waves on N kwok edge devices, against a DaemonSet rolling update on the same nodes.

    python -m benchmarks rollout [--nodes 1000] [--quick] [--plane rollout-bench] [--keep]

One local plane (hack/plane.py) with N simulated edge nodes, both paths in the same run, the
operator stopped while the native path runs:

A. native: one DaemonSet over the edge nodes with the operator's pod template. Its budget is
   10% of the nodes, as the operator's maxUnavailable; by default spent as `maxSurge: 10%,
   maxUnavailable: 0` (--native-strategy surge), because every operator device keeps its old pod
   serving until the new one is Ready; `--native-strategy unavailable` uses `maxUnavailable: 10%`
   instead. Timed: every pod Ready; a good template change (a pod annotation) until
   updatedNumberScheduled == numberAvailable == N for the new generation; the undo (template set
   back, what `kubectl rollout undo` does) until converged again; a bad change (pods that never
   get Ready, `sim.edgeai.io/ready=false`, see hack/kwok-stages.yaml). The DaemonSet controller
   has no health gate and no automatic rollback: it is left --native-bad-wait seconds, how far it
   got is recorded, then the template is set back by hand and the time to converge is measured.
B. operator: one verified EdgeModel and one InferenceDeployment over the N devices with
   `canary 10, waves [30%, 100%]` (three waves), `maxUnavailable 10%`, `healthGate {readySeconds
   5, progressDeadlineSeconds 120}`, `onFailure Rollback`. Timed: the first revision Ready on
   every device; a good revision (spec.runtime.podAnnotations) from the patch until
   status.rollout is Complete on it with every device updated; the undo of it (spec.rollout.
   rollbackTo, as `kubectl edgeai rollout undo` writes it); a bad revision from the patch to the
   first gate failure seen, and from there until the fleet is back on the stable revision; last,
   the same fleet with spec.rollout removed (one wave, no gate), the mechanism without the policy.

Devices exposed to the bad revision and devices left without a Ready pod are counted from the
pods themselves, the same way on both paths. Output: a table on stdout and in
benchmarks/results/rollout-<date>[-<N>nodes].txt, everything (with progress samples) in .json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Api, Fleet, fleet, localplane, logger, operator_workload, text_table, wait
from edge_operator.cli.plugin_view import rfc3339, undo_patch
from edge_operator.core.placement import Artifact
from edge_operator.testing import OperatorProcess
from edgeai_api import constants as c

RESULTS = ROOT / "benchmarks" / "results"
NS = "bench-rollout"
IDEP = "fleet"
DS = "bench-ds"
REV = "bench.edgeai.io/rev"
SIM_READY = "sim.edgeai.io/ready"
BAD = {SIM_READY: "false"}
DS_PATH = f"/apis/apps/v1/namespaces/{NS}/daemonsets"
IDEP_PATH = f"/apis/{c.API_VERSION}/namespaces/{NS}/{c.PLURAL_IDEP}"
POLL = 0.5  # status polls: cheap GETs of one object
# The steps after the first revision; --steps picks some (a 10,000-node run cannot afford all).
STEPS = frozenset({"good", "undo", "bad", "flat"})
POD_POLL = 2.0  # pod lists during the bad updates: N pods per list, kept rare on 2 cores
log = logger("rollout")


# --------------------------------------------------------------------------- pods, the same count for both paths


@dataclass
class PodWatch:
    """What the pods in NS show: which nodes ever ran a bad pod, and the most nodes seen at once
    without any Ready pod (not serving). Counted from pods, so both paths are measured alike."""

    api: Api
    nodes: int
    exposed: set[str] = field(default_factory=set)
    max_unserved: int = 0
    bad_now: int = 0
    last: float = 0.0

    def sample(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < POD_POLL:
            return
        self.last = time.monotonic()
        bad, serving = set(), set()
        for p in self.api.list(f"/api/v1/namespaces/{NS}/pods"):
            node = (p.get("spec") or {}).get("nodeName")
            if not node or p["metadata"].get("deletionTimestamp"):
                continue
            if (p["metadata"].get("annotations") or {}).get(SIM_READY) == "false":
                bad.add(node)
            conds = (p.get("status") or {}).get("conditions") or []
            if any(x.get("type") == "Ready" and x.get("status") == "True" for x in conds):
                serving.add(node)
        self.exposed |= bad
        self.bad_now = len(bad)
        self.max_unserved = max(self.max_unserved, self.nodes - len(serving))


@dataclass
class Timer:
    """One timed step: seconds, and the API requests the whole cluster served meanwhile."""

    api: Api
    t0: float = field(default_factory=time.monotonic)
    r0: int = 0

    def __post_init__(self) -> None:
        self.r0 = self.api.apiserver_requests()
        self.t0 = time.monotonic()

    def stop(self, at: float | None = None) -> dict[str, Any]:
        end = at if at is not None else time.monotonic()
        return {"seconds": round(end - self.t0, 2), "requests": self.api.apiserver_requests() - self.r0}


# --------------------------------------------------------------------------- A. native


def daemonset(art: Artifact, strategy: str) -> dict[str, Any]:
    """The operator's pod template, unpinned, as one DaemonSet over every edge node."""
    tpl = copy.deepcopy(operator_workload(0, "edge-0", art, NS)["spec"]["template"])
    del tpl["spec"]["affinity"]  # the DaemonSet controller places one pod per node itself
    tpl["spec"]["nodeSelector"] = {"node-role.kubernetes.io/edge": ""}  # tolerations stay the operator's
    labels = {"app": DS}
    tpl["metadata"]["labels"] = labels
    ru = {"maxSurge": "10%", "maxUnavailable": 0} if strategy == "surge" else {"maxSurge": 0, "maxUnavailable": "10%"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DS, "namespace": NS},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": tpl,
            "revisionHistoryLimit": 5,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru},
        },
    }


def ds_state(api: Api, n: int) -> tuple[bool, str, dict[str, Any]]:
    d = api.call("GET", f"{DS_PATH}/{DS}")
    st = d.get("status") or {}
    done = (
        st.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and st.get("updatedNumberScheduled") == n
        and st.get("numberAvailable") == n
        and st.get("numberReady") == n
        and not st.get("numberUnavailable")
    )
    desc = (
        f"gen {st.get('observedGeneration')}/{d['metadata']['generation']}: {st.get('updatedNumberScheduled')} "
        f"updated, {st.get('numberAvailable')} available, {st.get('numberUnavailable', 0)} unavailable of {n}"
    )
    return done, desc, st


def wait_ds(api: Api, what: str, n: int, timeout: float, watch: PodWatch | None = None) -> float:
    printed = [time.monotonic()]

    def check() -> tuple[bool, str]:
        done, desc, _ = ds_state(api, n)
        if watch is not None:
            watch.sample(force=done)
            done = done and watch.bad_now == 0
        if time.monotonic() - printed[0] >= 10:
            printed[0] = time.monotonic()
            log(f"  native {what}: {desc}")
        return done, desc

    return wait(f"DaemonSet: {what}", check, timeout, POLL)


def ds_template_annotations(api: Api, ann: Mapping[str, str | None]) -> None:
    api.call("PATCH", f"{DS_PATH}/{DS}", body={"spec": {"template": {"metadata": {"annotations": ann}}}})


def native_phase(
    api: Api, art: Artifact, n: int, strategy: str, bad_wait: float, timeout: float, steps: frozenset[str] = STEPS
) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": strategy}
    t = Timer(api)
    api.call("POST", DS_PATH, body=daemonset(art, strategy))
    out["initial"] = t.stop(wait_ds(api, "every node Ready", n, timeout))
    log(f"native: initial {out['initial']}")

    if "good" in steps:
        t = Timer(api)
        ds_template_annotations(api, {REV: "2"})
        out["good"] = t.stop(wait_ds(api, "good update", n, timeout))
        log(f"native: good update {out['good']}")

    if "undo" in steps:
        t = Timer(api)
        ds_template_annotations(api, {REV: None})  # the first template again: its ControllerRevision is reused
        out["undo"] = t.stop(wait_ds(api, "undo", n, timeout))
        log(f"native: undo {out['undo']}")
    if "bad" in steps:
        native_bad(api, n, bad_wait, timeout, out)
    delete_ds(api, timeout)
    return out


def native_bad(api: Api, n: int, bad_wait: float, timeout: float, out: dict[str, Any]) -> None:
    """The bad update: no gate, no rollback. Watch how far it goes for bad_wait seconds."""
    watch = PodWatch(api, n)
    t = Timer(api)
    ds_template_annotations(api, dict(BAD))
    end = time.monotonic() + bad_wait
    updated, last_change, printed = -1, time.monotonic(), time.monotonic()
    while time.monotonic() < end:
        _, desc, st = ds_state(api, n)
        watch.sample()
        if st.get("updatedNumberScheduled", 0) != updated:
            updated, last_change = st.get("updatedNumberScheduled", 0), time.monotonic()
        if time.monotonic() - printed >= 10:
            printed = time.monotonic()
            log(f"  native bad update: {desc}; {len(watch.exposed)} nodes got a bad pod")
        time.sleep(POLL)
    watch.sample(force=True)
    out["bad"] = {
        "left_seconds": bad_wait,
        "updated_scheduled": updated,
        "unchanged_for_seconds": round(time.monotonic() - last_change, 1),
        "stalled": time.monotonic() - last_change >= min(20.0, bad_wait / 2),
        "exposed": len(watch.exposed),
        "max_unserved": watch.max_unserved,
        "requests": t.stop()["requests"],
    }
    log(f"native: bad update after {bad_wait:.0f}s: {out['bad']}; undoing by hand")
    t = Timer(api)
    ds_template_annotations(api, {SIM_READY: None})
    out["restore"] = t.stop(wait_ds(api, "manual undo of the bad update", n, timeout, watch))
    out["bad"]["max_unserved"] = watch.max_unserved
    log(f"native: manual undo converged {out['restore']}")


def delete_ds(api: Api, timeout: float) -> None:
    api.call("DELETE", f"{DS_PATH}/{DS}")

    def gone() -> tuple[bool, str]:
        k = len(api.list(f"/api/v1/namespaces/{NS}/pods"))
        return k == 0, f"{k} pods left"

    wait("native pods gone", gone, timeout, 2.0)


# --------------------------------------------------------------------------- B. operator


@dataclass(frozen=True)
class OperatorWork:
    """What the operator did in a step, from its own metrics: deployment reconciles and their time,
    and CPU. Where a step's time goes: waiting on pods, or reconciling."""

    cpu: float
    reconciles: float
    reconcile_seconds: float

    @staticmethod
    def read(op: OperatorProcess) -> OperatorWork:
        m = op.metrics()
        runs = sum(v for k, v in m.items() if k.startswith("edgeai_operator_reconciles_total{") and 'kind="idep"' in k)
        secs = m.get('edgeai_operator_reconcile_duration_seconds_sum{kind="idep"}', 0.0)
        return OperatorWork(op.cpu_seconds() or 0.0, runs, secs)

    def since(self, before: OperatorWork) -> dict[str, float]:
        runs = self.reconciles - before.reconciles
        secs = self.reconcile_seconds - before.reconcile_seconds
        return {
            "cpu_seconds": round(self.cpu - before.cpu, 1),
            "idep_reconciles": int(runs),
            "idep_reconcile_seconds": round(secs, 1),
            "idep_reconcile_mean_ms": round(1000 * secs / runs, 1) if runs else 0.0,
        }


def idep_get(api: Api) -> dict[str, Any]:
    return api.call("GET", f"{IDEP_PATH}/{IDEP}")  # type: ignore[no-any-return]


def idep_patch(api: Api, patch: dict[str, Any]) -> None:
    api.call("PATCH", f"{IDEP_PATH}/{IDEP}", body=patch)


def rollout_desc(st: dict[str, Any]) -> str:
    r = st.get("rollout") or {}
    return (
        f"revision {r.get('revision')} {r.get('phase')} wave {int(r.get('wave') or 0) + 1}/{r.get('waves')}; "
        f"{st.get('updated')} updated, {st.get('ready')} ready of {st.get('placed')}; "
        f"current revision {st.get('currentRevision')}"
    )


@dataclass
class Progress:
    """status.rollout sampled while waiting: every change of (phase, wave, updated, ready)."""

    t0: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    max_updated: int = 0
    first: dict[str, float] = field(default_factory=dict)  # phase -> first seen, seconds after t0

    def add(self, st: dict[str, Any]) -> None:
        r = st.get("rollout") or {}
        now = round(time.monotonic() - self.t0, 2)
        row = {
            "revision": r.get("revision"),
            "phase": r.get("phase"),
            "wave": r.get("wave"),
            "updated": st.get("updated"),
            "ready": st.get("ready"),
        }
        if not self.samples or {k: v for k, v in self.samples[-1].items() if k != "t"} != row:
            self.samples.append({"t": now, **row})
        self.first.setdefault(f"{r.get('revision')}:{r.get('phase')}", now)
        self.max_updated = max(self.max_updated, int(st.get("updated") or 0))


def wait_rollout(
    api: Api,
    what: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    progress: Progress,
    watch: PodWatch | None = None,
) -> float:
    printed = [time.monotonic()]

    def check() -> tuple[bool, str]:
        st = idep_get(api).get("status") or {}
        progress.add(st)
        ok = done(st)
        if watch is not None:
            watch.sample(force=ok)
            ok = ok and watch.bad_now == 0
        if time.monotonic() - printed[0] >= 10:
            printed[0] = time.monotonic()
            bad = f"; {len(watch.exposed)} devices got the bad revision" if watch is not None else ""
            log(f"  {what}: {rollout_desc(st)}{bad}")
        return ok, rollout_desc(st)

    return wait(what, check, timeout, POLL)


def complete(n: int, revision: Callable[[], int | None]) -> Callable[[dict[str, Any]], bool]:
    """The rollout of `revision()` Complete, the stable one, on every device, every device Ready."""

    def pred(st: dict[str, Any]) -> bool:
        r = st.get("rollout") or {}
        rev = revision()
        return (
            rev is not None
            and r.get("revision") == rev
            and r.get("phase") == "Complete"
            and st.get("currentRevision") == rev
            and st.get("updated") == n
            and st.get("ready") == n
        )

    return pred


def new_revision(api: Api, after: int, timeout: float) -> int:
    """The revision number the operator gave the spec change just made."""
    found: list[int] = []

    def check() -> tuple[bool, str]:
        rev = (idep_get(api).get("status") or {}).get("revision")
        if isinstance(rev, int) and rev > after:
            found.append(rev)
            return True, ""
        return False, f"status.revision {rev}"

    wait("a new revision", check, timeout, 0.2)
    return found[0]


def operator_phase(f: Fleet, n: int, deadline: int, timeout: float, steps: frozenset[str] = STEPS) -> dict[str, Any]:
    api = f.api
    out: dict[str, Any] = {}
    f.create_model(NS)
    rollout = {
        "canary": 10,
        "waves": ["30%", "100%"],
        "maxUnavailable": "10%",
        "healthGate": {"readySeconds": 5, "progressDeadlineSeconds": deadline},
        "onFailure": "Rollback",
    }
    idep = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_IDEP,
        "metadata": {"name": IDEP, "namespace": NS},
        "spec": {"model": "tabular", "runtime": {"threads": 1}, "rollout": rollout},
    }
    op = f.op
    assert op is not None
    cpu0 = op.cpu_seconds() or 0.0

    def timed(what: str, change: Callable[[], int | None], watch: PodWatch | None = None) -> dict[str, Any]:
        """Make the change, then wait for its revision Complete everywhere; revision numbers are the operator's."""
        prev = (idep_get(api).get("status") or {}).get("revision") if what != "initial" else 0
        t = Timer(api)
        progress = Progress(t.t0)
        work0 = OperatorWork.read(op)
        change()
        rev = new_revision(api, int(prev or 0), timeout)
        res = t.stop(wait_rollout(api, f"operator {what}", complete(n, lambda: rev), timeout, progress, watch))
        res.update(revision=rev, samples=progress.samples, work=OperatorWork.read(op).since(work0))
        log(f"operator: {what}: revision {rev} on {n} devices in {res['seconds']}s; {res['work']}")
        return res

    out["initial"] = timed("initial", lambda: api.call("POST", IDEP_PATH, body=idep))
    if "good" in steps:
        out["good"] = timed("good", lambda: idep_patch(api, {"spec": {"runtime": {"podAnnotations": {REV: "2"}}}}))
    if "undo" in steps:
        # The undo as `kubectl edgeai rollout undo --to-revision 1` writes it.
        undo = undo_patch(idep_get(api), out["initial"]["revision"], rfc3339(dt.datetime.now(dt.UTC)))
        out["undo"] = timed("undo", lambda: idep_patch(api, undo))
    if "bad" in steps:
        operator_bad(api, n, timeout, out)
    if "flat" in steps:
        # The mechanism without the policy: spec.rollout removed, one wave, no gate.
        out["flat"] = timed(
            "one wave, no gate",
            lambda: idep_patch(
                api, {"spec": {"rollout": None, "runtime": {"podAnnotations": {REV: "4", SIM_READY: None}}}}
            ),
        )
    out["cpu_seconds"] = round((op.cpu_seconds() or 0.0) - cpu0, 1)
    out["peak_rss_mib"] = round((op.peak_rss_kib() or 0) / 1024)
    return out


def operator_bad(api: Api, n: int, timeout: float, out: dict[str, Any]) -> None:
    stable = next(out[k]["revision"] for k in ("undo", "good", "initial") if k in out)  # the last one rolled

    # The bad revision: the undone template plus the fault annotation (the native bad update's twin).
    watch = PodWatch(api, n)
    t = Timer(api)
    progress = Progress(t.t0)
    idep_patch(api, {"spec": {"runtime": {"podAnnotations": {REV: None, **BAD}}, "rollout": {"rollbackTo": None}}})
    bad = new_revision(api, stable, timeout)

    def failed(st: dict[str, Any]) -> bool:
        r = st.get("rollout") or {}
        return r.get("revision") == bad and r.get("phase") in ("RollingBack", "RolledBack", "Halted")

    def rolled_back(st: dict[str, Any]) -> bool:
        r = st.get("rollout") or {}
        rows = st.get("devices") or []
        return (
            r.get("revision") == bad
            and r.get("phase") == "RolledBack"
            and st.get("currentRevision") == stable
            and st.get("ready") == n
            and len(rows) == n
            and all(d.get("revision") == stable and d.get("ready") for d in rows)
        )

    t_fail = wait_rollout(api, "operator bad revision, to its first failure", failed, timeout, progress, watch)
    res_fail = t.stop(t_fail)
    t_back = wait_rollout(api, "operator rolling back", rolled_back, timeout, progress, watch)
    st = idep_get(api).get("status") or {}
    message = (st.get("rollout") or {}).get("message", "")
    out["bad"] = {
        "revision": bad,
        "stable": stable,
        "to_failure": res_fail["seconds"],
        "restore": round(t_back - t_fail, 2),
        "exposed": len(watch.exposed),
        "max_status_updated": progress.max_updated,
        "max_unserved": watch.max_unserved,
        "phase": (st.get("rollout") or {}).get("phase"),
        "message": message,
        "first_seen": progress.first,
        "samples": progress.samples,
        "requests": t.stop()["requests"],
    }
    log(
        f"operator: bad revision {bad} failed after {res_fail['seconds']}s, fleet back on {stable} "
        f"{out['bad']['restore']}s later; {len(watch.exposed)} devices got it ({message})"
    )


# --------------------------------------------------------------------------- C. report


def report(n: int, a: argparse.Namespace, native: dict[str, Any], oper: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    def s(x: float) -> str:
        return f"{x:.1f}"

    def ratio(o: float, nat: float) -> str:
        return f"{o / nat:.2f}x" if nat else "-"

    budget = "maxSurge 10%, maxUnavailable 0" if native["strategy"] == "surge" else "maxUnavailable 10%, maxSurge 0"
    rows = [
        (name, oper[k], native[k])
        for name, k in (
            ("first revision Ready on every device (s)", "initial"),
            ("good update: change -> every device updated (s)", "good"),
            ("undo of the good update -> converged (s)", "undo"),
        )
        if k in oper
    ]
    table: list[tuple[str, str, str, str]] = [
        (name, s(o["seconds"]), s(nat["seconds"]), ratio(o["seconds"], nat["seconds"])) for name, o, nat in rows
    ]
    nb, ob = native.get("bad"), oper.get("bad")
    if nb and ob:
        stall = f"none: no gate; {nb['updated_scheduled']}/{n} updated after {nb['left_seconds']:.0f}s" + (
            f", stalled {nb['unchanged_for_seconds']:.0f}s" if nb["stalled"] else ", still moving"
        )
        table += [
            ("bad update: change -> first failure seen (s)", s(ob["to_failure"]), stall, ""),
            (
                "bad update: failure (native: manual undo) -> restored (s)",
                f"{s(ob['restore'])} automatic",
                f"{s(native['restore']['seconds'])} by hand",
                ratio(ob["restore"], native["restore"]["seconds"]),
            ),
            (
                "bad update: devices that received it",
                str(ob["exposed"]),
                str(nb["exposed"]),
                ratio(ob["exposed"], nb["exposed"]),
            ),
            (
                "bad update: most devices with no Ready pod at once",
                str(ob["max_unserved"]),
                str(nb["max_unserved"]),
                "",
            ),
        ]
    if "flat" in oper and "good" in native:
        table.append(
            (
                "good update, operator with one wave and no gate (s)",
                s(oper["flat"]["seconds"]),
                s(native["good"]["seconds"]),
                ratio(oper["flat"]["seconds"], native["good"]["seconds"]),
            )
        )
    for k, name in (("initial", "first revision"), ("good", "good update")):
        if k in oper:
            table.append(
                (
                    f"{name}: API requests served by the cluster",
                    str(oper[k]["requests"]),
                    str(native[k]["requests"]),
                    ratio(oper[k]["requests"], native[k]["requests"]),
                )
            )
    head = ("phase", "operator", "native DaemonSet", "operator/native")
    env = [
        f"python -m benchmarks rollout --nodes {n}{' --quick' if a.quick else ''}{steps_flag(a)}: "
        f"{n} kwok edge devices, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Kubernetes {localplane.K8S_VERSION}, {time.strftime('%Y-%m-%d %H:%M')}",
        f"operator: canary 10, waves [30%, 100%] (3 waves), maxUnavailable 10%, healthGate readySeconds 5, "
        f"progressDeadlineSeconds {a.deadline}, onFailure Rollback; devices surge per device (maxSurge 1, "
        f"maxUnavailable 0); undo = spec.rollout.rollbackTo (one wave); CPU {oper['cpu_seconds']}s, "
        f"peak RSS {oper['peak_rss_mib']} MiB",
        f"native: one DaemonSet, RollingUpdate {budget}; undo = template set back (kubectl rollout undo)"
        + (f"; the bad update left {nb['left_seconds']:.0f}s before the manual undo" if nb else ""),
    ]
    if ob:
        env += [
            f"bad revision (operator): {ob['phase']}: {ob['message']}",
            "devices counted from pods (a node with a pod annotated sim.edgeai.io/ready=false; a node with no "
            f"Ready pod); operator status.updated peaked at {ob['max_status_updated']} during the bad rollout",
        ]
    env += [
        "operator work per step (deployment reconciles, their mean time, operator CPU): "
        + "; ".join(
            f"{k} {w['idep_reconciles']}, {w['idep_reconcile_mean_ms']} ms, {w['cpu_seconds']} s"
            for k in ("initial", "good", "undo", "flat")
            if k in oper and (w := oper[k].get("work"))
        ),
    ]
    text = text_table(head, table) + "\n\n" + "\n".join(env) + "\n"
    data = {
        "nodes": n,
        "table": [dict(zip(head, r, strict=True)) for r in table],
        "env": env,
        "native": native,
        "operator": oper,
    }
    return text, data


def parse_steps(text: str) -> frozenset[str]:
    steps = frozenset(x.strip() for x in text.split(",") if x.strip())
    if unknown := steps - STEPS:
        known = ", ".join(sorted(STEPS))
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(sorted(unknown))}; known: {known}")
    return steps


def steps_flag(a: argparse.Namespace) -> str:
    return "" if a.steps == STEPS else f" --steps {','.join(sorted(a.steps)) or repr('')}"


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks rollout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="60 nodes on plane rollout-bench-small: a few minutes")
    ap.add_argument("--plane", default=None, help="default rollout-bench (rollout-bench-small with --quick)")
    ap.add_argument("--deadline", type=int, default=120, help="healthGate.progressDeadlineSeconds")
    ap.add_argument("--native-bad-wait", type=float, default=60.0, help="how long the bad DaemonSet update runs")
    ap.add_argument("--native-strategy", choices=("surge", "unavailable"), default="surge")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per step")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="leave the plane up afterwards")
    ap.add_argument("--out", type=Path, default=None, help="the .txt to write (.json beside it)")
    ap.add_argument(
        "--steps",
        type=parse_steps,
        default=STEPS,
        help=f"after the first revision, only these, comma-separated, of {','.join(sorted(STEPS))} (default all; "
        "undo needs good)",
    )
    a = ap.parse_args(list(argv) if argv is not None else None)
    if "undo" in a.steps and "good" not in a.steps:
        ap.error("--steps: undo undoes the good update; add good")
    n = 60 if a.quick else a.nodes
    plane = a.plane or ("rollout-bench-small" if a.quick else "rollout-bench")
    t_all = time.monotonic()
    with fleet(plane, n, (NS,), a.threads, a.keep, log) as f:
        native = native_phase(f.api, f.art, n, a.native_strategy, a.native_bad_wait, a.timeout, a.steps)
        f.start_operator()
        oper = operator_phase(f, n, a.deadline, a.timeout, a.steps)
    text, data = report(n, a, native, oper)
    data["total_seconds"] = round(time.monotonic() - t_all)
    print(text)
    out = a.out or RESULTS / f"rollout-{time.strftime('%Y-%m-%d')}{'' if n == 1000 else f'-{n}nodes'}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    log(f"written to {out} and {out.with_suffix('.json').name} ({data['total_seconds']}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
