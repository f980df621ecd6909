"""Pure pieces of the gRPC port's own HTTP/2 (edge_runtime/transport/grpc_h2.py)."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import hpack
import pytest

from edge_runtime import cli
from edge_runtime.transport.grpc_h2 import (
    _MAX_WINDOW,
    _RESPONSE_HEAD,
    GrpcH2Server,
    _hpack_int,
    _trailers,
    grpc_timeout,
)


def test_hpack_integers_as_rfc_7541_c1_writes_them() -> None:
    assert _hpack_int(10, 5) == b"\x0a"
    assert _hpack_int(1337, 5) == b"\x1f\x9a\x0a"
    assert _hpack_int(42, 8) == b"\x2a"


def test_answers_decode_with_any_hpack_decoder_state() -> None:
    """Literals without indexing: what the answers say does not depend on the client's dynamic table."""
    dec = hpack.Decoder()
    for _ in range(3):
        assert dec.decode(_RESPONSE_HEAD) == [(":status", "200"), ("content-type", "application/grpc")]
    block = _trailers(grpc.StatusCode.INVALID_ARGUMENT, "input 'x': 100% wrong\nnew line é")
    got = dict(dec.decode(block))
    assert got["grpc-status"] == "3"
    # gRPC's percent-encoding: printable ASCII but '%' as is; the client decodes it back.
    assert got["grpc-message"] == "input 'x': 100%25 wrong%0Anew line %C3%A9"


@pytest.mark.parametrize(("value", "seconds"), [
    ("1S", 1.0), ("250m", 0.25), ("3M", 180.0), ("2H", 7200.0), ("100u", 1e-4), ("99999999n", 0.099999999),
    ("S", None), ("1s", None), ("123456789S", None), ("-1S", None), ("1.5S", None), ("", None),
])
def test_grpc_timeout_header(value: str, seconds: float | None) -> None:
    got = grpc_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_the_own_http2_is_the_default_and_grpcio_a_choice() -> None:
    base = ["serve", "--model", "m.onnx", "--sha256", "0" * 64, "--name", "m"]
    assert cli.build_parser().parse_args(base).grpc_server == "native"
    assert cli.build_parser().parse_args([*base, "--grpc-server", "grpcio"]).grpc_server == "grpcio"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*base, "--grpc-server", "h2"])


def test_the_bytes_held_per_connection_fit_an_http2_window() -> None:
    """Two of the largest messages, at least 64 MiB, and never past 2^31-1: the window is what enforces it."""
    service = SimpleNamespace(methods=dict)
    assert GrpcH2Server(service, "x", 0, max_message_bytes=1 << 20).max_buffered == 64 << 20  # type: ignore[arg-type]
    assert GrpcH2Server(service, "x", 0, max_message_bytes=100 << 20).max_buffered == 2 * ((100 << 20) + 5)  # type: ignore[arg-type]
    assert GrpcH2Server(service, "x", 0, max_message_bytes=4 << 30).max_buffered == _MAX_WINDOW  # type: ignore[arg-type]
