"""QEMU's monitor from a script: monitor commands, QMP events, keys, port forwards, cables."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from vmrig.errors import ArgumentError, MachineError
from vmrig.machine import qemu
from vmrig.machine.base import MachineBase
from vmrig.machine.keys import CHAR_TO_KEY
from vmrig.netcard import NetworkCard
from vmrig.qmp import QMPSession
from vmrig.timeouts import Duration


class Monitor(MachineBase):
    """send_monitor_command, send_key/send_chars, forward_port, block/unblock, wait_for_qmp_event."""

    def send_monitor_command(self, command: str) -> str:
        """Runs a QEMU monitor (HMP) command and returns its output."""
        self.run_callbacks()
        if self.qmp is None:
            raise MachineError(f"{self.name}: not running, cannot send monitor command {command!r}")
        with self.nested(f"sending monitor command: {command}"):
            return self.qmp.human_monitor_command(command)

    def _monitor_ok(self, command: str) -> None:
        """Runs an HMP command that prints nothing when it works; MachineError with its text otherwise."""
        reply = self.send_monitor_command(command).strip()
        if reply:
            raise MachineError(f"{self.name}: {command}: {reply}")

    @property
    def qmp_client(self) -> QMPSession | None:
        """NixOS's `machine.qmp_client`: QMP for scripts (`send(cmd, args)`), None while not running."""
        return None if self.qmp is None else self.qmp.session

    def wait_for_qmp_event(
        self, event_filter: Callable[[dict[str, Any]], bool], timeout: Duration = 60 * 10
    ) -> dict[str, Any]:
        if self.qmp is None:
            raise MachineError(f"{self.name}: QMP is not ready yet (is the machine started?)")
        # As in NixOS, the events it passes over are gone: a later wait does not see them.
        return self.qmp.wait_for_event(event_filter, self.config.timeout_scale(timeout), skip_others=True)

    def send_key(self, key: str, delay: float | None = 0.01, log: bool = True) -> None:
        """Presses and releases `key` (QEMU's sendkey names, or a character), then waits `delay` seconds.

        The delay is scaled like a timeout (x5 under TCG): an emulated guest
        drains the keyboard more slowly, and at NixOS's 10 ms QEMU's PS/2
        queue overflowed after about 220 typed characters, losing keys (a
        Shift release among them); at 50 ms, 1,200 came through intact.
        """
        key = CHAR_TO_KEY.get(key, key)
        context = self.nested(f"sending key {key!r}") if log else contextlib.nullcontext()
        with context:
            self.send_monitor_command(f"sendkey {key}")
            if delay is not None:
                time.sleep(self.config.timeout_scale(delay))

    def send_chars(self, chars: str, delay: float | None = 0.01) -> None:
        """Types `chars`, each with send_key (and its scaled `delay`)."""
        with self.nested(f"sending keys {chars!r}"):
            for char in chars:
                self.send_key(char, delay, log=False)

    def forward_port(self, host_port: int = 8080, guest_port: int = 80) -> None:
        """Forwards 127.0.0.1:host_port on the host to guest_port in the guest."""
        reply = self.send_monitor_command(qemu.hostfwd_add(host_port, guest_port))
        if reply.strip():
            raise MachineError(f"{self.name}: forwarding port {host_port} failed: {reply.strip()}")

    def block(self, *, vlan: int | None = None, interface: str | None = None) -> None:
        """Pulls the cable of a vlan card: the first one (eth1) as in NixOS, or the one on `vlan`
        (`block(vlan=2)`), or `interface` (`block(interface="eth2")`).

        The guest sees the link go down; nothing goes in or out until unblock().
        """
        self._set_link(self._vlan_card("block", vlan, interface), "off")

    def unblock(self, *, vlan: int | None = None, interface: str | None = None) -> None:
        """Plugs a card block() unplugged back in (same arguments)."""
        self._set_link(self._vlan_card("unblock", vlan, interface), "on")

    def _vlan_card(self, what: str, vlan: int | None, interface: str | None) -> NetworkCard:
        """The card that `vlan` (its first card there) or `interface` (or neither: eth1) names."""
        cards = self.config.vlan_cards
        if vlan is not None and interface is not None:
            raise ArgumentError(f"{self.name}.{what}(): give vlan= or interface=, not both")
        if not cards:
            raise ArgumentError(f"{self.name}.{what}(): the machine is on no vlan (Node.vlans is empty)")
        if interface is not None:
            named = [card for card in cards if card.name == interface]
            if not named:
                names = ", ".join(card.name for card in cards)
                raise ArgumentError(f"{self.name}.{what}(): no vlan interface {interface!r}; it has {names}")
            return named[0]
        if vlan is not None:
            on_vlan = [card for card in cards if card.vlan == vlan]
            if not on_vlan:
                vlans = [card.vlan for card in cards]
                raise ArgumentError(f"{self.name}.{what}(): the machine is not on vlan {vlan}; its vlans: {vlans}")
            return on_vlan[0]
        return cards[0]

    def _set_link(self, card: NetworkCard, state: str) -> None:
        reply = self.send_monitor_command(f"set_link {card.device} {state}")
        if reply.strip():
            raise MachineError(f"{self.name}: set_link {card.device} {state} failed: {reply.strip()}")
