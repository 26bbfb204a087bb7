"""Host-side helpers: the subprocess funnel, missing tools, the accelerator choice."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmrig import accel, proc
from vmrig.errors import HostCommandFailed, HostToolMissing, UsageError, VmrigError


def test_missing_tool_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HostToolMissing, match=r"'vde_switch' is not installed; install it with: apt-get install vde2"):
        proc.require_tool("vde_switch")


def test_run_captures_and_checks() -> None:
    assert proc.run(["sh", "-c", "echo out; echo err >&2"]).stdout == b"out\n"
    with pytest.raises(HostCommandFailed) as error:
        proc.run(["sh", "-c", "echo why >&2; exit 3"])
    assert error.value.status == 3 and error.value.stderr == b"why\n"
    assert proc.run(["sh", "-c", "exit 4"], check=False).returncode == 4
    assert proc.run(["sh", "-c", "echo $LANG"]).stdout == b"C.UTF-8\n"


def test_a_failed_command_says_what_ran_how_it_ended_and_why() -> None:
    script = "for i in $(seq 1 30); do echo line $i >&2; done; printf 'bad \\377 byte\\n' >&2; exit 7"
    with pytest.raises(HostCommandFailed) as caught:
        proc.run(["sh", "-c", script])
    error = caught.value
    assert isinstance(error, VmrigError)
    assert error.argv == ["sh", "-c", script]
    assert error.status == 7
    tail = error.stderr_tail.splitlines()
    assert len(tail) == HostCommandFailed.TAIL_LINES
    assert tail[0] == "line 12" and tail[-1] == "bad \ufffd byte"
    first, *rest = str(error).splitlines()
    assert first == f"command failed (exit status 7): sh -c {shlex.quote(script)}"
    assert rest == tail


def test_a_failed_command_without_stderr_is_one_line() -> None:
    with pytest.raises(HostCommandFailed, match=r"^command failed \(exit status 1\): false$"):
        proc.run(["false"])


def test_run_kills_the_child_when_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(proc.TimeoutExpired):
        proc.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert subprocess.run(["pgrep", "-f", "^sleep 30$"], capture_output=True).returncode != 0


def test_spawned_child_dies_with_its_parent(tmp_path: Path) -> None:
    # A parent that spawns a long sleeper and is then SIGKILLed: the sleeper must go too.
    marker = f"{tmp_path}/sleeper"
    script = (
        "import subprocess, sys, time\n"
        "from vmrig import proc\n"
        f"child = proc.spawn(['sh', '-c', 'exec -a {marker} sleep 300'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert Path(f"/proc/{child_pid}").exists()
    assert_dies_with(parent, child_pid)


def test_a_child_spawned_from_a_thread_outlives_the_thread_and_dies_with_the_process(tmp_path: Path) -> None:
    # A script may run a machine's first command (which starts QEMU) in a thread of its own.
    script = (
        "import threading, time\n"
        "from vmrig import proc\n"
        "children = []\n"
        "thread = threading.Thread(target=lambda: children.append(proc.spawn(['sleep', '300'])))\n"
        "thread.start(); thread.join(); time.sleep(0.5)\n"
        "print(children[0].pid, children[0].poll(), flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid, status = parent.stdout.readline().split()
    child_pid = int(pid)
    assert status == "None" and alive(child_pid)  # the thread that started it has ended
    assert_dies_with(parent, child_pid)


def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    ignore_term = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = proc.spawn([sys.executable, "-c", ignore_term], stdout=proc.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert child.stop(grace=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL and not alive(child.pid)
    assert child.stop() == -signal.SIGKILL  # stopping again changes nothing
    child.close()
    assert child.stdout.closed


def test_stop_lets_a_polite_child_go_on_sigterm_and_closes_its_stdin() -> None:
    with proc.spawn(["sleep", "30"], stdin=proc.PIPE, stdout=proc.PIPE) as child:
        assert child.poll() is None and child.stdin is not None
        started = time.monotonic()
        assert child.stop() == -signal.SIGTERM
        assert time.monotonic() - started < 4
        assert child.stdin.closed
        assert child.stdout is not None and not child.stdout.closed  # a reader may still drain it
    assert child.stdout.closed  # the `with` block is done with it


def test_leaving_a_with_block_by_an_exception_stops_the_child() -> None:
    with pytest.raises(RuntimeError), proc.spawn(["sleep", "30"]) as child:
        raise RuntimeError("something else broke")
    assert child.returncode == -signal.SIGTERM


def test_cpu_seconds_counts_what_the_child_used() -> None:
    spin = (
        "import time\n"
        "end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\n"
        "print('spun', flush=True)\n"
        "time.sleep(30)\n"
    )
    with proc.spawn([sys.executable, "-c", spin], stdout=proc.PIPE) as child, proc.spawn(["sleep", "30"]) as idle:
        assert child.stdout is not None and child.stdout.readline() == b"spun\n"
        assert child.cpu_seconds() >= 0.4  # /proc counts whole clock ticks: a tick or two less than spun
        assert idle.cpu_seconds() < 0.05
        child.stop()
        child.wait()
    assert child.cpu_seconds() == 0.0  # reaped: nothing left to read


def assert_dies_with(parent: subprocess.Popen[str], child_pid: int) -> None:
    """SIGKILLs `parent` and expects its spawned child to be gone within 5 s."""
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child_pid)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_accel_override(tmp_path: Path) -> None:
    assert accel.choose(tmp_path, tmp_path / "vmlinuz", forced="tcg") == "tcg"
    assert accel.choose(tmp_path, tmp_path / "vmlinuz", forced=" KVM") == "kvm"
    with pytest.raises(UsageError, match="VMRIG_ACCEL"):
        accel.choose(tmp_path, tmp_path / "vmlinuz", forced="hvf")


def test_accel_probe_result_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel.os, "access", lambda _path, _mode: True)
    monkeypatch.setattr(accel.proc, "require_tool", lambda _name: "/bin/true")
    probes: list[Path] = []

    def fake_probe(_qemu: str, kernel: Path, seconds: float = 0) -> bool:
        probes.append(kernel)
        return False

    monkeypatch.setattr(accel, "kvm_runs_guest", fake_probe)
    assert accel.choose(tmp_path, tmp_path / "vmlinuz") == "tcg"
    assert accel.choose(tmp_path, tmp_path / "vmlinuz") == "tcg"
    assert len(probes) == 1
    assert json.loads((tmp_path / "accel.json").read_text())["accel"] == "tcg"


def test_qemu_older_than_10_is_refused_with_the_fix(tmp_path: Path) -> None:
    old = tmp_path / "qemu-system-x86_64"
    old.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    old.chmod(0o755)
    with pytest.raises(UsageError, match=r"QEMU 7\.2; vmrig needs QEMU 10 or newer: run scripts/setup.sh"):
        accel.check_qemu_version(str(old))
    new = tmp_path / "qemu-new"
    new.write_text("#!/bin/sh\necho 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)'\n")
    new.chmod(0o755)
    accel.check_qemu_version(str(new))


def test_tail_is_the_last_lines_of_output_decoded() -> None:
    assert proc.tail(b"one\ntwo\nthree\n\n", 2) == ["two", "three"]
    assert proc.tail("only\n", 5) == ["only"]
    assert proc.tail(b"\xff\n", 1) == ["\ufffd"]
    assert proc.tail(b"", 3) == []
