"""The serial console (ttyS0: kernel and journal): QEMU's stdout, read line by line into the log."""

from __future__ import annotations

import threading
from collections import deque
from typing import IO

from vmrig.log import ANSI_ESCAPE, Logger

CONSOLE_TAIL = 20


class SerialConsole:
    """The console's lines since QEMU started, the recent ones for error messages, and its reader thread.

    `consumed` counts the lines wait_for_console_text has read past; `cond`
    guards the lines and is notified for each new one and at end of output.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consumed = 0
        self.recent: deque[str] = deque(maxlen=200)
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def start(self, stream: IO[bytes], logger: Logger, name: str) -> None:
        """Forgets the last run's lines and reads `stream` on a thread of its own."""
        with self.cond:
            self.lines = []
            self.consumed = 0
            self.recent.clear()
        self.thread = threading.Thread(
            target=self._read, args=(stream, logger, name), name=f"serial-{name}", daemon=True
        )
        self.thread.start()

    def _read(self, stream: IO[bytes], logger: Logger, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = ANSI_ESCAPE.sub("", raw.decode(errors="replace")).replace("\r", "").rstrip()
            with self.cond:
                self.lines.append(line)
                self.recent.append(line)
                self.cond.notify_all()
            logger.log_serial(line, name)
        with self.cond:
            self.cond.notify_all()

    def join(self) -> None:
        """Waits (a while) for the reader to drain QEMU's output, unless called from the reader."""
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5)

    def tail(self, name: str, lines: int = CONSOLE_TAIL) -> str:
        with self.cond:
            tail = list(self.recent)[-lines:]
        return "\n".join(f"    {name} # {line}" for line in tail) or "    (the console printed nothing)"

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def prepend(self, lines: list[str]) -> None:
        """Puts a restored snapshot's console lines before this run's."""
        with self.cond:
            self.lines[:0] = lines
            recent = list(self.recent)
            self.recent.clear()
            self.recent.extend([*lines, *recent])
