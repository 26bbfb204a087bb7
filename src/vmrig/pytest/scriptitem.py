"""vmrig test files (`nodes` + `test_script`) as pytest items: one item per file, its subtests reported as they end."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from vmrig.driver import Driver
from vmrig.driver.report import format_error
from vmrig.errors import VmrigError
from vmrig.log import Logger
from vmrig.pytest import session
from vmrig.pytest.topology import Lease, Running, Settings, lease_of
from vmrig.pytest.workers import WorkerSpace
from vmrig.testfile import TestSpec, load_test_file


class ScriptFailed(Exception):
    """The test script failed; its text is what `vmrig run` prints for the failure."""


class TestFile(pytest.File):
    """A vmrig test file: loaded (and so checked) at collection, one item."""

    __test__ = False

    def collect(self) -> Iterator[pytest.Item]:
        try:
            spec = load_test_file(self.path)
            # Script mistakes (syntax, unknown names) are collection errors, as in `vmrig check`.
            environment = session.state(self.config).settings.environment
            Driver(
                spec, logger=Logger(stream=io.StringIO()), out_dir=Path.cwd(), environment=environment
            ).check_script()
        except VmrigError as error:
            raise self.CollectError(str(error)) from None
        # "::" separates pytest's node id parts: a name with it could not be selected.
        yield TestScript.from_parent(self, name=spec.name.replace("::", ":"), spec=spec)


class TestScript(pytest.Item):
    """Runs a test file's script as `vmrig run` does; the machines stay up until teardown (for --pdb)."""

    __test__ = False

    def __init__(self, *, spec: TestSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.driver: Driver | None = None
        self.add_marker("vmrig")

    def setup(self) -> None:
        state = session.state(self.config)
        settings: Settings = state.settings
        space: WorkerSpace = state.space
        tmp_dir, offset = space.topology()
        spec = self.spec
        # The plugin picks the vsock CIDs (unique per process and topology) over Options.vsock_offset.
        options = dataclasses.replace(
            spec.options, vsock_offset=offset, ssh_backdoor=spec.options.ssh_backdoor or settings.ssh_backdoor
        )
        spec = dataclasses.replace(spec, options=options)
        out_dir = session.output_of(self.config, self.nodeid)  # made when something is saved there
        self.driver = settings.driver(spec, out_dir=out_dir, tmp_dir=tmp_dir)
        self.driver.subtest_listeners.append(self._subtest_ended)
        lease_of(self).topologies.append(Running(self.driver, tmp_dir, spec.name))
        self.driver.setup()

    def runtest(self) -> None:
        assert self.driver is not None
        if self.driver.run_tests():
            return
        if self.driver.timed_out:
            raise ScriptFailed(f"global timeout of {self.driver.global_timeout:g} seconds reached")
        error = self.driver.failure
        # At a --pdb prompt in this frame, the machines by node name (the hint names them so).
        machines = {machine.name: machine for machine in self.driver.all_machines()}  # noqa: F841
        raise ScriptFailed(format_error(error, self.spec.script_path) if error is not None else "the script failed")

    def teardown(self) -> None:
        if self.driver is not None and not session.keeps(self):
            self.driver.cleanup()
            self.driver = None

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, ScriptFailed):
            return str(excinfo.value)
        if isinstance(excinfo.value, VmrigError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.spec.script_first_line - 1, f"vmrig test {self.spec.name}"

    def _subtest_ended(self, name: str, started: float, seconds: float, error: BaseException | None) -> None:
        """Reports a subtest as pytest's own subtests do (pytest 9), SUBPASSED or SUBFAILED."""
        try:
            from _pytest.subtests import SubtestContext, SubtestReport
        except ImportError:  # pytest before 9: the captured log still shows each subtest
            return
        excinfo: ExceptionInfo[BaseException] | None = None
        if error is not None:
            try:  # raised, so that it has the traceback pytest's report wants
                raise ScriptFailed(format_error(error, self.spec.script_path))
            except ScriptFailed as failure:
                excinfo = ExceptionInfo.from_exception(failure)
        call = pytest.CallInfo[None](
            None, excinfo, start=started, stop=started + seconds, duration=seconds, when="call", _ispytest=True
        )
        report = pytest.TestReport.from_item_and_call(self, call)
        subtest_report = SubtestReport._new(report, SubtestContext(msg=name, kwargs={}), None, None)
        # The item's own report has the whole time; a subtest's counted again would double it
        # in pytest-split's stored durations.
        subtest_report.duration = 0.0
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                self.ihook.pytest_runtest_logreport(report=subtest_report)
        else:
            self.ihook.pytest_runtest_logreport(report=subtest_report)


__all__ = ["Lease", "ScriptFailed", "TestFile", "TestScript"]
