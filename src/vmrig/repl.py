"""The interactive prompt of `vmrig run --interactive`.

ptpython on IPython, as the NixOS driver uses, when both are installed (the
`repl` extra); the standard library's `code.interact` otherwise. Either way
the prompt's namespace is the script's globals, and its input history is kept
in `.vmrig-history` in the working directory. While the prompt waits for
input, the log's lines (the machines' consoles) are printed above it, never
into the line being typed (`AbovePrompt`).
"""

from __future__ import annotations

import code
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

# Clears the terminal's current line (the prompt) from its start.
CLEAR_LINE = "\r\x1b[K"


class Divertable(Protocol):
    """The part of vmrig.log.Logger the prompt needs."""

    def divert(self, write: Callable[[str], None] | None) -> None: ...

    def write_terminal(self, text: str) -> None: ...


class AbovePrompt:
    """Prints the log's lines above a waiting prompt, and the prompt again below them.

    A prompt_toolkit prompt (ptpython, IPython) that is running gets them through
    `run_in_terminal` on its event loop, which hides the prompt and draws it back
    with what was typed. A plain `input()` prompt, while `waiting_prompt` names it,
    has its line cleared and drawn again with readline's buffer. Otherwise (a
    command runs, or a prompt from another thread) a line is written as it is.
    Lines are written in the order they came.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._scheduled_on: object = None  # the event loop a flush is scheduled on
        self.waiting_prompt: str | None = None  # the plain prompt's text while input() waits

    def __call__(self, text: str) -> None:
        app = _running_prompt_toolkit_app()
        if app is not None and threading.current_thread() is not threading.main_thread():
            loop = app.loop
            with self._lock:
                self._pending.append(text)
                if self._scheduled_on is loop:
                    return
                self._scheduled_on = loop
            try:
                loop.call_soon_threadsafe(self._flush_in_terminal)
            except RuntimeError:  # the loop closed meanwhile: the prompt has returned
                self.flush()
            return
        self.flush()
        prompt = self.waiting_prompt
        if prompt is None or threading.current_thread() is threading.main_thread():
            self._write(text)
            return
        self._write(CLEAR_LINE + text + prompt + _readline_buffer())

    def flush(self) -> None:
        """Writes the lines still waiting for the prompt to make room."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled_on = None
        if pending:
            self._write("".join(pending))

    def _flush_in_terminal(self) -> None:
        from prompt_toolkit.application import run_in_terminal

        run_in_terminal(self.flush, in_executor=False)

    @contextlib.contextmanager
    def waiting(self, prompt: str) -> Iterator[None]:
        """Marks a plain `input(prompt)` as waiting while the block runs."""
        self.waiting_prompt = prompt
        try:
            yield
        finally:
            self.waiting_prompt = None


def _running_prompt_toolkit_app() -> Any:
    """The prompt_toolkit application waiting for input in this process, if any."""
    try:
        from prompt_toolkit.application.current import get_app_or_none
    except ImportError:
        return None
    app = get_app_or_none()  # the session is process-wide: this sees the main thread's prompt
    return app if app is not None and app.is_running and getattr(app, "loop", None) is not None else None


def _readline_buffer() -> str:
    try:
        import readline
    except ImportError:
        return ""
    return readline.get_line_buffer()


@contextlib.contextmanager
def above_prompt(logger: Divertable | None) -> Iterator[AbovePrompt | None]:
    """The log's terminal output goes through an AbovePrompt while the block runs."""
    if logger is None:
        yield None
        return
    above = AbovePrompt(logger.write_terminal)
    logger.divert(above)
    try:
        yield above
    finally:
        logger.divert(None)
        above.flush()


HISTORY_FILE = ".vmrig-history"
BANNER = (
    "vmrig interactive prompt: the machines are variables; start_all() boots them, "
    "test_script() runs the script, node.shell_interact() opens a shell. Ctrl-D leaves and stops the machines."
)


def interact(namespace: dict[str, Any], history: Path, logger: Divertable | None = None) -> None:
    """Runs a Python prompt on `namespace` until the user leaves it; `logger`'s lines
    are printed above the prompt while it waits."""
    try:
        from ptpython.ipython import embed
    except ImportError:
        plain_interact(namespace, history, logger)
        return
    print(BANNER)
    with above_prompt(logger):
        # One namespace dict for globals and locals, or comprehensions cannot see the machines.
        embed(user_ns=namespace, history_filename=str(history))  # type: ignore[no-untyped-call]


class _Console(code.InteractiveConsole):
    def __init__(self, local: dict[str, Any], above: AbovePrompt | None) -> None:
        super().__init__(local)
        self._above = above

    def raw_input(self, prompt: str = "") -> str:
        if self._above is None:
            return input(prompt)
        with self._above.waiting(prompt):
            return input(prompt)


def plain_interact(namespace: dict[str, Any], history: Path, logger: Divertable | None = None) -> None:
    """`code.interact` with readline's history in `history` when readline is there."""
    try:
        import readline
    except ImportError:
        readline = None  # type: ignore[assignment]
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    try:
        with above_prompt(logger) as above:
            _Console(namespace, above).interact(
                banner=BANNER + "\n(ptpython and IPython are not installed: this is Python's plain prompt)",
                exitmsg="",
            )
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)
