"""Waiting in scripts for files, ports, sockets and console text; typing on the serial console."""

from __future__ import annotations

import math
import queue
import re
import shlex
import time

from vmrig.errors import MachineError, RequestedAssertionFailed
from vmrig.machine.base import DEFAULT_TIMEOUT
from vmrig.machine.commands import Commands
from vmrig.timeouts import Duration

# s (scaled under emulation): how long one port probe waits for an answer to its SYN.
PROBE_CONNECT = 1.0


class Waits(Commands):
    """wait_for_file, wait_for_open_port, wait_for_console_text and the like."""

    def wait_for_file(self, filename: str, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        __tracebackhide__ = True

        def exists(_last_try: bool) -> bool:
            status, _ = self.execute(f"test -e {filename}")
            return status == 0

        with self.nested(f"waiting for file '{filename}'"):
            self._poll(f"file '{filename}'", exists, timeout)

    def _port_answers(self, addr: str, port: int) -> bool:
        """Whether a TCP connection to `addr`:`port` from the guest is accepted (nc -z, as NixOS probes).

        Bounded as NixOS's probe is not: a host that drops the SYNs held a
        probe for the kernel's SYN retries (about 130 s here), far past a
        wait's own timeout. PROBE_CONNECT s, scaled under emulation, is
        plenty for an answer from a guest beside this one.
        """
        seconds = max(1, math.ceil(self.config.timeout_scale(PROBE_CONNECT)))  # cut by the global timeout: >= 1
        status, _ = self.execute(f"nc -z -w {seconds} {addr} {port}")
        return status == 0

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until a TCP connection to `addr`:`port`, made in the guest, is accepted.

        As NixOS's (nc -z; `addr` as nc reads it, a name or an address), except
        that one try that gets no answer gives up after PROBE_CONNECT s (scaled).
        Raises RequestedAssertionFailed after `timeout` (seconds or a
        timedelta, scaled under emulation).
        """
        __tracebackhide__ = True

        def open_(_last_try: bool) -> bool:
            return self._port_answers(addr, port)

        with self.nested(f"waiting for TCP port {port} on {addr}"):
            self._poll(f"TCP port {port} on {addr} to open", open_, timeout)

    def wait_for_closed_port(self, port: int, addr: str = "localhost", timeout: Duration = DEFAULT_TIMEOUT) -> None:
        __tracebackhide__ = True

        def closed(_last_try: bool) -> bool:
            return not self._port_answers(addr, port)

        with self.nested(f"waiting for TCP port {port} on {addr} to be closed"):
            self._poll(f"TCP port {port} on {addr} to close", closed, timeout)

    def wait_for_open_unix_socket(
        self, addr: str, is_datagram: bool = False, timeout: Duration = DEFAULT_TIMEOUT
    ) -> None:
        __tracebackhide__ = True
        nc_flags = "-uU" if is_datagram else "-U"

        def open_(_last_try: bool) -> bool:
            status, _ = self.execute(f"nc {nc_flags} -z {shlex.quote(addr)}")
            return status == 0

        with self.nested(f"waiting for UNIX socket {addr}"):
            self._poll(f"UNIX socket {addr}", open_, timeout)

    @property
    def full_console_log(self) -> list[str]:
        """NixOS's attribute: the console's lines since the machine last started (a live list)."""
        return self._console.lines

    @property
    def last_lines(self) -> queue.Queue[str]:
        """NixOS's attribute: a queue of the console's lines since the machine last started, for
        a script to take them off one by one (vmrig's own waits do not read it)."""
        return self._console.queue

    def get_console_log(self) -> str:
        """The whole serial console output since the machine last started."""
        return self._console.text()

    def wait_for_console_text(self, regex: str | re.Pattern[str], timeout: Duration | None = None) -> None:
        """Waits until the console text not consumed yet matches `regex` (re.search).

        The regex sees the console's lines as one text joined by newlines, so
        multi-line regexes work; `^` and `$` match at every line (re.MULTILINE,
        unless `regex` is compiled already: then its own flags),
        as they did when each line was tried alone. It also sees them joined
        with nothing between them, as NixOS's driver gives them (`a.*b` across
        two lines matches there). Beyond NixOS, the line
        being written counts too (a prompt matches before its newline), and a
        kernel or journal message that interrupted a line does not hide the
        line's text. As in NixOS, a wait consumes what it read up
        to the end of the matching line: a later wait (after a reboot, say)
        never matches the same text again. `timeout` (seconds or a timedelta,
        scaled under emulation) counts from the call; None waits for ever.
        Raises RequestedAssertionFailed on timeout, MachineError if QEMU exits.
        """
        __tracebackhide__ = True
        pattern = regex if isinstance(regex, re.Pattern) else re.compile(regex, re.MULTILINE)
        started = time.monotonic()
        limit = None if timeout is None else self.config.timeout_scale(timeout)
        console = self._console
        with self.nested(f"waiting for {regex} to appear on console"), console.cond:
            while True:
                if console.take(pattern):
                    return
                if not self._alive() and self.booted:
                    if console.reading():  # QEMU's last lines ("reboot: Power down") may still come
                        console.cond.wait(0.1)
                        continue
                    raise self._broken(f"{self._exit_note()} while waiting for {regex!r} on the console")
                remaining = None if limit is None else started + limit - time.monotonic()
                if remaining is not None and remaining <= 0:
                    assert timeout is not None and limit is not None
                    note = self.config.timeout_scale.note(timeout, limit)
                    raise RequestedAssertionFailed(
                        f"action timed out after {time.monotonic() - started:.2f} seconds "
                        f"(timeout={note}) waiting for {regex!r} on the console"
                    )
                console.cond.wait(1.0 if remaining is None else min(remaining, 1.0))

    def send_console(self, chars: str) -> None:
        """Types `chars` on the serial console (the guest's ttyS0)."""
        stdin = self._running("send_console").stdin
        if stdin is None:
            raise MachineError(f"{self.name}: send_console(): QEMU's serial input is closed")
        stdin.write(chars.encode())
        stdin.flush()
