"""How a failed test is reported: the script's own traceback, and the failing machine's console."""

from __future__ import annotations

import contextlib
from pathlib import Path

from vmrig import scripttrace
from vmrig.errors import MachineError, TestScriptError
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.machine.terminal import decode_vcsa


def report_timeout(
    logger: Logger, global_timeout: float | None, error: BaseException | None, script_path: str, machines: list[Machine]
) -> None:
    """Logs that the global timeout ended the test: where the script was, and each machine's last console lines."""
    message = f"global timeout of {global_timeout:g} seconds reached"
    lines = [message]
    frames = scripttrace.script_frames(error.__traceback__, script_path) if error is not None else []
    if frames:
        lines.append("the script was at:")
        for frame in frames:
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
    for machine in machines:
        if machine.booted or machine.boot_count:
            lines.append(f"last console lines of {machine.name}:")
            lines.append(machine.console_tail())
    logger.log_test_error("\n".join(lines))
    logger.mark_failed(message)


def report_error(logger: Logger, error: BaseException, script_path: str) -> None:
    """Logs the script's error the way a script author wants to see it."""
    logger.log_test_error(format_error(error, script_path))
    logger.mark_failed(f"{type(error).__name__}: {error}")


def format_error(error: BaseException, script_path: str) -> str:
    """The script's error as its author wants to see it: the script's own lines of the
    traceback (vmrig's frames left out), the error, and the failing machine's last
    console lines."""
    lines = ["Traceback (most recent call last):"]
    for frame in scripttrace.script_frames(error.__traceback__, script_path):
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line}")
    lines.append(f"{type(error).__name__}: {error}")
    machine = scripttrace.failing_instance(error.__traceback__, Machine)
    if machine is not None and not isinstance(error, MachineError):
        lines.append(f"last console lines of {machine.name}:")
        lines.append(machine.console_tail())
    return "\n".join(lines)


def save_evidence(
    logger: Logger, machines: list[Machine], out_dir: Path, *, wait: float | None = None, failed_units: bool = True
) -> list[Path]:
    """After a failure: each running machine's failed units (logged, unless not
    `failed_units`: the pytest plugin shows them as a section of its own), its active
    terminal as text, and a screenshot of each one with a display, in `out_dir` named
    after the machine. Returns the files.

    `wait`: how long (seconds) a machine's command channel may stay busy with
    another thread's command before its terminal is left out (the global
    timeout saves evidence while the script's command still runs).
    """
    saved: list[Path] = []
    for machine in machines:
        if not machine.is_up():
            continue
        if _paused(machine):  # its guest cannot answer: asking would only wait for the command's timeout
            logger.log_test_error(f"{machine.name} is paused (QEMU's `stop`): its terminal is not saved")
            continue
        if machine.stalled:  # likewise
            logger.log_test_error(
                f"{machine.name}'s backdoor shell stopped answering: its failed units and terminal are not saved"
            )
            continue
        with (
            machine.channel_free_within(-1 if wait is None else wait) as free,
            contextlib.suppress(MachineError, TestScriptError, OSError, ValueError),
        ):
            if free:  # else another thread's command still holds the channel
                if failed_units:
                    with contextlib.suppress(MachineError, TestScriptError, OSError):
                        _log_failed_units(logger, machine)
                saved.append(_save_terminal(machine, out_dir))
        if machine.config.display:
            with contextlib.suppress(MachineError, OSError):
                saved.append(machine.screenshot(str(out_dir / f"{machine.name}-failure.png")))
    if saved:
        logger.log_test_error("saved for the failure: " + ", ".join(str(path) for path in saved))
    return saved


def _log_failed_units(logger: Logger, machine: Machine) -> None:
    """Logs the machine's failed units, if it has any: the cause is often on a machine other than the failing one."""
    status, text = machine.execute("systemctl --failed --no-pager --no-legend --plain", timeout=5)
    units = [line.split()[0] for line in text.splitlines() if line.strip()]
    if status == 0 and units:
        logger.log_test_error(f"failed units on {machine.name}: {', '.join(units)}")


def _paused(machine: Machine) -> bool:
    """Whether QEMU says the machine's CPUs are stopped (False when QEMU cannot be asked)."""
    client = machine.qmp_client
    if client is None:
        return False
    try:
        return client.send("query-status")["return"].get("running") is False
    except MachineError:
        return False


def _save_terminal(machine: Machine, out_dir: Path) -> Path:
    """The machine's active terminal as text in `out_dir`; raises MachineError when it cannot be read."""
    # tty 0 is the terminal in the foreground (vcs(4))
    status, data = machine.execute_bytes("cat /dev/vcsa", timeout=5)
    if status != 0:
        raise MachineError(f"{machine.name}: cannot read /dev/vcsa (exit code {status})")
    screen = decode_vcsa(data).text.rstrip()
    if not screen.strip():
        # Nothing written yet, or a terminal in graphics mode (X on vt7).
        shown = "its screenshot, " if machine.config.display else ""
        screen = f"(the active terminal shows no text; see {shown}the console and the journal)"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{machine.name}-tty.txt"
    path.write_text(screen + "\n")
    return path
