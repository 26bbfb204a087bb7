"""Interactive sessions on a running machine: a guest shell, and the serial console.

`shell_interact` starts, through one backdoor command, guest/shell: a root
login shell on a fresh pseudo-terminal (util-linux `script`), wired to the
virtio port `vmrig.shell`. The backdoor's own line protocol is not touched,
so the script can keep using the machine meanwhile. The host bridges that
port to this terminal in raw mode (so Ctrl-C, job control, top and less work
in the guest, and window size changes follow), or to any socat address, such
as a `socat READLINE tcp-listen:4444` waiting in another terminal. Bytes
from the port are passed through until the end marker the guest prints when
its shell exits.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import shlex
import signal
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from typing import Protocol

from vmrig import proc
from vmrig.channel import FrameDecoder
from vmrig.errors import MachineError
from vmrig.log import Logger
from vmrig.timeouts import Duration


class Machine(Protocol):
    """What a session needs of a machine (vmrig.machine.Machine has it all)."""

    name: str
    logger: Logger
    process: proc.Child | None
    interact_lock: threading.Lock

    def log(self, msg: str) -> None: ...

    def start(self, allow_reboot: bool = False) -> None: ...

    def execute(
        self, command: str, check_return: bool = True, check_output: bool = True, timeout: Duration | None = 900
    ) -> tuple[int, str]: ...

    def shell_port(self) -> socket.socket: ...

    def send_console(self, chars: str) -> None: ...


GUEST_SHELL = "/usr/lib/vmrig/shell"
# The guest's shell must start within this many seconds (a few exec's under emulation).
START_TIMEOUT = 60.0
# After the host side hung up, how long the guest may take to end its shell.
END_TIMEOUT = 15.0
# Bytes held back because they might begin the end marker are shown after this pause.
HOLD_TIMEOUT = 0.2
_TERM = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# Ends the guest's shell: `script` dies, its shell gets a hangup, the wrapper writes the end marker.
_END_SESSION = "kill -TERM -- -$(cat /run/vmrig/shell.pid) 2>/dev/null"


class _Endpoint:
    """The host side of a session: where keystrokes come from and output goes."""

    input_fd: int
    term = "dumb"
    mode = "line"
    # Its end of input is the shell's too (commands piped in): the shell runs what it
    # was sent, then exits. Otherwise (socat's peer left, the terminal hung up) the
    # shell is ended at once: nobody is left to see its output.
    input_ends_shell = False

    def size(self) -> tuple[int, int]:
        return 24, 80

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Terminal(_Endpoint):
    """This process's own terminal (or plain stdin/stdout when they are not one), of type `term` (its TERM)."""

    def __init__(self, term: str) -> None:
        self.input_fd = sys.stdin.fileno()
        self.output_fd = sys.stdout.fileno()
        self.is_tty = os.isatty(self.input_fd)
        if self.is_tty:
            self.term = term if _TERM.fullmatch(term) else "xterm-256color"
            self.mode = "tty"
        else:
            self.input_ends_shell = True

    def size(self) -> tuple[int, int]:
        for fd in (self.output_fd, self.input_fd):
            with contextlib.suppress(OSError):
                size = os.get_terminal_size(fd)
                return size.lines, size.columns
        return super().size()

    def write(self, data: bytes) -> None:
        _write_all(self.output_fd, data)


