"""vmrig: integration tests in real QEMU virtual machines, NixOS-test style, for Debian."""

from vmrig.spec import (
    X11,
    EmptyDisk,
    File,
    Firewall,
    FirewallPorts,
    Interactive,
    Node,
    Options,
    Service,
    SharedDirectory,
    SpecError,
    User,
)

__all__ = [
    "X11",
    "EmptyDisk",
    "File",
    "Firewall",
    "FirewallPorts",
    "Interactive",
    "Node",
    "Options",
    "Service",
    "SharedDirectory",
    "SpecError",
    "User",
]
