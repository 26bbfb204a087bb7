"""Decoding the guest's frames: one command's output between its begin and end markers.

The backdoor's commands (Machine) and the interactive shell (vmrig.machine.interact)
read the same frame format, buffered and streaming; both use FrameDecoder.
The format itself is part of the guest contract (vmrig.contract), which the
image code needs too; the decoder lives apart from it because it is host-side
stream handling that only the channels to a running guest need.

A decoder reads one frame. Bytes before the frame's begin marker are not its
output (a background process of an earlier command, or an earlier session
the host gave up on, wrote them): they are dropped and counted. Output is
handed out as soon as it cannot be part of the end marker; only a possible
partial end marker at the end of what arrived so far is held back. Bytes after
the end marker belong to whoever reads the channel next (`remainder`).

An interrupted frame (the channel closed, or the caller gave up) has no status:
`close()` hands out what was held back and leaves `status` None. There is no
reset: a caller that gives up on a frame drops its decoder, and the next
command's decoder, with a new nonce, discards the rest of the old frame (end
marker included) as bytes before its own begin marker.
"""

from __future__ import annotations

import re

from vmrig.contract import begin_marker, end_marker_head

__all__ = ["FrameDecoder"]


class FrameDecoder:
    """Bytes of a channel in, one frame's output and exit status out."""

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self._begin = begin_marker(nonce)
        self._end_head = end_marker_head(nonce)
        self._end = re.compile(re.escape(self._end_head) + rb"(-?\d+)\n")
        self._buffer = bytearray()
        self._shown = 0  # leading bytes of the buffer that flush() already handed out
        self.started = False  # the begin marker was seen
        self.status: int | None = None  # the end marker's status, once seen
        self.closed = False
        self.discarded = 0  # bytes that came before the begin marker
        self.remainder = b""  # bytes that came after the end marker

    @property
    def finished(self) -> bool:
        """The end marker was seen: `status` holds the exit status."""
        return self.status is not None

    @property
    def interrupted(self) -> bool:
        """The data ended (close()) before the end marker."""
        return self.closed and not self.finished

    def feed(self, data: bytes) -> list[bytes]:
        """Takes the next bytes read from the channel; returns the output chunks they complete."""
        if self.closed:
            raise ValueError("FrameDecoder.feed() after close()")
        if self.finished:
            self.remainder += data
            return []
        self._buffer += data
        if not self.started and not self._find_begin():
            return []
        match = self._end.search(self._buffer)
        if match:
            output = bytes(self._buffer[self._shown : match.start()])
            self.status = int(match.group(1))
            self.remainder = bytes(self._buffer[match.end() :])
            self._buffer.clear()
            self._shown = 0
            return _chunks(output)
        held = self._possible_end_start()
        output = bytes(self._buffer[self._shown : held])
        del self._buffer[:held]
        self._shown = max(0, self._shown - held)
        return _chunks(output)

    def flush(self) -> list[bytes]:
        """Hands out the held-back bytes now (a streaming reader that waited long enough for more).

        They still count as a possible start of the end marker: should the
        marker complete later, the frame ends all the same.
        """
        if not self.started or self.finished:
            return []
        output = bytes(self._buffer[self._shown :])
        self._shown = len(self._buffer)
        return _chunks(output)

    def close(self) -> list[bytes]:
        """The data ended: returns the held-back bytes (no end marker followed them)."""
        output = self.flush()
        self.closed = True
        self._buffer.clear()
        self._shown = 0
        return output

    def _find_begin(self) -> bool:
        at = self._buffer.find(self._begin)
        if at < 0:
            # Keep only what may be the start of a begin marker split across reads.
            drop = max(0, len(self._buffer) - (len(self._begin) - 1))
            self.discarded += drop
            del self._buffer[:drop]
            return False
        self.discarded += at
        del self._buffer[: at + len(self._begin)]
        self.started = True
        return True

    def _possible_end_start(self) -> int:
        """Where an end marker not yet complete may begin (len(buffer) if nowhere).

        The marker starts with a newline and contains no other before its
        last byte, so only the bytes from the last newline on can be one.
        """
        at = self._buffer.rfind(b"\n")
        if at < 0:
            return len(self._buffer)
        tail = bytes(self._buffer[at:])
        head = self._end_head
        if len(tail) <= len(head):
            return at if head.startswith(tail) else len(self._buffer)
        if tail.startswith(head) and re.fullmatch(rb"-?\d*", tail[len(head) :]):
            return at
        return len(self._buffer)


def _chunks(output: bytes) -> list[bytes]:
    return [output] if output else []
