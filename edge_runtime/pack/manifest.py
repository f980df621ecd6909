"""Build the EdgeModel manifest and checksum list from what `pack` produced.

Pure: plain data in, plain dicts and text out. The shape follows the API
contract (edgeai.io/v1alpha1 EdgeModel) so the result applies unchanged with
`kubectl apply -f`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from edge_runtime.artifacts.integrity import check_sha256
from edge_runtime.pack.errors import PackError
from edgeai_api import constants as c
from edgeai_api import edgemodel as em
from edgeai_api import oci as oci_api
from edgeai_api.enums import Accelerator, EncryptionAlgorithm, ModelFormat, SignatureFormat
from edgeai_api.enums import Precision as ModelPrecision
from edgeai_api.meta import ObjectMeta
from edgeai_api.serde import serialize

API_VERSION = c.API_VERSION
KIND = c.KIND_MODEL

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")

# Which hardware each precision suits: fp32 runs everywhere on CPUs; fp16 pays
# off on GPUs (CPUs mostly upcast it); int8 is what NPUs execute natively and
# also the fastest choice on small CPUs. The fp32 build is spec.source (the
# operator's "default" build for CPUs), so it is not repeated in variants[]:
# the CRD refuses a variant whose sha256 equals the source's.
ACCELERATORS: dict[Precision, list[Accelerator]] = {
    "fp32": [Accelerator.CPU],
    "fp16": [Accelerator.GPU],
    "int8": [Accelerator.NPU, Accelerator.CPU],
}

URI_SCHEMES = ("http", "https", "file")
ENCRYPTION_ALGORITHM = EncryptionAlgorithm.AES_256_GCM
DEFAULT_PUBLIC_KEY_KEY = em.DEFAULT_PUBLIC_KEY_KEY
DEFAULT_ENCRYPTION_KEY_KEY = em.DEFAULT_DECRYPTION_KEY_KEY

_DNS_LABEL_MAX = 63
_DNS_SUBDOMAIN_MAX = 253
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# As the CRD has it for spec.version: the runtime passes it on as the v2 model version.
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Artifact:
    """One file written by `pack`, as it is stored (encrypted or not)."""

    name: str
    precision: Precision
    filename: str
    sha256: str
    size: int
    signature: str | None = None


@dataclass(frozen=True)
class ProfileFile:
    """The quality profile `pack` wrote beside the builds, as stored."""

    filename: str
    sha256: str
    size: int
    signature: str | None = None


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


def dns_name(text: str) -> str:
    """Turn a file stem into a valid object name: lowercase, [-a-z0-9], at most 63 chars.

    63, not 253, because the operator derives labels and child names from it.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:_DNS_LABEL_MAX].strip("-")
    if not name:
        raise PackError("BadArgument", f"cannot derive a Kubernetes name from {text!r}: pass --name")
    return name


def check_name(name: str, field: str = "--name") -> str:
    if len(name) > _DNS_SUBDOMAIN_MAX or not _DNS_SUBDOMAIN_RE.match(name):
        raise PackError(
            "BadArgument",
            f"{field} {name!r} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.')",
        )
    return name


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise PackError(
            "BadArgument",
            f"--model-version {version!r} must be at most 64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit",
        )
    return version


def check_base_uri(base_uri: str) -> str:
    """Return the base URI ending in '/', after checking its scheme is one the runtime fetches."""
    parts = urlsplit(base_uri)
    if parts.scheme not in URI_SCHEMES:
        raise PackError("BadArgument", f"--base-uri must use one of {', '.join(URI_SCHEMES)}, got {base_uri!r}")
    if parts.scheme != "file" and not parts.netloc:
        raise PackError("BadArgument", f"--base-uri {base_uri!r} has no host")
    if any(c.isspace() for c in base_uri):
        raise PackError("BadArgument", f"--base-uri {base_uri!r} contains whitespace; percent-encode it")
    if parts.query or parts.fragment:
        raise PackError("BadArgument", f"--base-uri {base_uri!r} must not have a query or fragment")
    return base_uri if base_uri.endswith("/") else base_uri + "/"


def join_uri(base_uri: str, filename: str) -> str:
    return check_base_uri(base_uri) + quote(filename)


def _uri(a: Artifact, base_uri: str, uris: Mapping[str, str]) -> str:
    return uris.get(a.name) or join_uri(base_uri, a.filename)


def _variant(a: Artifact, base_uri: str, uris: Mapping[str, str]) -> em.ModelVariant:
    return em.ModelVariant(
        name=a.name,
        precision=ModelPrecision(a.precision),
        uri=_uri(a, base_uri, uris),
        sha256=check_sha256(a.sha256, f"variant {a.name} sha256"),
        size=a.size,
        signature=a.signature,
        accelerators=tuple(ACCELERATORS[a.precision]),
    )


