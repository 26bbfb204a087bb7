"""The run's log: a terminal view with nested, timed blocks and an optional JUnit XML report.

Serial console lines arrive from reader threads while the test script logs from
the main thread, so every write happens whole, under one lock.
"""

from __future__ import annotations

import enum
import io
import os
import re
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

INDENT = "  "


class LogLevel(enum.IntEnum):
    """NixOS's log levels (test_driver.logger.LogLevel): `log.set_log_level(LogLevel.DEBUG)`."""

    DEBUG = 1
    INFO = 2
    WARNING = 3
    ERROR = 4


RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[31m"
YELLOW = "\x1b[33m"
BRIGHT_GREEN = "\x1b[92m"

MAIN_CASE = "main"

# XML 1.0 allows only these; serial output carries NULs, escapes and stray bytes.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Terminal control sequences the guest writes (colours, cursor moves, window titles): noise in a
# log, and a colour sequence would leave "[0;32m" behind in a report.
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


def xml_safe(text: str) -> str:
    """Return `text` without terminal escape sequences and characters XML 1.0 forbids."""
    return _XML_ILLEGAL.sub("", ANSI_ESCAPE.sub("", text))


def _wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR", ""):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # not a real file, or already closed
        return False


@dataclass
class _Case:
    """One JUnit test case: `main` or a subtest."""

    name: str
    started: float
    top_level: bool = False  # not inside another subtest, so its time does not overlap theirs
    duration: float | None = None  # None while it runs
    failures: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)


