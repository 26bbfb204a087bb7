"""Shared test helpers: writing test files, running the vmrig CLI, booting nodes in-process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmrig.driver import Driver
from vmrig.log import Logger
from vmrig.spec import Node, Options
from vmrig.testfile import TestSpec

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
VMRIG = [sys.executable, "-m", "vmrig.cli"]


def short_tmp(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh directory for VM state and sockets (AF_UNIX paths must stay short)."""
    return tmp_path_factory.mktemp(name[:20], numbered=True)


@pytest.fixture
def vm_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return short_tmp(tmp_path_factory, request.node.name)


def write_test_file(directory: Path, body: str, name: str = "case.py") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def failing_tools(monkeypatch: pytest.MonkeyPatch, directory: Path, *names: str, message: str) -> None:
    """Puts host programs `names` first on PATH; each prints `message` to stderr and exits 1."""
    bin_dir = directory / "failing-bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho 'some progress'\necho '{message}' >&2\nexit 1\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def run_vmrig(
    *args: str | Path,
    tmpdir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    cwd: Path | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """Runs the vmrig CLI as a user would, `stdin` piped in; TMPDIR keeps its state apart from other tests."""
    full_env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run(
        [*VMRIG, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd or tmpdir,
    )


class BootedDriver:
    """A driver whose images are built and machines created, in this process."""

    def __init__(
        self,
        nodes: dict[str, Node],
        tmp_dir: Path,
        script: str = "",
        options: Options | None = None,
        *,
        snapshots: bool = False,
    ):
        self.log_stream = io.StringIO()
        self.logger = Logger(self.log_stream, color=False)
        spec = TestSpec(
            name="inline",
            path=tmp_dir / "inline.py",
            nodes=dict(sorted(nodes.items())),
            options=options or Options(),
            script=script,
            script_path=str(tmp_dir / "inline.py"),
            script_first_line=1,
        )
        out_dir = tmp_dir / "out"
        out_dir.mkdir(exist_ok=True)
        # Booted snapshots only where a test is about them: each costs a save and disk space.
        self.driver = Driver(spec, logger=self.logger, out_dir=out_dir, tmp_dir=tmp_dir, snapshots=snapshots)
        self.driver.setup()

    def machine(self, name: str):  # noqa: ANN201 (Machine)
        return next(m for m in self.driver.machines if m.name == name)

    def log(self) -> str:
        return self.log_stream.getvalue()

    def close(self) -> None:
        self.driver.cleanup()


@pytest.fixture
def booted(vm_tmp: Path) -> Iterator[type[BootedDriver]]:
    """Factory for in-process drivers that are cleaned up after the test."""
    created: list[BootedDriver] = []

    def make(nodes: dict[str, Node], script: str = "", options: Options | None = None) -> BootedDriver:
        booted_driver = BootedDriver(nodes, vm_tmp, script, options)
        created.append(booted_driver)
        return booted_driver

    yield make  # type: ignore[misc]
    for booted_driver in created:
        booted_driver.close()


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes other than this one whose command line has `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def assert_none_left(text: str, seconds: float = 30) -> None:
    """Waits up to `seconds` for every process mentioning `text` to be gone (the kernel delivers
    parent-death signals asynchronously), then asserts that none is left."""
    deadline = time.monotonic() + seconds
    while processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(text) == []
