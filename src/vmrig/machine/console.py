"""The serial console (ttyS0: kernel and journal): QEMU's stdout, read into lines for the log and the waits."""

from __future__ import annotations

import codecs
import os
import queue
import re
import threading
from collections import deque
from typing import IO

from vmrig.log import ANSI_ESCAPE, Logger

CONSOLE_TAIL = 20
# A kernel or journal message printed while a program's line was half written
# lands inside that line, timestamp first, and ends it: "Please enter
# pas[    2.948528] scsi 1:0:0:0: CD-ROM ...\nsphrase for disk". A wait that
# does not match the console as it came tries it again with these taken out.
INTERRUPTING_MESSAGE = re.compile(r"(?<=[^\n])\[ *\d+\.\d{6}\] [^\n]*\n")
# Put after a line still being written, so that `$` does not match at its end
# before the line is complete; a prompt ("login: ") matches before its newline.
_UNFINISHED = "\x00"


def _clean(line: str) -> str:
    return ANSI_ESCAPE.sub("", line).replace("\r", "")


def search_console(pattern: re.Pattern[str], text: str) -> int | None:
    """Where in `text` the first match of `pattern` ends: in the text as it came, else in the
    text without the messages that interrupted a line (INTERRUPTING_MESSAGE); None: no match."""
    found = pattern.search(text)
    if found is not None:
        return found.end()
    # The text without the interruptions, and where each of its pieces starts in `text`.
    pieces: list[tuple[int, str]] = []
    start = 0
    for message in INTERRUPTING_MESSAGE.finditer(text):
        pieces.append((start, text[start : message.start()]))
        start = message.end()
    if not pieces:
        return None
    pieces.append((start, text[start:]))
    found = pattern.search("".join(piece for _, piece in pieces))
    if found is None:
        return None
    offset = found.end()
    for origin, piece in pieces:
        if offset <= len(piece):
            return origin + offset
        offset -= len(piece)
    return len(text)


def _pieces_through(pieces: list[str], separator: str, end: int) -> int:
    """How many of `pieces`, joined by `separator`, the text up to offset `end` reaches into."""
    position = 0
    for count, piece in enumerate(pieces, 1):
        position += len(piece)
        if end <= position:
            return count
        position += len(separator)
    return len(pieces)


class SerialConsole:
    """The console's lines since QEMU started, the recent ones for error messages, and its reader thread.

    `lines` are the complete lines, `unfinished` the line being written (a
    prompt waiting for input has no newline yet); `consumed` counts the lines
    wait_for_console_text has read past; `cond` guards them all and is
    notified for each new piece of output and at its end.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        # The same lines with their trailing blanks: NixOS strips them, so `foo$`
        # matches "foo " there; a wait for the prompt "Password: " matches here too.
        self._unstripped: list[str] = []
        self.unfinished = ""
        self.consumed = 0
        self.recent: deque[str] = deque(maxlen=200)
        # NixOS's machine.last_lines: every line, for a script that reads them off itself.
        self.queue: queue.Queue[str] = queue.Queue()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def start(self, stream: IO[bytes], logger: Logger, name: str) -> None:
        """Forgets the last run's lines and reads `stream` on a thread of its own."""
        with self.cond:
            self.lines = []
            self._unstripped = []
            self.unfinished = ""
            self.consumed = 0
            self.recent.clear()
            self.queue = queue.Queue()
        self.thread = threading.Thread(
            target=self._read, args=(stream, logger, name), name=f"serial-{name}", daemon=True
        )
        self.thread.start()

    def _read(self, stream: IO[bytes], logger: Logger, name: str) -> None:
        # Whatever has arrived, not just whole lines: a prompt has no newline until it is answered.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            if not chunk and pending:
                complete, pending = [*complete, pending], ""
            unstripped = [_clean(line) for line in complete]
            lines = [line.rstrip() for line in unstripped]
            with self.cond:
                self.lines.extend(lines)
                self._unstripped.extend(unstripped)
                self.recent.extend(lines)
                for line in lines:
                    self.queue.put(line)
                self.unfinished = _clean(pending)
                self.cond.notify_all()
            for line in lines:
                logger.log_serial(line, name)
            if not chunk:
                return

    def join(self) -> None:
        """Waits (a while) for the reader to drain QEMU's output, unless called from the reader."""
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5)

    def tail(self, name: str, lines: int = CONSOLE_TAIL) -> str:
        with self.cond:
            tail = [*self.recent, self.unfinished][-lines:] if self.unfinished else list(self.recent)[-lines:]
        return "\n".join(f"    {name} # {line}" for line in tail) or "    (the console printed nothing)"

    def text(self) -> str:
        """Every line so far, the one being written included."""
        with self.cond:
            return "\n".join([*self.lines, self.unfinished] if self.unfinished else self.lines)

    def reading(self) -> bool:
        """Whether the reader thread still runs (QEMU's output has not ended, or is being drained)."""
        return self.thread is not None and self.thread.is_alive()

    def take(self, pattern: re.Pattern[str]) -> bool:
        """Whether the text not consumed yet matches `pattern` (search_console): its lines joined by
        newlines, trailing blanks stripped (as NixOS strips them) or as they came, else the stripped
        lines joined by nothing (as NixOS's driver joins them); a match consumes the text up to the
        end of its line. The caller holds `cond`."""
        for lines, separator in ((self.lines, "\n"), (self._unstripped, "\n"), (self.lines, "")):
            pieces = lines[self.consumed :]
            if self.unfinished and self.consumed <= len(lines):  # not consumed by an earlier match
                pieces = [*pieces, self.unfinished + _UNFINISHED]
            end = search_console(pattern, separator.join(pieces))
            if end is not None:
                self.consumed += _pieces_through(pieces, separator, end)
                return True
        return False

    def prepend(self, lines: list[str]) -> None:
        """Puts a restored snapshot's console lines before this run's."""
        with self.cond:
            self.lines[:0] = lines
            self._unstripped[:0] = lines
            recent = list(self.recent)
            self.recent.clear()
            self.recent.extend([*lines, *recent])
