"""oci:// model sources: the reference grammar, and the media types and annotations that `pack --push`
writes and the operator and the runtime read. Pure; shared by all three so they cannot drift apart.

A reference is `oci://REGISTRY/REPOSITORY` followed by `@sha256:<manifest digest>`, `:<tag>`, or both
(`:tag@sha256:...`, where the digest wins and the tag is only a name). The digest is of the manifest;
the build's own bytes are pinned by `sha256` beside the URI, which is what the edge pulls (the blob,
by digest). A tag is resolved by the operator when it verifies and the manifest digest it found is
recorded in status; nothing follows the tag after that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

SCHEME = "oci://"

# The model layer of a manifest pack pushes: an ONNX file (or its AES-256-GCM ciphertext) as stored.
MODEL_LAYER_MEDIA_TYPE = "application/vnd.edgeai.model.onnx.v1"
# The reference statistics a rollout's quality gate compares with (pack's quality-profile.json).
PROFILE_LAYER_MEDIA_TYPE = "application/vnd.edgeai.quality-profile.v1+json"
PROFILE_VARIANT = "quality-profile"  # its ANN_VARIANT in the index: not a build
# The artifactType of every per-variant manifest and of the index that lists them.
ARTIFACT_TYPE = "application/vnd.edgeai.model.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
# The OCI 1.1 empty config ("{}"), what artifacts without a config of their own carry.
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"

# Annotations on each per-variant manifest (and its descriptor in the index).
ANN_VARIANT = "io.edgeai.model.variant"
ANN_PRECISION = "io.edgeai.model.precision"
ANN_ACCELERATORS = "io.edgeai.model.accelerators"  # comma-separated: cpu,gpu
ANN_PROVIDERS = "io.edgeai.model.providers"  # comma-separated ONNX Runtime execution providers
ANN_TITLE = "org.opencontainers.image.title"  # the layer's file name (ORAS's convention)

# distribution/reference's grammar, restricted to what a registry host and a repository path can be.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])"
_HOST_RE = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
FORM = "oci://HOST[:PORT]/REPOSITORY@sha256:<manifest digest> (or :TAG)"


class OciRefError(ValueError):
    """An oci:// URI that does not parse; the message names the part that is wrong."""


@dataclass(frozen=True)
class OciRef:
    registry: str  # host[:port], as written
    repository: str
    tag: str | None = None
    digest: str | None = None  # "sha256:<64 hex>", of the manifest

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or ""

    def pinned(self, digest: str) -> OciRef:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = f"{SCHEME}{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_oci(uri: str) -> bool:
    return uri.startswith(SCHEME)


def parse(uri: str, *, need_reference: bool = True) -> OciRef:
    """Parse `oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]`; raises OciRefError naming what is wrong.
    `need_reference=False` accepts a bare repository (where to push, not what to pull)."""
    if not is_oci(uri):
        raise OciRefError(f"{uri!r} is not an oci:// URI ({FORM})")
    rest = uri[len(SCHEME):]
    if not rest:
        raise OciRefError(f"{uri!r} names no registry ({FORM})")
    digest = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        if not _DIGEST_RE.match(digest):
            raise OciRefError(f"{uri!r}: digest {digest!r} is not sha256:<64 lowercase hex>")
    host, slash, path = rest.partition("/")
    if not _HOST_RE.match(host):
        raise OciRefError(f"{uri!r}: {host!r} is not a registry host[:port]")
    if not slash or not path:
        raise OciRefError(f"{uri!r} names no repository after the registry ({FORM})")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise OciRefError(f"{uri!r}: tag {tag!r} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    for part in path.split("/"):
        if not _COMPONENT_RE.match(part):
            raise OciRefError(f"{uri!r}: repository component {part!r} must be lowercase letters and digits, "
                              "separated by '.', '_', '__' or dashes")
    if len(path) > 255:
        raise OciRefError(f"{uri!r}: the repository is longer than 255 characters")
    if digest is None and tag is None and need_reference:
        raise OciRefError(f"{uri!r} has neither a digest nor a tag: add @sha256:<manifest digest> "
                          "(what `pack --push` prints), or a tag the operator resolves once")
    return OciRef(host, path, tag, digest)
