"""Verify an EdgeModel's builds: stream, hash, check size and signature, read the graph.

The artifact is streamed in 1 MiB chunks through a hasher and never held
whole in memory, except the first `inspect_limit` bytes of the default build,
kept to read the graph's inputs and outputs with onnxruntime (a core
dependency, unlike onnx) once the digest has matched: the operator only ever
parses bytes it has verified. Larger models are verified but not inspected.

An OpenSSF model signature (spec.signature.format openssf) is checked with
edge_runtime.artifacts.openssf, offline, for every build: the bundle must verify with the
Secret's public key or trust roots and its manifest must list the build's sha256.

An oci:// build is resolved first (edge_runtime.artifacts.oci, in a thread): the manifest its URI
names (a tag is resolved now; its digest goes to status, and nothing follows the tag later), its
model layer, whose digest must be the build's sha256 before a byte of the blob moves; then the
blob is streamed by that digest and hashed like any other source. The registry's credentials come
from spec.registry.pullSecretRef, a kubernetes.io/dockerconfigjson Secret.

Failures become an `ArtifactCheck` with a condition reason, never an
exception: `Unreachable` (and a missing key Secret) are retried with
backoff by the caller; `DigestMismatch`, `TooLarge`, `BadSignature`,
`InvalidModel` wait for a spec change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from edge_operator.core.placement import Artifact
from edge_operator.core.status import ArtifactCheck, ModelCheck, invalid_spec_check, previously_verified
from edge_operator.core.views import ModelInfo
from edge_operator.kube.errors import ApiError
from edge_operator.kube.kubeapi import KubeApi
from edge_operator.telemetry import metrics
from edge_runtime.artifacts import integrity, oci, openssf
from edgeai_api import oci as oci_ref
from edgeai_api.enums import ModelReason

log = logging.getLogger("edge_operator.verify")

CHUNK = 1 << 20


@dataclass(frozen=True)
class VerifySettings:
    max_size: int = 8 << 30  # refuse anything larger, whatever the spec says
    inspect_limit: int = 64 << 20  # read the graph of models up to this size
    allow_file_uris: bool = False  # file:// reads the operator's own filesystem: tests and demos only
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


class _Fail(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def _stream(uri: str, cfg: VerifySettings, session: aiohttp.ClientSession) -> AsyncIterator[bytes]:
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        try:
            async with session.get(uri) as resp:
                if resp.status != 200:
                    raise _Fail("Unreachable", f"GET {uri}: HTTP {resp.status} {resp.reason}")
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _Fail("Unreachable", f"GET {uri}: {e or type(e).__name__}") from e
    elif parts.scheme == "file":
        if not cfg.allow_file_uris:
            raise _Fail("UnsupportedScheme", "file:// sources are disabled in this operator "
                                             "(EDGEAI_ALLOW_FILE_URIS=1 enables them for tests and demos)")
        path = unquote(parts.path)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except OSError as e:
            raise _Fail("Unreachable", f"{uri}: {e.strerror or e}") from e
        try:
            while True:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()
    else:
        raise _Fail("UnsupportedScheme", f"{uri}: scheme {parts.scheme!r} is not http, https, file or oci")


async def _resolve_oci(art: Artifact, limit: int, docker_config: bytes | None,
                       cfg: VerifySettings) -> tuple[oci.Registry, oci_ref.OciRef, oci.Resolved]:
    """The manifest an oci:// build names and its model layer, checked against the spec before any
    blob byte moves. Raises _Fail."""
    try:
        ref = oci_ref.parse(art.uri)
    except oci_ref.OciRefError as e:
        raise _Fail(ModelReason.INVALID_SPEC, str(e)) from e
    reg = oci.connect(ref, oci.RegistryAccess(docker_config, art.plain_http), timeout=cfg.read_timeout)
    try:
        resolved = await asyncio.to_thread(oci.resolve_model, reg, ref, art.sha256)
    except oci.Transient as e:
        raise _Fail(ModelReason.UNREACHABLE, str(e)) from e
    except integrity.IntegrityError as e:
        raise _Fail(e.reason, e.message) from e
    layer = resolved.layer
    if layer.digest != f"sha256:{art.sha256}":
        raise _Fail(ModelReason.DIGEST_MISMATCH,
                    f"the model layer of {ref.pinned(resolved.manifest_digest)} is {layer.digest}, "
                    f"not sha256:{art.sha256} as the spec says")
    if layer.size > limit:
        raise _Fail(ModelReason.TOO_LARGE, f"the model layer of {ref} is {layer.size} bytes, "
                                           f"over the limit of {limit} bytes")
    return reg, ref, resolved


async def _stream_oci(reg: oci.Registry, ref: oci_ref.OciRef, digest: str) -> AsyncIterator[bytes]:
    """Blob `digest` of the build's repository, read in a thread (urllib is blocking)."""
    try:
        resp, _, _ = await asyncio.to_thread(reg.open_blob, ref.repository, digest)
    except oci.Transient as e:
        raise _Fail(ModelReason.UNREACHABLE, str(e)) from e
    except integrity.IntegrityError as e:
        raise _Fail(e.reason, e.message) from e
    try:
        while True:
            try:
                chunk = await asyncio.to_thread(resp.read, CHUNK)
            except (OSError, TimeoutError) as e:
                raise _Fail(ModelReason.UNREACHABLE, f"reading {digest} from {ref}: {e or type(e).__name__}") from e
            if not chunk:
                return
            yield chunk
    finally:
        resp.close()


