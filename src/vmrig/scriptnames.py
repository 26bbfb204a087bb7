"""The names a test script may use, written down once.

The driver puts DRIVER_SYMBOLS into every script's namespace (as the NixOS
driver does), `vmrig check` accepts them, and spec rejects a node whose
machine variable would hide one of them. What a script may use on a machine
is read from the Machine class itself (public_attributes).
"""

from __future__ import annotations

import inspect

__all__ = ["DRIVER_SYMBOLS", "RESERVED_NAMES", "public_attributes"]

# Every script's globals besides its machines and vlans (see Driver.test_symbols).
DRIVER_SYMBOLS = (
    "start_all",
    "join_all",
    "test_script",
    "run_tests",
    "machines",
    "vlans",
    "driver",
    "network",
    "log",
    "os",
    "create_machine",
    "subtest",
    "retry",
    "serial_stdout_on",
    "serial_stdout_off",
    "polling_condition",
    "Machine",
    "t",
    "debug",
    # Names of newer NixOS drivers: every vmrig machine is a QEMU one.
    "machines_qemu",
    "machines_nspawn",
    "BaseMachine",
    "QemuMachine",
    "NspawnMachine",
    "dump_machine_ssh",
)

# A machine variable with one of these names would hide a driver global.
RESERVED_NAMES = frozenset(DRIVER_SYMBOLS)


def public_attributes(cls: type) -> frozenset[str]:
    """The names a script may use on an instance of `cls`.

    Its methods and properties (dir()), and the instance attributes it
    declares as class-level annotations (in it or its bases); names starting
    with "_" are private.
    """
    names = set(dir(cls))
    for klass in cls.__mro__:
        names.update(vars(klass).get("__annotations__", {}))
    return frozenset(name for name in names if not name.startswith("_"))


def method_keywords(cls: type) -> dict[str, frozenset[str] | None]:
    """Public method name -> the keyword arguments it accepts (None: any, it takes **kwargs)."""
    keywords: dict[str, frozenset[str] | None] = {}
    for name in public_attributes(cls):
        member = getattr(cls, name, None)
        if not inspect.isfunction(member):
            continue
        parameters = inspect.signature(member).parameters.values()
        if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
            keywords[name] = None
            continue
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        keywords[name] = frozenset(parameter.name for parameter in parameters if parameter.kind in named) - {"self"}
    return keywords
