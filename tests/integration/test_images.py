"""The images users build are the ones tested: docker/*.Dockerfile built with buildah (hack/images.py)
on the project's own Debian base, then run with runc as a kubelet would run them (the image's user,
read-only root filesystem, a tmpfs /tmp).

The first run builds everything (a debootstrap and two pip installs: many minutes); later runs
take the images from $EDGEAI_CACHE/images unless their inputs changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

import images  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

ENTRYPOINTS = {"operator": "edgeai-operator", "runtime": "edge-runtime"}
TITLES = {"operator": "edgeai-operator", "runtime": "edge-runtime"}


@pytest.fixture(scope="module")
def built() -> images.Images:
    if os.geteuid() != 0:
        pytest.skip("building and running images needs root (debootstrap, buildah, runc)")
    if shutil.which("apt-get") is None:
        pytest.skip("the images' base is made from Debian packages: needs a Debian host")
    return images.build_all()


def test_a_second_build_takes_both_images_from_the_cache(built: images.Images) -> None:
    tags = {name: getattr(built, name).tag for name in ENTRYPOINTS}
    if images.planned_tags(built.base) != tags:
        pytest.skip("the sources changed since the images were built (edited during the test run)")
    again = images.build_all()
    if again != built and images.planned_tags(built.base) != tags:
        pytest.skip("the sources changed during the second build")
    assert again == built
    for img in again.all():
        assert img.tag.startswith(images._version() + "-")
        assert img.image_id.startswith("sha256:")


@pytest.mark.parametrize("name", sorted(ENTRYPOINTS))
def test_image_config(built: images.Images, name: str) -> None:
    cfg = getattr(built, name).config()
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == [ENTRYPOINTS[name]]
    assert cfg["WorkingDir"] == "/tmp"
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == TITLES[name]
    assert labels["org.opencontainers.image.version"] == images._version()
    # kept because the images are built and stored in Docker's format (OCI configs have no healthcheck)
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert "PYTHONDONTWRITEBYTECODE=1" in cfg["Env"]


@pytest.mark.parametrize("name", sorted(ENTRYPOINTS))
def test_entrypoint_runs_as_65532_on_a_read_only_root(built: images.Images, name: str) -> None:
    img = getattr(built, name)
    p = images.run(img, ["--help"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "usage" in p.stdout.lower()


@pytest.mark.parametrize("name", sorted(ENTRYPOINTS))
def test_packages_import_and_only_tmp_is_writable(built: images.Images, name: str) -> None:
    probe = (
        "import errno, os, shutil, onnxruntime, edge_operator, edge_runtime\n"
        "print('uid', os.getuid(), os.getgid())\n"
        "print('ort', onnxruntime.__version__)\n"
        "print('scripts', shutil.which('edge-runtime'), shutil.which('edgeai-operator'))\n"
        "open('/tmp/ok', 'w').write('x')\n"
        "root = [ln.split() for ln in open('/proc/self/mountinfo') if ln.split()[4] == '/'][-1]\n"
        "print('root', root[5].split(',')[0])\n"
    )
    p = images.run(getattr(built, name), ["-c", probe], entrypoint=["python"])
    assert p.returncode == 0, p.stdout + p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert out["uid"] == "65532 65532"
    assert out["ort"][0].isdigit()
    assert out["scripts"] == "/usr/local/bin/edge-runtime /usr/local/bin/edgeai-operator"
    assert out["root"] == "ro"


def test_runtime_cache_dirs_are_65532s_and_need_a_volume(built: images.Images) -> None:
    # Owned by the runtime's user, yet not writable on a read-only root: a Pod must mount them.
    probe = (
        "import errno, os\n"
        "print(*(os.stat(d).st_uid for d in ('/var/lib/edgeai/models', '/var/lib/edgeai/fallback-queue')))\n"
        "try:\n    open('/var/lib/edgeai/models/x', 'w')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    p = images.run(built.runtime, ["-c", probe], entrypoint=["python"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["65532", "65532", "EROFS"]


def test_context_is_the_dockerignore_allow_list() -> None:
    files = images.context_files(ROOT / "docker" / "edge-runtime.Dockerfile")
    assert "pyproject.toml" in files and "README.md" in files
    assert "edge_runtime/cli.py" in files and "operator/edge_operator/__init__.py" in files
    assert not [f for f in files if f.startswith(("tests/", "hack/", "docker/", ".git"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_a_source_change_changes_the_key(built: images.Images) -> None:
    # Keys come from content: the same inputs give the same key, one changed byte a new one.
    spec = images.SPECS[1]
    files = images.context_files(ROOT / "docker" / spec.dockerfile)
    args = {"VERSION": images._version()}
    key = images._image_key(spec, built.base, files, args)
    assert images._image_key(spec, built.base, list(files), dict(args)) == key
    assert images._image_key(spec, built.base, files, {"VERSION": "9.9.9"}) != key
    assert images._image_key(spec, built.base, [f for f in files if f != "README.md"], args) != key


def test_skopeo_reads_the_cached_images(built: images.Images) -> None:
    for img in built.all():
        p = subprocess.run(["skopeo", "inspect", img.ref], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["Architecture"]
