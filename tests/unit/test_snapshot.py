"""The snapshot store's pure parts: keys, completeness, fix-up command, gc of orphans."""

from __future__ import annotations

import itertools
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from vmrig.contract import GUEST_DIR
from vmrig.errors import MachineError
from vmrig.image import guestbin, snapshot
from vmrig.machine import snapshots

USAGE = "usage: fixup SEED_HEX +|= SECONDS NANOSECONDS"


def test_key_depends_on_every_part() -> None:
    base = ["QEMU emulator version 10.0.2", "-m", "1024", "/cache/image-1/disk.qcow2"]
    assert snapshot.key(base) == snapshot.key(list(base))
    assert snapshot.key(base) != snapshot.key([*base[:2], "2048", base[3]])
    assert re.fullmatch(r"[0-9a-f]{24}", snapshot.key(base))


def make(directory: Path, backing: Path | None = None) -> Path:
    directory.mkdir()
    for name in (snapshot.RAM, snapshot.STATE, snapshot.DISK):
        (directory / name).write_bytes(b"x")
    if backing is not None:
        (directory / "backing").write_text(f"{backing}\n")
    return directory


def test_complete_needs_every_file_and_the_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"")
    whole = make(tmp_path / "snapshot-a", image)
    assert snapshot.complete(whole)
    (whole / snapshot.STATE).unlink()
    assert not snapshot.complete(whole)
    orphan = make(tmp_path / "snapshot-b", tmp_path / "gone.qcow2")
    assert not snapshot.complete(orphan)
    assert list(snapshot.stale(tmp_path)) == [orphan]


def test_publish_is_atomic_and_first_wins(tmp_path: Path) -> None:
    final = tmp_path / "snapshot-k"
    first = snapshot.scratch_dir(tmp_path, "k")
    second = snapshot.scratch_dir(tmp_path, "k")
    assert first.stat().st_mode & 0o777 == 0o700
    (first / "mark").write_text("first")
    assert snapshot.publish(first, final)
    (final / snapshot.RAM).write_text("in use")
    (second / "mark").write_text("second")
    assert not snapshot.publish(second, final)
    assert (final / "mark").read_text() == "first" and not second.exists()
    assert (final / snapshot.LAST_USED).exists()


def test_saving_tells_a_live_save_from_a_leftover(tmp_path: Path) -> None:
    live = tmp_path / f"snapshot-k.{os.getpid()}.ab12"
    dead = tmp_path / "snapshot-k.999999999.ab12"
    assert snapshot.saving(live) and not snapshot.saving(dead)
    assert not snapshot.saving(tmp_path / "image-k.123")


def test_a_guest_is_quiet_after_a_second_of_little_cpu() -> None:
    window = snapshots.QUIET_WINDOW
    limit = snapshots.QUIET_SHARE * window  # CPU seconds a window may use on average
    idle = [10.0 + 0.5 * limit * i for i in range(snapshots.QUIET_WINDOWS + 1)]
    assert snapshots.quiet(idle)
    assert not snapshots.quiet(idle[:-1])  # not a whole second yet
    assert snapshots.quiet([0.0, 5.0, *idle])  # busy before that second
    spike = [*idle[:2], *(x + 1.5 * limit for x in idle[2:])]  # one window 2x over: still quiet on average
    assert snapshots.quiet(spike)
    busy = [*idle[:2], *(x + 3 * limit for x in idle[2:])]
    assert not snapshots.quiet(busy)
    assert not snapshots.quiet([float(i) * window for i in range(20)])  # a whole CPU


def test_fixup_command_sets_the_clock_and_reseeds() -> None:
    command = snapshot.fixup_command(now=1764500000.25, seed=bytes(range(4)))
    assert command == "__vmrig_fixup 00010203 = 1764500000 250000000"
    assert snapshot.fixup_command() != snapshot.fixup_command()  # a new seed each time


def test_fixup_command_moves_the_clock_on_by_a_shift() -> None:
    seed = bytes(range(4))
    assert snapshot.fixup_command(shift=12.5, seed=seed) == "__vmrig_fixup 00010203 + 12 500000000"
    # A guest ahead of the host goes back: floor, so the nanoseconds stay in [0, 1e9).
    assert snapshot.fixup_command(shift=-0.25, seed=seed) == "__vmrig_fixup 00010203 + -1 750000000"


def test_fixup_after_shifts_by_the_time_the_guest_stood_still() -> None:
    # Stopped with its clock at 1000.0, resumed 75.25 s of host time later than that clock.
    command = snapshots.fixup_after(1000.0, 1075.25)
    assert " + 75 250000000" in command
    # No recorded clock (an older save): the host's time is set instead.
    assert " = " in snapshots.fixup_after(None, 1075.25)


def test_the_clock_at_the_stop_is_kept_with_the_snapshot(tmp_path: Path) -> None:
    assert snapshot.read_clock(tmp_path) is None
    snapshot.write_clock(tmp_path, 1764500000.123456)
    assert snapshot.read_clock(tmp_path) == 1764500000.123456
    (tmp_path / snapshot.CLOCK).write_text("garbage\n")
    assert snapshot.read_clock(tmp_path) is None


