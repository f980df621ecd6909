"""The OpenSSF model signing format: a Sigstore bundle over a manifest of the model's files.

What `model_signing sign key|certificate` (the upstream CLI, package `model-signing`) writes
as `model.sig`: a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an
in-toto statement listing every signed file with its SHA-256. Verification is done by the
upstream library, in its two offline modes only:

- a public key (ECDSA P-256/384/521, PEM): `model_signing verify key`;
- a certificate chain, checked against trust roots (PEM CA certificates) given by the user:
  `model_signing verify certificate`.

Keyless Sigstore verification (Fulcio certificate, Rekor transparency log, TUF trust root)
needs the network and is never attempted here: a device verifies with what it was given.

An EdgeModel build is one file, named by its SHA-256 in the cache, so the library's manifest
is compared by content, not by name: a build is covered when the signed manifest lists a
file with exactly that SHA-256. One bundle over a directory (model.onnx, model.fp16.onnx, ...)
therefore covers every build of the model, and the file's name on the device does not matter.

Errors are `IntegrityError` with the same reasons as the digest scheme (`BadSignature`,
`BadKey`, `TooLarge`). Input is bounded: a bundle over `MAX_BUNDLE_BYTES` is refused before
it is parsed, and deep JSON nesting is refused, not recursed into.

`model_signing` is imported lazily, inside the functions that need it: importing this module
(and so the runtime's fetch and verify path) costs nothing, and the library's Sigstore client
is never used.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge_runtime.artifacts.integrity import IntegrityError, check_sha256

FORMAT = "openssf"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
MAX_BUNDLE_BYTES = 256 << 10  # a key-mode bundle is ~1.5 KiB, a certificate chain adds a few KiB
MAX_DEPTH = 32  # a real bundle nests 6 deep

Mode = Literal["public-key", "certificate"]


@dataclass(frozen=True)
class SignedManifest:
    """What a verified bundle says was signed: file name -> SHA-256 (hex)."""

    model_name: str
    files: Mapping[str, str]
    mode: Mode

    def covering(self, sha256: str) -> str | None:
        """The name of a signed file with this content, if any."""
        for name, digest in sorted(self.files.items()):
            if digest == sha256:
                return name
        return None


def _bad(message: str) -> IntegrityError:
    return IntegrityError("BadSignature", message)


def _depth(obj: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    deepest = 0
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(x, dict):
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            stack.extend((v, d + 1) for v in x)
    return deepest


def parse_bundle(bundle: str | bytes) -> dict[str, Any]:
    """Parse bundle JSON within bounds; the shape the library needs, or BadSignature/TooLarge."""
    raw = bundle.encode("utf-8") if isinstance(bundle, str) else bundle
    if len(raw) > MAX_BUNDLE_BYTES:
        raise IntegrityError(
            "TooLarge", f"signature bundle is {len(raw)} bytes, larger than the limit of {MAX_BUNDLE_BYTES}"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise _bad(f"signature bundle is not JSON: {str(e)[:200]}") from e
    if not isinstance(doc, dict):
        raise _bad("signature bundle is not a JSON object")
    if _depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise _bad(f"signature bundle nests deeper than {MAX_DEPTH} levels")
    if doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise _bad(f"signature bundle's mediaType is {doc.get('mediaType')!r}, expected {BUNDLE_MEDIA_TYPE}")
    material = doc.get("verificationMaterial")
    env = doc.get("dsseEnvelope")
    if not isinstance(material, dict) or not isinstance(env, dict):
        raise _bad("signature bundle has no verificationMaterial or no dsseEnvelope (not an OpenSSF model signature)")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise _bad("signature bundle's DSSE envelope must hold exactly one signature")
    # What model_signing's own reader adjusts for bundles written by older versions of it.
    material.setdefault("tlogEntries", [])
    pk = material.get("publicKey")
    if isinstance(pk, dict):
        pk.setdefault("hint", None)
        for k in ("rawBytes", "keyDetails"):
            pk.pop(k, None)
    return doc


def looks_like_bundle(text: str | bytes) -> bool:
    """True when `text` is JSON rather than a base64 digest signature (the old format)."""
    head = text.lstrip()[:1]
    return head in ("{", b"{")


def material_kind(pem: bytes) -> Mode:
    """A public key or CA certificates, as the PEM's own label says."""
    if b"-----BEGIN CERTIFICATE-----" in pem:
        return "certificate"
    if b"-----BEGIN PUBLIC KEY-----" in pem:
        return "public-key"
    raise IntegrityError("BadKey", "expected a PEM public key or PEM CA certificates")


