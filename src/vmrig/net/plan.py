"""The test network as a plan: node numbers, vlan cards, MAC and IP addresses, /etc/hosts.

Computed from the nodes alone, as in the NixOS driver: node names sorted
alphabetically get the numbers 1, 2, ...; node `n` gets, on each of its vlans
`v` (in the order of `Node.vlans`), the card `eth<i>` with MAC
`52:54:00:12:<v>:<n>` (hex) and the addresses `192.168.<v>.<n>/24` and
`2001:db8:<v>::<n>/64`, unless `Node.addresses` gives others for that vlan.
A vlan listed twice gives a second card on it, with MAC `52:54:00:13:<v>:<n>`
and only the addresses `Node.addresses["eth<i>"]` names.
Every node's first IPv4 and first IPv6 address name it in every /etc/hosts.
A machine's cards (`NetworkCard`) are made here too, once the run's
directory, where the vlans' switches listen, is known.
Nothing here knows about QEMU or the guests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path

from vmrig.image.configlayer import Interface, NodeNetwork
from vmrig.netcard import NetworkCard, interface_name, switch_socket
from vmrig.spec import Node, SpecError

__all__ = ["MAX_NODES", "NetworkPlan", "automatic_addresses", "interfaces_of", "mac_address", "network_cards"]

# Node numbers are the last byte of a MAC and of an IPv4 address.
MAX_NODES = 254


def mac_address(vlan: int, number: int, card: int = 0) -> str:
    """The MAC of node `number`'s card on `vlan`: NixOS's for the first card,
    the fourth byte counting up for a second (`card` 1), third ... on the same vlan.
    """
    return f"52:54:00:{0x12 + card:02x}:{vlan:02x}:{number:02x}"


def automatic_addresses(vlan: int, number: int) -> list[str]:
    """The addresses a node gets on a vlan unless `Node.addresses` says otherwise."""
    return [f"192.168.{vlan}.{number}/24", f"2001:db8:{vlan}::{number}/64"]


def interfaces_of(node: Node, number: int) -> tuple[Interface, ...]:
    """`eth1`, `eth2`, ...: one card per entry of `Node.vlans`, in that order.

    A card's addresses: `Node.addresses["eth<i>"]`, else for the first card on
    its vlan `Node.addresses[vlan]` or the automatic ones; a further card on
    the same vlan has none unless given by name.
    """
    interfaces = []
    for index, vlan in enumerate(node.vlans, start=1):
        card = node.vlans[: index - 1].count(vlan)
        addresses = node.addresses.get(interface_name(index))
        if addresses is None and card == 0:
            addresses = node.addresses.get(vlan)
            if addresses is None:
                addresses = automatic_addresses(vlan, number)
        addresses = addresses or []
        ipv4 = [a for a in addresses if ":" not in a]
        ipv6 = [a for a in addresses if ":" in a]
        first4 = ipv4[0] if ipv4 else None
        first6 = ipv6[0] if ipv6 else None
        more = tuple(a for a in addresses if a not in (first4, first6))
        interfaces.append(Interface(index, vlan, first4, first6, mac=mac_address(vlan, number, card), more=more))
    return tuple(interfaces)


def network_cards(interfaces: Iterable[Interface], run_dir: Path) -> list[NetworkCard]:
    """A machine's vlan cards, eth1 first: each with its interface's MAC, on its vlan's switch in `run_dir`."""
    return [
        NetworkCard(interface.index, interface.vlan, interface.mac or "", switch_socket(run_dir, interface.vlan))
        for interface in interfaces
    ]


def _bare(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip)


class NetworkPlan:
    """Numbers, cards and host names of a test's nodes."""

    def __init__(self, nodes: Mapping[str, Node]) -> None:
        names = sorted(nodes)
        if len(names) > MAX_NODES:
            raise SpecError(f"a test can have at most {MAX_NODES} nodes, this one has {len(names)}")
        self.nodes = dict(nodes)
        self.numbers = {name: number for number, name in enumerate(names, start=1)}
        self.interfaces = {name: interfaces_of(nodes[name], self.numbers[name]) for name in names}
        self._check_unique_addresses()
        hosts = []
        for name in names:
            addresses = [a for interface in self.interfaces[name] for a in interface.addresses]
            ipv4 = next((_bare(a) for a in addresses if ":" not in a), None)
            ipv6 = next((_bare(a) for a in addresses if ":" in a), None)
            if ipv4 or ipv6:
                hosts.append((name, ipv4, ipv6))
        self.hosts = tuple(hosts)

    def reachable(self, name: str, node: Node | None = None) -> list[str]:
        """The other nodes `name` shares a vlan with, directly or through nodes between: sorted names.

        `node` is the machine's Node when it is not one of the plan's (create_machine).
        """
        seen = {name}
        vlans = set((node or self.nodes[name]).vlans)
        grew = True
        while grew:
            grew = False
            for other, node in self.nodes.items():
                if other not in seen and vlans & set(node.vlans):
                    seen.add(other)
                    vlans |= set(node.vlans)
                    grew = True
        return sorted(seen - {name})

    def _check_unique_addresses(self) -> None:
        owners: dict[tuple[int, str], tuple[str, int]] = {}
        for name, interfaces in self.interfaces.items():
            for interface in interfaces:
                for address in interface.addresses:
                    key = (interface.vlan, _bare(address))
                    other, index = owners.setdefault(key, (name, interface.index))
                    if other == name and index != interface.index:
                        raise SpecError(f"node {name!r} has the address {key[1]} on vlan {key[0]} twice")
                    if other != name:
                        raise SpecError(
                            f"nodes {other!r} and {name!r} both have the address {key[1]} on vlan {key[0]}; "
                            "give one of them other Node.addresses"
                        )

    def vlan_numbers(self) -> list[int]:
        return sorted({vlan for node in self.nodes.values() for vlan in node.vlans})

    def node_network(self, name: str, number: int, node: Node, *, outside_access: bool = False) -> NodeNetwork:
        """What node `name` (number `number`) needs to know of the network.

        Works for machines outside the plan too (create_machine): they get
        their cards and everyone's names, but nobody else knows theirs.
        """
        interfaces = self.interfaces[name] if name in self.interfaces else interfaces_of(node, number)
        gateways = tuple(gateway for gateway in (node.default_gateway, node.default_gateway6) if gateway)
        return NodeNetwork(
            number=number, interfaces=interfaces, hosts=self.hosts, outside_access=outside_access, gateways=gateways
        )
