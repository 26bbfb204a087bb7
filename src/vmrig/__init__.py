"""vmrig: integration tests in real QEMU virtual machines, NixOS-test style, for Debian."""

from vmrig.spec import File, Interactive, Node, Options, Service, SharedDirectory, SpecError, User

__all__ = ["File", "Interactive", "Node", "Options", "Service", "SharedDirectory", "SpecError", "User"]
