"""Stopping a test script at a debugger prompt: breakpoint(), debug.breakpoint(), --debug-on-failure.

While a script runs, `sys.breakpointhook` is this module's. With a terminal
on stdin the prompt is pdb on that terminal; without one (CI, a pipe) it is
remote-pdb listening on a loopback port, and the log says how to attach. The
machines keep running meanwhile, so the prompt can call
`node1.execute("systemctl status ...")`.

A prompt that waits for its user pauses the global timeout: a test sitting at
a breakpoint is not hanging. PYTHONBREAKPOINT is honoured: "0" disables
breakpoints, any other debugger (`ipdb.set_trace`) replaces this one (its
prompt then does not pause the timeout).
"""

from __future__ import annotations

import contextlib
import os
import pdb
import socket
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from vmrig import repl, scripttrace
from vmrig.errors import UsageError
from vmrig.hostnet import LOOPBACK
from vmrig.log import Logger
from vmrig.timer import PausableTimer

REMOTE_PDB_MISSING = (
    "a debugger prompt without a terminal on stdin needs remote-pdb: pip install remote-pdb (or vmrig's 'debug' extra)"
)


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _listen(port: int) -> socket.socket:
    """A loopback socket already listening, so its port can be announced before anyone attaches."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((LOOPBACK, port))
        listener.listen(1)
    except OSError as error:
        listener.close()
        raise UsageError(f"the debugger cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
    return listener


class _Stops(pdb.Pdb):
    """pdb that pauses the global timeout at its prompt and starts a post-mortem in the script."""

    vmrig_timer: Callable[[], PausableTimer | None] = staticmethod(lambda: None)
    vmrig_focus: str | None = None  # the script file: a post-mortem starts in its deepest frame

    def interaction(self, frame: types.FrameType | None, traceback: Any) -> None:
        timer = self.vmrig_timer()
        if timer is not None:
            timer.pause()
        try:
            super().interaction(frame, traceback)
        finally:
            if timer is not None:
                timer.resume()

    def setup(self, f: types.FrameType | None, tb: types.TracebackType | None) -> None:
        super().setup(f, tb)
        if tb is None or self.vmrig_focus is None:
            return
        # The failing line of the script, not the inside of succeed() that raised.
        entry = scripttrace.deepest_script_entry(tb, self.vmrig_focus)
        if entry is None:
            return
        for index in range(len(self.stack) - 1, -1, -1):
            frame = self.stack[index][0]
            if frame is entry.tb_frame:
                self.curindex = index
                self.curframe = frame
                self.curframe_locals = frame.f_locals
                break


class _LocalPdb(_Stops):
    """pdb on the terminal; the log's lines come above its `(Pdb)` prompt while it waits."""

    vmrig_logger: Logger | None = None
    _vmrig_above: repl.AbovePrompt | None = None

    def interaction(self, frame: types.FrameType | None, traceback: Any) -> None:
        with repl.above_prompt(self.vmrig_logger) as above:
            self._vmrig_above = above
            try:
                super().interaction(frame, traceback)
            finally:
                self._vmrig_above = None

    # cmd.Cmd reads each line with input() between preloop/postcmd and precmd.
    def preloop(self) -> None:
        super().preloop()
        self._vmrig_waiting(True)

    def precmd(self, line: str) -> str:
        self._vmrig_waiting(False)
        result: str = super().precmd(line)
        return result

    def postcmd(self, stop: bool, line: str) -> bool:
        stop = super().postcmd(stop, line)
        self._vmrig_waiting(not stop)
        return stop

    def _vmrig_waiting(self, waiting: bool) -> None:
        if self._vmrig_above is not None:
            self._vmrig_above.waiting_prompt = self.prompt if waiting else None


def _remote_class() -> Callable[[socket.socket], _Stops]:
    try:
        from remote_pdb import LF2CRLF_FileWrapper, RemotePdb  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError(REMOTE_PDB_MISSING) from None

    class _RemotePdb(_Stops, RemotePdb):  # type: ignore[misc]
        def __init__(self, listener: socket.socket) -> None:
            # RemotePdb's own __init__ binds, listens and accepts in one go, so the port
            # could not be announced before a client tries it; this is the same on a
            # socket that already listens.
            try:
                connection, _address = listener.accept()
            finally:
                listener.close()
            self._quiet = True
            self.handle = LF2CRLF_FileWrapper(connection)
            pdb.Pdb.__init__(self, completekey="tab", stdin=self.handle, stdout=self.handle)
            self.backup: list[tuple[str, object]] = []
            RemotePdb.active_instance = self

        def do_continue(self, arg: str) -> bool | None:
            result: bool | None = super().do_continue(arg)
            if not self.breaks:
                close_remote(self)  # nothing can stop here again: let the client see the end
            return result

        do_c = do_cont = do_continue

    return _RemotePdb


