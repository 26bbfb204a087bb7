"""The host's address for everything vmrig listens on or forwards: the loopback interface.

Forwarded guest ports, the SSH backdoor's TCP port and the remote debugger
listen there only, so nothing of a test run is reachable from other hosts.
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "VNC_BASE_PORT", "free_port", "free_vnc_display"]

LOOPBACK = "127.0.0.1"
# VNC's display N listens on TCP port 5900 + N.
VNC_BASE_PORT = 5900


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on the loopback address that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def free_vnc_display(taken: frozenset[int] | set[int] = frozenset()) -> int:
    """The first VNC display number (port 5900 + N, N < 100) free on the loopback address
    and not in `taken`. Raises OSError when all 100 are in use."""
    for display in range(100):
        if display not in taken and _free(VNC_BASE_PORT + display):
            return display
    raise OSError("no free VNC display on 127.0.0.1 (ports 5900-5999 are all in use)")
