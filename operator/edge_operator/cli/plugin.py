"""`kubectl edgeai`: the fleet, rollouts and model verification from the command line.

Installed as the executable `kubectl-edgeai`, which kubectl finds on PATH, so
`kubectl edgeai fleet` works; it also runs on its own. What it shows is built
by the pure functions in plugin_view; this module only reads and patches
objects. Pause, resume and undo are spec fields, so the same change can come
from Git: the plugin is one more client, not a side door.

    kubectl edgeai fleet [-l SELECTOR] [-n NS | -A] [-o table|wide|json]
    kubectl edgeai rollout status IDEP [--watch/--no-watch] [--timeout 5m]
    kubectl edgeai rollout history IDEP
    kubectl edgeai rollout pause|resume IDEP
    kubectl edgeai rollout undo IDEP [--to-revision N]
    kubectl edgeai model verify EM [--no-trigger] [--wait] [--timeout 2m]
    kubectl edgeai cache status IDEP [--via-apiserver] [--timeout 3s] [-o table|json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from edge_operator.cli import plugin_view as view
from edge_operator.core.manifests import label_value
from edgeai_api import constants

GROUP = constants.GROUP
VERSION = constants.VERSION
FIELD_MANAGER = "kubectl-edgeai"  # not the operator's: managedFields show who paused a rollout
REQUEST_TIMEOUT = 15  # seconds per API call: a dead cluster must not hang a shell
# (plural, kind, namespaced) of the kinds the plugin touches
EDGEMODELS = (constants.PLURAL_MODEL, constants.KIND_MODEL, True)
EDGEDEVICES = (constants.PLURAL_DEVICE, constants.KIND_DEVICE, False)
IDEPS = (constants.PLURAL_IDEP, constants.KIND_IDEP, True)


class PluginError(Exception):
    """A problem the user can act on; printed as one line, exit code 1."""


# --------------------------------------------------------------------------- API access


class Cluster:
    """The few API calls the plugin makes, with errors turned into sentences."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        # Imported here: `--help` and usage errors stay instant without the kubernetes client.
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        self._client = client
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        try:
            if path is None and not os.path.exists(os.path.expanduser("~/.kube/config")) \
                    and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                self.api = client.ApiClient()
                default_ns = _incluster_namespace()
            else:
                self.api = config.new_client_from_config(config_file=path, context=context)  # type: ignore[no-untyped-call]
                default_ns = _kubeconfig_namespace(config, path, context)
        except (ConfigException, OSError, TypeError, ValueError) as e:
            where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise PluginError(f"no usable cluster configuration ({where}): {e}") from None
        self.host = str(self.api.configuration.host)
        self.namespace = namespace or default_ns or "default"
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, what: str, kind: tuple[str, str, bool], fn: Callable[[], Any],
              name: str | None = None, namespace: str | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as e:
            raise PluginError(self._explain(e, what, kind, name, namespace)) from None
        except HTTPError as e:
            raise PluginError(f"cannot reach the cluster at {self.host}: {_root_cause(e)}") from None

    def _explain(self, e: Any, what: str, kind: tuple[str, str, bool], name: str | None,
                 namespace: str | None) -> str:
        plural, kname, namespaced = kind
        body: dict[str, Any] = {}
        with contextlib.suppress(TypeError, ValueError):
            body = json.loads(e.body or "{}")
        where = f" in namespace {namespace!r}" if namespaced and namespace else ""
        if e.status == 404:
            details = body.get("details") or {}
            if name and details.get("name") == name:
                return f"{kname} {name!r} not found{where}"
            return (f"the cluster does not serve {plural}.{GROUP}/{VERSION}: are the edgeai CRDs installed? "
                    f"(kubectl apply -f crds/, or helm install the edgeai-operator chart)")
        if e.status == 403:
            return f"forbidden to {what} {plural}{where}: {body.get('message') or e.reason}"
        if e.status == 401:
            return f"the cluster at {self.host} rejected our credentials: {body.get('message') or e.reason}"
        if e.status == 422:
            return f"the cluster refused to {what} {kname} {name!r}: {body.get('message') or e.reason}"
        return f"{what} {plural}{where} failed: HTTP {e.status} {body.get('message') or e.reason}"

    def list(self, kind: tuple[str, str, bool], namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        plural, _, namespaced = kind
        kw: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
        if label_selector:
            kw["label_selector"] = label_selector
        if namespaced and namespace:
            got = self._call("list", kind, lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **kw), namespace=namespace)
        else:
            got = self._call("list", kind, lambda: self.custom.list_cluster_custom_object(
                GROUP, VERSION, plural, **kw))
        return list(got.get("items") or [])

    def get(self, kind: tuple[str, str, bool], name: str) -> dict[str, Any]:
        plural = kind[0]
        got = self._call("get", kind, lambda: self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, _request_timeout=REQUEST_TIMEOUT),
            name=name, namespace=self.namespace)
        return dict(got)

    def patch(self, kind: tuple[str, str, bool], name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch: touches only the fields named, so it composes with GitOps ownership."""
        plural = kind[0]

        def call() -> Any:
            # Say merge-patch explicitly: CRDs refuse strategic merge, whatever the client's default.
            return self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, patch, field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT)

        return dict(self._call("patch", kind, call, name=name, namespace=self.namespace))

    def raw_get(self, path: str, query: Sequence[tuple[str, str]] = (),
                timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
        """GET a path of the API server (a core list, a Pod's proxy): (HTTP status, body), never raising
        on an HTTP error status; the caller says what the status means where it asked."""
        args = self.api.param_serialize(method="GET", resource_path=path, query_params=list(query),
                                        header_params={"Accept": "application/json"},
                                        auth_settings=["BearerToken"])
        resp = self.api.call_api(*args, _request_timeout=timeout)
        data: bytes = resp.read()  # type: ignore[no-untyped-call]
        return int(resp.status), data


def _root_cause(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason or e)


def _kubeconfig_namespace(config: Any, path: str | None, context: str | None) -> str | None:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except Exception:  # a missing namespace is not worth failing for: the client already loaded
        return None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    ns = ((chosen or {}).get("context") or {}).get("namespace")
    return str(ns) if ns else None


def _incluster_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------- commands


def cmd_fleet(c: Cluster, a: argparse.Namespace) -> int:
    devices = c.list(EDGEDEVICES, label_selector=a.selector)
    ns = None if a.all_namespaces or not a.namespace_given else c.namespace
    deployments = c.list(IDEPS, namespace=ns)
    rows = view.fleet_rows(devices, deployments, namespace=ns, show_idle=not a.serving_only)
    if a.selector:
        names = {d["metadata"]["name"] for d in devices}
        rows = [r for r in rows if r.device in names]
    if a.output == "json":
        print(view.fleet_json(rows))
        return 0
    if not rows:
        print("No edge devices found." if not devices else "No placements found.")
        return 0
    print(view.fleet_table(rows, wide=a.output == "wide"))
    print(view.fleet_summary(rows), file=sys.stderr)
    return 0


def cmd_rollout_status(c: Cluster, a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.timeout
    idep = c.get(IDEPS, a.name)
    last = ""
    if not a.watch:
        v = view.rollout_verdict(idep)
        print(v.message)
        details = view.rollout_details(idep)
        if details:
            print(details)
        return 0 if v.state == "complete" else 1
    while True:
        v = view.rollout_verdict(idep)
        if v.message != last:
            print(v.message, flush=True)
            last = v.message
        if v.done:
            return 0 if v.state == "complete" else 1
        if time.monotonic() >= deadline:
            print(f"error: timed out after {a.timeout:g}s waiting for the rollout of {a.name!r}", file=sys.stderr)
            return 1
        time.sleep(a.interval)
        idep = c.get(IDEPS, a.name)


def cmd_rollout_history(c: Cluster, a: argparse.Namespace) -> int:
    print(view.revision_history(c.get(IDEPS, a.name)))
    return 0


def cmd_rollout_pause(c: Cluster, a: argparse.Namespace) -> int:
    return _set_paused(c, a.name, True)


def cmd_rollout_resume(c: Cluster, a: argparse.Namespace) -> int:
    return _set_paused(c, a.name, False)


def _set_paused(c: Cluster, name: str, paused: bool) -> int:
    idep = c.get(IDEPS, name)
    word = "paused" if paused else "resumed"
    if bool(view.get_path(idep, "spec", "rollout", "paused")) == paused:
        print(f"inferencedeployment.{GROUP}/{name} already {word if paused else 'running (not paused)'}")
        return 0
    c.patch(IDEPS, name, {"spec": {"rollout": {"paused": paused}}})
    print(f"inferencedeployment.{GROUP}/{name} {word}")
    return 0


def cmd_rollout_undo(c: Cluster, a: argparse.Namespace) -> int:
    idep = c.get(IDEPS, a.name)
    revision = a.to_revision
    if revision is not None and revision < 1:
        raise PluginError(f"--to-revision must be a revision number >= 1, got {revision}")
    try:
        patch = view.undo_patch(idep, revision, view.rfc3339(dt.datetime.now(dt.UTC)))
    except ValueError as e:
        raise PluginError(str(e)) from None
    c.patch(IDEPS, a.name, patch)
    target = f"revision {patch['spec']['rollout']['rollbackTo']['revision']}"
    print(f"inferencedeployment.{GROUP}/{a.name} rolling back to {target}")
    return 0


def cmd_model_verify(c: Cluster, a: argparse.Namespace) -> int:
    em = c.get(EDGEMODELS, a.name)
    print(view.model_summary(em))
    if not a.trigger:
        verdict = view.model_verified(em)
        return 0 if verdict else 1
    now = dt.datetime.now(dt.UTC)
    stamp = view.rfc3339(now)
    c.patch(EDGEMODELS, a.name, {"metadata": {"annotations": {view.REVERIFY_ANNOTATION: stamp}}})
    print(f"\nre-verification requested ({view.REVERIFY_ANNOTATION}={stamp})")
    if not a.wait:
        return 0
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        time.sleep(a.interval)
        em = c.get(EDGEMODELS, a.name)
        if view.verified_since(em, now, stamp):
            print(view.model_summary(em))
            return 0 if view.model_verified(em) else 1
    print(f"error: timed out after {a.timeout:g}s waiting for the operator to re-verify {a.name!r}", file=sys.stderr)
    return 1


STATUS_LIMIT = 8 << 20  # bytes of a cache's /v1/status read at most: its blob list is ~100 bytes a blob


def cmd_cache_status(c: Cluster, a: argparse.Namespace) -> int:
    idep = c.get(IDEPS, a.name)
    targets = view.cache_targets(idep)
    if not targets:
        off = view.get_path(idep, "spec", "siteCache") is None
        print(f"{a.name!r} has no site caches: " + ("spec.siteCache is not set" if off else
                                                   "the operator has reported none yet (status.siteCaches)"))
        return 0
    readers: dict[int, Callable[[], view.CacheReading]] = {}
    if a.via_apiserver:
        pods = _cache_pods(c, a.name, a.timeout)
        for i, t in enumerate(targets):
            if t.node:  # the operator's own caches; one the user runs has no Pod to proxy to
                readers[i] = _proxy_reader(c, t, pods, a.timeout)
    else:
        for i, t in enumerate(targets):
            if t.endpoint:
                readers[i] = _direct_reader(t, a.timeout)
    readings = [view.CacheReading(t, "", None) for t in targets]
    # Every cache at once, each bounded: one site out of reach costs the timeout once, not once per site.
    # Daemon threads: a cache that answers too slowly is reported as such and never holds the exit.
    done: dict[int, view.CacheReading] = {}
    threads = []
    for i, read in readers.items():
        th = threading.Thread(target=lambda i=i, read=read: done.__setitem__(i, read()), daemon=True)
        th.start()
        threads.append(th)
    deadline = time.monotonic() + a.timeout + 2  # the per-request timeout is per socket operation
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    for i in readers:
        how = "apiserver" if a.via_apiserver else "direct"
        readings[i] = done.get(i) or view.CacheReading(targets[i], how, None,
                                                     f"no answer within {a.timeout:g}s")
    if a.output == "json":
        print(view.cache_json(readings))
    else:
        print(view.cache_table(readings))
        print(view.cache_summary(readings), file=sys.stderr)
    return 1 if any(r.via and r.status is None for r in readings) else 0


def _direct_reader(t: view.CacheTarget, timeout: float) -> Callable[[], view.CacheReading]:
    def read() -> view.CacheReading:
        url = t.endpoint.rstrip("/") + "/v1/status"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                body = r.read(STATUS_LIMIT + 1)
        except urllib.error.HTTPError as e:
            return view.CacheReading(t, "direct", None, f"{url}: HTTP {e.code} {e.reason}")
        except (OSError, ValueError) as e:  # refused, no route, timeout, a malformed endpoint
            return view.CacheReading(t, "direct", None, f"{url}: {_root_cause(e)}")
        return _parsed(t, "direct", url, body)

    return read


def _cache_pods(c: Cluster, name: str, timeout: float) -> dict[str, list[dict[str, Any]]] | str:
    """The deployment's cache Pods by site label value, or why they could not be listed."""
    # The labels the operator puts on a cache's Pods (core/site_cache.py): its deployment's, its site's.
    selector = f"{constants.L_SITE_CACHE}={label_value(name)}"
    path = f"/api/v1/namespaces/{c.namespace}/pods"
    try:
        status, body = c.raw_get(path, [("labelSelector", selector)], timeout)
    except Exception as e:  # urllib3's errors and timeouts: the API server itself is out of reach
        return f"cannot list the cache Pods: {_root_cause(e)}"
    if status != 200:
        return f"cannot list the cache Pods (pods in namespace {c.namespace!r}): {_status_message(status, body)}"
    by_site: dict[str, list[dict[str, Any]]] = {}
    for pod in json.loads(body).get("items") or []:
        by_site.setdefault(str(view.get_path(pod, "metadata", "labels", constants.A_SITE)), []).append(pod)
    return by_site


def _proxy_reader(c: Cluster, t: view.CacheTarget, pods: dict[str, list[dict[str, Any]]] | str,
                  timeout: float) -> Callable[[], view.CacheReading]:
    def read() -> view.CacheReading:
        if isinstance(pods, str):
            return view.CacheReading(t, "apiserver", None, pods)
        target = view.cache_pod(pods.get(label_value(t.site), []))
        if isinstance(target, str):
            return view.CacheReading(t, "apiserver", None, target)
        pod, port = target
        path = f"/api/v1/namespaces/{c.namespace}/pods/{pod}:{port}/proxy/v1/status"
        try:
            status, body = c.raw_get(path, timeout=timeout)
        except Exception as e:  # as in _cache_pods: a timeout or a dropped connection to the API server
            return view.CacheReading(t, "apiserver", None, f"pod {pod}: {_root_cause(e)}")
        if status != 200:
            return view.CacheReading(t, "apiserver", None, f"pod {pod}: {_status_message(status, body)}")
        return _parsed(t, "apiserver", f"pod {pod}", body)

    return read


def _parsed(t: view.CacheTarget, via: str, where: str, body: bytes) -> view.CacheReading:
    if len(body) > STATUS_LIMIT:
        return view.CacheReading(t, via, None, f"{where}: a status over {STATUS_LIMIT >> 20} MiB, not read")
    try:
        got = json.loads(body)
    except ValueError:
        return view.CacheReading(t, via, None, f"{where}: not a site cache's status (not JSON)")
    if not isinstance(got, dict) or not isinstance(got.get("hits"), int):
        return view.CacheReading(t, via, None, f"{where}: not a site cache's status (no hits)")
    return view.CacheReading(t, via, got)


def _status_message(status: int, body: bytes) -> str:
    """An API server's error answer in one line: its Status message when it sent one."""
    try:
        got = json.loads(body)
        message = got.get("message") if isinstance(got, dict) else None
    except ValueError:
        message = None
    return f"HTTP {status}: {message or body[:200].decode('utf-8', 'replace').strip() or 'no message'}"


# --------------------------------------------------------------------------- CLI


def _duration(text: str) -> float:
    """kubectl-style durations: 90, 90s, 5m, 1h."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip()
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30s, 5m or 1h") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # The connection flags work before or after the subcommand, as kubectl's do;
    # SUPPRESS keeps a subparser from overwriting a value given earlier.
    conn = _Parser(add_help=False)
    conn.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
    conn.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    conn.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)")

    p = _Parser(prog="kubectl edgeai", parents=[conn],
                description="Fleet status, rollouts and model verification for the edgeai operator.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    f = sub.add_parser("fleet", parents=[conn], help="what every edge device serves, as a table")
    f.add_argument("-A", "--all-namespaces", action="store_true", help="deployments in every namespace (default "
                   "unless -n is given)")
    f.add_argument("-l", "--selector", help="label selector over EdgeDevices")
    f.add_argument("-o", "--output", choices=("table", "wide", "json"), default="table")
    f.add_argument("--serving-only", action="store_true", help="hide devices that serve nothing")
    f.set_defaults(func=cmd_fleet)

    r = sub.add_parser("rollout", parents=[conn],
                       help="status, history, pause, resume or undo an InferenceDeployment's rollout")
    rs = r.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    st = rs.add_parser("status", parents=[conn], help="wait for a rollout to finish (or show it once)")
    st.add_argument("name", metavar="IDEP")
    st.add_argument("-w", "--watch", action=argparse.BooleanOptionalAction, default=True,
                    help="keep watching until the rollout completes, fails or pauses (default)")
    st.add_argument("--timeout", type=_duration, default=_duration("5m"), help="give up after (default 5m)")
    st.set_defaults(func=cmd_rollout_status)
    for action, fn, text in (("history", cmd_rollout_history, "the revisions, their digests and outcomes"),
                             ("pause", cmd_rollout_pause, "stop the rollout after the current wave"),
                             ("resume", cmd_rollout_resume, "continue a paused rollout")):
        x = rs.add_parser(action, parents=[conn], help=text)
        x.add_argument("name", metavar="IDEP")
        x.set_defaults(func=fn)
    u = rs.add_parser("undo", parents=[conn], help="roll back to the previous (or a given) revision")
    u.add_argument("name", metavar="IDEP")
    u.add_argument("--to-revision", type=int, default=None, help="revision number (default: the previous one)")
    u.set_defaults(func=cmd_rollout_undo)

    m = sub.add_parser("model", parents=[conn], help="EdgeModel commands")
    ms = m.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    v = ms.add_parser("verify", parents=[conn], help="show verification and ask the operator to verify again")
    v.add_argument("name", metavar="EM")
    v.add_argument("--trigger", action=argparse.BooleanOptionalAction, default=True,
                   help=f"set the {view.REVERIFY_ANNOTATION} annotation to re-verify (default)")
    v.add_argument("--wait", action="store_true", help="wait for the operator to finish re-verifying")
    v.add_argument("--timeout", type=_duration, default=_duration("2m"), help="with --wait (default 2m)")
    v.set_defaults(func=cmd_model_verify)

    ca = sub.add_parser("cache", parents=[conn], help="site caches (spec.siteCache)")
    cs = ca.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    s = cs.add_parser(
        "status", parents=[conn], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="what each site's cache holds, its hits and misses, bytes served and taken from the origin",
        description=(
            "One row per site of the InferenceDeployment's status.siteCaches, with the numbers the cache\n"
            "itself answers on GET /v1/status: entries, bytes held / max, hits, misses, hit ratio, bytes\n"
            "served to devices, bytes taken from the origin, failed origin fetches. The operator never\n"
            "connects to edge nodes, so these numbers are read now, from here:\n"
            "  default          from each row's endpoint (http://<gateway>:<port>), for a machine that\n"
            "                   reaches the sites (a VPN, a site's own network);\n"
            "  --via-apiserver  through the API server's Pod proxy\n"
            "                   (/api/v1/namespaces/NS/pods/POD:PORT/proxy/v1/status), where the API\n"
            "                   server reaches the gateways (on KubeEdge: cloudcore's stream tunnel or\n"
            "                   EdgeMesh); needs get on pods/proxy. Caches you run yourself\n"
            "                   (spec.siteCache.endpoints) have no Pod: read those directly.\n"
            "A cache that cannot be read gets the reason in its row; the others still print. Every cache is\n"
            "asked at once and each answer waits at most --timeout.\n"
            "Exit status: 0 when every cache asked was read, 1 when one was not."))
    s.add_argument("name", metavar="IDEP")
    s.add_argument("--via-apiserver", action="store_true", help="read each cache through the API server's "
                   "Pod proxy instead of its endpoint")
    s.add_argument("--timeout", type=_duration, default=_duration("3s"), help="per cache (default 3s)")
    s.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="json: every row with the cache's whole /v1/status (its blobs included)")
    s.set_defaults(func=cmd_cache_status)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    a.namespace_given = getattr(a, "namespace", None) is not None
    a.interval = float(os.environ.get("KUBECTL_EDGEAI_POLL_SECONDS", "1"))
    try:
        c = Cluster(getattr(a, "kubeconfig", None), getattr(a, "context", None), getattr(a, "namespace", None))
        rc: int = a.func(c, a)
        return rc
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
