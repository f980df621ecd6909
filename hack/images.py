#!/usr/bin/env python3
"""The operator and edge-runtime images, built from docker/*.Dockerfile with no Docker engine.

    python hack/images.py build             # base rootfs, base image, both images (cached)
    python hack/images.py build --family openvino   # and the runtime of another provider family
    python hack/images.py push REGISTRY     # e.g. 127.0.0.1:5000 (plain HTTP)
    python hack/images.py status
    python hack/images.py clean-storage     # buildah's storage only; the cached images stay

The chain, each link cached under $EDGEAI_CACHE/images/ by a hash of its inputs:

1. a Debian bookworm rootfs (debootstrap --variant=minbase, python3 + pip), from the
   Debian mirror apt already uses; key = the recipe (packages, suite, RECIPE);
2. a Python base image made from it with buildah (a stand-in for python:3.11-slim:
   `python`, pip usable for a system install); key = the rootfs key;
3. that base with the project's dependencies pip-installed (so a code change does not
   download onnxruntime and the rest again); key = the base's id and pyproject's
   dependency list;
4. each image, `buildah bud` of its Dockerfile with PYTHON_IMAGE = that image;
   key = the Dockerfile, its .dockerignore-filtered build context, the build args
   and the id (config digest) of the image it is built FROM.

The runtime of another onnxruntime provider family (edge-runtime-<family>: the same
Dockerfile with ONNXRUNTIME=onnxruntime-openvino, onnxruntime-gpu...) is built only
when asked for (`--family`): `make test` and the demo build the cpu one only. The cuda
image (CUDA and cuDNN from pip, about 3 GB) is meant for a machine with room for it.

Images are kept in containers/image's `dir:` layout (manifest and blobs as files,
Docker schema 2 so HEALTHCHECK survives): a wipe of buildah's storage costs nothing,
and `skopeo copy` pushes from it without re-compressing. buildah's own storage lives
in $EDGEAI_CACHE/containers/ (not the host's /var/lib/containers), so removing that
folder is a complete cleanup of it.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# `import plane`, never `from plane import ...`: plane.py imports this module too, and a
# plain module import stays valid whichever of the two is loaded first.
import plane  # type: ignore[import-not-found, unused-ignore]  # hack/ is not on mypy_path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"

# Bump when the way an artifact is made changes without its inputs changing.
RECIPE = "1"
SUITE = "bookworm"
# What the Dockerfiles' RUN steps need on top of minbase (which already has passwd's
# groupadd/useradd and coreutils' install): pip wheel/install, TLS roots for PyPI, and
# `python` itself (the HEALTHCHECKs call it, as python:3.11-slim provides it).
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
HOST_PACKAGES = ("debootstrap", "buildah", "skopeo", "umoci", "runc")
# The host's CA bundle. PyPI is reached through a TLS-intercepting proxy whose CA is only
# in this file; see _bud for how the build gets it.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class Spec:
    """One image the project ships: which Dockerfile, and the name users pull."""

    key: str  # "operator" | "runtime" | "runtime-<family>": the keys of push()'s answer
    dockerfile: str
    repo: str  # repository path inside a registry
    build_args: tuple[tuple[str, str], ...] = ()


SPECS = (
    Spec("operator", "operator.Dockerfile", "edgeai/edgeai-operator"),
    Spec("runtime", "edge-runtime.Dockerfile", "edgeai/edge-runtime"),
)
# The runtime per onnxruntime provider family (the operator's EDGEAI_RUNTIME_IMAGE_<FAMILY>, the
# chart's runtime.images.<family>): the cpu runtime's Dockerfile with that family's wheel. qnn is
# left out: onnxruntime-qnn has no wheel for the amd64 hosts this script builds on.
FAMILY_WHEELS = {
    "cuda": "onnxruntime-gpu[cuda,cudnn]",
    "openvino": "onnxruntime-openvino",
    "rocm": "onnxruntime-rocm",
    "cann": "onnxruntime-cann",
}
FAMILY_SPECS = {f: Spec(f"runtime-{f}", "edge-runtime.Dockerfile", f"edgeai/edge-runtime-{f}",
                        (("ONNXRUNTIME", wheel),)) for f, wheel in FAMILY_WHEELS.items()}


@dataclass(frozen=True)
class Image:
    """A built image in the cache: `ref` is what skopeo, buildah and umoci read."""

    name: str  # "operator" | "runtime" | "base"
    repo: str
    tag: str  # <version>-<key>: a new tag whenever an input changes, so nodes pull it
    path: Path  # the dir: layout
    image_id: str  # sha256 of the config blob, as buildah and containerd name the image

    @property
    def ref(self) -> str:
        return f"dir:{self.path}"

    @property
    def local_name(self) -> str:
        """Its name in buildah's storage when loaded there."""
        return f"localhost/{self.repo}:{self.tag}"

    def config(self) -> dict[str, Any]:
        """The image's run config (User, Entrypoint, Cmd, Env, Labels, Healthcheck...)."""
        manifest = json.loads((self.path / "manifest.json").read_text())
        blob = self.path / str(manifest["config"]["digest"]).split(":", 1)[1]
        cfg: dict[str, Any] = json.loads(blob.read_text()).get("config") or {}
        return cfg

    def size(self) -> int:
        """Bytes of the compressed layers and config: what a node downloads."""
        return sum(f.stat().st_size for f in self.path.iterdir() if re.fullmatch(r"[0-9a-f]{64}", f.name))


