"""A writer for the newc cpio format, the only one the kernel unpacks as an initramfs."""

from __future__ import annotations

import stat
from typing import BinaryIO

_TRAILER = "TRAILER!!!"
# Every entry's modification time: 1 s after the epoch, as the Nix store's files
# on NixOS. Not 0: software takes 0 for "never" (NSD left a zone file dated 0
# "configured but not loaded"). A fixed time keeps the archive's bytes, and the
# booted snapshot's key, the same from run to run.
MTIME = 1


class CpioWriter:
    """Appends entries to a newc archive; owners are whatever the caller says."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes, uid: int = 0, gid: int = 0) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino,
            mode,
            uid,
            gid,
            1,
            MTIME,
            len(data),
            0,
            0,
            0,
            0,
            len(encoded),
            0,
        ]
        self._ino += 1
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self._out.write(header + encoded)
        self._out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", uid, gid)

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self._entry(name, stat.S_IFREG | mode, data, uid, gid)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        self._entry(_TRAILER, 0, b"")
        self._out.write(b"\0" * (-self._out.tell() % 512) if self._out.seekable() else b"")
