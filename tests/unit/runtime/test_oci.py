"""The oci:// reference grammar, docker config credentials, auth challenges and model layers: pure parts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from edge_runtime.artifacts import oci
from edge_runtime.artifacts.integrity import IntegrityError
from edge_runtime.pack import push
from edge_runtime.pack.errors import PackError
from edge_runtime.pack.manifest import Artifact
from edgeai_api import oci as api

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(("uri", "want"), [
    (f"oci://ghcr.io/acme/models/cnn@{D}", api.OciRef("ghcr.io", "acme/models/cnn", None, D)),
    ("oci://127.0.0.1:5000/m:1.2.0", api.OciRef("127.0.0.1:5000", "m", "1.2.0", None)),
    (f"oci://reg:5000/a/b-c__d.e:t@{D}", api.OciRef("reg:5000", "a/b-c__d.e", "t", D)),
    ("oci://[::1]:5000/m:v1", api.OciRef("[::1]:5000", "m", "v1", None)),
])
def test_references_parse_and_print_back(uri: str, want: api.OciRef) -> None:
    ref = api.parse(uri)
    assert ref == want and str(ref) == uri
    assert ref.reference == (want.digest or want.tag)


@pytest.mark.parametrize(("uri", "names"), [
    ("https://x/m.onnx", "is not an oci:// URI"),
    ("oci://", "names no registry"),
    ("oci://reg.example", "names no repository"),
    ("oci://reg.example/m", "neither a digest nor a tag"),
    ("oci://reg.example/Models:v1", "repository component 'Models'"),
    ("oci://reg.example/m@sha256:ABC", "digest 'sha256:ABC' is not sha256:<64 lowercase hex>"),
    (f"oci://reg.example/m@sha512:{'a' * 128}", "is not sha256:"),
    ("oci://reg_x/m:v1", "'reg_x' is not a registry host"),
    ("oci://reg/m:-v1", "tag '-v1' is not a valid tag"),
])
def test_bad_references_name_the_part_that_is_wrong(uri: str, names: str) -> None:
    with pytest.raises(api.OciRefError) as e:
        api.parse(uri)
    assert names in str(e.value)


def test_a_push_target_may_be_a_bare_repository_but_not_a_digest() -> None:
    assert push.check_target("oci://reg:5000/m") == api.OciRef("reg:5000", "m")
    with pytest.raises(PackError, match="a digest names content that exists"):
        push.check_target(f"oci://reg/m@{D}")
    with pytest.raises(PackError, match="--push: "):
        push.check_target("oci://reg/UPPER")


def cfg(auths: dict[str, Any]) -> bytes:
    return json.dumps({"auths": auths}).encode()


def test_credentials_from_a_docker_config() -> None:
    b64 = base64.b64encode(b"me:p:ss").decode()
    assert oci.credentials_for(cfg({"reg:5000": {"auth": b64}}), "reg:5000") == oci.Credentials("me", "p:ss")
    assert oci.credentials_for(cfg({"https://reg:5000/v1/": {"username": "u", "password": "p"}}),
                               "reg:5000") == oci.Credentials("u", "p")
    assert oci.credentials_for(cfg({"other": {"auth": b64}}), "reg:5000") is None
    assert oci.credentials_for(None, "reg") is None
    with pytest.raises(IntegrityError, match="not a docker config JSON"):
        oci.credentials_for(b"{nope", "reg")
    with pytest.raises(IntegrityError, match="not base64 of user:password"):
        oci.credentials_for(cfg({"reg": {"auth": "%%%"}}), "reg")


def test_auth_challenges() -> None:
    scheme, params = oci.parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                                         'scope="repository:m:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:m:pull"}
    assert oci.parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})


def layer(media_type: str, digest: str = D, size: int = 10) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def test_the_model_layer_of_a_manifest() -> None:
    ours = layer(api.MODEL_LAYER_MEDIA_TYPE)
    other = layer("application/vnd.oci.image.layer.v1.tar", "sha256:" + "b" * 64)
    assert oci.model_layer({"layers": [other, ours]}, "m").digest == D
    # `oras push model.onnx` makes one layer of its own type: the only layer is the model.
    assert oci.model_layer({"layers": [other]}, "m").digest == "sha256:" + "b" * 64
    for doc, names in (({"layers": []}, "no layers"), ({"layers": [other, other]}, "which is the model"),
                       ({"layers": [ours, ours]}, "a model manifest has one"),
                       ({"layers": [{"mediaType": api.MODEL_LAYER_MEDIA_TYPE}]}, "no digest or size")):
        with pytest.raises(IntegrityError, match=names) as e:
            oci.model_layer(doc, "oci://r/m:v1")
        assert e.value.reason == "InvalidModel" and "oci://r/m:v1" in e.value.message


def test_pack_annotates_each_build_with_precision_accelerators_and_providers() -> None:
    a = Artifact("fp16", "fp16", "m.fp16.onnx", "c" * 64, 10)
    assert push.build_annotations(a) == {api.ANN_VARIANT: "fp16", api.ANN_PRECISION: "fp16",
                                         api.ANN_ACCELERATORS: "gpu",
                                         api.ANN_PROVIDERS: "TensorRT,CUDA,MIGraphX,ROCm,OpenVINO"}
    assert push.providers(["cpu"]) == ["CPU"]
    desc = oci.Descriptor(api.MODEL_LAYER_MEDIA_TYPE, D, 10)
    cfg_desc = oci.Descriptor(api.EMPTY_CONFIG_MEDIA_TYPE, oci.sha256_digest(b"{}"), 2)
    m = push.image_manifest(desc, cfg_desc, {"k": "v"})
    assert m["artifactType"] == api.ARTIFACT_TYPE and m["layers"] == [desc.to_json()]
    assert m["config"]["digest"] == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