class _Socat(_Endpoint):
    """A socat address, e.g. tcp:127.0.0.1:4444 where `socat READLINE tcp-listen:4444` waits."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.child = proc.spawn(
            [proc.require_tool("socat"), "STDIO", address],
            stdin=proc.PIPE,
            stdout=proc.PIPE,
        )
        assert self.child.stdout is not None and self.child.stdin is not None
        self.input_fd = self.child.stdout.fileno()
        self._stdin_fd = self.child.stdin.fileno()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # socat is gone; its end of output ends the session
            _write_all(self._stdin_fd, data)

    def close(self) -> None:
        self.child.close(grace=2.0)


def _show(endpoint: _Endpoint, chunks: list[bytes]) -> None:
    for chunk in chunks:
        endpoint.write(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@contextlib.contextmanager
def _raw(fd: int, enabled: bool) -> Iterator[None]:
    """The terminal in raw mode for the block (keys go to the guest as they are typed)."""
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _on_resize(enabled: bool) -> Iterator[int | None]:
    """Yields a descriptor that becomes readable when the window size changed."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield None
        return
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)

    def handler(_signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            os.write(wake_write, b"w")

    previous = signal.signal(signal.SIGWINCH, handler)
    try:
        yield wake_read
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(wake_read)
        os.close(wake_write)


def shell_interact(machine: Machine, address: str | None = None, *, term: str = "") -> None:
    """machine.shell_interact(): see the module's docstring. `term`: this terminal's TERM."""
    if not machine.interact_lock.acquire(blocking=False):
        raise MachineError(f"{machine.name}: an interactive shell is already open on this machine")
    try:
        port = machine.shell_port()
        endpoint: _Endpoint = _Terminal(term) if address is None else _Socat(address)
        try:
            _run_session(machine, port.fileno(), endpoint, address)
        finally:
            endpoint.close()
    finally:
        machine.interact_lock.release()


def _run_session(machine: Machine, port_fd: int, endpoint: _Endpoint, address: str | None) -> None:
    nonce = secrets.token_hex(8)
    markers = FrameDecoder(nonce)
    rows, cols = endpoint.size()
    where = "this terminal" if address is None else address
    status, output = machine.execute(
        f"setsid -f {GUEST_SHELL} {nonce} {rows} {cols} {shlex.quote(endpoint.term)} {endpoint.mode}"
        " </dev/null >/dev/null 2>&1"
    )
    if status != 0:
        raise MachineError(f"{machine.name}: cannot start an interactive shell (exit code {status}): {output}")
    machine.log(f"root shell on {where}; Ctrl-D or `exit` ends it, the machine keeps running")
    terminal = isinstance(endpoint, _Terminal) and endpoint.is_tty
    serial_was_shown = machine.logger.print_serial_logs(False) if terminal else None

    def resize() -> None:
        new_rows, new_cols = endpoint.size()
        machine.execute(f't=$(cat /run/vmrig/shell.tty) && stty -F "$t" rows {new_rows} cols {new_cols}', timeout=30)

    try:
        with _raw(endpoint.input_fd, terminal), _on_resize(terminal) as wake_fd:
            _bridge(machine, port_fd, endpoint, markers, wake_fd, resize)
    except BaseException:
        # Interrupted here: do not leave the guest's shell holding the port.
        with contextlib.suppress(Exception):
            machine.execute(f"{_END_SESSION} || true", timeout=30)
        raise
    finally:
        if serial_was_shown is not None:
            machine.logger.print_serial_logs(serial_was_shown)
    if terminal:
        endpoint.write(b"\n")
    machine.log(f"root shell ended (exit status {markers.status})")


def _bridge(
    machine: Machine,
    port_fd: int,
    endpoint: _Endpoint,
    markers: FrameDecoder,
    wake_fd: int | None,
    resize: Callable[[], None],
) -> None:
    """Copies bytes both ways until the guest's end marker."""
    input_open = True
    line_open = False  # the last key sent did not end a line
    started_at = time.monotonic()
    hung_up_at: float | None = None
    while markers.status is None:
        watched = [port_fd] + ([endpoint.input_fd] if input_open and markers.started else [])
        if wake_fd is not None:
            watched.append(wake_fd)
        ready, _, _ = select.select(watched, [], [], HOLD_TIMEOUT)
        if not ready:
            _show(endpoint, markers.flush())
            now = time.monotonic()
            if not markers.started and now - started_at > START_TIMEOUT:
                raise MachineError(f"{machine.name}: the interactive shell did not start within {START_TIMEOUT:g} s")
            if hung_up_at is not None and now - hung_up_at > END_TIMEOUT:
                machine.log("the guest shell did not end; leaving it")
                return
            if machine.process is None or machine.process.poll() is not None:
                raise MachineError(f"{machine.name}: QEMU exited during the interactive shell")
            continue
        if port_fd in ready:
            data = os.read(port_fd, 1 << 16)
            if not data:
                _show(endpoint, markers.close())
                raise MachineError(f"{machine.name}: the interactive shell's port closed (QEMU exited?)")
            _show(endpoint, markers.feed(data))
        if wake_fd is not None and wake_fd in ready:
            os.read(wake_fd, 64)
            resize()
        if input_open and endpoint.input_fd in ready:
            try:
                keys = os.read(endpoint.input_fd, 1 << 16)
            except OSError:
                keys = b""
            if keys:
                _write_all(port_fd, keys)
                line_open = not keys.endswith(b"\n")
            elif endpoint.input_ends_shell:
                # Ctrl-D at the start of a line: the pty (canonical mode in line mode)
                # gives bash its end of input once it has read what came before.
                input_open = False
                _write_all(port_fd, b"\n\x04" if line_open else b"\x04")
            else:
                # The host side hung up (end of stdin, or socat's peer left): end the guest's shell.
                input_open = False
                hung_up_at = time.monotonic()
                machine.execute(f"{_END_SESSION} || true", timeout=30)


def console_interact(machine: Machine) -> None:
    """machine.console_interact(): stdin goes to the serial console, its lines are shown, until Ctrl-D."""
    machine.start()
    shown = machine.logger.print_serial_logs(True)
    machine.log("typing on the serial console (ttyS0); Ctrl-D ends")
    fd = sys.stdin.fileno()
    try:
        while True:
            try:
                data = os.read(fd, 4096)
            except KeyboardInterrupt:
                break
            if not data:
                break
            try:
                machine.send_console(data.decode(errors="replace"))
            except (OSError, ValueError) as error:
                raise MachineError(f"{machine.name}: cannot write to the serial console: {error}") from None
    finally:
        machine.logger.print_serial_logs(shown)
    machine.log("console session ended")
