"""The environment variables vmrig reads, as one value that the edges (cli, driver, pytest plugin) make once.

Everything below the driver takes the values it needs as arguments (the
cache directory, the forced accelerator, the host's TERM, ...) and reads no
environment variable itself, but for `NO_COLOR` (`log`) and Python's own
`PYTHONBREAKPOINT` and `REMOTE_PDB_PORT` (`debug`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunEnvironment:
    """What the environment says about a run; values are kept as given where a lower layer checks them."""

    cache_dir: Path  # VMRIG_CACHE_DIR, else $XDG_CACHE_HOME/vmrig, else ~/.cache/vmrig: the image cache
    tmp_dir: Path = Path("/tmp")  # TMPDIR: where runs keep their state and sockets
    accel: str = ""  # VMRIG_ACCEL: "kvm" or "tcg" forces one (accel.choose checks it); "": probe
    timeout_factor: str | None = None  # VMRIG_TIMEOUT_FACTOR (TimeoutScale.choose checks it)
    connect_timeout: str = "300"  # VMRIG_CONNECT_TIMEOUT: seconds the backdoor may take to come up
    qemu_options: str = ""  # QEMU_OPTS: options added to each machine's QEMU command line (shell words)
    qemu_net_options: str = ""  # QEMU_NET_OPTS: added to each machine's -netdev user
    graphical_session: bool = False  # DISPLAY or WAYLAND_DISPLAY: a QEMU window can be shown
    term: str = ""  # TERM: the host terminal's type, for shell_interact() on it
    # PYTEST_XDIST_WORKER_COUNT: runs on this host at once (pytest-xdist's workers, and the
    # `vmrig run` their tests start), which share its CPUs among their nodes (spec.default_cores)
    parallel_runs: int = 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RunEnvironment:
        """The settings in `environ` (os.environ, at an edge)."""
        return cls(
            cache_dir=cache_dir(environ),
            tmp_dir=Path(environ.get("TMPDIR") or "/tmp"),
            accel=environ.get("VMRIG_ACCEL", ""),
            timeout_factor=environ.get("VMRIG_TIMEOUT_FACTOR"),
            connect_timeout=environ.get("VMRIG_CONNECT_TIMEOUT", "300"),
            qemu_options=environ.get("QEMU_OPTS", ""),
            qemu_net_options=environ.get("QEMU_NET_OPTS", ""),
            graphical_session=bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")),
            term=environ.get("TERM", ""),
            parallel_runs=_positive(environ.get("PYTEST_XDIST_WORKER_COUNT")),
        )


def _positive(value: str | None) -> int:
    """A count from the environment: a positive integer, else 1."""
    try:
        return max(1, int(value or "1"))
    except ValueError:
        return 1


def cache_dir(environ: Mapping[str, str]) -> Path:
    """Where the image cache is: VMRIG_CACHE_DIR, else $XDG_CACHE_HOME/vmrig, else ~/.cache/vmrig."""
    base = environ.get("VMRIG_CACHE_DIR")
    if base:
        return Path(base)
    xdg = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vmrig"
