"""Hand the heap a piece of work freed back to the system.

glibc keeps freed memory in its arenas: a long-lived process (a warm session's SPU runtime, the
SecretFlow worker's pool process) would otherwise hold its largest job's peak between jobs —
the table check of a 1M-row table leaves ≈15 MB, a 1M-row PSI ≈300 MB. `malloc_trim` takes
about a millisecond; no `gc.collect()` (≈130 ms in a process with SecretFlow loaded, on every
job): what a job frees is freed by reference counting.
"""

from __future__ import annotations

import contextlib
import ctypes


def release() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
