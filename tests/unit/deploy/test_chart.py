"""The Helm chart, rendered by the real helm binary (built by hack/plane.py; no cluster needed).

What a reviewer of an operator chart checks: lint, CRDs identical to crds/,
RBAC equal to what the operator uses (edge_operator/rbac.py), a hardened pod,
values rejected with messages that name the problem, and alerts that query
metrics the operator really exports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "edgeai-operator"
KUBE_VERSION = "1.34.4"  # helm built from source defaults to v1.20 offline; say which cluster we render for
sys.path.insert(0, str(ROOT / "hack"))

import plane  # noqa: E402


def helm_bin() -> str:
    p = plane.binaries()["helm"]
    if not p.exists():
        pytest.skip(f"helm is not built yet ({p}): run `python hack/plane.py build` (make test does)")
    return str(p)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{p.stderr}")
    return p


def set_args(values: dict[str, Any] | None) -> list[str]:
    """--set-json for each dotted key: values keep their JSON types (false stays a boolean)."""
    return [x for k, v in (values or {}).items() for x in ("--set-json", f"{k}={json.dumps(v)}")]


def render(values: dict[str, Any] | None = None, *, release: str = "edgeai", namespace: str = "edgeai-system",
           extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION,
               *set_args(values), *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_error(values: dict[str, Any], extra: Sequence[str] = ()) -> str:
    p = helm("template", "edgeai", str(CHART), "--kube-version", KUBE_VERSION, *set_args(values), *extra,
             check=False)
    assert p.returncode != 0, f"helm accepted {values}"
    return p.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (d,) = by_kind(docs, kind)
    return d


# --------------------------------------------------------------------------- lint and CRDs


def test_helm_lint_is_clean() -> None:
    p = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in p.stdout
    assert "[WARNING]" not in p.stdout and "[ERROR]" not in p.stdout


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    p = subprocess.run([sys.executable, str(ROOT / "hack" / "sync-chart-crds.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in (CHART / "crds").glob("*.yaml")) == sorted(x.name for x in (ROOT / "crds").glob(
        "*.yaml"))


def test_sync_script_reports_and_repairs_drift(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "hack"))
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_chart_crds", ROOT / "hack" / "sync-chart-crds.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a.yaml").write_text("a: 1\n")
    (src / "b.yaml").write_text("b: 1\n")
    (dst / "a.yaml").write_text("a: 2\n")
    (dst / "old.yaml").write_text("x\n")
    diff = mod.differences(src, dst)
    assert any("b.yaml is missing" in d for d in diff)
    assert any("a.yaml differs" in d for d in diff)
    assert any("old.yaml has no source" in d for d in diff)
    mod.sync(src, dst)
    assert mod.differences(src, dst) == []
    assert (dst / "a.yaml").read_text() == "a: 1\n" and not (dst / "old.yaml").exists()


def test_crds_are_installed_by_the_chart_and_never_templated() -> None:
    with_crds = render(extra=["--include-crds"])
    crds = {d["metadata"]["name"] for d in by_kind(with_crds, "CustomResourceDefinition")}
    assert crds == {"edgemodels.edgeai.io", "edgedevices.edgeai.io", "inferencedeployments.edgeai.io"}
    # In crds/, not templates/: helm never deletes them on uninstall (that would delete every model).
    assert not by_kind(render(), "CustomResourceDefinition")


# --------------------------------------------------------------------------- RBAC


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_cluster_role_grants_exactly_what_rbac_py_lists() -> None:
    from edge_operator.core import rbac

    docs = render()
    cr = one(docs, "ClusterRole")
    want = _triples([r.to_k8s() for r in rbac.CLUSTER_RULES])
    got = _triples(cr["rules"])
    missing, extra = want - got, got - want
    assert not missing and not extra, (
        f"charts/edgeai-operator/templates/rbac.yaml drifted from edge_operator/rbac.py:\n"
        f"missing {sorted(missing)}\nextra {sorted(extra)}\nwanted rules:\n"
        + yaml.safe_dump([r.to_k8s() for r in rbac.CLUSTER_RULES], sort_keys=False))
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "edgeai-system"
    assert _triples(role["rules"]) == _triples([r.to_k8s() for r in rbac.NAMESPACE_RULES])


def test_rbac_has_no_wildcards_and_no_dangerous_verbs() -> None:
    docs = render()
    for d in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in d["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    triples = _triples(one(docs, "ClusterRole")["rules"])
    assert {v for g, r, v in triples if r == "secrets"} == {"get"}  # never list/watch every Secret
    assert {v for g, r, v in triples if r == "nodes"} <= {"get", "list", "watch"}


def test_bindings_name_the_chart_service_account() -> None:
    docs = render(release="r1", namespace="ops")
    sa = one(docs, "ServiceAccount")["metadata"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        b = one(docs, kind)
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": "ops"}]
    dep = one(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    # two releases in one cluster must not share cluster-scoped names
    other = render(release="r2", namespace="ops2")
    assert one(other, "ClusterRole")["metadata"]["name"] != one(docs, "ClusterRole")["metadata"]["name"]


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    docs = render({"rbac.create": False, "serviceAccount.create": False, "serviceAccount.name": "ops-sa"})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"} & {
        d["kind"] for d in docs}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"


# --------------------------------------------------------------------------- the operator Deployment


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_deployment_is_hardened() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = _container(docs)
    psc, sc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    # the only writable path is an emptyDir
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    assert all("emptyDir" in v for v in pod["volumes"])


def test_image_uid_matches_the_pod_security_context() -> None:
    df = (ROOT / "docker" / "operator.Dockerfile").read_text()
    uid = re.findall(r"^USER (\d+)", df, re.M)[-1]
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == uid


def test_two_replicas_with_leader_election_and_a_pdb() -> None:
    docs = render()
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = _container(docs)["args"]
    assert "--no-leader-election" not in args
    assert {"--namespace=$(POD_NAMESPACE)", "--identity=$(POD_NAME)"} <= set(args)  # the Lease's place and holder
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    single = render({"replicaCount": 1, "leaderElection.enabled": False})
    assert not by_kind(single, "PodDisruptionBudget")  # a PDB on one replica would block every drain
    assert "--no-leader-election" in _container(single)["args"]


def test_operator_stays_off_edge_nodes_and_spreads_over_hosts() -> None:
    aff = one(render(), "Deployment")["spec"]["template"]["spec"]["affinity"]
    terms = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "node-role.kubernetes.io/edge", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]
    anti = aff["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert anti["topologyKey"] == "kubernetes.io/hostname"


def test_probes_and_metrics_use_the_operators_one_http_port() -> None:
    c = _container(render({"port": 8181}))
    assert c["ports"] == [{"name": "http", "containerPort": 8181, "protocol": "TCP"}]
    assert "--metrics-bind=0.0.0.0:8181" in c["args"]  # where main.py serves /metrics, /healthz, /readyz
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_images_default_to_the_app_version_and_can_be_pinned() -> None:
    from edgeai_api import constants

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == chart["version"] == version == constants.PACKAGE_VERSION
    c = _container(render())
    assert c["image"] == f"ghcr.io/edgeai/edgeai-operator:{version}"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["EDGEAI_RUNTIME_IMAGE"] == constants.DEFAULT_RUNTIME_IMAGE, "chart and operator disagree"
    digest = "sha256:" + "ab" * 32
    assert not [k for k in env if k.startswith("EDGEAI_RUNTIME_IMAGE_")], "only the cpu image unless asked"
    pinned = _container(render({"image.digest": digest, "runtime.images.cpu.tag": "0.2.0"}))
    assert pinned["image"].endswith(f":{version}@{digest}")
    assert {"name": "EDGEAI_RUNTIME_IMAGE", "value": "ghcr.io/edgeai/edge-runtime:0.2.0"} in pinned["env"]


def test_runtime_images_per_family_reach_the_operator_as_it_reads_them() -> None:
    from edge_operator.core.runtime_images import RuntimeImages, from_env
    from edgeai_api import constants

    version = constants.PACKAGE_VERSION
    digest = "sha256:" + "cd" * 32
    c = _container(render({"runtime.images.cuda.repository": "reg.example/edge-runtime-cuda",
                           "runtime.images.openvino.repository": "reg.example/edge-runtime-openvino",
                           "runtime.images.openvino.tag": "1.2.3", "runtime.images.openvino.digest": digest}))
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert env["EDGEAI_RUNTIME_IMAGE_CUDA"] == f"reg.example/edge-runtime-cuda:{version}"
    assert env["EDGEAI_RUNTIME_IMAGE_OPENVINO"] == f"reg.example/edge-runtime-openvino:1.2.3@{digest}"
    # The operator's own reader takes exactly what the chart wrote.
    assert from_env(env, "unused") == RuntimeImages.of(constants.DEFAULT_RUNTIME_IMAGE, {
        "cuda": f"reg.example/edge-runtime-cuda:{version}",
        "openvino": f"reg.example/edge-runtime-openvino:1.2.3@{digest}"})


def test_settings_reach_the_operator_as_its_own_flags_and_env() -> None:
    from edge_operator.controller import config

    def parsed(values: dict[str, Any]) -> tuple[config.OperatorConfig, dict[str, Any]]:
        c = _container(render(values))
        env = {e["name"]: e.get("value") for e in c["env"]}
        args = [a.replace("$(POD_NAMESPACE)", "edgeai-system").replace("$(POD_NAME)", "edgeai-0") for a in c["args"]]
        return config.parse(args), env  # the operator's own parser accepts the rendered command line

    cfg, env = parsed({"logLevel": "debug", "operator.workers": 4, "verification.maxModelBytes": 1 << 20})
    assert (cfg.log_level, cfg.workers, cfg.metrics_port, cfg.namespace, cfg.identity) == (
        "debug", 4, 8080, "edgeai-system", "edgeai-0")
    assert cfg.leader_election is True
    assert env["EDGEAI_MAX_MODEL_BYTES"] == str(1 << 20)
    # Unset tuning values leave the operator's own defaults alone (no flag, no env).
    default, env = parsed({})
    assert default.workers == config.OperatorConfig().workers
    assert "EDGEAI_MAX_MODEL_BYTES" not in env
    solo, _ = parsed({"replicaCount": 1, "leaderElection.enabled": False})
    assert solo.leader_election is False


def test_lease_access_is_limited_to_the_operators_own_lease() -> None:
    from edge_operator.controller import config

    rules = one(render(), "Role")["rules"]
    named = [r for r in rules if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [config.OperatorConfig().lease_name] for r in named)
    assert {v for r in rules if not r.get("resourceNames") for v in r["verbs"]} == {"create"}


# --------------------------------------------------------------------------- values.schema.json


@pytest.mark.parametrize(("values", "says"), [
    ({"replicaCount": 0}, "/replicaCount"),
    ({"replicas": 3}, "'replicas' not allowed"),
    ({"logLevel": "loud"}, "/logLevel"),
    ({"image.digest": "sha256:abc"}, "/image/digest"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"securityContext.readOnlyRootFilesystem": False}, "/securityContext/readOnlyRootFilesystem"),
    ({"securityContext.allowPrivilegeEscalation": True}, "/securityContext/allowPrivilegeEscalation"),
    ({"securityContext.capabilities": {"drop": ["NET_RAW"]}}, "/securityContext/capabilities/drop"),
    ({"podSecurityContext.runAsNonRoot": False}, "/podSecurityContext/runAsNonRoot"),
    ({"podSecurityContext.runAsUser": 0}, "/podSecurityContext/runAsUser"),
    ({"port": 70000}, "/port"),
    ({"runtime.images.vulkan.repository": "r/v"}, "'vulkan' not allowed"),
    ({"runtime.images.cuda.tag": "1.0"}, "/runtime/images/cuda"),  # a family needs its repository
    ({"runtime.images.openvino.digest": "sha256:abc", "runtime.images.openvino.repository": "r/o"},
     "/runtime/images/openvino/digest"),
    ({"port": 80}, "/port"),
    ({"operator.workers": 0}, "/operator/workers"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"serviceMonitor.interval": "30 seconds"}, "/serviceMonitor/interval"),
    ({"prometheusRule.devicesOffline.fraction": 2}, "/prometheusRule/devicesOffline/fraction"),
    ({"prometheusRule.rolloutFailed.severity": "page"}, "/prometheusRule/rolloutFailed/severity"),
])
def test_schema_rejects_bad_values_naming_the_path(values: dict[str, Any], says: str) -> None:
    err = render_error(values)
    assert "values don't meet the specifications of the schema" in err
    assert says in err, err


@pytest.mark.parametrize(("values", "says"), [
    ({"leaderElection.enabled": False}, "replicaCount=2 needs leaderElection.enabled=true"),
    ({"image.tag": "latest"}, "image.tag=latest is refused"),
    ({"runtime.images.cpu.tag": "latest"}, "runtime.images.cpu.tag=latest is refused"),
    ({"runtime.images.cuda.repository": "r/cuda", "runtime.images.cuda.tag": "latest"},
     "runtime.images.cuda.tag=latest is refused"),
    ({"runtimeImage.tag": "0.1.0"}, "runtimeImage moved to runtime.images.cpu"),
    ({"serviceAccount.create": False}, "serviceAccount.name is required"),
    ({"serviceMonitor.enabled": True}, "no monitoring.coreos.com/v1 ServiceMonitor"),
    ({"prometheusRule.enabled": True}, "no monitoring.coreos.com/v1 PrometheusRule"),
])
def test_cross_field_checks_explain_themselves(values: dict[str, Any], says: str) -> None:
    assert says in render_error(values)


def test_schema_file_is_valid_json_schema_and_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(v: Any, s: dict[str, Any], path: str) -> Iterator[str]:
        if not isinstance(v, dict) or s.get("additionalProperties") is not False:
            return
        for k, sub in v.items():
            assert k in s.get("properties", {}), f"{path}.{k} is in values.yaml but not in values.schema.json"
            yield f"{path}.{k}"
            yield from keys(sub, s["properties"][k], f"{path}.{k}")

    assert len(list(keys(values, schema, ""))) > 50


# --------------------------------------------------------------------------- metrics, alerts, network


def _monitoring(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return render({"serviceMonitor.enabled": True, "prometheusRule.enabled": True, **(values or {})},
                  extra=["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                         "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"])


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = _monitoring()
    svc = one(docs, "Service")
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not by_kind(render(), "ServiceMonitor")  # off by default: needs the Prometheus Operator


def _exported_metrics() -> dict[str, set[str]]:
    """Metric family name -> label names, from the operator's own registry (and fleet collector)."""
    from prometheus_client import CollectorRegistry

    from edge_operator.telemetry import metrics

    out: dict[str, set[str]] = {}
    for fam in metrics.REGISTRY.collect():
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
        out.setdefault(fam.name, set())
    reg = CollectorRegistry()
    reg.register(metrics.FleetCollector(lambda: {
        "models": {"x": 1}, "devices": {"x": 1}, "placements": {"x": 1}}))
    for fam in reg.collect():
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    # Labelled counters have no samples until used: take label names from their declarations.
    for obj in vars(metrics).values():
        name = getattr(obj, "_name", None)
        labels = getattr(obj, "_labelnames", None)
        if isinstance(name, str) and labels is not None:
            kind = getattr(obj, "_type", "")
            full = f"{name}_total" if kind == "counter" and not name.endswith("_total") else name
            out.setdefault(full, set()).update(labels)
            out.setdefault(name, set()).update(labels)
    return out


