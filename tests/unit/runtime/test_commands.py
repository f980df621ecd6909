"""keygen / sign / verify / encrypt: a user signs and encrypts a model with this tool alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_runtime.artifacts.integrity import decrypt, parse_encryption_key
from edge_runtime.cli import main


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_keygen_sign_verify(tmp_path: Path, algorithm: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"pretend onnx bytes")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    key = tmp_path / "signing.key"
    assert main(["keygen", "--algorithm", algorithm, "--out", str(key)]) == 0
    assert key.stat().st_mode & 0o077 == 0, "private key must not be group/world readable"
    pub = tmp_path / "signing.key.pub"
    assert main(["keygen", "--out", str(key)]) != 0  # never overwrites silently
    capsys.readouterr()
    assert main(["sign", str(model), "--key", str(key), "--out", str(tmp_path / "sig")]) == 0
    sig = capsys.readouterr().out.strip()
    assert main(["sign", "--sha256", digest, "--key", str(key)]) == 0
    capsys.readouterr()
    assert main(["verify", str(model), "--sha256", digest, "--signature", sig, "--public-key-file", str(pub)]) == 0
    assert "signature=valid" in capsys.readouterr().out
    assert (
        main(
            [
                "verify",
                str(model),
                "--sha256",
                digest,
                "--signature-file",
                str(tmp_path / "sig"),
                "--public-key",
                str(pub),
            ]
        )
        == 0
    )
    # Tampered artifact: digest mismatch (3). Signature of another digest: bad signature (4).
    model.write_bytes(b"tampered")
    assert main(["verify", str(model), "--sha256", digest]) == 3
    other = hashlib.sha256(b"tampered").hexdigest()
    assert main(["verify", str(model), "--sha256", other, "--signature", sig, "--public-key-file", str(pub)]) == 4
    assert main(["verify", str(tmp_path / "nope"), "--sha256", digest]) == 1
    assert main(["verify", str(model), "--sha256", "XYZ"]) == 1
    err = capsys.readouterr().err
    assert "InvalidDigest" in err and "64 lowercase hex" in err


def test_encrypt_then_verify_with_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"secret weights" * 100)
    key = tmp_path / "model.aes"
    assert main(["keygen", "--algorithm", "aes-256-gcm", "--out", str(key)]) == 0
    out = tmp_path / "model.onnx.enc"
    capsys.readouterr()
    assert main(["encrypt", str(model), "--key", str(key), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256={digest}" in line
    assert decrypt(out.read_bytes(), parse_encryption_key(key.read_bytes())) == model.read_bytes()
    assert main(["verify", str(out), "--sha256", digest, "--decryption-key-file", str(key)]) == 0
    wrong = tmp_path / "wrong.aes"
    assert main(["keygen", "--algorithm", "aes-256-gcm", "--out", str(wrong)]) == 0
    assert main(["verify", str(out), "--sha256", digest, "--decryption-key-file", str(wrong)]) == 9
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(b"short")
    assert main(["encrypt", str(model), "--key", str(bad_key), "--out", str(out)]) == 8
