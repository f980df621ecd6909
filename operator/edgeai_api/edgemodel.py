"""EdgeModel (edgeai.io/v1alpha1): one model artifact, its precision variants, signature and
encryption; crds/edgemodel.yaml is the schema these types are held to."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeai_api import constants as c
from edgeai_api.enums import Accelerator, Arch, EncryptionAlgorithm, ModelFormat, ModelPhase, Precision, SignatureFormat
from edgeai_api.meta import Condition, ObjectMeta

# The schema's defaults, applied by readers (the types keep "unset" distinct from "default").
DEFAULT_PUBLIC_KEY_KEY = "public.pem"
DEFAULT_CERTIFICATE_CHAIN_KEY = "ca.pem"
DEFAULT_SIGNATURE_FORMAT = SignatureFormat.DIGEST
DEFAULT_DECRYPTION_KEY_KEY = "key"
SOURCE_BUILD = "default"  # the name spec.source goes by among the builds; no variant may take it
QUALITY_PROFILE_BUILD = "quality-profile"  # spec.qualityProfile, where it travels like a build (templates)


@dataclass(frozen=True, kw_only=True)
class SecretKeyRef:
    name: str
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class LocalObjectRef:
    name: str


@dataclass(frozen=True, kw_only=True)
class RegistryAccess:
    """How the operator and the edge reach the registry of the oci:// builds."""

    pull_secret_ref: LocalObjectRef | None = None  # a kubernetes.io/dockerconfigjson Secret
    plain_http: bool | None = field(default=None, metadata={"json": "plainHTTP"})


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    uri: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True, kw_only=True)
class Signature:
    format: SignatureFormat | None = None
    public_key_secret_ref: SecretKeyRef | None = None  # key mode, both formats
    certificate_chain_secret_ref: SecretKeyRef | None = None  # openssf certificate mode: PEM trust roots
    value: str | None = None  # digest: base64 signature over source.sha256
    bundle: str | None = None  # openssf: the Sigstore bundle JSON (model.sig), covering every build


@dataclass(frozen=True, kw_only=True)
class Encryption:
    key_secret_ref: SecretKeyRef
    algorithm: EncryptionAlgorithm | None = None


@dataclass(frozen=True, kw_only=True)
class ModelVariant:
    name: str
    precision: Precision
    uri: str
    sha256: str
    size: int | None = None
    signature: str | None = None
    accelerators: tuple[Accelerator, ...]


@dataclass(frozen=True, kw_only=True)
class QualityProfileRef:
    """The reference profile (`pack`'s quality-profile.json) the runtime compares live traffic with:
    fetched and digest-checked like a build, signed like one (its own `signature` with format digest,
    listed in the one bundle with format openssf)."""

    uri: str
    sha256: str
    size: int | None = None
    signature: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelRequirements:
    arch: tuple[Arch, ...] | None = None
    min_memory: int | str | None = None  # a quantity
    accelerators: tuple[Accelerator, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeModelSpec:
    format: ModelFormat | None = None
    version: str | None = None
    source: ModelSource
    signature: Signature | None = None
    encryption: Encryption | None = None
    variants: tuple[ModelVariant, ...] | None = None
    requirements: ModelRequirements | None = None
    quality_profile: QualityProfileRef | None = None
    registry: RegistryAccess | None = None


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    name: str
    datatype: str  # Open Inference Protocol datatype: FP32, INT64, ...
    shape: tuple[int, ...]  # -1 marks a dynamic dimension


@dataclass(frozen=True, kw_only=True)
class VariantStatus:
    name: str
    verified: bool
    sha256: str | None = None
    size: int | None = None
    reason: str | None = None
    message: str | None = None
    manifest_digest: str | None = None  # oci:// builds: the manifest verified, whatever a tag says later


@dataclass(frozen=True, kw_only=True)
class EdgeModelStatus:
    observed_generation: int | None = None
    phase: ModelPhase | None = None
    sha256: str | None = None
    short_digest: str | None = None
    size: int | None = None
    manifest_digest: str | None = None
    verified_at: str | None = None
    observed_reverify: str | None = None
    inputs: tuple[TensorInfo, ...] | None = None
    outputs: tuple[TensorInfo, ...] | None = None
    variants: tuple[VariantStatus, ...] | None = None
    conditions: tuple[Condition, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeModel:
    api_version: str = c.API_VERSION
    kind: str = c.KIND_MODEL
    metadata: ObjectMeta
    spec: EdgeModelSpec
    status: EdgeModelStatus | None = field(default=None)
