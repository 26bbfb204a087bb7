"""The guests' virtual terminals: their text read from /dev/vcsaN, without any display or OCR.

Every guest kernel has virtual terminals (VT and a dummy or VGA console),
whether or not the machine has a display: /dev/vcsaN holds terminal N's
screen as (character, attribute) pairs after a 4-byte header (rows, columns,
cursor column, cursor row; vcs(4)). Reading it is one guest command, so
`get_tty_text` costs a few tens of milliseconds, not an OCR pass. The names
and results follow the NixOS driver's `get_tty_text`,
`wait_until_tty_matches` and `dump_tty_contents`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vmrig.errors import ArgumentError, MachineError, RequestedAssertionFailed
from vmrig.machine.base import DEFAULT_TIMEOUT
from vmrig.machine.commands import Commands
from vmrig.timeouts import Duration


@dataclass(frozen=True)
class Screen:
    """One terminal's screen: `rows` lines of `columns` characters, and the cursor."""

    rows: int
    columns: int
    cursor: tuple[int, int]  # (column, row), from 0
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The screen as NixOS's get_tty_text gives it: each row `columns` wide, joined by newlines."""
        return "\n".join(self.lines)


def decode_vcsa(data: bytes) -> Screen:
    """A Screen from the bytes of /dev/vcsaN. Raises ValueError for a short or odd buffer."""
    if len(data) < 4:
        raise ValueError(f"a vcsa buffer starts with 4 bytes of header, got {len(data)} bytes")
    rows, columns, column, row = data[0], data[1], data[2], data[3]
    cells = data[4:]
    if len(cells) < rows * columns * 2:
        raise ValueError(f"a {columns}x{rows} vcsa buffer needs {rows * columns * 2} bytes, got {len(cells)}")
    # Even bytes are the characters (the console's font positions: ASCII for ASCII,
    # code page 437 above it), odd bytes their colours.
    chars = bytes(cells[0 : rows * columns * 2 : 2]).decode("cp437")
    lines = tuple(chars[i * columns : (i + 1) * columns] for i in range(rows))
    return Screen(rows, columns, (column, row), lines)


def tty_number(tty: int | str) -> int:
    """The terminal number of `tty` (1 for 1, "1" or "tty1"); ArgumentError otherwise."""
    text = str(tty).removeprefix("tty")
    if not text.isdigit() or not 1 <= int(text) <= 63:
        raise ArgumentError(f"tty {tty!r}: a virtual terminal is a number from 1 to 63 (tty1 is 1)")
    return int(text)


class Terminal(Commands):
    """get_tty_text, wait_until_tty_matches, dump_tty_contents (see the module docstring)."""

    def tty_screen(self, tty: int | str) -> Screen:
        """Terminal `tty`'s screen (rows, columns, cursor, text). Raises MachineError if it cannot be read."""
        number = tty_number(tty)
        status, output = self.execute_bytes(f"cat /dev/vcsa{number}")
        if status != 0:
            raise MachineError(f"{self.name}: cannot read terminal {number} (/dev/vcsa{number}, exit code {status})")
        try:
            return decode_vcsa(output)
        except ValueError as error:
            raise MachineError(f"{self.name}: terminal {number}: {error}") from None

    def get_tty_text(self, tty: int | str) -> str:
        """The text on virtual terminal `tty` (1 is tty1): its rows, each full width, joined by newlines."""
        return self.tty_screen(tty).text

    def wait_until_tty_matches(self, tty: int | str, regexp: str, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until terminal `tty`'s text matches `regexp` (re.search, multi-line).

        Raises RequestedAssertionFailed on timeout, with the terminal's last text.
        """
        __tracebackhide__ = True
        pattern = re.compile(regexp, re.MULTILINE)
        number = tty_number(tty)
        last = ""

        def matches(last_try: bool) -> bool:
            nonlocal last
            last = self.get_tty_text(number)
            if last_try and not pattern.search(last):
                self.log(f"terminal {number} does not match {regexp!r}; its text:\n{_shown(last)}")
            return pattern.search(last) is not None

        try:
            with self.nested(f"waiting for {regexp} to appear on tty {number}"):
                self._poll(f"{regexp!r} on tty{number}", matches, timeout)
        except RequestedAssertionFailed as error:
            raise RequestedAssertionFailed(f"{error}; tty{number} shows:\n{_shown(last)}") from None

    def dump_tty_contents(self, tty: int | str) -> None:
        """Writes terminal `tty`'s text into the guest's journal (and so the console log), as NixOS does."""
        number = tty_number(tty)
        self.execute(f"fold -w 80 /dev/vcs{number} | systemd-cat -t {shlex.quote(f'tty{number}')}")


def _shown(text: str) -> str:
    """A screen's text for a message: trailing blanks and empty rows at the end left out."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(f"    | {line}" for line in lines) or "    (the terminal is empty)"