class Logger:
    """Thread-safe log of a test run."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        # Without a stream, sys.stderr as it is at each write: pytest swaps it per test, and a
        # machines() topology lives across tests.
        self._stream = stream
        self.color = _wants_color(self.stream) if color is None else color
        on = self.color
        self.reset = RESET if on else ""
        self.bold = BOLD if on else ""
        self.dim = DIM if on else ""
        self.red = RED if on else ""
        self.yellow = YELLOW if on else ""
        self.bright_green = BRIGHT_GREEN if on else ""

        # Reentrant: methods that already hold it print through _emit.
        self._lock = threading.RLock()
        self._divert: Callable[[str], None] | None = None
        self._depth = 0
        self._print_serial = True
        self._level = LogLevel.INFO  # the script's log.debug/info/warning below it are not shown

        self._start = time.monotonic()
        self._main = _Case(MAIN_CASE, self._start)
        self._cases: list[_Case] = [self._main]
        self._case_stack: list[_Case] = [self._main]
        self._junit_path: Path | None = None
        self._suite_name = ""
        self._interrupt_reason: str | None = None

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    # -- terminal output ---------------------------------------------------

    def _emit(self, text: str, style: str = "", *, line_prefix: str = "", show: bool = True) -> None:
        """Print each line of `text` indented and styled (if `show`), and record it for JUnit."""
        with self._lock:
            indent = INDENT * self._depth
            plain = [f"{indent}{line_prefix}{line}" for line in text.split("\n")]
            if self._junit_path is not None:
                self._case_stack[-1].output.extend(plain)
            if show:
                end = self.reset if style else ""
                self._write("".join(f"{style}{line}{end}\n" for line in plain))

    def divert(self, write: Callable[[str], None] | None) -> None:
        """Sends the terminal output through `write` (an interactive prompt's, which
        prints above the line being typed) instead of the stream; None: back to it."""
        with self._lock:
            self._divert = write

    def write_terminal(self, text: str) -> None:
        """Writes `text` (whole lines) to the log's stream as it is, bypassing any divert."""
        # A closed or broken stderr must not take a serial reader thread down with it.
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _write(self, text: str) -> None:
        if self._divert is not None:
            self._divert(text)
        else:
            self.write_terminal(text)

    @staticmethod
    def _prefixed(message: str, attrs: dict[str, str] | None) -> str:
        if attrs and "machine" in attrs:
            return f"{attrs['machine']}: {message}"
        return message

    # NixOS's logger API (test_driver.logger), which scripts call as `log`: its parameter
    # names, its levels, and error() ending the test.
    def log(self, message: str, attributes: dict[str, str] | None = None) -> None:
        self._emit(self._prefixed(message, attributes))

    def debug(self, message: str, attributes: dict[str, str] | None = None) -> None:
        if self._level <= LogLevel.DEBUG:
            self._emit(self._prefixed(message, attributes), self.dim)

    def info(self, message: str, attributes: dict[str, str] | None = None) -> None:
        if self._level <= LogLevel.INFO:
            self.log(message, attributes)

    def warning(self, message: str, attributes: dict[str, str] | None = None) -> None:
        if self._level <= LogLevel.WARNING:
            self._emit(self._prefixed(message, attributes), self.yellow)

    def error(self, message: str, attributes: dict[str, str] | None = None) -> NoReturn:
        """Logs `message` in red and ends the test with exit status 1 (SystemExit), as NixOS's does."""
        self.alert(self._prefixed(message, attributes))
        sys.exit(1)

    def alert(self, message: str) -> None:
        """Logs `message` in red (vmrig's own errors; error() would end the test)."""
        self._emit(message, self.red)

    def set_log_level(self, level: LogLevel | int) -> None:
        """Shows debug(), info() and warning() from `level` up (NixOS's default: LogLevel.INFO)."""
        with self._lock:
            self._level = LogLevel(level)

    def log_test_error(self, message: str) -> None:
        self._emit(message, self.bold + self.red, line_prefix="!!! ")

    def log_serial(self, line: str, machine: str) -> None:
        with self._lock:
            self._emit(f"{machine} # {line}", self.dim, show=self._print_serial)

    def print_serial_logs(self, enabled: bool) -> bool:
        """Show serial lines or not; returns the previous setting (to restore it)."""
        with self._lock:
            previous = self._print_serial
            self._print_serial = enabled
            return previous

    @contextmanager
    def nested(self, message: str, attributes: dict[str, str] | None = None) -> Iterator[None]:
        """Print `message` as a header, indent what the block logs, then say how long it took."""
        self._emit(self._prefixed(message, attributes), self.bold + self.bright_green)
        with self._lock:
            self._depth += 1
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._depth -= 1
                self._emit(self._prefixed(f"(finished: {message}, in {elapsed:.2f} seconds)", attributes))

    @contextmanager
    def subtest(
        self,
        name: str,
        attributes: dict[str, str] | None = None,
        describe: Callable[[BaseException], str] | None = None,
    ) -> Iterator[None]:
        """A nested block that is also a JUnit test case; a failure is logged and re-raised.

        `describe` gives a failure's details for the JUnit case (default: the whole traceback).
        """
        with self._lock:
            case = _Case(name, time.monotonic(), top_level=len(self._case_stack) == 1)
            self._cases.append(case)
            self._case_stack.append(case)
        try:
            with self.nested(f"subtest: {name}", attributes):
                try:
                    yield
                except Exception as exc:
                    self.log_test_error(f'Test "{name}" failed with error: "{exc}"')
                    with self._lock:
                        case.failures.append(str(exc) or type(exc).__name__)
                        case.details.append(describe(exc) if describe else "".join(traceback.format_exception(exc)))
                    raise
                except KeyboardInterrupt as exc:
                    # Ctrl-C, or the global timeout's SIGINT when it beats the failing command.
                    with self._lock:
                        reason = self._interrupt_reason or "interrupted (KeyboardInterrupt)"
                        case.failures.append(reason)
                        case.details.append(reason + "\n" + "".join(traceback.format_exception(exc)))
                    raise
        finally:
            with self._lock:
                case.duration = time.monotonic() - case.started
                # Remove by identity: the stack must stay right even if blocks end out of order.
                for index in range(len(self._case_stack) - 1, 0, -1):
                    if self._case_stack[index] is case:
                        del self._case_stack[index]
                        break

    # -- JUnit report ------------------------------------------------------

    def junit(self, path: Path, suite_name: str) -> None:
        """Record output from now on and write a JUnit XML report to `path` with write_junit()."""
        with self._lock:
            self._junit_path = Path(path)
            self._suite_name = suite_name

    def interrupting(self, reason: str) -> None:
        """Say why the script is about to be interrupted (SIGINT): the subtests it ends record `reason`."""
        with self._lock:
            self._interrupt_reason = reason

    def mark_failed(self, message: str) -> None:
        """Mark the current case (`main` outside any subtest) as failed."""
        with self._lock:
            self._case_stack[-1].failures.append(message)

    def _case_element(self, case: _Case, now: float, classname: str) -> ET.Element:
        if case is self._main:
            # main's own time: the run minus the top-level subtests, so the case times add up
            in_subtests = sum(_elapsed(c, now) for c in self._cases if c.top_level)
            duration = max(0.0, now - case.started - in_subtests)
        else:
            duration = _elapsed(case, now)
        element = ET.Element(
            "testcase", {"name": xml_safe(case.name), "classname": classname, "time": f"{duration:.3f}"}
        )
        if case.failures:
            failure = ET.SubElement(element, "failure", {"message": xml_safe("\n".join(case.failures))})
            failure.text = xml_safe("\n".join(case.details or case.failures))
        out = ET.SubElement(element, "system-out")
        out.text = xml_safe("".join(line + "\n" for line in case.output))
        return element

    def write_junit(self) -> None:
        """Write the JUnit report if one was asked for; calling it again rewrites it with the latest state."""
        with self._lock:
            if self._junit_path is None:
                return
            now = time.monotonic()
            classname = xml_safe(self._suite_name)
            cases = [self._case_element(case, now, classname) for case in self._cases]
            failed = sum(1 for case in self._cases if case.failures)
            suite = ET.Element(
                "testsuite",
                {
                    "name": classname,
                    "tests": str(len(cases)),
                    "failures": str(failed),
                    "errors": "0",
                    "skipped": "0",
                    "time": f"{now - self._start:.3f}",
                },
            )
            suite.extend(cases)
            root = ET.Element("testsuites")
            root.append(suite)
            ET.indent(root)
            path = self._junit_path

        buffer = io.BytesIO()
        ET.ElementTree(root).write(buffer, encoding="utf-8", xml_declaration=True)
        # Write beside and rename: a run killed by its timeout must not leave half a report.
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(buffer.getvalue())
        partial.replace(path)

    def close(self) -> None:
        """Write the JUnit report (if enabled) and flush the stream; the stream itself stays open."""
        self.write_junit()
        with self._lock:
            self._write("")


def _elapsed(case: _Case, now: float) -> float:
    return case.duration if case.duration is not None else now - case.started
