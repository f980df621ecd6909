"""The Helm chart on the real API server: dry-run, install, upgrade, uninstall, and its RBAC in action.

The plane has no container runtime and only kwok edge nodes (tainted): the
chart's operator Pods are created but stay Pending (their affinity keeps them
off edge nodes, which the test checks). The operator itself is run here as a
local process that authenticates with a token of the chart's ServiceAccount,
so it has exactly the chart's permissions and nothing else: it verifies a
signed model, discovers devices, places workloads and reports status, with no
request refused; and the same identity is refused what it does not need.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_operator.core import rbac
from tests.conftest import KubeHandle
from tests.unit.deploy.test_chart import CHART, KUBE_VERSION, _selectors, helm_bin, set_args

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLEET = ["edge-0", "edge-1", "edge-2"]


def wait_for(what: str, pred: Any, timeout: float = 60, log: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    tail = f"\nlog:\n{log()}" if log else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){tail}")


class Helm:
    def __init__(self, kube: KubeHandle, home: Path) -> None:
        self.kube = kube
        # helm keeps caches and repositories config under $HOME by default: keep them in the test's tmp
        self.env = dict(kube.env, HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
                        HELM_DATA_HOME=str(home / "data"))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([helm_bin(), *args, "--kubeconfig", self.kube.kubeconfig], capture_output=True,
                           text=True, env=self.env, timeout=180)
        if check and p.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
        return p

    def status(self, release: str, ns: str) -> dict[str, Any]:
        return dict(json.loads(self("status", release, "-n", ns, "-o", "json").stdout))


@pytest.fixture
def helm(kube: KubeHandle, tmp_path: Path) -> Helm:
    return Helm(kube, tmp_path / "helm")


def kget(kube: KubeHandle, *args: str) -> dict[str, Any] | None:
    p = kube.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def crds_installed(kube: KubeHandle) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=edgeai-tests", "-f",
                 str(ROOT / "crds"))
    for plural in ("edgemodels", "edgedevices", "inferencedeployments"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{plural}.edgeai.io", "--timeout=60s")


# --------------------------------------------------------------------------- dry-run


def test_rendered_chart_passes_a_strict_server_side_dry_run(kube: KubeHandle, namespace: str) -> None:
    crds_installed(kube)
    out = subprocess.run([helm_bin(), "template", "dry", str(CHART), "-n", namespace, "--include-crds",
                          "--kube-version", KUBE_VERSION,
                          *set_args({"networkPolicy.enabled": True, "replicaCount": 3,
                                     "image.digest": "sha256:" + "0" * 64})],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    # --validate=strict: the API server refuses unknown or duplicate fields, so a typo in a template fails here
    p = kube.kubectl("apply", "--dry-run=server", "--validate=strict", "--server-side", "--force-conflicts",
                     "--field-manager=dry-run-test", "-n", namespace, "-f", "-", input=out, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("(server dry run)") == len(docs), p.stdout
    assert not kube.ok("get", "deployment", "dry-edgeai-operator", "-n", namespace)  # nothing was created


# --------------------------------------------------------------------------- lifecycle


def test_install_upgrade_uninstall(kube: KubeHandle, helm: Helm, namespace: str) -> None:
    rel = f"op{uuid.uuid4().hex[:6]}"
    full = f"{rel}-edgeai-operator"
    p = helm("install", rel, str(CHART), "-n", namespace)  # no --wait: the operator pods cannot run here
    assert "edgeai-operator 0.1.0 is installed" in p.stdout  # NOTES.txt
    st = helm.status(rel, namespace)
    assert st["info"]["status"] == "deployed" and st["version"] == 1

    dep = kget(kube, "deployment", full, "-n", namespace)
    assert dep and dep["spec"]["replicas"] == 2
    for kind, name, ns in [("serviceaccount", full, namespace), ("service", f"{full}-metrics", namespace),
                           ("role", full, namespace), ("rolebinding", full, namespace),
                           ("poddisruptionbudget", full, namespace), ("clusterrole", full, None),
                           ("clusterrolebinding", full, None)]:
        assert kget(kube, kind, name, *(["-n", ns] if ns else [])), f"{kind}/{name} missing after install"
    for plural in ("edgemodels", "edgedevices", "inferencedeployments"):
        assert kget(kube, "crd", f"{plural}.edgeai.io")

    # The pods exist and are refused by every node: the only nodes are (tainted) edge nodes.
    def unschedulable() -> list[str]:
        pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={rel}",
                                       "-o", "json").stdout)["items"]
        msgs = [c.get("message", "") for p in pods for c in p["status"].get("conditions", [])
                if c["type"] == "PodScheduled" and c["status"] == "False"]
        return msgs if len(msgs) == 2 else []

    if kube.simulated:  # on a real cluster with cloud nodes the pods would simply run
        msgs = wait_for("the operator pods to be judged unschedulable", unschedulable, 60)
        assert all("node affinity" in m or "taint" in m for m in msgs), msgs

    helm("upgrade", rel, str(CHART), "-n", namespace, "--reuse-values",
         *set_args({"replicaCount": 3, "logLevel": "debug"}))
    st = helm.status(rel, namespace)
    assert st["info"]["status"] == "deployed" and st["version"] == 2
    dep = kget(kube, "deployment", full, "-n", namespace)
    assert dep and dep["spec"]["replicas"] == 3
    assert "--log-level=debug" in dep["spec"]["template"]["spec"]["containers"][0]["args"]

    bad = helm("upgrade", rel, str(CHART), "-n", namespace, "--reuse-values", *set_args({"replicaCount": 0}),
               check=False)
    assert bad.returncode != 0 and "/replicaCount" in bad.stderr
    assert helm.status(rel, namespace)["version"] == 2  # a refused upgrade leaves the release alone

    helm("uninstall", rel, "-n", namespace, "--wait", "--timeout", "60s")
    assert not kube.ok("get", "deployment", full, "-n", namespace)
    assert not kube.ok("get", "clusterrole", full)
    assert not kube.ok("get", "clusterrolebinding", full)
    # CRDs stay: deleting them would delete every EdgeModel and InferenceDeployment in the cluster
    assert kget(kube, "crd", "edgemodels.edgeai.io")


# --------------------------------------------------------------------------- RBAC


@pytest.fixture(scope="module")
def release(kube: KubeHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One installed release for the RBAC tests (an install per test would only cost time)."""
    crds_installed(kube)
    helm = Helm(kube, tmp_path_factory.mktemp("helm"))
    ns = f"rb-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", ns)
    rel = "rbac"
    helm("install", rel, str(CHART), "-n", ns)
    full = f"{rel}-edgeai-operator"
    try:
        yield {"release": rel, "ns": ns, "sa": full, "user": f"system:serviceaccount:{ns}:{full}"}
    finally:
        helm("uninstall", rel, "-n", ns, check=False)
        kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)


