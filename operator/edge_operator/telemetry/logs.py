"""Structured JSON logs for the operator: one object per line.

kopf's per-object loggers attach `k8s_ref` (the object) to records; it becomes
an `object` field ("namespace/name" of kind) so a log query can follow one
resource across kopf's messages and ours.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_DROP = {"k8s_skip", "k8s_ref", "settings"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            ns, name = ref.get("namespace"), ref.get("name")
            doc["object"] = f"{ref.get('kind', '')}/{ns + '/' if ns else ''}{name}"
        for k, v in record.__dict__.items():
            if k not in _STD and k not in _DROP and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kopf logs every watch-stream (re)connection at INFO; at fleet scale that is noise.
    logging.getLogger("kopf.objects").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
