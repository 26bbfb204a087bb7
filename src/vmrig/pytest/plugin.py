"""The pytest plugin (entry point `pytest11`): options, markers, collection of test files, the machines'
pool, failure evidence on reports, debugger hints, and keeping a failed test's machines."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from vmrig import testfile
from vmrig.errors import RequestedAssertionFailed, VmrigError
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.pytest import evidence
from vmrig.pytest.scriptitem import TestFile, TestScript
from vmrig.pytest.session import STATE, State, output_of, state, worker_id
from vmrig.pytest.topology import LEASE, Declaration, Lease, Pool, Settings
from vmrig.pytest.workers import WorkerSpace
from vmrig.spec import python_name

GROUP = "vmrig"
MARKERS = (
    "vmrig: the test boots vmrig machines (set by the plugin on test files and machines() fixtures)",
    "vmrig_requires(*features): skip unless the host has each feature: 'kvm', 'vsock', 'ocr'",
)
FEATURES = ("kvm", "vsock", "ocr")


_CURRENT = pytest.StashKey[pytest.Item]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "vmrig: tests in QEMU virtual machines")
    group.addoption(
        "--vmrig-files",
        action="append",
        default=[],
        metavar="GLOB",
        help="collect files matching GLOB as vmrig test files (`nodes` + `test_script`); also the "
        "vmrig_files ini setting. A test file named on the command line is collected without it.",
    )
    group.addoption(
        "--vmrig-no-snapshots",
        action="store_true",
        help="boot every machine from scratch: no booted snapshots, so each test's machines() "
        "boot for it (machines(restore=False) still shares one boot)",
    )
    group.addoption(
        "--vmrig-output",
        metavar="DIR",
        default=None,
        help="where failure evidence and screenshots go, a directory per test (default: vmrig-output "
        "under the rootdir)",
    )
    group.addoption(
        "--vmrig-ssh",
        action="store_true",
        help="give every machine the SSH backdoor (root, no password, on loopback) for `vmrig ssh`",
    )
    group.addoption(
        "--vmrig-keep-failed",
        action="store_true",
        help="keep the machines of a failed test running after the session, print how to reach them, "
        "and stop them on Enter or Ctrl-C (turns on --vmrig-ssh; not under xdist)",
    )
    group.addoption(
        "--vmrig-serial",
        action="store_true",
        help="print the machines' console lines as they come (always in the failure's evidence)",
    )
    parser.addini("vmrig_files", "globs of vmrig test files to collect", type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    worker = worker_id(config)
    keep_failed = bool(config.getoption("vmrig_keep_failed")) and worker == "main"
    output = config.getoption("vmrig_output")
    settings = Settings(
        snapshots=not config.getoption("vmrig_no_snapshots"),
        ssh_backdoor=bool(config.getoption("vmrig_ssh")) or keep_failed,
        serial=bool(config.getoption("vmrig_serial")),
        keep_failed=keep_failed,
        output=Path(output).absolute() if output else config.rootpath / "vmrig-output",
    )
    space = WorkerSpace(worker)
    config.stash[STATE] = State(settings, space, Pool(settings, space))


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = state(config).settings
    if settings.snapshots:
        mode = (
            "booted snapshots on: each test's machines start from their booted snapshot, clean "
            "(where a topology cannot be saved, a boot from scratch per test; restore=False shares one boot)"
        )
    else:
        mode = "snapshots off (--vmrig-no-snapshots): every test boots its machines from scratch"
    return [f"vmrig: {mode}", f"vmrig: failure evidence in {settings.output}"]


# -- collection --------------------------------------------------------------


def _is_test_file(file_path: Path, parent: pytest.Collector) -> bool:
    if file_path.suffix != ".py":
        return False
    config = parent.config
    globs = [*config.getini("vmrig_files"), *config.getoption("vmrig_files")]
    try:
        relative = str(file_path.relative_to(config.rootpath))
    except ValueError:
        relative = str(file_path)
    if any(fnmatch.fnmatch(relative, glob) or fnmatch.fnmatch(file_path.name, glob) for glob in globs):
        return True
    # Named on the command line: the file itself says whether it is a test file.
    return parent.session.isinitpath(file_path) and testfile.declares_test(file_path)


def _python_collects(file_path: Path, parent: pytest.Collector) -> bool:
    if parent.session.isinitpath(file_path):
        return True
    return any(fnmatch.fnmatch(file_path.name, glob) for glob in parent.config.getini("python_files"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # Files that pytest's Python plugin collects come through pytest_pycollect_makemodule.
    if _is_test_file(file_path, parent) and not _python_collects(file_path, parent):
        return TestFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_test_file(module_path, parent):
        return TestFile.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, TestScript) and _declarations(item):
            item.add_marker("vmrig")


def _declarations(item: pytest.Item) -> list[Declaration]:
    info = getattr(item, "_fixtureinfo", None)
    found: list[Declaration] = []
    for definitions in getattr(info, "name2fixturedefs", {}).values():
        for definition in definitions:
            declaration = getattr(definition.func, "_vmrig_declaration", None)
            if isinstance(declaration, Declaration):
                found.append(declaration)
    return found


# -- running -----------------------------------------------------------------


def _has(feature: str) -> bool:
    if feature == "kvm":
        return os.access("/dev/kvm", os.R_OK | os.W_OK) and os.environ.get("VMRIG_ACCEL", "") != "tcg"
    if feature == "vsock":
        return os.access("/dev/vhost-vsock", os.R_OK | os.W_OK)
    if feature == "ocr":
        import shutil

        return shutil.which("tesseract") is not None
    raise pytest.UsageError(f"vmrig_requires: unknown feature {feature!r} (known: {', '.join(FEATURES)})")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("vmrig_requires"):
        missing = [feature for feature in marker.args if not _has(str(feature))]
        if missing:
            pytest.skip(f"vmrig: this host lacks {', '.join(missing)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    item.config.stash[_CURRENT] = item
    try:
        return (yield)
    finally:
        del item.config.stash[_CURRENT]


@pytest.fixture(scope="session")
def vmrig_pool(pytestconfig: pytest.Config) -> Pool:
    """The process's pool of machines() topologies (one per pytest-xdist worker)."""
    return state(pytestconfig).pool


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call" and report.failed and LEASE in item.stash and not hasattr(report, "context"):
        leased = item.stash[LEASE]
        leased.failed = True
        machines = [machine for topology in leased.topologies for machine in topology.running()]
        directory = output_of(item.config, item.nodeid)
        for section in evidence.collect(machines, directory, Logger(stream=io.StringIO())):
            report.sections.append((section.title, section.text))
            item.user_properties.append((section.title, section.text))
        item.user_properties.append(("vmrig evidence", str(directory)))
    return report


