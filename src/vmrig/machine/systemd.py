"""The systemd part of the script API: systemctl, unit info and state, waiting for units."""

from __future__ import annotations

import shlex
import time

from vmrig.errors import RequestedAssertionFailed
from vmrig.machine.base import DEFAULT_TIMEOUT
from vmrig.machine.commands import Commands
from vmrig.timeouts import Duration

UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".target",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
    ".slice",
    ".scope",
)


# Why a unit cannot start, when its load state says it all.
_LOAD_STATE_NOTES = {
    "not-found": " (no such unit)",
    "masked": (
        " (the unit is masked: `systemctl unmask` it, e.g. in Node.build_commands; vmrig's base image masks"
        " a few units, see the README's 'How a vmrig guest differs from a stock Debian boot')"
    ),
}


def wait_unit_for(unit: str) -> str:
    """The instance of vmrig-wait@.target that waits for `unit`.

    Any unit name is a valid instance name, so it goes in as it is; a name
    without a suffix means a service, as for systemctl.
    """
    if not unit.endswith(UNIT_SUFFIXES):
        unit += ".service"
    return f"vmrig-wait@{unit}.target"


class Systemd(Commands):
    """systemctl, get_unit_info, wait_for_unit and their NixOS relatives."""

    def systemctl(self, q: str, user: str | None = None) -> tuple[int, str]:
        if user is not None:
            q = q.replace("'", "\\'")
            return self.execute(
                f"su -l {user} --shell /bin/sh -c $'XDG_RUNTIME_DIR=/run/user/`id -u` systemctl --user {q}'"
            )
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit: str, user: str | None = None) -> dict[str, str]:
        status, lines = self.systemctl(f'--no-pager show "{unit}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'retrieving systemctl info for unit "{unit}"'
                + ("" if user is None else f' under user "{user}"')
                + f" failed with exit code {status}"
            )
        info: dict[str, str] = {}
        for line in lines.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def get_unit_property(self, unit: str, property: str, user: str | None = None) -> str:
        status, output = self.systemctl(f'--no-pager show "{unit}" --property="{property}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'retrieving systemctl property "{property}" for unit "{unit}"'
                + ("" if user is None else f' under user "{user}"')
                + f" failed with exit code {status}"
            )
        key, _, value = output.rstrip("\n").partition("=")
        if key != property:
            raise RequestedAssertionFailed(f'unexpected output of systemctl show for property "{property}"')
        return value

    def _unit_failure_details(self, unit: str, user: str | None) -> str:
        _, status = self.systemctl(f'--no-pager --full status "{unit}"', user)
        journal_cmd = f"journalctl --no-pager -n 20 -u {shlex.quote(unit)}"
        if user is not None:
            journal_cmd = f"journalctl --no-pager -n 20 --user-unit {shlex.quote(unit)}"
        _, journal = self.execute(journal_cmd)
        return f"\n--- systemctl status {unit}\n{status.rstrip()}\n--- last journal lines\n{journal.rstrip()}"

    def wait_for_unit(self, unit: str, user: str | None = None, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until `unit` is active; fails at once if it failed or cannot start."""
        __tracebackhide__ = True

        def active(last_try: bool) -> bool:
            info = self.get_unit_info(unit, user)
            state = info.get("ActiveState", "")
            if state == "failed":
                raise RequestedAssertionFailed(
                    f'unit "{unit}" reached state "failed"' + self._unit_failure_details(unit, user)
                )
            if state == "inactive":
                _, jobs = self.systemctl("list-jobs --full 2>&1", user)
                # The unit's job may have finished between the two queries: look again.
                if "No jobs" in jobs:
                    info = self.get_unit_info(unit, user)
                    state = info.get("ActiveState", "")
                if "No jobs" in jobs and state == "inactive":
                    note = _LOAD_STATE_NOTES.get(info.get("LoadState", ""))
                    raise RequestedAssertionFailed(
                        f'unit "{unit}" is inactive and there are no pending jobs'
                        + (note if note is not None else self._unit_failure_details(unit, user))
                    )
            if last_try and state != "active":
                self.log(f'unit "{unit}" is still in state "{state}"')
            if state != "active" and user is None and not last_try:
                self._await_unit_job(unit, deadline)
            return state == "active"

        self._run_boot_hooks()  # the deadline starts once the machine is up, as _poll's
        deadline = time.monotonic() + self.config.timeout_scale(timeout)
        with self.nested(f"waiting for unit {unit}" + ("" if user is None else f" with user {user}")):
            self._poll(f'unit "{unit}" to become active', active, timeout)

    def _await_unit_job(self, unit: str, deadline: float) -> None:
        """Blocks until the job queued for `unit` (if any) has finished.

        Starting vmrig-wait@<unit>.target, a target ordered after `unit`, lets
        PID 1 do the waiting: under emulation each `systemctl` call of a
        polling loop costs the booting guest about 0.2 s of its CPU.
        """
        left = int(deadline - time.monotonic())
        if left >= 1:
            # `left` is on the scaled deadline already: _run, not execute, which would scale it again.
            self._run(f"systemctl start {shlex.quote(wait_unit_for(unit))}", timeout=left)

    def require_unit_state(self, unit: str, require_state: str = "active") -> None:
        __tracebackhide__ = True
        with self.nested(f"checking if unit '{unit}' has reached state '{require_state}'"):
            info = self.get_unit_info(unit)
            state = info["ActiveState"]
            if state != require_state:
                raise RequestedAssertionFailed(
                    f"Expected unit '{unit}' to to be in state '{require_state}' but it is in state '{state}'"
                )

    def start_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"start {jobname}", user)

    def stop_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"stop {jobname}", user)

    def wait_for_job(self, jobname: str) -> None:
        self.wait_for_unit(jobname)
