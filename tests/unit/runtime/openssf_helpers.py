"""Signing with the upstream `model-signing` library, for the tests: keys and a small CA built with
`cryptography`, signatures made exactly as `model_signing sign key|certificate` makes them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                      crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


def small_ca(tmp: Path, name: str = "edgeai test root") -> tuple[Path, Path, Path, Path]:
    """A root CA, an intermediate and a leaf signing certificate. Returns paths of the root (the trust
    root a verifier is given), the intermediate, the leaf certificate and the leaf's private key."""
    tmp.mkdir(parents=True, exist_ok=True)
    root_key, mid_key, leaf_key = ec_key(), ec_key(), ec_key()
    root = _cert(name, root_key, name, root_key, ca=True)
    mid = _cert(f"{name} intermediate", mid_key, name, root_key, ca=True)
    leaf = _cert("model publisher", leaf_key, f"{name} intermediate", mid_key, ca=False)
    paths = (tmp / "root.pem", tmp / "mid.pem", tmp / "leaf.pem", tmp / "leaf.key")
    for p, data in zip(paths, (cert_pem(root), cert_pem(mid), cert_pem(leaf), private_pem(leaf_key)), strict=True):
        p.write_bytes(data)
    return paths


def sign_key(model: Path, key_pem: bytes, out: Path) -> bytes:
    """`model_signing sign key --private_key KEY --signature OUT MODEL`, through the library's API."""
    import model_signing

    key_path = out.with_name(out.name + ".key")
    key_path.write_bytes(key_pem)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key_path).sign(model, out)
    return out.read_bytes()


def sign_certificate(model: Path, leaf_key: Path, leaf: Path, chain: list[Path], out: Path) -> bytes:
    import model_signing

    model_signing.signing.Config().use_certificate_signer(
        private_key=leaf_key, signing_certificate=leaf, certificate_chain=chain).sign(model, out)
    return out.read_bytes()
