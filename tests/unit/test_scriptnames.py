"""One list of the names a script may use: driver globals, and what a machine has."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.conftest import write_test_file

from vmrig.driver import Driver
from vmrig.errors import MachineError, PollingConditionError, QMPError, RequestedAssertionFailed, TestFileError
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig
from vmrig.scriptcheck import check_script
from vmrig.scriptnames import DRIVER_SYMBOLS, RESERVED_NAMES, public_attributes
from vmrig.spec import SpecError, check_node_name
from vmrig.testfile import load_test_file

TEST_FILE = '''
from vmrig import Node
nodes = {"node1": Node()}
test_script = """
SCRIPT
"""
'''


def driver_for(tmp_path: Path, script: str) -> Driver:
    spec = load_test_file(write_test_file(tmp_path, TEST_FILE.replace("SCRIPT", script)))
    return Driver(spec, logger=Logger(io.StringIO(), color=False), out_dir=tmp_path, tmp_dir=tmp_path)


def a_machine(tmp_path: Path) -> Machine:
    config = MachineConfig(name="node1", disk=tmp_path / "disk", kernel=tmp_path / "kernel", initrd=tmp_path / "initrd")
    return Machine(config, state_dir=tmp_path / "state", out_dir=tmp_path, logger=Logger(io.StringIO(), color=False))


def test_vmrig_check_accepts_boot_count_and_boot_hooks(tmp_path: Path) -> None:
    driver_for(tmp_path, "print(node1.boot_count); node1.boot_hooks").check_script()


def test_the_driver_checker_accepts_every_public_attribute_of_a_machine(tmp_path: Path) -> None:
    machine = a_machine(tmp_path)
    public = sorted(name for name in vars(machine) if not name.startswith("_"))
    assert {"boot_count", "boot_hooks", "interact_lock", "name", "config"} <= set(public)
    assert set(public) <= public_attributes(Machine)
    check_script(
        "\n".join(f"node1.{name}" for name in public),
        filename="case.py",
        first_line=1,
        known_names=DRIVER_SYMBOLS,
        machine_names=["node1"],
        machine_methods=public_attributes(Machine),
    )
    driver_for(tmp_path, "\n".join(f"print(node1.{name})" for name in public)).check_script()


def test_private_machine_names_are_not_offered(tmp_path: Path) -> None:
    with pytest.raises(TestFileError, match="has no attribute '_run_boot_hooks'"):
        driver_for(tmp_path, "node1._run_boot_hooks").check_script()
    with pytest.raises(TestFileError, match="did you mean 'boot_hooks'"):
        driver_for(tmp_path, "node1.boot_hook").check_script()


def test_public_attributes_reads_annotations_and_methods() -> None:
    class Base:
        inherited: int

        def method(self) -> None: ...

    class Child(Base):
        own: str
        _private: str

        @property
        def prop(self) -> int:
            return 1

        def _hidden(self) -> None: ...

    assert public_attributes(Child) == {"inherited", "method", "own", "prop"}


def test_the_namespace_has_exactly_the_driver_symbols(tmp_path: Path) -> None:
    namespace = driver_for(tmp_path, "start_all()").test_symbols()
    assert set(namespace) == set(DRIVER_SYMBOLS)  # setup() did not run: no machines, no vlans


def test_a_node_cannot_hide_a_driver_global() -> None:
    assert set(DRIVER_SYMBOLS) == RESERVED_NAMES
    for name in ("log", "network", "start-all"):
        with pytest.raises(SpecError):
            check_node_name(name)


def test_scripts_import_nixos_driver_modules_as_vmrigs(tmp_path: Path) -> None:
    driver = driver_for(tmp_path, "node1.qmp_client.send('query-status')")
    driver.check_script()  # qmp_client is a machine attribute
    namespace = driver.test_symbols()
    exec(  # noqa: S102 (what the driver does with a script)
        "from test_driver.machine.qmp import QMPAPIError\n"
        "from test_driver.qmp import QMPAPIError as OldQMPAPIError\n"
        "from test_driver.errors import RequestedAssertionFailed, MachineError, TestScriptError\n"
        "from test_driver.machine import QemuMachine, BaseMachine, retry as module_retry\n"
        "import test_driver.polling_condition\n"
        "from test_driver.driver import Driver\n",
        namespace,
    )
    assert namespace["QMPAPIError"] is namespace["OldQMPAPIError"] is QMPError
    assert namespace["RequestedAssertionFailed"] is RequestedAssertionFailed
    assert namespace["MachineError"] is MachineError
    assert issubclass(RequestedAssertionFailed, namespace["TestScriptError"])
    assert namespace["QemuMachine"] is namespace["BaseMachine"] is Machine
    assert namespace["module_retry"] is namespace["retry"]  # the run's, scaled like the global
    assert namespace["test_driver"].polling_condition.PollingConditionError is PollingConditionError
    assert namespace["Driver"] is Driver
    with pytest.raises(ImportError, match="NspawnMachine"):
        exec("from test_driver.machine import NspawnMachine", namespace)  # noqa: S102


def test_a_script_naming_the_exchange_directory_gets_it_mounted(tmp_path: Path) -> None:
    # With snapshots on, only such scripts pay for virtiofs (which a snapshot cannot hold).
    mounted = {
        script: driver_for(tmp_path, script).uses_exchange_dir()
        for script in ("node1.succeed('true')", "node1.succeed('ls /tmp/shared')", "print(node1.shared_dir)")
    }
    assert mounted == {
        "node1.succeed('true')": False,
        "node1.succeed('ls /tmp/shared')": True,
        "print(node1.shared_dir)": True,
    }


def test_shared_dir_without_the_exchange_directory_says_why(tmp_path: Path) -> None:
    with pytest.raises(MachineError, match="do not mount /tmp/shared.*--no-snapshots"):
        print(a_machine(tmp_path).shared_dir)