def close_remote(debugger: pdb.Pdb) -> None:
    """Hangs up on a remote debugger's client."""
    handle = getattr(debugger, "handle", None)
    if handle is None:
        return
    # remote-pdb closes only its file wrapper; the socket itself must go for the client to see the end.
    connection = getattr(handle, "connection", None)
    with contextlib.suppress(OSError, ValueError):
        handle.close()
    if isinstance(connection, socket.socket):
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()


class Debugger:
    """The `debug` script global and the breakpoint hook of a test run."""

    def __init__(
        self,
        logger: Logger,
        *,
        on_failure: bool = False,
        timer: Callable[[], PausableTimer | None] = lambda: None,
        focus: str | None = None,
    ) -> None:
        self.logger = logger
        self.on_failure = on_failure
        self.timer = timer
        self.focus = os.path.abspath(focus) if focus else None
        self._open: list[pdb.Pdb] = []

    # -- the hook ----------------------------------------------------------------

    @contextlib.contextmanager
    def hooked(self) -> Iterator[None]:
        """Makes breakpoint() stop here while the block runs."""
        choice = os.environ.get("PYTHONBREAKPOINT", "")
        if choice not in ("", "pdb.set_trace"):
            yield  # "0" or the user's own debugger: Python's default hook handles both
            return
        previous = sys.breakpointhook
        sys.breakpointhook = self._hook
        try:
            yield
        finally:
            sys.breakpointhook = previous
            self.close()

    def _hook(self, *args: object, **kwargs: object) -> None:
        self._stop_at(sys._getframe(1), "breakpoint()")

    def breakpoint(self, host: str = LOOPBACK, port: int | None = None) -> None:
        """Stops the script at the caller's line, like NixOS's `debug.breakpoint()`."""
        if host not in (LOOPBACK, "localhost"):
            raise UsageError(f"the debugger listens on {LOOPBACK} only, not on {host}")
        self._stop_at(sys._getframe(1), "debug.breakpoint()", port)

    def _stop_at(self, frame: types.FrameType, what: str, port: int | None = None) -> None:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        debugger = self._debugger(f"{what} reached at {where}", port)
        debugger.set_trace(frame)

    # -- stopping at a failure -------------------------------------------------------

    def failure(self, error: BaseException) -> None:
        """With on_failure: a post-mortem prompt at the script line that failed, machines still up."""
        if not self.on_failure or error.__traceback__ is None:
            return
        line = self._script_line(error.__traceback__)
        try:
            debugger = self._debugger(
                f"the test failed at {line}; stopped there with every machine still running "
                "(inspect, call node.succeed(...) or node.shell_interact(); 'c' ends the test)",
                None,
            )
        except UsageError as problem:
            self.logger.alert(f"cannot stop at the failure: {problem}")
            return
        debugger.reset()
        debugger.interaction(None, error.__traceback__)
        self.close()

    def _script_line(self, tb: types.TracebackType) -> str:
        entry = scripttrace.deepest_script_entry(tb, self.focus)
        return "an unknown line" if entry is None else f"{entry.tb_frame.f_code.co_filename}:{entry.tb_lineno}"

    # -- making a debugger -----------------------------------------------------------

    def _debugger(self, reason: str, port: int | None) -> _Stops:
        """pdb on the terminal, or remote-pdb once a client has attached."""
        debugger: _Stops
        if stdin_is_terminal():
            self.logger.warning(f"{reason}; debugger prompt follows (pdb; 'c' continues)")
            local = _LocalPdb()
            local.vmrig_logger = self.logger
            debugger = local
        else:
            remote = _remote_class()
            if port is None:
                port = int(os.environ.get("REMOTE_PDB_PORT") or 0)
            listener = _listen(port)
            port = listener.getsockname()[1]
            self.logger.warning(
                f"{reason}; no terminal on stdin, so the debugger listens on {LOOPBACK}:{port}\n"
                f"attach with: socat READLINE tcp:{LOOPBACK}:{port}   (a socat without readline, as Debian's: "
                f"socat - tcp:{LOOPBACK}:{port}; or: telnet {LOOPBACK} {port})\n"
                "the global timeout is paused while the debugger waits"
            )
            timer = self.timer()
            if timer is not None:
                timer.pause()  # waiting for a client to attach is waiting for the user too
            try:
                debugger = remote(listener)
            finally:
                if timer is not None:
                    timer.resume()
            self.logger.log("debugger client attached")
        debugger.vmrig_timer = self.timer
        debugger.vmrig_focus = self.focus
        self._open.append(debugger)
        return debugger

    def close(self) -> None:
        """Hangs up on remote clients still attached (the script has ended)."""
        for debugger in self._open:
            close_remote(debugger)
        self._open.clear()
