"""Booted snapshots: a machine saved once its boot has settled, restored instead of booting.

A snapshot is a directory in the image cache, `snapshot-<key>`, whose key
hashes everything that went into the booted guest (QEMU's version, the
QEMU command line with run-specific paths left out, the image, the config
layer). It holds:

    ram          the guest's memory: QEMU's `memory-backend-file` of the
                 first boot (share=on); a restore maps it copy-on-write
                 (share=off), so restores never write to it
    state        QEMU's device state (`migrate` with x-ignore-shared: no RAM)
    disk.qcow2   the first boot's overlay, frozen when the guest was stopped;
                 each restore writes to an overlay of its own on top of it
    console.txt  what the console printed during that boot
    last-used    for `vmrig gc`

A restored guest is told the host's time and given fresh randomness before
the script's first command (`fixup_command`): its clock and its random
number generator would otherwise continue from the moment of the save, the
same in every restore.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

RAM = "ram"
STATE = "state"
DISK = "disk.qcow2"
CONSOLE = "console.txt"
LAST_USED = "last-used"
PREFIX = "snapshot-"
# Bumped when what a snapshot holds or how it is restored changes.
FORMAT = 2

# One perl (Essential in Debian) for both fix-ups: under emulation every exec
# costs about 60 ms. The seed is written to /dev/urandom and RNDRESEEDCRNG
# (0x5207) makes the kernel's generator rekey from it at once (a write alone
# waits for the next periodic reseed); clock_settime is system call 227 on x86-64.
_FIXUP = (
    'open(my $r, ">", "/dev/urandom") or die "urandom: $!"; print $r pack("H*", $ARGV[0]); close $r; '
    'open($r, "<", "/dev/urandom") or die; ioctl($r, 0x5207, 0) or die "RNDRESEEDCRNG: $!"; '
    'syscall(227, 0, pack("qq", $ARGV[1], $ARGV[2])) == 0 or die "clock_settime: $!"'
)


def key(parts: Sequence[str]) -> str:
    """The key of a snapshot made from `parts` (strings that describe the booted guest)."""
    digest = hashlib.sha256(json.dumps([FORMAT, *parts]).encode()).hexdigest()
    return digest[:24]


def complete(directory: Path) -> bool:
    """Whether `directory` holds a whole snapshot whose disk's backing image still exists."""
    if not all((directory / name).is_file() for name in (RAM, STATE, DISK)):
        return False
    backing = directory / "backing"
    return not backing.is_file() or Path(backing.read_text().strip()).exists()


def touch(directory: Path) -> None:
    """Records a use, for `vmrig gc`."""
    with contextlib.suppress(OSError):
        (directory / LAST_USED).write_text(f"{time.time()}\n")


def publish(scratch: Path, final: Path) -> bool:
    """Renames a finished `scratch` directory into place; False if another run was first."""
    touch(scratch)
    try:
        os.rename(scratch, final)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        return False
    return True


def scratch_dir(root: Path, snapshot_key: str) -> Path:
    """A new private directory to build snapshot `snapshot_key` in (beside the image cache's scratch)."""
    parent = root / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{PREFIX}{snapshot_key}.{os.getpid()}.{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    return path


def saving(scratch: Path) -> bool:
    """Whether `scratch` is a snapshot being saved by a process that is still alive."""
    parts = scratch.name.split(".")
    if not scratch.name.startswith(PREFIX) or len(parts) != 3 or not parts[1].isdigit():
        return False
    return Path(f"/proc/{parts[1]}").exists()


def fixup_command(now: float | None = None, seed: bytes | None = None) -> str:
    """The guest command that sets the wall clock to `now` and reseeds the RNG with `seed`."""
    now = time.time() if now is None else now
    seed = secrets.token_bytes(64) if seed is None else seed
    seconds = int(now)
    nanoseconds = int((now - seconds) * 1e9)
    return f"perl -e '{_FIXUP}' {seed.hex()} {seconds} {nanoseconds}"


def stale(root: Path) -> Iterator[Path]:
    """Snapshots whose image is gone (removed by gc): they can never be restored."""
    for directory in sorted(root.glob(f"{PREFIX}*")):
        backing = directory / "backing"
        if backing.is_file() and not Path(backing.read_text().strip()).exists():
            yield directory
