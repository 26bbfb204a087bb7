"""A machine's QEMU process: the state directory, start, connecting to the backdoor, stop.

start() creates the socketpairs (backdoor shell, data, interactive shell,
control, QMP), starts QEMU with them and the sidecars, and the serial reader;
connect() waits for the backdoor's ready line; release() undoes it all.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import time
from pathlib import Path

from vmrig import proc
from vmrig.contract import BASIC_FIFO, READY_LINE
from vmrig.errors import MachineError
from vmrig.image import snapshot
from vmrig.machine import qemu
from vmrig.machine.backdoor import Backdoor
from vmrig.machine.snapshots import FIXUP_TIMEOUT, Snapshots
from vmrig.machine.systemd import wait_unit_for
from vmrig.qmp import QMPClient
from vmrig.ssh import vsock_cid_hint

# Seconds a released QEMU has to exit after SIGTERM (it takes milliseconds) before SIGKILL.
RELEASE_GRACE = 5.0
# create_machine(start_command)'s shell: runs the command with QEMU's arguments and
# waits for it; the driver's death (SIGUSR1) sends SIGTERM to the whole process group.
# Its stdin is kept on fd 3: sh gives a background command /dev/null.
START_SUPERVISOR = """exec 3<&0
trap 'kill -TERM 0' USR1
{} "$@" <&3 3<&- &
child=$!
exec 3<&-
while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || exit "$status"
done"""


class Lifecycle(Snapshots, Backdoor):
    """start, connect, shutdown, crash, reboot, release."""

    def is_up(self) -> bool:
        return self.booted and self.connected

    def ssh_backdoor_command(self, index: int | None = None) -> str:
        """The host's shell command that logs into this machine over the SSH backdoor.

        The newest NixOS driver prints it for every machine when its SSH
        backdoor is on; `index` (its vsock offset) is accepted and not needed:
        the machine knows its own endpoint. MachineError when the backdoor is
        off (it is on in interactive runs and with Options(ssh_backdoor=True)).
        """
        if not self.config.ssh_command:
            raise MachineError(
                f"{self.name} has no SSH backdoor: it is on in interactive runs (vmrig run -I)"
                " and with Options(ssh_backdoor=True) in the test file"
            )
        return shlex.join(self.config.ssh_command)

    def switch_root(self) -> None:
        """NixOS's move from the initrd's backdoor to the booted system; a vmrig guest has no
        backdoor in its initrd, so this raises MachineError saying so."""
        raise MachineError(
            f"{self.name}.switch_root(): vmrig guests have no backdoor in the initrd"
            " (NixOS's testing.initrdBackdoor); the backdoor starts in the booted system,"
            " so a script's commands already run there"
        )

    def _prepare_state(self, backing: Path | None = None) -> Path:
        """The state directory, its initrd and the disk overlay (on `backing`, else on the image).

        A booted snapshot's disk (`backing`) comes with an empty overlay made
        for it when it was saved (snapshot.OVERLAY): copying it takes a fraction
        of a millisecond, `qemu-img create` about 8 ms of the restore.
        """
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        overlay = self._overlay_file()
        if backing is not None:
            overlay.unlink(missing_ok=True)
            template = backing.parent / snapshot.OVERLAY
            if template.exists():
                shutil.copyfile(template, overlay)
        if not overlay.exists():
            snapshot.create_overlay(overlay, backing or self.config.disk, self.config.disk_mib)
        for index, (disk, path) in enumerate(zip(self.config.empty_disks, self._empty_disk_files(), strict=True)):
            if backing is not None:
                path.unlink(missing_ok=True)
                template = backing.parent / snapshot.empty_disk_overlay(index)
                if template.exists():
                    shutil.copyfile(template, path)
                else:
                    snapshot.create_overlay(path, backing.parent / snapshot.empty_disk(index), disk.size)
            elif not path.exists():  # kept across the run's reboots, and with --keep-vm-state
                snapshot.create_disk(path, disk.size)
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
        """This machine's QEMU command line, with its state directory's initrd (see vmrig.machine.qemu.command)."""
        return qemu.command(
            self.config,
            initrd=self.state_dir / "initrd.img",
            overlay=overlay,
            shell_fd=shell_fd,
            qmp_fd=qmp_fd,
            data_fd=data_fd,
            allow_reboot=allow_reboot,
            shell_port_fd=shell_port_fd,
            control_fd=control_fd,
            ram=ram,
            incoming=incoming,
            empty_disks=self._empty_disk_files(),
        )

    def start(self, allow_reboot: bool = False) -> None:
        """Starts QEMU and returns at once; the first command waits for the shell."""
        if self.booted:
            return
        self.log("starting vm")
        self._stopped_because = None
        self._allow_reboot = allow_reboot
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
            death_signal = "KILL"
            if self.config.start_command:
                # The parent-death signal reaches only the driver's own child. A user's
                # wrapper may run QEMU as its child, so that child is this shell, which
                # stops its whole process group when the driver dies (SIGUSR1).
                args = ["sh", "-c", START_SUPERVISOR.format(self.config.start_command), "vmrig-start", *args[1:]]
                death_signal = "USR1"
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
                death_signal=death_signal,
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
        assert self.process.stdout is not None
        self._console.start(self.process.stdout, self.logger, self.name)
        self.qmp = QMPClient(qmp_host)
        try:
            self.qmp.connect(timeout=60)
        except MachineError as error:
            self.release()
            hint = vsock_cid_hint(self._console.text(), self.config.vsock_cid)
            raise self._broken(f"QEMU did not start ({error}){hint}") from None
        except BaseException:
            self.release()
            raise
        self.booted = True
        self.stalled = False
        self.log(f"QEMU running (pid {self.pid})")
        if restore_from is not None:
            fixup = self._load_snapshot(restore_from)
            # Sent now, the fix-up runs while the driver starts the other machines: a
            # restored guest's first exec takes most of a second under TCG.
            # No guest watchdog (timeout=None): it times by the wall clock, which the
            # fix-up moves; _finish_restore bounds the wait on the host (see _run's moves_clock).
            self._fixup = self._send_command(fixup, timeout=None)

    def connect(self) -> None:
        """Starts the machine if needed and waits until its backdoor shell answers."""
        if self.connected:
            return
        with self._command_lock, self.nested("waiting for the VM to finish booting"):
            if self.connected:  # by another thread while this one waited for the lock
                return
            self.start()
            if self._restore_pending:
                self._finish_restore(count_boot=True)
                return
            assert self._shell is not None
            started = time.monotonic()
            deadline = started + self.config.connect_timeout
            next_note = started + 30
            while READY_LINE not in self._console_buffer:
                now = time.monotonic()
                if now > deadline:
                    raise self._broken(
                        f"the backdoor shell did not come up within {self.config.connect_timeout:.0f} s "
                        "(is vmrig-backdoor.service running in the guest?)"
                    )
                if now > next_note:
                    self.log("guest root shell did not produce any data yet...")
                    next_note = now + 30
                if not self._receive(1.0, console=True):
                    note = self._exit_note()
                    if self.process is not None and self.process.poll() == 0 and not self._allow_reboot:
                        note += (
                            " (the guest rebooted or powered off; as in NixOS, a reboot ends QEMU"
                            " unless the machine was started with start(allow_reboot=True))"
                        )
                    raise self._broken(f"{note} before its backdoor shell came up")
            index = self._console_buffer.index(READY_LINE) + len(READY_LINE)
            del self._console_buffer[: index + 1]
            self.connected = True
            self.stalled = False
            self.boot_count += 1
            self._boot_hooks_due = bool(self.boot_hooks)
            # The backdoor starts with the first units of the boot; a script's first command
            # expects what NixOS's backdoor unit has when it starts: basic.target (sockets
            # such as D-Bus's, local file systems). PID 1 does the waiting: it opens the FIFO
            # after basic.target (guest/vmrig-basic.socket); systemctl in a guest without it.
            answered = time.monotonic()
            left = max(1, int(deadline - answered))
            wait = f"[[ -p {BASIC_FIFO} ]] && : >{BASIC_FIFO} || systemctl start {wait_unit_for('basic.target')}"
            status, _ = self._run(wait, timeout=left)
            if status != 0:
                self.log(f"basic.target was not reached (the wait's exit code: {status})")
            self.log(
                f"connected to guest root shell (connecting took {time.monotonic() - started:.2f} seconds;"
                f" the shell answered after {answered - started:.2f} s, then basic.target)"
            )
            if self._save_to is not None:
                self._settle_for_snapshot()
                self._save_ready, self._save_to = self._save_to, None
                self._await_company()
                self._save_company()  # unless a member that settled later saved this one with it
                if self._restore_pending:
                    self._finish_restore(count_boot=False)

    def _finish_restore(self, *, count_boot: bool) -> None:
        """A restored guest's first command: the host's time and fresh randomness (see vmrig.image.snapshot)."""
        self._restore_pending = False
        self.connected = True
        if count_boot:
            self.boot_count += 1
            self._boot_hooks_due = bool(self.boot_hooks)
        decoder, self._fixup = self._fixup, None
        if decoder is None:
            decoder = self._send_command(snapshot.fixup_command(), timeout=None)  # as in start()
        status, output = self._collect(decoder, "the restored guest's clock and RNG fix-up", FIXUP_TIMEOUT)
        if status != 0:
            failure = output.decode(errors="replace").strip() or f"exit status {status}"
            # A booted snapshot that cannot come back must not fail every later run too.
            snapshot.discard(self._snapshot_final)
            raise self._broken(
                f"setting the clock and reseeding the restored guest failed: {failure} (its snapshot"
                f" {self._snapshot_final.name} is removed: the next run boots and saves a new one)"
            )

    def _run_boot_hooks(self) -> None:
        """Connects, and after a new boot runs the boot hooks (outside the command lock: they send commands)."""
        self.connect()
        if self._boot_hooks_due:
            self._boot_hooks_due = False
            for hook in self.boot_hooks:
                hook(self)

    def release(self, reason: str | None = None) -> None:
        """Stops QEMU (SIGTERM, as NixOS's release; SIGKILL if it lingers) and closes everything
        that belongs to this run of it.

        QEMU's own exit writes out its disks' qcow2 metadata: after a SIGKILL, what
        the guest wrote without a flush (O_DIRECT to an empty disk) was not in the
        overlay that --keep-vm-state keeps.

        `reason` (vmrig's own; e.g. the global timeout) is what the errors of
        commands this breaks give as the cause, until the machine starts again.
        """
        self._stopped_because = reason
        self._cleanup_after_exit()

    def _cleanup_after_exit(self) -> None:
        if self.process is not None:
            # Ends a QEMU still running; the serial thread drains its output.
            self.process.stop(grace=RELEASE_GRACE)
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        for sock in (self._shell, self._data, self._shell_port, self._control):
            if sock is not None:
                sock.close()
        self._shell = self._data = self._shell_port = self._control = None
        self._fixup = None
        self._console.join()
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
        with contextlib.suppress(proc.TimeoutExpired):
            self._running("crash").wait(RELEASE_GRACE)
        # QEMU has gone; a start command's wrapper that lingers after it is stopped.
        with self.nested("waiting for the VM to power off"):
            self._cleanup_after_exit()

    def reboot(self) -> None:
        """Presses Ctrl-Alt-Delete; QEMU exits unless started with allow_reboot."""
        if not self.booted:
            return
        self.send_key("ctrl-alt-delete")
        self.connected = False
