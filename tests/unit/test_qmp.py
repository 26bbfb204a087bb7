from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vmrig.errors import MachineError, QMPError
from vmrig.qmp import QMPClient

Message = dict[str, Any]
GREETING: Message = {"QMP": {"version": {"qemu": {"major": 8, "minor": 2, "micro": 0}}, "capabilities": []}}


class FakeQemu:
    """The QEMU end of the socket pair: answers commands through a handler, sends events on demand."""

    def __init__(self, sock: socket.socket, handler: Callable[[FakeQemu, Message], None]) -> None:
        self.sock = sock
        self.handler = handler
        self.received: list[Message] = []
        self.send_lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def send(self, message: Message) -> None:
        with self.send_lock:
            self.sock.sendall((json.dumps(message) + "\r\n").encode())

    def reply(self, request: Message, value: Any) -> None:
        self.send({"return": value, "id": request["id"]})

    def event(self, name: str, **data: Any) -> None:
        self.send({"event": name, "data": data, "timestamp": {"seconds": 0, "microseconds": 0}})

    def serve(self) -> None:
        self.send(GREETING)
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                request = json.loads(line)
                self.received.append(request)
                if request["execute"] == "qmp_capabilities":
                    self.reply(request, {})
                else:
                    self.handler(self, request)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def echo(server: FakeQemu, request: Message) -> None:
    server.reply(request, {"command": request["execute"], "arguments": request.get("arguments")})


@pytest.fixture
def make_pair() -> Iterator[Callable[..., tuple[QMPClient, FakeQemu]]]:
    made: list[tuple[QMPClient, FakeQemu]] = []

    def make(
        handler: Callable[[FakeQemu, Message], None] = echo,
        on_event: Callable[[Message], None] | None = None,
        connect: bool = True,
    ) -> tuple[QMPClient, FakeQemu]:
        ours, theirs = socket.socketpair()
        server = FakeQemu(theirs, handler)
        client = QMPClient(ours, on_event=on_event)
        server.thread.start()
        if connect:
            client.connect(timeout=5)
        made.append((client, server))
        return client, server

    yield make
    for client, server in made:
        client.close()
        server.thread.join(timeout=5)


def test_connect_negotiates_capabilities(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    assert not client.closed
    assert server.received[0]["execute"] == "qmp_capabilities"
    assert "id" in server.received[0]


def test_connect_rejects_a_bad_greeting() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b'{"hello": "world"}\n')
    client = QMPClient(ours)
    with pytest.raises(MachineError, match="greeting"):
        client.connect(timeout=5)
    client.close()
    theirs.close()


def test_connect_times_out_without_greeting() -> None:
    ours, theirs = socket.socketpair()
    client = QMPClient(ours)
    with pytest.raises(MachineError, match="no QMP greeting"):
        client.connect(timeout=0.2)
    client.close()
    theirs.close()


