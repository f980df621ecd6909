"""oci:// models against a real distribution registry (Debian's docker-registry) the tests start:
`pack --push`, the operator's verification (its check_artifact, as the Verifier calls it), and the
runtime's fetch, with and without Basic auth; a fetch that resumes after a cut; a tag moved after
verification; a wrong digest refused with its reason."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from edge_operator.core.placement import Artifact
from edge_operator.core.status import ArtifactCheck
from edge_operator.kube.verify import VerifySettings, check_artifact
from edge_runtime.artifacts import integrity, oci
from edge_runtime.artifacts.fetch import fetch
from edge_runtime.cli import main as cli_main
from edge_runtime.models_zoo import build_tabular, sample_inputs
from edge_runtime.pack import push as pack_push
from edge_runtime.pack.packer import PackOptions, PackResult, pack
from edgeai_api import oci as api
from tests.runtime.oci_registry import REGISTRY_BIN, LocalRegistry, cutting_proxy, running_registry

pytestmark = pytest.mark.skipif(REGISTRY_BIN is None, reason="needs Debian's docker-registry (make test installs it)")

# No agreement floor: which builds pass it is not what these tests are about.
FAST: dict[str, Any] = {"samples": 16, "runs": 2, "warmup": 0, "precisions": ["fp32", "int8"], "min_agreement": None}
USER, PASSWORD = "edge", "s3cret-pass"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("auth-registry"), USER, PASSWORD) as reg:
        yield reg


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tabular(tmp_path_factory.mktemp("model") / "tabular.onnx")


def builds(out: Path) -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load((out / "edgemodel.yaml").read_text())["spec"]
    return {"default": spec["source"], **{v["name"]: v for v in spec.get("variants", [])}}


def artifact(uri: str, sha256: str, size: int | None = None, plain_http: bool = True) -> Artifact:
    return Artifact(name="default", precision="fp32", uri=uri, sha256=sha256, size=size, plain_http=plain_http)


def verify(art: Artifact, docker_config: bytes | None = None) -> ArtifactCheck:
    """The operator's check of one build, as its Verifier runs it."""
    async def go() -> ArtifactCheck:
        async with aiohttp.ClientSession() as session:
            chk, _ = await check_artifact(art, VerifySettings(), session, None, docker_config=docker_config)
            return chk
    return asyncio.run(go())


def push_single(reg: LocalRegistry, repo: str, data: bytes, tag: str, docker_config: bytes | None = None) -> str:
    """Push one model manifest (as another tool would: oras push) under `tag`; returns its digest."""
    client = oci.Registry(reg.addr, credentials=oci.credentials_for(docker_config, reg.addr), plain_http=True)
    config = client.push_blob(repo, pack_push.EMPTY_CONFIG, api.EMPTY_CONFIG_MEDIA_TYPE)
    layer = client.push_blob(repo, data, api.MODEL_LAYER_MEDIA_TYPE)
    return client.push_manifest(repo, tag, pack_push.image_manifest(layer, config, {})).digest


def run_pack(model: Path, out: Path, target: str, **kw: Any) -> PackResult:
    return pack(PackOptions(model=model, output=out, push=target, plain_http=True, **{**FAST, **kw}))


# --- push, verify, pull ---------------------------------------------------------------------------


