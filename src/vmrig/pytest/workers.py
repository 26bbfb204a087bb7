"""What keeps pytest-xdist workers and parallel pytest runs apart: a 0700 directory per worker, vsock CIDs.

Every run directory, VDE socket, QMP socket and machine state directory of a
topology lives under its worker's directory, so two workers that boot nodes
of the same name never share a path. Host ports are picked free per machine
(vmrig.hostnet); vsock CIDs are the only host-wide names, so each topology
gets a range made from the process id.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

# Node numbers a topology may use inside its vsock range.
CIDS_PER_TOPOLOGY = 16
TOPOLOGIES_PER_PROCESS = 32


class WorkerSpace:
    """This process's directory for machines, made on first use and removed by remove()."""

    def __init__(self, worker: str, base: Path) -> None:
        """`base`: where the directory is made (the run environment's TMPDIR)."""
        self.worker = worker
        self.base = base
        self._root: Path | None = None
        self._numbers = itertools.count()

    @property
    def root(self) -> Path:
        if self._root is None:
            self.base.mkdir(parents=True, exist_ok=True)
            # Short: AF_UNIX socket paths are limited to 107 bytes.
            self._root = Path(tempfile.mkdtemp(prefix=f"vmrig-{self.worker}-", dir=self.base))
            os.chmod(self._root, 0o700)
        return self._root

    def topology(self) -> tuple[Path, int]:
        """A fresh 0700 directory for one topology, and the vsock CID offset of its machines."""
        number = next(self._numbers)
        directory = self.root / f"t{number}"
        directory.mkdir(mode=0o700)
        return directory, vsock_offset(os.getpid(), number)

    def remove(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def vsock_offset(pid: int, number: int) -> int:
    """The CID offset of the `number`th topology of process `pid`: ranges of 16 CIDs that
    differ between processes (pids modulo 2**21) and between a process's topologies."""
    slot = (pid % 2**21) * TOPOLOGIES_PER_PROCESS + number % TOPOLOGIES_PER_PROCESS
    return 3 + slot * CIDS_PER_TOPOLOGY
