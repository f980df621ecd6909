"""`pack` end to end on real ONNX models: variants, digests, signatures, encryption, floor, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.artifacts import integrity
from edge_runtime.artifacts.integrity import IntegrityError
from edge_runtime.cli import main as cli_main
from edge_runtime.core import quality
from edge_runtime.models_zoo import build_cnn, build_tabular, sample_inputs
from edge_runtime.pack.errors import PackError
from edge_runtime.pack.packer import PackOptions, PackResult, pack

# Small numbers keep the suite quick; the report's figures are not asserted on.
FAST: dict[str, Any] = {"samples": 32, "runs": 5, "warmup": 1}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"cnn": build_cnn(d / "cnn.onnx"), "tabular": build_tabular(d / "tabular.onnx")}


def run_pack(model: Path, out: Path, **kw: Any) -> PackResult:
    return pack(PackOptions(model=model, output=out, **{**FAST, **kw}))


def load_manifest(out: Path) -> dict[str, Any]:
    m = yaml.safe_load((out / "edgemodel.yaml").read_text())
    assert isinstance(m, dict)
    return m


def variants(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every build in the manifest by name: the fp32 one is spec.source, the others spec.variants[]."""
    spec = m["spec"]
    others = {v["name"]: v for v in spec.get("variants", [])}
    # The CRD refuses a variant identical to the source: fp32 is never repeated in variants[].
    assert "fp32" not in others and all(v["sha256"] != spec["source"]["sha256"] for v in others.values())
    fp32 = dict(spec["source"])
    if "value" in spec.get("signature", {}):
        fp32["signature"] = spec["signature"]["value"]
    return {"fp32": fp32, **others}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


# --- the normal path -----------------------------------------------------------------------------


