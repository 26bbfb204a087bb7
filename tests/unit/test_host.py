"""Host-side helpers: the subprocess funnel, missing tools, the accelerator choice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmrig import accel, proc
from vmrig.errors import HostToolMissing, UsageError


def test_missing_tool_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HostToolMissing, match=r"'vde_switch' is not installed; install it with: apt-get install vde2"):
        proc.require_tool("vde_switch")


def test_run_captures_and_checks() -> None:
    assert proc.run(["sh", "-c", "echo out; echo err >&2"]).stdout == b"out\n"
    with pytest.raises(subprocess.CalledProcessError) as error:
        proc.run(["sh", "-c", "echo why >&2; exit 3"])
    assert error.value.returncode == 3 and error.value.stderr == b"why\n"
    assert proc.run(["sh", "-c", "exit 4"], check=False).returncode == 4
    assert proc.run(["sh", "-c", "echo $LANG"]).stdout == b"C.UTF-8\n"


def test_run_kills_the_child_when_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
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


def test_accel_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMRIG_ACCEL", "tcg")
    assert accel.choose(tmp_path, tmp_path / "vmlinuz") == "tcg"
    monkeypatch.setenv("VMRIG_ACCEL", "KVM")
    assert accel.choose(tmp_path, tmp_path / "vmlinuz") == "kvm"
    monkeypatch.setenv("VMRIG_ACCEL", "hvf")
    with pytest.raises(UsageError, match="VMRIG_ACCEL"):
        accel.choose(tmp_path, tmp_path / "vmlinuz")


def test_accel_probe_result_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VMRIG_ACCEL", raising=False)
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


def test_tail_is_the_last_lines_of_output_decoded() -> None:
    assert proc.tail(b"one\ntwo\nthree\n\n", 2) == ["two", "three"]
    assert proc.tail("only\n", 5) == ["only"]
    assert proc.tail(b"\xff\n", 1) == ["\ufffd"]
    assert proc.tail(b"", 3) == []