@dataclass(frozen=True)
class Images:
    base: Image  # what the Dockerfiles were built FROM: the Python base with the dependencies
    operator: Image
    runtime: Image
    families: tuple[Image, ...] = ()  # runtimes of other provider families, when asked for

    def all(self) -> tuple[Image, ...]:
        return (self.operator, self.runtime, *self.families)


def log(msg: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cache() -> Path:
    d: Path = plane.CACHE / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


# --------------------------------------------------------------------------- host packages


def _installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.strip().endswith(" installed")


def ensure_packages(pkgs: Sequence[str]) -> None:
    """apt-get install the Debian packages of `pkgs` not yet installed (one `apt-get update` first)."""
    missing = [p for p in pkgs if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"Debian packages missing: {' '.join(missing)}; installing them needs root "
                         f"(run as root, or `sudo apt-get install {' '.join(missing)}`)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing Debian packages: {' '.join(missing)}")
    start = time.monotonic()
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            tail = "\n".join((p.stdout + p.stderr).splitlines()[-20:])
            raise SystemExit(f"`{' '.join(cmd)}` failed (exit {p.returncode}):\n{tail}")
    log(f"installed {' '.join(missing)} in {time.monotonic() - start:.0f}s")


# --------------------------------------------------------------------------- commands


def _run_logged(cmd: Sequence[str], logf: Path, what: str, show: re.Pattern[str],
                env: dict[str, str] | None = None) -> None:
    """Run `cmd`, all output to `logf`; lines matching `show` become progress lines, and a
    line with the elapsed time every 30 s when nothing else was said."""
    start = last = time.monotonic()
    phase = ""
    with open(logf, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            lf.write(line)
            now = time.monotonic()
            m = show.search(line)
            # one line per phase (the match), not per package or layer
            if m and m.group(0) != phase:
                phase = m.group(0)
                log(f"  {what}: {line.strip()[:160]} ({now - start:.0f}s)")
                last = now
            elif now - last >= 30:
                log(f"  {what}: {now - start:.0f}s elapsed, last: {line.strip()[:120]}")
                last = now
        proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(logf.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{what} failed ({' '.join(cmd)}), see {logf}:\n{tail}")


def _storage() -> list[str]:
    """buildah's global options: a store of our own under the cache."""
    root = plane.CACHE / "containers"
    return ["--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "overlay"]


def _cs(name: str) -> str:
    """The containers-storage: reference of `name` in that store, for skopeo."""
    root = plane.CACHE / "containers"
    return f"containers-storage:[overlay@{root / 'storage'}+{root / 'run'}]{name}"


def buildah(*args: str, capture: bool = True) -> str:
    p = subprocess.run(["buildah", *_storage(), *args], capture_output=capture, text=True)
    if p.returncode != 0:
        raise SystemExit(f"buildah {' '.join(args)} failed (exit {p.returncode}):\n{(p.stderr or '')[-3000:]}")
    return (p.stdout or "").strip()


def _skopeo_copy(src: str, dest: str, *opts: str) -> None:
    p = subprocess.run(["skopeo", "copy", "--quiet", *opts, src, dest], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"skopeo copy {src} {dest} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")


def _image_at(name: str, repo: str, tag: str, path: Path) -> Image | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return Image(name, repo, tag, path, str(manifest["config"]["digest"]))


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        b = part.encode() if isinstance(part, str) else part
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- base rootfs and image


def debian_mirror() -> str:
    """The Debian mirror apt uses (deb822 first, then the one-line format)."""
    src = Path("/etc/apt/sources.list.d/debian.sources")
    if src.exists():
        for stanza in re.split(r"\n\s*\n", src.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites and fields.get("URIs"):
                return str(fields["URIs"]).split()[0]
    lst = Path("/etc/apt/sources.list")
    if lst.exists():
        m = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", lst.read_text(), re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _rootfs_key() -> str:
    # The mirror is left out on purpose: any mirror serves the same suite.
    return _hash(RECIPE, SUITE, "minbase", *BASE_PACKAGES)


def ensure_rootfs() -> Path:
    """The base rootfs as a tarball (ownership and modes kept), debootstrapped once."""
    out = _cache() / f"rootfs-{SUITE}-{_rootfs_key()}.tar"
    if out.exists():
        return out
    mirror = debian_mirror()
    work = Path(tempfile.mkdtemp(prefix=".rootfs.", dir=_cache()))
    try:
        root = work / "root"
        log(f"debootstrap {SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror} into {root}")
        start = time.monotonic()
        _run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                     SUITE, str(root), mirror], work / "debootstrap.log", "debootstrap",
                    re.compile(r"^I: (Retrieving|Validating|Resolving|Checking|Found|Extracting|Installing|"
                               r"Unpacking|Configuring|Base system)"))
        _trim_rootfs(root)
        log(f"debootstrap done in {time.monotonic() - start:.0f}s; packing {out.name}")
        tmp = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tmp), "."], check=True)
        os.replace(tmp, out)  # atomic: a half-made rootfs is never taken for a cached one
        log(f"base rootfs: {out} ({out.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - start:.0f}s")
    finally:
        # debootstrap leaves proc/sys mounted if it fails half-way: never rm -r through them
        for mnt in ("proc", "sys"):
            subprocess.run(["umount", "-l", str(work / "root" / mnt)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return out


def _trim_rootfs(root: Path) -> None:
    """What an image should not carry: apt's downloads and lists, device nodes, logs.

    And pip's EXTERNALLY-MANAGED marker (PEP 668), as python:3.11-slim has none: the
    Dockerfiles `pip install` into the system interpreter, which is all this image runs.
    """
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*", "dev/*", "run/*", "tmp/*", "proc/*", "sys/*",
                    "usr/lib/python3*/EXTERNALLY-MANAGED"):
        for p in root.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()


# What python:3.11-slim leaves out too (Debian's docker-slim dpkg excludes): docs but their
# copyright files, man and info pages, translations. The same rules go into the image's dpkg
# config, so an `apt-get install` in a derived image stays slim.
SLIM_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/groff/*")
SLIM_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")


def _slim(root: Path) -> None:
    keep = {p for pattern in SLIM_INCLUDES for p in root.glob(pattern.lstrip("/"))}
    for pattern in SLIM_EXCLUDES:
        for p in sorted(root.glob(pattern.lstrip("/")), reverse=True):
            if p.is_dir() and not p.is_symlink():
                for sub in sorted(p.rglob("*"), reverse=True):
                    if sub not in keep and not (sub.is_dir() and not sub.is_symlink()):
                        sub.unlink()
                    elif sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                        sub.rmdir()
                if not any(p.iterdir()):
                    p.rmdir()
            elif p not in keep:
                p.unlink()
    (root / "etc/dpkg/dpkg.cfg.d/edgeai-slim").write_text(
        "".join(f"path-exclude {e}\n" for e in SLIM_EXCLUDES) + "".join(f"path-include {i}\n" for i in SLIM_INCLUDES))


def _base_key() -> str:
    return _hash(RECIPE, _rootfs_key(), *SLIM_EXCLUDES, *SLIM_INCLUDES, "oci-timestamp-0")


def _load(img: Image) -> None:
    """Put a cached image into buildah's storage under its local name (no-op when there)."""
    p = subprocess.run(["buildah", *_storage(), "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                        img.local_name], capture_output=True, text=True)
    if p.returncode == 0 and img.image_id.endswith(p.stdout.strip()):
        return
    _skopeo_copy(img.ref, _cs(img.local_name))


def ensure_base() -> Image:
    """The Python base image, made from the rootfs: a stand-in for python:3.11-slim."""
    key = _base_key()
    path = _cache() / f"python-base-{key}"
    tag = f"3.11-{SUITE}-{key}"
    cached = _image_at("base", "edgeai/python-base", tag, path)
    if cached is not None:
        return cached
    rootfs = ensure_rootfs()
    log(f"making the base image edgeai/python-base:{tag} from {rootfs.name}")
    start = time.monotonic()
    ctr = buildah("from", "scratch")
    try:
        mnt = buildah("mount", ctr)
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-xpf", str(rootfs), "-C", mnt], check=True)
        _slim(Path(mnt))
        buildah("umount", ctr)
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8", "--cmd", "python", "--label", f"io.edgeai.base.key={key}",
                "--os", "linux", ctr)
        ctr = _commit(ctr, "base", "edgeai/python-base", tag, path)
    finally:
        if ctr:
            subprocess.run(["buildah", *_storage(), "rm", ctr], capture_output=True)
    img = _image_at("base", "edgeai/python-base", tag, path)
    assert img is not None
    log(f"base image {img.image_id[:19]} ({img.size() / 2**20:.0f} MiB) in {time.monotonic() - start:.0f}s")
    return img


def _commit(ctr: str, name: str, repo: str, tag: str, path: Path) -> str:
    """Commit working container `ctr` (removing it) and keep the image in the cache at `path`; returns ""
    (the container is gone) for the caller's cleanup."""
    local = f"localhost/{repo}:{tag}"
    # Reproducible: a fixed timestamp (layer mtimes, `created`) and OCI format (Docker's config
    # records the random container id), so the same inputs give the same image id and losing
    # this cache entry does not force a rebuild of the images on top of it.
    buildah("commit", "--format", "oci", "--timestamp", "0", "--identity-label=false", "--rm", ctr, local)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_cache()))
    try:
        _skopeo_copy(_cs(local), f"dir:{tmp}", "--dest-compress")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ""


def _dependencies() -> list[str]:
    return [str(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def _deps_plan(base: Image) -> tuple[str, Path]:
    key = _hash(RECIPE, base.image_id, *_dependencies())
    return f"3.11-{SUITE}-{key}", _cache() / f"python-deps-{key}"


def _deps_at(base: Image) -> Image | None:
    """The dependency image for `base` as pyproject is now, if it is cached."""
    return _image_at("deps", "edgeai/python-deps", *_deps_plan(base))


def ensure_deps(base: Image) -> Image:
    """The base with the project's dependencies installed by pip: what the Dockerfiles build FROM here.

    Any change to the code rebuilds both images, and their `pip install` of the wheel used to download
    and install onnxruntime, numpy, grpcio, kopf... every time (most of a 2.5 min rebuild). Keyed by
    the base and pyproject's dependency list, this layer is made once; the Dockerfiles are unchanged
    and still build FROM a plain python image elsewhere: their `pip install` finds the requirements
    satisfied and installs only the project's wheel."""
    cached = _deps_at(base)
    if cached is not None:
        return cached
    deps = _dependencies()
    tag, path = _deps_plan(base)
    _load(base)
    log(f"installing the project's {len(deps)} dependencies on the base image (edgeai/python-deps:{tag})")
    start = time.monotonic()
    ctr = buildah("from", "--pull=never", base.local_name)
    try:
        ca = ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"] if HOST_CA_BUNDLE.exists() else []
        _run_logged(["buildah", *_storage(), "run", "--network", "host", *ca, ctr, "--",
                     "pip", "install", "--no-cache-dir", "--disable-pip-version-check", *deps],
                    _cache() / "deps.build.log", "dependencies", _BUD_PROGRESS)
        ctr = _commit(ctr, "deps", "edgeai/python-deps", tag, path)
    finally:
        if ctr:
            subprocess.run(["buildah", *_storage(), "rm", ctr], capture_output=True)
    img = _image_at("deps", "edgeai/python-deps", tag, path)
    assert img is not None
    log(f"dependency image {img.image_id[:19]} ({img.size() / 2**20:.0f} MiB) in {time.monotonic() - start:.0f}s")
    return img


# --------------------------------------------------------------------------- build context


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it (filepath.Match plus `**`), as a regex."""
    pat = os.path.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            i += 2
            if pat.startswith("/", i):  # `**/` matches zero or more directories
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pat.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += fnmatch.translate(pat[i:j + 1])[4:-3]  # the class, translated by fnmatch
                i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def context_files(dockerfile: Path, root: Path = ROOT) -> list[str]:
    """The build context's files (relative, sorted), as the Dockerfile's own .dockerignore selects them.

    Docker's rules: patterns in order, the last that matches a path or any directory above it
    decides, `!` re-includes.
    """
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        ignore = root / ".dockerignore"
    rules: list[tuple[bool, re.Pattern[str]]] = []
    if ignore.exists():
        for ln in ignore.read_text().splitlines():
            ln = ln.strip()
            if ln and not ln.startswith("#"):
                neg = ln.startswith("!")
                rules.append((neg, _ignore_regex(ln[1:] if neg else ln)))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for neg, rx in rules:
            if any(rx.match(p) for p in prefixes):
                verdict = not neg
        return verdict

    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if not excluded(rel) and not os.path.islink(os.path.join(dirpath, f)):
                out.append(rel)
    return sorted(out)


def _image_key(spec: Spec, base: Image, files: Sequence[str], build_args: dict[str, str]) -> str:
    parts: list[bytes | str] = [RECIPE, (DOCKER / spec.dockerfile).read_bytes(), base.image_id,
                                json.dumps(build_args, sort_keys=True)]
    for rel in files:
        p = ROOT / rel
        parts += [rel, oct(p.stat().st_mode & 0o111), hashlib.sha256(p.read_bytes()).digest()]
    return _hash(*parts)


# --------------------------------------------------------------------------- images


_BUD_PROGRESS = re.compile(r"^(?:\[\d+/\d+\] )?(STEP \d+/\d+|COMMIT|Collecting|Building wheel|Installing collected|"
                           r"Successfully installed|Successfully built|Successfully tagged|Writing manifest)")


def _bud(spec: Spec, base: Image, files: Sequence[str], build_args: dict[str, str], name: str) -> None:
    ctx = Path(tempfile.mkdtemp(prefix=f".ctx-{spec.key}.", dir=_cache()))
    try:
        # Exactly the files hashed into the key: what is built is what was hashed.
        for rel in files:
            dest = ctx / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest)
        args = ["bud", "--format", "docker",  # docker: OCI image configs have no HEALTHCHECK
                "--network", "host",  # pip reaches PyPI through the host's network
                "--pull=never",  # the base was loaded from the cache; nothing comes from outside
                "--build-arg", f"PYTHON_IMAGE={base.local_name}",
                "--file", str(DOCKER / spec.dockerfile), "--tag", name]
        for k, v in sorted(build_args.items()):
            args += ["--build-arg", f"{k}={v}"]
        # The host's CA bundle is bind-mounted over the image's, read-only and for RUN steps
        # only: pip trusts the TLS-intercepting proxy during the build, and the images keep
        # Debian's own bundle. Baking the proxy's CA into the base instead would make every
        # image trust it at run time (the runtime fetches models over HTTPS).
        if HOST_CA_BUNDLE.exists():
            args += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
        # No --layers: buildah 1.28 does not hash what a RUN --mount=from= brings in, so a
        # cached `pip install /wheels/*.whl` would survive a change of the wheel.
        _run_logged(["buildah", *_storage(), *args, str(ctx)], _cache() / f"{spec.key}.build.log",
                    f"build {spec.key}", _BUD_PROGRESS)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def _plan(spec: Spec, base: Image) -> tuple[str, Path, list[str], dict[str, str]]:
    """(tag, cache path, context files, build args) of `spec` as the sources are now."""
    version = _version()
    build_args = {"VERSION": version, **dict(spec.build_args)}
    files = context_files(DOCKER / spec.dockerfile)
    key = _image_key(spec, base, files, build_args)
    return f"{version}-{key}", _cache() / f"{spec.repo.split('/')[-1]}-{key}", files, build_args


def planned_tags(base: Image) -> dict[str, str]:
    """The tag each image gets from the sources as they are now (nothing is built)."""
    return {spec.key: _plan(spec, base)[0] for spec in SPECS}


def _ensure_image(spec: Spec, base: Image) -> Image:
    tag, path, files, build_args = _plan(spec, base)
    cached = _image_at(spec.key, spec.repo, tag, path)
    if cached is not None:
        return cached
    _load(base)
    name = f"localhost/{spec.repo}:{tag}"
    log(f"building {spec.repo}:{tag} from docker/{spec.dockerfile} ({len(files)} context files)")
    start = time.monotonic()
    _bud(spec, base, files, build_args, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}.", dir=_cache()))
    try:
        _skopeo_copy(_cs(name), f"dir:{tmp}", "--dest-compress")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The cache holds it now; buildah's copy would only take disk.
    subprocess.run(["buildah", *_storage(), "rmi", name], capture_output=True)
    img = _image_at(spec.key, spec.repo, tag, path)
    assert img is not None
    log(f"built {spec.repo}:{tag} ({img.size() / 2**20:.0f} MiB) in {time.monotonic() - start:.0f}s")
    return img


def _prune(keep: set[Path], specs: Sequence[Spec]) -> None:
    """Drop cached artifacts whose inputs are gone (older sources, recipes): only the current ones stay.
    Images of `specs` only: a family runtime not built this time is left as it is."""
    for pattern in ("rootfs-*.tar", "python-base-*", "python-deps-*", *(f"{s.repo.split('/')[-1]}-*" for s in specs)):
        # edge-runtime-* must not take edge-runtime-openvino-<key>: a name is <repo>-<key>, the key 12 hex.
        exact = re.compile(re.escape(pattern[:-1]) + r"[0-9a-f]{12}$") if pattern.startswith("edge") else None
        for p in _cache().glob(pattern):
            if p not in keep and not p.name.endswith(".log") and (exact is None or exact.match(p.name)):
                log(f"removing stale {p.name}")
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def family_specs(families: Sequence[str]) -> list[Spec]:
    unknown = [f for f in families if f not in FAMILY_SPECS]
    if unknown:
        raise SystemExit(f"unknown runtime family {', '.join(unknown)} (hack/images.py builds: "
                         f"{', '.join(FAMILY_SPECS)}; cpu is the plain runtime image)")
    return [FAMILY_SPECS[f] for f in dict.fromkeys(families)]


def build_all(families: Sequence[str] = ()) -> Images:
    """Both images (and the base they stand on), and the runtimes of `families`, built where their inputs changed."""
    extra = family_specs(families)
    ensure_packages(HOST_PACKAGES)
    _cache().mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with plane._flock(_cache() / ".build.lock"):
        base = ensure_deps(ensure_base())
        op, rt = (_ensure_image(s, base) for s in SPECS)
        fams = tuple(_ensure_image(s, base) for s in extra)
    _prune({base.path, op.path, rt.path, *(f.path for f in fams), _cache() / f"python-base-{_base_key()}",
            _cache() / f"rootfs-{SUITE}-{_rootfs_key()}.tar"}, [*SPECS, *extra])
    log(f"images ready in {time.monotonic() - start:.1f}s: "
        + ", ".join(f"{i.repo}:{i.tag}" for i in (op, rt, *fams)))
    return Images(base, op, rt, fams)


def push(images: Images, registry: str) -> dict[str, str]:
    """Copy both images into the registry at `registry` (plain HTTP); blobs already there are skipped."""
    out: dict[str, str] = {}
    for img in images.all():
        dest = f"{registry}/{img.repo}:{img.tag}"
        start = time.monotonic()
        _skopeo_copy(img.ref, f"docker://{dest}", "--dest-tls-verify=false")
        log(f"pushed {dest} in {time.monotonic() - start:.1f}s")
        out[img.name] = dest
    return out


# --------------------------------------------------------------------------- running an image


def _unpacked(img: Image) -> Path:
    """The image unpacked once (umoci, ~30 s) and kept beside the image cache, keyed by its id;
    older unpacks of the same image name are removed."""
    key = f"{img.name}-{img.image_id.removeprefix('sha256:')[:16]}"
    root = _cache() / "unpacked"
    out = root / key
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        subprocess.run(["skopeo", "copy", "--quiet", img.ref, f"oci:{work / 'oci'}:img"], check=True,
                       capture_output=True)
        subprocess.run(["umoci", "unpack", "--image", f"{work / 'oci'}:img", str(work / "bundle")], check=True,
                       capture_output=True)
        shutil.rmtree(work / "oci")
        os.replace(work / "bundle", out)  # atomic: a half-unpacked image is never taken for one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in root.iterdir():
        if old.name.startswith(f"{img.name}-") and old != out:
            shutil.rmtree(old, ignore_errors=True)
    return out


@contextlib.contextmanager
def bundle(img: Image, args: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None) -> Iterator[Path]:
    """An OCI runtime bundle of `img` as a kubelet would run it: the image's user, a read-only
    root filesystem, a tmpfs /tmp, no network. `args` replaces the image's CMD and `entrypoint`
    its ENTRYPOINT, as a Pod's args and command do."""
    unpacked = _unpacked(img)
    work = Path(tempfile.mkdtemp(prefix=f".run-{img.name}.", dir=_cache()))
    try:
        (work / "bundle").mkdir()
        cfg_path = work / "bundle" / "config.json"
        cfg = json.loads((unpacked / "config.json").read_text())
        # The unpacked root is shared by every run of this image and never written: read-only.
        cfg["root"] = {"path": str(unpacked / "rootfs"), "readonly": True}
        # umoci mounts an empty tmpfs over each VOLUME; containerd's CRI instead fills a volume
        # with the image's content, and a Pod mounts its own volumes there. Neither is a bundle's
        # business: the image's own directories stay, read-only like the rest of the root.
        volumes = set(img.config().get("Volumes") or {})
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in volumes]
        cfg["process"]["terminal"] = False
        if args is not None or entrypoint is not None:
            conf = img.config()
            entry = list(entrypoint) if entrypoint is not None else conf.get("Entrypoint") or []
            cmd = list(args) if args is not None else [] if entrypoint is not None else conf.get("Cmd") or []
            cfg["process"]["args"] = [*entry, *cmd]
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "mode=1777"]})
        cfg_path.write_text(json.dumps(cfg))
        yield work / "bundle"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(img: Image, args: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `img` once with runc (see bundle()) and return what it printed."""
    with bundle(img, args, entrypoint) as b:
        cid = f"edgeai-images-{img.name}-{os.getpid()}"
        try:
            return subprocess.run(["runc", "run", "--bundle", str(b), cid], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        finally:
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True)


def clean_storage() -> None:
    """Remove buildah's storage ($EDGEAI_CACHE/containers), keeping the cached images: the next
    build loads the base back from the cache. containers/storage bind-mounts its overlay
    directory onto itself, so that mount goes first or nothing under it can be removed."""
    root = plane.CACHE / "containers"
    if not root.exists():
        return
    for args in (["rm", "--all"], ["rmi", "--all", "--force"]):
        subprocess.run(["buildah", *_storage(), *args], capture_output=True)
    overlay = str(root / "storage" / "overlay")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == overlay:
            subprocess.run(["umount", overlay], check=True)
    shutil.rmtree(root)
    log(f"removed {root}")


# --------------------------------------------------------------------------- CLI


def status() -> int:
    base_key = _base_key()
    rootfs = _cache() / f"rootfs-{SUITE}-{_rootfs_key()}.tar"
    print(f"rootfs\t{'cached' if rootfs.exists() else 'missing'}\t{rootfs}")
    base = _image_at("base", "edgeai/python-base", f"3.11-{SUITE}-{base_key}", _cache() / f"python-base-{base_key}")
    if base is None:
        print("base\tmissing (images need it first)")
        return 1
    print(f"base\tcached\t{base.image_id[:19]}\t{base.size() / 2**20:.0f} MiB\t{base.path}")
    deps = _deps_at(base)
    if deps is None:
        print("deps\tmissing (images need it first)")
        return 1
    print(f"deps\tcached\t{deps.image_id[:19]}\t{deps.size() / 2**20:.0f} MiB\t{deps.path}")
    base = deps
    ok = True
    for spec in (*SPECS, *FAMILY_SPECS.values()):
        tag, path, _, _ = _plan(spec, base)
        img = _image_at(spec.key, spec.repo, tag, path)
        if img is None:
            if spec in SPECS:  # a family runtime is built on request only: not missing
                ok = False
            print(f"{spec.key}\tto build{'' if spec in SPECS else ' (--family)'}\t{spec.repo}:{tag}")
        else:
            print(f"{spec.key}\tcached\t{img.repo}:{img.tag}\t{img.size() / 2**20:.0f} MiB\t{img.path}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/images.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build what changed; print each image's cache ref and tag")
    p = sub.add_parser("push", help="build, then copy both images into REGISTRY over plain HTTP")
    p.add_argument("registry", help="host:port of a distribution registry, e.g. 127.0.0.1:5000")
    for q in (b, p):
        q.add_argument("--family", action="append", default=[], choices=sorted(FAMILY_SPECS),
                       help="also the runtime image of this onnxruntime provider family (repeat it)")
    sub.add_parser("status", help="what is cached and what would be rebuilt")
    sub.add_parser("clean-storage", help="remove buildah's storage (the image cache stays)")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        imgs = build_all(a.family)
        for img in imgs.all():
            print(f"{img.name}\t{img.repo}:{img.tag}\t{img.ref}")
    elif a.cmd == "push":
        for name, ref in push(build_all(a.family), a.registry).items():
            print(f"{name}\t{ref}")
    elif a.cmd == "status":
        return status()
    elif a.cmd == "clean-storage":
        clean_storage()
    return 0


if __name__ == "__main__":
    sys.exit(main())
