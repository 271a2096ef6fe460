"""The node's own log files (job process and session host output, the demo's processes): each
moved to `<name>.1` (replacing the previous one) once it is over LOG_MAX_BYTES, so that nothing
grows without end. The standard library only: every process of the node may use it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO

LOG_MAX_BYTES = 10 * 1024 * 1024


def open_log(path: Path) -> BinaryIO:
    """`path` opened for appending; first moved to `<path>.1` (replacing it) once it is over
    LOG_MAX_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_MAX_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return open(path, "ab")
