"""Running a test: the Driver, and what it is made of.

assemble (nodes to MachineConfigs), namespace (the script's globals),
nixmodules (NixOS's test_driver modules for scripts that import them),
polling (polling conditions), report (how a failure is shown), driver (the
Driver: setup, run, global timeout, cleanup).
"""

from vmrig.driver.driver import Driver

__all__ = ["Driver"]
