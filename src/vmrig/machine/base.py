"""The machine's shared state and the few primitives every part of its script API builds on.

NixOS's BaseMachine idea: the script API (vmrig.machine.commands, systemd,
waits, files, monitor, snapshots) is written against this class; the QEMU
machine (vmrig.machine.lifecycle and vmrig.machine.backdoor) provides
`execute`, `connect` and the rest of the abstract methods.
"""

from __future__ import annotations

import abc
import contextlib
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from vmrig import proc
from vmrig.channel import FrameDecoder
from vmrig.errors import MachineError
from vmrig.log import Logger
from vmrig.machine.config import MachineConfig
from vmrig.machine.console import CONSOLE_TAIL, SerialConsole
from vmrig.qmp import QMPClient
from vmrig.timeouts import Duration

DEFAULT_TIMEOUT = 900


class MachineBase(abc.ABC):
    """A machine's state, its log, and the abstract operations the script API needs."""

    # The attributes a script may use, besides the methods (`vmrig check` reads them from here).
    config: MachineConfig
    name: str
    state_dir: Path
    out_dir: Path
    logger: Logger
    keep_vm_state: bool
    callbacks: list[Callable[[], None]]
    process: proc.Child | None
    pid: int | None
    booted: bool
    connected: bool
    stalled: bool  # the backdoor shell left a command unanswered past its timeout
    qmp: QMPClient | None
    interact_lock: threading.Lock
    boot_count: int  # backdoor connections so far: one per boot of the guest
    boot_hooks: list[Callable[[MachineBase], None]]

    def __init__(
        self,
        config: MachineConfig,
        *,
        state_dir: Path,
        out_dir: Path,
        logger: Logger,
        keep_vm_state: bool = False,
        callbacks: list[Callable[[], None]] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.state_dir = state_dir
        self.out_dir = out_dir.absolute()  # QEMU (screendump) resolves paths from its own directory
        self.logger = logger
        self.keep_vm_state = keep_vm_state
        self.callbacks = callbacks or []
        self.process: proc.Child | None = None
        self.pid: int | None = None
        self.booted = False
        self.connected = False
        # The backdoor shell left a command unanswered past its timeout: the failure
        # report asks the guest nothing more (each question would wait as long again).
        self.stalled = False
        # Why the driver stopped QEMU (release(reason=...)), for the errors of commands it broke.
        self._stopped_because: str | None = None
        self.qmp: QMPClient | None = None
        self._shell: socket.socket | None = None
        self._data: socket.socket | None = None
        # Host end of the virtio port vmrig.shell (shell_interact's terminal).
        self._shell_port: socket.socket | None = None
        # Host end of the virtio port vmrig.ctl: cancels the running command (Ctrl-C).
        self._control: socket.socket | None = None
        self.interact_lock = threading.Lock()
        self._shell_buffer = bytearray()  # command output, from the data port
        self._console_buffer = bytearray()  # the backdoor shell's console, for its ready line
        self._console = SerialConsole()
        self._first_start = True  # only a first start restores or saves a booted snapshot
        self._save_to: Path | None = None  # this boot is saved there once up
        self._save_ready: Path | None = None  # settled, to be saved there with its company
        self._save_started = 0.0  # time.monotonic() of the save's stop
        self._allow_reboot = False  # what the running QEMU was started with
        self._snapshot_final = Path()
        self._restore_pending = False  # restored, its first command not sent yet
        self._fixup: FrameDecoder | None = None  # a restore's fix-up, sent and not yet answered
        self._command_lock = threading.RLock()
        self._in_callbacks = False
        # Backdoor connections so far: one per boot of the guest.
        self.boot_count = 0
        # Called with the machine before the first command of each boot (the
        # driver's network puts its faults back after a reboot).
        self.boot_hooks: list[Callable[[MachineBase], None]] = []
        self._boot_hooks_due = False
        # The machines on its vlans running beside this one's first boot, not started with it
        # (the driver's answer; see Snapshots._neighbour_blocker).
        self._neighbours_up: Callable[[], list[str]] = list
        # The machines on its vlans started with it (start_all): booted snapshots save them
        # together, after every one has settled, and restore them together.
        self._company: frozenset[str] = frozenset()
        self._company_machines: Callable[[], Sequence[MachineBase]] = list
        if not keep_vm_state and state_dir.exists():
            self.log(f"deleting VM state directory {state_dir}")
            self.log("if you want to keep the VM state, pass --keep-vm-state")
            shutil.rmtree(state_dir)

    def __repr__(self) -> str:
        return f"<Machine '{self.name}'>"

    @property
    def shared_dir(self) -> Path:
        """NixOS's `machine.shared_dir`: the host directory the guest sees at /tmp/shared (one per run,
        shared by its machines). MachineError when this run's machines do not mount it."""
        if self.config.exchange_dir is None:
            raise MachineError(
                f"{self.name}: this run's machines do not mount /tmp/shared: with booted snapshots on,"
                " only a script that names /tmp/shared or shared_dir gets it (name it in the test"
                " file's script, or run with --no-snapshots)"
            )
        return self.config.exchange_dir

    # -- logging ---------------------------------------------------------------

    # NixOS's parameter names (msg, attrs), which scripts may pass as keywords.
    def log(self, msg: str) -> None:
        self.logger.log(msg, {"machine": self.name})

    def nested(self, msg: str, attrs: dict[str, str] | None = None) -> contextlib.AbstractContextManager[None]:
        return self.logger.nested(msg, {**(attrs or {}), "machine": self.name})

    @contextlib.contextmanager
    def channel_free_within(self, seconds: float) -> Iterator[bool]:
        """Holds the command channel if no other thread's command keeps it for `seconds`; yields whether it does."""
        held = self._command_lock.acquire(timeout=seconds)
        try:
            yield held
        finally:
            if held:
                self._command_lock.release()

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        return self._console.tail(self.name, lines)

    def _broken(self, message: str) -> MachineError:
        return MachineError(f"{self.name}: {message}\nlast console lines:\n{self.console_tail()}")

    def run_callbacks(self) -> None:
        if self._in_callbacks:
            return
        self._in_callbacks = True
        try:
            for callback in self.callbacks:
                callback()
        finally:
            self._in_callbacks = False

    # -- the QEMU process --------------------------------------------------------

    def _running(self, what: str) -> proc.Child:
        """The QEMU process, or MachineError naming `what` needed it."""
        if self.process is None:
            raise MachineError(f"{self.name}: {what}(): the machine has not been started")
        return self.process

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _exit_note(self) -> str:
        if self._stopped_because is not None:
            return f"QEMU was stopped because {self._stopped_because}"
        if self.process is None:
            return "QEMU is not running"
        with contextlib.suppress(proc.TimeoutExpired):
            self.process.wait(2)  # a dying QEMU may not have been reaped yet
        status = self.process.poll()
        return "QEMU is not answering" if status is None else f"QEMU exited with status {status}"

    def _overlay_file(self) -> Path:
        """The qcow2 overlay the machine writes its root disk to, in its state directory."""
        return self.state_dir / f"{self.name}.qcow2"

    def _empty_disk_files(self) -> list[Path]:
        """The qcow2 files of the machine's empty disks (Node.empty_disks), in its state directory."""
        return [self.state_dir / f"{self.name}-empty{index}.qcow2" for index in range(len(self.config.empty_disks))]

    # -- provided by the QEMU machine ----------------------------------------------

    @abc.abstractmethod
    def start(self, allow_reboot: bool = False) -> None: ...

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def release(self, reason: str | None = None) -> None: ...

    @abc.abstractmethod
    def _cleanup_after_exit(self) -> None: ...

    @abc.abstractmethod
    def _run_boot_hooks(self) -> None: ...

    @abc.abstractmethod
    def _finish_restore(self, *, count_boot: bool) -> None: ...

    @abc.abstractmethod
    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: Duration | None = DEFAULT_TIMEOUT,
    ) -> tuple[int, str]: ...

    @abc.abstractmethod
    def execute_bytes(
        self,
        command: str,
        timeout: Duration | None = DEFAULT_TIMEOUT,
        *,
        check_output: bool = True,
        gone_ok: bool = False,
    ) -> tuple[int, bytes]: ...

    @abc.abstractmethod
    def _run(
        self,
        command: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        stdin: bytes | None = None,
        wait: bool = True,
        moves_clock: bool = False,
        gone_ok: bool = False,
    ) -> tuple[int, bytes]: ...
