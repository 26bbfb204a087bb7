"""The one funnel every host subprocess goes through.

`spawn` starts a long-lived child and returns a `Child` that owns it: the one
way to end a child is `Child.stop`, and a `with` block stops it on the way
out. `run` waits for a command, on a `Child` of its own. Both log the command
line (logger "vmrig.proc", debug level), give the child a predictable
environment, and kill the child if anything goes wrong on our side, so no
helper survives an exception. A command that fails raises HostCommandFailed,
which carries its argv, exit status and the tail of its stderr. Long-lived
children are also started with a parent-death signal: they die with the
driver even when it is SIGKILLed, whichever thread started them.

Other modules do not import `subprocess`: the constants they need are here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from vmrig.errors import HostCommandFailed, HostToolMissing

LOG = logging.getLogger("vmrig.proc")

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired
# How long a killed child may take to go; longer means it hangs in the kernel.
KILL_WAIT = 10.0

# Host programs vmrig calls, and the Debian package that provides each.
TOOL_PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "vde_switch": "vde2",
    "socat": "socat",
    "ssh": "openssh-client",
    "tesseract": "tesseract-ocr",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "zstd": "zstd",
    "lz4": "lz4",
    "gcc": "gcc",
    "swtpm": "swtpm",
}


def require_tool(name: str) -> str:
    """The path of host program `name`, or HostToolMissing naming its package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise HostToolMissing(name, TOOL_PACKAGES.get(name, name))
    return path


def tail(output: bytes | str, lines: int) -> list[str]:
    """The last `lines` lines of a program's output, decoded, trailing blank space dropped."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return text.rstrip().splitlines()[-lines:]


def file_tail(path: Path, lines: int = 5) -> str:
    """The last `lines` lines of a helper's log file, joined with " / " (for an error message)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    return " / ".join(tail(text, lines)) or "(no output)"


def wait_for_socket(path: Path, child: Child, timeout: float) -> bool:
    """Waits until long-lived `child` has made its socket `path`; False if it exited first or `timeout` (s) passed."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.pop("LANGUAGE", None)
    if extra:
        env.update(extra)
    return env


class Child:
    """A started child process, owned: `stop` is the one way to end it.

    `stop` leaves stdout and stderr open for a reader that is still draining
    them; `close` (and leaving a `with` block) stops the child and closes them.
    """

    def __init__(self, popen: subprocess.Popen[bytes], argv: list[str], own_group: bool = False) -> None:
        self._popen = popen
        self.argv = argv
        self._own_group = own_group

    def __repr__(self) -> str:
        return f"<Child {self.pid} {self.argv[0]!r}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        return self._popen.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        return self._popen.stdout

    @property
    def stderr(self) -> IO[bytes] | None:
        return self._popen.stderr

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def cpu_seconds(self) -> float:
        """CPU time the child has used so far, all its threads, user and system (s); 0.0 once it is gone."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        # utime and stime are fields 14 and 15 of proc(5); the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; raises TimeoutExpired after `timeout` seconds."""
        return self._popen.wait(timeout)

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        stdout, stderr = self._popen.communicate(input, timeout)
        return stdout or b"", stderr or b""

    def stop(self, grace: float = 5.0) -> int | None:
        """Ends the child: closes its stdin, terminates it, kills it if it lingers.

        `grace` is how long it may take to go after SIGTERM; 0 kills it at
        once. Returns the exit status (None if even SIGKILL did not end it).
        """
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
        if self.poll() is None and grace > 0:
            deadline = time.monotonic() + grace
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(grace)
            while self._group_left() and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.poll() is None or self._group_left():
            self._signal(signal.SIGKILL)
            try:
                self.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                LOG.warning("%s (pid %d) did not end after SIGKILL", self.argv[0], self.pid)
        return self.returncode

    def _group_left(self) -> bool:
        """Whether the process group this child led still has a process after the child ended."""
        if not self._own_group or self.poll() is None:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _signal(self, signum: signal.Signals) -> None:
        """Sends `signum` to the child, and to its whole process group when it leads one.

        A child in a group of its own may be a wrapper that started the real
        program as its own child (a user's QEMU start command): that one goes too.
        """
        if not self._own_group:
            self._popen.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def close(self, grace: float = 5.0) -> None:
        """Stops the child and closes its pipes: for an owner that is done with it."""
        self.stop(grace)
        for pipe in (self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start(
    argv: list[str],
    *,
    prefix: Sequence[str] = (),
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    own_group: bool = False,
) -> Child:
    """Starts `argv`, through `prefix` if given (a wrapper that execs it, so the child is `argv`).

    `own_group`: the child leads a process group of its own, so the SIGINT a
    terminal sends to the driver's group at Ctrl-C does not reach it.
    """
    LOG.debug("+ %s", shlex.join(argv))
    popen = subprocess.Popen(
        [*prefix, *argv],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        env=child_env(env),
        cwd=cwd,
        process_group=0 if own_group else None,
    )
    return Child(popen, argv, own_group)


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs `cmd` to completion; raises HostCommandFailed when `check` and it fails.

    The child gets no parent-death signal: it is waited for right here, and
    killed if the wait ends early (timeout, Ctrl-C).
    """
    argv = [str(part) for part in cmd]
    out = PIPE if capture else None
    with _start(argv, stdin=PIPE if input is not None else DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd) as child:
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except BaseException:
            child.stop(grace=0)
            raise
    status = child.wait()
    if check and status != 0:
        failure = HostCommandFailed(argv, status, stderr=stderr, stdout=stdout)
        LOG.debug("%s", failure)
        raise failure
    return subprocess.CompletedProcess(argv, status, stdout, stderr)


def spawn(
    cmd: Sequence[str | Path],
    *,
    stdin: int | IO[Any] | None = DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    death_signal: str = "KILL",
) -> Child:
    """Starts a long-lived child that the kernel signals (`death_signal`, SIGKILL) when this process dies.

    The child has a process group of its own: Ctrl-C at the driver's prompt
    interrupts the driver, not its machines and switches. Callable from any
    thread (a script may run machine commands in threads of its own).
    """
    setpriv = require_tool("setpriv")

    def start() -> Child:
        return _start(
            [str(part) for part in cmd],
            prefix=(setpriv, "--pdeathsig", death_signal, "--"),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            env=env,
            cwd=cwd,
            own_group=True,
        )

    # The parent-death signal fires when the *thread* that forked the child
    # ends, not the process: a QEMU started from a script's short-lived thread
    # was killed as that thread returned. The main thread and the spawner
    # thread live as long as the process.
    if threading.current_thread() is threading.main_thread():
        return start()
    return _spawner().submit(start).result()


_SPAWNER: concurrent.futures.ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
    """One thread, started on first use, that forks long-lived children for the other threads."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmrig-spawn")
        return _SPAWNER