@pytest.fixture(scope="module")
def fixup_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guest's fix-up, built as a run builds it (into a cache of its own)."""
    cache = tmp_path_factory.mktemp("cache")
    program = cache / "fixup"
    program.write_bytes(guestbin.fixup_program(cache))
    program.chmod(0o755)
    assert guestbin.fixup_program(cache) == program.read_bytes()  # built once: the second call reads it
    assert len(list(cache.glob("fixup-*"))) == 1
    return program


# Without privileges a good request gets as far as the first privileged call: the
# generator refuses to rekey (the seed itself goes into the pool: anyone may write it).
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _line(fd: int, seconds: float = 10) -> bytes:
    """One line from `fd`, or AssertionError after `seconds` (a fix-up that died never answers)."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], seconds)
        assert ready, f"no answer within {seconds} s, so far {line!r}"
        line += os.read(fd, 1)
    return line


def test_guest_fixup_refuses_a_bad_request_and_parses_a_good_one(fixup_program: Path) -> None:
    # The guest's fix-up run on the host: requests it refuses before any system call, and
    # good ones that nobody may carry out. In a directory anyone may enter, for nobody.
    with tempfile.TemporaryDirectory(prefix="fixup-", dir="/tmp") as name:
        place = Path(name)
        place.chmod(0o755)
        program = place / "fixup"
        shutil.copy(fixup_program, program)
        bad_requests = (["00", "x", "1", "2"], ["0g", "+", "1", "2"], ["00", "+", "1"], ["00", "+", "1", "2x"])
        for bad in (*bad_requests, ["00", "=", "1", "1000000000"], ["00", "=", "1", "-1"]):
            once = subprocess.run([program, *bad], capture_output=True, text=True)
            assert once.returncode == 1 and once.stderr == f"{USAGE}\n", (bad, once)
        once = subprocess.run([*NOBODY, program, "00ff", "+", "-1", "5"], capture_output=True, text=True)
        assert once.returncode == 1 and once.stderr == "RNDRESEEDCRNG: failed\n", once
        fifos = [place / "in", place / "out"]
        for fifo in fifos:
            os.mkfifo(fifo, 0o666)
            fifo.chmod(0o666)
        server = subprocess.Popen([*NOBODY, program, "--serve", *fifos], stderr=subprocess.PIPE)
        # Read-write, as the guest's shell opens them: opening a FIFO so never blocks.
        out, requests = os.open(fifos[1], os.O_RDWR), os.open(fifos[0], os.O_RDWR)
        try:
            assert _line(out).split()[0] == b"ready"
            os.write(requests, b"0123456789abcdef99 + 1\n")  # no nanoseconds
            assert _line(out) == f"0123456789abcdef error {USAGE}\n".encode()
            # Two requests in one write, the second in two: each answered once whole.
            os.write(requests, b"aa = x 0\n\nbb +")
            assert _line(out) == f"aa error {USAGE}\n".encode()
            assert _line(out) == f"- error {USAGE}\n".encode()
            os.write(requests, b" 1 2 3\n")
            assert _line(out) == f"bb error {USAGE}\n".encode()
            os.write(requests, b"0123456789abcdef0123 = 1764500000 250000000\r\n")  # CRLF too
            assert _line(out) == b"0123456789abcdef error RNDRESEEDCRNG: failed\n"
            # A line longer than any request is answered once, as such; the next one as usual.
            os.write(requests, b"ab" * 5000 + b" + 1 2\ncd + 1 2\n")
            assert _line(out) == b"- error request too long\n"
            assert _line(out) == b"cd error RNDRESEEDCRNG: failed\n"
        finally:
            os.close(requests)
            os.close(out)
            server.kill()
            server.wait()


def _fixup_functions(run_dir: Path, program: Path) -> str:
    """protocol.bash's fix-up functions, with /run/vmrig in `run_dir` and the fix-up `program`."""
    text = (GUEST_DIR / "protocol.bash").read_text()
    functions = text[text.index("# __vmrig_fixup_running") :]
    return functions.replace("/usr/lib/vmrig/fixup", str(program)).replace("/run/vmrig", str(run_dir))


def _in_guest_shell(run_dir: Path, program: Path, script: str) -> subprocess.CompletedProcess[str]:
    # As the backdoor runs a command: set -euo pipefail, fds 7, 8 and 9 open.
    ports = " ".join(f"{fd}<>{run_dir}/fd{fd}" for fd in (7, 8, 9))
    body = f"set -euo pipefail\nexec {ports}\n{_fixup_functions(run_dir, program)}\n{script}\n"
    return subprocess.run(["bash", "-c", body, "bash"], capture_output=True, text=True, timeout=30)


