"""NixOS's driver modules, for scripts that import from them.

NixOS test scripts run inside the NixOS driver's process, and some import
its names: `from test_driver.machine.qmp import QMPAPIError`,
`from test_driver.errors import RequestedAssertionFailed`,
`from test_driver.machine import QemuMachine` (for a type annotation).
`install()` makes those imports give vmrig's equivalents, so the scripts run
unchanged. Only names with a vmrig meaning are there; anything else fails
with Python's own ImportError, naming what is missing.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from vmrig.driver.polling import PollingCondition
from vmrig.errors import MachineError, PollingConditionError, QMPError, RequestedAssertionFailed, TestScriptError
from vmrig.log import Logger, LogLevel
from vmrig.machine import Machine
from vmrig.machine.keys import CHAR_TO_KEY
from vmrig.qmp import QMPSession

ROOT = "test_driver"


def _modules(retry: Any, driver_class: type) -> dict[str, dict[str, Any]]:
    """Module name -> its names. Both places NixOS has kept qmp.py in (test_driver/, test_driver/machine/)."""
    qmp = {"QMPAPIError": QMPError, "QMPSession": QMPSession}
    errors = {
        "MachineError": MachineError,
        "RequestedAssertionFailed": RequestedAssertionFailed,
        "TestScriptError": TestScriptError,
    }
    return {
        ROOT: {},
        f"{ROOT}.errors": errors,
        f"{ROOT}.machine": {
            "Machine": Machine,
            "BaseMachine": Machine,
            "QemuMachine": Machine,
            "CHAR_TO_KEY": CHAR_TO_KEY,
            "retry": retry,
            **errors,
        },
        f"{ROOT}.machine.qmp": qmp,
        f"{ROOT}.qmp": qmp,
        f"{ROOT}.polling_condition": {
            "PollingCondition": PollingCondition,
            "PollingConditionError": PollingConditionError,
        },
        f"{ROOT}.driver": {"Driver": driver_class},
        f"{ROOT}.logger": {"LogLevel": LogLevel, "AbstractLogger": Logger, "CompositeLogger": Logger},
    }


def install(retry: Any, driver_class: type) -> None:
    """Puts the `test_driver` modules into sys.modules (again on every call: `retry` is the run's own)."""
    modules = _modules(retry, driver_class)
    for name, names in modules.items():
        module = types.ModuleType(name, f"vmrig's stand-in for NixOS's {name}")
        module.__dict__.update(names)
        if any(other.startswith(f"{name}.") for other in modules):
            module.__path__ = []  # a package, so that its submodules import
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
