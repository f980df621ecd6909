"""Artifact subcommands: fetch, verify, keygen, sign, encrypt.

With these a user can sign and encrypt a model using this tool alone, and an
init container can fetch and verify it. Errors are IntegrityError, which the
CLI maps to distinct exit codes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from edge_runtime.artifacts.integrity import (
    KEY_ALGORITHMS,
    IntegrityError,
    check_sha256,
    decrypt,
    encrypt,
    expect_digest,
    generate_encryption_key,
    generate_private_key,
    hash_bytes,
    hash_file,
    load_private_key,
    parse_encryption_key,
    private_key_pem,
    public_key_pem,
    sign_digest,
    verify_signature,
)
from edge_runtime.artifacts.openssf import MAX_BUNDLE_BYTES


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise IntegrityError(
            "BadKey" if "key" in what else "NotFound", f"cannot read {what} {path}: {e.strerror}"
        ) from e


def read_signature_file(path: str) -> str:
    """A signature file: base64 text (format digest) or an OpenSSF bundle (model.sig), read within
    the bundle size limit so that a huge file is refused without being read whole."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as e:
        raise IntegrityError("NotFound", f"cannot read signature file {path}: {e.strerror}") from e
    if len(data) > MAX_BUNDLE_BYTES:
        raise IntegrityError("TooLarge", f"signature file {path} is larger than {MAX_BUNDLE_BYTES} bytes")
    return data.decode("utf-8", errors="replace").strip()


def _signature_arg(args: argparse.Namespace) -> str | None:
    sig: str | None = getattr(args, "signature", None)
    sig_file = getattr(args, "signature_file", None)
    if sig_file:
        sig = read_signature_file(sig_file)
    return sig


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created 0600 from the start, never world-readable for a moment.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# --- fetch ---------------------------------------------------------------------


def fetch_mirrors(flags: list[str] | None, env: str) -> list[str]:
    """--mirror flags when given, else EDGEAI_FETCH_MIRROR (comma-separated: the operator fills it from
    a ConfigMap key, so a Pod template never holds an address that may change)."""
    if flags:
        return [m for m in flags if m.strip()]
    return [m.strip() for m in env.split(",") if m.strip()]


def cmd_fetch(args: argparse.Namespace) -> int:
    from edge_runtime.artifacts.fetch import RegistryAccess, fetch

    pub = _read(args.public_key_file, "public key") if args.public_key_file else None
    auth = _read(args.registry_auth_file, "registry credentials") if args.registry_auth_file else None
    path = fetch(
        args.uri,
        args.sha256,
        args.cache,
        signature=_signature_arg(args),
        public_key_pem=pub,
        max_size=args.max_size,
        timeout=args.timeout,
        retries=args.retries,
        registry=RegistryAccess(auth, args.plain_http),
        mirrors=fetch_mirrors(args.mirror, os.environ.get("EDGEAI_FETCH_MIRROR", "")),
    )
    print(path)
    return 0


# --- verify --------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    check_sha256(args.sha256)
    try:
        digest = hash_file(args.path, args.max_size)
    except FileNotFoundError as e:
        raise IntegrityError("NotFound", f"{args.path} does not exist") from e
    expect_digest(digest.sha256, args.sha256, args.path)
    sig = _signature_arg(args)
    if sig is not None or args.public_key_file:
        if sig is None or not args.public_key_file:
            raise IntegrityError("BadSignature", "a signature needs both --signature and --public-key-file")
        verify_signature(_read(args.public_key_file, "public key"), args.sha256, sig)
    if args.decryption_key_file:
        decrypt(Path(args.path).read_bytes(), _read(args.decryption_key_file, "decryption key"))
    print(f"ok sha256={digest.sha256} size={digest.size}" + (" signature=valid" if sig else ""))
    return 0


