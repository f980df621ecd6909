"""kubectl-edgeai's command line and error sentences (no cluster needed; the integration test has one)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from edge_operator.cli import plugin


def parse(*argv: str) -> argparse.Namespace:
    return plugin.build_parser().parse_args(argv)


def test_connection_flags_work_before_and_after_the_subcommand() -> None:
    a = parse("--kubeconfig", "/k", "--context", "ctx", "-n", "ns", "fleet")
    assert (a.kubeconfig, a.context, a.namespace) == ("/k", "ctx", "ns")
    b = parse("rollout", "status", "det", "-n", "ns2", "--context", "c2")
    assert (b.namespace, b.context, b.name) == ("ns2", "c2", "det")
    # a later flag does not get reset by a subparser's default
    c = parse("-n", "early", "model", "verify", "m")
    assert c.namespace == "early" and c.trigger is True and c.wait is False


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5m", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert plugin._duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", "0", "5d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        plugin._duration(text)


def test_unknown_commands_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("rollout", "restart", "x")
    assert e.value.code == 2
    assert "invalid choice: 'restart'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("fleet", "-o", "yaml")


def _cluster() -> plugin.Cluster:
    c = object.__new__(plugin.Cluster)  # no kubeconfig needed to turn errors into sentences
    c.host = "https://k8s.example:6443"
    c.namespace = "team"
    return c


def _err(status: int, body: dict[str, Any] | str, reason: str = "") -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = body if isinstance(body, str) else json.dumps(body)
    return e


def test_missing_object_and_missing_crd_are_told_apart() -> None:
    c = _cluster()
    nf = _err(404, {"kind": "Status", "reason": "NotFound", "details": {"name": "det", "kind": "inferencedeployments"}})
    want = "InferenceDeployment 'det' not found in namespace 'team'"
    assert c._explain(nf, "get", plugin.IDEPS, "det", "team") == want
    no_crd = _err(404, "404 page not found", "Not Found")
    msg = c._explain(no_crd, "get", plugin.IDEPS, "det", "team")
    assert "does not serve inferencedeployments.edgeai.io/v1alpha1" in msg and "CRDs installed" in msg
    dev = _err(404, {"details": {"name": "edge-9"}})
    assert c._explain(dev, "get", plugin.EDGEDEVICES, "edge-9", "team") == "EdgeDevice 'edge-9' not found"


def test_forbidden_unauthorized_and_invalid() -> None:
    c = _cluster()
    f = _err(403, {"message": 'edgedevices.edgeai.io is forbidden: User "bob" cannot list resource'})
    assert c._explain(f, "list", plugin.EDGEDEVICES, None, None).startswith("forbidden to list edgedevices: ")
    u = _err(401, {"message": "Unauthorized"})
    assert "rejected our credentials" in c._explain(u, "list", plugin.EDGEDEVICES, None, None)
    inv = _err(422, {"message": "spec.rollout.rollbackTo.revision: Invalid value"})
    assert "refused to patch InferenceDeployment 'det'" in c._explain(inv, "patch", plugin.IDEPS, "det", "team")


def test_missing_kubeconfig_is_a_plugin_error(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rc = plugin.main(["fleet", "--kubeconfig", str(tmp_path / "none")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no usable cluster configuration") and "none" in err


def test_cache_status_flags() -> None:
    a = parse("cache", "status", "det", "-n", "prod")
    assert (a.name, a.namespace, a.via_apiserver, a.timeout, a.output) == ("det", "prod", False, 3.0, "table")
    b = parse("cache", "status", "det", "--via-apiserver", "--timeout", "10s", "-o", "json")
    assert (b.via_apiserver, b.timeout, b.output) == (True, 10.0, "json")


def test_a_cache_answer_that_is_not_a_status_is_a_reason_not_a_crash() -> None:
    from edge_operator.cli import plugin_view as view

    t = view.CacheTarget("berlin", "gw-1", "http://10.0.0.7:8090", True, "")
    ok = plugin._parsed(t, "direct", "x", b'{"hits": 1, "misses": 0}')
    assert ok.status == {"hits": 1, "misses": 0} and ok.error == ""
    assert plugin._parsed(t, "direct", "x", b"<html>").error == "x: not a site cache's status (not JSON)"
    assert plugin._parsed(t, "direct", "x", b"[1]").error == "x: not a site cache's status (no hits)"
    assert plugin._status_message(503, json.dumps({"kind": "Status", "message": "error trying to reach service: "
                                                   "dial tcp 10.0.0.7:8090: connect: connection refused"}).encode()) \
        == "HTTP 503: error trying to reach service: dial tcp 10.0.0.7:8090: connect: connection refused"
    assert plugin._status_message(502, b"Bad Gateway\n") == "HTTP 502: Bad Gateway"
