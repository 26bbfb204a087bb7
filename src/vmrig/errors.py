"""vmrig's exceptions, in one tree.

    VmrigError                      anything vmrig itself reports
    ├── UsageError                  bad command line or environment (exit 2)
    ├── ArgumentError               (also a ValueError) a script called a vmrig
    │                               function with an impossible argument:
    │                               block(vlan=9) on a machine not on vlan 9,
    │                               network.link(...).set(loss="200%")
    ├── TestFileError               a test file that cannot run: syntax error,
    │   │                           unknown node field, unknown machine name;
    │   │                           carries the file and line
    │   └── SpecError               (in spec.py) a Node, Service, File, User or
    │                               Options value that cannot be right; the
    │                               test-file loader adds the file and line
    ├── HostToolMissing             a program vmrig needs is not installed;
    │                               names the Debian package that provides it
    ├── HostCommandFailed           a host command exited with a failure status
    │                               (raised by proc.run; exit 2); carries the
    │                               argv, the exit status and its stderr's tail
    ├── ImageBuildError             mmdebstrap, apt or a node's build commands
    │   │                           failed; carries their message
    │   └── UnknownPackageError     apt has no such package; the driver
    │                               reports it as a TestFileError at the
    │                               package's line (exit 2)
    └── MachineError                a VM broke: QEMU died, the backdoor never
        │                           came up, QMP failed; names the node
        └── QMPError                QEMU refused a QMP command (NixOS's
                                    QMPAPIError, with class_name and
                                    description)

    TestScriptError                 the newest NixOS driver's name for what
    │                               follows (scripts catch it)
    ├── RequestedAssertionFailed    (an AssertionError) the test script's
    │                               check failed: succeed(), fail(), every
    │                               wait_*, t.assert*(); this is a failed
    │                               test, not a broken tool
    └── PollingConditionError       a polling_condition stopped holding

    Terminated                      (a SystemExit) the driver got SIGTERM or
                                    SIGHUP; it unwinds through the cleanup
                                    that stops every VM, exit 128 + signal

The names `MachineError` and `RequestedAssertionFailed` match the NixOS test
driver's, so scripts that catch them keep working; scripts that import them
from NixOS's modules (`from test_driver.errors import ...`) get these
(vmrig.driver.nixmodules). `did_you_mean` is the hint
that errors about an unknown name end with.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path


class VmrigError(Exception):
    """Base of everything vmrig raises on purpose (but a failed assertion)."""


class UsageError(VmrigError):
    """The command line or the environment asks for something impossible."""


class ArgumentError(VmrigError, ValueError):
    """A script passed a vmrig function an argument it cannot take; says which and why."""


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


class HostCommandFailed(VmrigError):
    """A host command failed; `argv`, `status` and `stderr_tail` say which, how and why.

    `stdout` and `stderr` hold all the command wrote, for callers that look
    for a known message in it.
    """

    TAIL_LINES = 20

    def __init__(self, argv: Sequence[str], status: int, *, stderr: bytes = b"", stdout: bytes = b"") -> None:
        self.argv = list(argv)
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        lines = stderr.decode(errors="replace").rstrip().splitlines()
        self.stderr_tail = "\n".join(lines[-self.TAIL_LINES :])
        super().__init__(str(self))

    def __str__(self) -> str:
        message = f"command failed (exit status {self.status}): {shlex.join(self.argv)}"
        return f"{message}\n{self.stderr_tail}" if self.stderr_tail else message


class ImageBuildError(VmrigError):
    """Building a node image failed because of what goes into it (suite, mirror, packages, build commands).

    The HostCommandFailed of mmdebstrap or apt is its cause. A failure of the
    host tools around them (cp, mkfs.ext4, qemu-img) stays a HostCommandFailed.
    """


class UnknownPackageError(ImageBuildError):
    """apt could not find `packages` (names as the node gave them) in the suite."""

    def __init__(self, message: str, packages: list[str]) -> None:
        super().__init__(message)
        self.packages = packages


class MachineError(VmrigError):
    """A virtual machine failed (as opposed to a test assertion)."""


class QMPError(MachineError, RuntimeError):
    """QEMU answered a QMP command with an error.

    `class_name` and `description` are QEMU's "class" and "desc" (as on
    NixOS's QMPAPIError, which scripts import under that name, and which is a
    RuntimeError too);
    `transaction_id` is the id the script gave, always None: scripts give none.
    """

    def __init__(self, message: str, class_name: str = "GenericError", description: str = "") -> None:
        super().__init__(message)
        self.class_name = class_name
        self.description = description
        self.transaction_id: str | None = None


class TestScriptError(Exception):
    """The newest NixOS driver's base of the script's own failures; scripts may catch it."""

    __test__ = False  # not a pytest test class


class RequestedAssertionFailed(TestScriptError, AssertionError):
    """A check in the test script failed."""


class PollingConditionError(TestScriptError):
    """A polling condition was found false while it was active (not an AssertionError, as in NixOS)."""


class Terminated(SystemExit):
    """The driver was told to stop by a signal; `signal_name` (SIGTERM) names it."""

    def __init__(self, signum: int, signal_name: str) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal_name


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """The suffix "; did you mean 'x'?" with the candidate closest to `word`, or "" if none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
