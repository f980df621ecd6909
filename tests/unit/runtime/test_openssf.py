"""The OpenSSF model signing format: signed by the upstream `model-signing` library (and CLI),
verified by the runtime's verification, offline, with the reasons the digest scheme uses."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.artifacts import openssf
from edge_runtime.artifacts.integrity import IntegrityError
from tests.unit.runtime import openssf_helpers as h


def _model(tmp: Path, name: str = "model.onnx", data: bytes = b"onnx bytes " * 1000) -> tuple[Path, str]:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("verification tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_key_mode_single_file_signed_by_the_library(tmp_path: Path, no_network: None) -> None:
    model, sha = _model(tmp_path)
    key = h.ec_key()
    bundle = h.sign_key(model, h.private_pem(key), tmp_path / "model.sig")
    m = openssf.verify_artifact(bundle, sha, h.public_pem(key))
    assert m.mode == "public-key" and m.covering(sha) == "."


def test_one_bundle_over_a_directory_covers_every_build(tmp_path: Path) -> None:
    src, sha = _model(tmp_path / "m", "model.onnx", b"fp32" * 100)
    _, sha16 = _model(tmp_path / "m", "model.fp16.onnx", b"fp16" * 100)
    key = h.ec_key()
    bundle = h.sign_key(src.parent, h.private_pem(key), tmp_path / "model.sig")
    m = openssf.verify_bundle(bundle, h.public_pem(key))
    assert m.covering(sha) == "model.onnx" and m.covering(sha16) == "model.fp16.onnx"


def test_signed_by_the_upstream_cli(tmp_path: Path) -> None:
    cli = shutil.which("model_signing") or str(Path(sys.executable).with_name("model_signing"))
    if not Path(cli).exists():
        pytest.skip("the model_signing CLI is not installed")
    model, sha = _model(tmp_path)
    key = h.ec_key()
    (tmp_path / "k.pem").write_bytes(h.private_pem(key))
    subprocess.run([cli, "sign", "key", "--private_key", str(tmp_path / "k.pem"), "--signature",
                    str(tmp_path / "model.sig"), str(model)], check=True, capture_output=True, timeout=120)
    openssf.verify_artifact((tmp_path / "model.sig").read_bytes(), sha, h.public_pem(key))


def test_other_content_is_refused_as_bad_signature(tmp_path: Path) -> None:
    model, _ = _model(tmp_path)
    key = h.ec_key()
    bundle = h.sign_key(model, h.private_pem(key), tmp_path / "model.sig")
    tampered = bytearray(model.read_bytes())
    tampered[10] ^= 1
    other = hashlib.sha256(bytes(tampered)).hexdigest()
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(bundle, other, h.public_pem(key))
    assert e.value.reason == "BadSignature" and "signs no file with sha256" in e.value.message


def _retamper(bundle: bytes, edit: Any) -> bytes:
    doc = json.loads(bundle)
    payload = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    edit(payload)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(doc).encode()


def test_tampered_manifest_or_signature_is_refused(tmp_path: Path) -> None:
    model, sha = _model(tmp_path)
    key = h.ec_key()
    bundle = h.sign_key(model, h.private_pem(key), tmp_path / "model.sig")

    def swap_digest(p: dict[str, Any]) -> None:
        p["predicate"]["resources"][0]["digest"] = "0" * 64

    doc = json.loads(bundle)
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    for bad in (_retamper(bundle, swap_digest), json.dumps(doc).encode()):
        with pytest.raises(IntegrityError) as e:
            openssf.verify_artifact(bad, sha, h.public_pem(key))
        assert e.value.reason == "BadSignature", e.value.message


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    model, sha = _model(tmp_path)
    bundle = h.sign_key(model, h.private_pem(h.ec_key()), tmp_path / "model.sig")
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(bundle, sha, h.public_pem(h.ec_key()))
    assert e.value.reason == "BadSignature" and "public key" in e.value.message


def test_certificate_chain_mode_offline(tmp_path: Path, no_network: None) -> None:
    model, sha = _model(tmp_path)
    root, mid, leaf, leaf_key = h.small_ca(tmp_path / "ca")
    bundle = h.sign_certificate(model, leaf_key, leaf, [mid], tmp_path / "model.sig")
    m = openssf.verify_artifact(bundle, sha, root.read_bytes())
    assert m.mode == "certificate"
    other_root, *_ = h.small_ca(tmp_path / "other", "someone else")
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(bundle, sha, other_root.read_bytes())
    assert e.value.reason == "BadSignature" and "trust roots" in e.value.message
    with pytest.raises(IntegrityError) as e:  # a certificate bundle is not checked against a bare key
        openssf.verify_artifact(bundle, sha, h.public_pem(h.ec_key()))
    assert e.value.reason == "BadSignature" and "certificate" in e.value.message


@pytest.mark.parametrize("bundle, words", [
    (b"", "not JSON"),
    (b"not json at all", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', "no verificationMaterial"),
    (b'{"mediaType": "text/plain"}', "mediaType"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (json.dumps({"mediaType": openssf.BUNDLE_MEDIA_TYPE, "verificationMaterial": {"publicKey": {"hint": "x"}},
                 "dsseEnvelope": {"payload": "!!", "payloadType": "x", "signatures": [{"sig": "??"}]}}).encode(),
     "BadSignature"),
])
def test_malformed_bundles_are_refused_clearly(bundle: bytes, words: str) -> None:
    key = h.ec_key()
    t0 = time.monotonic()
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(bundle, "a" * 64, h.public_pem(key))
    assert e.value.reason == "BadSignature"
    assert words in e.value.message or words == e.value.reason, e.value.message
    assert time.monotonic() - t0 < 10


def test_deeply_nested_bundle_is_refused_without_recursing() -> None:
    deep = b'{"mediaType": "' + openssf.BUNDLE_MEDIA_TYPE.encode() + b'", "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(deep, "a" * 64, h.public_pem(h.ec_key()))
    assert e.value.reason == "BadSignature" and "nests deeper" in e.value.message


def test_oversized_bundle_is_refused_before_parsing() -> None:
    big = b'{"pad": "' + b"x" * (openssf.MAX_BUNDLE_BYTES + 1) + b'"}'
    with pytest.raises(IntegrityError) as e:
        openssf.verify_artifact(big, "a" * 64, h.public_pem(h.ec_key()))
    assert e.value.reason == "TooLarge"


def test_unusable_key_material_is_bad_key(tmp_path: Path) -> None:
    model, sha = _model(tmp_path)
    bundle = h.sign_key(model, h.private_pem(h.ec_key()), tmp_path / "model.sig")
    from edge_runtime.artifacts.integrity import generate_private_key, public_key_pem

    for pem in (b"garbage", public_key_pem(generate_private_key("ed25519"))):
        with pytest.raises(IntegrityError) as e:
            openssf.verify_artifact(bundle, sha, pem)
        assert e.value.reason == "BadKey", e.value.message


def test_sign_files_is_what_the_upstream_verifier_accepts(tmp_path: Path) -> None:
    d = tmp_path / "out"
    _, sha = _model(d, "model.onnx", b"a" * 50)
    _, sha8 = _model(d, "model.int8.onnx", b"b" * 50)
    (d / "report.json").write_text("{}")
    key = h.ec_key()
    openssf.sign_files(d, ["model.onnx", "model.int8.onnx"], h.private_pem(key), tmp_path / "model.sig")
    (tmp_path / "k.pub").write_bytes(h.public_pem(key))
    m = openssf.verify_bundle((tmp_path / "model.sig").read_bytes(), h.public_pem(key))
    assert dict(m.files) == {"model.onnx": sha, "model.int8.onnx": sha8}
    import model_signing

    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "k.pub").verify(
        d, tmp_path / "model.sig")


def test_sign_files_refuses_an_ed25519_key(tmp_path: Path) -> None:
    from edge_runtime.artifacts.integrity import generate_private_key, private_key_pem

    _model(tmp_path, "model.onnx")
    with pytest.raises(IntegrityError) as e:
        openssf.sign_files(tmp_path, ["model.onnx"], private_key_pem(generate_private_key("ed25519")),
                           tmp_path / "x.sig")
    assert e.value.reason == "BadKey" and "ECDSA" in e.value.message


def test_importing_the_runtime_verification_does_not_import_sigstore() -> None:
    code = ("import sys, edge_runtime.artifacts.fetch, edge_runtime.artifacts.openssf, edge_runtime.commands; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sigstore', 'model_signing', 'tuf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_serve_loads_verify_a_bundle_like_a_digest_signature(tmp_path: Path) -> None:
    """`serve` (and the repository API's loads) verify through integrity.verify_bytes: either format."""
    from edge_runtime.artifacts.integrity import verify_bytes

    model, sha = _model(tmp_path)
    key = h.ec_key()
    bundle = h.sign_key(model, h.private_pem(key), tmp_path / "model.sig").decode()
    assert verify_bytes(model.read_bytes(), sha, public_key_pem_bytes=h.public_pem(key), signature=bundle)
    with pytest.raises(IntegrityError) as e:
        verify_bytes(model.read_bytes(), sha, public_key_pem_bytes=h.public_pem(h.ec_key()), signature=bundle)
    assert e.value.reason == "BadSignature"
