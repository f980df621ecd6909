"""`pack --push oci://REGISTRY/REPO[:TAG]`: the builds as one OCI artifact.

One image manifest per build (artifactType application/vnd.edgeai.model.v1, the OCI empty config,
one layer: the file as stored, of type application/vnd.edgeai.model.onnx.v1), annotated with its
variant name, precision, the accelerators it suits and the execution providers that drive them;
and one index listing them, pushed under TAG (or by its digest alone). The quality profile, when pack
wrote one, goes the same way (its own manifest, one layer of type
application/vnd.edgeai.quality-profile.v1+json, listed in the index as variant "quality-profile"), so
the EdgeModel's spec.qualityProfile is reachable wherever the builds are. Each build's URI in the
EdgeModel is its own manifest by digest, so what the operator verifies and the edge pulls never
depends on where a tag points later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.artifacts import oci
from edge_runtime.pack.errors import PackError
from edge_runtime.pack.manifest import ACCELERATORS, Artifact
from edgeai_api import oci as api
from edgeai_api.enums import PROVIDER_DRIVES, ExecutionProvider

EMPTY_CONFIG = b"{}"
ANN_VERSION = "org.opencontainers.image.version"
ANN_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Pushed:
    index: str  # oci://REGISTRY/REPO[:TAG]@sha256:<index digest>
    uris: Mapping[str, str]  # build name -> oci://REGISTRY/REPO@sha256:<its manifest digest>


def providers(accelerators: Sequence[str]) -> list[str]:
    """The execution providers that drive any of these accelerator kinds, the CPU's last."""
    out = [str(p) for p, drives in PROVIDER_DRIVES.items() if any(kind in accelerators for kind, _ in drives)]
    if "cpu" in accelerators:
        out.append(ExecutionProvider.CPU.value)
    return out


def build_annotations(a: Artifact) -> dict[str, str]:
    accs = [str(x) for x in ACCELERATORS[a.precision]]
    return {api.ANN_VARIANT: a.name, api.ANN_PRECISION: a.precision, api.ANN_ACCELERATORS: ",".join(accs),
            api.ANN_PROVIDERS: ",".join(providers(accs))}


def image_manifest(layer: oci.Descriptor, config: oci.Descriptor, ann: Mapping[str, str]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": api.MANIFEST_MEDIA_TYPE, "artifactType": api.ARTIFACT_TYPE,
            "config": config.to_json(), "layers": [layer.to_json()], "annotations": dict(ann)}


def index_manifest(manifests: Sequence[tuple[oci.Descriptor, Mapping[str, str]]],
                   ann: Mapping[str, str]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": api.INDEX_MEDIA_TYPE, "artifactType": api.ARTIFACT_TYPE,
            "manifests": [{**d.to_json(), "artifactType": api.ARTIFACT_TYPE, "annotations": dict(a)}
                          for d, a in manifests],
            "annotations": dict(ann)}


def check_target(target: str) -> api.OciRef:
    try:
        ref = api.parse(target, need_reference=False)
    except api.OciRefError as e:
        raise PackError("BadArgument", f"--push: {e}") from e
    if ref.digest:
        raise PackError("BadArgument", f"--push {target}: a digest names content that exists; "
                                       "push to a repository, optionally with a :TAG")
    return ref


def push(target: str, builds: Sequence[tuple[Artifact, Path]], *, access: oci.RegistryAccess,
         name: str, version: str | None, profile: Path | None = None) -> Pushed:
    """Push each build's stored file and manifest (and the quality profile's), then the index; returns
    the URIs for the EdgeModel (the profile's under api.PROFILE_VARIANT)."""
    ref = check_target(target)
    reg = oci.connect(ref, access)
    try:
        config = reg.push_blob(ref.repository, EMPTY_CONFIG, api.EMPTY_CONFIG_MEDIA_TYPE)
        listed: list[tuple[oci.Descriptor, dict[str, str]]] = []
        uris: dict[str, str] = {}
        for a, path in builds:
            layer = reg.push_blob(ref.repository, path.read_bytes(), api.MODEL_LAYER_MEDIA_TYPE,
                                  {api.ANN_TITLE: a.filename})
            ann = build_annotations(a)
            manifest = image_manifest(layer, config, ann)
            desc = reg.push_manifest(ref.repository, oci.sha256_digest(oci.manifest_bytes(manifest)), manifest)
            listed.append((desc, ann))
            uris[a.name] = str(api.OciRef(ref.registry, ref.repository, digest=desc.digest))
        if profile is not None:
            layer = reg.push_blob(ref.repository, profile.read_bytes(), api.PROFILE_LAYER_MEDIA_TYPE,
                                  {api.ANN_TITLE: profile.name})
            ann = {api.ANN_VARIANT: api.PROFILE_VARIANT}
            manifest = image_manifest(layer, config, ann)
            desc = reg.push_manifest(ref.repository, oci.sha256_digest(oci.manifest_bytes(manifest)), manifest)
            listed.append((desc, ann))
            uris[api.PROFILE_VARIANT] = str(api.OciRef(ref.registry, ref.repository, digest=desc.digest))
        index_ann = {api.ANN_VARIANT + "s": ",".join(a.name for a, _ in builds), ANN_REF_NAME: name}
        if version:
            index_ann[ANN_VERSION] = version
        index = index_manifest(listed, index_ann)
        desc = reg.push_manifest(ref.repository, ref.tag or oci.sha256_digest(oci.manifest_bytes(index)), index)
    except oci.Transient as e:
        raise PackError("Unreachable", f"--push {target}: {e}") from e
    except OSError as e:
        raise PackError("Unwritable", f"--push {target}: reading a build: {e.strerror or e}") from e
    return Pushed(str(ref.pinned(desc.digest)), uris)
