"""Names shared by every part of the operator: API group, kinds, labels, annotations.

Pure data. The chart, the kubectl plugin and the tests import these instead of
repeating string literals, so a rename happens in one place.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "edgeai.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "edgeai"

KIND_MODEL: Final = "EdgeModel"
KIND_DEVICE: Final = "EdgeDevice"
KIND_IDEP: Final = "InferenceDeployment"
PLURAL_MODEL: Final = "edgemodels"
PLURAL_DEVICE: Final = "edgedevices"
PLURAL_IDEP: Final = "inferencedeployments"

OPERATOR_NAME: Final = "edgeai-operator"
FIELD_MANAGER: Final = OPERATOR_NAME

# Standard labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
L_NAME: Final = "app.kubernetes.io/name"
L_INSTANCE: Final = "app.kubernetes.io/instance"
L_VERSION: Final = "app.kubernetes.io/version"
L_COMPONENT: Final = "app.kubernetes.io/component"
L_PART_OF: Final = "app.kubernetes.io/part-of"
L_MANAGED_BY: Final = "app.kubernetes.io/managed-by"

# Our own labels: the selector of a child workload, and what the fleet table groups by.
L_IDEP: Final = f"{GROUP}/inference-deployment"
L_DEVICE: Final = f"{GROUP}/device"
L_MODEL: Final = f"{GROUP}/model"
L_DISCOVERED: Final = f"{GROUP}/discovered"

A_SPEC_HASH: Final = f"{GROUP}/spec-hash"
A_SHA256: Final = f"{GROUP}/model-sha256"
A_VARIANT: Final = f"{GROUP}/variant"
A_REVISION: Final = f"{GROUP}/revision"
# Set on an EdgeModel (kubectl edgeai model verify) to ask for a fresh check; the operator echoes
# the value into status.observedReverify when that check is done.
A_REVERIFY: Final = f"{GROUP}/reverify"
# Exact names, since label values are capped at 63 characters and may be shortened.
A_DEVICE: Final = f"{GROUP}/device"
A_MODEL: Final = f"{GROUP}/model"
A_IDEP: Final = f"{GROUP}/inference-deployment"

# KubeEdge's own node labels and taint, and the labels our fleet uses for capabilities.
EDGE_NODE_LABEL: Final = "node-role.kubernetes.io/edge"
AGENT_NODE_LABEL: Final = "node-role.kubernetes.io/agent"
EDGE_TAINT_KEYS: Final = (EDGE_NODE_LABEL, AGENT_NODE_LABEL)
ARCH_LABEL: Final = "kubernetes.io/arch"
ACCELERATOR_LABEL: Final = f"{GROUP}/accelerator"
SITE_LABEL: Final = f"{GROUP}/site"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
# The site cache (InferenceDeployment spec.siteCache): the node label marking a site's gateway (value
# "true"), the gateway's host port, where it keeps its blobs, and how much by default.
SITE_GATEWAY_LABEL: Final = f"{GROUP}/site-gateway"
SITE_CACHE_PORT: Final = 8090
SITE_CACHE_DIR: Final = "/var/lib/edgeai/site-cache"
SITE_CACHE_MAX_BYTES: Final = "10Gi"
L_SITE_CACHE: Final = f"{GROUP}/site-cache"  # on a cache's Deployment and Pods: its InferenceDeployment
A_SITE: Final = f"{GROUP}/site"
A_NODE: Final = f"{GROUP}/node"

# Where the edge runtime keeps its content-addressed cache on every node.
CACHE_DIR: Final = "/var/lib/edgeai/models"
FALLBACK_QUEUE_DIR: Final = "/var/lib/edgeai/fallback-queue"
# Compiled engines and blobs of execution providers (TensorRT engines, OpenVINO blobs): writable, per node.
PROVIDER_CACHE_DIR: Final = "/var/lib/edgeai/provider-cache"
RUNTIME_PORT: Final = 8080
MAX_QUALITY_PROFILE_BYTES: Final = 1 << 20  # as crds/edgemodel.yaml's spec.qualityProfile.size maximum
DEFAULT_QUALITY_MIN_REQUESTS: Final = 200  # healthGate.quality.minRequests' default
# Where a Pod's runtime keeps its quality gate's verdict: in the Pod's emptyDir, so a restarted container
# does not judge (and fail) a Pod again that was already judged, and outside rollouts never gates at all.
QUALITY_GATE_STATE: Final = "/tmp/edgeai-quality-gate.json"
# Where each revision's runtime keeps its quality window for the next revision's gate (maxPSIPrevious): on the
# node, under the model cache's hostPath, one directory per InferenceDeployment (QUALITY_WINDOWS_NODE_DIR/
# <namespace>/<name>), so it outlives the Pod; mounted at QUALITY_WINDOWS_DIR in the server container.
QUALITY_WINDOWS_NODE_DIR: Final = f"{CACHE_DIR}/quality-windows"
QUALITY_WINDOWS_DIR: Final = "/var/lib/edgeai/quality-windows"
RUNTIME_UID: Final = 65532

PACKAGE_VERSION: Final = "0.1.0"

DEFAULT_RUNTIME_IMAGE: Final = f"ghcr.io/edgeai/edge-runtime:{PACKAGE_VERSION}"