# --- keygen / sign / encrypt ---------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise IntegrityError("BadKey", f"{out} exists; pass --force to overwrite it")
    if args.algorithm == "aes-256-gcm":
        import base64

        _write_private(out, base64.b64encode(generate_encryption_key()) + b"\n")
        print(out)
        return 0
    key = generate_private_key(args.algorithm)
    _write_private(out, private_key_pem(key))
    pub = out.with_name(out.name + ".pub")
    pub.write_bytes(public_key_pem(key))
    print(out)
    print(pub)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(_read(args.key, "private key"))
    if args.sha256:
        sha = check_sha256(args.sha256)
    elif args.path:
        try:
            sha = hash_file(args.path).sha256
        except FileNotFoundError as e:
            raise IntegrityError("NotFound", f"{args.path} does not exist") from e
    else:
        raise IntegrityError("InvalidDigest", "give the artifact PATH or --sha256")
    sig = sign_digest(key, sha)
    if args.out:
        Path(args.out).write_text(sig + "\n")
    print(sig)
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    key = parse_encryption_key(_read(args.key, "encryption key"))
    try:
        plain = Path(args.path).read_bytes()
    except FileNotFoundError as e:
        raise IntegrityError("NotFound", f"{args.path} does not exist") from e
    blob = encrypt(plain, key)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, out)
    digest = hash_bytes(blob)
    # The EdgeModel carries the digest of the ciphertext as stored.
    print(f"{out} sha256={digest.sha256} size={digest.size}")
    return 0


def _add_signature_args(p: argparse.ArgumentParser) -> None:
    add_signature_args(p)
    p.add_argument(
        "--public-key-file", "--public-key", dest="public_key_file",
        help="PEM public key (Ed25519 or P-256); for an OpenSSF bundle, an ECDSA key or PEM CA certificates",
    )


def add_signature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signature", "--openssf-bundle", dest="signature",
                   help="base64 signature over the sha256 digest, or an OpenSSF model signing bundle (JSON)")
    p.add_argument("--signature-file", help="file holding either: base64 text, or the bundle `model_signing sign` "
                                            "writes (model.sig)")


def register(sub: Any) -> None:
    p = sub.add_parser("fetch", help="download an artifact into a content-addressed cache, verified")
    p.add_argument("uri", help="http://, https://, file:// or oci://REGISTRY/REPO@sha256:... URI "
                                "(oci: the blob --sha256 is pulled from REPO)")
    p.add_argument("--sha256", required=True, help="expected digest, 64 lowercase hex characters")
    p.add_argument("--cache", default=os.environ.get("EDGEAI_CACHE_DIR", "/var/cache/edgeai"), help="cache directory")
    p.add_argument("--max-size", type=int, help="refuse artifacts larger than this many bytes")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout per attempt, seconds")
    p.add_argument("--retries", type=int, default=4, help="retries (each resumes) before giving up")
    p.add_argument("--registry-auth-file", help="oci: a docker config JSON with the registry's credentials "
                                                "(the .dockerconfigjson of a kubernetes.io/dockerconfigjson Secret)")
    p.add_argument("--plain-http", action="store_true", help="oci: the registry speaks HTTP, not HTTPS")
    p.add_argument("--mirror", action="append", metavar="URL",
                   help="a site cache (edge-runtime site-cache) to try first, repeatable; its bytes are verified "
                        "like the origin's and any failure of it falls back to the origin "
                        "(default: EDGEAI_FETCH_MIRROR, comma-separated)")
    _add_signature_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("verify", help="check an artifact's sha256 (and signature)")
    p.add_argument("path")
    p.add_argument("--sha256", required=True)
    p.add_argument("--max-size", type=int)
    p.add_argument("--decryption-key-file", help="also check the artifact decrypts with this key")
    _add_signature_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("keygen", help="make a signing key pair (PATH, PATH.pub) or an AES-256-GCM key")
    p.add_argument("--algorithm", choices=[*KEY_ALGORITHMS, "aes-256-gcm"], default="ed25519")
    p.add_argument("--out", required=True, help="private key (or AES key) file; the public key goes to OUT.pub")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="sign an artifact's sha256 digest; prints the base64 signature")
    p.add_argument("path", nargs="?", help="artifact to hash and sign (or give --sha256)")
    p.add_argument("--sha256")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--out", help="also write the signature to this file")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("encrypt", help="encrypt an artifact with AES-256-GCM; prints the ciphertext's sha256")
    p.add_argument("path")
    p.add_argument("--key", required=True, help="key file: 32 raw bytes, hex or base64")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_encrypt)