Check = tuple[str | None, str, str, str, str | None]  # namespace, verb, group, resource[/sub], name


def can_all(kube: KubeHandle, user: str, checks: list[Check]) -> list[bool]:
    """SubjectAccessReviews for the service account, in one call: the API server's own answers."""
    sa_ns = user.split(":")[2]
    reviews = []
    for ns, verb, group, resource, name in checks:
        plural, _, sub = resource.partition("/")
        attrs: dict[str, Any] = {"verb": verb, "group": group, "resource": plural}
        if sub:
            attrs["subresource"] = sub
        if ns:
            attrs["namespace"] = ns
        if name:
            attrs["name"] = name
        reviews.append({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                        "spec": {"user": user, "resourceAttributes": attrs, "groups": [
                            "system:serviceaccounts", f"system:serviceaccounts:{sa_ns}", "system:authenticated"]}})
    text = kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": reviews})).stdout
    items, pos, dec = [], 0, json.JSONDecoder()
    while pos < len(text.rstrip()):  # kubectl prints one JSON document per created object
        obj, end = dec.raw_decode(text, pos)
        items.extend(obj["items"] if obj.get("kind") == "List" else [obj])
        pos = end + (len(text[end:]) - len(text[end:].lstrip()))
    assert len(items) == len(checks)
    return [bool(i["status"].get("allowed")) for i in items]