def test_cnn_variants_load_run_and_match_their_digests(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_pack(models["cnn"], out, base_uri="https://models.example.com/cnn", version="1.0.0")
    m = load_manifest(out)
    v = variants(m)
    assert list(v) == ["fp32", "fp16", "int8"]
    assert res.task == "classifier"

    # fp32 is the input, byte for byte, and is spec.source.
    assert (out / "cnn.fp32.onnx").read_bytes() == models["cnn"].read_bytes()
    assert m["spec"]["source"]["uri"] == "https://models.example.com/cnn/cnn.fp32.onnx"
    assert m["spec"]["version"] == "1.0.0"
    sums = {}
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        sums[name] = digest
    for name, var in v.items():
        f = out / f"cnn.{name}.onnx"
        d = integrity.hash_file(f)
        assert (var["sha256"], var["size"]) == (d.sha256, d.size)
        assert sums[f.name] == d.sha256
        assert var["uri"] == f"https://models.example.com/cnn/{f.name}"
        # Each variant loads and keeps the dynamic batch dimension and fp32 I/O.
        s = session(f.read_bytes())
        assert s.get_inputs()[0].shape[0] == "N" and s.get_inputs()[0].type == "tensor(float)"
        for batch in (1, 5):
            y = s.run(None, {"input": sample_inputs("cnn", batch)})[0]
            assert y.shape == (batch, 10) and y.dtype == np.float32
    assert v["fp16"]["accelerators"] == ["gpu"]
    assert v["int8"]["accelerators"] == ["npu", "cpu"]

    # The builds are really what they claim: fp16 weights, int8 kernels.
    fp16 = onnx.load(str(out / "cnn.fp16.onnx"))
    assert any(i.data_type == TensorProto.FLOAT16 for i in fp16.graph.initializer)
    int8_ops = {n.op_type for n in onnx.load(str(out / "cnn.int8.onnx")).graph.node}
    assert "ConvInteger" in int8_ops
    assert (out / "cnn.int8.onnx").stat().st_size < 0.5 * (out / "cnn.fp32.onnx").stat().st_size

    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "classifier" and report["settings"]["int8_mode"] == "dynamic"
    assert report["settings"]["samples"] == FAST["samples"]
    rv = {r["name"]: r for r in report["variants"]}
    assert rv["fp32"]["top1_agreement"] == 1.0 and rv["fp32"]["max_abs_error"] == 0.0
    for r in rv.values():
        assert r["included"] and r["latency"]["runs"] == FAST["runs"]
        assert 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"]
        assert 0.0 <= r["top1_agreement"] <= 1.0
    assert [line.split()[0] for line in res.table.splitlines()[2:5]] == ["fp32", "fp16", "int8"]
    assert not leftovers(tmp_path)


def test_default_base_uri_is_the_output_folder(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    res = run_pack(models["tabular"], out, precisions=["fp32"], timing_batch=4)
    assert res.report["settings"]["timing"]["batch"] == 4
    m = load_manifest(out)
    assert m["metadata"]["name"] == "tabular"
    assert m["spec"]["source"]["uri"] == (out / "tabular.fp32.onnx").as_uri()
    assert list(variants(m)) == ["fp32"]


def test_sign_key_writes_one_openssf_bundle_the_upstream_verifier_and_the_runtime_accept(
    models: dict[str, Path], tmp_path: Path
) -> None:
    import model_signing

    from edge_runtime.artifacts import openssf

    key = integrity.generate_private_key("ecdsa-p256")
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(integrity.private_key_pem(key))
    out = tmp_path / "out"
    run_pack(models["tabular"], out, sign_key=key_file, name="tab")
    m = load_manifest(out)
    sig = m["spec"]["signature"]
    assert sig["format"] == "openssf" and "value" not in sig
    assert sig["publicKeySecretRef"] == {"name": "tab-signing", "key": "public.pem"}
    assert sig["bundle"] == (out / "model.sig").read_text()
    pub = (out / "public.pem").read_bytes()
    for name, v in variants(m).items():
        assert "signature" not in v
        integrity.read_verified(out / f"tabular.{name}.onnx", v["sha256"], public_key_pem_bytes=pub,
                                signature=sig["bundle"])
    assert set(openssf.verify_bundle(sig["bundle"], pub).files) == {f"tabular.{n}.onnx" for n in variants(m)}
    # The upstream verifier accepts it as is (the builds; pack's other files are not signed).
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=out / "public.pem").set_ignore_unsigned_files(
        True).verify(out, out / "model.sig")
    with pytest.raises(IntegrityError) as e:  # an Ed25519 key signs only in the legacy format
        ed = tmp_path / "ed.pem"
        ed.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ed25519")))
        run_pack(models["tabular"], tmp_path / "out2", sign_key=ed, name="tab")
    assert e.value.reason == "BadKey" and "--legacy-signature" in e.value.message


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_legacy_signatures_verify_with_the_runtime_verifier(
    models: dict[str, Path], tmp_path: Path, algorithm: integrity.KeyAlgorithm
) -> None:
    key = integrity.generate_private_key(algorithm)
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(integrity.private_key_pem(key))
    out = tmp_path / "out"
    run_pack(models["tabular"], out, sign_key=key_file, name="tab", legacy_signature=True)
    m = load_manifest(out)
    pub = (out / "public.pem").read_bytes()
    assert pub == integrity.public_key_pem(key)
    assert m["spec"]["signature"]["publicKeySecretRef"] == {"name": "tab-signing", "key": "public.pem"}
    integrity.verify_digest_signature(pub, m["spec"]["source"]["sha256"], m["spec"]["signature"]["value"])
    for name, v in variants(m).items():
        assert v["signature"]
        integrity.verify_digest_signature(pub, v["sha256"], v["signature"])
        # And the runtime's own read path accepts the file with it.
        integrity.read_verified(
            out / f"tabular.{name}.onnx", v["sha256"], public_key_pem_bytes=pub, signature=v["signature"]
        )
    # A signature is bound to its digest: fp16's does not verify int8.
    v = variants(m)
    with pytest.raises(IntegrityError) as e:
        integrity.verify_digest_signature(pub, v["int8"]["sha256"], v["fp16"]["signature"])
    assert e.value.reason == "BadSignature"


def test_encrypted_artifacts_digest_the_ciphertext_and_decrypt_to_working_models(
    models: dict[str, Path], tmp_path: Path
) -> None:
    key = integrity.generate_encryption_key()
    key_file = tmp_path / "aes.key"
    key_file.write_text(key.hex())
    sk = tmp_path / "p.pem"
    sk.write_bytes(integrity.private_key_pem(integrity.generate_private_key()))
    out = tmp_path / "out"
    run_pack(models["cnn"], out, encryption_key=key_file, encryption_secret="cnn-aes", sign_key=sk,
             legacy_signature=True)
    m = load_manifest(out)
    assert m["spec"]["encryption"] == {"keySecretRef": {"name": "cnn-aes", "key": "key"}, "algorithm": "AES-256-GCM"}
    pub = (out / "public.pem").read_bytes()
    for name, v in variants(m).items():
        f = out / f"cnn.{name}.onnx.enc"
        blob = f.read_bytes()
        assert integrity.is_encrypted(blob)
        assert integrity.hash_bytes(blob).sha256 == v["sha256"] and len(blob) == v["size"]
        plain = integrity.read_verified(
            f, v["sha256"], public_key_pem_bytes=pub, signature=v["signature"], decryption_key=key
        )
        y = session(plain).run(None, {"input": sample_inputs("cnn", 2)})[0]
        assert y.shape == (2, 10)
    assert not list(out.glob("*.onnx"))  # no plaintext copy left beside the ciphertext


def test_static_int8_from_calibration_data(models: dict[str, Path], tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, features=sample_inputs("tabular", 48, seed=3))
    out = tmp_path / "out"
    res = run_pack(models["tabular"], out, calibration=calib, precisions=["int8"])
    assert res.report["settings"]["int8_mode"] == "static"
    # Without --eval-data the report measures on the calibration rows ...
    assert res.report["settings"]["samples"] == 48
    assert "calibration data" in res.report["settings"]["sample_source"]
    # ... with it, on those.
    evaluation = tmp_path / "eval.npz"
    np.savez(evaluation, features=sample_inputs("tabular", 40, seed=4))
    res = run_pack(models["tabular"], tmp_path / "o2", calibration=calib, eval_data=evaluation, precisions=["int8"])
    assert res.report["settings"]["samples"] == 40
    assert res.report["settings"]["sample_source"] == str(evaluation)
    ops = [n.op_type for n in onnx.load(str(out / "tabular.int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ form
    assert list(variants(load_manifest(out))) == ["fp32", "int8"]


def test_quality_profile_from_the_evaluation_data_is_written_and_listed_in_sha256sums(
    models: dict[str, Path], tmp_path: Path
) -> None:
    evaluation = tmp_path / "eval.npz"
    x = sample_inputs("tabular", 300, seed=5)
    np.savez(evaluation, features=x)
    out = tmp_path / "out"
    res = run_pack(models["tabular"], out, eval_data=evaluation, precisions=["fp32"])
    assert res.report["settings"]["quality_profile"] == "quality-profile.json"
    text = (out / "quality-profile.json").read_bytes()
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sums["quality-profile.json"] == integrity.hash_bytes(text).sha256
    prof = quality.parse_profile(text)
    assert prof.rows == 300 and prof.source == str(evaluation)
    assert [(o.name, o.classes) for o in prof.outputs] == [("probabilities", 3)]
    [inp] = prof.inputs
    assert inp.name == "features" and len(inp.features) == 16
    assert inp.features[0].mean == pytest.approx(float(x[:, 0].mean()), abs=1e-6)
    # The fp32 model's own answers on the same rows: confidence counts cover every row.
    assert sum(prof.outputs[0].confidence.counts) == 300


@pytest.mark.parametrize("legacy", [False, True], ids=["openssf", "digest"])
def test_quality_profile_is_referenced_by_sha256_in_the_manifest_and_signed_like_the_builds(
    models: dict[str, Path], tmp_path: Path, legacy: bool
) -> None:
    from edge_runtime.artifacts import openssf

    evaluation = tmp_path / "eval.npz"
    np.savez(evaluation, features=sample_inputs("tabular", 200, seed=6))
    key = integrity.generate_private_key("ecdsa-p256")
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(integrity.private_key_pem(key))
    out = tmp_path / "out"
    run_pack(models["tabular"], out, eval_data=evaluation, precisions=["fp32"], sign_key=key_file, name="tab",
             legacy_signature=legacy)
    spec = load_manifest(out)["spec"]
    qp = spec["qualityProfile"]
    text = (out / "quality-profile.json").read_bytes()
    assert qp["uri"] == (out / "quality-profile.json").as_uri()
    assert qp["sha256"] == integrity.hash_bytes(text).sha256 and qp["size"] == len(text)
    pub = (out / "public.pem").read_bytes()
    if legacy:
        # Its own signature over its digest, checked with the model's key (as the fetch init container does).
        integrity.verify_signature(pub, qp["sha256"], qp["signature"])
    else:
        assert "signature" not in qp
        # The one bundle lists it beside the builds: the same fetch verifies it with the same bundle.
        assert "quality-profile.json" in openssf.verify_bundle(spec["signature"]["bundle"], pub).files
        integrity.read_verified(out / "quality-profile.json", qp["sha256"], public_key_pem_bytes=pub,
                                signature=spec["signature"]["bundle"])


def test_no_quality_profile_from_random_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    res = run_pack(models["tabular"], tmp_path / "out", precisions=["fp32"])
    assert res.report["settings"]["quality_profile"] is None
    assert not (tmp_path / "out" / "quality-profile.json").exists()
    assert "qualityProfile" not in load_manifest(tmp_path / "out")["spec"]


def test_agreement_floor_leaves_a_variant_out_with_the_reason(models: dict[str, Path], tmp_path: Path) -> None:
    # 256 samples: enough for this deterministic model to flip a few top-1 decisions in int8.
    fast = {"samples": 256}
    res = run_pack(models["cnn"], tmp_path / "a", min_agreement=None, **fast)
    agree = {r.name: r.top1_agreement for r in res.reports}
    int8 = agree["int8"]
    assert int8 is not None
    assert 0.9 < int8 < 1.0

    # At exactly the measured agreement the variant stays ...
    res = run_pack(models["cnn"], tmp_path / "b", min_agreement=int8, **fast)
    assert "int8" in variants(load_manifest(tmp_path / "b"))
    # ... just above it, it is left out of the manifest and the folder, with the reason printed.
    res = run_pack(models["cnn"], tmp_path / "c", min_agreement=min(1.0, int8 + 1e-6), **fast)
    r = {r.name: r for r in res.reports}["int8"]
    assert not r.included and "under the floor" in r.reason
    assert "left out int8: top-1 agreement" in res.table
    assert "int8" not in variants(load_manifest(tmp_path / "c"))
    assert not (tmp_path / "c" / "cnn.int8.onnx").exists()
    assert "cnn.int8.onnx" not in (tmp_path / "c" / "SHA256SUMS").read_text()
    excluded = {v["name"]: v for v in json.loads((tmp_path / "c" / "report.json").read_text())["variants"]}
    assert excluded["int8"]["included"] is False and excluded["int8"]["top1_agreement"] == int8


def test_error_ceiling_for_regressors(tmp_path: Path) -> None:
    # Single-output regressor: [N,4] -> [N,1]; agreement is max abs error, not top-1.
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense")],
        "reg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "w")],
    )
    model = tmp_path / "reg.onnx"
    onnx.save(_model(g), str(model))
    res = run_pack(model, tmp_path / "out", max_abs_error=1e-9)
    assert res.task == "regressor"
    by = {r.name: r for r in res.reports}
    assert by["fp32"].included and by["fp32"].top1_agreement is None
    for name in ("fp16", "int8"):
        assert not by[name].included and "max abs error" in by[name].reason
    assert list(variants(load_manifest(tmp_path / "out"))) == ["fp32"]


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def mixed_model(path: Path) -> Path:
    """Dense layers plus an fp16 embedding table: the int8 quantizer breaks on the Gather."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="dense1"),
        helper.make_node("Gather", ["emb", "ids"], ["e16"], name="embed"),
        helper.make_node("Cast", ["e16"], ["e"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Add", ["h", "e"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["logits"], name="dense2"),
        helper.make_node("Softmax", ["logits"], ["p"], axis=1, name="softmax"),
    ]
    g = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float16), "emb"),
            numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2"),
        ],
    )
    m = _model(g)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def test_ops_the_quantizer_cannot_handle_are_named_and_kept_in_float(tmp_path: Path) -> None:
    model = mixed_model(tmp_path / "mixed.onnx")
    out = tmp_path / "out"
    res = run_pack(model, out, precisions=["int8"], min_agreement=None)
    r = {r.name: r for r in res.reports}["int8"]
    assert r.included, r.reason
    notes = " ".join(r.notes)
    assert "cannot handle Gather (embed)" in notes
    assert "MatMul x2" in notes
    q = onnx.load(str(out / "mixed.int8.onnx"))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("MatMulInteger") == 2  # the dense layers are int8 ...
    assert "Gather" in ops  # ... the embedding lookup stayed as it was
    emb = next(i for i in q.graph.initializer if i.name == "emb")
    assert emb.data_type == TensorProto.FLOAT16
    y = session((out / "mixed.int8.onnx").read_bytes()).run(
        None, {"x": np.ones((3, 8), np.float32), "ids": np.array([0, 5, 9], np.int64)}
    )[0]
    assert y.shape == (3, 4)


def test_user_exclusions_keep_ops_in_float(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_pack(models["cnn"], out, precisions=["int8"], exclude_nodes=["conv1"], exclude_ops=["Gemm"])
    ops = [n.op_type for n in onnx.load(str(out / "cnn.int8.onnx")).graph.node]
    # conv1 stays a float Conv; the Gemm head stays float (onnxruntime may rewrite it as MatMul+Add).
    assert ops.count("ConvInteger") == 1 and "Conv" in ops and "MatMulInteger" not in ops
    assert "Conv x1" in " ".join({r.name: r for r in res.reports}["int8"].notes)
    with pytest.raises(PackError, match="names no node"):
        run_pack(models["cnn"], tmp_path / "x", precisions=["int8"], exclude_nodes=["nope"])
    assert not (tmp_path / "x").exists()


# --- bad input: clear errors, nothing written ----------------------------------------------------


def no_inputs_model(path: Path) -> Path:
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))],
        "const",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    onnx.save(_model(g), str(path))
    return path


def rsa_key(path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def p384_key(path: Path) -> Path:
    k = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.mark.parametrize(
    ("case", "reason", "message"),
    [
        ("text", "InvalidModel", "not an ONNX model"),
        ("empty", "InvalidModel", "is empty"),
        ("missing", "Unreadable", "cannot read"),
        ("directory", "Unreadable", "is a directory"),
        ("no-inputs", "InvalidModel", "has no inputs"),
        ("checker", "InvalidModel", "fails the ONNX checker"),
        ("rsa-key", "BadKey", "not supported"),
        ("p384-key", "BadKey", "not supported"),
        ("public-key-as-private", "BadKey", "not a PEM private key"),
        ("short-aes-key", "BadKey", "32 bytes"),
        ("bad-calibration", "BadCalibration", "one array per model input"),
    ],
)
def test_bad_input_gives_a_clear_error_and_writes_nothing(
    models: dict[str, Path], tmp_path: Path, case: str, reason: str, message: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = models["cnn"]
    kw: dict[str, Any] = {}
    if case == "text":
        model = src / "notes.onnx"
        model.write_text("this is not a model\n")
    elif case == "empty":
        model = src / "empty.onnx"
        model.write_bytes(b"")
    elif case == "missing":
        model = src / "missing.onnx"
    elif case == "directory":
        model = src
    elif case == "no-inputs":
        model = no_inputs_model(src / "const.onnx")
    elif case == "checker":
        bad = onnx.load(str(models["cnn"]))
        bad.graph.node[0].input[1] = "no-such-tensor"
        model = src / "broken.onnx"
        model.write_bytes(bad.SerializeToString())
    elif case == "rsa-key":
        kw["sign_key"] = rsa_key(src / "rsa.pem")
    elif case == "p384-key":
        kw["sign_key"] = p384_key(src / "p384.pem")
    elif case == "public-key-as-private":
        pub = src / "public.pem"
        pub.write_bytes(integrity.public_key_pem(integrity.generate_private_key()))
        kw["sign_key"] = pub
    elif case == "short-aes-key":
        k = src / "aes.key"
        k.write_bytes(b"0123456789")
        kw["encryption_key"] = k
    elif case == "bad-calibration":
        calib = src / "c.npz"
        np.savez(calib, wrong_name=np.zeros((4, 3, 32, 32), np.float32))
        kw["calibration"] = calib
    out_parent = tmp_path / "dist"
    out_parent.mkdir()
    out = out_parent / "out"
    with pytest.raises(IntegrityError) as e:
        run_pack(model, out, **kw)
    assert e.value.reason == reason
    assert message in e.value.message
    assert not out.exists()
    assert list(out_parent.iterdir()) == []


def test_a_late_failure_leaves_no_partial_output(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_runtime.pack import packer

    def boom(**_: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    # Fail after every variant file was written into the staging folder.
    monkeypatch.setattr(packer, "build_edgemodel", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_pack(models["tabular"], out)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_a_clear_error(models: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(PackError) as e:
        run_pack(models["tabular"], blocker / "out", precisions=["fp32"])
    assert e.value.reason == "Unwritable" and "cannot create the output" in e.value.message
    with pytest.raises(PackError) as e:
        run_pack(models["tabular"], blocker, precisions=["fp32"])
    assert e.value.reason == "OutputExists"


def test_existing_output_is_kept_unless_forced(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(PackError) as e:
        run_pack(models["tabular"], out)
    assert e.value.reason == "OutputExists"
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    run_pack(models["tabular"], out, force=True, precisions=["fp32"])
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "edgemodel.yaml", "report.json", "tabular.fp32.onnx"]
    assert not leftovers(tmp_path)
    # An existing empty folder is fine without --force.
    empty = tmp_path / "empty"
    empty.mkdir()
    run_pack(models["tabular"], empty, precisions=["fp32"])
    assert (empty / "edgemodel.yaml").exists()


# --- the command line ----------------------------------------------------------------------------


def test_cli_pack_prints_the_table_and_next_steps(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ecdsa-p256")))
    out = tmp_path / "out"
    rc = cli_main(
        [
            "pack",
            str(models["tabular"]),
            "-o",
            str(out),
            "--runs",
            "3",
            "--samples",
            "16",
            "--sign-key",
            str(key),
            "--namespace",
            "ml",
            "--base-uri",
            "http://10.0.0.1:8000/m/",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:2] == ["variant", "size"]
    assert "kubectl create secret generic tabular-signing -n ml --from-file=public.pem=" in text
    assert f"kubectl apply -n ml -f {out / 'edgemodel.yaml'}" in text
    assert load_manifest(out)["metadata"]["namespace"] == "ml"

    rc = cli_main(["pack", str(models["tabular"]), "-o", str(tmp_path / "j"), "--runs", "2", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["variants"][0]["name"] == "fp32"


def test_cli_exit_codes_name_the_problem(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("hello")
    assert cli_main(["pack", str(bogus), "-o", str(tmp_path / "a")]) == 7
    assert "InvalidModel" in capsys.readouterr().err
    rc = cli_main(
        ["pack", str(models["cnn"]), "-o", str(tmp_path / "b"), "--sign-key", str(p384_key(tmp_path / "p.pem"))]
    )
    assert rc == 8
    assert "BadKey" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["pack", str(models["cnn"]), "--min-agreement", "1.5"])
    assert e.value.code == 2


def test_the_runtime_cli_does_not_need_onnx() -> None:
    # The runtime image has no onnx: loading the CLI (which registers `pack`) must not import it.
    code = (
        "import sys, edge_runtime.cli as c; c.build_parser(); "
        "bad = [m for m in ('onnx', 'onnxconverter_common', 'onnxruntime.quantization') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_runtime_fetches_what_pack_wrote(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The contract end to end: manifest uri + sha256 + signature are exactly what `edge-runtime fetch` takes.
    key = tmp_path / "k.pem"
    key.write_bytes(integrity.private_key_pem(integrity.generate_private_key("ecdsa-p256")))
    out = tmp_path / "out"
    run_pack(models["tabular"], out, sign_key=key)
    cache = tmp_path / "cache"
    bundle = load_manifest(out)["spec"]["signature"]["bundle"]  # OpenSSF: one bundle for every build
    for name, v in variants(load_manifest(out)).items():
        args = ["fetch", v["uri"], "--sha256", v["sha256"], "--cache", str(cache)]
        args += ["--openssf-bundle", bundle, "--public-key-file", str(out / "public.pem")]
        assert cli_main(args) == 0, name
        assert capsys.readouterr().out.strip() == str(cache / "sha256" / v["sha256"])
    # The digest format: a signature of another build is refused by the runtime (BadSignature = 4).
    out = tmp_path / "legacy"
    run_pack(models["tabular"], out, sign_key=key, legacy_signature=True)
    v = variants(load_manifest(out))
    args = ["fetch", v["int8"]["uri"], "--sha256", v["int8"]["sha256"], "--cache", str(tmp_path / "c2")]
    args += ["--signature", v["fp16"]["signature"], "--public-key-file", str(out / "public.pem")]
    assert cli_main(args) == 4
