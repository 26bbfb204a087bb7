"""Machine: the QEMU machine and the whole NixOS script API, composed of the parts in this package."""

from __future__ import annotations

import socket

from vmrig.errors import MachineError
from vmrig.machine import interact
from vmrig.machine.files import Files
from vmrig.machine.lifecycle import Lifecycle
from vmrig.machine.screen import Screen
from vmrig.machine.systemd import Systemd
from vmrig.machine.terminal import Terminal
from vmrig.machine.waits import Waits


class Machine(Lifecycle, Systemd, Waits, Files, Terminal, Screen):
    """A NixOS-test-driver-compatible machine."""

    # -- interactive use (see vmrig.machine.interact) ----------------------------

    def shell_interact(self, address: str | None = None) -> None:
        """A root login shell on a pseudo-terminal in the guest, on this terminal or a socat address.

        Ctrl-D (or `exit`) ends it; the machine keeps running.
        """
        interact.shell_interact(self, address, term=self.config.host_term)

    def console_interact(self) -> None:
        """Types stdin on the serial console and shows its lines, until end of input (Ctrl-D)."""
        interact.console_interact(self)

    def shell_port(self) -> socket.socket:
        """The host end of the guest's vmrig.shell port (for vmrig.machine.interact)."""
        self.connect()
        if self._shell_port is None:
            raise MachineError(f"{self.name}: this machine has no interactive shell port")
        return self._shell_port
