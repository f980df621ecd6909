"""Real KubeEdge edge nodes for the local plane (`hack/plane.py up --real-edge N`).

Each real node is what `keadm join` makes of a machine, on this one machine:

- its own **network namespace** (`edgeai-<plane>-<node>`), linked to the "cloud" by a
  veth pair whose host end sits on a bridge the plane creates. cloudcore, the local
  registry and the tests' model servers listen on that bridge's address; the apiserver
  stays on 127.0.0.1. Cutting a node off is `ip link set <its veth> down`: a real
  network partition, its processes keep running and its pods keep serving inside it;
- its own **mount namespace** in which the paths a node owns (/var/lib/containerd,
  /run/containerd, /var/lib/kubelet, /var/log/pods, /var/lib/edgeai, /etc/cni, ...) are
  bind mounts of a directory of the plane's. Configs keep their stock paths, two nodes
  never share a model cache or a CNI cache, and nothing is written outside the
  plane's directory but empty mount points (removed by `down` if the plane made them);
- its own **containerd** (Debian's, with runc and the CNI bridge plugin), a CNI bridge
  and pod subnet routed from the cloud side, and **edgecore** joined to cloudcore with
  the cluster's token. No taint, only KubeEdge's own labels plus the ones a user
  passes to `keadm join --labels`.

Addresses: the cloud bridge is 10.213.<k>.1/24, node i is 10.213.<k>.(10+i) and its
pods are 10.(220+i).<k>.0/24, <k> chosen per plane so that two planes never clash.
The node namespaces have no default route, the host does not forward: nothing leaves
the machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import zlib
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plane as P
import yaml

# Node-owned paths that become private bind mounts inside each node's mount namespace.
NODE_PATHS = (
    "/etc/containerd", "/etc/cni", "/etc/kubeedge", "/var/lib/containerd", "/var/lib/kubelet",
    "/var/lib/edged", "/var/lib/kubeedge", "/var/lib/cni", "/var/lib/edgeai", "/var/log/pods",
    "/var/log/containers", "/run/containerd", "/opt/cni",
)
# What a reboot wipes (tmpfs on a real machine).
VOLATILE_PATHS = ("/run/containerd",)
CLOUDHUB_PORT = 10000
CLOUDHUB_HTTPS_PORT = 10002
REGISTRY_PORT = 5000
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "docker-registry", "iproute2",
                   "util-linux", "buildah", "skopeo", "debootstrap")

PAUSE_C = r"""
/* The pod sandbox's process: sleeps until told to stop, reaps orphans. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGTERM, stop); signal(SIGINT, stop); signal(SIGCHLD, reap);
    for (;;) pause();
}
"""


# --------------------------------------------------------------------------- addressing


@dataclass(frozen=True)
class EdgeNet:
    plane: str
    k: int  # third octet of the cloud net, unique per plane on this machine

    @property
    def tag(self) -> str:
        # Interface names are at most 15 bytes: a short stable tag per plane.
        return f"{zlib.crc32(self.plane.encode()) & 0xFFFF:04x}"

    @property
    def bridge(self) -> str:
        return f"eac{self.tag}"

    @property
    def cloud_ip(self) -> str:
        return f"10.213.{self.k}.1"

    @property
    def registry(self) -> str:
        return f"{self.cloud_ip}:{REGISTRY_PORT}"

    def node_ip(self, i: int) -> str:
        return f"10.213.{self.k}.{10 + i}"

    def pod_cidr(self, i: int) -> str:
        return f"10.{220 + i}.{self.k}.0/24"

    def veth(self, i: int) -> str:
        return f"eah{self.tag}n{i}"

    def netns(self, node: str) -> str:
        return f"edgeai-{self.plane}-{node}"[:48]

    def cgroup_root(self, node: str) -> str:
        return f"/edgeai-{self.plane}-{node}"


def node_name(i: int) -> str:
    return f"real-edge-{i}"


def _used_cloud_nets() -> set[int]:
    out = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("10.213."):
                with suppress(ValueError, IndexError):
                    used.add(int(word.split(".")[2]))
    return used


def choose_net(plane: str) -> EdgeNet:
    used = _used_cloud_nets()
    start = zlib.crc32(plane.encode()) % 200
    for off in range(200):
        k = 20 + (start + off) % 200
        if k not in used:
            return EdgeNet(plane, k)
    raise SystemExit("no free 10.213.x.0/24 network for the cloud bridge")


# --------------------------------------------------------------------------- host prerequisites


def containers_supported() -> str | None:
    """None if real containers can run here, else why not (for a clear message and a kwok-only fallback)."""
    if os.geteuid() != 0:
        return "real edge nodes need root (network and mount namespaces, containerd)"
    if shutil.which("apt-get") is None and any(shutil.which(b) is None for b in ("containerd", "runc")):
        return "containerd and runc are missing and there is no apt-get to install them"
    if not Path("/proc/self/ns/net").exists() or not Path("/sys/fs/cgroup").exists():
        return "this kernel has no network namespaces or cgroups"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip() or probe.returncode}"
    return None


def ensure_packages() -> None:
    import images

    images.ensure_packages(DEBIAN_PACKAGES)


def wanted() -> bool:
    return os.environ.get("EDGEAI_REAL_EDGE", "1").lower() not in ("0", "false", "no")


def build() -> None:
    """Everything real nodes need besides the Go binaries: Debian packages, the pause image, the images."""
    import images

    ensure_packages()
    why = containers_supported()
    if why:
        P.log(f"real edge nodes cannot run here ({why}): their images are not built")
        return
    build_pause()
    images.build_all()


def _run(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def _in_netns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("nsenter", f"--net=/run/netns/{ns}", "--", *cmd, check=check)


# --------------------------------------------------------------------------- network


def network_up(net: EdgeNet, nodes: Sequence[str]) -> None:
    if _run("ip", "link", "show", net.bridge, check=False).returncode != 0:
        _run("ip", "link", "add", net.bridge, "type", "bridge")
    _run("ip", "addr", "replace", f"{net.cloud_ip}/24", "dev", net.bridge)
    _run("ip", "link", "set", net.bridge, "up")
    for i, node in enumerate(nodes):
        ns = net.netns(node)
        if not Path(f"/run/netns/{ns}").exists():
            _run("ip", "netns", "add", ns)
        veth = net.veth(i)
        if _run("ip", "link", "show", veth, check=False).returncode != 0:
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", net.bridge, "up")
        _in_netns(ns, "ip", "link", "set", "lo", "up")
        _in_netns(ns, "ip", "addr", "replace", f"{net.node_ip(i)}/24", "dev", "eth0")
        _in_netns(ns, "ip", "link", "set", "eth0", "up")
        # The node routes its pods' traffic to the cloud net (and back): a router, per namespace.
        _in_netns(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # The cloud reaches the node's pods through the node, as a site's router would route them.
        _run("ip", "route", "replace", net.pod_cidr(i), "via", net.node_ip(i), "dev", net.bridge)


def network_down(net: EdgeNet, nodes: Sequence[str]) -> None:
    for i, node in enumerate(nodes):
        _run("ip", "route", "del", net.pod_cidr(i), check=False)
        _run("ip", "link", "del", net.veth(i), check=False)
        _run("ip", "netns", "del", net.netns(node), check=False)
    _run("ip", "link", "del", net.bridge, check=False)


def set_link(net: EdgeNet, i: int, up: bool) -> None:
    """Cut or restore node i's link to the cloud: a partition, not a killed process."""
    _run("ip", "link", "set", net.veth(i), "up" if up else "down")


def link_is_up(net: EdgeNet, i: int) -> bool:
    out = _run("ip", "-o", "link", "show", net.veth(i), check=False).stdout
    flags = out.partition("<")[2].partition(">")[0].split(",")
    return "UP" in flags  # administratively up: what `partition --cut` changes


# --------------------------------------------------------------------------- the node's filesystem


def node_dir(plane_dir: Path, node: str) -> Path:
    return plane_dir / "edge" / node


def hostfs(plane_dir: Path, node: str, path: str) -> Path:
    """Where node `node`'s private `path` (e.g. /var/lib/edgeai) lives on the host."""
    return node_dir(plane_dir, node) / "hostfs" / path.lstrip("/")


def ensure_mount_points() -> list[str]:
    """Create the node-owned paths on the host if missing (empty mount points); return those made."""
    made = []
    for p in NODE_PATHS:
        path = Path(p)
        missing = []
        while not path.exists():
            missing.append(str(path))
            path = path.parent
        if missing:
            Path(p).mkdir(parents=True, exist_ok=True)
            made.extend(missing)
    return made


def remove_mount_points(made: Sequence[str]) -> None:
    for p in sorted(made, key=len, reverse=True):
        with suppress(OSError):
            Path(p).rmdir()  # only if still empty: never someone else's files


def _bind_script(plane_dir: Path, node: str) -> str:
    lines = ["set -e", "mount --make-rslave /"]
    for p in NODE_PATHS:
        src = hostfs(plane_dir, node, p)
        lines.append(f"mount --bind {src} {p}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- configs


def containerd_config(net: EdgeNet, pause_image: str) -> str:
    # Stock paths (they are the node's own, through its mount namespace). The CRI settings are
    # what a node without CAP_SYS_RESOURCE and without systemd needs.
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj would fail every container.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"""


def cni_config(net: EdgeNet, i: int, node: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": f"edgeai-{node}",
        "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True,
            # No masquerade: the cloud routes the pod subnet back through the node (see network_up).
            "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": net.pod_cidr(i)}]],
                     "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    }


def registry_hosts_toml(registry: str) -> str:
    return (f'server = "http://{registry}"\n\n[host."http://{registry}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  skip_verify = true\n')


def cloudcore_config(default: dict[str, Any], net: EdgeNet, plane_dir: Path, kubeconfig: Path,
                     monitor_port: int) -> dict[str, Any]:
    cfg = json.loads(json.dumps(default))
    kd = plane_dir / "cloudcore"
    cfg["kubeAPIConfig"].update(kubeConfig=str(kubeconfig), master="")
    cfg["commonConfig"]["monitorServer"]["bindAddress"] = f"127.0.0.1:{monitor_port}"
    hub = cfg["modules"]["cloudHub"]
    hub["advertiseAddress"] = [net.cloud_ip]
    hub["dnsNames"] = []
    hub["websocket"].update({"enable": True, "address": net.cloud_ip, "port": CLOUDHUB_PORT})
    hub["https"].update({"enable": True, "address": net.cloud_ip, "port": CLOUDHUB_HTTPS_PORT})
    hub["quic"]["enable"] = False
    hub["unixsocket"].update({"enable": True, "address": f"unix://{kd / 'kubeedge.sock'}"})
    hub["tlsCAFile"] = str(kd / "ca" / "rootCA.crt")
    hub["tlsCAKeyFile"] = str(kd / "ca" / "rootCA.key")
    hub["tlsCertFile"] = str(kd / "certs" / "server.crt")
    hub["tlsPrivateKeyFile"] = str(kd / "certs" / "server.key")
    mods = cfg["modules"]
    # It edits the host's iptables by default; streams (logs/exec) and the router are off.
    for off in ("iptablesManager", "cloudStream", "router", "taskManager"):
        if off in mods:
            mods[off]["enable"] = False
    return cfg


def edgecore_config(default: dict[str, Any], net: EdgeNet, i: int, node: str, token: str,
                    pause_image: str, labels: dict[str, str], taint: bool) -> dict[str, Any]:
    cfg = json.loads(json.dumps(default))
    mods = cfg["modules"]
    hub = mods["edgeHub"]
    hub["token"] = token
    hub["httpServer"] = f"https://{net.cloud_ip}:{CLOUDHUB_HTTPS_PORT}"
    hub["websocket"].update({"enable": True, "server": f"{net.cloud_ip}:{CLOUDHUB_PORT}"})
    if "quic" in hub:
        hub["quic"]["enable"] = False
    e = mods["edged"]
    e["hostnameOverride"] = node
    e["nodeIP"] = net.node_ip(i)
    e["podSandboxImage"] = pause_image
    e["nodeLabels"] = dict(labels)
    kc = e.setdefault("tailoredKubeletConfig", {})
    kc.update({
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": net.cgroup_root(node),
        "cgroupsPerQOS": True,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "imageServiceEndpoint": "unix:///run/containerd/containerd.sock",
        # edged checks its kubelet's health on localhost: the node's own loopback, in its namespace.
        "address": "127.0.0.1",
        "readOnlyPort": 10350,
        "failSwapOn": False,
        # Root here has no CAP_SYS_RESOURCE: a negative score for edged itself would only fail.
        "oomScoreAdj": 0,
        # Its default is under /usr/libexec, outside the node's own paths.
        "volumePluginDir": "/var/lib/kubelet/volume-plugins",
        "makeIPTablesUtilChains": False,
        # Eviction judged on the shared disk of a test machine would evict for others' files.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerWithTaints": [{"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"}] if taint else [],
    })
    # Event bus (MQTT), service bus, edge stream and meta server: not needed by a model server.
    for off in ("eventBus", "serviceBus", "edgeStream"):
        if off in mods:
            mods[off]["enable"] = False
    meta = mods.get("metaManager", {}).get("metaServer")
    if isinstance(meta, dict):
        meta["enable"] = False
    if "deviceTwin" in mods:
        mods["deviceTwin"]["dmiSockPath"] = "/var/lib/kubeedge/dmi.sock"
    return cfg


# --------------------------------------------------------------------------- pause image


def _pause_hash() -> str:
    return hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]


def build_pause() -> Path:
    """Build (cached) the pod sandbox image from a tiny static C program; returns its OCI archive."""
    src_hash = _pause_hash()
    d = P.CACHE / "pause" / src_hash
    archive = d / "pause.oci.tar"
    if not archive.exists():
        d.mkdir(parents=True, exist_ok=True)
        (d / "pause.c").write_text(PAUSE_C)
        _run("gcc", "-static", "-Os", "-s", "-o", str(d / "pause"), str(d / "pause.c"))
        ctr = _run("buildah", "from", "scratch").stdout.strip()
        try:
            _run("buildah", "copy", ctr, str(d / "pause"), "/pause")
            _run("buildah", "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
            tmp = archive.with_suffix(".tmp")
            _run("buildah", "commit", "--format", "oci", ctr, f"oci-archive:{tmp}:edgeai/pause:{src_hash}")
            os.replace(tmp, archive)
        finally:
            _run("buildah", "rm", ctr, check=False)
    return archive


def pause_image(registry: str) -> str:
    """The pod sandbox image, pushed to `registry`; returns its reference."""
    archive = build_pause()
    ref = f"{registry}/edgeai/pause:{_pause_hash()}"
    _run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{ref}")
    return ref


# --------------------------------------------------------------------------- processes of a node


def _cgroup_pids(prefix: str) -> list[int]:
    """Every process whose cgroup (any v1 hierarchy) lies under `prefix`."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "cgroup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            path = line.split(":", 2)[-1]
            if path == prefix or path.startswith(prefix + "/"):
                out.append(int(d.name))
                break
    return out


def _netns_pids(ns: str) -> list[int]:
    """Every process living in network namespace `ns` (containerd, edgecore, shims, containers)."""
    try:
        target = os.stat(f"/run/netns/{ns}")
    except OSError:
        return []
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            st = os.stat(d / "ns" / "net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            out.append(int(d.name))
    return out


def kill_node_processes(net: EdgeNet, node: str) -> int:
    """SIGKILL everything of one node: edgecore, containerd, its shims, its containers.

    Shims and the node's daemons live in the node's network namespace (they were started
    there); containers live in their own network namespaces but in the node's cgroups.
    """
    n = 0
    for _ in range(20):
        pids = set(_netns_pids(net.netns(node))) | set(_cgroup_pids(net.cgroup_root(node)))
        pids.discard(os.getpid())
        if not pids:
            return n
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                n += 1
        time.sleep(0.2)
    return n


def _v1_hierarchies() -> list[Path]:
    return [h for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir() and h.name != "unified"]


def remove_cgroup_tree(root: str) -> None:
    """Remove cgroup `root` and everything below it (leaves first) in every v1 hierarchy."""
    for hier in _v1_hierarchies():
        base = hier / root.lstrip("/")
        if not base.is_dir():
            continue
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with suppress(OSError):
                d.rmdir()
        with suppress(OSError):
            base.rmdir()


def make_cgroup(root: str) -> None:
    for hier in _v1_hierarchies():
        with suppress(OSError):
            (hier / root.lstrip("/")).mkdir(exist_ok=True)


# --------------------------------------------------------------------------- helpers for tests


def exec_in_node(plane: P.Plane, node: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside node `node`'s network namespace (what the site sees, link down or not)."""
    edge = real_edge_of(plane)
    if not edge or node not in edge.nodes:
        raise SystemExit(f"{node!r} is not a real edge node of plane {plane.name!r}")
    return subprocess.run(["nsenter", f"--net=/run/netns/{edge.net.netns(node)}", "--", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def dump_yaml(obj: Any) -> str:
    return str(yaml.safe_dump(obj, sort_keys=False))


# --------------------------------------------------------------------------- bringing nodes up and down


def _kubeedge_module_dir() -> Path:
    fam = next(f for f in P.FAMILIES if f.name == "kubeedge")
    env = dict(os.environ, GOFLAGS="-mod=mod", **dict(fam.env))
    out = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", "github.com/kubeedge/kubeedge"], cwd=fam.moddir,
                         env=env, capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"cannot locate the KubeEdge module (for its CRDs): {out.stderr.strip()}")
    return Path(out.stdout.strip())


def _default_config(binary: Path) -> dict[str, Any]:
    out = _run(str(binary), "--defaultconfig").stdout
    return dict(yaml.safe_load(out))


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


@dataclass
class RealEdge:
    """The real-edge part of one plane: its network, registry, cloudcore and nodes."""

    plane: P.Plane
    net: EdgeNet
    nodes: list[str]

    @property
    def edge_dir(self) -> Path:
        return self.plane.dir / "edge"

    def info(self, made: Sequence[str], images: dict[str, str], pause: str) -> dict[str, Any]:
        return {"k": self.net.k, "nodes": self.nodes, "made": list(made), "registry": self.net.registry,
                "images": images, "pause": pause, "started": time.time()}

    # -- cloud side

    def start_registry(self) -> P.Component:
        store = P.CACHE / "registry"
        store.mkdir(parents=True, exist_ok=True)
        cfg = self.edge_dir / "registry.yml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(dump_yaml({
            "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(store)}, "delete": {"enabled": True}},
            "http": {"addr": self.net.registry},
        }))
        return P._start(self.plane, "registry", ["docker-registry", "serve", str(cfg)])

    def start_cloudcore(self, bins: dict[str, Path], kc: P.Kube) -> P.Component:
        crds = _kubeedge_module_dir() / "build" / "crds"
        kc.kubectl("apply", "--server-side", "-R", "-f", str(crds))
        kc.kubectl("create", "namespace", "kubeedge", check=False)
        cfg = cloudcore_config(_default_config(bins["cloudcore"]), self.net, self.plane.dir,
                               self.plane.kubeconfig, P._free_port())
        path = self.plane.dir / "cloudcore" / "cloudcore.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_yaml(cfg))
        return P._start(self.plane, "cloudcore", [str(bins["cloudcore"]), "--config", str(path)])

    def token(self, kc: P.Kube) -> str | None:
        p = kc.kubectl("get", "secret", "tokensecret", "-n", "kubeedge", "-o", "jsonpath={.data.tokendata}",
                       check=False)
        return base64.b64decode(p.stdout).decode() if p.returncode == 0 and p.stdout else None

    # -- a node

    def prepare_node(self, i: int, bins: dict[str, Path], token: str, pause: str,
                     labels: dict[str, str], taint: bool) -> None:
        node = self.nodes[i]
        for p in NODE_PATHS:
            hostfs(self.plane.dir, node, p).mkdir(parents=True, exist_ok=True)
        etc_ctd = hostfs(self.plane.dir, node, "/etc/containerd")
        (etc_ctd / "config.toml").write_text(containerd_config(self.net, pause))
        hosts = etc_ctd / "certs.d" / self.net.registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(registry_hosts_toml(self.net.registry))
        netd = hostfs(self.plane.dir, node, "/etc/cni") / "net.d"
        netd.mkdir(parents=True, exist_ok=True)
        (netd / "10-edgeai.conflist").write_text(json.dumps(cni_config(self.net, i, node), indent=1))
        ke = hostfs(self.plane.dir, node, "/etc/kubeedge") / "config"
        ke.mkdir(parents=True, exist_ok=True)
        cfg = edgecore_config(_default_config(bins["edgecore"]), self.net, i, node, token, pause, labels, taint)
        (ke / "edgecore.yaml").write_text(dump_yaml(cfg))
        make_cgroup(self.net.cgroup_root(node))

    def start_node(self, i: int, bins: dict[str, Path]) -> list[P.Component]:
        node = self.nodes[i]
        ns = self.net.netns(node)
        _record_made(self.plane, ensure_mount_points())  # empty dirs on the host; someone may have removed one
        script = _bind_script(self.plane.dir, node) + "\nexec containerd --config /etc/containerd/config.toml"
        ctd = P._start(self.plane, f"containerd-{node}", [
            "nsenter", f"--net=/run/netns/{ns}", "--",
            "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script,
        ])
        sock = hostfs(self.plane.dir, node, "/run/containerd") / "containerd.sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            if not ctd.alive() or time.monotonic() > deadline:
                tail = (self.plane.dir / "logs" / f"{ctd.name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"containerd of {node} did not start; log tail:\n{tail}")
            time.sleep(0.1)
        edge = P._start(self.plane, f"edgecore-{node}", [
            "nsenter", "-t", str(ctd.pid), "-m", "-n", "--",
            "env", "CHECK_EDGECORE_ENVIRONMENT=false",
            str(bins["edgecore"]), "--config", "/etc/kubeedge/config/edgecore.yaml",
        ])
        return [ctd, edge]

    def stop_node(self, i: int) -> None:
        kill_node_processes(self.net, self.nodes[i])

    def wipe_volatile(self, i: int) -> None:
        """What a reboot loses: /run (tmpfs on a real machine)."""
        for p in VOLATILE_PATHS:
            d = hostfs(self.plane.dir, self.nodes[i], p)
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, exist_ok=True)


def _update_state(plane: P.Plane, real_edge: dict[str, Any] | None = None,
                  new: Sequence[P.Component] = ()) -> None:
    """Rewrite the plane's state with `real_edge` merged in and components `new` replacing same-named ones."""
    st = plane.state()
    assert st, f"plane {plane.name!r} has no state"
    names = {c.name for c in new}
    comps = [P.Component(**c) for c in st["components"] if c["name"] not in names] + list(new)
    extra = {k: v for k, v in st.items() if k not in ("server", "components")}
    if real_edge:
        extra["real_edge"] = {**extra.get("real_edge", {}), **real_edge}
    P._save(plane, st["server"], comps, extra)


def _record_made(plane: P.Plane, made: Sequence[str]) -> None:
    re = (plane.state() or {}).get("real_edge")
    if made and re is not None:
        _update_state(plane, {"made": sorted(set(re.get("made", [])) | set(made))})


def real_edge_of(plane: P.Plane) -> RealEdge | None:
    st = plane.state() or {}
    re = st.get("real_edge")
    if not re:
        return None
    return RealEdge(plane, EdgeNet(plane.name, int(re["k"])), list(re["nodes"]))


def teardown(plane: P.Plane) -> None:
    """Stop the real nodes and remove what they made: processes, mounts, cgroups, links, netns."""
    st = plane.state() or {}
    re = st.get("real_edge")
    if not re:
        return
    edge = RealEdge(plane, EdgeNet(plane.name, int(re["k"])), list(re["nodes"]))
    stop_cloud_containers(plane)
    for i, node in enumerate(edge.nodes):
        edge.stop_node(i)
        remove_cgroup_tree(edge.net.cgroup_root(node))
    network_down(edge.net, edge.nodes)
    remove_mount_points(re.get("made", []))


def up(plane: P.Plane, server: str, comps: list[P.Component], extra: dict[str, Any], kc: P.Kube,
       bins: dict[str, Path], n: int, labels: dict[str, str] | None = None, taint: bool = False) -> None:
    """Bring up the registry, cloudcore and `n` real nodes; append their components to `comps`."""
    import images

    why = containers_supported()
    if why:
        raise SystemExit(f"--real-edge: {why}. Use --real-edge 0 (EDGEAI_REAL_EDGE=0) for a kwok-only plane.")
    t0 = time.monotonic()
    ensure_packages()
    net = choose_net(plane.name)
    edge = RealEdge(plane, net, [node_name(i) for i in range(n)])
    made = ensure_mount_points()
    extra["real_edge"] = edge.info(made, {}, "")
    P._save(plane, server, comps, extra)  # from here on, `down` knows what to undo
    network_up(net, edge.nodes)
    comps.append(edge.start_registry())
    P._save(plane, server, comps, extra)
    P._wait("the local registry", lambda: _http_ok(f"http://{net.registry}/v2/"), 60, comps, plane)
    P.log(f"registry on {net.registry}; pushing images")
    pause = pause_image(net.registry)
    refs = images.push(images.build_all(), net.registry)
    extra["real_edge"] = edge.info(made, refs, pause)
    comps.append(edge.start_cloudcore(bins, kc))
    P._save(plane, server, comps, extra)
    P._wait("cloudcore's join token", lambda: edge.token(kc) is not None, 120, comps, plane)
    token = edge.token(kc)
    assert token
    node_labels = {"edgeai.io/site": "site-real", "edgeai.io/accelerator": "none", **(labels or {})}
    for i in range(n):
        edge.prepare_node(i, bins, token, pause, node_labels, taint)
        comps.extend(edge.start_node(i, bins))
        P._save(plane, server, comps, extra)
    P._wait(f"{n} real edge nodes Ready", lambda: kc.ready_nodes(edge.nodes) == n, 180, comps, plane)
    P.log(f"{n} real KubeEdge node(s) Ready in {time.monotonic() - t0:.1f}s: {', '.join(edge.nodes)} "
          f"(cloud bridge {net.bridge} {net.cloud_ip}, registry {net.registry})")


def partition(plane: P.Plane, node: str, cut: bool) -> None:
    """Cut (or restore) one real node's link to the cloud."""
    edge = real_edge_of(plane)
    if not edge or node not in edge.nodes:
        raise SystemExit(f"{node!r} is not a real edge node of plane {plane.name!r}")
    set_link(edge.net, edge.nodes.index(node), up=not cut)


def reboot(plane: P.Plane, node: str, bins: dict[str, Path] | None = None) -> None:
    """Power-cycle one real node: every process and container killed, /run wiped, then containerd and
    edgecore started again from what is on the node's disk. The link to the cloud is left as it is."""
    edge = real_edge_of(plane)
    if not edge or node not in edge.nodes:
        raise SystemExit(f"{node!r} is not a real edge node of plane {plane.name!r}")
    i = edge.nodes.index(node)
    edge.stop_node(i)
    edge.wipe_volatile(i)
    remove_cgroup_tree(edge.net.cgroup_root(node))
    make_cgroup(edge.net.cgroup_root(node))
    _update_state(plane, new=edge.start_node(i, bins or P.binaries()))


# --------------------------------------------------------------------------- a container runtime in the cloud


CLOUD_PATHS = ("/etc/containerd", "/var/lib/containerd", "/run/containerd")


def cloud_dir(plane: P.Plane) -> Path:
    return plane.dir / "cloud-containerd"


def cloud_socket(plane: P.Plane) -> Path:
    return cloud_dir(plane) / "hostfs" / "run" / "containerd" / "containerd.sock"


def cloud_cgroup(plane: P.Plane) -> str:
    return f"/edgeai-{plane.name}-cloud"


def start_cloud_containerd(plane: P.Plane) -> P.Component:
    """A containerd on the cloud side (host network, own mount namespace, no CRI): what runs the
    operator's image as a real container against the plane, as a cloud node's runtime would."""
    st = plane.state() or {}
    for c in plane.components():
        if c.name == "containerd-cloud" and c.alive():
            if _ctr_ok(c.pid):
                return c
            os.killpg(c.pid, signal.SIGKILL)  # alive but unreachable: start it again
    re = st.get("real_edge") or {}
    registry = re.get("registry")
    for p in CLOUD_PATHS:
        (cloud_dir(plane) / "hostfs" / p.lstrip("/")).mkdir(parents=True, exist_ok=True)
    etc = cloud_dir(plane) / "hostfs" / "etc" / "containerd"
    (etc / "config.toml").write_text(
        'version = 2\nroot = "/var/lib/containerd"\nstate = "/run/containerd"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", '
        '"io.containerd.snapshotter.v1.btrfs", '
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", '
        '"io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]\n'
        '[grpc]\n  address = "/run/containerd/containerd.sock"\n'
        '[ttrpc]\n  address = "/run/containerd/containerd.sock.ttrpc"\n')
    if registry:
        hosts = etc / "certs.d" / registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(registry_hosts_toml(registry))
    _record_made(plane, ensure_mount_points())
    lines = ["set -e"] + [f"mount --bind {cloud_dir(plane) / 'hostfs' / p.lstrip('/')} {p}" for p in CLOUD_PATHS]
    lines.append("exec containerd --config /etc/containerd/config.toml")
    make_cgroup(cloud_cgroup(plane))
    cloud_socket(plane).unlink(missing_ok=True)  # a killed one's socket file would look like a live one
    comp = P._start(plane, "containerd-cloud",
                    ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", "\n".join(lines)])
    _update_state(plane, new=[comp])
    # Its shims keep its mount namespace even after it is gone: `down` finds them by it.
    with suppress(OSError):
        ns = os.stat(f"/proc/{comp.pid}/ns/mnt")
        seen = ((plane.state() or {}).get("real_edge") or {}).get("cloud_mntns", [])
        _update_state(plane, {"cloud_mntns": [*seen, [ns.st_dev, ns.st_ino]]})
    deadline = time.monotonic() + 60
    while not (cloud_socket(plane).exists() and _ctr_ok(comp.pid)):
        if not comp.alive() or time.monotonic() > deadline:
            tail = (plane.dir / "logs" / "containerd-cloud.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the cloud containerd did not start; log tail:\n{tail}")
        time.sleep(0.1)
    return comp


def _ctr_ok(pid: int) -> bool:
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "ctr", "--address", "/run/containerd/containerd.sock",
                        "--timeout", "5s", "version"], capture_output=True, text=True)
    return p.returncode == 0


def ctr(plane: P.Plane, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`ctr` against the cloud containerd, namespace edgeai.

    Run inside that containerd's mount namespace: ctr mounts image snapshots itself (to read the
    image's users), and the snapshots live under the namespace's private /var/lib/containerd.
    """
    pid = next((c.pid for c in plane.components() if c.name == "containerd-cloud" and c.alive()), None)
    if pid is None:
        raise RuntimeError(f"the cloud containerd of plane {plane.name!r} is not running")
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "ctr", "--address", "/run/containerd/containerd.sock",
                        "--namespace", "edgeai", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def stop_cloud_containers(plane: P.Plane) -> None:
    """Kill the containers the cloud containerd ran and their shims (found by its mount namespace)."""
    spaces = {tuple(x) for x in ((plane.state() or {}).get("real_edge") or {}).get("cloud_mntns", [])}
    pids = set(_cgroup_pids(cloud_cgroup(plane)))
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with suppress(OSError):
                argv = (d / "cmdline").read_bytes().split(b"\0")
                ns = os.stat(d / "ns" / "mnt")
                if b"containerd-shim" in argv[0] and (ns.st_dev, ns.st_ino) in spaces:
                    pids.add(int(d.name))
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    remove_cgroup_tree(cloud_cgroup(plane))
