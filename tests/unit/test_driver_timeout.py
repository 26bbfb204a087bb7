"""The driver without VMs: the global timeout against scripts that end in every way, start_all's threads."""

from __future__ import annotations

import io
import signal
import threading
import time
import types
from pathlib import Path

import pytest
from tests.conftest import write_test_file

from vmrig.driver import Driver
from vmrig.errors import MachineError
from vmrig.log import Logger
from vmrig.testfile import load_test_file

# The function script sees `driver`; it waits for the timeout to fire and then
# ends the way a guest command broken by the stopped VM ends: with an error,
# before the timer's interrupt reaches the main thread.
SCRIPT_FAILING_AFTER_THE_TIMEOUT = """
import time
from vmrig import Node
nodes = {"idle": Node()}

def test_script():
    while not driver.timed_out:
        time.sleep(0.001)
    raise ConnectionResetError("the VM went away")
"""

SCRIPT_SLEEPING_PAST_THE_TIMEOUT = """
import time
from vmrig import Node
nodes = {"idle": Node()}

def test_script():
    time.sleep(30)
"""


def _driver(tmp_path: Path, body: str, output: io.StringIO) -> Driver:
    spec = load_test_file(write_test_file(tmp_path, body))
    return Driver(spec, logger=Logger(output, color=False), out_dir=tmp_path, tmp_dir=tmp_path, global_timeout=0.3)


def test_an_error_racing_the_timeout_interrupt_is_reported_as_the_timeout(tmp_path: Path) -> None:
    output = io.StringIO()
    driver = _driver(tmp_path, SCRIPT_FAILING_AFTER_THE_TIMEOUT, output)
    assert driver.run_tests() is False
    # The interrupt was consumed by run_tests: nothing is left to hit the cleanup.
    time.sleep(0.5)
    assert "global timeout of 0.3 seconds reached" in output.getvalue()
    assert "ConnectionResetError" not in output.getvalue()


def test_the_timeout_interrupts_a_running_script(tmp_path: Path) -> None:
    output = io.StringIO()
    driver = _driver(tmp_path, SCRIPT_SLEEPING_PAST_THE_TIMEOUT, output)
    started = time.monotonic()
    assert driver.run_tests() is False
    assert time.monotonic() - started < 10
    assert "global timeout of 0.3 seconds reached" in output.getvalue()


class _Starting:
    """A machine whose start() meets the others' at a barrier: it returns only if they start side by side."""

    def __init__(self, barrier: threading.Barrier, error: Exception | None = None) -> None:
        self.booted = False
        self.config = types.SimpleNamespace(vlan_cards=[])  # on no vlan: no company to save with
        self.barrier = barrier
        self.error = error

    def start(self) -> None:
        self.barrier.wait(timeout=30)
        self.booted = True
        if self.error is not None:
            raise self.error


def test_start_all_starts_the_machines_side_by_side_and_raises_the_first_error(tmp_path: Path) -> None:
    driver = _driver(tmp_path, SCRIPT_SLEEPING_PAST_THE_TIMEOUT, io.StringIO())
    barrier = threading.Barrier(3)
    first, second = MachineError("a: no QEMU"), MachineError("c: no QEMU")
    machines = [_Starting(barrier, first), _Starting(barrier), _Starting(barrier, second)]
    driver.machines = machines  # type: ignore[assignment]
    with pytest.raises(MachineError) as raised:
        driver.start_all()
    assert raised.value is first
    assert all(machine.booted for machine in machines)
    driver.start_all()  # all booted: nothing to start, nothing raised


class _Interrupting:
    """A machine whose start() sends the main thread SIGINT (Ctrl-C) and goes on starting."""

    def __init__(self) -> None:
        self.booted = False
        self.config = types.SimpleNamespace(vlan_cards=[])

    def start(self) -> None:
        time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        time.sleep(0.3)
        self.booted = True


def test_ctrl_c_in_start_all_waits_for_the_starts_under_way(tmp_path: Path) -> None:
    driver = _driver(tmp_path, SCRIPT_SLEEPING_PAST_THE_TIMEOUT, io.StringIO())
    machines = [_Interrupting(), _Interrupting()]
    driver.machines = machines  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        driver.start_all()
    # The cleanup after the interrupt finds every machine that was starting.
    assert all(machine.booted for machine in machines)


def test_log_error_ends_the_script_with_status_1_and_says_so(tmp_path: Path) -> None:
    output = io.StringIO()
    script = 'from vmrig import Node\nnodes = {"idle": Node()}\ntest_script = """\nlog.error("no way on")\n"""\n'
    driver = _driver(tmp_path, script, output)
    with pytest.raises(SystemExit) as stop:
        driver.run_tests()
    assert stop.value.code == 1
    assert "no way on" in output.getvalue()
    assert "!!! the test script exited with status 1 (sys.exit() or log.error())" in output.getvalue()
    time.sleep(0.5)  # the global timeout's clock stopped with the script: no interrupt comes later
