"""How a failed test is reported: the script's own traceback, and the failing machine's console."""

from __future__ import annotations

from vmrig import scripttrace
from vmrig.errors import MachineError
from vmrig.log import Logger
from vmrig.machine import Machine


def report_timeout(logger: Logger, global_timeout: float | None) -> None:
    """Logs that the global timeout ended the test."""
    message = f"global timeout of {global_timeout:g} seconds reached"
    logger.log_test_error(message)
    logger.mark_failed(message)


def report_error(logger: Logger, error: BaseException, script_path: str) -> None:
    """Logs the script's error the way a script author wants to see it."""
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
    text = "\n".join(lines)
    logger.log_test_error(text)
    logger.mark_failed(f"{type(error).__name__}: {error}")
