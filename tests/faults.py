"""Injected disk faults for the spool's tests (a full disk, a failing one), shared by the ledger and gateway tests."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from tokenops.ledger.spool import FileOps


class FaultyDisk(FileOps):
    """Injects the failures a full or failing disk gives: a write that stops half-way then ENOSPC, a failed
    fdatasync (EIO), a truncate that fails too, and little free space."""

    def __init__(self) -> None:
        self.fail_writes = 0
        self.fail_syncs = 0
        self.fail_truncates = 0
        self.free = 10**12

    def write(self, fd: int, data: Any) -> int:  # type: ignore[override]
        if self.fail_writes:
            self.fail_writes -= 1
            half = bytes(data[: max(1, len(data) // 2)])
            os.write(fd, half)  # a torn write: part of the line reached the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        if self.fail_syncs:
            self.fail_syncs -= 1
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:  # type: ignore[override]
        if self.fail_truncates:
            self.fail_truncates -= 1
            raise OSError(errno.EIO, "Input/output error")
        os.ftruncate(fd, length)

    def free_bytes(self, path: Path) -> int:  # type: ignore[override]
        return self.free