def _reach_lines(leased: Lease, at_prompt: bool) -> list[str]:
    lines: list[str] = []
    for topology in leased.topologies:
        machines = topology.running()
        if not machines:
            continue
        if topology.ssh_hint() is not None:
            _wait_for_sshd(machines)
        names = ", ".join(machine.name for machine in machines)
        lines.append(f"vmrig: {topology.label}: running {names}")
        first = machines[0].name
        if at_prompt:
            variable = topology.prefix + python_name(first)
            lines.append(
                f"  at this prompt: {variable}.succeed('systemctl --failed'), "
                f"{variable}.shell_interact() (a root shell; Ctrl-D returns here)"
            )
        hint = topology.ssh_hint()
        if hint is not None:
            lines.append(f"  from another terminal: {hint.replace('NODE', first)}")
        elif at_prompt:
            lines.append("  (run pytest with --vmrig-ssh to log in with `vmrig ssh` from another terminal)")
    return lines


def _wait_for_sshd(machines: list[Machine]) -> None:
    """Waits until sshd listens in each machine, so that the printed commands work at once
    (a restored guest may still be starting it)."""
    for machine in machines:
        if machine.is_up():
            with contextlib.suppress(VmrigError, RequestedAssertionFailed):
                machine.wait_for_open_port(22, timeout=60)


def pytest_enter_pdb(config: pytest.Config) -> None:
    item = config.stash.get(_CURRENT, None)
    if item is None or LEASE not in item.stash:
        return
    lines = _reach_lines(item.stash[LEASE], at_prompt=True)
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state(session.config).interrupted = exitstatus == pytest.ExitCode.INTERRUPTED


def _wait_for_user(config: pytest.Config, pool: Pool) -> None:
    lines = ["", "vmrig: the machines of the failed tests are still running (--vmrig-keep-failed):"]
    for topology in pool.kept:
        lines += _reach_lines(Lease([topology]), at_prompt=False)
    lines.append("vmrig: press Enter (or Ctrl-C) to stop them")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt, OSError, ValueError):
            sys.stdin.readline()
    finally:
        if capture is not None:
            capture.resume_global_capture()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stops every machine: after the summary, and after waiting for the user with kept machines.

    Also after an error in the session itself: nothing outlives pytest.
    """
    if STATE not in config.stash:
        return
    current = state(config)
    try:
        if current.pool.kept and not current.interrupted:
            _wait_for_user(config, current.pool)
    finally:
        current.pool.stop_all()
        current.space.remove()
