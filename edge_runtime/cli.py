"""`edge-runtime`: one console script, one subcommand per job.

Each subcommand lives in its own module exposing `register(subparsers)`; the
module sets `func` on its parser. Heavy imports (onnx, the HTTP server) happen
inside the command functions so `edge-runtime fetch` in an init container
starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge_runtime.artifacts.integrity import IntegrityError
from edgeai_api.exit_codes import EXIT_CODES, EXIT_OTHER

# Modules that contribute subcommands. Order is the order shown in --help.
COMMAND_MODULES = (
    "edge_runtime.commands",  # fetch, verify, keygen, sign, encrypt
    "edge_runtime.serve_cli",  # serve
    "edge_runtime.site_cache",  # site-cache
    "edge_runtime.pack.cli",  # pack
)

# Distinct exit codes so an init container's failure says what went wrong (shared with the operator).


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime", description="Verified ONNX inference for edge nodes (Open Inference Protocol)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not a module still to be written
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except IntegrityError as e:
        print(f"edge-runtime {args.command}: {e.reason}: {e.message}", file=sys.stderr)
        return EXIT_CODES.get(e.reason, EXIT_OTHER)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
