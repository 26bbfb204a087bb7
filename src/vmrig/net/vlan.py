"""A virtual network segment: one vde_switch in hub mode per vlan number."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from vmrig import proc
from vmrig.errors import MachineError
from vmrig.log import Logger
from vmrig.netcard import switch_socket


class VLan:
    """A vde_switch whose control socket lives in the run's private directory."""

    def __init__(self, nr: int, run_dir: Path, logger: Logger) -> None:
        self.nr = nr
        self.socket_dir = switch_socket(run_dir, nr)
        self.logger = logger
        self.process: proc.Child | None = None

    def __repr__(self) -> str:
        return f"<VLan {self.nr}>"

    def start(self) -> None:
        self.logger.log(f"starting vlan {self.nr}")
        # Hub mode: a switch would drop 802.1Q-tagged frames between guests.
        self.process = proc.spawn(
            [proc.require_tool("vde_switch"), "--sock", self.socket_dir, "--dirmode", "0700", "--hub"],
            stdin=proc.PIPE,
            stdout=proc.PIPE,
            stderr=proc.STDOUT,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        # The switch answers "showinfo" on its console once its socket exists.
        self.process.stdin.write(b"showinfo\n")
        self.process.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 10
        while b"1000 Success" not in seen:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, remaining))
            chunk = os.read(self.process.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.stop()
                raise MachineError(f"vde_switch for vlan {self.nr} did not start: {seen.decode(errors='replace')}")
            seen += chunk
        if not (self.socket_dir / "ctl").exists():
            self.stop()
            raise MachineError(f"vde_switch for vlan {self.nr} has no control socket in {self.socket_dir}")

    def stop(self) -> None:
        if self.process is not None:
            self.logger.log(f"stopping vlan {self.nr}")
            self.process.close(grace=2.0)
            self.process = None
