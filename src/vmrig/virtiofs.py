"""Host directories in the guests, over virtiofs: one virtiofsd per shared directory.

The guest kernel (Debian's cloud flavour) has virtiofs built in and no 9p, so
a share is a vhost-user-fs device served by a virtiofsd on the host. Such a
device needs the guest's RAM in shared memory (a memfd backend). Each
virtiofsd is started through `proc.spawn` right before QEMU (it dies with the
driver), listens in the run's private directory, and ends by itself when QEMU
lets go of it; a machine that starts again gets fresh ones.

A read-only share is read-only on the host's side: its virtiofsd runs in a
mount namespace of its own in which the directory is bind-mounted read-only,
so not even root in the guest can change it. The guest mounts every share
in its initramfs, before systemd starts (see `vmrig.image.configlayer.mount_script`), so a
share is there by the time the driver's shell answers.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from vmrig import proc
from vmrig.errors import HostToolMissing, MachineError
from vmrig.image.configlayer import Mount
from vmrig.log import Logger
from vmrig.spec import EXCHANGE_GUEST_PATH, Node, SpecError

__all__ = ["EXCHANGE_GUEST_PATH", "Share", "Virtiofs", "find_virtiofsd", "plan_shares"]

# Debian 13 ships the Rust virtiofsd in its own package; on Debian 12 QEMU 7.2's
# own (C) one, which scripts/setup.sh puts in /usr/local/libexec beside QEMU 10.
VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/local/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
VIRTIOFSD_PACKAGE = "virtiofsd (Debian 13; on Debian 12 run scripts/setup.sh)"
SOCKET_WAIT = 10.0
EXCHANGE_TAG = "xchg"


@dataclass(frozen=True)
class Share:
    """One shared directory of one machine: host `source` at guest `target`."""

    tag: str
    source: Path
    target: str
    read_only: bool = False

    def mount(self) -> Mount:
        return Mount(self.tag, self.target, self.read_only)


def plan_shares(node: Node, *, base_dir: Path, exchange_dir: Path | None) -> list[Share]:
    """The shares of `node`: the run's exchange directory, then `Node.shared_directories`.

    Relative host paths are relative to `base_dir` (the test file's directory).
    Raises SpecError for a host directory that does not exist.
    """
    shares = []
    if exchange_dir is not None:
        shares.append(Share(EXCHANGE_TAG, exchange_dir, EXCHANGE_GUEST_PATH))
    for index, (target, share) in enumerate(sorted(node.shares().items())):
        source = (base_dir / os.path.expanduser(share.source)).resolve()
        if not source.is_dir():
            what = "does not exist" if not source.exists() else "is not a directory"
            raise SpecError(f"Node.shared_directories[{target!r}]: {source} {what} on the host")
        shares.append(Share(f"share{index}", source, target, share.read_only))
    return shares


@functools.cache
def find_virtiofsd() -> tuple[str, bool]:
    """The virtiofsd program, and whether it is the Rust one (other options)."""
    for candidate in (shutil.which("virtiofsd"), *VIRTIOFSD_PATHS):
        if candidate and os.access(candidate, os.X_OK):
            usage = proc.run([candidate, "--help"], check=False, timeout=10)
            return candidate, b"--shared-dir" in usage.stdout + usage.stderr
    raise HostToolMissing("virtiofsd", VIRTIOFSD_PACKAGE)


def _qemu_value(text: str) -> str:
    """A QEMU option value: commas are doubled."""
    return text.replace(",", ",,")


class Virtiofs:
    """The shares of one machine: its virtiofsd processes and the QEMU arguments for them.

    A `machine.Sidecar`: the machine starts it before QEMU and stops it after.
    """

    def __init__(self, name: str, shares: list[Share], socket_dir: Path, memory_mib: int, logger: Logger) -> None:
        self.name = name
        self.shares = shares
        self.socket_dir = socket_dir
        self.memory_mib = memory_mib
        self.logger = logger
        self.processes: list[proc.Child] = []

    def socket_path(self, share: Share) -> Path:
        return self.socket_dir / f"fs-{self.name}-{share.tag}.sock"

    def mounts(self) -> list[Mount]:
        return [share.mount() for share in self.shares]

    def qemu_args(self) -> list[str]:
        if not self.shares:
            return []
        args = [
            "-object",
            f"memory-backend-memfd,id=vmrig-mem,size={self.memory_mib}M,share=on",
            "-numa",
            "node,memdev=vmrig-mem",
        ]
        for index, share in enumerate(self.shares):
            args += [
                "-chardev",
                f"socket,id=vmrig-fs{index},path={_qemu_value(str(self.socket_path(share)))}",
                "-device",
                f"vhost-user-fs-pci,chardev=vmrig-fs{index},tag={share.tag}",
            ]
        return args

    def snapshot_blocker(self) -> str | None:
        return "shared directories (virtiofs) cannot be saved in a snapshot" if self.shares else None

    def snapshot_key_parts(self) -> list[str]:
        return []

    def command(self, share: Share) -> list[str]:
        """The virtiofsd command line for `share` (in a read-only view of it if it is read-only)."""
        program, rust = find_virtiofsd()
        socket = str(self.socket_path(share))
        source = str(share.source)
        if rust:
            cmd = [program, f"--socket-path={socket}", f"--shared-dir={source}", "--cache=never", "--sandbox=chroot"]
        else:
            cmd = [program, f"--socket-path={socket}", "-o", f"source={source}", "-o", "cache=none"]
            cmd += ["-o", "sandbox=chroot", "-o", "log_level=warn"]
        if not share.read_only:
            return cmd
        # No --fork: the namespace is this very process's, which keeps its parent-death signal.
        remount = 'mount --bind -- "$1" "$1" && mount -o remount,bind,ro -- "$1" && shift && exec "$@"'
        return [proc.require_tool("unshare"), "--mount", "--", "sh", "-c", remount, "vmrig-ro", source, *cmd]

    def start(self) -> None:
        self.stop()
        for share in self.shares:
            socket = self.socket_path(share)
            socket.unlink(missing_ok=True)
            log_path = socket.with_suffix(".log")
            with open(log_path, "wb") as log:
                process = proc.spawn(self.command(share), stdout=log, stderr=proc.STDOUT)
            self.processes.append(process)
            if not proc.wait_for_socket(socket, process, SOCKET_WAIT):
                self.stop()
                raise MachineError(
                    f"{self.name}: virtiofsd for {share.source} (guest {share.target}) did not start: "
                    + proc.file_tail(log_path)
                )

    def stop(self) -> None:
        for process in self.processes:
            process.stop(grace=2.0)
        self.processes.clear()
        for share in self.shares:
            self.socket_path(share).unlink(missing_ok=True)
