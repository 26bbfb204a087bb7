"""What a machine is made of: MachineConfig, the Sidecar protocol, the kernel command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vmrig.netcard import NetworkCard
from vmrig.spec import EmptyDisk
from vmrig.timeouts import TimeoutScale

KERNEL_PARAMS = (
    "console=ttyS0",
    "root=/dev/vda",
    "rw",
    # Every kernel message on the serial console, as NixOS test machines print them
    # (scripts wait for boot messages); under TCG this cost no measurable boot time.
    "loglevel=7",
    "net.ifnames=0",
    "panic=1",
    "tsc=reliable",
    "no_timer_check",
    "systemd.show_status=0",
)


class Sidecar(Protocol):
    """A host process a machine needs while QEMU runs (e.g. a virtiofsd per shared directory).

    `start()` is called right before QEMU starts, from the thread that starts
    QEMU (the parent-death signal is tied to it); `stop()` once QEMU is gone.
    """

    def qemu_args(self) -> list[str]: ...

    def snapshot_blocker(self) -> str | None:
        """Why a machine with this sidecar cannot be saved in a booted snapshot; None: it can."""
        ...

    def snapshot_key_parts(self) -> list[str]:
        """What a booted snapshot of a machine with this sidecar depends on beyond its QEMU arguments."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Viewer:
    """Where a machine's screen is shown in an interactive run: a QEMU window ("gtk" or "sdl"),
    or a VNC server on the loopback address, display `vnc_display` (TCP port 5900 + it)."""

    window: str | None = None
    vnc_display: int | None = None

    def describe(self) -> str:
        if self.window is not None:
            return f"a QEMU window ({self.window})"
        port = 5900 + (self.vnc_display or 0)
        return (
            f"VNC on 127.0.0.1:{port} (vncviewer 127.0.0.1::{port}; from another host: ssh -L {port}:127.0.0.1:{port})"
        )


@dataclass
class MachineConfig:
    """Everything a machine needs to boot, in terms QEMU understands."""

    name: str
    disk: Path  # read-only base image; the machine writes to an overlay
    kernel: Path
    initrd: Path
    config_layer: bytes = b""  # appended to the initrd (see vmrig.image.configlayer)
    memory_mib: int = 1024
    cores: int = 1
    disk_mib: int = 4096
    # Disks the run makes empty (NixOS's emptyDiskImages): /dev/vdb, /dev/vdc, ...
    empty_disks: list[EmptyDisk] = field(default_factory=list)
    kernel_params: list[str] = field(default_factory=list)
    qemu_options: list[str] = field(default_factory=list)
    accel: str = "tcg"
    # The vlan cards, eth1 first (made by vmrig.net.plan.network_cards)
    vlan_cards: list[NetworkCard] = field(default_factory=list)
    # (host port, guest port): TCP on the host's loopback forwarded into the guest (user network)
    forwards: list[tuple[int, int]] = field(default_factory=list)
    user_net_options: str = ""  # appended as they are to -netdev user (QEMU_NET_OPTS)
    outside_access: bool = False
    start_command: str | None = None  # a user's own QEMU start command (create_machine)
    vsock_cid: int | None = None  # a vhost-vsock device with this guest CID (the SSH backdoor)
    # The host's ssh command line into the guest's SSH backdoor; empty: the backdoor is off.
    ssh_command: list[str] = field(default_factory=list)
    sidecars: list[Sidecar] = field(default_factory=list)  # host helpers and their QEMU arguments
    # The host directory the guest mounts at /tmp/shared (NixOS's shared_dir); None: not mounted.
    exchange_dir: Path | None = None
    timeout_scale: TimeoutScale = field(default_factory=TimeoutScale)  # applied to the script's timeouts
    # The image cache: the first start restores this configuration's booted snapshot
    # from there, or saves one once booted (see vmrig.image.snapshot). None: always boot.
    snapshot_root: Path | None = None
    # A digest of the nodes reachable on its vlans: part of the booted snapshot's key, since
    # a snapshot saved after the boot may hold what they told the guest (a router's prefix).
    neighbours: str = ""
    # A standard VGA display (screenshots, OCR); `kernel` is then a bzImage booted by SeaBIOS.
    display: bool = False
    # Where the display is shown (interactive and debugging runs); None: nowhere (headless).
    viewer: Viewer | None = None
    # How long the backdoor may take to come up before the start counts as failed.
    connect_timeout: float = 300.0
    # The host terminal's type (TERM), for shell_interact() on it; "": xterm-256color.
    host_term: str = ""
