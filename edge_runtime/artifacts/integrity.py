"""Digests, signatures and encryption of model artifacts.

Pure functions over bytes, files and keys: no network, no Kubernetes. The
operator (verifying an EdgeModel), the runtime (fetch, serve) and `pack` all
use this one module, so a signature made by `pack` or `edge-runtime sign` is
exactly what the runtime and the operator accept.

Scheme, chosen to stay small and checkable with standard tools:
- digest: SHA-256 of the artifact *as stored* (for an encrypted artifact, of the
  ciphertext file), written as 64 lowercase hex characters;
- signature: over the 32 raw digest bytes. Ed25519 signs them as its message;
  ECDSA P-256 signs them as a pre-hashed SHA-256 value, so that both schemes
  sign the digest and never need the artifact again. The signature is stored
  base64-encoded; public keys are PEM (SubjectPublicKeyInfo);
- encryption: AES-256-GCM, file = MAGIC | 12-byte nonce | ciphertext+tag, the
  magic bound as associated data. Keys are 32 bytes, stored raw, base64 or hex.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
ENCRYPTION_MAGIC = b"EDGEAIENC1\x00"
NONCE_LEN = 12
KEY_LEN = 32

KeyAlgorithm = Literal["ed25519", "ecdsa-p256"]
KEY_ALGORITHMS: tuple[KeyAlgorithm, ...] = ("ed25519", "ecdsa-p256")


class IntegrityError(Exception):
    """An artifact, key or signature is not what it claims to be.

    `reason` is a CamelCase word fit for a Kubernetes condition reason.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DigestMismatch(IntegrityError):
    def __init__(self, expected: str, actual: str, what: str = "artifact") -> None:
        super().__init__(
            "DigestMismatch", f"{what} sha256 is {actual}, expected {expected}"
        )
        self.expected = expected
        self.actual = actual


