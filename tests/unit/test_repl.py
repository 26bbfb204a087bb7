"""The interactive prompt's fallback when ptpython and IPython are missing."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vmrig import repl
from vmrig.log import Logger


def test_plain_prompt_uses_the_namespace_and_keeps_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ptpython.ipython", None)  # not installed
    monkeypatch.setattr(sys, "stdin", io.StringIO("answer = machine_count * 21\nprint('answer', answer)\n"))
    namespace: dict[str, object] = {"machine_count": 2}
    history = tmp_path / repl.HISTORY_FILE
    repl.interact(namespace, history)
    assert namespace["answer"] == 42  # the prompt ran in the script's namespace
    captured = capsys.readouterr()
    assert "answer 42" in captured.out
    assert "Python's plain prompt" in captured.err


def in_thread(function: Callable[[], None]) -> None:
    thread = threading.Thread(target=function)
    thread.start()
    thread.join(10)


def test_a_line_from_another_thread_is_written_above_a_waiting_plain_prompt() -> None:
    written: list[str] = []
    above = repl.AbovePrompt(written.append)
    in_thread(lambda: above("before the prompt\n"))
    with above.waiting(">>> "):
        in_thread(lambda: above("node1 # a console line\n"))
    in_thread(lambda: above("after it\n"))
    assert written == [
        "before the prompt\n",
        repl.CLEAR_LINE + "node1 # a console line\n>>> ",  # the prompt again, with readline's (empty) buffer
        "after it\n",
    ]


def test_a_running_prompt_toolkit_prompt_makes_room_for_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    written: list[tuple[str, bool]] = []

    def write(text: str) -> None:
        on_the_loop = threading.current_thread() is threading.main_thread()
        written.append((text, on_the_loop and repl._running_prompt_toolkit_app() is not None))

    above = repl.AbovePrompt(write)
    with create_pipe_input() as pipe:
        session: PromptSession[str] = PromptSession(input=pipe, output=DummyOutput())

        def from_a_reader_thread() -> None:
            while repl._running_prompt_toolkit_app() is None:
                time.sleep(0.01)
            above("node1 # one\n")
            above("node1 # two\n")
            time.sleep(0.5)
            pipe.send_text("typed\r")

        reader = threading.Thread(target=from_a_reader_thread)
        reader.start()
        assert session.prompt("In [1]: ") == "typed"
        reader.join(10)
    # Both lines were written in order by the prompt's loop (run_in_terminal), while the prompt was up.
    assert "".join(text for text, _ in written) == "node1 # one\nnode1 # two\n"
    assert all(during_prompt for _, during_prompt in written)


def test_the_logger_writes_through_the_divert_while_the_prompt_runs() -> None:
    stream = io.StringIO()
    logger = Logger(stream, color=False)
    with repl.above_prompt(logger) as above:
        assert above is not None
        with above.waiting("In [1]: "):
            in_thread(lambda: logger.log("from a reader"))
    logger.log("after the prompt")
    assert stream.getvalue() == repl.CLEAR_LINE + "from a reader\nIn [1]: after the prompt\n"