def test_execute_returns_the_return_value(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    assert client.execute("query-status") == {"command": "query-status", "arguments": None}
    assert client.execute("set_link", {"name": "net0", "up": False}) == {
        "command": "set_link",
        "arguments": {"name": "net0", "up": False},
    }
    ids = [request["id"] for request in server.received]
    assert len(set(ids)) == len(ids)


def test_human_monitor_command(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    def hmp(server: FakeQemu, request: Message) -> None:
        assert request["execute"] == "human-monitor-command"
        server.reply(request, f"ran {request['arguments']['command-line']}\r\n")

    client, _ = make_pair(hmp)
    assert client.human_monitor_command("info status") == "ran info status\r\n"


def test_error_reply_raises_qmp_error(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    def refuse(server: FakeQemu, request: Message) -> None:
        error = {"class": "CommandNotFound", "desc": "The command nope has not been found"}
        server.send({"error": error, "id": request["id"]})

    client, _ = make_pair(refuse)
    with pytest.raises(QMPError, match="CommandNotFound: The command nope has not been found"):
        client.execute("nope")


def test_session_answers_as_nixos_qmp_client(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    # NixOS's machine.qmp_client: the whole answer back, QMPAPIError's fields on a refusal.
    def status_or_refuse(server: FakeQemu, request: Message) -> None:
        if request["execute"] == "query-status":
            server.event("RESUME")
            server.reply(request, {"status": "running", "running": True})
        else:
            error = {"class": "CommandNotFound", "desc": f"The command {request['execute']} has not been found"}
            server.send({"error": error, "id": request["id"]})

    client, server = make_pair(status_or_refuse)
    session = client.session
    assert client.session is session  # machine.qmp_client is one object while QEMU runs
    assert session.send("query-status") == {"return": {"status": "running", "running": True}}
    assert "arguments" not in server.received[-1]  # NixOS sends no arguments when given none
    with pytest.raises(QMPError) as refused:
        session.send("this-command-does-not-exist", {"x": 1})
    assert refused.value.class_name == "CommandNotFound"
    assert refused.value.description == "The command this-command-does-not-exist has not been found"
    assert refused.value.transaction_id is None
    assert isinstance(refused.value, RuntimeError)  # as NixOS's QMPAPIError
    assert session.wait_for_event(timeout=5)["event"] == "RESUME"
    server.event("STOP")
    server.event("RESUME")
    server.event("MARK")
    client.wait_for_event(lambda e: e["event"] == "MARK", timeout=5)  # STOP and RESUME are queued now
    assert next(session.events())["event"] == "STOP"  # each event consumed as it is handed out
    assert [event["event"] for event in session.events()] == ["RESUME"]
    assert list(session.events()) == []
    session.read_pending_messages()


def test_events_around_replies_are_routed(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    seen: list[str] = []

    def chatty(server: FakeQemu, request: Message) -> None:
        server.event("BEFORE")
        server.reply(request, "ok")
        server.event("AFTER")

    client, _ = make_pair(chatty, on_event=lambda event: seen.append(event["event"]))
    assert client.execute("anything") == "ok"
    assert client.wait_for_event(lambda e: e["event"] == "AFTER", timeout=5)["event"] == "AFTER"
    # BEFORE arrived before the wait began and was not consumed by the wait for AFTER.
    assert client.wait_for_event(lambda e: e["event"] == "BEFORE", timeout=5)["event"] == "BEFORE"
    assert seen == ["BEFORE", "AFTER"]


def test_wait_for_event_finds_a_later_event(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    timer = threading.Timer(0.2, lambda: server.event("SHUTDOWN", guest=True, reason="guest-shutdown"))
    timer.start()
    event = client.wait_for_event(lambda e: e["event"] == "SHUTDOWN", timeout=5)
    assert event["data"]["reason"] == "guest-shutdown"
    timer.join()


def test_a_consumed_event_is_not_returned_twice(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    server.event("STOP")
    client.wait_for_event(lambda e: e["event"] == "STOP", timeout=5)
    with pytest.raises(TimeoutError):
        client.wait_for_event(lambda e: e["event"] == "STOP", timeout=0.2)


def test_wait_for_event_times_out(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    server.event("RESUME")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.wait_for_event(lambda e: e["event"] == "SHUTDOWN", timeout=0.3)
    assert time.monotonic() - started >= 0.3


def test_server_closing_fails_a_pending_command(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, _ = make_pair(lambda server, request: server.close())
    with pytest.raises(MachineError, match="QEMU closed its QMP connection"):
        client.execute("quit")
    assert client.closed
    with pytest.raises(MachineError, match="QEMU closed its QMP connection"):
        client.execute("query-status")


def test_server_closing_ends_a_wait_for_event(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, server = make_pair()
    threading.Timer(0.2, server.close).start()
    with pytest.raises(MachineError, match="QEMU closed its QMP connection"):
        client.wait_for_event(lambda e: False, timeout=5)


def test_command_without_answer_times_out(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, _ = make_pair(lambda server, request: None)
    with pytest.raises(MachineError, match="no answer"):
        client.execute("stuck", timeout=0.2)


def test_concurrent_commands_get_their_own_answers(
    make_pair: Callable[..., tuple[QMPClient, FakeQemu]],
) -> None:
    pending: list[Message] = []
    lock = threading.Lock()

    def answer_in_reverse(server: FakeQemu, request: Message) -> None:
        with lock:
            pending.append(request)
            if len(pending) < 8:
                return
            batch = list(reversed(pending))
            pending.clear()
        for held in batch:
            server.event("NOISE")
            echo(server, held)

    client, _ = make_pair(answer_in_reverse)
    results: dict[int, Any] = {}

    def run(number: int) -> None:
        results[number] = client.execute("cmd", {"n": number}, timeout=5)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: r["arguments"]["n"] for n, r in results.items()} == {n: n for n in range(8)}


def test_close_is_idempotent(make_pair: Callable[..., tuple[QMPClient, FakeQemu]]) -> None:
    client, _ = make_pair()
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(MachineError):
        client.execute("query-status")