def _runtime_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from a runtime's registry after it answered, compared with a reference
    profile and judged a quality gate: every family the runtime exports, with its labels."""
    import numpy as np

    from edge_runtime.core import quality, quality_gate
    from edge_runtime.telemetry.metrics import QualityMetrics, RuntimeMetrics

    layout = quality.Layout(outputs=(("p", 3),), inputs=(("x", 2),))
    rng = np.random.default_rng(0)
    x, p = rng.standard_normal((600, 2)), rng.dirichlet(np.ones(3), 600)
    q = QualityMetrics(min_rows=10, breach=quality_gate.Thresholds(max_psi=0.25, min_mean_confidence=0.5))
    q.profiles["m"] = quality.build_profile(layout, {"x": x}, {"p": p})
    m = RuntimeMetrics(quality_metrics=q)
    m.live(lambda: {"m": 0}, lambda: True)
    m.observe_request("m", "1", "ok", 0.01)
    m.observe_batch("m", 1)
    entry = q.track("m", "1", layout, ("p",))
    entry.stage({"x": x}, [p], True)
    entry.record_cloud(1, 2)
    gate = quality_gate.Gate(quality_gate.GateConfig(quality_gate.Thresholds(max_psi=0.25)), 0.0)
    q.gate = ("m", gate)
    out: dict[str, set[str]] = {}
    for fam in m.registry.collect():
        out.setdefault(fam.name, set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    # Labelled counters without samples yet: their declared label names.
    for obj in vars(m).values():
        name, labels = getattr(obj, "_name", None), getattr(obj, "_labelnames", None)
        if isinstance(name, str) and labels is not None:
            kind = getattr(obj, "_type", "")
            out.setdefault(f"{name}_total" if kind == "counter" else name, set()).update(labels)
            out.setdefault(name, set()).update(labels)
    return out


# Labels a series gets from where it is scraped, not from the exporter: the runtime's `site` is the site
# agent's external label (the cloud rarely reaches an edge Pod's port, README "Observability").
SCRAPE_LABELS = frozenset({"site", "instance", "job", "namespace", "pod"})


def _selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    import promql_parser

    found: list[tuple[str, dict[str, str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name: m.value for m in node.matchers.matchers}))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit, None)
    return found


def test_alerts_parse_and_query_metrics_the_operator_exports() -> None:
    rule = one(_monitoring(), "PrometheusRule")
    operator, runtime = _exported_metrics(), _runtime_metrics()
    alerts = [(g["name"], r) for g in rule["spec"]["groups"] for r in g["rules"]]
    names = {r["alert"] for _, r in alerts}
    assert {"EdgeAIDevicesOffline", "EdgeAIModelVerificationFailing", "EdgeAIRolloutFailed",
            "EdgeAIRolloutRolledBack", "EdgeAIModelQualityBreach"} <= names
    for group, r in alerts:
        # The runtime's group queries the runtime's metrics, every other group the operator's.
        exported, where = ((runtime, "edge_runtime.telemetry.metrics") if group.startswith("edgeai-runtime")
                           else (operator, "edge_operator.telemetry.metrics"))
        sels = _selectors(r["expr"])  # raises on a PromQL syntax error
        assert sels, r["alert"]
        for metric, matchers in sels:
            assert metric in exported, f"{r['alert']}: {metric} is not exported by {where}"
            unknown = set(matchers) - exported[metric] - {"__name__"}
            assert not unknown, f"{r['alert']}: {metric} has no label(s) {unknown}"
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]


def _dashboard(values: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    cm = one(render({"grafana.dashboards.enabled": True, **(values or {})}), "ConfigMap")
    return cm, json.loads(cm["data"]["edgeai-fleet.json"])


def _grafana_to_promql(expr: str) -> str:
    """A panel's query as Prometheus receives it: Grafana's variables replaced by what they expand to."""
    return expr.replace("$__rate_interval", "5m").replace("$site", ".*")


def test_grafana_dashboard_is_off_by_default_and_a_sidecar_configmap_when_on() -> None:
    assert not [d for d in by_kind(render(), "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    cm, dash = _dashboard({"grafana.dashboards.annotations": {"grafana_folder": "EdgeAI"}})
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "EdgeAI"}
    assert dash["uid"] == "edgeai-fleet" and dash["title"]
    titles = [p["title"] for p in dash["panels"]]
    assert {"Fleet", "Rollouts", "Model quality per site"} <= set(titles)


def test_every_dashboard_panel_parses_and_names_only_metrics_the_components_export() -> None:
    _, dash = _dashboard()
    operator, runtime = _exported_metrics(), _runtime_metrics()
    exported = {**runtime, **operator}
    queries = [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]
    assert len(queries) >= 15
    seen = set()
    for title, expr in queries:
        sels = _selectors(_grafana_to_promql(expr))  # raises on a PromQL syntax error
        assert sels, title
        for metric, matchers in sels:
            assert metric in exported, f"panel {title!r}: {metric} is exported by neither the operator nor the runtime"
            unknown = set(matchers) - exported[metric] - {"__name__"} - SCRAPE_LABELS
            assert not unknown, f"panel {title!r}: {metric} has no label(s) {unknown}"
            seen.add(metric)
    # What the issue asks of it: fleet, rollouts, latency and errors, and the quality signals.
    assert {"edgeai_operator_devices", "edgeai_operator_rollout_events_total", "edgeai_requests_total",
            "edgeai_request_duration_seconds_bucket", "edgeai_quality_psi", "edgeai_quality_breach",
            "edgeai_quality_gate_state", "edgeai_quality_confidence_sum"} <= seen
    for var in dash["templating"]["list"]:
        if var["type"] == "query":  # label_values(METRIC, LABEL): not PromQL, but its metric must exist
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
            assert m and m.group(1) in exported and m.group(2) in SCRAPE_LABELS | exported[m.group(1)], var


def test_alerts_can_be_switched_off_one_by_one() -> None:
    rule = one(_monitoring({"prometheusRule.rolloutFailed.enabled": False}), "PrometheusRule")
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "EdgeAIRolloutFailed" not in names and "EdgeAIDevicesOffline" in names


def test_network_policy_allows_only_what_the_operator_needs() -> None:
    docs = render({"networkPolicy.enabled": True,
                   "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]})
    np = one(docs, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["podSelector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    (ingress,) = np["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]  # the one port, by name: nothing else
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress_ports = {p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 80}
    assert not by_kind(render(), "NetworkPolicy")


def test_every_object_carries_the_standard_labels() -> None:
    for d in _monitoring({"networkPolicy.enabled": True}):
        labels = d["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{d['kind']} {d['metadata']['name']} lacks {key}"
