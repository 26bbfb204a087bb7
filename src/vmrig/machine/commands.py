"""Running commands from a script: succeed, fail, sleep, and the one polling loop (wait_until_*)."""

from __future__ import annotations

import time
from collections.abc import Callable

from vmrig.errors import RequestedAssertionFailed
from vmrig.machine.base import DEFAULT_TIMEOUT, MachineBase
from vmrig.timeouts import Duration, seconds


class Commands(MachineBase):
    """succeed/fail/sleep/wait_until_* over the abstract `execute`."""

    def succeed(self, *commands: str, timeout: Duration | None = None) -> str:
        """Runs each command; raises RequestedAssertionFailed if one fails."""
        __tracebackhide__ = True
        output = ""
        for command in commands:
            with self.nested(f"must succeed: {command}"):
                status, out = self.execute(command, timeout=timeout)
                if status != 0:
                    self.log(f"output: {out}")
                    raise RequestedAssertionFailed(f"command `{command}` failed (exit code {status})")
                output += out
        return output

    def fail(self, *commands: str, timeout: Duration | None = None) -> str:
        """Runs each command; raises RequestedAssertionFailed if one succeeds."""
        __tracebackhide__ = True
        output = ""
        for command in commands:
            with self.nested(f"must fail: {command}"):
                status, out = self.execute(command, timeout=timeout)
                if status == 0:
                    raise RequestedAssertionFailed(f"command `{command}` unexpectedly succeeded")
                output += out
        return output

    def sleep(self, secs: Duration) -> None:
        """Sleeps in guest time (which may run slower than the host's); not scaled."""
        self.succeed(f"sleep {seconds(secs):g}")

    def _poll(self, what: str, check: Callable[[bool], bool], timeout: Duration) -> None:
        """Calls check(last_try) until it returns True, pausing briefly in between.

        As in NixOS, the clock starts once the machine is up: a wait right
        after start_all() is not charged the boot. `timeout` is scaled under
        emulation; the error says "action timed out after ...", as NixOS's.
        """
        __tracebackhide__ = True
        self.run_callbacks()
        self._run_boot_hooks()
        limit = self.config.timeout_scale(timeout)
        started = time.monotonic()
        deadline = started + limit
        pause = 0.1
        while time.monotonic() < deadline:
            if check(False):
                return
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 1.0)
        if check(True):
            return
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - started:.2f} seconds "
            f"(timeout={self.config.timeout_scale.note(timeout, limit)}) waiting for {what}"
        )

    def wait_until_succeeds(self, command: str, timeout: Duration = DEFAULT_TIMEOUT) -> str:
        """Repeats `command` until it succeeds; returns its output."""
        __tracebackhide__ = True
        output = ""

        def ok(last_try: bool) -> bool:
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            if status != 0 and last_try:
                self.log(f"last try: command `{command}` failed (exit code {status}): {output}")
            return status == 0

        with self.nested(f"waiting for success: {command}"):
            self._poll(f"`{command}` to succeed", ok, timeout)
        return output

    def wait_until_fails(self, command: str, timeout: Duration = DEFAULT_TIMEOUT) -> str:
        """Repeats `command` until it fails; returns its output."""
        __tracebackhide__ = True
        output = ""

        def failed(_last_try: bool) -> bool:
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            return status != 0

        with self.nested(f"waiting for failure: {command}"):
            self._poll(f"`{command}` to fail", failed, timeout)
        return output
