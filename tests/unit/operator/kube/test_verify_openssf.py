"""An EdgeModel signed in the OpenSSF model signing format (by the upstream `model-signing` library),
read as the operator reads it, checked by the operator's verification (kube/verify.check_artifact) and
by the runtime's init container (`edge-runtime fetch` with the arguments the workload gets). No cluster."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_operator.core.manifests import PUBLIC_KEY_DIR, Owner, WorkloadInputs, fetch_args, serve_args
from edge_operator.core.placement import Artifact
from edge_operator.core.views import SecretRef, model_info
from edge_operator.kube.verify import VerifySettings, check_artifact
from edge_runtime.cli import main
from edgeai_api import constants as c
from tests.unit.runtime import openssf_helpers as h

CFG = VerifySettings(allow_file_uris=True)


def _builds(d: Path) -> dict[str, tuple[Path, str]]:
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in (("model.onnx", b"fp32 " * 200), ("model.int8.onnx", b"int8 " * 200)):
        (d / name).write_bytes(data)
        out[name] = (d / name, hashlib.sha256(data).hexdigest())
    return out


def _body(builds: dict[str, tuple[Path, str]], signature: dict[str, Any]) -> dict[str, Any]:
    src, sha = builds["model.onnx"]
    v, vsha = builds["model.int8.onnx"]
    return {"apiVersion": c.API_VERSION, "kind": "EdgeModel",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"source": {"uri": src.as_uri(), "sha256": sha}, "signature": signature,
                     "variants": [{"name": "int8", "precision": "int8", "uri": v.as_uri(), "sha256": vsha,
                                   "accelerators": ["npu"]}]}}


def _check(art: Artifact, material: bytes | None) -> tuple[bool, str, str]:
    async def go() -> tuple[bool, str, str]:
        async with aiohttp.ClientSession() as s:
            chk, _ = await check_artifact(art, CFG, s, material)
            return chk.ok, chk.reason, chk.message

    return asyncio.run(go())


@pytest.fixture
def signed(tmp_path: Path) -> tuple[dict[str, tuple[Path, str]], bytes, bytes]:
    builds = _builds(tmp_path / "model")
    key = h.ec_key()
    bundle = h.sign_key(tmp_path / "model", h.private_pem(key), tmp_path / "model.sig")
    return builds, bundle, h.public_pem(key)


def test_operator_reads_and_verifies_every_build_with_one_bundle(signed: Any) -> None:
    builds, bundle, pub = signed
    m = model_info(_body(builds, {"format": "openssf", "bundle": bundle.decode(),
                                  "publicKeySecretRef": {"name": "keys"}}))
    assert m.spec_error == "" and m.public_key == SecretRef("keys", "public.pem")
    assert m.source.bundle == bundle.decode() and m.source.signature is None
    for art in (m.source, *m.variants):
        assert _check(art, pub) == (True, "Verified", "")


def test_operator_refuses_unsigned_content_wrong_key_and_no_key(signed: Any, tmp_path: Path) -> None:
    builds, bundle, pub = signed
    src, _ = builds["model.onnx"]
    tampered = bytearray(src.read_bytes())
    tampered[7] ^= 1
    src.write_bytes(bytes(tampered))  # one byte changed, and the spec's sha256 follows it
    body = _body(builds, {"format": "openssf", "bundle": bundle.decode(), "publicKeySecretRef": {"name": "keys"}})
    body["spec"]["source"]["sha256"] = hashlib.sha256(bytes(tampered)).hexdigest()
    m = model_info(body)
    ok, reason, msg = _check(m.source, pub)
    assert (ok, reason) == (False, "BadSignature") and "signs no file with sha256" in msg
    ok, reason, msg = _check(m.variants[0], h.public_pem(h.ec_key()))
    assert (ok, reason) == (False, "BadSignature") and "public key" in msg
    assert _check(m.variants[0], None)[:2] == (False, "BadSignature")


def test_operator_refuses_a_file_changed_after_signing_as_digest_mismatch(signed: Any) -> None:
    builds, bundle, pub = signed
    src, _ = builds["model.onnx"]
    src.write_bytes(src.read_bytes() + b"x")
    m = model_info(_body(builds, {"format": "openssf", "bundle": bundle.decode(),
                                  "publicKeySecretRef": {"name": "keys"}}))
    assert _check(m.source, pub)[:2] == (False, "DigestMismatch")


def test_operator_certificate_mode_reads_trust_roots_from_the_secret(tmp_path: Path) -> None:
    builds = _builds(tmp_path / "model")
    root, mid, leaf, leaf_key = h.small_ca(tmp_path / "ca")
    bundle = h.sign_certificate(tmp_path / "model", leaf_key, leaf, [mid], tmp_path / "model.sig")
    m = model_info(_body(builds, {"format": "openssf", "bundle": bundle.decode(),
                                  "certificateChainSecretRef": {"name": "publisher-ca"}}))
    assert m.public_key == SecretRef("publisher-ca", "ca.pem")
    assert _check(m.source, root.read_bytes()) == (True, "Verified", "")
    other, *_ = h.small_ca(tmp_path / "other", "other root")
    assert _check(m.source, other.read_bytes())[:2] == (False, "BadSignature")


def test_digest_format_is_read_as_before(signed: Any) -> None:
    builds, _, _ = signed
    m = model_info(_body(builds, {"publicKeySecretRef": {"name": "keys"}, "value": "c2ln"}))
    assert m.source.signature == "c2ln" and m.source.bundle is None


def test_the_init_container_verifies_with_the_arguments_the_workload_gets(signed: Any, tmp_path: Path) -> None:
    builds, bundle, pub = signed
    m = model_info(_body(builds, {"format": "openssf", "bundle": bundle.decode(),
                                  "publicKeySecretRef": {"name": "keys"}}))
    keyfile = tmp_path / "public.pem"
    keyfile.write_bytes(pub)
    for art in (m.source, m.variants[0]):
        inp = WorkloadInputs(namespace="ns", owner=Owner(c.API_VERSION, c.KIND_IDEP, "d", "u"), model="m",
                             model_version=None, device="e", node="e", artifact=art, image="img",
                             public_key=m.public_key)
        assert "--openssf-bundle" in serve_args(inp)
        args = [str(keyfile) if a == f"{PUBLIC_KEY_DIR}/public.pem" else a for a in fetch_args(inp)]
        args[args.index("--cache") + 1] = str(tmp_path / "cache")
        assert main(args) == 0
        assert (tmp_path / "cache" / "sha256" / art.sha256).exists()
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(h.public_pem(h.ec_key()))
    args = [str(wrong) if a == f"{PUBLIC_KEY_DIR}/public.pem" else a for a in fetch_args(inp)]
    args[args.index("--cache") + 1] = str(tmp_path / "cache2")
    assert main(args) == 4  # BadSignature, before any byte moves
    assert not (tmp_path / "cache2" / "sha256" / art.sha256).exists()


def test_runtime_verify_accepts_the_upstream_signature_file_unchanged(signed: Any, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    builds, _, pub = signed
    src, sha = builds["model.onnx"]
    (tmp_path / "k.pub").write_bytes(pub)
    assert main(["verify", str(src), "--sha256", sha, "--signature-file", str(tmp_path / "model.sig"),
                 "--public-key-file", str(tmp_path / "k.pub")]) == 0
    assert "signature=valid" in capsys.readouterr().out
    big = tmp_path / "big.sig"
    big.write_bytes(b"{" + b" " * (1 << 20))
    assert main(["verify", str(src), "--sha256", sha, "--signature-file", str(big),
                 "--public-key-file", str(tmp_path / "k.pub")]) != 0
