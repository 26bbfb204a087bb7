"""The pytest plugin (entry point `pytest11`): options, markers, collection of test files, the machines'
pool, failure evidence on reports, debugger hints, and keeping a failed test's machines."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import sys
from collections.abc import Generator
from pathlib import Path, PurePath
from typing import Any

import pytest
from _pytest.pathlib import fnmatch_ex

from vmrig import testfile
from vmrig.errors import TestScriptError, VmrigError
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.pytest import evidence
from vmrig.pytest.scriptitem import TestFile, TestScript
from vmrig.pytest.session import STATE, State, output_of, state, worker_id
from vmrig.pytest.topology import LEASE, Declaration, Machines, Pool, Running, Settings
from vmrig.pytest.workers import WorkerSpace
from vmrig.runenv import RunEnvironment

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
    keep_failed = bool(config.getoption("vmrig_keep_failed"))
    if keep_failed and (config.getoption("numprocesses", None) or worker != "main"):
        raise pytest.UsageError(
            "--vmrig-keep-failed waits for Enter in the pytest process itself: run without xdist workers (-n 0)"
        )
    output = config.getoption("vmrig_output")
    if output and Path(output).exists() and not Path(output).is_dir():
        raise pytest.UsageError(f"--vmrig-output {output}: not a directory")
    settings = Settings(
        snapshots=not config.getoption("vmrig_no_snapshots"),
        ssh_backdoor=bool(config.getoption("vmrig_ssh")) or keep_failed,
        serial=bool(config.getoption("vmrig_serial")),
        keep_failed=keep_failed,
        output=Path(output).absolute() if output else config.rootpath / "vmrig-output",
        environment=RunEnvironment.from_environ(os.environ),
    )
    space = WorkerSpace(worker, settings.environment.tmp_dir)
    config.stash[STATE] = State(settings, space, Pool(settings, space), _globs(config))


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


# Never test files, whatever a glob says.
NOT_TEST_FILES = ("conftest.py", "__init__.py")


def glob_matches(path: PurePath, pattern: PurePath) -> bool:
    """Whether absolute `path` matches absolute `pattern`, one path segment at a time: `*` and
    `?` stay within a segment, a `**` segment stands for any number of segments."""
    return _segments_match(path.parts, pattern.parts)


def _segments_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_segments_match(parts[index:], pattern[1:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _segments_match(parts[1:], pattern[1:])


def _globs(config: pytest.Config) -> list[PurePath]:
    """The test-file globs, absolute: the ini's relative to the ini file, the option's relative
    to the directory pytest was started in."""
    ini_base = config.inipath.parent if config.inipath is not None else config.rootpath
    globs = [ini_base / glob for glob in config.getini("vmrig_files")]
    globs += [config.invocation_params.dir / glob for glob in config.getoption("vmrig_files")]
    return [PurePath(os.path.normpath(glob)) for glob in globs]


def _python_name(file_path: Path, parent: pytest.Collector) -> bool:
    """Whether the file matches python_files (test_*.py and the like), as pytest matches them."""
    return any(fnmatch_ex(glob, file_path) for glob in parent.config.getini("python_files"))


def _python_collects(file_path: Path, parent: pytest.Collector) -> bool:
    """Whether pytest's Python plugin collects the file (it matches python_files, or was named)."""
    return parent.session.isinitpath(file_path) or _python_name(file_path, parent)


def _is_test_file(file_path: Path, parent: pytest.Collector) -> bool:
    """A vmrig test file: matched by a glob (a module binding neither `nodes` nor `test_script`
    is skipped), or one pytest would collect that binds both, `nodes` as a dict. The file is
    parsed only when one of those applies."""
    if file_path.suffix != ".py" or file_path.name in NOT_TEST_FILES:
        return False
    if any(glob_matches(file_path, glob) for glob in state(parent.config).globs):
        return testfile.declaration_kind(file_path) != "none"
    if not _python_collects(file_path, parent):
        return False
    kind = testfile.declaration_kind(file_path)
    # Named on the command line without a test module's name: the test file's loader says
    # what is wrong with it (a syntax error with its line), not an import traceback.
    named = parent.session.isinitpath(file_path) and not _python_name(file_path, parent)
    return kind == "test" or (kind == "unparsable" and named)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # Files that pytest's Python plugin collects come through pytest_pycollect_makemodule.
    if not _python_collects(file_path, parent) and _is_test_file(file_path, parent):
        return TestFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_test_file(module_path, parent):
        return TestFile.from_parent(parent, path=module_path)
    return None


