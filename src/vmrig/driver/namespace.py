"""The script's globals: the NixOS driver's names (scriptnames.DRIVER_SYMBOLS), `t`, `retry`, machines, vlans."""

from __future__ import annotations

import contextlib
import os
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from vmrig.debug import Debugger
from vmrig.driver import nixmodules
from vmrig.errors import RequestedAssertionFailed, UsageError
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.net.faults import Network
from vmrig.net.vlan import VLan
from vmrig.scriptnames import DRIVER_SYMBOLS
from vmrig.spec import Node, python_name
from vmrig.timeouts import Duration, TimeoutScale


class AssertionTester(unittest.TestCase):
    """`t` in scripts: unittest's assert methods, failing like succeed() does."""

    failureException = RequestedAssertionFailed

    def runTest(self) -> None:  # noqa: N802 (unittest's name)
        pass


def retry(
    fn: Callable[[bool], bool],
    timeout: Duration | None = None,
    *,
    timeout_seconds: Duration | None = None,
    scale: TimeoutScale | None = None,
) -> None:
    """Calls fn(False) once a second until it returns True, then fn(True) once.

    The final call lets `fn` log why it still fails before the error is raised.
    `timeout` (NixOS 25.x) or `timeout_seconds` (newer NixOS): seconds or a
    timedelta, 900 by default, scaled under emulation. The clock starts after
    the first call, which may wait for a machine to boot: NixOS 25.x counts
    tries, so a boot inside the first one costs none of them.
    Raises RequestedAssertionFailed("action timed out after ...").
    """
    __tracebackhide__ = True
    if timeout is not None and timeout_seconds is not None:
        raise UsageError("retry(): give timeout= or timeout_seconds=, not both")
    given: Duration = timeout if timeout is not None else timeout_seconds if timeout_seconds is not None else 900
    scale = scale or TimeoutScale()
    if fn(False):
        return
    started = time.monotonic()
    limit = scale(given)
    deadline = started + limit
    while time.monotonic() < deadline:
        time.sleep(1)
        if fn(False):
            return
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - started:.2f} seconds (timeout={scale.note(given, limit)})"
        )


class ScriptHost(Protocol):
    """What the script sees of its driver (vmrig.driver.Driver)."""

    machines: list[Machine]
    vlans: list[VLan]
    network: Network
    logger: Logger
    debug: Debugger
    out_dir: Path

    @property
    def timeout_scale(self) -> TimeoutScale: ...

    def start_all(self) -> None: ...

    def join_all(self) -> None: ...

    def test_script(self) -> bool: ...

    def run_tests(self) -> bool: ...

    def create_machine(
        self,
        start_command: str | Node | dict[str, Any],
        *,
        name: str | None = None,
        keep_vm_state: bool = False,
        keep_machine_state: bool = False,
    ) -> Machine: ...

    def subtest(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def dump_machine_ssh(self) -> None: ...

    def serial_stdout_on(self) -> None: ...

    def serial_stdout_off(self) -> None: ...

    def polling_condition(
        self,
        fun_: Callable[[], Any] | None = None,
        *,
        seconds_interval: Duration = 2.0,
        description: str | None = None,
    ) -> Any: ...


class NspawnMachine:
    """The newest NixOS driver's container machine: vmrig has none, so no machine is one
    (`isinstance(m, NspawnMachine)` is False; `machines_nspawn` is empty)."""


def script_globals(driver: ScriptHost) -> dict[str, Any]:
    """Every global of the test script, one variable per machine and vlan included; logs the extra names."""

    def script_retry(
        fn: Callable[[bool], bool], timeout: Duration | None = None, *, timeout_seconds: Duration | None = None
    ) -> None:
        __tracebackhide__ = True
        retry(fn, timeout, timeout_seconds=timeout_seconds, scale=driver.timeout_scale)  # the scale of the moment

    nixmodules.install(script_retry, type(driver))  # `from test_driver.errors import ...` and the like
    namespace: dict[str, Any] = {
        "start_all": driver.start_all,
        "join_all": driver.join_all,
        "test_script": driver.test_script,
        "run_tests": driver.run_tests,
        "machines": driver.machines,
        "vlans": driver.vlans,
        "driver": driver,
        "network": driver.network,
        "log": driver.logger,
        "os": os,
        "create_machine": driver.create_machine,
        "subtest": driver.subtest,
        "retry": script_retry,
        "serial_stdout_on": driver.serial_stdout_on,
        "serial_stdout_off": driver.serial_stdout_off,
        "polling_condition": driver.polling_condition,
        "Machine": Machine,
        "t": AssertionTester(),
        "debug": driver.debug,
        "machines_qemu": driver.machines,
        "machines_nspawn": [],
        "BaseMachine": Machine,
        "QemuMachine": Machine,
        "NspawnMachine": NspawnMachine,
        "dump_machine_ssh": driver.dump_machine_ssh,
    }
    assert namespace.keys() == set(DRIVER_SYMBOLS), "the namespace differs from scriptnames.DRIVER_SYMBOLS"
    # NixOS scripts look for their output files under $out (the output directory).
    os.environ["out"] = str(driver.out_dir.resolve())  # noqa: SIM112 (NixOS's lower-case name)
    for machine in driver.machines:
        namespace[python_name(machine.name)] = machine
    if len(driver.machines) == 1:
        namespace["machine"] = driver.machines[0]
    for vlan in driver.vlans:
        namespace[f"vlan{vlan.nr}"] = vlan
    driver.logger.log(
        "additionally exposed symbols:\n    "
        + ", ".join(m.name for m in driver.machines)
        + (",\n    " + ", ".join(f"vlan{v.nr}" for v in driver.vlans) if driver.vlans else "")
        + ",\n    "
        + ", ".join(DRIVER_SYMBOLS)
    )
    return namespace
