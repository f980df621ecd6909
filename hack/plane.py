#!/usr/bin/env python3
"""A real, local Kubernetes control plane with a simulated KubeEdge edge fleet.

    python hack/plane.py build            # build the pinned binaries once (cached by version)
    python hack/plane.py up [--nodes 3] [--real-edge 1]
                                          # etcd, kube-apiserver, controller-manager, scheduler, kwok;
                                          # with --real-edge: registry, cloudcore, N KubeEdge nodes
    python hack/plane.py partition real-edge-0 --cut|--restore   # a real node's link to the cloud
    python hack/plane.py reboot real-edge-0                      # power-cycle a real node
    python hack/plane.py status
    python hack/plane.py env              # prints the KUBECONFIG export (and PATH for kubectl/helm)
    python hack/plane.py down

Everything binds to 127.0.0.1. Binaries are built from their Go modules (pins in
hack/gomod/*/go.mod) into $EDGEAI_CACHE/bin/<family>-<version>-<hash>/, outside
the checkout, and never rebuilt while cached. Each plane lives in
$EDGEAI_CACHE/planes/<name>/ (certificates, data, logs, kubeconfig, state.json).

The simulated fleet is Node objects managed by kwok (simulated kubelets): they carry
KubeEdge's labels and taint, so Pods scheduled there become Running without a
container runtime. The real fleet (`--real-edge N`, hack/edgenodes.py) is KubeEdge
cloudcore + edgecore with containerd, each node in network and mount namespaces of
its own, pulling images built from docker/ (hack/images.py) from a local registry.
No Docker engine is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("EDGEAI_CACHE", Path.home() / ".cache" / "edgeai"))
K8S_VERSION = "v1.34.4"

# The label, annotation and taint of a KubeEdge edge node (keadm labels nodes with
# node-role.kubernetes.io/edge and .../agent; edge nodes are tainted so ordinary
# cloud workloads stay off them).
EDGE_LABELS = {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": ""}
EDGE_TAINT = {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}
# kwok manages (heartbeats, runs the Pods of) exactly the nodes carrying this label. A label,
# not an annotation: kwok filters annotation selectors client-side and keeps heartbeating a
# node whose annotation was removed, while a label selector is applied by its watch, so taking
# the label away really silences the node (an edge site losing its uplink).
KWOK_LABEL = ("kwok.x-k8s.io/node", "fake")
# The pod lifecycle kwok plays on those nodes, simulated faults and recovery included.
KWOK_STAGES = HACK / "kwok-stages.yaml"

# Hardware profiles the simulated fleet cycles through: a mixed fleet, as real ones are.
PROFILES: list[dict[str, str]] = [
    {"arch": "amd64", "accelerator": "none", "site": "site-a", "zone": "zone-1", "cpu": "4", "memory": "8Gi"},
    {"arch": "arm64", "accelerator": "npu", "site": "site-a", "zone": "zone-1", "cpu": "4", "memory": "4Gi"},
    {"arch": "amd64", "accelerator": "gpu", "site": "site-b", "zone": "zone-2", "cpu": "8", "memory": "16Gi"},
]


def log(msg: str) -> None:
    print(f"[plane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class Family:
    name: str
    version: str
    packages: tuple[str, ...]
    # output name for single-package builds whose import path ends in a major-version suffix
    output: str | None = None
    ldflags: tuple[str, ...] = ()
    # edgecore keeps its local store in SQLite (cgo); everything else links statically.
    cgo: bool = False
    env: tuple[tuple[str, str], ...] = ()

    @property
    def moddir(self) -> Path:
        return HACK / "gomod" / self.name

    def key(self) -> str:
        h = hashlib.sha256()
        for f in ("go.mod", "go.sum"):
            h.update((self.moddir / f).read_bytes())
        h.update(" ".join(self.ldflags).encode())
        if self.cgo or self.env:  # only then: the keys of the other families stay as they were
            h.update(f"cgo={self.cgo} {self.env}".encode())
        return f"{self.name}-{self.version}-{h.hexdigest()[:10]}"

    def bindir(self) -> Path:
        return CACHE / "bin" / self.key()

    def binaries(self) -> list[str]:
        if self.output:
            return [self.output]
        return [p.rsplit("/", 1)[1] for p in self.packages]


def _k8s_ldflags(version: str) -> tuple[str, ...]:
    # Without these the server says v0.0.0-master, which kwok and helm treat as unknown.
    major, minor = version.lstrip("v").split(".")[:2]
    out: list[str] = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        out += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=2026-01-01T00:00:00Z",
        ]
    return tuple(out)


KUBEEDGE_VERSION = "v1.20.0"


def _kubeedge_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "github.com/kubeedge/kubeedge/pkg/version"
    return ("-s", "-w", f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.gitCommit=release-{version}", f"-X {pkg}.buildDate=2026-01-01T00:00:00Z")


FAMILIES = [
    Family("etcd", "v3.6.4", ("go.etcd.io/etcd/server/v3",), output="etcd", ldflags=("-s", "-w")),
    Family("kwok", "v0.7.0", ("sigs.k8s.io/kwok/cmd/kwok",),
           ldflags=("-s", "-w", "-X sigs.k8s.io/kwok/pkg/consts.Version=v0.7.0")),
    Family("helm", "v3.19.0", ("helm.sh/helm/v3/cmd/helm",),
           ldflags=("-s", "-w", "-X helm.sh/helm/v3/internal/version.version=v3.19.0")),
    Family(
        "kube",
        K8S_VERSION,
        tuple(f"k8s.io/kubernetes/cmd/{c}" for c in
              ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")),
        ldflags=_k8s_ldflags(K8S_VERSION),
    ),
    # KubeEdge's cloudcore and edgecore: the real edge nodes (`up --real-edge N`). The
    # checksum database has no entries for KubeEdge's Kubernetes fork, hence GONOSUMDB.
    Family(
        "kubeedge",
        KUBEEDGE_VERSION,
        ("github.com/kubeedge/kubeedge/cloud/cmd/cloudcore", "github.com/kubeedge/kubeedge/edge/cmd/edgecore"),
        ldflags=_kubeedge_ldflags(KUBEEDGE_VERSION),
        cgo=True,
        env=(("GONOSUMDB", "github.com/kubeedge"),),
    ),
]


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_family(fam: Family) -> None:
    out = fam.bindir()
    tmp = Path(tempfile.mkdtemp(prefix=f".{fam.key()}.", dir=out.parent))
    env = dict(os.environ, CGO_ENABLED="1" if fam.cgo else "0", GOFLAGS="-mod=mod", **dict(fam.env))
    cmd = ["go", "build", "-v", "-trimpath", "-ldflags", " ".join(fam.ldflags)]
    cmd += ["-o", str(tmp / fam.output) if fam.output else str(tmp) + "/", *fam.packages]
    log(f"building {fam.name} {fam.version} ({', '.join(fam.binaries())}) into {out}")
    logf = CACHE / "bin" / f"{fam.key()}.build.log"
    start = time.monotonic()
    with open(logf, "w") as lf:
        proc = subprocess.Popen(cmd, cwd=fam.moddir, env=env, stdout=lf, stderr=subprocess.STDOUT)
        last = 0.0
        while proc.poll() is None:
            time.sleep(1)
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                n = len(logf.read_text(errors="replace").splitlines())
                log(f"  {fam.name}: {n} packages compiled, {time.monotonic() - start:.0f}s elapsed")
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join(logf.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"build of {fam.name} failed ({' '.join(cmd)}), see {logf}:\n{tail}")
    os.replace(tmp, out)  # atomic: a half-built family is never mistaken for a cached one
    log(f"built {fam.name} in {time.monotonic() - start:.0f}s")


def build(families: Sequence[Family] = FAMILIES) -> dict[str, Path]:
    """Build every family not yet cached; return binary name -> path."""
    if shutil.which("go") is None:
        raise SystemExit("go is not on PATH: the control plane is built from Go modules (Go >= 1.24)")
    (CACHE / "bin").mkdir(parents=True, exist_ok=True)
    with _flock(CACHE / "bin" / ".build.lock"):
        for fam in families:
            if all((fam.bindir() / b).exists() for b in fam.binaries()):
                continue
            _build_family(fam)
    return binaries(families)


def binaries(families: Sequence[Family] = FAMILIES) -> dict[str, Path]:
    return {b: fam.bindir() / b for fam in families for b in fam.binaries()}


def binaries_built() -> bool:
    return all(p.exists() for p in binaries().values())


# --------------------------------------------------------------------------- certificates


def _pki(d: Path) -> None:
    """CA, serving and client certificates, and the service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def key_pem(k: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("edgeai-local-ca")).issuer_name(name("edgeai-local-ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(key_pem(ca_key))

    def issue(stem: str, cn: str, org: str | None, server: bool) -> None:
        k = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            ]), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(key_pem(k))

    issue("apiserver", "kube-apiserver", None, server=True)
    issue("admin", "edgeai-admin", "system:masters", server=False)
    issue("controller-manager", "system:kube-controller-manager", None, server=False)
    issue("scheduler", "system:kube-scheduler", None, server=False)
    issue("kwok", "system:kwok-controller", "system:masters", server=False)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(key_pem(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "edgeai-local",
        "clusters": [{"name": "edgeai-local", "cluster": {
            "server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "edgeai-local", "context": {"cluster": "edgeai-local", "user": user}}],
    }
    path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML: no yaml dependency needed here


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_start_time(pid: int) -> str | None:
    """Start time in clock ticks: with the pid, identifies one process (pids get reused).

    A zombie counts as gone: it has exited, and whether its parent has reaped it yet
    (an exited `up` leaves its components to init) is not ours to wait for.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group `pgid`."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


@dataclass
class Component:
    name: str
    pid: int
    start_time: str
    cmd: list[str]

    def alive(self) -> bool:
        return _proc_start_time(self.pid) == self.start_time


@dataclass
class Plane:
    name: str
    dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir = CACHE / "planes" / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return None

    def components(self) -> list[Component]:
        st = self.state() or {}
        return [Component(**c) for c in st.get("components", [])]

    def healthy(self) -> bool:
        st = self.state()
        if not st:
            return False
        comps = self.components()
        return bool(comps) and all(c.alive() for c in comps) and _apiserver_ready(self.dir / "pki", st["server"])


def _apiserver_ready(pki: Path, server: str, timeout: float = 2.0) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _start(plane: Plane, name: str, cmd: list[str]) -> Component:
    logs = plane.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # A new session per component: `down` can signal its whole process group, and the
    # component outlives the `up` command that started it.
    with open(logs / f"{name}.log", "ab") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=plane.dir)
    for _ in range(50):
        st = _proc_start_time(p.pid)
        if st:
            return Component(name, p.pid, st, cmd)
        time.sleep(0.01)
    raise SystemExit(f"{name} exited at once; see {logs / f'{name}.log'}")


def _save(plane: Plane, server: str, comps: list[Component], extra: dict[str, Any]) -> None:
    st = {"server": server, "components": [c.__dict__ for c in comps], **extra}
    tmp = plane.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    os.replace(tmp, plane.state_file)


def _wait(what: str, pred: Any, timeout: float, comps: list[Component], plane: Plane, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        for c in comps:
            if not c.alive():
                tail = (plane.dir / "logs" / f"{c.name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{c.name} died while waiting for {what}; log tail:\n{tail}")
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}; logs in {plane.dir / 'logs'}")


# Simulated nodes created but not yet Ready that a large fleet's creation lets kwok fall behind by.
NODE_BACKLOG = 1000


def heartbeats(nodes: int) -> tuple[int, int]:
    """(kwok's node lease duration, the node-lifecycle controller's grace period), seconds, for a fleet.

    kwok renews each node's lease every duration / 4: at 20 s, 1,000 nodes make 200 lease writes a
    second, about what 2 cores carry beside everything else. A larger fleet gets a longer lease so
    that the rate stays there (10,000 nodes: 200 s, renewed every 50 s), and a grace of at least
    four renewals, so that a renewal a few seconds late on a busy machine never marks a node NotReady.
    Small planes keep offline detection quick (15 s), so tests of offline devices do not sleep."""
    lease = max(20, -(-20 * nodes // 1000))
    if nodes <= 100:
        return lease, 15
    return lease, max(40, lease)


def kwok_tuning(nodes: int) -> tuple[str, list[str]]:
    """What kwok needs beyond its defaults for a fleet of `nodes`: a KwokConfiguration document to
    append to its config, and extra flags. Up to 1,000 nodes, nothing (the defaults carried them).

    Past that, kwok's defaults are what stalled a 10,000-node plane on this machine: 4 leases renewed
    at a time (each a round trip to a busy API server), so leases expired faster than kwok renewed
    them and Ready nodes went back to NotReady while new ones were still coming; and an INFO line per
    lease renewal (40,000 lines in 15 minutes) on the same 2 cores. More parallel renewals and stage
    plays, and warnings only."""
    if nodes <= 1000:
        return "", []
    par = max(4, min(32, nodes // 250))
    doc = ("---\napiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n"
           f"  nodeLeaseParallelism: {par}\n  nodePlayStageParallelism: {par}\n  podPlayStageParallelism: {par}\n")
    return doc + KWOK_NODE_STAGES, ["--v=WARN"]


# kwok v0.7.0 picks its default node heartbeat the wrong way round (`getDefaultNodeStages(lease ==
# 0)`): with node leases on, as here, it also patches every node's status every 20-45 s, as a
# kubelet without leases would. At 10,000 nodes that is ~300 status patches a second on top of the
# lease renewals: the API server saturated, kwok's stage queue grew past 1 GiB, and the last 1,000
# nodes created never got their first status (NodeStatusNeverUpdated for 12 minutes while their
# leases were renewed). Past 1,000 nodes the plane gives kwok its node stages itself: the first
# status at once, then one every 5-10 minutes, as a kubelet reports status when leases carry its
# liveness (nodeStatusReportFrequency, 5 min). Configuring any node Stage replaces kwok's defaults.
_NODE_STATUS = """
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - {type: {{ .type | Quote }}, status: {{ .status | Quote }}, reason: {{ .reason | Quote }},
         message: {{ .message | Quote }}, lastHeartbeatTime: {{ $now | Quote }},
         lastTransitionTime: {{ or $.metadata.creationTimestamp $now | Quote }}}
      {{ end }}
      addresses:
      {{ with .status.addresses }}{{ YAML . 1 }}{{ else }}
      {{ with NodeIP }}
      - {type: InternalIP, address: {{ . | Quote }}}
      {{ end }}
      {{ with NodeName }}
      - {type: Hostname, address: {{ . | Quote }}}
      {{ end }}
      {{ end }}
      {{ with NodePort }}
      daemonEndpoints: {kubeletEndpoint: {Port: {{ . }}}}
      {{ end }}
      phase: Running
"""
KWOK_NODE_STAGES = ("""---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: edgeai-node-initialize}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
      - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: NotIn, values: ["True"]}
  next:""" + _NODE_STATUS + """---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: edgeai-node-status-report}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
      - {key: '.status.phase', operator: In, values: [Running]}
      - {key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: In, values: ["True"]}
  delay: {durationMilliseconds: 300000, jitterDurationMilliseconds: 600000}
  next:""" + _NODE_STATUS)


def up(name: str = "default", nodes: int = 3, real_edge: int = 0) -> Plane:
    plane = Plane(name)
    with _flock(CACHE / "planes" / f".{name}.lock"):
        if plane.healthy():
            have = len((plane.state() or {}).get("real_edge", {}).get("nodes", []))
            if have >= real_edge:
                log(f"plane {name!r} is already up ({plane.kubeconfig})")
                return plane
            log(f"plane {name!r} is up with {have} real edge node(s), {real_edge} asked: starting afresh")
            _down(plane)
        if plane.state():
            log(f"plane {name!r} is partly down; stopping what is left and starting afresh")
            _down(plane)
        bins = build()
        t0 = time.monotonic()
        shutil.rmtree(plane.dir, ignore_errors=True)
        pki = plane.dir / "pki"
        _pki(pki)
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        server = f"https://127.0.0.1:{api_port}"
        _kubeconfig(plane.kubeconfig, server, pki, "admin")
        for user in ("controller-manager", "scheduler", "kwok"):
            _kubeconfig(plane.dir / f"{user}.kubeconfig", server, pki, user)
        comps: list[Component] = []
        try:
            comps.append(_start(plane, "etcd", [
                str(bins["etcd"]), "--name=edgeai", f"--data-dir={plane.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=edgeai=http://127.0.0.1:{peer_port}",
                # a throwaway test plane: durability is not worth the fsync latency
                "--unsafe-no-fsync", "--quota-backend-bytes=8589934592", "--log-level=warn",
            ]))
            _save(plane, server, comps, {"nodes": nodes})
            comps.append(_start(plane, "kube-apiserver", [
                str(bins["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
                "--allow-privileged=true", "--enable-garbage-collector=true",
                # fleets of 1,000 simulated nodes and their Pods: let the benchmarks through
                "--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
                "--profiling=false", "--v=1",
            ]))
            _save(plane, server, comps, {"nodes": nodes})
            _wait("kube-apiserver /readyz", lambda: _apiserver_ready(pki, server), 90, comps, plane)
            comps.append(_start(plane, "kube-controller-manager", [
                str(bins["kube-controller-manager"]), f"--kubeconfig={plane.dir / 'controller-manager.kubeconfig'}",
                f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--use-service-account-credentials=true", "--leader-elect=false", "--secure-port=0",
                "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
                # An edge node that stops its heartbeat is seen offline in ~15s, not 50s:
                # tests of offline devices should not sleep. A large fleet gets Kubernetes'
                # own 40 s or more (heartbeats(): at 15 s, a 1,000-node plane flapped and
                # never became Ready on a busy machine).
                "--node-monitor-period=2s", f"--node-monitor-grace-period={heartbeats(nodes)[1]}s",
                "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20", "--concurrent-gc-syncs=40", "--v=1",
            ]))
            comps.append(_start(plane, "kube-scheduler", [
                str(bins["kube-scheduler"]), f"--kubeconfig={plane.dir / 'scheduler.kubeconfig'}",
                "--leader-elect=false", "--secure-port=0", "--kube-api-qps=200", "--kube-api-burst=400", "--v=1",
            ]))
            # A copy in the run directory: the plane keeps the stages it started with, and its
            # directory shows them, whatever later happens to hack/kwok-stages.yaml.
            kwok_config = plane.dir / "kwok.yaml"
            shutil.copyfile(KWOK_STAGES, kwok_config)
            tuning, kwok_flags = kwok_tuning(nodes)
            if tuning:
                with open(kwok_config, "a") as f:
                    f.write(tuning)
            comps.append(_start(plane, "kwok", [
                str(bins["kwok"]), f"--kubeconfig={plane.dir / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_LABEL[0]}={KWOK_LABEL[1]}",
                # These replace kwok's default pod stages (it loads them only when given none).
                f"--config={kwok_config}",
                "--node-ip=10.0.0.1", "--cidr=10.0.0.1/16", f"--node-lease-duration-seconds={heartbeats(nodes)[0]}",
                f"--server-address=127.0.0.1:{_free_port()}", *kwok_flags,
            ]))
            _save(plane, server, comps, {"nodes": nodes})
            kc = Kube(plane.kubeconfig, bins["kubectl"])
            _wait("the default ServiceAccount", lambda: kc.ok("get", "serviceaccount", "default", "-n", "default"),
                  60, comps, plane)
            names = [f"edge-{i}" for i in range(nodes)]
            kc.create_edge_nodes(names)
            # kwok brings up a few hundred nodes a minute on 2 busy cores: give large fleets the time.
            # Polled gently: each look lists every Node, and a tight loop of full lists at 1,000
            # nodes starved kwok's heartbeats on the same cores.
            _wait(f"{nodes} edge nodes Ready", lambda: kc.ready_nodes(names) == len(names), max(120, nodes * 0.6),
                  comps, plane, every=max(0.2, nodes / 500))
            extra: dict[str, Any] = {"nodes": nodes}
            if real_edge:
                import edgenodes

                edgenodes.up(plane, server, comps, extra, kc, bins, real_edge)
        except BaseException:
            st = plane.state() or {}
            _save(plane, server, comps, {k: v for k, v in st.items() if k not in ("server", "components")})
            _down(plane)
            raise
        log(f"plane {name!r} up in {time.monotonic() - t0:.1f}s: {server}, {nodes} simulated and "
            f"{real_edge} real edge nodes; export KUBECONFIG={plane.kubeconfig}")
        return plane


def _down(plane: Plane) -> list[str]:
    stopped = []
    comps = plane.components()
    if (plane.state() or {}).get("real_edge"):
        import edgenodes

        # The real nodes first: their containers and shims are no component's children.
        edgenodes.teardown(plane)
    for c in reversed(comps):  # kwok and controllers first, etcd last
        if c.alive():
            with suppress(ProcessLookupError):
                os.killpg(c.pid, signal.SIGTERM)
            stopped.append(c.name)
    deadline = time.monotonic() + 15
    for c in comps:
        while c.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if c.alive():
            with suppress(ProcessLookupError):
                os.killpg(c.pid, signal.SIGKILL)
    # Children of a crashed component keep its process group: sweep each group we made.
    for c in comps:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(c.pid, signal.SIGKILL)
    # SIGKILL is delivered, not done: a big multi-threaded process (the API server) takes a
    # while to exit on a busy machine. `down` returns only once nothing it stopped still runs,
    # so a following `up` never meets the old ports or files in use.
    deadline = time.monotonic() + 60
    for c in comps:
        while (c.alive() or _group_alive(c.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if c.alive() or _group_alive(c.pid):
            raise SystemExit(f"{c.name} (pid {c.pid}) or its process group survived SIGKILL for 60 s")
    plane.state_file.unlink(missing_ok=True)
    return stopped


def down(name: str = "default") -> None:
    plane = Plane(name)
    with _flock(CACHE / "planes" / f".{name}.lock"):
        if not plane.state():
            log(f"plane {name!r} is not running")
            return
        stopped = _down(plane)
        log(f"plane {name!r} stopped: {', '.join(stopped) or 'nothing was still running'}")


# --------------------------------------------------------------------------- fleet


class Kube:
    """kubectl against one plane: what the tests and the demo need of the fleet."""

    def __init__(self, kubeconfig: Path | str, kubectl: Path | str | None = None) -> None:
        self.kubeconfig = str(kubeconfig)
        self.kubectl_bin = str(kubectl or binaries()["kubectl"])

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=self.kubeconfig)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.kubectl_bin, *args], input=input, capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def ok(self, *args: str) -> bool:
        return self.kubectl(*args, check=False).returncode == 0

    def apply(self, objs: Sequence[dict[str, Any]], attempts: int = 1) -> None:
        """Server-side apply; with `attempts` > 1 a slow or failed apply is tried again (applying the same
        objects twice is harmless), each try with a longer deadline."""
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
        for attempt in range(1, attempts + 1):
            try:
                self.kubectl("apply", "--server-side", "--field-manager=edgeai-plane", "-f", "-", input=doc,
                             timeout=120 * attempt)
                return
            except (subprocess.TimeoutExpired, RuntimeError) as e:
                if attempt == attempts:
                    raise
                log(f"apply of {len(objs)} objects: {str(e)[:200]}; trying again ({attempt}/{attempts})")

    def create_edge_nodes(self, names: Sequence[str], labels: dict[str, str] | None = None,
                          allocatable: dict[str, str] | None = None) -> None:
        objs = []
        for i, n in enumerate(names):
            idx = int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[-1].isdigit() else i
            objs.append(edge_node(n, PROFILES[idx % len(PROFILES)], labels, allocatable))
        large = len(objs) > NODE_BACKLOG
        for chunk in range(0, len(objs), 200):
            self.apply(objs[chunk:chunk + 200], attempts=3 if large else 1)
            created = chunk + 200
            if large and created % NODE_BACKLOG == 0 and created < len(objs):
                self._wait_backlog(names[:created])

    def _wait_backlog(self, created: Sequence[str], timeout: float = 900) -> None:
        """Create no faster than kwok brings nodes up: wait until at most NODE_BACKLOG of `created` are
        not Ready yet. A 10,000-node plane created at full speed left kwok minutes behind, and the API
        server, busy with both, timed out a 200-node apply."""
        deadline = time.monotonic() + timeout
        while True:
            behind = len(created) - self.ready_nodes(created)
            if behind <= NODE_BACKLOG:
                return
            if time.monotonic() > deadline:
                log(f"{behind} of {len(created)} nodes still not Ready after {timeout:.0f}s; creating more anyway")
                return
            time.sleep(10)

    def ready_nodes(self, names: Sequence[str]) -> int:
        # The server's table (NAME STATUS ...), not every Node as JSON: at 1,000 nodes that is a
        # few hundred KiB instead of megabytes, per look.
        p = self.kubectl("get", "nodes", "--no-headers", check=False)
        if p.returncode != 0:
            return 0
        want = set(names)
        n = 0
        for line in p.stdout.splitlines():
            cols = line.split()
            if len(cols) >= 2 and cols[0] in want and "Ready" in cols[1].split(",") and "NotReady" not in cols[1]:
                n += 1
        return n

    def set_node_online(self, name: str, online: bool) -> None:
        """Offline: kwok stops the node's heartbeats, as when an edge site loses its uplink."""
        key, val = KWOK_LABEL
        if online:
            self.kubectl("label", "node", name, f"{key}={val}", "--overwrite")
        else:
            self.kubectl("label", "node", name, f"{key}-")

    def delete_node(self, name: str) -> None:
        self.kubectl("delete", "node", name, "--wait=true")


def edge_node(name: str, profile: dict[str, str], labels: dict[str, str] | None = None,
              allocatable: dict[str, str] | None = None) -> dict[str, Any]:
    res = {"cpu": profile["cpu"], "memory": profile["memory"], "pods": "110", **(allocatable or {})}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                **EDGE_LABELS, KWOK_LABEL[0]: KWOK_LABEL[1],
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": profile["arch"], "beta.kubernetes.io/arch": profile["arch"],
                "edgeai.io/accelerator": profile["accelerator"], "edgeai.io/site": profile["site"],
                "topology.kubernetes.io/zone": profile["zone"], "type": "kwok",
                **(labels or {}),
            },
        },
        "spec": {"taints": [EDGE_TAINT]},
        "status": {"allocatable": res, "capacity": res,
                   "nodeInfo": {"architecture": profile["arch"], "operatingSystem": "linux",
                                "kubeletVersion": "v1.34.4-kubeedge", "containerRuntimeVersion": "kwok",
                                "kubeProxyVersion": "", "machineID": name, "systemUUID": name, "bootID": name,
                                "kernelVersion": "simulated", "osImage": "kwok simulated edge node"}},
    }