def build_edgemodel(
    *,
    name: str,
    base_uri: str,
    source: Artifact,
    variants: Sequence[Artifact],
    namespace: str | None = None,
    version: str | None = None,
    public_key_secret: SecretRef | None = None,
    encryption_secret: SecretRef | None = None,
    bundle: str | None = None,
    quality_profile: ProfileFile | None = None,
    uris: Mapping[str, str] | None = None,
    registry: em.RegistryAccess | None = None,
) -> dict[str, Any]:
    """The EdgeModel for `source` (the fp32 build) and the other builds that passed the report.

    Signatures travel with the artifacts: when any artifact is signed, all must
    be, and `public_key_secret` names the Secret holding the public key. Or one
    OpenSSF `bundle` (model.sig JSON) covers every build, and no artifact carries its own.
    The `quality_profile` is referenced by sha256 (spec.qualityProfile) and signed the same way.
    `uris` (build name -> URI) replaces BASE_URI/<file> for the builds it names (and the profile, under
    "quality-profile"): `pack --push`'s oci:// manifests, reached as `registry` says.
    """
    uris = uris or {}
    check_name(name)
    for v in variants:
        if v.sha256 == source.sha256:
            raise PackError("BadArgument", f"variant {v.name!r} is the source build itself; list other builds only")
        if v.name == em.SOURCE_BUILD:
            raise PackError("BadArgument", "'default' names spec.source; choose another variant name")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise PackError("BadArgument", f"variant names must be unique, got {names}")
    if namespace is not None:
        check_name(namespace, "--namespace")
    if version is not None:
        check_version(version)
    for ref, what in ((public_key_secret, "--public-key-secret"), (encryption_secret, "--encryption-secret")):
        if ref is not None:
            check_name(ref.name, what)
    signed = [a.signature is not None for a in (source, *variants)]
    if quality_profile is not None:
        signed.append(quality_profile.signature is not None)
    if any(signed) and not all(signed):
        raise PackError("BadArgument", "either every artifact is signed or none is")
    if bundle is not None and any(signed):
        raise PackError("BadArgument", "an OpenSSF bundle covers every build: artifacts carry no own signature")
    if (all(signed) or bundle is not None) and public_key_secret is None:
        raise PackError("BadArgument", "signed artifacts need the name of the public key Secret")

    labels = {c.L_NAME: name}
    if version:
        # Label values are limited; the full version is in spec.version anyway.
        label = re.sub(r"[^A-Za-z0-9._-]", "-", version)[:_DNS_LABEL_MAX].strip("-._")
        if label:
            labels[c.L_VERSION] = label
    signature = None
    if bundle is not None and public_key_secret is not None:
        signature = em.Signature(
            format=SignatureFormat.OPENSSF,
            public_key_secret_ref=em.SecretKeyRef(name=public_key_secret.name, key=public_key_secret.key),
            bundle=bundle,
        )
    elif source.signature is not None and public_key_secret is not None:
        signature = em.Signature(
            public_key_secret_ref=em.SecretKeyRef(name=public_key_secret.name, key=public_key_secret.key),
            value=source.signature,
        )
    encryption = None
    if encryption_secret is not None:
        encryption = em.Encryption(
            key_secret_ref=em.SecretKeyRef(name=encryption_secret.name, key=encryption_secret.key),
            algorithm=ENCRYPTION_ALGORITHM,
        )
    model = em.EdgeModel(
        metadata=ObjectMeta(name=name, namespace=namespace or None, labels=labels),
        spec=em.EdgeModelSpec(
            format=ModelFormat.ONNX,
            version=version or None,
            source=em.ModelSource(uri=_uri(source, base_uri, uris),
                                  sha256=check_sha256(source.sha256, "source sha256"), size=source.size),
            signature=signature,
            encryption=encryption,
            variants=tuple(_variant(v, base_uri, uris) for v in variants) or None,
            quality_profile=None if quality_profile is None else em.QualityProfileRef(
                uri=uris.get(oci_api.PROFILE_VARIANT) or join_uri(base_uri, quality_profile.filename),
                sha256=check_sha256(quality_profile.sha256, "quality profile sha256"),
                size=quality_profile.size,
                signature=quality_profile.signature,
            ),
            registry=registry,
        ),
    )
    return serialize(model)


def sha256sums(artifacts: Sequence[Artifact]) -> str:
    """`sha256sum -c` compatible text, so the files can be checked with coreutils alone."""
    return "".join(f"{a.sha256}  {a.filename}\n" for a in artifacts)
