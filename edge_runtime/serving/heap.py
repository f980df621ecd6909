"""Keep the C heap's freed blocks for the next request instead of handing them back to the kernel.

Every request with a large tensor allocates a few buffers of its size (the
socket reads, the parser's pieces, the assembled body, the model's outputs) and
frees them when it is answered. glibc serves a block over its mmap threshold
from a fresh mapping and unmaps it on free, and trims the heap's top once more
than its trim threshold is free; its dynamic thresholds (2x the largest block
freed) are too tight for a few 600 KB tensors at once. Either way the next
request faults every page in again and the kernel zeroes it: ~550 page faults
for four 600 KB buffers, about half of the event loop's CPU per MobileNet
request on a 2-core device (docs/runtime.md, "Memory reuse").

Here blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap,
and up to `keep_mib` of free heap stays mapped. The cost is resident memory:
at most the peak of what requests had in flight, plus `keep_mib`. Not glibc
(musl, another libc): nothing is changed, and the caller is told.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses larger values.
_MMAP_THRESHOLD_MAX = 32 << 20


def keep_freed_memory(keep_mib: int) -> bool:
    """Set glibc's thresholds (see above); True when they were set, False when this libc has no such knobs
    (or `keep_mib` is 0: glibc's own defaults stay)."""
    if keep_mib <= 0:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt takes the call and does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok: bool = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return ok and bool(mallopt(_M_TRIM_THRESHOLD, keep_mib << 20) == 1)