# --------------------------------------------------------------------------- CLI


def status(name: str) -> int:
    plane = Plane(name)
    st = plane.state()
    if not st:
        print(f"plane {name!r}: down")
        return 1
    ready = _apiserver_ready(plane.dir / "pki", st["server"])
    print(f"plane {name!r}: {'up' if ready and all(c.alive() for c in plane.components()) else 'DEGRADED'}"
          f"  server={st['server']}  kubeconfig={plane.kubeconfig}")
    for c in plane.components():
        print(f"  {c.name:<24} pid={c.pid:<8} {'running' if c.alive() else 'NOT RUNNING'}")
    re = st.get("real_edge")
    if re:
        import edgenodes

        edge = edgenodes.real_edge_of(plane)
        assert edge
        print(f"  real edge: registry {re['registry']}, cloud bridge {edge.net.bridge} {edge.net.cloud_ip}")
        for i, node in enumerate(edge.nodes):
            link = "up" if edgenodes.link_is_up(edge.net, i) else "CUT"
            print(f"    {node:<22} ip={edge.net.node_ip(i):<15} pods={edge.net.pod_cidr(i):<17} link={link}")
    if ready:
        print(Kube(plane.kubeconfig).kubectl("get", "nodes", "-o", "wide", "-L",
                                             "kubernetes.io/arch,edgeai.io/accelerator,edgeai.io/site").stdout)
    return 0 if ready else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/plane.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=os.environ.get("EDGEAI_PLANE", "default"),
                    help="which plane (each has its own ports and directory)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the pinned binaries (cached)")
    u = sub.add_parser("up", help="start the plane and its edge fleet (no-op if already up)")
    u.add_argument("--nodes", type=int, default=3, help="simulated edge nodes (default 3)")
    u.add_argument("--real-edge", type=int, default=0, metavar="N",
                   help="real KubeEdge edge nodes (containerd, own network namespace) next to the simulated ones")
    pa = sub.add_parser("partition", help="cut or restore a real edge node's link to the cloud")
    pa.add_argument("node")
    g = pa.add_mutually_exclusive_group(required=True)
    g.add_argument("--cut", action="store_true")
    g.add_argument("--restore", action="store_true")
    rb = sub.add_parser("reboot", help="power-cycle a real edge node (every container gone, link left as is)")
    rb.add_argument("node")
    sub.add_parser("down", help="stop everything this plane started")
    sub.add_parser("status", help="components, health and nodes")
    sub.add_parser("env", help="print the shell exports for this plane")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        for b, p in build().items():
            print(f"{b}\t{p}")
        import edgenodes

        if edgenodes.wanted():  # EDGEAI_REAL_EDGE=0: a kwok-only machine
            edgenodes.build()
    elif a.cmd == "up":
        if a.nodes < 0 or a.real_edge < 0:
            ap.error("--nodes and --real-edge must be >= 0")
        up(a.name, a.nodes, a.real_edge)
    elif a.cmd in ("partition", "reboot"):
        import edgenodes

        if a.cmd == "partition":
            edgenodes.partition(Plane(a.name), a.node, cut=a.cut)
        else:
            edgenodes.reboot(Plane(a.name), a.node)
    elif a.cmd == "down":
        down(a.name)
    elif a.cmd == "status":
        return status(a.name)
    elif a.cmd == "env":
        plane = Plane(a.name)
        paths = sorted({str(p.parent) for p in binaries().values()})
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print(f"export PATH={':'.join(paths)}:$PATH")
    return 0


if __name__ == "__main__":
    sys.modules.setdefault("plane", sys.modules["__main__"])  # hack/edgenodes.py imports us as `plane`
    sys.exit(main())
