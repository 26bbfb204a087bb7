"""Breakpoints and stops at failures, driven through pdb's own input (no VM)."""

from __future__ import annotations

import gc
import io
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from vmrig import debug
from vmrig.errors import UsageError
from vmrig.log import Logger
from vmrig.timer import PausableTimer

SCRIPT = """
def script():
    value = "the script's local"
    breakpoint()
    after = value + " (after)"
    return after

def failing():
    output = "what the guest said"
    helper(output)

def helper(text):
    raise AssertionError("command failed: " + text)
"""


def load_script(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "script_file.py"
    path.write_text(SCRIPT)
    namespace: dict[str, object] = {}
    exec(compile(SCRIPT, str(path), "exec"), namespace)
    return namespace


@pytest.fixture
def terminal_pdb(monkeypatch: pytest.MonkeyPatch) -> tuple[io.StringIO, list[str]]:
    """Pretends stdin is a terminal and types pdb commands from a list."""
    typed: list[str] = []
    out = io.StringIO()
    monkeypatch.setattr(debug, "stdin_is_terminal", lambda: True)
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)

    class Keyboard(io.StringIO):
        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            return typed.pop(0) + "\n" if typed else ""

    class Scripted(debug._LocalPdb):
        def __init__(self) -> None:
            super().__init__(stdin=Keyboard(), stdout=out)

    monkeypatch.setattr(debug, "_LocalPdb", Scripted)
    # Garbage collected while pdb traces (an earlier test's finished subprocess, say)
    # would run its __del__ under the debugger and stop there instead of in the script.
    gc.collect()
    return out, typed


def test_breakpoint_stops_in_the_script_frame(tmp_path: Path, terminal_pdb: tuple[io.StringIO, list[str]]) -> None:
    out, typed = terminal_pdb
    namespace = load_script(tmp_path)
    log = io.StringIO()
    debugger = debug.Debugger(Logger(log, color=False), focus=str(tmp_path / "script_file.py"))
    typed += ["p value", "c"]
    with debugger.hooked():
        result = namespace["script"]()  # type: ignore[operator]
    assert result == "the script's local (after)"
    assert "the script's local" in out.getvalue()
    assert "script_file.py:4" in log.getvalue()
    assert sys.breakpointhook is sys.__breakpointhook__  # restored


def test_timer_is_paused_at_the_prompt(tmp_path: Path, terminal_pdb: tuple[io.StringIO, list[str]]) -> None:
    out, typed = terminal_pdb
    namespace = load_script(tmp_path)
    timer = PausableTimer(3600, lambda: None)
    timer.start()
    debugger = debug.Debugger(Logger(io.StringIO()), timer=lambda: timer)
    namespace["timer"] = timer
    typed += ["p ('paused', timer.paused)", "c"]
    with debugger.hooked():
        namespace["script"]()  # type: ignore[operator]
    timer.cancel()
    assert "('paused', True)" in out.getvalue()
    assert not timer.paused


def test_pythonbreakpoint_zero_disables(
    tmp_path: Path, terminal_pdb: tuple[io.StringIO, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, typed = terminal_pdb
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")
    namespace = load_script(tmp_path)
    typed += ["p value", "c"]
    with debug.Debugger(Logger(io.StringIO())).hooked():
        namespace["script"]()  # type: ignore[operator]
    assert out.getvalue() == ""
    assert typed == ["p value", "c"]  # nothing was read


def test_failure_stop_starts_at_the_failing_script_line(
    tmp_path: Path, terminal_pdb: tuple[io.StringIO, list[str]]
) -> None:
    out, typed = terminal_pdb
    namespace = load_script(tmp_path)
    log = io.StringIO()
    debugger = debug.Debugger(Logger(log, color=False), on_failure=True, focus=str(tmp_path / "script_file.py"))
    typed += ["p text", "c"]
    try:
        namespace["failing"]()  # type: ignore[operator]
    except AssertionError as error:
        debugger.failure(error)
    # the deepest frame of the script file: helper(), where `text` is a local
    assert "'what the guest said'" in out.getvalue()
    assert "script_file.py:13" in log.getvalue()
    assert "every machine still running" in log.getvalue()


def test_no_failure_stop_unless_asked(tmp_path: Path, terminal_pdb: tuple[io.StringIO, list[str]]) -> None:
    out, typed = terminal_pdb
    namespace = load_script(tmp_path)
    typed += ["c"]
    try:
        namespace["failing"]()  # type: ignore[operator]
    except AssertionError as error:
        debug.Debugger(Logger(io.StringIO())).failure(error)
    assert typed == ["c"]


def test_remote_debugger_without_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug, "stdin_is_terminal", lambda: False)
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("REMOTE_PDB_PORT", str(port))
    namespace = load_script(tmp_path)
    log = io.StringIO()
    debugger = debug.Debugger(Logger(log, color=False))
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.append(_hooked_call(debugger, namespace)))
    runner.start()
    deadline = time.monotonic() + 30
    while "attach with" not in log.getvalue():  # announced only once it listens: connect at once
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    received = _read_until(client, b"(Pdb) ")
    assert b"after = value" in received
    client.sendall(b"p value\n")
    assert b"the script's local" in _read_until(client, b"(Pdb) ")
    client.sendall(b"c\n")
    assert _read_until(client, b"never") == b""  # the debugger hung up after `continue`
    runner.join(30)
    assert results == ["the script's local (after)"]
    assert f"socat - tcp:127.0.0.1:{port}" in log.getvalue()
    assert f"listens on 127.0.0.1:{port}" in log.getvalue()


def test_missing_remote_pdb_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debug, "stdin_is_terminal", lambda: False)
    monkeypatch.setitem(sys.modules, "remote_pdb", None)  # makes the import fail
    with pytest.raises(UsageError, match="needs remote-pdb: pip install remote-pdb"):
        debug.Debugger(Logger(io.StringIO())).breakpoint()


def test_debugger_listens_on_loopback_only() -> None:
    with pytest.raises(UsageError, match="127.0.0.1 only"):
        debug.Debugger(Logger(io.StringIO())).breakpoint(host="0.0.0.0")


def _hooked_call(debugger: debug.Debugger, namespace: dict[str, object]) -> object:
    with debugger.hooked():
        return namespace["script"]()  # type: ignore[operator]


def _read_until(client: socket.socket, marker: bytes) -> bytes:
    data = b""
    while not data.endswith(marker):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
