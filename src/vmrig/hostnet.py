"""The host's address for everything vmrig listens on or forwards: the loopback interface.

Forwarded guest ports, the SSH backdoor's TCP port and the remote debugger
listen there only, so nothing of a test run is reachable from other hosts.
"""

from __future__ import annotations

__all__ = ["LOOPBACK"]

LOOPBACK = "127.0.0.1"
