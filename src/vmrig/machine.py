"""One virtual machine: a QEMU process, its backdoor shell, console and QMP.

The API follows the NixOS test driver's Machine (same names, parameters and
errors), so NixOS test scripts run unchanged. Commands travel over a root
shell on the virtio console /dev/hvc0 (see guest/protocol.bash): a command
line goes in, the command's stdout comes back between two markers that carry
a random nonce, then its exit status. The serial console (ttyS0: kernel and
journal) is QEMU's stdout, read line by line into the log.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import math
import os
import re
import secrets
import select
import shlex
import shutil
import socket
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vmrig import proc, snapshot
from vmrig.channel import FrameDecoder
from vmrig.contract import READY_LINE
from vmrig.errors import ArgumentError, MachineError, RequestedAssertionFailed
from vmrig.hostnet import LOOPBACK
from vmrig.log import ANSI_ESCAPE, Logger
from vmrig.qmp import QMPClient
from vmrig.ssh import vsock_cid_hint
from vmrig.timeouts import Duration, TimeoutScale, seconds

DEFAULT_TIMEOUT = 900
# How long the backdoor may take to come up before the start counts as failed.
CONNECT_TIMEOUT = float(os.environ.get("VMRIG_CONNECT_TIMEOUT", "300"))
CONSOLE_TAIL = 20
# QEMU's migration capability that leaves RAM in a named shared file out of the stream.
IGNORE_SHARED = {"capability": "x-ignore-shared", "state": True}
QBOOT = Path("/usr/share/qemu/qboot.rom")
# How long a command may take to end once cancelled: its watchdog sends
# SIGTERM, then SIGKILL 5 s later.
CANCEL_WAIT = 10.0
# How long the guest may take to read a command's input (copy_from_host).
DATA_TIMEOUT = 300.0
KERNEL_PARAMS = (
    "console=ttyS0",
    "root=/dev/vda",
    "rw",
    "quiet",
    "net.ifnames=0",
    "panic=1",
    "tsc=reliable",
    "no_timer_check",
    "systemd.show_status=0",
)

UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".target",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
    ".slice",
    ".scope",
)


def wait_unit_for(unit: str) -> str:
    """The instance of vmrig-wait@.service that waits for `unit`.

    Any unit name is a valid instance name, so it goes in as it is; a name
    without a suffix means a service, as for systemctl.
    """
    if not unit.endswith(UNIT_SUFFIXES):
        unit += ".service"
    return f"vmrig-wait@{unit}.service"


# Characters send_chars() sends as QEMU key names (others are sent as themselves).
CHAR_TO_KEY = {
    "A": "shift-a",
    "N": "shift-n",
    "-": "0x0C",
    "_": "shift-0x0C",
    "B": "shift-b",
    "O": "shift-o",
    "=": "0x0D",
    "+": "shift-0x0D",
    "C": "shift-c",
    "P": "shift-p",
    "[": "0x1A",
    "{": "shift-0x1A",
    "D": "shift-d",
    "Q": "shift-q",
    "]": "0x1B",
    "}": "shift-0x1B",
    "E": "shift-e",
    "R": "shift-r",
    ";": "0x27",
    ":": "shift-0x27",
    "F": "shift-f",
    "S": "shift-s",
    "'": "0x28",
    '"': "shift-0x28",
    "G": "shift-g",
    "T": "shift-t",
    "`": "0x29",
    "~": "shift-0x29",
    "H": "shift-h",
    "U": "shift-u",
    "\\": "0x2B",
    "|": "shift-0x2B",
    "I": "shift-i",
    "V": "shift-v",
    ",": "0x33",
    "<": "shift-0x33",
    "J": "shift-j",
    "W": "shift-w",
    ".": "0x34",
    ">": "shift-0x34",
    "K": "shift-k",
    "X": "shift-x",
    "/": "0x35",
    "?": "shift-0x35",
    "L": "shift-l",
    "Y": "shift-y",
    " ": "spc",
    "M": "shift-m",
    "Z": "shift-z",
    "\n": "ret",
    "!": "shift-0x02",
    "@": "shift-0x03",
    "#": "shift-0x04",
    "$": "shift-0x05",
    "%": "shift-0x06",
    "^": "shift-0x07",
    "&": "shift-0x08",
    "*": "shift-0x09",
    "(": "shift-0x0A",
    ")": "shift-0x0B",
}


class Sidecar(Protocol):
    """A host process a machine needs while QEMU runs (e.g. a virtiofsd per shared directory).

    `start()` is called right before QEMU starts, from the thread that starts
    QEMU (the parent-death signal is tied to it); `stop()` once QEMU is gone.
    """

    def qemu_args(self) -> list[str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class MachineConfig:
    """Everything a machine needs to boot, in terms QEMU understands."""

    name: str
    disk: Path  # read-only base image; the machine writes to an overlay
    kernel: Path
    initrd: Path
    config_layer: bytes = b""  # appended to the initrd (see guestconfig)
    memory_mib: int = 1024
    cores: int = 1
    disk_mib: int = 4096
    kernel_params: list[str] = field(default_factory=list)
    qemu_options: list[str] = field(default_factory=list)
    accel: str = "tcg"
    # (vlan number, MAC address, vde_switch socket directory)
    vlan_nics: list[tuple[int, str, str]] = field(default_factory=list)
    user_net_options: str = ""  # appended to -netdev user (hostfwd=..., QEMU_NET_OPTS)
    outside_access: bool = False
    start_command: str | None = None  # a user's own QEMU start command (create_machine)
    vsock_cid: int | None = None  # a vhost-vsock device with this guest CID (the SSH backdoor)
    sidecars: list[Sidecar] = field(default_factory=list)  # host helpers and their QEMU arguments
    timeout_scale: TimeoutScale = field(default_factory=TimeoutScale)  # applied to the script's timeouts
    # The image cache: the first start restores this configuration's booted snapshot
    # from there, or saves one once booted (see vmrig.snapshot). None: always boot.
    snapshot_root: Path | None = None


class Machine:
    """A NixOS-test-driver-compatible machine."""

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
    qmp: QMPClient | None
    interact_lock: threading.Lock
    boot_count: int  # backdoor connections so far: one per boot of the guest
    boot_hooks: list[Callable[[Machine], None]]

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
        self.out_dir = out_dir
        self.logger = logger
        self.keep_vm_state = keep_vm_state
        self.callbacks = callbacks or []
        self.process: proc.Child | None = None
        self.pid: int | None = None
        self.booted = False
        self.connected = False
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
        self._serial_thread: threading.Thread | None = None
        self._console_lines: list[str] = []
        self._console_consumed = 0  # lines that wait_for_console_text has read past
        self._first_start = True  # only a first start restores or saves a booted snapshot
        self._save_to: Path | None = None  # this boot is saved there once up
        self._snapshot_final = Path()
        self._restore_pending = False  # restored, its first command not sent yet
        self._console_cond = threading.Condition()
        self._last_lines: deque[str] = deque(maxlen=200)
        self._command_lock = threading.RLock()
        self._in_callbacks = False
        # Backdoor connections so far: one per boot of the guest.
        self.boot_count = 0
        # Called with the machine before the first command of each boot (the
        # driver's network puts its faults back after a reboot).
        self.boot_hooks: list[Callable[[Machine], None]] = []
        self._boot_hooks_due = False
        if not keep_vm_state and state_dir.exists():
            self.log(f"deleting VM state directory {state_dir}")
            self.log("if you want to keep the VM state, pass --keep-vm-state")
            shutil.rmtree(state_dir)

    def __repr__(self) -> str:
        return f"<Machine '{self.name}'>"

    # -- logging ---------------------------------------------------------------

    def log(self, message: str) -> None:
        self.logger.log(message, {"machine": self.name})

    def nested(self, message: str) -> contextlib.AbstractContextManager[None]:
        return self.logger.nested(message, {"machine": self.name})

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        with self._console_cond:
            tail = list(self._last_lines)[-lines:]
        return "\n".join(f"    {self.name} # {line}" for line in tail) or "    (the console printed nothing)"

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

    # -- lifecycle -------------------------------------------------------------

    def is_up(self) -> bool:
        return self.booted and self.connected

    def _prepare_state(self, backing: Path | None = None) -> Path:
        """The state directory, its initrd and the disk overlay (on `backing`, else on the image)."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        overlay = self.state_dir / f"{self.name}.qcow2"
        if backing is not None:
            overlay.unlink(missing_ok=True)
        if not overlay.exists():
            proc.run(
                [
                    proc.require_tool("qemu-img"),
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-b",
                    backing or self.config.disk,
                    "-F",
                    "qcow2",
                    overlay,
                    f"{self.config.disk_mib}M",
                ]
            )
        initrd = self.state_dir / "initrd.img"
        with open(initrd, "wb") as out:
            out.write(self.config.initrd.read_bytes())
            out.write(self.config.config_layer)
        return overlay

    def qemu_command(
        self,
        overlay: Path,
        shell_fd: int,
        qmp_fd: int,
        data_fd: int,
        allow_reboot: bool,
        shell_port_fd: int | None = None,
        control_fd: int | None = None,
        ram: tuple[Path, bool] | None = None,
        incoming: bool = False,
    ) -> list[str]:
        """QEMU's command line. `ram`: guest memory in that file (shared, or mapped
        copy-on-write), for snapshots; `incoming`: wait for a saved state (restore)."""
        c = self.config
        params = [*KERNEL_PARAMS, *c.kernel_params]
        cmd: list[str] = [
            proc.require_tool("qemu-system-x86_64"),
            "-name",
            c.name,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-accel",
            # Several vCPUs on one thread under TCG: on parallel threads a vCPU can run
            # code another is patching, and the guest kernel dies (see spec.default_cores).
            f"{c.accel},thread=single" if c.accel == "tcg" and c.cores > 1 else c.accel,
            # TCG's `max`: everything QEMU emulates (x86-64-v3 and more), which Debian's software
            # uses (haproxy needs cmpxchg16b). QEMU 7.2's TCG corrupted RFLAGS in cmpxchg16b
            # (9 of 15 boots died), hence vmrig's QEMU >= 10 (see accel.check_qemu_version).
            "-cpu",
            "host" if c.accel == "kvm" else "max",
            # qboot, a minimal firmware for direct kernel boot, starts faster than SeaBIOS.
            *(["-bios", str(QBOOT)] if QBOOT.exists() else []),
            "-m",
            str(c.memory_mib),
            "-smp",
            str(c.cores),
            "-kernel",
            str(c.kernel),
            "-initrd",
            str(self.state_dir / "initrd.img"),
            "-append",
            " ".join(params),
            "-drive",
            f"file={overlay},if=virtio,format=qcow2,discard=unmap",
            "-device",
            "virtio-serial",
            "-chardev",
            f"socket,id=shell,fd={shell_fd}",
            "-device",
            "virtconsole,chardev=shell",
            "-chardev",
            f"socket,id=data,fd={data_fd}",
            "-device",
            "virtserialport,chardev=data,name=vmrig.data",
            *(
                [
                    "-chardev",
                    f"socket,id=tty,fd={shell_port_fd}",
                    "-device",
                    "virtserialport,chardev=tty,name=vmrig.shell",
                ]
                if shell_port_fd is not None
                else []
            ),
            *(
                [
                    "-chardev",
                    f"socket,id=ctl,fd={control_fd}",
                    "-device",
                    "virtserialport,chardev=ctl,name=vmrig.ctl",
                ]
                if control_fd is not None
                else []
            ),
            "-chardev",
            f"socket,id=qmp,fd={qmp_fd}",
            "-mon",
            "chardev=qmp,mode=control",
            "-serial",
            "stdio",
            "-device",
            "virtio-rng-pci",
            "-netdev",
            self._user_netdev(),
            "-device",
            "virtio-net-pci,netdev=user0,mac=52:54:00:12:34:56,id=nic0",
        ]
        for index, (vlan, mac, sock) in enumerate(c.vlan_nics, start=1):
            cmd += [
                "-netdev",
                f"vde,id=vlan{index},sock={sock}",
                "-device",
                f"virtio-net-pci,netdev=vlan{index},mac={mac},id=nic{index}",
            ]
            del vlan
        if c.vsock_cid is not None:
            cmd += ["-device", f"vhost-vsock-pci,guest-cid={c.vsock_cid}"]
        for sidecar in c.sidecars:
            cmd += sidecar.qemu_args()
        if ram is not None:
            path, shared = ram
            cmd += [
                "-object",
                f"memory-backend-file,id=ram0,size={c.memory_mib}M,mem-path={path},share={'on' if shared else 'off'}",
                "-machine",
                "memory-backend=ram0",
            ]
        if incoming:
            cmd += ["-incoming", "defer"]
        if not allow_reboot:
            cmd.append("-no-reboot")
        cmd += c.qemu_options
        cmd += shlex.split(os.environ.get("QEMU_OPTS", ""))
        return cmd

    def _user_netdev(self) -> str:
        parts = ["user", "id=user0", f"restrict={'off' if self.config.outside_access else 'on'}"]
        extra = ",".join(p for p in (self.config.user_net_options, os.environ.get("QEMU_NET_OPTS", "")) if p)
        if extra:
            parts.append(extra)
        return ",".join(parts)

    def start(self, allow_reboot: bool = False) -> None:
        """Starts QEMU and returns at once; the first command waits for the shell."""
        if self.booted:
            return
        self.log("starting vm")
        restore_from, self._save_to = self._snapshot_plan(allow_reboot)
        overlay = self._prepare_state(backing=restore_from / snapshot.DISK if restore_from else None)
        ram = None
        if restore_from is not None:
            ram = (restore_from / snapshot.RAM, False)
        elif self._save_to is not None:
            ram = (self._save_to / snapshot.RAM, True)
        shell_host, shell_guest = socket.socketpair()
        qmp_host, qmp_guest = socket.socketpair()
        data_host, data_guest = socket.socketpair()
        port_host, port_guest = socket.socketpair()
        control_host, control_guest = socket.socketpair()
        guest_ends = (shell_guest, qmp_guest, data_guest, port_guest, control_guest)
        try:
            args = self.qemu_command(
                overlay,
                shell_guest.fileno(),
                qmp_guest.fileno(),
                data_guest.fileno(),
                allow_reboot,
                shell_port_fd=port_guest.fileno(),
                control_fd=control_guest.fileno(),
                ram=ram,
                incoming=restore_from is not None,
            )
            if self.config.start_command:
                args = ["sh", "-c", f'{self.config.start_command} "$@"', "vmrig-start", *args[1:]]
            for sidecar in self.config.sidecars:
                sidecar.start()
            self.process = proc.spawn(
                args,
                stdin=proc.PIPE,
                stdout=proc.PIPE,
                stderr=proc.STDOUT,
                pass_fds=[sock.fileno() for sock in guest_ends],
                cwd=self.state_dir,
                env={"TMPDIR": str(self.state_dir)},
            )
        except BaseException:
            for sock in (shell_host, qmp_host, data_host, port_host, control_host, *guest_ends):
                sock.close()
            for sidecar in self.config.sidecars:
                sidecar.stop()
            raise
        for sock in guest_ends:
            sock.close()
        self._shell = shell_host
        self._data = data_host
        self._shell_port = port_host
        self._control = control_host
        self._shell_buffer.clear()
        self._console_buffer.clear()
        self.pid = self.process.pid
        with self._console_cond:
            self._console_lines = []
            self._console_consumed = 0
            self._last_lines.clear()
        self._serial_thread = threading.Thread(target=self._read_serial, name=f"serial-{self.name}", daemon=True)
        self._serial_thread.start()
        self.qmp = QMPClient(qmp_host)
        try:
            self.qmp.connect(timeout=60)
        except MachineError as error:
            self.release()
            hint = vsock_cid_hint(self.get_console_log(), self.config.vsock_cid)
            raise self._broken(f"QEMU did not start ({error}){hint}") from None
        except BaseException:
            self.release()
            raise
        self.booted = True
        self.log(f"QEMU running (pid {self.pid})")
        if restore_from is not None:
            self._load_snapshot(restore_from)

    # -- booted snapshots (see vmrig.snapshot) ------------------------------------

    def _snapshot_key(self, allow_reboot: bool) -> str:
        """What the booted guest depends on: QEMU, its command line (run-specific paths left out), image, config."""
        probe = dataclasses.replace(
            self.config, vlan_nics=[(vlan, mac, f"vde{vlan}") for vlan, mac, _sock in self.config.vlan_nics]
        )
        real, self.config = self.config, probe
        try:
            argv = self.qemu_command(Path("overlay"), 3, 4, 5, allow_reboot, shell_port_fd=6, control_fd=7)
        finally:
            self.config = real
        state = str(self.state_dir)
        return snapshot.key(
            [
                proc.run([argv[0], "--version"]).stdout.decode(errors="replace"),
                *(part.replace(state, "STATE") for part in argv[1:]),
                str(self.config.disk),
                hashlib.sha256(self.config.config_layer).hexdigest(),
                str(self.config.initrd.stat().st_size),
            ]
        )

    def _snapshot_plan(self, allow_reboot: bool) -> tuple[Path | None, Path | None]:
        """(snapshot to restore, scratch directory to save this boot into): at most one of them.

        Only a machine's first start in a run uses snapshots: later starts
        (after crash() or shutdown()) boot its disk as it is, as NixOS does.
        """
        first, self._first_start = self._first_start, False
        root = self.config.snapshot_root
        if not first or root is None or self.keep_vm_state or self.config.start_command:
            return None, None
        if self.config.sidecars:
            self.log("booting without a snapshot: its shared directories (virtiofs) cannot be saved in one")
            return None, None
        key = self._snapshot_key(allow_reboot)
        final = root / f"{snapshot.PREFIX}{key}"
        self._snapshot_final = final
        if snapshot.complete(final):
            return final, None
        return None, snapshot.scratch_dir(root, key)

    def _migration_done(self, what: str) -> None:
        """Waits until QEMU's migration (save or restore) has completed."""
        if self.qmp is None:
            raise self._broken(f"{what}: QEMU's monitor is not connected")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = self.qmp.execute("query-migrate").get("status", "none")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise self._broken(f"{what} failed (QEMU's migration status: {status})")
            time.sleep(0.01)
        raise self._broken(f"{what} did not finish within 120 s")

    def _load_snapshot(self, directory: Path) -> None:
        """Loads a booted snapshot into the QEMU just started with `-incoming defer`, and resumes it."""
        started = time.monotonic()
        assert self.qmp is not None
        try:
            self.qmp.execute("migrate-set-capabilities", {"capabilities": [IGNORE_SHARED]})
            self.qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(directory / snapshot.STATE))}"})
            self._migration_done("restoring the booted snapshot")
            self.qmp.execute("cont")
        except BaseException:
            self.release()
            raise
        snapshot.touch(directory)
        with contextlib.suppress(OSError), self._console_cond:
            lines = (directory / snapshot.CONSOLE).read_text(errors="replace").splitlines()
            self._console_lines[:0] = lines
            recent = list(self._last_lines)
            self._last_lines.clear()
            self._last_lines.extend([*lines, *recent])
        self._restore_pending = True
        self.log(f"restored a booted snapshot ({time.monotonic() - started:.2f} s; {directory.name})")

    def _save_snapshot(self, scratch: Path) -> None:
        """Saves the booted guest into `scratch`, publishes it and restarts from it.

        The guest is stopped while its channel is idle; its overlay becomes the
        snapshot's frozen disk, so this run too goes on from a restore.
        """
        assert self.qmp is not None and self.process is not None
        started = time.monotonic()
        try:
            self.qmp.execute("stop")
            self.qmp.execute("migrate-set-capabilities", {"capabilities": [IGNORE_SHARED]})
            self.qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(scratch / snapshot.STATE))}"})
            self._migration_done("saving the booted snapshot")
        except MachineError as error:
            self.log(f"no booted snapshot of this machine: {error}")
            with contextlib.suppress(MachineError):
                self.qmp.execute("cont")
            shutil.rmtree(scratch, ignore_errors=True)
            return
        with self._console_cond:
            (scratch / snapshot.CONSOLE).write_text("\n".join(self._console_lines) + "\n")
        with contextlib.suppress(MachineError):
            self.qmp.execute("quit")
        self.process.wait(30)
        self._cleanup_after_exit()
        shutil.move(self.state_dir / f"{self.name}.qcow2", scratch / snapshot.DISK)
        (scratch / "backing").write_text(f"{self.config.disk}\n")
        final = self._snapshot_final
        snapshot.publish(scratch, final)
        self.log(f"saved a booted snapshot ({time.monotonic() - started:.2f} s; {final.name})")
        self._first_start = True
        self.start()

    def _read_serial(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            line = ANSI_ESCAPE.sub("", raw.decode(errors="replace")).replace("\r", "").rstrip()
            with self._console_cond:
                self._console_lines.append(line)
                self._last_lines.append(line)
                self._console_cond.notify_all()
            self.logger.log_serial(line, self.name)
        with self._console_cond:
            self._console_cond.notify_all()

    def _running(self, what: str) -> proc.Child:
        """The QEMU process, or MachineError naming `what` needed it."""
        if self.process is None:
            raise MachineError(f"{self.name}: {what}(): the machine has not been started")
        return self.process

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _exit_note(self) -> str:
        if self.process is None:
            return "QEMU is not running"
        with contextlib.suppress(proc.TimeoutExpired):
            self.process.wait(2)  # a dying QEMU may not have been reaped yet
        status = self.process.poll()
        return "QEMU is not answering" if status is None else f"QEMU exited with status {status}"

    def connect(self) -> None:
        """Starts the machine if needed and waits until its backdoor shell answers."""
        if self.connected:
            return
        with self._command_lock, self.nested("waiting for the VM to finish booting"):
            self.start()
            if self._restore_pending:
                self._finish_restore(count_boot=True)
                return
            assert self._shell is not None
            started = time.monotonic()
            deadline = started + CONNECT_TIMEOUT
            next_note = started + 30
            while READY_LINE not in self._console_buffer:
                now = time.monotonic()
                if now > deadline:
                    raise self._broken(
                        f"the backdoor shell did not come up within {CONNECT_TIMEOUT:.0f} s "
                        "(is vmrig-backdoor.service running in the guest?)"
                    )
                if now > next_note:
                    self.log("guest root shell did not produce any data yet...")
                    next_note = now + 30
                if not self._receive(1.0, console=True):
                    raise self._broken(f"{self._exit_note()} before its backdoor shell came up")
            index = self._console_buffer.index(READY_LINE) + len(READY_LINE)
            del self._console_buffer[: index + 1]
            self.connected = True
            self.boot_count += 1
            self._boot_hooks_due = bool(self.boot_hooks)
            # The backdoor starts with the first units of the boot; a script's first command
            # expects what NixOS's backdoor unit has when it starts: basic.target (sockets
            # such as D-Bus's, local file systems). PID 1 does the waiting (see wait_unit_for).
            left = max(1, int(deadline - time.monotonic()))
            status, _ = self._run(f"systemctl start {wait_unit_for('basic.target')}", timeout=left)
            if status != 0:
                self.log(f"basic.target was not reached (systemctl exit code {status})")
            self.log(f"connected to guest root shell (connecting took {time.monotonic() - started:.2f} seconds)")
            if self._save_to is not None:
                scratch, self._save_to = self._save_to, None
                self._save_snapshot(scratch)
                if self._restore_pending:
                    self._finish_restore(count_boot=False)

    def _finish_restore(self, *, count_boot: bool) -> None:
        """A restored guest's first command: the host's time and fresh randomness (see vmrig.snapshot)."""
        self._restore_pending = False
        self.connected = True
        if count_boot:
            self.boot_count += 1
            self._boot_hooks_due = bool(self.boot_hooks)
        status, output = self._run(snapshot.fixup_command(), timeout=60)
        if status != 0:
            failure = output.decode(errors="replace").strip()
            raise self._broken(f"setting the clock and reseeding the restored guest failed: {failure}")

    def _run_boot_hooks(self) -> None:
        """Connects, and after a new boot runs the boot hooks (outside the command lock: they send commands)."""
        self.connect()
        if self._boot_hooks_due:
            self._boot_hooks_due = False
            for hook in self.boot_hooks:
                hook(self)

    def _receive(self, wait: float, *, console: bool = False) -> bool:
        """Reads what the guest sent within `wait` seconds; False once QEMU is gone.

        Command output arrives on the data port; only the ready line comes on
        the shell's console: QEMU drops console output when the reader is slow.
        """
        sock = self._shell if console else self._data
        buffer = self._console_buffer if console else self._shell_buffer
        assert sock is not None
        ready, _, _ = select.select([sock], [], [], wait)
        if ready:
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                buffer += chunk
                return True
            return False
        return self._alive()

    def _send(self, data: bytes) -> None:
        assert self._shell is not None
        try:
            self._shell.sendall(data)
        except OSError as error:
            raise self._broken(f"cannot write to the backdoor shell ({error}); {self._exit_note()}") from None

    def release(self) -> None:
        """Kills QEMU and closes everything that belongs to this run of it."""
        self._cleanup_after_exit()

    def _cleanup_after_exit(self) -> None:
        if self.process is not None:
            self.process.stop(grace=0)  # kills a QEMU still running; the serial thread drains its output
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        for sock in (self._shell, self._data, self._shell_port, self._control):
            if sock is not None:
                sock.close()
        self._shell = self._data = self._shell_port = self._control = None
        if self._serial_thread is not None and self._serial_thread is not threading.current_thread():
            self._serial_thread.join(5)
        for sidecar in self.config.sidecars:
            sidecar.stop()
        self.booted = False
        self.connected = False

    def wait_for_shutdown(self) -> None:
        if not self.booted:
            return
        with self.nested("waiting for the VM to power off"):
            self._running("wait_for_shutdown").wait()
            self._cleanup_after_exit()

    def shutdown(self) -> None:
        """Powers the guest off cleanly and waits for QEMU to exit."""
        if not self.booted:
            return
        self.connect()
        self._send(b"systemctl --no-block poweroff\n")
        self.wait_for_shutdown()

    def crash(self) -> None:
        """Simulates a sudden power failure."""
        if not self.booted:
            return
        self.log("simulating a crash")
        qmp = self.qmp
        if qmp is None:
            raise MachineError(f"{self.name}: crash(): QEMU's monitor is not connected")
        with contextlib.suppress(MachineError):
            qmp.execute("quit")
        self.wait_for_shutdown()

    def reboot(self) -> None:
        """Presses Ctrl-Alt-Delete; QEMU exits unless started with allow_reboot."""
        if not self.booted:
            return
        self.send_key("ctrl-alt-delete")
        self.connected = False

    # -- commands --------------------------------------------------------------

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: Duration | None = DEFAULT_TIMEOUT,
    ) -> tuple[int, str]:
        """Runs `command` as root in a fresh subshell; returns (status, stdout).

        `timeout` (seconds or a timedelta, scaled under emulation; None: no
        limit) counts from when the command starts, after the machine has
        booted, as in NixOS; a command that runs out of time is killed with
        its whole process group and gives status 124.
        Binary output comes back intact: undecodable bytes are kept as
        surrogate escapes (`output.encode(errors="surrogateescape")`).
        """
        self.run_callbacks()
        self._run_boot_hooks()
        limit = None if timeout is None else self.config.timeout_scale(timeout)
        status, data = self._run(command, timeout=limit, wait=check_output)
        if not check_output:
            return -2, ""
        output = data.decode(errors="surrogateescape")
        if not check_return:
            return -1, output
        return status, output

    def _run(
        self, command: str, *, timeout: float | None = DEFAULT_TIMEOUT, stdin: bytes | None = None, wait: bool = True
    ) -> tuple[int, bytes]:
        """Runs `command` in the guest; `timeout` in seconds (None or 0: no limit)."""
        with self._command_lock:
            self.connect()
            nonce = secrets.token_hex(8)
            line = f"__vmrig_run {nonce} {math.ceil(timeout or 0)} {shlex.quote(command)}"
            if stdin is not None:
                line += f" {len(stdin)}"
            self._send(line.encode() + b"\n")
            if stdin:
                self._send_data(stdin, command)
            if not wait:
                return -2, b""
            decoder = FrameDecoder(nonce)
            try:
                return self._collect(decoder, command, timeout)
            except KeyboardInterrupt:
                self._cancel(decoder, command)
                raise

    def _cancel(self, decoder: FrameDecoder, command: str) -> None:
        """Ends the guest command `decoder` waits for (Ctrl-C at a prompt) and reads the rest of its output.

        The guest's watchdog stops the command's process group; the machine
        and the channel stay as they were, so the next command answers at once.
        A second Ctrl-C while this waits gives up waiting; the next command
        then skips the rest of this one's output (its frame carries this nonce).
        """
        if self._control is None:
            return
        self.log(f"interrupted: stopping `{command}` in the guest")
        try:
            self._control.sendall(f"{decoder.nonce}\n".encode())
            status, _ = self._collect(decoder, command, CANCEL_WAIT, slack=0)
        except (OSError, MachineError, KeyboardInterrupt):
            return
        self.log(f"`{command}` stopped (exit code {status})")

    def _send_data(self, data: bytes, command: str) -> None:
        """Feeds a command's stdin through the data port; the guest reads exactly len(data)."""
        assert self._data is not None
        self._data.settimeout(DATA_TIMEOUT)
        try:
            self._data.sendall(data)
        except OSError as error:
            raise self._broken(f"cannot send input for `{command}` ({error}); {self._exit_note()}") from None

    def _collect(
        self, decoder: FrameDecoder, command: str, timeout: float | None, slack: float = 60
    ) -> tuple[int, bytes]:
        """Reads the frame `decoder` waits for: (status, output).

        The guest enforces `timeout`; `timeout + slack` only catches a guest
        that stopped answering (MachineError).
        """
        output = bytearray()
        deadline = None if not timeout else time.monotonic() + timeout + slack
        while True:
            for chunk in decoder.feed(bytes(self._shell_buffer)):
                output += chunk
            self._shell_buffer.clear()
            if decoder.finished:
                if decoder.discarded:
                    self.log(f"discarding {decoder.discarded} bytes of output from earlier background processes")
                self._shell_buffer += decoder.remainder
                return decoder.status or 0, bytes(output)
            if deadline is not None and time.monotonic() > deadline:
                limit = (timeout or 0) + slack
                raise self._broken(f"no answer from the backdoor shell to `{command}` within {limit:g} s")
            if not self._receive(1.0):
                self.connected = False
                raise self._broken(f"{self._exit_note()} while running `{command}`")

    def succeed(self, *commands: str, timeout: Duration | None = None) -> str:
        """Runs each command; raises RequestedAssertionFailed if one fails."""
        __tracebackhide__ = True
        output = ""
        for command in commands:
            with self.nested(f"must succeed: {command}"):
                status, out = self.execute(command, timeout=timeout)
                if status != 0:
                    self.log(f"output: {out}")
                    raise RequestedAssertionFailed(f"command `{command}` failed (exit code {status})")
                output += out
        return output

    def fail(self, *commands: str, timeout: Duration | None = None) -> str:
        """Runs each command; raises RequestedAssertionFailed if one succeeds."""
        __tracebackhide__ = True
        output = ""
        for command in commands:
            with self.nested(f"must fail: {command}"):
                status, out = self.execute(command, timeout=timeout)
                if status == 0:
                    raise RequestedAssertionFailed(f"command `{command}` unexpectedly succeeded")
                output += out
        return output

    def sleep(self, secs: Duration) -> None:
        """Sleeps in guest time (which may run slower than the host's); not scaled."""
        self.succeed(f"sleep {seconds(secs):g}")

    def _poll(self, what: str, check: Callable[[bool], bool], timeout: Duration) -> None:
        """Calls check(last_try) until it returns True, pausing briefly in between.

        As in NixOS, the clock starts once the machine is up: a wait right
        after start_all() is not charged the boot. `timeout` is scaled under
        emulation; the error says "action timed out after ...", as NixOS's.
        """
        __tracebackhide__ = True
        self.run_callbacks()
        self._run_boot_hooks()
        limit = self.config.timeout_scale(timeout)
        started = time.monotonic()
        deadline = started + limit
        pause = 0.1
        while time.monotonic() < deadline:
            if check(False):
                return
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 1.0)
        if check(True):
            return
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - started:.2f} seconds "
            f"(timeout={self.config.timeout_scale.note(timeout)}) waiting for {what}"
        )

    def wait_until_succeeds(self, command: str, timeout: Duration = DEFAULT_TIMEOUT) -> str:
        """Repeats `command` until it succeeds; returns its output."""
        __tracebackhide__ = True
        output = ""

        def ok(last_try: bool) -> bool:
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            if status != 0 and last_try:
                self.log(f"last try: command `{command}` failed (exit code {status}): {output}")
            return status == 0

        with self.nested(f"waiting for success: {command}"):
            self._poll(f"`{command}` to succeed", ok, timeout)
        return output

    def wait_until_fails(self, command: str, timeout: Duration = DEFAULT_TIMEOUT) -> str:
        """Repeats `command` until it fails; returns its output."""
        __tracebackhide__ = True
        output = ""

        def failed(_last_try: bool) -> bool:
            nonlocal output
            status, output = self.execute(command, timeout=timeout)
            return status != 0

        with self.nested(f"waiting for failure: {command}"):
            self._poll(f"`{command}` to fail", failed, timeout)
        return output

    # -- systemd ---------------------------------------------------------------

    def systemctl(self, q: str, user: str | None = None) -> tuple[int, str]:
        if user is not None:
            q = q.replace("'", "\\'")
            return self.execute(
                f"su -l {user} --shell /bin/sh -c $'XDG_RUNTIME_DIR=/run/user/`id -u` systemctl --user {q}'"
            )
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit: str, user: str | None = None) -> dict[str, str]:
        status, lines = self.systemctl(f'--no-pager show "{unit}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'retrieving systemctl info for unit "{unit}"'
                + ("" if user is None else f' under user "{user}"')
                + f" failed with exit code {status}"
            )
        info: dict[str, str] = {}
        for line in lines.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def get_unit_property(self, unit: str, property: str, user: str | None = None) -> str:
        status, output = self.systemctl(f'--no-pager show "{unit}" --property="{property}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'retrieving systemctl property "{property}" for unit "{unit}"'
                + ("" if user is None else f' under user "{user}"')
                + f" failed with exit code {status}"
            )
        key, _, value = output.rstrip("\n").partition("=")
        if key != property:
            raise RequestedAssertionFailed(f'unexpected output of systemctl show for property "{property}"')
        return value

    def _unit_failure_details(self, unit: str, user: str | None) -> str:
        _, status = self.systemctl(f'--no-pager --full status "{unit}"', user)
        journal_cmd = f"journalctl --no-pager -n 20 -u {shlex.quote(unit)}"
        if user is not None:
            journal_cmd = f"journalctl --no-pager -n 20 --user-unit {shlex.quote(unit)}"
        _, journal = self.execute(journal_cmd)
        return f"\n--- systemctl status {unit}\n{status.rstrip()}\n--- last journal lines\n{journal.rstrip()}"

    def wait_for_unit(self, unit: str, user: str | None = None, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until `unit` is active; fails at once if it failed or cannot start."""
        __tracebackhide__ = True

        def active(last_try: bool) -> bool:
            info = self.get_unit_info(unit, user)
            state = info.get("ActiveState", "")
            if state == "failed":
                raise RequestedAssertionFailed(
                    f'unit "{unit}" reached state "failed"' + self._unit_failure_details(unit, user)
                )
            if state == "inactive":
                _, jobs = self.systemctl("list-jobs --full 2>&1", user)
                # The unit's job may have finished between the two queries: look again.
                if "No jobs" in jobs:
                    info = self.get_unit_info(unit, user)
                    state = info.get("ActiveState", "")
                if "No jobs" in jobs and state == "inactive":
                    missing = info.get("LoadState") == "not-found"
                    raise RequestedAssertionFailed(
                        f'unit "{unit}" is inactive and there are no pending jobs'
                        + (" (no such unit)" if missing else self._unit_failure_details(unit, user))
                    )
            if last_try and state != "active":
                self.log(f'unit "{unit}" is still in state "{state}"')
            if state != "active" and user is None and not last_try:
                self._await_unit_job(unit, deadline)
            return state == "active"

        self._run_boot_hooks()  # the deadline starts once the machine is up, as _poll's
        deadline = time.monotonic() + self.config.timeout_scale(timeout)
        with self.nested(f"waiting for unit {unit}" + ("" if user is None else f" with user {user}")):
            self._poll(f'unit "{unit}" to become active', active, timeout)

    def _await_unit_job(self, unit: str, deadline: float) -> None:
        """Blocks until the job queued for `unit` (if any) has finished.

        Starting vmrig-wait@<unit>.service, a no-op ordered after `unit`, lets
        PID 1 do the waiting: under emulation each `systemctl` call of a
        polling loop costs the booting guest about 0.2 s of its CPU.
        """
        left = int(deadline - time.monotonic())
        if left >= 1:
            self.execute(f"systemctl start {shlex.quote(wait_unit_for(unit))}", timeout=left)

    def require_unit_state(self, unit: str, require_state: str = "active") -> None:
        __tracebackhide__ = True
        with self.nested(f"checking if unit '{unit}' has reached state '{require_state}'"):
            info = self.get_unit_info(unit)
            state = info["ActiveState"]
            if state != require_state:
                raise RequestedAssertionFailed(
                    f"Expected unit '{unit}' to to be in state '{require_state}' but it is in state '{state}'"
                )

    def start_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"start {jobname}", user)

    def stop_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        return self.systemctl(f"stop {jobname}", user)

    def wait_for_job(self, jobname: str) -> None:
        self.wait_for_unit(jobname)

    # -- waiting for files, ports, sockets, console text -------------------------

    def wait_for_file(self, filename: str, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        __tracebackhide__ = True

        def exists(_last_try: bool) -> bool:
            status, _ = self.execute(f"test -e {filename}")
            return status == 0

        with self.nested(f"waiting for file '{filename}'"):
            self._poll(f"file '{filename}'", exists, timeout)

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: Duration = DEFAULT_TIMEOUT) -> None:
        __tracebackhide__ = True

        def open_(_last_try: bool) -> bool:
            status, _ = self.execute(f"nc -z {addr} {port}")
            return status == 0

        with self.nested(f"waiting for TCP port {port} on {addr}"):
            self._poll(f"TCP port {port} on {addr} to open", open_, timeout)

    def wait_for_closed_port(self, port: int, addr: str = "localhost", timeout: Duration = DEFAULT_TIMEOUT) -> None:
        __tracebackhide__ = True

        def closed(_last_try: bool) -> bool:
            status, _ = self.execute(f"nc -z {addr} {port}")
            return status != 0

        with self.nested(f"waiting for TCP port {port} on {addr} to be closed"):
            self._poll(f"TCP port {port} on {addr} to close", closed, timeout)

    def wait_for_open_unix_socket(
        self, addr: str, is_datagram: bool = False, timeout: Duration = DEFAULT_TIMEOUT
    ) -> None:
        __tracebackhide__ = True
        nc_flags = "-uU" if is_datagram else "-U"

        def open_(_last_try: bool) -> bool:
            status, _ = self.execute(f"nc {nc_flags} -z {shlex.quote(addr)}")
            return status == 0

        with self.nested(f"waiting for UNIX socket {addr}"):
            self._poll(f"UNIX socket {addr}", open_, timeout)

    def get_console_log(self) -> str:
        """The whole serial console output since the machine last started."""
        with self._console_cond:
            return "\n".join(self._console_lines)

    def wait_for_console_text(self, regex: str, timeout: Duration | None = None) -> None:
        """Waits until the console text not consumed yet matches `regex` (re.search).

        The regex sees the console's lines as one text joined by newlines, so
        multi-line regexes work; `^` and `$` match at every line (re.MULTILINE),
        as they did when each line was tried alone. As in NixOS, a wait consumes what it read up
        to the end of the matching line: a later wait (after a reboot, say)
        never matches the same text again. `timeout` (seconds or a timedelta,
        scaled under emulation) counts from the call; None waits for ever.
        Raises RequestedAssertionFailed on timeout, MachineError if QEMU exits.
        """
        __tracebackhide__ = True
        pattern = re.compile(regex, re.MULTILINE)
        started = time.monotonic()
        limit = None if timeout is None else self.config.timeout_scale(timeout)
        limit_note = None if timeout is None else self.config.timeout_scale.note(timeout)
        with self.nested(f"waiting for {regex} to appear on console"), self._console_cond:
            while True:
                text = "\n".join(self._console_lines[self._console_consumed :])
                found = pattern.search(text)
                if found is not None:
                    self._console_consumed += text.count("\n", 0, found.end()) + 1
                    return
                if not self._alive() and self.booted:
                    raise self._broken(f"{self._exit_note()} while waiting for {regex!r} on the console")
                remaining = None if limit is None else started + limit - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RequestedAssertionFailed(
                        f"action timed out after {time.monotonic() - started:.2f} seconds "
                        f"(timeout={limit_note}) waiting for {regex!r} on the console"
                    )
                self._console_cond.wait(1.0 if remaining is None else min(remaining, 1.0))

    def send_console(self, chars: str) -> None:
        """Types `chars` on the serial console (the guest's ttyS0)."""
        stdin = self._running("send_console").stdin
        if stdin is None:
            raise MachineError(f"{self.name}: send_console(): QEMU's serial input is closed")
        stdin.write(chars.encode())
        stdin.flush()

    # -- files -----------------------------------------------------------------

    def copy_from_host(self, source: str, target: str) -> None:
        """Copies a host file or directory to `target` in the guest (modes kept, owned by root)."""
        source_path = Path(source)
        if not source_path.exists():
            raise MachineError(f"{self.name}: copy_from_host: {source} does not exist on the host")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(source_path, arcname="item", filter=_root_owned)
        script = (
            f"t={shlex.quote(target)}; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
            'tar -x -f - -C "$d" --no-same-owner; mkdir -p "$(dirname "$t")"; '
            'if [ -d "$d/item" ] && [ -d "$t" ]; then cp -a "$d/item/." "$t"; else cp -a -T "$d/item" "$t"; fi'
        )
        with self.nested(f"copying {source} from the host to {target}"):
            status, _ = self._run(script, stdin=buffer.getvalue())
        if status != 0:
            raise MachineError(f"{self.name}: copying {source} to {target} failed (exit code {status})")

    def copy_from_host_via_shell(self, source: str, target: str) -> None:
        """Copies one host file through the shell channel, like the NixOS driver."""
        data = Path(source).read_bytes()
        encoded = base64.b64encode(data).decode()
        self.succeed(f"mkdir -p $(dirname {target})")
        self.succeed(f"echo -n {encoded} | base64 -d > {target}")

    def copy_from_vm(self, source: str, target_dir: str = "") -> None:
        """Copies a guest file or directory into the output directory (under `target_dir`)."""
        src = source.rstrip("/") or "/"
        parent, name = os.path.split(src)
        status, data = self._run(f"tar -c -f - -C {shlex.quote(parent or '/')} {shlex.quote(name)}")
        if status != 0:
            raise MachineError(f"{self.name}: copy_from_vm: cannot read {source} (exit code {status})")
        destination = self.out_dir / target_dir
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(destination, filter=_keep_permissions)

    copy_from_machine = copy_from_vm

    # -- QEMU monitor, keys, network ---------------------------------------------

    def send_monitor_command(self, command: str) -> str:
        """Runs a QEMU monitor (HMP) command and returns its output."""
        self.run_callbacks()
        if self.qmp is None:
            raise MachineError(f"{self.name}: not running, cannot send monitor command {command!r}")
        with self.nested(f"sending monitor command: {command}"):
            return self.qmp.human_monitor_command(command)

    def wait_for_qmp_event(
        self, event_filter: Callable[[dict[str, Any]], bool], timeout: Duration = 60 * 10
    ) -> dict[str, Any]:
        if self.qmp is None:
            raise MachineError(f"{self.name}: QMP is not ready yet (is the machine started?)")
        return self.qmp.wait_for_event(event_filter, self.config.timeout_scale(timeout))

    def send_key(self, key: str, delay: float | None = 0.01, log: bool = True) -> None:
        key = CHAR_TO_KEY.get(key, key)
        context = self.nested(f"sending key {key!r}") if log else contextlib.nullcontext()
        with context:
            self.send_monitor_command(f"sendkey {key}")
            if delay is not None:
                time.sleep(delay)

    def send_chars(self, chars: str, delay: float | None = 0.01) -> None:
        with self.nested(f"sending keys {chars!r}"):
            for char in chars:
                self.send_key(char, delay, log=False)

    def forward_port(self, host_port: int = 8080, guest_port: int = 80) -> None:
        """Forwards 127.0.0.1:host_port on the host to guest_port in the guest."""
        reply = self.send_monitor_command(f"hostfwd_add user0 tcp:{LOOPBACK}:{host_port}-:{guest_port}")
        if reply.strip():
            raise MachineError(f"{self.name}: forwarding port {host_port} failed: {reply.strip()}")

    # -- named snapshots (QEMU's savevm/loadvm) -----------------------------------

    def snapshot(self, name: str) -> None:
        """Saves the machine's whole state (memory, devices, disk) under `name`, to go back to with restore().

        Beyond NixOS (as openQA and Vagrant allow): a test can roll a machine
        back between subtests. The state lives in the machine's disk overlay
        (QEMU's savevm) for this run. Raises ArgumentError for a bad name and
        MachineError when QEMU cannot save (a shared directory's virtiofs).
        """
        self._check_snapshot_name(name)
        with self._command_lock, self.nested(f"saving snapshot {name!r}"):
            self.connect()
            self._monitor_ok(f"savevm {name}")

    def restore(self, name: str) -> None:
        """Brings the machine back to the state snapshot(name) saved: memory, devices and disk.

        The clock is set to the host's and the random number generator
        reseeded, as after a restored boot. Raises MachineError for an
        unknown name.
        """
        self._check_snapshot_name(name)
        with self._command_lock, self.nested(f"restoring snapshot {name!r}"):
            self.connect()
            self._monitor_ok(f"loadvm {name}")
            self._shell_buffer.clear()
            self._restore_pending = True
            self._finish_restore(count_boot=False)

    def _check_snapshot_name(self, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ArgumentError(f"{self.name}: snapshot name {name!r}: use letters, digits, '_', '.' and '-'")

    def _monitor_ok(self, command: str) -> None:
        """Runs an HMP command that prints nothing when it works; MachineError with its text otherwise."""
        reply = self.send_monitor_command(command).strip()
        if reply:
            raise MachineError(f"{self.name}: {command}: {reply}")

    # -- interactive use (see vmrig.interact) ------------------------------------

    def shell_interact(self, address: str | None = None) -> None:
        """A root login shell on a pseudo-terminal in the guest, on this terminal or a socat address.

        Ctrl-D (or `exit`) ends it; the machine keeps running.
        """
        from vmrig import interact  # interact drives a Machine: imported late to avoid a cycle

        interact.shell_interact(self, address)

    def console_interact(self) -> None:
        """Types stdin on the serial console and shows its lines, until end of input (Ctrl-D)."""
        from vmrig import interact

        interact.console_interact(self)

    def shell_port(self) -> socket.socket:
        """The host end of the guest's vmrig.shell port (for vmrig.interact)."""
        self.connect()
        if self._shell_port is None:
            raise MachineError(f"{self.name}: this machine has no interactive shell port")
        return self._shell_port

    def block(self, *, vlan: int | None = None, interface: str | None = None) -> None:
        """Pulls the cable of a vlan card: the first one (eth1) as in NixOS, or the one on `vlan`
        (`block(vlan=2)`), or `interface` (`block(interface="eth2")`).

        The guest sees the link go down; nothing goes in or out until unblock().
        """
        self._set_link(self._vlan_nic("block", vlan, interface), "off")

    def unblock(self, *, vlan: int | None = None, interface: str | None = None) -> None:
        """Plugs a card block() unplugged back in (same arguments)."""
        self._set_link(self._vlan_nic("unblock", vlan, interface), "on")

    def _vlan_nic(self, what: str, vlan: int | None, interface: str | None) -> str:
        """QEMU's id of the card that `vlan` or `interface` (or neither: eth1) names."""
        vlans = [nr for nr, _mac, _sock in self.config.vlan_nics]
        if vlan is not None and interface is not None:
            raise ArgumentError(f"{self.name}.{what}(): give vlan= or interface=, not both")
        if not vlans:
            raise ArgumentError(f"{self.name}.{what}(): the machine is on no vlan (Node.vlans is empty)")
        if interface is not None:
            names = [f"eth{index}" for index in range(1, len(vlans) + 1)]
            if interface not in names:
                raise ArgumentError(f"{self.name}.{what}(): no vlan interface {interface!r}; it has {', '.join(names)}")
            return f"nic{names.index(interface) + 1}"
        if vlan is not None:
            if vlan not in vlans:
                raise ArgumentError(f"{self.name}.{what}(): the machine is not on vlan {vlan}; its vlans: {vlans}")
            return f"nic{vlans.index(vlan) + 1}"
        return "nic1"

    def _set_link(self, nic: str, state: str) -> None:
        reply = self.send_monitor_command(f"set_link {nic} {state}")
        if reply.strip():
            raise MachineError(f"{self.name}: set_link {nic} {state} failed: {reply.strip()}")


def _keep_permissions(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter (no absolute paths, nothing outside the target), but all of the
    guest's permission bits: that filter would drop group and other write permission."""
    safe = tarfile.tar_filter(member, dest_path)
    return safe.replace(mode=member.mode & 0o777, deep=False) if safe.mode is not None else safe


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
