"""A machine's card on a vlan: its name in the guest, its MAC, QEMU's ids for it, its switch's socket."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def interface_name(index: int) -> str:
    """The guest's name of a node's `index`th vlan card: eth1, eth2, ... (eth0 is QEMU's user network)."""
    return f"eth{index}"


def switch_socket(run_dir: Path, vlan: int) -> Path:
    """The socket directory of `vlan`'s vde_switch in the run's private directory."""
    return run_dir / f"vde{vlan}.ctl"


def nic_id(index: int) -> str:
    """QEMU's id of a machine's `index`th virtio-net device, 0 being the user network's.

    The name QEMU gives NixOS's cards, which have no id: scripts write
    `send_monitor_command("set_link virtio-net-pci.1 off")`, as NixOS's block() does.
    """
    return f"virtio-net-pci.{index}"


USER_NETDEV = "user.0"
"""QEMU's id of the user network's backend (-netdev user), NixOS's name for it."""


@dataclass(frozen=True)
class NetworkCard:
    """A machine's `index`th vlan card: `eth<index>` in the guest, plugged into `vlan`'s switch.

    The network plan makes it (`vmrig.net.plan.network_cards`); QEMU's command
    line, block()/unblock(), the script's `network` and the booted snapshot's
    key all read it.
    """

    index: int
    vlan: int
    mac: str
    switch: Path  # the vde_switch's socket directory (see switch_socket): differs from run to run

    @property
    def name(self) -> str:
        """The guest's interface name."""
        return interface_name(self.index)

    @property
    def netdev(self) -> str:
        """QEMU's id of the card's backend (-netdev vde)."""
        return f"vlan{self.index}"

    @property
    def device(self) -> str:
        """QEMU's id of the card's virtio-net device (as set_link names it): see nic_id."""
        return nic_id(self.index)
