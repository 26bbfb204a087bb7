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
    overlay.qcow2  an empty overlay on disk.qcow2, which a restore copies
    empty<N>.qcow2, empty<N>.overlay.qcow2
                 the same two for each of the node's empty disks
    console.txt  what the console printed during that boot
    clock        the guest's wall clock when it was stopped for the save
    last-used    for `vmrig gc`

A restored guest's clock and random number generator would continue from
the moment of the save, the same in every restore. Before the script's first
command, `fixup_command` reseeds the generator and moves the clock on by
the time that passed on the host between the save's stop and the restore's
resume: the guest's clock stood still in between, so the shift is known on
the host and does not depend on how long the fix-up itself takes to run.
The fix-up (guest/fixup.c) is started before the save and waits in the guest,
so a restore hands it the request with shell builtins: a restored guest's
first exec takes most of a second under TCG, whose translated code a restore
starts without.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from vmrig import proc

RAM = "ram"
STATE = "state"
DISK = "disk.qcow2"
CONSOLE = "console.txt"
OVERLAY = "overlay.qcow2"
CLOCK = "clock"
LAST_USED = "last-used"
PREFIX = "snapshot-"
# Starts the resident fix-up in the guest (guest/fixup.c, guest/protocol.bash),
# before a save: a restore then hands it the fix-up instead of starting it.
FIXUP_SERVE = "__vmrig_fixup_serve"
# Bumped when what a snapshot holds or how it is restored changes.
FORMAT = 3


def create_overlay(overlay: Path, backing: Path, size_mib: int, *, unsafe: bool = False) -> None:
    """A qcow2 overlay of `size_mib` MiB on the qcow2 disk `backing`; `unsafe`: `backing` need not exist yet."""
    proc.run(
        [
            proc.require_tool("qemu-img"),
            "create",
            "-q",
            *(["-u"] if unsafe else []),
            "-f",
            "qcow2",
            "-b",
            backing,
            "-F",
            "qcow2",
            overlay,
            f"{size_mib}M",
        ]
    )


def create_disk(path: Path, size_mib: int) -> None:
    """An empty qcow2 disk of `size_mib` MiB (a node's empty disk)."""
    proc.run([proc.require_tool("qemu-img"), "create", "-q", "-f", "qcow2", path, f"{size_mib}M"])


def empty_disk(index: int) -> str:
    """The file name, in a snapshot, of the empty disk `index` (0: the guest's /dev/vdb) as it was saved."""
    return f"empty{index}.qcow2"


def empty_disk_overlay(index: int) -> str:
    """The file name, in a snapshot, of the empty overlay on empty_disk(index) that a restore copies."""
    return f"empty{index}.overlay.qcow2"


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


def flush(directory: Path, names: Sequence[str] = (RAM, STATE)) -> None:
    """Writes the files `names` in `directory` to disk; OSError if the disk could not take them.

    The guest's RAM reaches its file through the page cache: on a full disk the
    write-back fails where nobody looks, and a snapshot published without this
    check restored a guest with holes in its memory.
    """
    for name in names:
        fd = os.open(directory / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard(directory: Path) -> None:
    """Removes a snapshot that failed to restore, so that the next run boots and saves anew.

    Renamed away first (atomic): a run starting now no longer finds it, one
    that has it open goes on with its open files.
    """
    doomed = directory.with_name(f"{directory.name}.discarded.{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(directory, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


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


def fixup_command(*, shift: float | None = None, now: float | None = None, seed: bytes | None = None) -> str:
    """The guest command that reseeds the RNG with `seed` (64 random bytes if None) and fixes the clock.

    With `shift` (seconds, the host's time between a save's stop and the
    restore's resume) it moves the guest's wall clock on by that much;
    without, it sets the clock to `now` (the host's time if None), which
    leaves the guest behind by however long the command takes to run.
    The guest's `__vmrig_fixup` (guest/protocol.bash) runs it: in the
    resident fix-up when one runs (FIXUP_SERVE), else as a program of its own.
    """
    seed = secrets.token_bytes(64) if seed is None else seed
    mode, value = ("+", shift) if shift is not None else ("=", time.time() if now is None else now)
    seconds = math.floor(value)
    nanoseconds = min(int((value - seconds) * 1e9), 999_999_999)
    return f"__vmrig_fixup {seed.hex()} {mode} {seconds} {nanoseconds}"


def write_clock(directory: Path, guest_clock: float) -> None:
    """Records the guest's wall clock (seconds since the epoch) at the save's stop."""
    (directory / CLOCK).write_text(f"{guest_clock!r}\n")


def read_clock(directory: Path) -> float | None:
    """The guest's wall clock at the save's stop, if the snapshot recorded it."""
    try:
        return float((directory / CLOCK).read_text())
    except (OSError, ValueError):
        return None


def stale(root: Path) -> Iterator[Path]:
    """Snapshots whose image is gone (removed by gc): they can never be restored."""
    for directory in sorted(root.glob(f"{PREFIX}*")):
        backing = directory / "backing"
        if backing.is_file() and not Path(backing.read_text().strip()).exists():
            yield directory
