"""A small synchronous client for QEMU's machine protocol (QMP).

QEMU speaks newline-delimited JSON on a socket vmrig hands it. One reader
thread owns the receiving side: it answers pending commands by their "id" and
queues events, so commands from several threads and waits for events never
steal each other's messages.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from vmrig.errors import MachineError, QMPError
from vmrig.timeouts import Duration, seconds

Message = dict[str, Any]

CLOSED_MESSAGE = "QEMU closed its QMP connection"
# Events nobody waits for (RTC_CHANGE, NIC_RX_FILTER_CHANGED, ...) must not grow without bound.
MAX_KEPT_EVENTS = 1000


class _Closed:
    """Handed to a pending command when the connection ends before its answer."""


_CLOSED = _Closed()


class QMPClient:
    """QMP over an already connected socket; call connect() before anything else."""

    def __init__(self, sock: socket.socket, *, on_event: Callable[[Message], None] | None = None) -> None:
        self._sock = sock
        self._on_event = on_event
        self._send_lock = threading.Lock()
        # Guards _pending, _events and _closed; waiters for events sleep on it.
        self._state = threading.Condition()
        self._pending: dict[str, queue.Queue[Message | _Closed]] = {}
        self._events: deque[Message] = deque(maxlen=MAX_KEPT_EVENTS)
        self._greeting: queue.Queue[Message | _Closed] = queue.Queue()
        self._greeted = False  # touched by the reader thread only
        self._ids = itertools.count(1)
        self._closed = False
        self._reader: threading.Thread | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @functools.cached_property
    def session(self) -> QMPSession:
        """This connection as NixOS scripts use it (machine.qmp_client): one per connection."""
        return QMPSession(self)

    def connect(self, timeout: float = 30.0) -> None:
        """Read QEMU's greeting and leave capabilities negotiation mode."""
        if self._reader is not None:
            raise MachineError("QMP client is already connected")
        deadline = time.monotonic() + timeout
        self._reader = threading.Thread(target=self._read_loop, name="qmp-reader", daemon=True)
        self._reader.start()
        try:
            greeting = self._greeting.get(timeout=timeout)
        except queue.Empty:
            raise MachineError(f"QEMU sent no QMP greeting within {timeout:g} seconds") from None
        if isinstance(greeting, _Closed):
            raise MachineError(CLOSED_MESSAGE)
        if "QMP" not in greeting:
            raise MachineError(f"QEMU's QMP greeting is not one: {greeting!r}")
        reply = self.execute("qmp_capabilities", timeout=max(0.0, deadline - time.monotonic()))
        if reply != {}:
            raise MachineError(f"unexpected answer to qmp_capabilities: {reply!r}")

    def execute(self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """Run a QMP command and return its "return" value."""
        if self._reader is None:
            raise MachineError("QMP client is not connected")
        command_id = f"vmrig-{next(self._ids)}"
        request: Message = {"execute": command, "id": command_id}
        if arguments is not None:
            request["arguments"] = arguments
        data = (json.dumps(request) + "\n").encode()
        answer: queue.Queue[Message | _Closed] = queue.Queue(maxsize=1)
        with self._state:
            if self._closed:
                raise MachineError(CLOSED_MESSAGE)
            self._pending[command_id] = answer
        try:
            try:
                with self._send_lock:
                    self._sock.sendall(data)
            except OSError:
                raise MachineError(CLOSED_MESSAGE) from None
            try:
                reply = answer.get(timeout=timeout)
            except queue.Empty:
                raise MachineError(f"QMP command '{command}' got no answer within {timeout:g} seconds") from None
        finally:
            with self._state:
                self._pending.pop(command_id, None)
        if isinstance(reply, _Closed):
            raise MachineError(CLOSED_MESSAGE)
        if "error" in reply:
            error = reply["error"]
            if isinstance(error, dict):
                error_class = error.get("class", "GenericError")
                desc = error.get("desc", "")
            else:
                error_class, desc = "GenericError", str(error)
            raise QMPError(f"QMP command '{command}' failed: {error_class}: {desc}", error_class, desc)
        return reply["return"]

    def human_monitor_command(self, command_line: str) -> str:
        """Run a human monitor (HMP) command line and return its output."""
        output = self.execute("human-monitor-command", {"command-line": command_line})
        return output if isinstance(output, str) else str(output)

    def wait_for_event(
        self, predicate: Callable[[Message], bool], timeout: float, *, skip_others: bool = False
    ) -> Message:
        """Return (and consume) the first queued or future event that `predicate` accepts.

        `skip_others`: the events it passes over are consumed too (NixOS's
        wait_for_qmp_event), not kept for a later wait.
        """
        deadline = time.monotonic() + timeout
        with self._state:
            while True:
                while skip_others and self._events:
                    event = self._events.popleft()
                    if predicate(event):
                        return event
                for event in self._events:  # none left when skip_others
                    if predicate(event):
                        self._events.remove(event)
                        return event
                if self._closed:
                    raise MachineError(CLOSED_MESSAGE)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching QMP event within {timeout:g} seconds")
                self._state.wait(remaining)  # woken by each new event and by the close

    def take_events(self) -> list[Message]:
        """Return (and consume) every queued event, oldest first, without waiting."""
        with self._state:
            events = list(self._events)
            self._events.clear()
        return events

    def take_event(self) -> Message | None:
        """Return (and consume) the oldest queued event, None if there is none; never waits."""
        with self._state:
            return self._events.popleft() if self._events else None

    def close(self) -> None:
        """Close the connection; pending commands and waits end with MachineError."""
        with contextlib.suppress(OSError):  # already shut down by the peer
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._mark_closed()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)

    def _mark_closed(self) -> None:
        with self._state:
            self._closed = True
            for answer in self._pending.values():
                # A command whose answer came just before the end (`quit`) has it queued already.
                with contextlib.suppress(queue.Full):
                    answer.put_nowait(_CLOSED)
            self._pending.clear()
            self._state.notify_all()
        self._greeting.put(_CLOSED)

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                try:
                    chunk = self._sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._route(line)
        finally:
            self._mark_closed()

    def _route(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError:
            return  # QEMU writes only JSON here; a torn line is not worth killing the reader
        if not isinstance(message, dict):
            return
        if not self._greeted:
            # Whatever comes first is the greeting; connect() checks that it is one.
            self._greeted = True
            self._greeting.put(message)
        elif "event" in message:
            with self._state:
                self._events.append(message)
                self._state.notify_all()
            if self._on_event is not None:
                # A broken callback must not stop command answers from arriving.
                with contextlib.suppress(Exception):
                    self._on_event(message)
        elif "return" in message or "error" in message:
            with self._state:
                answer = self._pending.get(str(message.get("id")))
                if answer is None and "id" not in message and len(self._pending) == 1:
                    # QEMU answers a request it could not parse without its id.
                    answer = next(iter(self._pending.values()))
                if answer is not None and answer.empty():
                    answer.put_nowait(message)


class QMPSession:
    """`machine.qmp_client` as NixOS scripts use it, over a machine's QMPClient.

    NixOS's QMPSession: `send(cmd, args)` returns QEMU's whole answer
    (`{"return": ...}`) and raises QMPAPIError (here QMPError, with
    `class_name` and `description`) when QEMU refuses; `wait_for_event` and
    `events` hand out the events nobody has consumed yet. vmrig's reader
    thread reads every message as it arrives, so `read_pending_messages`
    has nothing left to do.
    """

    def __init__(self, client: QMPClient) -> None:
        self._client = client

    def send(self, cmd: str, args: dict[str, Any] | None = None) -> Message:
        """Runs QMP command `cmd` with `args`; returns `{"return": value}`; QMPError if refused."""
        return {"return": self._client.execute(cmd, args or None)}

    def wait_for_event(self, timeout: Duration = 10) -> Message:
        """The oldest event not yet consumed, waiting up to `timeout` (seconds or a timedelta; TimeoutError)."""
        return self._client.wait_for_event(lambda _event: True, seconds(timeout))

    def events(self, timeout: float = 10) -> Iterator[Message]:
        """The queued events, oldest first, each consumed as it is handed out; ends when none is
        left (`timeout` is accepted as NixOS does, and not needed)."""
        del timeout
        while (event := self._client.take_event()) is not None:
            yield event

    def read_pending_messages(self) -> None:
        """Nothing to do: vmrig's reader thread has read every message already."""