def can(kube: KubeHandle, user: str, ns: str | None, verb: str, group: str, resource: str,
        name: str | None = None) -> bool:
    return can_all(kube, user, [(ns, verb, group, resource, name)])[0]


def test_service_account_may_do_everything_rbac_py_lists(kube: KubeHandle, release: dict[str, str]) -> None:
    user, own = release["user"], release["ns"]
    elsewhere = "some-team"  # namespaced kinds live in any namespace: the grant must be cluster-wide
    checks: list[Check] = [(elsewhere, verb, rule.api_group, res, None)
                           for rule in rbac.CLUSTER_RULES for res in rule.resources for verb in rule.verbs]
    checks += [(own, verb, rule.api_group, res, "edgeai-operator")
               for rule in rbac.NAMESPACE_RULES for res in rule.resources for verb in rule.verbs]
    missing = [c[1:4] for c, ok in zip(checks, can_all(kube, user, checks), strict=True) if not ok]
    assert not missing, f"the chart's RBAC does not grant {missing}"


@pytest.mark.parametrize(("verb", "group", "resource", "where"), [
    ("delete", "", "nodes", None),
    ("patch", "", "nodes", None),
    ("update", "", "nodes", None),
    ("list", "", "secrets", "some-team"),       # reads only the Secrets models name, by name
    ("watch", "", "secrets", "some-team"),
    ("create", "", "secrets", "some-team"),
    ("delete", "", "secrets", "some-team"),
    ("get", "", "configmaps", "some-team"),
    ("patch", "edgeai.io", "edgemodels", "some-team"),  # never writes a spec (GitOps owns it)
    ("update", "edgeai.io", "inferencedeployments", "some-team"),
    ("delete", "edgeai.io", "edgemodels", "some-team"),
    ("update", "edgeai.io", "edgedevices", None),
    ("update", "apps", "deployments", "some-team"),
    ("update", "", "pods", "some-team"),  # creates, patches metadata and deletes its model servers, never updates
    ("create", "", "pods/exec", "some-team"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", None),
    ("create", "rbac.authorization.k8s.io", "clusterroles", None),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
    ("impersonate", "", "users", None),
    ("create", "", "serviceaccounts/token", "some-team"),
    ("get", "coordination.k8s.io", "leases", "some-team"),  # leader election only at home
    ("delete", "coordination.k8s.io", "leases", "OWN"),
])
def test_service_account_is_refused_what_it_does_not_need(kube: KubeHandle, release: dict[str, str], verb: str,
                                                          group: str, resource: str, where: str | None) -> None:
    ns = release["ns"] if where == "OWN" else where
    assert not can(kube, release["user"], ns, verb, group, resource), f"{verb} {group}/{resource} is granted"


def test_lease_access_is_only_to_the_operators_lease(kube: KubeHandle, release: dict[str, str]) -> None:
    user, own = release["user"], release["ns"]
    assert can(kube, user, own, "update", "coordination.k8s.io", "leases", name="edgeai-operator")
    assert not can(kube, user, own, "update", "coordination.k8s.io", "leases", name="someone-elses-lease")


CLUSTER_SCOPED = {"nodes", "edgedevices", "edgedevices/status", "customresourcedefinitions"}


def _requests(samples: dict[str, float]) -> set[tuple[str, str, str]]:
    """(verb, resource, code) from edgeai_operator_api_requests_total{code=..,resource=..,verb=..} samples."""
    out = set()
    for key in samples:
        if key.startswith("edgeai_operator_api_requests_total{"):
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1:-1].split(","))
            out.add((labels["verb"].strip('"'), labels["resource"].strip('"'), labels["code"].strip('"')))
    return out


def token_kubeconfig(kube: KubeHandle, ns: str, sa: str, path: Path) -> Path:
    token = kube.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    cfg = json.loads(Path(kube.kubeconfig).read_text())
    cfg["users"] = [{"name": sa, "user": {"token": token}}]
    for c in cfg["contexts"]:
        c["context"]["user"] = sa
    path.write_text(json.dumps(cfg))
    return path


