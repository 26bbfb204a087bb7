"""Choosing QEMU's accelerator: KVM when it really runs a guest, TCG otherwise.

Some hosts have a /dev/kvm that hangs every guest, so its presence proves
nothing: boot the image's kernel under KVM once, with a time limit, and see
whether it prints anything. The answer is cached per host; VMRIG_ACCEL=kvm|tcg
(which the driver passes as `forced`) overrides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import select
import time
from pathlib import Path

from vmrig import proc
from vmrig.errors import UsageError
from vmrig.machine import qemu as qemu_argv

PROBE_SECONDS = 15.0
ACCELERATORS = ("kvm", "tcg")
# Booted snapshots and a sound guest CPU under TCG (cmpxchg16b) need QEMU 10.
MIN_QEMU = (10, 0)
QEMU_FIX = (
    "run scripts/setup.sh (on Debian 12 it installs QEMU 10 from bookworm-backports: "
    "apt-get install -t bookworm-backports qemu-system-x86 qemu-utils)"
)


def qemu_version(qemu: str) -> tuple[int, int]:
    """(major, minor) of the QEMU binary `qemu`, from `qemu --version` (asked once per process)."""
    out = qemu_argv.version_text(qemu)
    found = re.search(r"version (\d+)\.(\d+)", out)
    if found is None:
        raise UsageError(f"cannot tell the version of {qemu} from: {out.strip()!r}")
    return int(found.group(1)), int(found.group(2))


def check_qemu_version(qemu: str) -> None:
    """Raises UsageError, naming the fix, when `qemu` is older than MIN_QEMU."""
    version = qemu_version(qemu)
    if version < MIN_QEMU:
        raise UsageError(
            f"{qemu} is QEMU {version[0]}.{version[1]}; vmrig needs QEMU {MIN_QEMU[0]} or newer: {QEMU_FIX}"
        )


def _host_fingerprint(qemu: str) -> str:
    parts = [platform.release(), qemu, str(os.stat(qemu).st_mtime_ns)]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        parts += sorted({line for line in cpuinfo.splitlines() if line.startswith(("model name", "flags"))})
    except OSError:
        pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def kvm_runs_guest(qemu: str, kernel: Path, seconds: float = PROBE_SECONDS) -> bool:
    """Boots `kernel` with no root under KVM and waits for its first message."""
    child = proc.spawn(
        qemu_argv.probe_command(qemu, kernel),
        stdout=proc.PIPE,
        stderr=proc.DEVNULL,
    )
    assert child.stdout is not None
    deadline = time.monotonic() + seconds
    seen = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            if b"Linux version" in seen or b"Kernel panic" in seen or b"VFS:" in seen:
                return True
        return False
    finally:
        child.close(grace=1.0)


def choose(cache_dir: Path, kernel: Path, forced: str = "") -> str:
    """ "kvm" or "tcg" for this host; `forced`: VMRIG_ACCEL's value, if set."""
    forced = forced.strip().lower()
    if forced:
        if forced not in ACCELERATORS:
            raise UsageError(f"VMRIG_ACCEL={forced!r}: expected one of {', '.join(ACCELERATORS)}")
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    qemu = proc.require_tool("qemu-system-x86_64")
    cache = cache_dir / "accel.json"
    fingerprint = _host_fingerprint(qemu)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("host") == fingerprint and cached.get("accel") in ACCELERATORS:
            return str(cached["accel"])
    except (OSError, ValueError):
        pass
    accel = "kvm" if kvm_runs_guest(qemu, kernel) else "tcg"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"host": fingerprint, "accel": accel}) + "\n")
    return accel
