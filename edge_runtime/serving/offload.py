"""Decoding of large requests off the event loop.

Small bodies (the common case) are decoded inline: handing them to another
thread costs more than the decode. So are larger ones whose tensors are all
numbers in the binary extension (zero-copy, up to `zero_copy_inline_bytes`).
Other large ones go to a thread (BYTES elements: a Python loop that yields
the GIL every few milliseconds). Large JSON bodies go to a separate decoder process:
orjson and numpy hold the GIL for the whole parse (~50 ms per MB), which in a
thread would still stall every other client; in a process it does not, and
the parse's memory high-water mark stays there: the process is replaced once
its resident memory passes `recycle_rss_bytes`, so neither it nor the server
keeps a large parse's memory for good, and a run of large bodies does not pay
a process start each.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from edge_runtime.core.codec import binary_numeric, decode_request, load_header, request_from_header
from edge_runtime.core.protocol import InferenceRequest, TooLarge

log = logging.getLogger("edge_runtime.offload")

INLINE_BYTES = 64 << 10
# Up to this size, a request whose tensors are raw numeric bytes (the binary extension, gRPC
# raw_input_contents) is decoded on the event loop whatever its size: its decode is a memcpy at most
# (protobuf's parse; numpy wraps the bytes without a copy), which holds the GIL in a worker thread just
# the same, so handing it over only adds two thread switches (~0.1-0.3 ms for a 600 KB image).
ZERO_COPY_INLINE_BYTES = 16 << 20
PROCESS_JSON_BYTES = 1 << 20
RECYCLE_RSS_BYTES = 256 << 20


class Decoder:
    def __init__(
        self,
        inline_bytes: int = INLINE_BYTES,
        zero_copy_inline_bytes: int = ZERO_COPY_INLINE_BYTES,
        process_json_bytes: int = PROCESS_JSON_BYTES,
        recycle_rss_bytes: int = RECYCLE_RSS_BYTES,
    ) -> None:
        self.inline_bytes = inline_bytes
        self.zero_copy_inline_bytes = zero_copy_inline_bytes
        self.process_json_bytes = process_json_bytes
        self.recycle_rss_bytes = recycle_rss_bytes
        self.threads = ThreadPoolExecutor(2, thread_name_prefix="edgeai-decode")
        self._procs: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._procs is None:
            self._procs = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self._procs

    def _recycle(self) -> None:
        if self._procs is not None:
            self._procs.shutdown(wait=False, cancel_futures=False)
            self._procs = None

    def _worker_rss(self) -> int:
        procs = getattr(self._procs, "_processes", None) or {}
        total = 0
        for pid in list(procs):
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue
        return total

    async def rest(self, body: bytes | bytearray, header_length: int | None) -> InferenceRequest:
        n = len(body)
        if n <= self.inline_bytes:
            return decode_request(body, header_length)
        loop = asyncio.get_running_loop()
        json_bytes = n if header_length is None else header_length
        if json_bytes <= self.inline_bytes and n <= self.zero_copy_inline_bytes:
            # A small JSON header and binary tensors: the header is parsed here to see whether the rest is
            # zero-copy (decoded here too) or BYTES elements (a Python loop: a thread).
            doc = load_header(body, header_length)
            if binary_numeric(doc):
                return request_from_header(doc, body, header_length)
            return await loop.run_in_executor(self.threads, request_from_header, doc, body, header_length)
        if json_bytes < self.process_json_bytes:
            return await loop.run_in_executor(self.threads, decode_request, body, header_length)
        try:
            return await loop.run_in_executor(self._pool(), decode_request, body, header_length)
        except BrokenProcessPool as e:
            self._recycle()
            log.warning("decoder process died (out of memory?)", extra={"bytes": n})
            raise TooLarge(f"request of {n} bytes could not be decoded: the decoder ran out of resources") from e
        finally:
            if self._procs is not None and self._worker_rss() > self.recycle_rss_bytes:
                self._recycle()

    async def run(self, fn: object, *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, fn, *args)  # type: ignore[arg-type]

    def close(self) -> None:
        self._recycle()
        self.threads.shutdown(wait=False)
