"""The backdoor channel: a command line to the guest's root shell, its output and status back.

A command line goes in on the virtio console /dev/hvc0 (see guest/protocol.bash);
the command's stdout comes back on the data port between two markers that
carry a random nonce, then its exit status (vmrig.channel.FrameDecoder).
"""

from __future__ import annotations

import math
import secrets
import select
import shlex
import time

from vmrig.channel import FrameDecoder
from vmrig.errors import MachineError
from vmrig.machine.base import DEFAULT_TIMEOUT, MachineBase
from vmrig.timeouts import Duration

# How long a command may take to end once cancelled: its watchdog sends
# SIGTERM, then SIGKILL 5 s later.
CANCEL_WAIT = 10.0
# How long the guest may take to read a command's input (copy_from_host).
DATA_TIMEOUT = 300.0


class Backdoor(MachineBase):
    """execute() and the wire protocol under it."""

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: Duration | None = DEFAULT_TIMEOUT,
    ) -> tuple[int, str]:
        """Runs `command` as root in a fresh subshell; returns (status, stdout).

        `timeout` (seconds or a timedelta, scaled under emulation; None: no
        limit) counts from when the command starts, after the machine has
        booted, as in NixOS; a command that runs out of time is killed with
        its whole process group and gives status 124.
        stdout is decoded as UTF-8 with undecodable bytes replaced by U+FFFD,
        as NixOS's driver does (with check_return=False too, where NixOS
        raises UnicodeDecodeError); execute_bytes() gives the bytes.
        With `check_return=False`, as in NixOS, the status is -1, and a
        command that ends the machine (`poweroff -f`, a reboot without
        allow_reboot) returns what it printed instead of raising
        MachineError when QEMU exits under it.
        """
        status, data = self.execute_bytes(command, timeout=timeout, check_output=check_output, gone_ok=not check_return)
        if not check_output:
            return -2, ""
        output = data.decode(errors="replace")
        if not check_return:
            return -1, output
        return status, output

    def execute_bytes(
        self,
        command: str,
        timeout: Duration | None = DEFAULT_TIMEOUT,
        *,
        check_output: bool = True,
        gone_ok: bool = False,
    ) -> tuple[int, bytes]:
        """execute(), with stdout as the bytes the command wrote (binary data, any encoding).

        vmrig's own; returns (status, stdout), or (-2, b"") without waiting
        for the command when `check_output` is False. `gone_ok`: QEMU exiting
        before the command ends gives (-1, what it printed), not MachineError.
        """
        self.run_callbacks()
        self._run_boot_hooks()
        limit = None if timeout is None else self.config.timeout_scale(timeout)
        return self._run(command, timeout=limit, wait=check_output, gone_ok=gone_ok)

    def _run(
        self,
        command: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        stdin: bytes | None = None,
        wait: bool = True,
        moves_clock: bool = False,
        gone_ok: bool = False,
    ) -> tuple[int, bytes]:
        """Runs `command` in the guest; `timeout` in seconds (None or 0: no limit).

        `moves_clock`: the command sets the guest's wall clock (the fix-up). The
        guest's watchdog times a command by that clock, so a jump of more than
        `timeout` would end the command at once (status 124, seen in CI); the
        host alone bounds such a command, by its monotonic clock.
        """
        with self._command_lock:
            self.connect()
            decoder = self._send_command(command, timeout=None if moves_clock else timeout, stdin=stdin)
            if not wait:
                return -2, b""
            try:
                return self._collect(decoder, command, timeout, gone_ok=gone_ok)
            except KeyboardInterrupt:
                self._cancel(decoder, command)
                raise

    def _send_command(self, command: str, *, timeout: float | None, stdin: bytes | None = None) -> FrameDecoder:
        """Sends `command` (and its stdin) without waiting; the decoder reads its answer (see _collect)."""
        nonce = secrets.token_hex(8)
        line = f"__vmrig_run {nonce} {math.ceil(timeout or 0)} {shlex.quote(command)}"
        if stdin is not None:
            line += f" {len(stdin)}"
        self._send(line.encode() + b"\n")
        if stdin:
            self._send_data(stdin, command)
        return FrameDecoder(nonce)

    def _cancel(self, decoder: FrameDecoder, command: str) -> None:
        """Ends the guest command `decoder` waits for (Ctrl-C at a prompt) and reads the rest of its output.

        The guest's watchdog stops the command's process group; the machine
        and the channel stay as they were, so the next command answers at once.
        A second Ctrl-C while this waits gives up waiting; the next command
        then skips the rest of this one's output (its frame carries this nonce).
        """
        if self._control is None:
            return
        self.log(f"interrupted: stopping `{command}` in the guest")
        try:
            self._control.sendall(f"{decoder.nonce}\n".encode())
            status, _ = self._collect(decoder, command, CANCEL_WAIT, slack=0)
        except (OSError, MachineError, KeyboardInterrupt):
            return
        self.log(f"`{command}` stopped (exit code {status})")

    def _send_data(self, data: bytes, command: str) -> None:
        """Feeds a command's stdin through the data port; the guest reads exactly len(data)."""
        assert self._data is not None
        self._data.settimeout(DATA_TIMEOUT)
        try:
            self._data.sendall(data)
        except OSError as error:
            raise self._broken(f"cannot send input for `{command}` ({error}); {self._exit_note()}") from None

    def _collect(
        self, decoder: FrameDecoder, command: str, timeout: float | None, slack: float = 60, *, gone_ok: bool = False
    ) -> tuple[int, bytes]:
        """Reads the frame `decoder` waits for: (status, output).

        The guest enforces `timeout`; `timeout + slack` only catches a guest
        that stopped answering (MachineError). QEMU's exit before the frame
        ends is MachineError, or (-1, the output so far) if `gone_ok`.
        """
        output = bytearray()
        deadline = None if not timeout else time.monotonic() + timeout + slack
        while True:
            for chunk in decoder.feed(bytes(self._shell_buffer)):
                output += chunk
            self._shell_buffer.clear()
            if decoder.finished:
                if decoder.discarded:
                    self.log(f"discarding {decoder.discarded} bytes of output from earlier background processes")
                self._shell_buffer += decoder.remainder
                self.stalled = False
                return decoder.status or 0, bytes(output)
            if deadline is not None and time.monotonic() > deadline:
                limit = (timeout or 0) + slack
                self.stalled = True
                raise self._broken(f"no answer from the backdoor shell to `{command}` within {limit:g} s")
            if not self._receive(1.0):
                self.connected = False
                if gone_ok:
                    self.log(f"{self._exit_note()} while running `{command}`")
                    for chunk in decoder.close():  # what it held back for a possible end marker
                        output += chunk
                    return -1, bytes(output)
                raise self._broken(f"{self._exit_note()} while running `{command}`")

    def _receive(self, wait: float, *, console: bool = False) -> bool:
        """Reads what the guest sent within `wait` seconds; False once QEMU is gone.

        Command output arrives on the data port; only the ready line comes on
        the shell's console: QEMU drops console output when the reader is slow.
        """
        sock = self._shell if console else self._data
        buffer = self._console_buffer if console else self._shell_buffer
        assert sock is not None
        ready, _, _ = select.select([sock], [], [], wait)
        if ready:
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                buffer += chunk
                return True
            return False
        return self._alive()

    def _send(self, data: bytes) -> None:
        assert self._shell is not None
        try:
            self._shell.sendall(data)
        except OSError as error:
            raise self._broken(f"cannot write to the backdoor shell ({error}); {self._exit_note()}") from None