def check_sha256(value: str, field: str = "sha256") -> str:
    """Return `value` if it is a well-formed digest, else say what is wrong."""
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise IntegrityError(
            "InvalidDigest", f"{field} must be 64 lowercase hex characters, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int


class StreamHasher:
    """Hashes data as it streams past, counting bytes, with an optional size cap."""

    def __init__(self, max_size: int | None = None) -> None:
        self._h = hashlib.sha256()
        self.size = 0
        self.max_size = max_size

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_size is not None and self.size > self.max_size:
            raise IntegrityError(
                "TooLarge", f"artifact is larger than the limit of {self.max_size} bytes"
            )
        self._h.update(chunk)

    def digest(self) -> Digest:
        return Digest(self._h.hexdigest(), self.size)


def hash_chunks(chunks: Iterable[bytes], max_size: int | None = None) -> Digest:
    h = StreamHasher(max_size)
    for c in chunks:
        h.update(c)
    return h.digest()


def read_chunks(f: BinaryIO, chunk: int = CHUNK) -> Iterable[bytes]:
    while True:
        b = f.read(chunk)
        if not b:
            return
        yield b


def hash_file(path: str | os.PathLike[str], max_size: int | None = None) -> Digest:
    with open(path, "rb") as f:
        return hash_chunks(read_chunks(f), max_size)


def hash_bytes(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest(), len(data))


def expect_digest(actual: str, expected: str, what: str = "artifact") -> None:
    check_sha256(expected)
    if not hmac.compare_digest(actual, expected):
        raise DigestMismatch(expected, actual, what)


# --- keys and signatures ---------------------------------------------------

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def generate_private_key(algorithm: KeyAlgorithm = "ed25519") -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise IntegrityError("BadKey", f"key algorithm must be one of {KEY_ALGORITHMS}, got {algorithm!r}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise IntegrityError("BadKey", f"not a PEM private key without password: {e}") from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IntegrityError(
        "BadKey", f"private key type {type(key).__name__} is not supported: use Ed25519 or ECDSA P-256"
    )


def load_public_key(pem: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise IntegrityError("BadKey", f"not a PEM public key: {e}") from e
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IntegrityError(
        "BadKey", f"public key type {type(key).__name__} is not supported: use Ed25519 or ECDSA P-256"
    )


def key_algorithm(key: PrivateKey | PublicKey) -> KeyAlgorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return "ecdsa-p256"


def sign_digest(key: PrivateKey, sha256: str) -> str:
    """Sign a hex digest; returns the base64 signature text."""
    raw = bytes.fromhex(check_sha256(sha256))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(raw)
    else:
        sig = key.sign(raw, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return base64.b64encode(sig).decode("ascii")


def decode_signature(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as e:
            raise IntegrityError("BadSignature", "signature is not base64 text") from e
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as e:
        raise IntegrityError("BadSignature", f"signature is not valid base64: {e}") from e


def verify_digest_signature(public_key_pem_bytes: bytes, sha256: str, signature: str | bytes) -> None:
    """Raise IntegrityError(BadSignature) unless `signature` signs `sha256`."""
    key = load_public_key(public_key_pem_bytes)
    raw = bytes.fromhex(check_sha256(sha256))
    sig = decode_signature(signature)
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, raw)
        else:
            key.verify(sig, raw, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature as e:
        raise IntegrityError(
            "BadSignature", f"signature does not verify for sha256 {sha256} with the given {key_algorithm(key)} key"
        ) from e


def is_openssf_bundle(signature: str | bytes) -> bool:
    """An OpenSSF model signing bundle is JSON; a digest signature is base64, which never starts with '{'."""
    return signature.lstrip()[:1] in ("{", b"{")


def verify_signature(public_key_pem_bytes: bytes, sha256: str, signature: str | bytes) -> None:
    """Either format, told apart by its text: an OpenSSF bundle (JSON, see openssf.py; the PEM may
    then also be trust roots) that lists `sha256`, or a base64 signature over it. Raises IntegrityError."""
    if is_openssf_bundle(signature):
        from edge_runtime.artifacts import openssf  # imports model_signing when called, never at import

        openssf.verify_artifact(signature, sha256, public_key_pem_bytes)
        return
    verify_digest_signature(public_key_pem_bytes, sha256, signature)


# --- encryption -------------------------------------------------------------


def generate_encryption_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def parse_encryption_key(data: bytes) -> bytes:
    """Accept a key as 32 raw bytes, or as base64 or hex text (as Secrets often hold it)."""
    if len(data) == KEY_LEN:
        return data
    text = data.strip()
    for encoding in ("hex", "base64"):
        try:
            key = bytes.fromhex(text.decode("ascii")) if encoding == "hex" else base64.b64decode(text, validate=True)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            continue
        if len(key) == KEY_LEN:
            return key
    raise IntegrityError(
        "BadKey", f"encryption key must be 32 bytes (raw, hex or base64) for AES-256-GCM, got {len(data)} bytes"
    )


def is_encrypted(head: bytes) -> bool:
    return head.startswith(ENCRYPTION_MAGIC)


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    ct = AESGCM(parse_encryption_key(key)).encrypt(nonce, plaintext, ENCRYPTION_MAGIC)
    return ENCRYPTION_MAGIC + nonce + ct


def decrypt(blob: bytes, key: bytes) -> bytes:
    if not is_encrypted(blob):
        raise IntegrityError("NotEncrypted", "artifact does not start with the edgeai encryption header")
    nonce = blob[len(ENCRYPTION_MAGIC) : len(ENCRYPTION_MAGIC) + NONCE_LEN]
    try:
        return AESGCM(parse_encryption_key(key)).decrypt(
            nonce, blob[len(ENCRYPTION_MAGIC) + NONCE_LEN :], ENCRYPTION_MAGIC
        )
    except InvalidTag as e:
        raise IntegrityError("DecryptionFailed", "wrong key or corrupted ciphertext (AES-GCM tag mismatch)") from e


def read_verified(
    path: str | os.PathLike[str],
    sha256: str,
    *,
    public_key_pem_bytes: bytes | None = None,
    signature: str | bytes | None = None,
    decryption_key: bytes | None = None,
) -> bytes:
    """Read an artifact into memory, verify digest (and signature), decrypt if asked.

    The bytes returned have been verified: callers load only what this returns.
    """
    return verify_bytes(
        Path(path).read_bytes(),
        sha256,
        what=str(path),
        public_key_pem_bytes=public_key_pem_bytes,
        signature=signature,
        decryption_key=decryption_key,
    )


def verify_bytes(
    data: bytes,
    sha256: str,
    *,
    what: str = "artifact",
    public_key_pem_bytes: bytes | None = None,
    signature: str | bytes | None = None,
    decryption_key: bytes | None = None,
) -> bytes:
    """Verify bytes already read (digest, signature), decrypt if asked; returns what may be loaded."""
    path = what
    expect_digest(hashlib.sha256(data).hexdigest(), sha256, what)
    if signature is not None or public_key_pem_bytes is not None:
        if signature is None or public_key_pem_bytes is None:
            raise IntegrityError("BadSignature", "a signature needs both the signature and the public key")
        verify_signature(public_key_pem_bytes, sha256, signature)
    if decryption_key is not None:
        return decrypt(data, decryption_key)
    if is_encrypted(data):
        raise IntegrityError("MissingKey", f"{path} is encrypted and no decryption key was given")
    return data
