"""The one QEMU command line: a MachineConfig and the run's descriptors in, QEMU's argv out.

Sidecars add the arguments of the devices they own (virtiofs); everything
else QEMU is told comes from here, as typed values of MachineConfig (port
forwards, vlan cards, ...); the environment's QEMU_OPTS and QEMU_NET_OPTS
arrive through the config too (the driver reads them).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from vmrig import proc
from vmrig.hostnet import LOOPBACK
from vmrig.machine.config import KERNEL_PARAMS, MachineConfig, Viewer
from vmrig.netcard import USER_NETDEV, nic_id
from vmrig.spec import ROOT_DISK_SERIAL

QBOOT = Path("/usr/share/qemu/qboot.rom")
# The guest CPU under TCG: QEMU's qemu64 with what x86-64-v2 adds to it (qemu64
# has LAHF/SAHF and SSE3 already); see command(). Without qemu64's SVM flag:
# for it udev loaded kvm_amd at every boot, and `modprobe kvm_amd` took 1.9 s
# of an emulated guest's CPU here, for a nested KVM that emulation cannot run.
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,-svm"
# Each network card's options. romfile=: no network boot ROM (the kernel boots
# directly); each card's ROM was 250 KB of a booted snapshot's device state (906
# KB with two cards, 405 without), which a restore loads: about 6 ms of it.
# guest_announce=off: after a restore QEMU sends the card's announcement itself;
# the guest's driver spent 62 ms of guest CPU on it (a traced restore), and three
# nodes restored together took 959 ms instead of 1115 (medians of 5, beside
# another test's VMs).
NIC_OPTIONS = "romfile=,guest_announce=off"


def command(
    c: MachineConfig,
    *,
    initrd: Path,
    overlay: Path,
    shell_fd: int,
    qmp_fd: int,
    data_fd: int,
    allow_reboot: bool,
    shell_port_fd: int | None = None,
    control_fd: int | None = None,
    ram: tuple[Path, bool] | None = None,
    incoming: bool = False,
    empty_disks: Sequence[Path] = (),
) -> list[str]:
    """QEMU's command line. `ram`: guest memory in that file (shared, or mapped
    copy-on-write), for snapshots; `incoming`: wait for a saved state (restore);
    `empty_disks`: the qcow2 files of the config's empty disks, in order."""
    if len(empty_disks) != len(c.empty_disks):
        raise ValueError(f"{c.name}: {len(c.empty_disks)} empty disks, {len(empty_disks)} files for them")
    params = [*KERNEL_PARAMS, *c.kernel_params]
    cmd: list[str] = [
        proc.require_tool("qemu-system-x86_64"),
        "-name",
        c.name,
        "-nodefaults",
        "-no-user-config",
        *_viewer_args(c.viewer if c.display else None),
        "-accel",
        # Under TCG, a thread per vCPU (QEMU's default for x86 guests on x86 hosts);
        # QEMU 7.2's guests died of it, QEMU 10's do not (see spec.default_cores).
        c.accel,
        # Under TCG, x86-64-v2 (what Debian's software may use: haproxy needs cmpxchg16b;
        # QEMU 7.2's TCG corrupted RFLAGS in it, 9 of 15 boots died, hence vmrig's
        # QEMU >= 10, see accel.check_qemu_version). Not `max`: measured here side by
        # side, `max` took 0.45 s longer to the first command (5.73 against 5.28 s) and
        # 17 ms longer to restore a booted snapshot (273 against 256 ms), 25 ms of that
        # for 5-level paging (la57), whose page walks each restore's empty TLB repeats.
        "-cpu",
        "host" if c.accel == "kvm" else TCG_CPU,
        # qboot, a minimal firmware for direct kernel boot, starts faster than SeaBIOS;
        # but it runs no VGA BIOS, so a machine with a display boots through SeaBIOS.
        *(["-bios", str(QBOOT)] if QBOOT.exists() and not c.display else []),
        # Standard VGA: its text mode shows tty1 with the cloud kernels (vgacon), and
        # QMP's screendump reads it without any window (-display none). Graphical
        # modes default to 1024x768, the resolution of NixOS test machines.
        *(["-device", "VGA,xres=1024,yres=768"] if c.display else []),
        "-m",
        str(c.memory_mib),
        "-smp",
        str(c.cores),
        "-kernel",
        str(c.kernel),
        "-initrd",
        str(initrd),
        "-append",
        " ".join(params),
        # The root disk first of the virtio disks, so it is /dev/vda before any empty disk
        # (QEMU adds an if=virtio drive's device after every -device); serial as on NixOS.
        "-drive",
        f"file={overlay},if=none,id=root,format=qcow2,discard=unmap",
        "-device",
        f"virtio-blk-pci,drive=root,serial={ROOT_DISK_SERIAL}",
        *_empty_disk_args(c, empty_disks),
        "-device",
        "virtio-serial",
        "-chardev",
        f"socket,id=shell,fd={shell_fd}",
        "-device",
        "virtconsole,chardev=shell",
        "-chardev",
        f"socket,id=data,fd={data_fd}",
        "-device",
        "virtserialport,chardev=data,name=vmrig.data",
        *(
            [
                "-chardev",
                f"socket,id=tty,fd={shell_port_fd}",
                "-device",
                "virtserialport,chardev=tty,name=vmrig.shell",
            ]
            if shell_port_fd is not None
            else []
        ),
        *(
            [
                "-chardev",
                f"socket,id=ctl,fd={control_fd}",
                "-device",
                "virtserialport,chardev=ctl,name=vmrig.ctl",
            ]
            if control_fd is not None
            else []
        ),
        "-chardev",
        f"socket,id=qmp,fd={qmp_fd}",
        "-mon",
        "chardev=qmp,mode=control",
        "-serial",
        "stdio",
        "-device",
        "virtio-rng-pci",
        "-netdev",
        user_netdev(c),
        "-device",
        f"virtio-net-pci,netdev={USER_NETDEV},mac=52:54:00:12:34:56,id={nic_id(0)},{NIC_OPTIONS}",
    ]
    for card in c.vlan_cards:
        cmd += [
            "-netdev",
            f"vde,id={card.netdev},sock={card.switch}",
            "-device",
            f"virtio-net-pci,netdev={card.netdev},mac={card.mac},id={card.device},{NIC_OPTIONS}",
        ]
    if c.vsock_cid is not None:
        cmd += ["-device", f"vhost-vsock-pci,guest-cid={c.vsock_cid}"]
    for sidecar in c.sidecars:
        cmd += sidecar.qemu_args()
    if ram is not None:
        path, shared = ram
        cmd += [
            "-object",
            f"memory-backend-file,id=ram0,size={c.memory_mib}M,mem-path={path},share={'on' if shared else 'off'}",
            "-machine",
            "memory-backend=ram0",
        ]
    if incoming:
        cmd += ["-incoming", "defer"]
    if not allow_reboot:
        cmd.append("-no-reboot")
    cmd += c.qemu_options
    return cmd


