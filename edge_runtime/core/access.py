"""Who may use the model repository API (load, unload, index): a pure policy, shared by REST and gRPC.

Modes (`serve --repository-api`):
- `loopback` (default): only clients connecting from the Pod's own network
  namespace (127.0.0.0/8, ::1), e.g. `kubectl port-forward`, which the
  cluster's RBAC already guards. Anyone else who reaches the port gets 403.
- `token`: any address, with `Authorization: Bearer <token>` (REST header or
  gRPC metadata), the token read from `--repository-token-file`.
- `off`: nobody; the Pod serves the model its spec names and nothing else.
- `any`: no restriction (a trusted, isolated network only).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from edge_runtime.core.protocol import Forbidden

MODES = ("loopback", "token", "off", "any")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def grpc_peer_host(peer: str) -> str | None:
    """`ipv4:127.0.0.1:5000` / `ipv6:[::1]:5000` -> the address; None for anything else (unix sockets...)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None


@dataclass(frozen=True, slots=True)
class RepositoryAccess:
    mode: str = "loopback"
    token: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"repository API mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "token" and not self.token:
            raise ValueError("repository API mode 'token' needs a token (--repository-token-file)")

    def check(self, peer_host: str | None, authorization: str | None) -> None:
        if self.mode == "any":
            return
        if self.mode == "off":
            raise Forbidden("the model repository API is turned off on this runtime (--repository-api off)")
        if self.mode == "loopback":
            if not is_loopback(peer_host):
                raise Forbidden(
                    "the model repository API answers only clients on the runtime's loopback interface "
                    "(--repository-api loopback)"
                )
            return
        assert self.token is not None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise Forbidden("the model repository API needs 'Authorization: Bearer <token>' (--repository-api token)")
