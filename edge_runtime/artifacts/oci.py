"""A small client of the OCI distribution API (the registry's HTTP API) for model artifacts.

Why not a library: the ORAS Python SDK (`oras`, 0.2.x) was the candidate. Its blob download
streams from byte 0 with no Range (so no resume of a cut transfer, which the edge needs), writes
without hashing or a size limit, is synchronous `requests` code, and would bring `requests` and
`jsonschema` (with its Rust `rpds-py`) into the runtime image, which has neither. What is needed
here is five calls of the distribution spec (GET a manifest, GET a blob with Range, HEAD a blob,
a monolithic blob upload, PUT a manifest) and its two auth schemes (Basic, and Bearer tokens from
the challenge's realm), so this module speaks them over the standard library's urllib, the
client the runtime's fetch already uses. One client serves the runtime (fetch), `pack --push`
and the operator (which calls it in a thread, as it reads file:// sources).

Credentials come from a docker config (`.dockerconfigjson`, what a Secret of type
kubernetes.io/dockerconfigjson holds). Authorization is never sent along a redirect (a registry
may redirect a blob to object storage), and never over plain HTTP unless the caller chose it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

from edge_runtime.artifacts.integrity import DigestMismatch, IntegrityError
from edgeai_api import oci as api

MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's own limit for manifests
_MANIFEST_ACCEPT = ", ".join([api.MANIFEST_MEDIA_TYPE, api.INDEX_MEDIA_TYPE, api.DOCKER_MANIFEST_MEDIA_TYPE,
                              api.DOCKER_LIST_MEDIA_TYPE])


class Transient(Exception):
    """A failure worth retrying: the network, a 5xx, 408 or 429."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def credentials_for(docker_config: bytes | None, registry: str) -> Credentials | None:
    """The registry's credentials in a docker config (`{"auths": {HOST: {"auth": b64(user:pass)}}}`,
    or username/password). Keys may carry a scheme or path (`https://host/v1/`), as docker writes them."""
    if not docker_config:
        return None
    try:
        doc = json.loads(docker_config)
        auths = doc.get("auths", doc) if isinstance(doc, dict) else None  # the old ~/.dockercfg had no "auths"
    except ValueError as e:
        raise IntegrityError("BadKey", f"the registry credentials are not a docker config JSON: {e}") from e
    if not isinstance(auths, dict):
        raise IntegrityError("BadKey", "the registry credentials have no \"auths\" object (a docker config JSON)")
    for key, entry in auths.items():
        host = re.sub(r"^[a-z]+://", "", str(key)).split("/", 1)[0]
        if host != registry or not isinstance(entry, dict):
            continue
        if entry.get("username") is not None:
            return Credentials(str(entry["username"]), str(entry.get("password", "")))
        if entry.get("auth"):
            try:
                user, colon, password = base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                colon = ""
            if not colon:
                raise IntegrityError("BadKey", f"the registry credentials for {registry}: \"auth\" is not "
                                               "base64 of user:password")
            return Credentials(user, password)
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="registry",scope="..."` -> ("bearer", {realm:..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest)}
    return scheme.lower(), params


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest is pushed as (its digest is of exactly these)."""
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def model_layer(manifest: Mapping[str, Any], where: str) -> Descriptor:
    """The model's layer in an image manifest: the one layer of pack's media type or, for an artifact
    pushed by another tool (`oras push model.onnx`), the only layer there is."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise IntegrityError("InvalidModel", f"{where}: the manifest has no layers, so no model")
    ours = [x for x in layers if isinstance(x, dict) and x.get("mediaType") == api.MODEL_LAYER_MEDIA_TYPE]
    if len(ours) > 1:
        raise IntegrityError("InvalidModel", f"{where}: the manifest has {len(ours)} layers of type "
                                             f"{api.MODEL_LAYER_MEDIA_TYPE}; a model manifest has one")
    if not ours and len(layers) > 1:
        raise IntegrityError("InvalidModel", f"{where}: none of the manifest's {len(layers)} layers is of type "
                                             f"{api.MODEL_LAYER_MEDIA_TYPE}, so which is the model is unclear")
    x = ours[0] if ours else layers[0]
    digest, size = x.get("digest"), x.get("size")
    if not isinstance(digest, str) or not isinstance(size, int):
        raise IntegrityError("InvalidModel", f"{where}: the model layer has no digest or size")
    return Descriptor(str(x.get("mediaType", "")), digest, size, dict(x.get("annotations") or {}))


class _GetRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (a blob may live in object storage) for GET and HEAD only. Authorization is
    added as an unredirected header: it is never sent along a redirect."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if req.get_method() not in ("GET", "HEAD"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Registry:
    """One registry, one repository's worth of tokens at a time; not thread-safe (one per transfer)."""

    def __init__(self, registry: str, *, credentials: Credentials | None = None, plain_http: bool = False,
                 timeout: float = 30.0) -> None:
        self.registry = registry
        self.base = f"{'http' if plain_http else 'https'}://{registry}"
        self.credentials = credentials
        self.timeout = timeout
        self._auth: dict[str, str] = {}  # scope -> Authorization header value
        self._opener = urllib.request.build_opener(_GetRedirects())

    # -- auth

    def _authorize(self, challenge: str, scope: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise IntegrityError("Unreachable", f"registry {self.registry} asks for credentials and none "
                                                    "are given (spec.registry.pullSecretRef)")
            return "Basic " + _basic(self.credentials)
        if scheme != "bearer" or not params.get("realm"):
            raise IntegrityError("Unreachable", f"registry {self.registry}: unsupported auth challenge {challenge!r}")
        # Our own scope, not the challenge's: a HEAD before a push is challenged for pull alone,
        # and the token must also carry push for the upload that follows.
        query = {"service": params.get("service", ""), "scope": scope or params.get("scope", "")}
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(
            {k: v for k, v in query.items() if v})
        req = urllib.request.Request(url, headers={"User-Agent": "edge-runtime"})
        if self.credentials is not None:
            req.add_unredirected_header("Authorization", "Basic " + _basic(self.credentials))
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise IntegrityError("Unreachable", f"the token service of {self.registry} refused the "
                                                    f"credentials (HTTP {e.code})") from e
            raise _classify(e, url) from e
        except (urllib.error.URLError, TimeoutError, OSError, HTTPException) as e:
            raise Transient(f"{url}: {getattr(e, 'reason', e)}") from e
        except ValueError as e:
            raise IntegrityError("Unreachable", f"the token service of {self.registry} answered no JSON") from e
        token = body.get("token") or body.get("access_token")
        if not token:
            raise IntegrityError("Unreachable", f"the token service of {self.registry} answered no token")
        return f"Bearer {token}"

    def request(self, method: str, path: str, *, scope: str, headers: Mapping[str, str] | None = None,
                data: bytes | None = None, allow: tuple[int, ...] = ()) -> Any:
        """One call, answering one auth challenge. Returns the open response (2xx, or an error status
        in `allow`); raises Transient (retry) or IntegrityError (a person must act) with a message
        naming the registry and path."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        for attempt in (0, 1):
            req = urllib.request.Request(url, data=data, method=method,
                                         headers={"User-Agent": "edge-runtime", **(headers or {})})
            if scope in self._auth:
                req.add_unredirected_header("Authorization", self._auth[scope])
            try:
                return self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as e:
                if e.code in allow:
                    return e
                if e.code == 401 and attempt == 0 and e.headers.get("WWW-Authenticate"):
                    self._auth[scope] = self._authorize(e.headers["WWW-Authenticate"], scope)
                    e.close()
                    continue
                if e.code in (401, 403):
                    raise IntegrityError("Unreachable", f"{method} {url}: registry refused access (HTTP {e.code}); "
                                                        "check spec.registry.pullSecretRef") from e
                raise _classify(e, f"{method} {url}") from e
            except (urllib.error.URLError, TimeoutError, OSError, HTTPException) as e:
                raise Transient(f"{method} {url}: {getattr(e, 'reason', e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    # -- pull

    def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, str]:
        """The manifest `reference` (a digest or a tag) points at: (parsed, media type, digest).
        By digest, the bytes are checked against it: a registry cannot substitute another manifest."""
        where = f"{api.SCHEME}{self.registry}/{repository}" + (f"@{reference}" if ":" in reference
                                                               else f":{reference}")
        with self.request("GET", f"/v2/{repository}/manifests/{reference}", scope=_pull(repository),
                          headers={"Accept": _MANIFEST_ACCEPT}) as resp:
            body = resp.read(MAX_MANIFEST_BYTES + 1)
            media_type = resp.headers.get_content_type()
        if len(body) > MAX_MANIFEST_BYTES:
            raise IntegrityError("TooLarge", f"{where}: the manifest is over {MAX_MANIFEST_BYTES} bytes")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(reference.removeprefix("sha256:"), digest.removeprefix("sha256:"),
                                 f"the manifest of {where}")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise IntegrityError("InvalidModel", f"{where}: the manifest is not JSON") from e
        if not isinstance(doc, dict):
            raise IntegrityError("InvalidModel", f"{where}: the manifest is not a JSON object")
        return doc, str(doc.get("mediaType") or media_type), digest

    def open_blob(self, repository: str, digest: str, offset: int = 0) -> tuple[Any, int, int | None]:
        """Open blob `digest` from byte `offset`: (stream, actual start, total size if known).
        A registry that ignores Range answers 200 and the stream starts at 0."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=_pull(repository), headers=headers,
                            allow=(416,) if offset else ())
        if resp.status == 416:
            # Nothing left to send: what we have is the whole blob (or garbage the digest will catch).
            resp.close()
            return io.BytesIO(b""), offset, offset
        return ranged_stream(resp, offset, "registry")

    # -- push

    def has_blob(self, repository: str, digest: str) -> bool:
        with self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=_push(repository),
                          allow=(404,)) as resp:
            return bool(resp.status == 200)

    def push_blob(self, repository: str, data: bytes, media_type: str,
                  annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Upload one blob (monolithic: POST then PUT), skipped when the registry has it already."""
        digest = sha256_digest(data)
        desc = Descriptor(media_type, digest, len(data), dict(annotations or {}))
        if self.has_blob(repository, digest):
            return desc
        with self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=_push(repository), data=b"",
                          headers={"Content-Length": "0"}) as resp:
            location = resp.headers.get("Location")
        if not location:
            raise IntegrityError("Unreachable", f"registry {self.registry} started an upload without a Location")
        location = urllib.parse.urljoin(self.base + "/", location)
        url = location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        with self.request("PUT", url, scope=_push(repository), data=data,
                          headers={"Content-Type": "application/octet-stream"}):
            pass
        return desc

    def push_manifest(self, repository: str, reference: str, manifest: Mapping[str, Any]) -> Descriptor:
        """PUT a manifest or index under `reference` (a tag, or its own digest); returns its descriptor."""
        body = manifest_bytes(manifest)
        media_type = str(manifest["mediaType"])
        with self.request("PUT", f"/v2/{repository}/manifests/{reference}", scope=_push(repository), data=body,
                          headers={"Content-Type": media_type}):
            pass
        return Descriptor(media_type, sha256_digest(body), len(body))


def ranged_stream(resp: Any, offset: int, who: str) -> tuple[Any, int, int | None]:
    """A GET's answer to `Range: bytes=offset-` as (stream, actual start, total size if known): a 206 must
    start at `offset` (else Transient: try again), a 200 means the server ignored the Range and the
    stream starts at 0. Shared by every source a fetch resumes (HTTP(S) and registries)."""
    if offset and resp.status == 206:
        cr = resp.headers.get("Content-Range", "")
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", cr)
        if not m or int(m.group(1)) != offset:
            resp.close()
            raise Transient(f"{who} answered Range {offset}- with Content-Range {cr!r}")
        return resp, offset, int(m.group(2)) if m.group(2).isdigit() else None
    length = resp.headers.get("Content-Length")
    return resp, 0, int(length) if length and length.isdigit() else None


def _basic(c: Credentials) -> str:
    return base64.b64encode(f"{c.username}:{c.password}".encode()).decode()


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _classify(e: urllib.error.HTTPError, what: str) -> Exception:
    if e.code in (408, 429) or e.code >= 500:
        return Transient(f"{what}: HTTP {e.code}")
    detail = ""
    try:
        errors = json.loads(e.read(1 << 16)).get("errors") or []
        detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in errors if isinstance(x, dict))
    except (ValueError, AttributeError, OSError):
        pass
    return IntegrityError("Unreachable", f"{what}: HTTP {e.code} {e.reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach the registry of an oci:// URI: a docker config JSON with its credentials (the
    `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret), and whether it speaks plain HTTP."""

    docker_config: bytes | None = None
    plain_http: bool = False


def connect(ref: api.OciRef, access: RegistryAccess | None = None, *, timeout: float = 30.0) -> Registry:
    access = access or RegistryAccess()
    return Registry(ref.registry, credentials=credentials_for(access.docker_config, ref.registry),
                    plain_http=access.plain_http, timeout=timeout)


@dataclass(frozen=True)
class Resolved:
    """What an oci:// build points at: the manifest's digest (pinned, whatever a tag says later)
    and its model layer."""

    manifest_digest: str
    layer: Descriptor


MAX_INDEX_ENTRIES = 64


def resolve_model(reg: Registry, ref: api.OciRef, sha256: str | None = None) -> Resolved:
    """Fetch the manifest `ref` names (by digest, or a tag resolved now) and find its model layer.
    An index (what `pack --push` tags) stands for its builds: the manifest whose model layer is
    `sha256` is chosen, so one tag can name every build of a model."""
    doc, media_type, digest = reg.manifest(ref.repository, ref.reference)
    if media_type not in (api.INDEX_MEDIA_TYPE, api.DOCKER_LIST_MEDIA_TYPE) and "manifests" not in doc:
        return Resolved(digest, model_layer(doc, str(ref)))
    entries = [m for m in doc.get("manifests") or [] if isinstance(m, dict) and isinstance(m.get("digest"), str)]
    if not entries or len(entries) > MAX_INDEX_ENTRIES:
        raise IntegrityError("InvalidModel", f"{ref} is an index of {len(entries)} manifests; a model's index "
                                             f"lists 1 to {MAX_INDEX_ENTRIES}")
    if sha256 is None:
        raise IntegrityError("InvalidModel", f"{ref} is an index; name one build's manifest")
    layers = []
    for m in entries:
        child = ref.pinned(str(m["digest"]))
        sub, sub_type, sub_digest = reg.manifest(ref.repository, child.reference)
        if sub_type in (api.INDEX_MEDIA_TYPE, api.DOCKER_LIST_MEDIA_TYPE) or "manifests" in sub:
            continue  # an index of indexes is not a model's
        layer = model_layer(sub, str(child))
        if layer.digest == f"sha256:{sha256}":
            return Resolved(sub_digest, layer)
        layers.append(layer.digest)
    raise IntegrityError("DigestMismatch", f"none of the {len(entries)} manifests of index {ref.pinned(digest)} "
                                           f"has a model layer sha256:{sha256} (they have {', '.join(layers)})")