def _empty_disk_args(c: MachineConfig, files: Sequence[Path]) -> list[str]:
    """NixOS's emptyDiskImages drives: virtio disks after the root disk; write errors reach the guest."""
    args: list[str] = []
    for index, (disk, path) in enumerate(zip(c.empty_disks, files, strict=True)):
        drive = f"empty{index}"
        args += ["-drive", f"file={path},if=none,id={drive},format=qcow2,werror=report"]
        serial = f",serial={disk.serial}" if disk.serial is not None else ""
        args += ["-device", f"virtio-blk-pci,drive={drive}{serial}"]
    return args


@functools.cache
def version_text(qemu: str) -> str:
    """What `qemu --version` prints, asked once per process (a booted snapshot's key holds it)."""
    return proc.run([qemu, "--version"], timeout=30).stdout.decode(errors="replace")


def user_netdev(config: MachineConfig) -> str:
    """The -netdev value of the user-mode network (its card is nic_id(0))."""
    parts = ["user", f"id={USER_NETDEV}", f"restrict={'off' if config.outside_access else 'on'}"]
    parts += [f"hostfwd={_forward_rule(host_port, guest_port)}" for host_port, guest_port in config.forwards]
    if config.user_net_options:
        parts.append(config.user_net_options)
    return ",".join(parts)


def hostfwd_add(host_port: int, guest_port: int) -> str:
    """The monitor (HMP) command that adds a forward to the running user network (Machine.forward_port)."""
    return f"hostfwd_add {USER_NETDEV} {_forward_rule(host_port, guest_port)}"


def _forward_rule(host_port: int, guest_port: int) -> str:
    return f"tcp:{LOOPBACK}:{host_port}-:{guest_port}"


def probe_command(qemu: str, kernel: Path) -> list[str]:
    """Boots `kernel` with no root and no disk under KVM, its messages on stdout (vmrig.accel's probe)."""
    return [
        qemu,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 loglevel=4",
    ]


def _viewer_args(viewer: Viewer | None) -> list[str]:
    """Headless, a window, or a VNC server on the loopback address only (no password: nothing
    beyond this host can reach it)."""
    if viewer is None:
        return ["-display", "none"]
    if viewer.window is not None:
        return ["-display", viewer.window]
    return ["-display", "none", "-vnc", f"{LOOPBACK}:{viewer.vnc_display or 0}"]