async def check_artifact(
    art: Artifact,
    cfg: VerifySettings,
    session: aiohttp.ClientSession,
    public_key: bytes | None,
    keep: int = 0,
    docker_config: bytes | None = None,
) -> tuple[ArtifactCheck, bytes | None]:
    """Stream and check one build. Returns the check and, if asked (`keep` > 0) and the artifact
    is no larger than `keep`, its verified bytes."""
    limit = min(cfg.max_size, art.size) if art.size else cfg.max_size
    hasher = integrity.StreamHasher(max_size=limit)
    buf: bytearray | None = bytearray() if keep else None
    manifest: str | None = None
    try:
        chunks: AsyncIterator[bytes]
        if oci_ref.is_oci(art.uri):
            reg, ref, resolved = await _resolve_oci(art, limit, docker_config, cfg)
            manifest = resolved.manifest_digest
            chunks = _stream_oci(reg, ref, resolved.layer.digest)
        else:
            chunks = _stream(art.uri, cfg, session)
        async for chunk in chunks:
            try:
                hasher.update(chunk)
            except integrity.IntegrityError as e:
                raise _Fail(e.reason, f"{art.uri}: {e.message}") from e
            if buf is not None:
                if len(buf) + len(chunk) > keep:
                    buf = None  # too big to inspect; keep hashing
                else:
                    buf += chunk
        d = hasher.digest()
        try:
            integrity.expect_digest(d.sha256, art.sha256, art.uri)
        except integrity.DigestMismatch as e:
            metrics.DIGEST_MISMATCHES.inc()
            return ArtifactCheck(art.name, False, d.sha256, d.size, "DigestMismatch", e.message, manifest), None
        if art.bundle is not None:
            await verify_openssf(art, public_key)
        elif art.signature is not None:
            if public_key is None:
                raise _Fail("BadSignature", "a signature is given but no public key to check it")
            try:
                integrity.verify_digest_signature(public_key, art.sha256, art.signature)
            except integrity.IntegrityError as e:
                raise _Fail(e.reason, e.message) from e
    except _Fail as e:
        return ArtifactCheck(art.name, False, None, hasher.size or None, e.reason, e.message, manifest), None
    return (ArtifactCheck(art.name, True, d.sha256, d.size, "Verified", "", manifest),
            bytes(buf) if buf is not None else None)


async def verify_openssf(art: Artifact, material: bytes | None) -> None:
    """Check that the build's OpenSSF bundle verifies offline with `material` (a public key or trust
    roots, from the Secret) and lists the build's sha256. Raises _Fail with the runtime's reasons."""
    if art.bundle is None:
        return
    if material is None:
        raise _Fail("BadSignature", "an OpenSSF signature bundle is given but no public key or trust roots to check it")
    try:
        # In a thread: the first call imports model_signing (seconds), and the checks are CPU work.
        await asyncio.to_thread(openssf.verify_artifact, art.bundle, art.sha256, material, art.uri)
    except integrity.IntegrityError as e:
        raise _Fail(e.reason, e.message) from e