def test_pack_pushes_an_index_of_annotated_manifests_that_the_operator_verifies_and_fetch_pulls(
    registry: LocalRegistry, model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    res = run_pack(model, out, f"oci://{registry.addr}/models/tabular:1.0", version="1.0", pull_secret="regcred")
    assert res.pushed is not None
    b = builds(out)
    spec = yaml.safe_load((out / "edgemodel.yaml").read_text())["spec"]
    assert spec["registry"] == {"pullSecretRef": {"name": "regcred"}, "plainHTTP": True}

    # The index under the tag, read with a plain HTTP client: one manifest per build, annotated.
    status, headers, body = registry.get("/v2/models/tabular/manifests/1.0", api.INDEX_MEDIA_TYPE)
    assert status == 200, body
    index = json.loads(body)
    assert index["mediaType"] == api.INDEX_MEDIA_TYPE and index["artifactType"] == api.ARTIFACT_TYPE
    assert res.pushed.index == f"oci://{registry.addr}/models/tabular:1.0@{headers['docker-content-digest']}"
    by_variant = {m["annotations"][api.ANN_VARIANT]: m for m in index["manifests"]}
    assert set(by_variant) == {"fp32", "int8"}
    assert by_variant["fp32"]["annotations"][api.ANN_PRECISION] == "fp32"
    assert by_variant["int8"]["annotations"][api.ANN_PRECISION] == "int8"
    assert by_variant["int8"]["annotations"][api.ANN_ACCELERATORS] == "npu,cpu"
    assert by_variant["int8"]["annotations"][api.ANN_PROVIDERS] == "QNN,CANN,CPU"
    assert by_variant["fp32"]["annotations"][api.ANN_PROVIDERS] == "CPU"

    for name, build in b.items():
        variant = "fp32" if name == "default" else name
        ref = api.parse(build["uri"])
        # The EdgeModel pins each build by its own manifest's digest, the one the index lists.
        assert ref.digest == by_variant[variant]["digest"] and ref.tag is None
        status, _, body = registry.get(f"/v2/models/tabular/manifests/{ref.digest}", api.MANIFEST_MEDIA_TYPE)
        layer = json.loads(body)["layers"][0]
        assert layer["mediaType"] == api.MODEL_LAYER_MEDIA_TYPE and layer["digest"] == f"sha256:{build['sha256']}"

        chk = verify(artifact(build["uri"], build["sha256"], build["size"]))
        assert chk.ok, chk.message
        assert (chk.sha256, chk.size, chk.manifest) == (build["sha256"], build["size"], ref.digest)

        path = fetch(build["uri"], build["sha256"], tmp_path / "cache",
                     registry=oci.RegistryAccess(None, plain_http=True))
        assert path.read_bytes() == (out / f"tabular.{variant}.onnx").read_bytes()

    # The index's tag names every build too: the operator picks the manifest whose layer is the sha256.
    for name, build in b.items():
        chk = verify(artifact(f"oci://{registry.addr}/models/tabular:1.0", build["sha256"]))
        assert chk.ok and chk.manifest == api.parse(build["uri"]).digest, (name, chk)


def test_the_quality_profile_is_pushed_beside_the_builds_and_pulled_by_its_digest(
    registry: LocalRegistry, model: Path, tmp_path: Path
) -> None:
    # With real data pack writes a quality profile; a pushed EdgeModel must not point the devices'
    # fetch-profile at a file on the machine that ran pack.
    data = tmp_path / "eval.npz"
    np.savez(data, features=sample_inputs("tabular", 64, seed=3))
    out = tmp_path / "out"
    res = run_pack(model, out, f"oci://{registry.addr}/models/profiled:1.0", eval_data=data)
    assert res.pushed is not None
    spec = yaml.safe_load((out / "edgemodel.yaml").read_text())["spec"]
    prof = spec["qualityProfile"]
    ref = api.parse(prof["uri"])
    assert ref.registry == registry.addr and ref.repository == "models/profiled" and ref.digest and not ref.tag
    assert res.pushed.uris[api.PROFILE_VARIANT] == prof["uri"]

    _, _, body = registry.get("/v2/models/profiled/manifests/1.0", api.INDEX_MEDIA_TYPE)
    listed = {m["annotations"][api.ANN_VARIANT]: m["digest"] for m in json.loads(body)["manifests"]}
    assert listed == {"fp32": api.parse(res.pushed.uris["fp32"]).digest,
                      "int8": api.parse(res.pushed.uris["int8"]).digest, api.PROFILE_VARIANT: ref.digest}
    _, _, body = registry.get(f"/v2/models/profiled/manifests/{ref.digest}", api.MANIFEST_MEDIA_TYPE)
    layer = json.loads(body)["layers"][0]
    assert layer["mediaType"] == api.PROFILE_LAYER_MEDIA_TYPE and layer["digest"] == f"sha256:{prof['sha256']}"

    # What the fetch-profile init container runs: the same verified fetch as a build's.
    path = fetch(prof["uri"], prof["sha256"], tmp_path / "cache", registry=oci.RegistryAccess(None, plain_http=True))
    assert path.read_bytes() == (out / "quality-profile.json").read_bytes()
    # And the index's tag still resolves each build to its own manifest, the profile's beside them.
    for name in ("fp32", "int8"):
        build = spec["source"] if name == "fp32" else spec["variants"][0]
        chk = verify(artifact(f"oci://{registry.addr}/models/profiled:1.0", build["sha256"]))
        assert chk.ok and chk.manifest == api.parse(res.pushed.uris[name]).digest, (name, chk)


def test_fetch_cli_pulls_from_the_registry_as_the_init_container_runs_it(
    registry: LocalRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = os.urandom(50_000)
    sha = integrity.hash_bytes(data).sha256
    digest = push_single(registry, "models/cli", data, "v1")
    uri = f"oci://{registry.addr}/models/cli@{digest}"
    args = ["fetch", uri, "--sha256", sha, "--cache", str(tmp_path / "c"), "--plain-http"]
    assert cli_main(args) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == data
    # Without --plain-http the client speaks TLS to a plain HTTP registry: a clear failure, Unreachable (5).
    args = ["fetch", uri, "--sha256", sha, "--cache", str(tmp_path / "c2"), "--retries", "0"]
    assert cli_main(args) == 5


def test_a_cut_transfer_resumes_with_a_range_request(registry: LocalRegistry, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    sha = integrity.hash_bytes(data).sha256
    digest = push_single(registry, "models/big", data, "v1")
    with cutting_proxy(registry.addr) as (proxy, state):
        state.cut_blob_after = 1 << 20
        path = fetch(f"oci://{proxy}/models/big@{digest}", sha, tmp_path / "cache",
                     registry=oci.RegistryAccess(None, plain_http=True), retries=3)
    assert path.read_bytes() == data
    assert state.ranges[0] is None
    assert len(state.ranges) == 2, state.ranges
    # The second request asks only for what the first did not deliver.
    start = int(str(state.ranges[1]).removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(data)


# --- tags and digests -------------------------------------------------------------------------------


def test_a_tag_moved_after_verification_still_serves_the_pinned_digest(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    first, second = os.urandom(20_000), os.urandom(20_000)
    sha1 = integrity.hash_bytes(first).sha256
    m1 = push_single(registry, "models/moving", first, "prod")
    uri = f"oci://{registry.addr}/models/moving:prod"
    chk = verify(artifact(uri, sha1))
    assert chk.ok and chk.manifest == m1  # the tag, resolved once, pinned in status

    m2 = push_single(registry, "models/moving", second, "prod")
    assert m2 != m1
    # The edge pulls by the verified digest: the tag's new target is never what it serves.
    path = fetch(uri, sha1, tmp_path / "cache", registry=oci.RegistryAccess(None, plain_http=True))
    assert path.read_bytes() == first
    # A fresh verification follows the tag to the new manifest and says why it no longer matches.
    again = verify(artifact(uri, sha1))
    assert not again.ok and again.reason == "DigestMismatch"
    assert m2 in again.message and f"sha256:{sha1}" in again.message


def test_a_wrong_digest_is_refused_with_the_reason(registry: LocalRegistry, tmp_path: Path) -> None:
    data = os.urandom(10_000)
    digest = push_single(registry, "models/wrong", data, "v1")
    uri = f"oci://{registry.addr}/models/wrong@{digest}"
    wrong = "0" * 64
    chk = verify(artifact(uri, wrong))
    assert not chk.ok and chk.reason == "DigestMismatch"
    assert f"is sha256:{integrity.hash_bytes(data).sha256}, not sha256:{wrong}" in chk.message
    assert chk.sha256 is None  # refused from the manifest, before any blob byte was read
    # A size over spec.source.size is refused from the manifest as well.
    small = verify(artifact(uri, integrity.hash_bytes(data).sha256, size=100))
    assert not small.ok and small.reason == "TooLarge"
    # A manifest digest that names nothing, and a repository that does not exist.
    absent = verify(artifact(f"oci://{registry.addr}/models/wrong@sha256:{'1' * 64}", wrong))
    assert absent.reason == "Unreachable" and "MANIFEST_UNKNOWN" in absent.message
    # The edge refuses a blob the registry does not have under that digest.
    with pytest.raises(integrity.IntegrityError) as e:
        fetch(uri, wrong, tmp_path / "cache", registry=oci.RegistryAccess(None, plain_http=True), retries=0)
    assert e.value.reason == "Unreachable" and "BLOB_UNKNOWN" in e.value.message


# --- auth --------------------------------------------------------------------------------------------


def test_basic_auth_from_a_docker_config(auth_registry: LocalRegistry, model: Path, tmp_path: Path) -> None:
    target = f"oci://{auth_registry.addr}/models/private"
    # Without credentials pack says what is missing, and writes nothing.
    with pytest.raises(integrity.IntegrityError) as e:
        run_pack(model, tmp_path / "nocreds", target)
    assert "asks for credentials" in e.value.message
    assert not (tmp_path / "nocreds").exists()

    creds = tmp_path / "config.json"
    creds.write_bytes(auth_registry.docker_config())
    out = tmp_path / "out"
    run_pack(model, out, target, registry_auth=creds)
    src = builds(out)["default"]

    chk = verify(artifact(src["uri"], src["sha256"]), auth_registry.docker_config())
    assert chk.ok, chk.message
    no = verify(artifact(src["uri"], src["sha256"]))
    assert no.reason == "Unreachable" and "pullSecretRef" in no.message
    bad = verify(artifact(src["uri"], src["sha256"]), auth_registry.docker_config(password="wrong"))
    assert bad.reason == "Unreachable" and "HTTP 401" in bad.message

    # The init container's form: the Secret's .dockerconfigjson as a file.
    args = ["fetch", src["uri"], "--sha256", src["sha256"], "--cache", str(tmp_path / "c"), "--plain-http",
            "--registry-auth-file", str(creds)]
    assert cli_main(args) == 0
    assert (tmp_path / "c" / "sha256" / src["sha256"]).read_bytes() == (out / "tabular.fp32.onnx").read_bytes()
    wrong = tmp_path / "wrong.json"
    wrong.write_bytes(auth_registry.docker_config(password="wrong"))
    args[args.index(str(creds))] = str(wrong)
    args[args.index(str(tmp_path / "c"))] = str(tmp_path / "c2")
    assert cli_main(args) == 5


def test_bearer_tokens_from_the_registrys_token_service(model: Path, tmp_path: Path) -> None:
    (tmp_path / "reg").mkdir()
    with running_registry(tmp_path / "reg", USER, PASSWORD, token=True) as reg:
        assert reg.tokens is not None
        creds = tmp_path / "config.json"
        creds.write_bytes(reg.docker_config())
        out = tmp_path / "out"
        run_pack(model, out, f"oci://{reg.addr}/models/tokened:v1", registry_auth=creds)
        # The push asked for pull and push on the repository in one token.
        assert "repository:models/tokened:pull,push" in reg.tokens.issued
        src = builds(out)["default"]
        chk = verify(artifact(src["uri"], src["sha256"]), reg.docker_config())
        assert chk.ok, chk.message
        path = fetch(src["uri"], src["sha256"], tmp_path / "cache",
                     registry=oci.RegistryAccess(reg.docker_config(), plain_http=True))
        assert path.read_bytes() == (out / "tabular.fp32.onnx").read_bytes()
        bad = verify(artifact(src["uri"], src["sha256"]), reg.docker_config(password="wrong"))
        assert bad.reason == "Unreachable" and "token service" in bad.message and "HTTP 401" in bad.message