def test_a_real_token_is_refused_destructive_calls(kube: KubeHandle, release: dict[str, str],
                                                   tmp_path: Path) -> None:
    cfg = token_kubeconfig(kube, release["ns"], release["sa"], tmp_path / "sa.kubeconfig")
    env = dict(os.environ, KUBECONFIG=str(cfg))

    def sa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kube.kubectl_bin, *args], capture_output=True, text=True, env=env, timeout=60)

    assert sa("get", "edgedevices").returncode == 0
    assert sa("get", "nodes").returncode == 0
    # --dry-run=server: were RBAC wrong, the shared plane would still keep its node and secrets
    for args in (["delete", "node", "edge-0", "--dry-run=server"],
                 ["get", "secrets", "-n", "kube-system"],
                 ["create", "secret", "generic", "x", "-n", release["ns"], "--dry-run=server"]):
        p = sa(*args)
        assert p.returncode != 0 and "forbidden" in p.stderr.lower(), (args, p.stderr)
        assert release["user"] in p.stderr


# --------------------------------------------------------------------------- the operator, as the chart's identity


def test_operator_does_all_its_work_as_the_chart_service_account(kube: KubeHandle, release: dict[str, str],
                                                                  tmp_path: Path) -> None:
    from edge_operator.testing import ModelServer, OperatorProcess
    from edge_runtime.artifacts import integrity
    from edge_runtime.models_zoo import build_tabular

    if not kube.simulated:
        pytest.skip("places models on the simulated kwok fleet (edge-0..2): only on the local plane")
    fleet = [n for n in FLEET if kube.ready_nodes([n]) == 1]  # whatever earlier tests did to the fleet
    assert fleet, "no Ready edge node among edge-0..2"
    cfg = token_kubeconfig(kube, release["ns"], release["sa"], tmp_path / "sa.kubeconfig")
    team = f"team-{uuid.uuid4().hex[:6]}"  # models live in a user namespace, not the operator's
    kube.kubectl("create", "namespace", team)
    key = integrity.generate_private_key("ed25519")
    path = build_tabular(tmp_path / "models" / "tab.onnx")
    digest = integrity.hash_file(path)
    sig = integrity.sign_digest(key, digest.sha256)
    kube.kubectl("create", "secret", "generic", "model-key", "-n", team,
                 f"--from-literal=public.pem={integrity.public_key_pem(key).decode()}")
    op = None
    try:
        with ModelServer(tmp_path / "models") as server:
            op = OperatorProcess(str(cfg), tmp_path / "operator.log", namespace=release["ns"],
                                 identity="chart-sa", env={"EDGEAI_RESYNC_SECONDS": "15"}).start()
            op.wait_ready(90)
            wait_for("leadership (the Lease, through the chart's Role)", op.is_leader, 60, op.log_tail)
            kube.apply([
                {"apiVersion": "edgeai.io/v1alpha1", "kind": "EdgeModel",
                 "metadata": {"name": "tab", "namespace": team},
                 "spec": {"version": "1.0.0",
                          "source": {"uri": server.url("tab.onnx"), "sha256": digest.sha256, "size": digest.size},
                          "signature": {"publicKeySecretRef": {"name": "model-key"}, "value": sig}}},
                {"apiVersion": "edgeai.io/v1alpha1", "kind": "InferenceDeployment",
                 "metadata": {"name": "tab", "namespace": team},
                 "spec": {"model": "tab", "deviceSelector": {"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": fleet}]}}},
            ])

            def condition(kind: str, ctype: str) -> str | None:
                obj = kget(kube, kind, "tab", "-n", team) or {}
                for c in (obj.get("status") or {}).get("conditions") or []:
                    if c["type"] == ctype:
                        return str(c["status"]) + ":" + str(c.get("reason"))
                return None

            # Secret read by name + stream and hash + signature + status patch
            verified = wait_for("the model to be Verified", lambda: condition("edgemodel", "Verified")
                                in ("True:Verified",), 90, op.log_tail)
            assert verified
            # devices discovered from Nodes, children created and watched, status written back
            wait_for("the deployment to be Ready on the fleet",
                     lambda: (condition("inferencedeployment", "Ready") or "").startswith("True"), 120, op.log_tail)
            # the GitOps health checks (docs/gitops/) on what the real operator wrote
            from tests.unit.deploy.test_chart_gitops import argocd_health, flux_health

            for kind, name, ns in [("EdgeModel", "tab", team), ("InferenceDeployment", "tab", team),
                                   *[("EdgeDevice", d, None) for d in fleet]]:
                live = kget(kube, kind.lower(), name, *(["-n", ns] if ns else [])) or {}
                assert argocd_health(kind, live)[0] == "Healthy", (kind, name, argocd_health(kind, live), live)
                assert flux_health(kind, live) == "Current", (kind, name, live.get("status"))
            # and the kubectl plugin's fleet table on the same objects
            import sys

            def fleet_table() -> list[dict[str, Any]]:
                return list(json.loads(subprocess.run(
                    [str(Path(sys.executable).parent / "kubectl-edgeai"), "fleet", "-n", team, "--serving-only",
                     "-o", "json", "--kubeconfig", kube.kubeconfig], capture_output=True, text=True, check=True,
                    timeout=60).stdout))

            fleet_rows = wait_for("every device to report its model server Ready",
                                  lambda: (rows := fleet_table()) and all(r["phase"] == "Ready" for r in rows)
                                  and rows, 60, op.log_tail)
            assert sorted(r["device"] for r in fleet_rows) == sorted(fleet)
            for r in fleet_rows:
                assert (r["deployment"], r["model"], r["sha256"], r["online"]) == (
                    f"{team}/tab", "tab", digest.sha256, "yes"), r
            children = json.loads(kube.kubectl("get", "pods", "-n", team, "-o", "json").stdout)["items"]
            assert len(children) == len(fleet)  # one model server Pod per device, nothing else
            for dev in fleet:
                ed = kget(kube, "edgedevice", dev) or {}
                assert (ed.get("status") or {}).get("online") is True, dev

            samples = op.metrics()
            # Every request the operator made (its own count, by verb and resource) is one the chart's
            # RBAC allows. A 403 that RBAC would allow is not RBAC's: e.g. an Event posted into a
            # namespace an earlier test is still deleting (NamespaceLifecycle refuses new content).
            used = _requests(samples)
            assert used, "the operator reported no API requests"
            groups = {res: {r.api_group for r in rbac.CLUSTER_RULES + rbac.NAMESPACE_RULES if res in r.resources}
                      for _, res, _ in used}
            for verb, res, code in sorted(used):
                assert groups[res], f"the operator used {verb} {res}, which edge_operator/rbac.py does not list"
                ns = release["ns"] if res == "leases" else team
                ok = any(can(kube, release["user"], None if res in CLUSTER_SCOPED else ns, verb, g, res,
                             name="edgeai-operator" if res == "leases" else None) for g in groups[res])
                assert ok, f"{verb} {res} (HTTP {code}) is not granted to the chart's ServiceAccount"
            log = (tmp_path / "operator.log").read_text(errors="replace")
            assert "Forbidden" not in log, op.log_tail(80)  # kopf's watches and lists (not counted above)

            # every alert of the chart on the operator's series selects series this operator really exports,
            # label values included (alerts on the edge runtime's series, e.g. the quality breach, are held
            # against the runtime's own registry in tests/unit/deploy)
            from tests.unit.deploy.test_chart import _monitoring, one

            rule = one(_monitoring(), "PrometheusRule")
            for r in (r for g in rule["spec"]["groups"] for r in g["rules"]):
                for metric, matchers in _selectors(r["expr"]):
                    if metric.endswith("_total") or not metric.startswith("edgeai_operator_"):
                        continue  # counters have a series per label value only once counted; unit-tested by name
                    series = [k for k in samples if k == metric or k.startswith(metric + "{")]
                    assert series, f"{r['alert']}: no {metric} series at /metrics"
                    # the fleet gauges: equality matchers (not !=) must match a label value they report
                    eq = {k: v for k, v in matchers.items() if f'{k}!="{v}"' not in r["expr"]}
                    assert any(all(f'{k}="{v}"' in s for k, v in eq.items()) for s in series), (
                        f"{r['alert']}: no {metric} series with {eq}: {series}")
    finally:
        if op is not None:
            op.stop()
        kube.kubectl("delete", "namespace", team, "--wait=false", check=False)