async def inspect_onnx(data: bytes, timeout: float = 120.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX graph, as v2 tensor metadata, read by onnxruntime in a child
    process (see onnx_inspect.py for why). Raises IntegrityError(InvalidModel) when it cannot."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_operator.kube.onnx_inspect",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError as e:
        proc.kill()
        await proc.wait()
        raise integrity.IntegrityError("InvalidModel", f"reading the graph took longer than {timeout:.0f}s") from e
    try:
        doc = json.loads(out.decode() or "{}")
    except ValueError:
        doc = {}
    if proc.returncode != 0 or "inputs" not in doc:
        why = doc.get("error") or (err.decode(errors="replace").strip()[-500:]
                                   or f"onnxruntime exited with {proc.returncode}")
        raise integrity.IntegrityError("InvalidModel", f"onnxruntime cannot load the model: {why}")
    return list(doc["inputs"]), list(doc["outputs"])


class Verifier:
    def __init__(self, api: KubeApi, cfg: VerifySettings) -> None:
        self.api = api
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.cfg.connect_timeout,
                                              sock_read=self.cfg.read_timeout),
                auto_decompress=False,  # hash the bytes as served, exactly as the runtime does
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _secret(self, m: ModelInfo, name: str, key: str, what: str) -> bytes:
        try:
            return await self.api.secret_value(m.namespace, name, key)
        except ApiError as e:
            if e.not_found:
                raise _Fail("SecretNotFound", f"{what} Secret {m.namespace}/{name} does not exist") from e
            raise _Fail("Unreachable", f"reading {what} Secret {m.namespace}/{name}: {e}") from e
        except KeyError as e:
            raise _Fail("KeyNotFound", f"{what} Secret {m.namespace}/{name} has no key {key!r}") from e

    async def check(self, m: ModelInfo) -> ModelCheck:
        """Check every build of the model's current generation that is not verified already."""
        invalid = invalid_spec_check(m)
        if invalid is not None:
            return invalid
        done = previously_verified(m)
        public_key = decryption_key = docker_config = None
        try:
            if m.public_key is not None:
                what = ("trust roots" if m.spec is not None and m.spec.signature is not None
                        and m.spec.signature.certificate_chain_secret_ref is not None else "public key")
                public_key = await self._secret(m, m.public_key.name, m.public_key.key, what)
            if m.decryption_key is not None:
                decryption_key = await self._secret(m, m.decryption_key.name, m.decryption_key.key, "decryption key")
            pull_secret = next((a.pull_secret for a in (m.source, *m.variants) if a.pull_secret), None)
            if pull_secret is not None:
                docker_config = await self._secret(m, pull_secret, ".dockerconfigjson", "registry pull")
        except _Fail as e:
            return ModelCheck(ArtifactCheck("default", False, None, None, e.reason, e.message))

        notes: list[str] = []
        inputs = outputs = None
        if done.get("default") == m.source.sha256:
            src = ArtifactCheck("default", True, m.source.sha256, m.status.get("size"),
                                manifest=m.status.get("manifestDigest"))
            prev_in, prev_out = m.status.get("inputs"), m.status.get("outputs")
            inputs = tuple(prev_in) if prev_in is not None else None
            outputs = tuple(prev_out) if prev_out is not None else None
        else:
            src, data = await check_artifact(m.source, self.cfg, self.session(), public_key,
                                             keep=self.cfg.inspect_limit, docker_config=docker_config)
            if src.ok:
                if data is None:
                    notes.append(f"larger than {self.cfg.inspect_limit} bytes: inputs/outputs not read")
                else:
                    try:
                        if decryption_key is not None:
                            data = integrity.decrypt(data, decryption_key)
                        elif integrity.is_encrypted(data):
                            raise integrity.IntegrityError(
                                "MissingKey", "the artifact is encrypted but spec.encryption names no key")
                        ins, outs = await inspect_onnx(data)
                        inputs, outputs = tuple(ins), tuple(outs)
                    except integrity.IntegrityError as e:
                        src = ArtifactCheck("default", False, src.sha256, src.size, e.reason, e.message)
                    finally:
                        del data
        variants = []
        for v in m.variants:
            if done.get(v.name) == v.sha256:
                prev: dict[str, Any] = next(
                    (x for x in m.status.get("variants") or [] if x.get("name") == v.name), {})
                variants.append(ArtifactCheck(v.name, True, v.sha256, prev.get("size"),
                                              manifest=prev.get("manifestDigest")))
                continue
            chk, _ = await check_artifact(v, self.cfg, self.session(), public_key, docker_config=docker_config)
            variants.append(chk)
        for chk in (src, *variants):
            metrics.VERIFICATIONS.labels(chk.reason).inc()
        signed = m.source.signature is not None or m.source.bundle is not None
        return ModelCheck(src, tuple(variants), inputs, outputs, signed=signed, notes=tuple(notes))


def settings_from_env() -> VerifySettings:
    def flag(name: str) -> bool:
        return os.environ.get(name, "").lower() in ("1", "true", "yes")

    return VerifySettings(
        max_size=int(os.environ.get("EDGEAI_MAX_MODEL_BYTES", 8 << 30)),
        inspect_limit=int(os.environ.get("EDGEAI_INSPECT_MAX_BYTES", 64 << 20)),
        allow_file_uris=flag("EDGEAI_ALLOW_FILE_URIS"),
    )
