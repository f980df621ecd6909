"""The CRDs' closed vocabularies: phases, condition types, reasons, outcomes and spec enums.

Each enum is named for the one role its words play, so a word used in two roles is two members
(`RolloutPhase.PROGRESSING` is where a rollout stands, `RevisionOutcome.PROGRESSING` what became
of a revision). They are `StrEnum`s: a member compares equal to its string and serializes as it,
so status JSON written with them is byte-for-byte what bare strings wrote.

Enums that mirror a schema `enum` are checked against the CRD YAML by
tests/unit/api/test_types_match_crds.py; the others (condition types, reasons, the phases of
an InferenceDeployment's devices) name values the schema leaves as free strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

# --- spec enums (the schema's `enum` lists) -------------------------------------------------


class ModelFormat(StrEnum):
    ONNX = "onnx"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Accelerator(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"
    TPU = "tpu"
    VPU = "vpu"


class ExecutionProvider(StrEnum):
    """spec.runtime.executionProviders[].name: an onnxruntime execution provider, by its short name
    (onnxruntime's own name is `<name>ExecutionProvider`). CPU is the one every runtime has."""

    TENSORRT = "TensorRT"
    CUDA = "CUDA"
    MIGRAPHX = "MIGraphX"
    ROCM = "ROCm"
    OPENVINO = "OpenVINO"
    QNN = "QNN"
    CANN = "CANN"
    CPU = "CPU"


# What each provider drives: (accelerator kind, vendor). The CPU provider drives the CPU.
PROVIDER_DRIVES: Mapping[str, tuple[tuple[str, str], ...]] = {
    ExecutionProvider.TENSORRT: (("gpu", "nvidia"),),
    ExecutionProvider.CUDA: (("gpu", "nvidia"),),
    ExecutionProvider.MIGRAPHX: (("gpu", "amd"),),
    ExecutionProvider.ROCM: (("gpu", "amd"),),
    ExecutionProvider.OPENVINO: (("gpu", "intel"), ("vpu", "intel")),
    ExecutionProvider.QNN: (("npu", "qualcomm"),),
    ExecutionProvider.CANN: (("npu", "huawei"),),
}


class Arch(StrEnum):
    AMD64 = "amd64"
    ARM64 = "arm64"
    ARM = "arm"


class SignatureFormat(StrEnum):
    DIGEST = "digest"  # this project's Ed25519/ECDSA signature over the sha256
    OPENSSF = "openssf"  # OpenSSF model signing: a Sigstore bundle over a manifest of files


class EncryptionAlgorithm(StrEnum):
    AES_256_GCM = "AES-256-GCM"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class FailurePolicy(StrEnum):
    """spec.rollout.onFailure; the first member is the default."""

    ROLLBACK = "Rollback"
    PAUSE = "Pause"


class RollbackStrategy(StrEnum):
    ALL_AT_ONCE = "AllAtOnce"
    REVERSE_WAVES = "ReverseWaves"


class OfflinePolicy(StrEnum):
    """spec.rollout.offlineDevices."""

    SKIP = "Skip"
    WAIT = "Wait"


class InsufficientTrafficPolicy(StrEnum):
    """spec.rollout.healthGate.quality.onInsufficientTraffic: a new device that saw fewer than minRequests."""

    WAIT = "Wait"  # it stays not Ready until it has seen enough (the wave waits, up to progressDeadlineSeconds)
    PASS = "Pass"  # it is Ready without the quality check once its gate window (readySeconds) is over


# --- status enums ---------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    VERIFIED = "Verified"  # EdgeModel
    READY = "Ready"  # every kind
    ONLINE = "Online"  # EdgeDevice
    PROGRESSING = "Progressing"  # InferenceDeployment
    DEGRADED = "Degraded"  # InferenceDeployment


class ModelPhase(StrEnum):
    """EdgeModel status.phase."""

    VERIFYING = "Verifying"
    VERIFIED = "Verified"
    RETRYING = "Retrying"
    FAILED = "Failed"


class ServingPhase(StrEnum):
    """EdgeDevice status.serving[].phase: one workload on the device."""

    PROGRESSING = "Progressing"
    READY = "Ready"
    FAILED = "Failed"
    OFFLINE = "Offline"


class RolloutPhase(StrEnum):
    """InferenceDeployment status.rollout.phase."""

    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    HALTED = "Halted"
    COMPLETE = "Complete"


class RevisionOutcome(StrEnum):
    """InferenceDeployment status.revisions[].outcome: what became of a revision."""

    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUPERSEDED = "Superseded"


class WorkloadPhase(StrEnum):
    """InferenceDeployment status.devices[].phase: one device's workload (free text in the schema)."""

    PENDING = "Pending"
    WAITING = "Waiting"
    SCHEDULING = "Scheduling"
    FETCHING = "Fetching"
    STARTING = "Starting"
    READY = "Ready"
    UPDATING = "Updating"
    OFFLINE = "Offline"
    FETCH_FAILED = "FetchFailed"
    FAILED = "Failed"


# --- reasons (condition and row reasons; free text in the schema) ---------------------------


class ModelReason(StrEnum):
    """Reasons of an EdgeModel's Verified/Ready conditions and status.variants[].reason. The fetch
    failures match edgeai_api.exit_codes' names, which the runtime's init container reports."""

    VERIFYING = "Verifying"
    VERIFIED = "Verified"
    FAILED = "Failed"
    INVALID_SPEC = "InvalidSpec"
    UNREACHABLE = "Unreachable"
    SECRET_NOT_FOUND = "SecretNotFound"
    KEY_NOT_FOUND = "KeyNotFound"
    DIGEST_MISMATCH = "DigestMismatch"
    BAD_SIGNATURE = "BadSignature"
    TOO_LARGE = "TooLarge"
    INVALID_MODEL = "InvalidModel"
    BAD_KEY = "BadKey"
    DECRYPTION_FAILED = "DecryptionFailed"


class DeviceReason(StrEnum):
    """Reasons of an EdgeDevice's Online/Ready conditions the operator itself chooses (otherwise
    the Node's Ready reason is copied)."""

    NODE_NOT_FOUND = "NodeNotFound"
    NODE_READY = "NodeReady"
    NODE_NOT_READY = "NodeNotReady"
    NO_READY_CONDITION = "NoReadyCondition"
    INVALID_SPEC = "InvalidSpec"  # spec.capabilities did not parse; the discovered ones are used


class DeploymentReason(StrEnum):
    """Reasons of an InferenceDeployment's Ready/Progressing/Degraded conditions."""

    INVALID_SPEC = "InvalidSpec"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_DELETING = "ModelDeleting"
    MODEL_VERIFYING = "ModelVerifying"
    MODEL_NOT_VERIFIED = "ModelNotVerified"
    NO_MATCHING_DEVICES = "NoMatchingDevices"
    NO_SUITABLE_DEVICES = "NoSuitableDevices"
    ALL_DEVICES_OFFLINE = "AllDevicesOffline"
    DEVICES_READY = "DevicesReady"
    DEVICES_NOT_READY = "DevicesNotReady"
    ROLLING_OUT = "RollingOut"
    COMPLETE = "Complete"
    DEVICES_FAILING = "DevicesFailing"
    DEVICES_OFFLINE = "DevicesOffline"
    HEALTHY = "Healthy"
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    ROLLOUT_HALTED = "RolloutHalted"
    ROLLOUT_FAILED = "RolloutFailed"


class UnplacedReason(StrEnum):
    """InferenceDeployment status.unplaced[].reason: why a device does not run the model."""

    NOT_SELECTED = "NotSelected"
    DEVICE_DELETING = "DeviceDeleting"
    NODE_NOT_FOUND = "NodeNotFound"
    ARCH_MISMATCH = "ArchMismatch"
    NO_ACCELERATOR = "NoAccelerator"
    UNKNOWN_MEMORY = "UnknownMemory"
    INSUFFICIENT_MEMORY = "InsufficientMemory"
    # spec.runtime.requireAccelerator, and no accelerator of the device is run by an execution provider
    NO_EXECUTION_PROVIDER = "NoExecutionProvider"
