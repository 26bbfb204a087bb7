"""Machine snapshots: a first boot saved and restored (booted snapshots), and named ones (savevm/loadvm)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from vmrig.errors import ArgumentError, MachineError
from vmrig.image import snapshot
from vmrig.machine import qemu
from vmrig.machine.base import MachineBase
from vmrig.machine.monitor import Monitor

# QEMU's migration capability that leaves RAM in a named shared file out of the stream.
IGNORE_SHARED = {"capability": "x-ignore-shared", "state": True}
# MIGRATION events, so that a restore learns at once that its state has loaded.
EVENTS = {"capability": "events", "state": True}

# A booted snapshot is saved once the boot has settled, so that a restore has
# its services up: the hello-world example's rerun spent 8.5 s of its 11.9 s
# waiting for python3's http.server, started after a snapshot at basic.target.
# Settled: systemd's start-up jobs are done and QEMU has used under 15% of a
# CPU over the last second (sampled every QUIET_WINDOW s: an idle guest here
# used 2 to 12% per half second, a booting one all it can get). A boot still
# starting after SETTLE_LIMIT s, or still busy QUIET_LIMIT s after that, is
# saved as it is: any state after basic.target is one a first command may see.
SETTLE_LIMIT = 60
FIXUP_TIMEOUT = 60.0  # s, for the restored guest's first command (see vmrig.image.snapshot)
QUIET_LIMIT = 30.0
QUIET_WINDOW = 0.25
QUIET_WINDOWS = 4
QUIET_SHARE = 0.15
# Taken to claim the settled boots a company save stops together (see Snapshots._save_company).
_CLAIM = threading.Lock()


def fixup_after(guest_clock: float | None, resumed: float) -> str:
    """The fix-up for a guest whose clock stood at `guest_clock` when it was stopped and that resumed at `resumed`.

    Both in seconds since the epoch; `guest_clock` None (not recorded) sets
    the guest's clock to the host's instead of moving it on.
    """
    if guest_clock is None:
        return snapshot.fixup_command()
    return snapshot.fixup_command(shift=resumed - guest_clock)


def quiet(cpu_seconds: Sequence[float]) -> bool:
    """Whether QEMU's CPU times, sampled every QUIET_WINDOW s, show a quiet last QUIET_WINDOWS windows."""
    if len(cpu_seconds) <= QUIET_WINDOWS:
        return False
    return cpu_seconds[-1] - cpu_seconds[-QUIET_WINDOWS - 1] < QUIET_SHARE * QUIET_WINDOW * QUIET_WINDOWS


