"""vmrig's exceptions, in one tree.

    VmrigError                      anything vmrig itself reports
    ├── UsageError                  bad command line or environment (exit 2)
    ├── TestFileError               a test file that cannot run: syntax error,
    │                               unknown node field, unknown machine name;
    │                               carries the file and line
    ├── HostToolMissing             a program vmrig needs is not installed;
    │                               names the Debian package that provides it
    ├── ImageBuildError             mmdebstrap or apt failed; carries their message
    └── MachineError                a VM broke: QEMU died, the backdoor never
        │                           came up, QMP failed; names the node
        └── QMPError                QEMU refused a QMP command

    RequestedAssertionFailed        (an AssertionError) the test script's
    │                               check failed: succeed(), fail(), every
    │                               wait_*, t.assert*(); this is a failed
    │                               test, not a broken tool
    └── PollingConditionError       a polling_condition stopped holding

The names `MachineError` and `RequestedAssertionFailed` match the NixOS test
driver's, so scripts that catch them keep working. `did_you_mean` is the hint
that errors about an unknown name end with.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class VmrigError(Exception):
    """Base of everything vmrig raises on purpose (but a failed assertion)."""


class UsageError(VmrigError):
    """The command line or the environment asks for something impossible."""


class TestFileError(VmrigError):
    """A test file that cannot run; `path` and `line` say where."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.message}"


class HostToolMissing(VmrigError):
    """A host program is missing; says which Debian package provides it."""

    def __init__(self, tool: str, package: str) -> None:
        self.tool = tool
        self.package = package
        super().__init__(f"'{tool}' is not installed; install it with: apt-get install {package}")


class ImageBuildError(VmrigError):
    """Building a node image failed."""


class MachineError(VmrigError):
    """A virtual machine failed (as opposed to a test assertion)."""


class QMPError(MachineError):
    """QEMU answered a QMP command with an error."""


class RequestedAssertionFailed(AssertionError):
    """A check in the test script failed."""


class PollingConditionError(RequestedAssertionFailed):
    """A polling condition was found false while it was active."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """The suffix "; did you mean 'x'?" with the candidate closest to `word`, or "" if none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