def _check_material(pem: bytes, mode: Mode) -> None:
    if mode == "public-key":
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as e:
            raise IntegrityError("BadKey", f"not a PEM public key: {e}") from e
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1",
        ):
            raise IntegrityError(
                "BadKey",
                f"the OpenSSF model signing format needs an ECDSA P-256, P-384 or P-521 key, got {type(key).__name__}",
            )
    else:
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as e:
            raise IntegrityError("BadKey", f"not PEM CA certificates: {e}") from e
        if not certs:
            raise IntegrityError("BadKey", "no certificate in the trust roots")


@contextmanager
def _as_file(data: bytes) -> Iterator[Path]:
    # The library's verifiers and signers take paths; the material lives only as long as the call.
    with tempfile.TemporaryDirectory(prefix="edgeai-openssf-") as d:
        p = Path(d) / "material.pem"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield p


def verify_bundle(bundle: str | bytes, material_pem: bytes) -> SignedManifest:
    """Authenticate a bundle with a public key or trust roots (offline); returns what it signs.

    Raises IntegrityError: BadSignature (malformed, wrong key, untrusted chain, tampered),
    BadKey (unusable key material), TooLarge (bundle over the limit).
    """
    doc = parse_bundle(bundle)
    mode = material_kind(material_pem)
    _check_material(material_pem, mode)
    from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb
    from sigstore_models.bundle import v1 as bundle_pb

    try:
        sig = sign_sigstore_pb.Signature(bundle_pb.Bundle.from_dict(doc))
    except Exception as e:  # the models' own validation errors: any is "not a bundle"
        raise _bad(f"signature bundle does not parse as a Sigstore bundle: {str(e)[:300]}") from e
    has_certs = bool(doc["verificationMaterial"].get("x509CertificateChain"))
    if mode == "public-key" and has_certs:
        raise _bad("the bundle was signed with a certificate; verify it with certificateChainSecretRef (trust roots)")
    if mode == "certificate" and not has_certs:
        raise _bad("the bundle was signed with a bare key; verify it with publicKeySecretRef")
    try:
        with _as_file(material_pem) as path:
            verifier: Any = (sign_ec_key.Verifier(path) if mode == "public-key"
                             else sign_certificate.Verifier([path]))
            manifest = verifier.verify(sig)
    except IntegrityError:
        raise
    except Exception as e:  # InvalidSignature, ValueError, OpenSSL's X509StoreContextError, KeyError...
        why = str(e) or type(e).__name__
        if mode == "public-key":
            raise _bad(f"OpenSSF signature does not verify with the given public key: {why[:300]}") from e
        raise _bad(f"OpenSSF signature does not verify against the given trust roots: {why[:300]}") from e
    files: dict[str, str] = {}
    for rd in manifest.resource_descriptors():
        if rd.digest.algorithm == "sha256":
            files[str(rd.identifier)] = rd.digest.digest_hex
    if not files:
        raise _bad(
            "the signed manifest lists no SHA-256 file digests (sign with the default `files` serialization "
            "and sha256 hashing)"
        )
    return SignedManifest(str(manifest.model_name), files, mode)


def verify_artifact(bundle: str | bytes, sha256: str, material_pem: bytes, what: str = "artifact") -> SignedManifest:
    """Verify the bundle and that it signs a file whose SHA-256 is `sha256` (a build's digest)."""
    check_sha256(sha256)
    m = verify_bundle(bundle, material_pem)
    if m.covering(sha256) is None:
        raise _bad(
            f"{what}: the OpenSSF signature is valid but signs no file with sha256 {sha256} "
            f"(it signs {len(m.files)} file(s) of model {m.model_name!r})"
        )
    return m


# --- signing (pack) -----------------------------------------------------------


def sign_files(model_dir: Path, files: Sequence[str], private_key_pem: bytes, out: Path) -> None:
    """Sign `files` (names relative to `model_dir`) with an EC private key into `out`, as
    `model_signing sign key` would: other files in the directory are left out of the manifest."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise IntegrityError("BadKey", f"not a PEM private key without password: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IntegrityError(
            "BadKey",
            f"the OpenSSF model signing format needs an ECDSA key (P-256), got {type(key).__name__}: "
            "use an ECDSA P-256 key (`edge-runtime keygen --algorithm ecdsa-p256`) or the legacy format",
        )
    from model_signing import hashing, signing

    keep = set(files)
    ignored = sorted(p.name for p in model_dir.iterdir() if p.name not in keep)
    hcfg = hashing.Config()  # type: ignore[no-untyped-call]  # (its __init__ has no annotations)
    hcfg = hcfg.use_file_serialization(hashing_algorithm="sha256").set_ignored_paths(paths=ignored)
    cfg = signing.Config()  # type: ignore[no-untyped-call]
    with _as_file(private_key_pem) as key_path:
        cfg.use_elliptic_key_signer(private_key=key_path).set_hashing_config(hcfg).sign(model_dir, out)