def test_guest_fixup_hands_over_to_the_resident_one_or_runs_it(tmp_path: Path, fixup_program: Path) -> None:
    # Requests the fix-up refuses (no nanoseconds): they show which way each call went, and no clock is set.
    bad = "0123456789abcdef00 + 1"
    # No resident fix-up, or an empty or stale pid file: it runs as a program of its own.
    for pid_file in (None, "", f"{os.getpid()}\n", f"{os.getpid()} 0\n"):
        if pid_file is not None:
            (tmp_path / "fixup.pid").write_text(pid_file)
        once = _in_guest_shell(tmp_path, fixup_program, f"__vmrig_fixup {bad}")
        assert once.returncode != 0 and once.stderr.startswith("usage: fixup"), (pid_file, once)
    (tmp_path / "fixup.pid").unlink()
    served = _in_guest_shell(
        tmp_path,
        fixup_program,
        f"""__vmrig_fixup_serve
        __vmrig_fixup_serve  # running already: nothing more
        read -r pid fd <{tmp_path}/fixup.pid
        ls /proc/$pid/fd | sort -n | tr '\\n' ' '; echo; readlink /proc/$pid/cwd
        __vmrig_fixup {bad} || echo "status $?"
        kill $pid""",
    )
    fds, cwd, status = served.stdout.splitlines()
    assert served.returncode == 0, served
    assert fds.split() == ["0", "1", "2", "3", "4"] and cwd == "/"  # its FIFOs, not the backdoor's ports
    assert status == "status 1"
    assert served.stderr == "fix-up: usage: fixup SEED_HEX +|= SECONDS NANOSECONDS\n"  # from the resident one
    assert (
        tmp_path / "fixup.log"
    ).read_text() == "0123456789abcdef error usage: fixup SEED_HEX +|= SECONDS NANOSECONDS\n"


def test_a_discarded_snapshot_is_gone_and_a_flush_needs_its_files(tmp_path: Path) -> None:
    directory = tmp_path / f"{snapshot.PREFIX}abc"
    directory.mkdir()
    for name in (snapshot.RAM, snapshot.STATE, snapshot.DISK):
        (directory / name).write_bytes(b"x")
    snapshot.flush(directory)
    snapshot.discard(directory)
    assert list(tmp_path.iterdir()) == []
    snapshot.discard(directory)  # already gone: nothing to do
    with pytest.raises(OSError):
        snapshot.flush(directory)


class Member(snapshots.Snapshots):
    """A machine as a company save sees it: its steps recorded, none of QEMU behind them."""

    def __init__(self, name: str, steps: list[str], *, stops: bool = True, restarts: bool = True) -> None:  # noqa: D107
        self.name = name
        self.steps = steps
        self.stops = stops
        self.restarts = restarts
        self.company: list[Member] = []
        self._company_machines = lambda: self.company
        self._save_ready: Path | None = Path(f"/scratch/{name}")
        self._command_lock = threading.RLock()

    def log(self, msg: str) -> None:
        self.steps.append(f"{self.name} log {msg}")

    def _guest_clock_offset(self) -> float | None:
        return 0.0

    def _stop_for_save(self, scratch: Path, offset: float | None) -> bool:
        self.steps.append(f"{self.name} stop")
        return self.stops

    def _write_saved_state(self, scratch: Path) -> bool:
        self.steps.append(f"{self.name} write")
        return True

    def _abandon_save(self, scratch: Path) -> None:
        self.steps.append(f"{self.name} cont")

    def _publish_and_restart(self, scratch: Path) -> None:
        self.steps.append(f"{self.name} publish")
        if not self.restarts:
            raise MachineError(f"{self.name}: QEMU did not start")


# The machine's other operations (QEMU, the backdoor) are never called here.
Member.__abstractmethods__ = frozenset()


def chain(*members: Member) -> None:
    """Each member shares a vlan with the next one (a client, a router, a server)."""
    for left, right in itertools.pairwise(members):
        left.company.append(right)
        right.company.append(left)


def test_a_company_is_stopped_together_then_written_transitively() -> None:
    steps: list[str] = []
    client, router, server = Member("client", steps), Member("router", steps), Member("server", steps)
    chain(client, router, server)
    server._save_company()
    actions = [step for step in steps if " log " not in step]
    assert actions[:3] == ["server stop", "router stop", "client stop"]  # all stopped before any is written
    assert sorted(actions[3:6]) == ["client write", "router write", "server write"]
    assert sorted(actions[6:]) == ["client publish", "router publish", "server publish"]
    assert client._save_ready is None and router._save_ready is None


def test_a_company_member_that_cannot_be_saved_leaves_all_of_them_unsaved_and_running() -> None:
    steps: list[str] = []
    client, server = Member("client", steps, stops=False), Member("server", steps)
    chain(client, server)
    server._save_company()
    assert "server cont" in steps and not any("publish" in step for step in steps)


def test_a_failed_restart_still_restarts_the_others_then_raises() -> None:
    steps: list[str] = []
    client, server = Member("client", steps), Member("server", steps, restarts=False)
    chain(client, server)
    with pytest.raises(MachineError, match="server: QEMU did not start"):
        server._save_company()
    assert "client publish" in steps


def test_a_member_in_another_threads_hands_saves_itself() -> None:
    steps: list[str] = []
    client, server = Member("client", steps), Member("server", steps)
    chain(client, server)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with client._command_lock:
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        server._save_company()
    finally:
        release.set()
        holder.join()
    assert "client stop" not in steps and "server publish" in steps
    assert client._save_ready is not None
