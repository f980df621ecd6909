"""Pure parts of `pack`: the EdgeModel manifest and the per-variant judgement."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edge_runtime.pack.errors import PackError
from edge_runtime.pack.manifest import (
    Artifact,
    SecretRef,
    build_edgemodel,
    check_base_uri,
    dns_name,
    join_uri,
    sha256sums,
)
from edge_runtime.pack.report import (
    VariantReport,
    apply_floor,
    format_table,
    guess_task,
    latency_stats,
    markdown_table,
    max_abs_error,
    ratios,
    top1_agreement,
)

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def artifacts(signed: bool = False) -> list[Artifact]:
    sig = "c2ln" if signed else None
    return [
        Artifact("fp32", "fp32", "m.fp32.onnx", H1, 100, sig),
        Artifact("fp16", "fp16", "m.fp16.onnx", H2, 50, sig),
        Artifact("int8", "int8", "m.int8.onnx", H3, 25, sig),
    ]


def test_manifest_follows_the_api_contract() -> None:
    a = artifacts()
    m = build_edgemodel(
        name="resnet",
        base_uri="https://models.example.com/r",
        source=a[0],
        variants=a[1:],
        namespace="ml",
        version="1.2.0",
    )
    assert m["apiVersion"] == "edgeai.io/v1alpha1" and m["kind"] == "EdgeModel"
    assert m["metadata"] == {
        "name": "resnet",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/name": "resnet", "app.kubernetes.io/version": "1.2.0"},
    }
    spec = m["spec"]
    assert spec["format"] == "onnx" and spec["version"] == "1.2.0"
    assert spec["source"] == {"uri": "https://models.example.com/r/m.fp32.onnx", "sha256": H1, "size": 100}
    assert "signature" not in spec and "encryption" not in spec
    by_name = {v["name"]: v for v in spec["variants"]}
    assert list(by_name) == ["fp16", "int8"]  # fp32 is the source, not repeated
    assert by_name["fp16"]["accelerators"] == ["gpu"]
    assert by_name["int8"]["accelerators"] == ["npu", "cpu"]
    assert by_name["int8"] == {
        "name": "int8",
        "precision": "int8",
        "uri": "https://models.example.com/r/m.int8.onnx",
        "sha256": H3,
        "size": 25,
        "accelerators": ["npu", "cpu"],
    }


def test_manifest_signature_and_encryption_blocks() -> None:
    a = artifacts(signed=True)
    m = build_edgemodel(
        name="m",
        base_uri="file:///srv/models/",
        source=a[0],
        variants=a[1:],
        public_key_secret=SecretRef("m-signing", "public.pem"),
        encryption_secret=SecretRef("m-key", "key"),
    )
    assert m["spec"]["signature"] == {
        "publicKeySecretRef": {"name": "m-signing", "key": "public.pem"},
        "value": "c2ln",
    }
    assert m["spec"]["encryption"] == {"keySecretRef": {"name": "m-key", "key": "key"}, "algorithm": "AES-256-GCM"}
    assert all(v["signature"] == "c2ln" for v in m["spec"]["variants"])
    assert m["spec"]["source"]["uri"] == "file:///srv/models/m.fp32.onnx"


def test_manifest_refuses_inconsistent_input() -> None:
    a = artifacts(signed=True)
    with pytest.raises(PackError, match="public key Secret"):
        build_edgemodel(name="m", base_uri="https://h/", source=a[0], variants=a[1:])
    with pytest.raises(PackError, match="source build itself"):
        build_edgemodel(
            name="m", base_uri="https://h/", source=a[0], variants=a, public_key_secret=SecretRef("s", "public.pem")
        )
    with pytest.raises(PackError, match=r"'default' names spec\.source"):
        build_edgemodel(
            name="m",
            base_uri="https://h/",
            source=a[0],
            variants=[Artifact("default", "int8", "f", H3, 1, "c2ln")],
            public_key_secret=SecretRef("s", "public.pem"),
        )
    mixed = [artifacts()[1]]
    with pytest.raises(PackError, match="every artifact is signed or none"):
        build_edgemodel(
            name="m", base_uri="https://h/", source=a[0], variants=mixed, public_key_secret=SecretRef("s", "public.pem")
        )
    with pytest.raises(PackError, match="not a valid Kubernetes name"):
        build_edgemodel(name="Bad_Name", base_uri="https://h/", source=a[0], variants=[])
    with pytest.raises(Exception, match="64 lowercase hex"):
        build_edgemodel(name="m", base_uri="https://h/", source=Artifact("fp32", "fp32", "f", "XYZ", 1), variants=[])


@pytest.mark.parametrize(
    ("stem", "name"),
    [("ResNet50_v2.final", "resnet50-v2-final"), ("--a__b--", "a-b"), ("x" * 80, "x" * 63)],
)
def test_dns_name(stem: str, name: str) -> None:
    assert dns_name(stem) == name


def test_dns_name_gives_up_clearly() -> None:
    with pytest.raises(PackError, match="pass --name"):
        dns_name("___")


def test_base_uri_checks_and_joins() -> None:
    assert check_base_uri("https://h/models") == "https://h/models/"
    assert join_uri("http://h:8080/a/", "m v1.onnx") == "http://h:8080/a/m%20v1.onnx"
    for bad in ("s3://bucket/x", "ftp://h/", "https:///nohost", "https://h/?q=1", "models/"):
        with pytest.raises(PackError, match="base-uri"):
            check_base_uri(bad)


def test_names_and_versions_the_crd_would_refuse_are_refused_first() -> None:
    a = artifacts(signed=True)
    ok: dict[str, Any] = {"name": "m", "base_uri": "https://h/", "source": a[0], "variants": a[1:]}
    build_edgemodel(**ok, version="1.2.0+build.7", public_key_secret=SecretRef("keys.team-a", "public.pem"))
    for version in ("-1", "1.0 beta", "v" * 65):
        with pytest.raises(PackError, match="model-version"):
            build_edgemodel(**ok, version=version, public_key_secret=SecretRef("s", "public.pem"))
    with pytest.raises(PackError, match="public-key-secret"):
        build_edgemodel(**ok, public_key_secret=SecretRef("Team_Keys", "public.pem"))
    with pytest.raises(PackError, match="whitespace"):
        check_base_uri("https://h/my models/")


def test_sha256sums_is_coreutils_format() -> None:
    assert sha256sums(artifacts()[:2]) == f"{H1}  m.fp32.onnx\n{H2}  m.fp16.onnx\n"


def test_top1_agreement_and_max_abs_error() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    cand = np.array([[0.8, 0.2], [0.6, 0.4], [0.55, 0.45], [0.3, 0.7]], dtype=np.float32)
    assert top1_agreement(ref, cand) == 0.75
    assert max_abs_error([ref], [cand]) == pytest.approx(0.4)
    assert max_abs_error([ref], [ref]) == 0.0
    nan = cand.copy()
    nan[0, 0] = np.nan
    assert math.isinf(max_abs_error([ref], [nan]))
    # Integer outputs (labels) must match exactly.
    assert math.isinf(max_abs_error([np.array([1, 2])], [np.array([1, 3])]))
    assert max_abs_error([np.array([1, 2])], [np.array([1, 2])]) == 0.0
    with pytest.raises(ValueError, match="same"):
        top1_agreement(ref, cand[:2])


def test_guess_task() -> None:
    assert guess_task((8, 10)) == "classifier"
    assert guess_task((8, 1)) == "regressor"
    assert guess_task((8,)) == "regressor"
    assert guess_task((8, 3, 4)) == "regressor"


def reports() -> list[VariantReport]:
    lat = latency_stats([0.001, 0.002, 0.003])
    return [
        VariantReport("fp32", "fp32", size=100, latency=lat, top1_agreement=1.0, max_abs_error=0.0),
        VariantReport("fp16", "fp16", size=50, latency=lat, top1_agreement=0.99, max_abs_error=0.001),
        VariantReport(
            "int8", "int8", size=25, latency=latency_stats([0.0005] * 3), top1_agreement=0.80, max_abs_error=0.2
        ),
    ]


def test_floor_leaves_out_only_what_falls_under_it() -> None:
    rs = reports()
    apply_floor(rs, task="classifier", min_agreement=0.9, max_error=None)
    assert [r.included for r in rs] == [True, True, False]
    assert "80.00%" in rs[2].reason and "90.00%" in rs[2].reason
    # At the floor exactly is not under it.
    rs = reports()
    apply_floor(rs, task="classifier", min_agreement=0.99, max_error=None)
    assert [r.included for r in rs] == [True, True, False]
    # Error ceiling; fp32 is the reference and is never judged.
    rs = reports()
    rs[0].max_abs_error = 5.0
    apply_floor(rs, task="regressor", min_agreement=0.95, max_error=0.01)
    assert [r.included for r in rs] == [True, True, False]
    assert "max abs error" in rs[2].reason
    # No floor, nothing left out.
    rs = reports()
    apply_floor(rs, task="classifier", min_agreement=None, max_error=None)
    assert all(r.included for r in rs)


def test_floor_keeps_an_earlier_failure_reason() -> None:
    rs = reports()
    rs[1].exclude("fp16 variant does not load")
    apply_floor(rs, task="classifier", min_agreement=0.5, max_error=None)
    assert rs[1].reason == "fp16 variant does not load"


def test_latency_and_ratios() -> None:
    s = latency_stats([0.001] * 98 + [0.010, 0.020])
    assert s.runs == 100 and s.p50_ms == pytest.approx(1.0) and s.p99_ms > 9.0
    r = ratios(reports())
    assert r["int8"] == {"size": 0.25, "latency_p50": pytest.approx(0.25)}
    with pytest.raises(ValueError):
        latency_stats([])


def test_tables_show_every_variant_and_why_one_is_left_out() -> None:
    rs = reports()
    apply_floor(rs, task="classifier", min_agreement=0.9, max_error=None)
    rs[2].notes.append("kept in float: Gather x1")
    text = format_table(rs, "classifier")
    lines = text.splitlines()
    assert lines[0].split()[0] == "variant" and len(lines) >= 5
    assert "left out int8: top-1 agreement" in text
    assert "note int8: kept in float: Gather x1" in text
    md = markdown_table("model", rs, "classifier")
    assert "| int8 (left out) |" in md and "| 0.25 |" in md