@pytest.hookimpl(tryfirst=True)  # before conftest hooks, so that they see the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, TestScript) and _declarations(item):
            item.add_marker("vmrig")
        for marker in item.iter_markers("vmrig_requires"):
            unknown = [str(feature) for feature in marker.args if feature not in FEATURES]
            if unknown or not marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: vmrig_requires({', '.join(map(repr, marker.args))}): "
                    f"name one or more of {', '.join(FEATURES)}"
                )


def _declarations(item: pytest.Item) -> list[Declaration]:
    info = getattr(item, "_fixtureinfo", None)
    found: list[Declaration] = []
    for definitions in getattr(info, "name2fixturedefs", {}).values():
        # The last definition is the one the test gets (a module's overrides a conftest's).
        declaration = getattr(definitions[-1].func, "_vmrig_declaration", None) if definitions else None
        if isinstance(declaration, Declaration):
            found.append(declaration)
    return found


# -- running -----------------------------------------------------------------


def _has(feature: str, environment: RunEnvironment) -> bool:
    if feature == "kvm":
        return os.access("/dev/kvm", os.R_OK | os.W_OK) and environment.accel != "tcg"
    if feature == "vsock":
        return os.access("/dev/vhost-vsock", os.R_OK | os.W_OK)
    if feature == "ocr":
        import shutil

        return shutil.which("tesseract") is not None
    raise AssertionError(feature)  # checked at collection


def pytest_runtest_setup(item: pytest.Item) -> None:
    environment = state(item.config).settings.environment
    for marker in item.iter_markers("vmrig_requires"):
        missing = [feature for feature in marker.args if not _has(str(feature), environment)]
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


def in_use(item: pytest.Item) -> list[Running]:
    """The machines a test is using: those started for it, and those of the scoped fixtures it
    has (from restore=False machines())."""
    found: list[Running] = list(item.stash[LEASE].topologies) if LEASE in item.stash else []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Machines) and value.topology not in found:
            found.append(value.topology)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when != "call" or not report.failed or hasattr(report, "context"):  # (context: a subtest's)
        return report
    topologies = in_use(item)
    if not topologies:
        return report
    for topology in topologies:
        topology.failed = True
    machines = [machine for topology in topologies for machine in topology.running()]
    directory = output_of(item.config, item.nodeid)
    try:
        sections = evidence.collect(machines, directory, Logger(stream=io.StringIO()))
    except OSError as error:  # the report of the failure itself must not be lost
        report.sections.append(("vmrig: evidence", f"could not be saved in {directory}: {error}"))
        return report
    for section in sections:
        report.sections.append((section.title, section.text))
        item.user_properties.append((section.title, section.text))
    item.user_properties.append(("vmrig evidence", str(directory)))
    return report


def _reach_lines(topologies: list[Running], at_prompt: bool) -> list[str]:
    lines: list[str] = []
    for topology in topologies:
        machines = topology.running()
        if not machines:
            continue
        first = machines[0].name
        ssh_command = topology.ssh_command(first)
        if ssh_command is not None:
            _wait_for_sshd(machines)
        names = ", ".join(machine.name for machine in machines)
        lines.append(f"vmrig: {topology.label}: running {names}")
        if at_prompt:
            variable = topology.reach(first)
            lines.append(
                f"  at this prompt: {variable}.succeed('systemctl --failed'), "
                f"{variable}.shell_interact() (a root shell; Ctrl-D returns here)"
            )
        if ssh_command is not None:
            lines.append(f"  from another terminal: {ssh_command}")
        elif at_prompt:
            lines.append("  (run pytest with --vmrig-ssh to log in with `vmrig ssh` from another terminal)")
    return lines


def _wait_for_sshd(machines: list[Machine]) -> None:
    """Waits until sshd listens in each machine, so that the printed commands work at once
    (a restored guest may still be starting it)."""
    for machine in machines:
        if machine.is_up():
            with contextlib.suppress(VmrigError, TestScriptError):
                machine.wait_for_open_port(22, timeout=60)


def pytest_enter_pdb(config: pytest.Config) -> None:
    item = config.stash.get(_CURRENT, None)
    if item is None:
        return
    lines = _reach_lines(in_use(item), at_prompt=True)
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state(session.config).interrupted = exitstatus == pytest.ExitCode.INTERRUPTED


def _wait_for_user(config: pytest.Config, pool: Pool) -> None:
    lines = ["", "vmrig: the machines of the failed tests are still running (--vmrig-keep-failed):"]
    for topology in pool.kept:
        lines += _reach_lines([topology], at_prompt=False)
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