class Snapshots(Monitor):
    """snapshot()/restore(), and the booted snapshot of a machine's first start (see vmrig.image.snapshot)."""

    # -- booted snapshots (see vmrig.image.snapshot) ------------------------------------

    def _snapshot_key(self, allow_reboot: bool) -> str:
        """What the booted guest depends on: QEMU, its command line (run-specific paths left out), image, config."""
        # Host-side values that change from run to run stay out: the vlans' switch
        # sockets, the host ports of forwards (the SSH backdoor takes a free one), where
        # the screen is shown (no guest device depends on it), and the vsock CID (after a
        # restore QEMU's vhost-vsock resets the transport, and the guest reads the new CID).
        probe = dataclasses.replace(
            self.config,
            viewer=None,
            vsock_cid=3 if self.config.vsock_cid is not None else None,
            vlan_cards=[dataclasses.replace(card, switch=Path(f"vde{card.vlan}")) for card in self.config.vlan_cards],
            forwards=[(0, guest) for _host, guest in self.config.forwards],
        )
        argv = qemu.command(
            probe,
            initrd=self.state_dir / "initrd.img",
            overlay=Path("overlay"),
            shell_fd=3,
            qmp_fd=4,
            data_fd=5,
            allow_reboot=allow_reboot,
            shell_port_fd=6,
            control_fd=7,
            empty_disks=[Path(snapshot.empty_disk(index)) for index in range(len(self.config.empty_disks))],
        )
        state = str(self.state_dir)
        return snapshot.key(
            [
                qemu.version_text(argv[0]),
                *(part.replace(state, "STATE") for part in argv[1:]),
                str(self.config.disk),
                hashlib.sha256(self.config.config_layer).hexdigest(),
                self.config.neighbours,
                "started with: " + ",".join(sorted(self._company)),
                str(self.config.initrd.stat().st_size),
                *(f"empty disk of {disk.size} MiB" for disk in self.config.empty_disks),
                *(part for sidecar in self.config.sidecars for part in sidecar.snapshot_key_parts()),
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
        blocker = self._snapshot_blocker() or self._neighbour_blocker()
        if blocker is not None:
            self.log(f"booting without a snapshot: {blocker}")
            return None, None
        key = self._snapshot_key(allow_reboot)
        final = root / f"{snapshot.PREFIX}{key}"
        self._snapshot_final = final
        if snapshot.complete(final):
            return final, None
        return None, snapshot.scratch_dir(root, key)

    def _snapshot_blocker(self) -> str | None:
        """Why this machine's boot cannot be saved in a booted snapshot (a device of a sidecar); None: it can."""
        for sidecar in self.config.sidecars:
            blocker = sidecar.snapshot_blocker()
            if blocker is not None:
                return blocker
        return None

    def _neighbour_blocker(self) -> str | None:
        """Why this boot must be real because of the machines already running beside it; None: it need not.

        A machine started while another on its vlans runs, not started with
        it by start_all (the script may have acted on it), may talk to it
        while it boots: a client announcing itself to a server, a DHCP lease.
        A restore would skip that boot, and a boot saved then would hold one
        side of a conversation. Machines started together are saved together
        instead (_await_company), and their key names the company.
        """
        up = self._neighbours_up()
        if not up:
            return None
        return f"{', '.join(up)} {'is' if len(up) == 1 else 'are'} up on its vlans, and its boot may talk to them"

    def _await_company(self) -> None:
        """Before this settled boot is saved: the boots started with it settle too (see _save_company).

        Each one still booting toward its save is connected here; the last
        to settle saves them all.
        """
        for member in self._company_machines():
            if member._save_to is None or not member.booted:  # restored, saved, crashed, or not booting to a save
                continue
            try:
                member.connect()
            except MachineError as error:
                self.log(f"saving without waiting for {member.name}: {error}")

    def _save_company(self) -> None:
        """Saves this settled boot, and the settled boots of its company, at one instant.

        The company is every machine started with this one on a vlan it
        shares, and theirs in turn (a client, a router and a server on two
        vlans). All of them are stopped before any is written: what one guest
        told another (a DHCP lease, a TCP session such as BGP's) is then in
        every snapshot alike. Saved one after the other, two routers' BGP
        session came back after a restore only when its hold timer ran out
        (60 s). All or none: if one cannot be saved, the others run on
        unsaved, and the next run boots them all. A member whose commands
        another thread holds is left to save itself.
        """
        with contextlib.ExitStack() as held:
            group = self._claim_company(held)
            if not group:
                return
            if len(group) > 1:
                self.log(f"saving the booted snapshots of {', '.join(member.name for member, _ in group)} together")
            offsets = [member._guest_clock_offset() for member, _ in group]
            stopped = [
                (member, scratch)
                for (member, scratch), offset in zip(group, offsets, strict=True)
                if member._stop_for_save(scratch, offset)
            ]
            written = [(member, scratch) for member, scratch in stopped if member._write_saved_state(scratch)]
            if len(written) < len(group):
                for member, scratch in written:
                    member.log("no booted snapshot of this machine: one started with it could not be saved")
                    member._abandon_save(scratch)
                return
            failures: list[Exception] = []
            for member, scratch in written:  # each on its own: one failing leaves none of the others stopped
                try:
                    member._publish_and_restart(scratch)
                except Exception as error:  # noqa: BLE001 (raised below, after the others)
                    failures.append(error)
            if failures:
                raise failures[0]

    def _claim_company(self, held: contextlib.ExitStack) -> list[tuple[Snapshots, Path]]:
        """The settled boots of this machine's company (transitively), each claimed once, its command lock held."""
        group: list[tuple[Snapshots, Path]] = []
        with _CLAIM:
            queue: list[MachineBase] = [self]
            seen = {self.name}
            while queue:
                member = queue.pop(0)
                for other in member._company_machines():
                    if other.name not in seen:
                        seen.add(other.name)
                        queue.append(other)
                if not isinstance(member, Snapshots) or member._save_ready is None:
                    continue
                if not member._command_lock.acquire(blocking=False):
                    continue  # in another thread's hands: it saves itself when that thread is done
                held.callback(member._command_lock.release)
                group.append((member, member._save_ready))
                member._save_ready = None
        return group

    def _settle_for_snapshot(self) -> None:
        """Waits until the boot to be saved has finished: start-up jobs done, then the guest quiet."""
        started = time.monotonic()
        command = f"timeout {SETTLE_LIMIT} systemctl is-system-running --wait"
        _status, output = self._run(command, timeout=SETTLE_LIMIT + 10)
        state = output.decode(errors="replace").strip() or "still starting"
        jobs_done = time.monotonic()
        self._serve_fixup()
        quiet = self._wait_quiet()
        self.log(
            f"boot settled for its snapshot: system {state} after {jobs_done - started:.2f} s,"
            f" guest {'quiet' if quiet else 'still busy'} after {time.monotonic() - jobs_done:.2f} s more"
        )

    def _wait_quiet(self) -> bool:
        """Waits until QEMU's CPU time shows a quiet guest (see quiet); False after QUIET_LIMIT s."""
        assert self.process is not None
        deadline = time.monotonic() + QUIET_LIMIT
        samples = [self.process.cpu_seconds()]
        while time.monotonic() < deadline:
            time.sleep(QUIET_WINDOW)
            samples.append(self.process.cpu_seconds())
            if quiet(samples):
                return True
        return False

    def _migrate(self, command: str, state: Path, what: str) -> None:
        """Runs QMP `command` (migrate or migrate-incoming) without RAM, to or from the file `state`.

        QEMU itself reads and writes the file (`exec:cat` forked the QEMU
        process, 2-3 ms of a restore here).

        QEMU's MIGRATION event tells the end at once (a restore loads in about
        10 ms: a poll would add to it); the events are switched off again after,
        so that a later savevm (snapshot()) queues none for the script.
        Raises MachineError when it fails or takes over 120 s.
        """
        if self.qmp is None:
            raise self._broken(f"{what}: QEMU's monitor is not connected")
        self.qmp.execute("migrate-set-capabilities", {"capabilities": [IGNORE_SHARED, EVENTS]})
        state_file = {"transport": "file", "filename": str(state), "offset": 0}
        self.qmp.execute(command, {"channels": [{"channel-type": "main", "addr": state_file}]})
        try:
            event = self.qmp.wait_for_event(
                lambda event: (
                    event.get("event") == "MIGRATION"
                    and event.get("data", {}).get("status") in ("completed", "failed", "cancelled")
                ),
                timeout=120,
            )
        except TimeoutError:
            raise self._broken(f"{what} did not finish within 120 s") from None
        self.qmp.execute("migrate-set-capabilities", {"capabilities": [{**EVENTS, "state": False}]})
        status = event["data"]["status"]
        if status != "completed":
            raise self._broken(f"{what} failed (QEMU's migration status: {status})")

    def _load_snapshot(self, directory: Path) -> str:
        """Loads a booted snapshot into the QEMU just started with `-incoming defer`, and resumes it.

        Returns the fix-up command for the resumed guest (snapshot.fixup_command).
        """
        started = time.monotonic()
        assert self.qmp is not None
        try:
            self._migrate("migrate-incoming", directory / snapshot.STATE, "restoring the booted snapshot")
            before = time.time()
            self.qmp.execute("cont")
            resumed = (before + time.time()) / 2
            self.qmp.take_events()  # the restore's own (RESUME): a script sees only what follows
        except MachineError as error:
            self.release()
            # A booted snapshot that cannot come back must not fail every later run too.
            snapshot.discard(directory)
            raise self._broken(
                f"restoring the booted snapshot {directory.name} failed ({str(error).splitlines()[0]}); it is"
                " removed: the next run boots and saves a new one"
            ) from None
        except BaseException:
            self.release()
            raise
        snapshot.touch(directory)
        with contextlib.suppress(OSError):
            self._console.prepend((directory / snapshot.CONSOLE).read_text(errors="replace").splitlines())
        self._restore_pending = True
        self.log(f"restored a booted snapshot ({time.monotonic() - started:.2f} s; {directory.name})")
        return fixup_after(snapshot.read_clock(directory), resumed)

    def _stop_for_save(self, scratch: Path, offset: float | None) -> bool:
        """Stops the guest for its save, recording its wall clock (`offset`: the guest's minus the host's, s).

        False if QEMU would not stop (the scratch directory is removed, the guest runs on).
        """
        assert self.qmp is not None
        self._save_started = time.monotonic()
        try:
            before = time.time()
            self.qmp.execute("stop")
        except MachineError as error:
            self.log(f"no booted snapshot of this machine: {error}")
            shutil.rmtree(scratch, ignore_errors=True)
            return False
        if offset is not None:
            snapshot.write_clock(scratch, (before + time.time()) / 2 + offset)
        return True

    def _write_saved_state(self, scratch: Path) -> bool:
        """Writes the stopped guest's devices into `scratch` and flushes it and the disks.

        False if that failed: the guest is resumed and `scratch` removed.
        """
        assert self.qmp is not None
        try:
            self._migrate("migrate", scratch / snapshot.STATE, "saving the booted snapshot")
            try:
                snapshot.flush(scratch)
                # The disks too (QEMU wrote them out at the migration's end): they become the snapshot's.
                disks = [self._overlay_file(), *self._empty_disk_files()]
                snapshot.flush(self.state_dir, [path.name for path in disks])
            except OSError as error:
                raise MachineError(f"writing the snapshot failed: {error}") from None
        except MachineError as error:
            self.log(f"no booted snapshot of this machine: {error}")
            self._abandon_save(scratch)
            return False
        return True

    def _abandon_save(self, scratch: Path) -> None:
        """Resumes the guest stopped for its save, which is dropped."""
        assert self.qmp is not None
        with contextlib.suppress(MachineError):
            self.qmp.execute("cont")
        shutil.rmtree(scratch, ignore_errors=True)

    def _publish_and_restart(self, scratch: Path) -> None:
        """Publishes the saved guest's snapshot and restarts the machine from it.

        Its overlay becomes the snapshot's frozen disk, so this run too goes
        on from a restore.
        """
        assert self.qmp is not None and self.process is not None
        (scratch / snapshot.CONSOLE).write_text(self._console.text() + "\n")
        with contextlib.suppress(MachineError):
            self.qmp.execute("quit")
        self.process.wait(30)
        self._cleanup_after_exit()
        shutil.move(self._overlay_file(), scratch / snapshot.DISK)
        (scratch / "backing").write_text(f"{self.config.disk}\n")
        final = self._snapshot_final
        # Its restores copy this overlay: the disk's path in it is the published one.
        snapshot.create_overlay(scratch / snapshot.OVERLAY, final / snapshot.DISK, self.config.disk_mib, unsafe=True)
        # The empty disks too: the guest may have written to them (or cached what it read) before the save.
        for index, (disk, path) in enumerate(zip(self.config.empty_disks, self._empty_disk_files(), strict=True)):
            shutil.move(path, scratch / snapshot.empty_disk(index))
            overlay = scratch / snapshot.empty_disk_overlay(index)
            snapshot.create_overlay(overlay, final / snapshot.empty_disk(index), disk.size, unsafe=True)
        snapshot.publish(scratch, final)
        self.log(f"saved a booted snapshot ({time.monotonic() - self._save_started:.2f} s; {final.name})")
        self._first_start = True
        self.start(allow_reboot=self._allow_reboot)  # as the first start was asked: -no-reboot or not

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
            self._serve_fixup()
            self._monitor_ok(f"savevm {name}")
            # The guest's clock stood still while QEMU saved (a second or more).
            self._run_fixup(f"moving the clock on after saving snapshot {name!r}")

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
            self._run_fixup(f"setting the clock and reseeding after restoring snapshot {name!r}")

    def _run_fixup(self, what: str) -> None:
        """Moves the guest's clock to the host's, as measured now, and reseeds its RNG.

        Measured, not computed: after savevm the guest's clock has stood still
        for the save, after loadvm (measured here, QEMU 10) it has not gone
        back to the save's time.
        """
        offset = self._guest_clock_offset()
        command = snapshot.fixup_command() if offset is None else snapshot.fixup_command(shift=-offset)
        status, output = self._run(command, timeout=FIXUP_TIMEOUT, moves_clock=True)
        if status != 0:
            raise self._broken(f"{what} failed: {output.decode(errors='replace').strip()}")

    def _serve_fixup(self) -> None:
        """Starts the guest's resident fix-up before a save, so that its restores need no exec."""
        status, _output = self._run(snapshot.FIXUP_SERVE, timeout=60)
        if status != 0:
            # Restores then run the fix-up as a program: slower, as correct. Why is on the console.
            self.log(f"the guest's resident fix-up did not start (exit code {status}); restores start it as a program")

    def _guest_clock_offset(self) -> float | None:
        """The guest's wall clock minus the host's, in seconds (None if the guest cannot say).

        Read with a builtin (bash's EPOCHREALTIME), so the round trip is a
        few milliseconds and the error half of it.
        """
        sent = time.time()
        status, output = self._run('echo "${EPOCHREALTIME/[!0-9]/.}"', timeout=30)
        received = time.time()
        try:
            guest = float(output)
        except ValueError:
            guest = None
        if status != 0 or guest is None:
            self.log(f"cannot read the guest's clock (exit code {status}): it is set, not moved on")
            return None
        return guest - (sent + received) / 2

    def _check_snapshot_name(self, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ArgumentError(f"{self.name}: snapshot name {name!r}: use letters, digits, '_', '.' and '-'")
