"""The test-file vocabulary: nodes, services, files, users and test options.

Plain dataclasses that check every field when they are built, so that a typo
or a wrong type in a test file is reported before any image is built or any VM
boots. Nothing here knows about QEMU; of the images it knows only which Node
fields make up a package layer (Node.image_inputs, part of that layer's key).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import keyword
import posixpath
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, dataclass_transform, get_args, get_origin, get_type_hints

from vmrig.contract import GUEST_DIR
from vmrig.errors import TestFileError, did_you_mean
from vmrig.netcard import interface_name
from vmrig.scriptnames import RESERVED_NAMES

__all__ = [
    "RESERVED_NAMES",
    "File",
    "Interactive",
    "Node",
    "Options",
    "Service",
    "SharedDirectory",
    "SpecError",
    "User",
    "X11",
    "check_node_name",
    "merge_interactive",
    "python_name",
]


class SpecError(TestFileError):
    """A node, service, file, user or option that cannot be right.

    Raised without a path or line; the test-file loader fills them in.
    """


SERVICE_TYPES = ("simple", "exec", "forking", "oneshot", "notify", "dbus", "idle")
RESTART_VALUES = ("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always")
# MiB: Node.disk_size's default, and the least size of an image's file system.
DEFAULT_DISK_MIB = 4096
# The root disk's virtio serial (/dev/disk/by-id/virtio-root), NixOS's rootDriveSerialAttr.
ROOT_DISK_SERIAL = "root"
# Node.empty_disks: each is a PCI device, and the root bus has 32 slots.
MAX_EMPTY_DISKS = 16
# What a node with a TPM gets: tpm2-tools and, through it, the TSS libraries that
# systemd-creds and systemd-cryptenroll load (without them: "TPM device not usable").
# NixOS's systemd has them; Debian's systemd only recommends them.
TPM_PACKAGE = "tpm2-tools"
# The largest empty disk, in MiB (16 TiB; qcow2 itself allows 64 TiB).
MAX_EMPTY_DISK_MIB = 16 * 1024 * 1024
# PCI slots the node's own devices may take together (vlan cards, empty disks,
# shared directories): QEMU's pc machine has 32, and the host bridge, the ISA
# bridge and vmrig's devices (root disk, console, RNG, user network, display,
# vsock, the exchange directory) take up to 8 of them.
NODE_PCI_SLOTS = 24
SUITES = ("bookworm", "trixie", "forky", "sid", "testing", "stable", "oldstable", "unstable")
UNIT_TYPES = (
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
)

_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+")
_DISK_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,20}")
# Debian policy 5.6.1 for the name; apt's `pkg=version` and `pkg/suite` forms.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:_-]+|/[A-Za-z0-9.-]+)?")
# What NixOS accepts as a host name (networking.hostName): letters, digits, '-' and '_'.
_NODE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?")
_NODE_NAME_MAX = 30
# adduser's default NAME_REGEX.
_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]*\$?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 -]*")
_UNIT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SECTION_HEADER = re.compile(r"^\s*\[[^\]\n]+\]\s*$", re.MULTILINE)
_VLAN_SYMBOL = re.compile(r"vlan[0-9]+")
# A network interface name (at most 15 bytes, IFNAMSIZ) or a prefix with `*`, as nft's iifname takes it.
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}[*+]?")
# Where every machine sees the run's exchange directory (as in NixOS tests).
EXCHANGE_GUEST_PATH = "/tmp/shared"
# Guest directories a share must not hide: the system itself, and the
# directories the driver's shell and the exchange directory live in.
_UNSHAREABLE = frozenset(
    {"/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var"}
)


def python_name(node_name: str) -> str:
    """The variable a machine gets in the test script (`machine-a` -> `machine_a`), as in NixOS."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", node_name)


def check_node_name(name: object) -> None:
    """Raise SpecError unless `name` can name a node (hostname and script variable alike)."""
    if not isinstance(name, str):
        raise SpecError(f"node names must be str, got {_show(name)}")
    if not _NODE_NAME.fullmatch(name):
        raise SpecError(
            f"invalid node name {name!r}: use letters, digits, '-' and '_', starting and ending with a letter or digit"
        )
    if len(name) > _NODE_NAME_MAX:
        raise SpecError(f"invalid node name {name!r}: longer than {_NODE_NAME_MAX} characters")
    variable = python_name(name)
    if variable in RESERVED_NAMES or _VLAN_SYMBOL.fullmatch(variable):
        raise SpecError(f"invalid node name {name!r}: '{variable}' is already a test-script global")
    if keyword.iskeyword(variable) or keyword.issoftkeyword(variable):
        raise SpecError(f"invalid node name {name!r}: '{variable}' is a Python keyword")


# ---------------------------------------------------------------------------
# Type checking of fields


def _show(value: object) -> str:
    """`str 'curl'`: the type and a short repr, for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if tp is object:
        return "any value"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        names = [_type_name(arm) for arm in get_args(tp)]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if origin is list:
        (item,) = get_args(tp)
        return f"a list of {_type_name(item)}"
    if origin is dict:
        key, value = get_args(tp)
        return f"a dict of {_type_name(key)} to {_type_name(value)}"
    if origin is tuple:
        return "a (" + ", ".join(_type_name(arm) for arm in get_args(tp)) + ") pair"
    return str(getattr(tp, "__name__", tp))


def _matches(value: object, tp: Any) -> bool:
    try:
        _conform(value, tp, "")
    except SpecError:
        return False
    return True


def _conform(value: object, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it normalised.

    Lists and dicts are copied (so that nodes built from a shared base do not
    share mutable state), tuples are accepted where a list is expected, lists
    of two where a pair is expected, and ints where a float is.
    """

    def wrong() -> SpecError:
        return SpecError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")

    if tp is object:
        return value
    if tp is type(None):
        if value is not None:
            raise wrong()
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arm in get_args(tp):
            if _matches(value, arm):
                return _conform(value, arm, where)
        # An error about the element that failed says more than "expected X or Y".
        containers = [arm for arm in get_args(tp) if get_origin(arm) in (list, dict, tuple)]
        if len(containers) == 1 and isinstance(value, _container_class(containers[0])):
            return _conform(value, containers[0], where)
        raise wrong()
    if origin is list:
        if not isinstance(value, list | tuple):
            raise wrong()
        (item,) = get_args(tp)
        return [_conform(element, item, f"{where}[{index}]") for index, element in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        key_type, value_type = get_args(tp)
        result = {}
        for key, element in value.items():
            _conform(key, key_type, f"{where} key {key!r}")
            result[key] = _conform(element, value_type, f"{where}[{key!r}]")
        return result
    if origin is tuple:
        arms = get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(arms):
            raise wrong()
        return tuple(
            _conform(element, arm, f"{where}[{i}]") for i, (element, arm) in enumerate(zip(value, arms, strict=True))
        )
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if tp is int and isinstance(value, bool):
        raise wrong()  # True is an int to Python, but never a port or a size
    if not isinstance(value, tp):
        raise wrong()
    return value


def _container_class(tp: Any) -> type:
    origin = get_origin(tp)
    if origin is dict:
        return dict
    return list if origin is list else tuple


# ---------------------------------------------------------------------------
# Construction: keyword arguments only, unknown names with a suggestion


_Spec = TypeVar("_Spec")


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
def _spec_class(cls: type[_Spec]) -> type[_Spec]:
    """Make `cls` a keyword-only dataclass whose constructor reports mistakes as SpecError."""
    cls = dataclass(kw_only=True)(cls)
    generated: Callable[..., None] = cls.__init__
    init_fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = [f.name for f in init_fields]
    required = [
        f.name for f in init_fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    class_name = cls.__name__

    @functools.wraps(generated)
    def __init__(self: object, *args: object, **kwargs: object) -> None:  # noqa: N807
        if args:
            raise SpecError(f"{class_name} takes keyword arguments only, e.g. {class_name}({names[0]}=...)")
        for key in kwargs:
            if key not in names:
                raise SpecError(f"{class_name} has no field {key!r}{did_you_mean(key, names)}")
        for key in required:
            if key not in kwargs:
                raise SpecError(f"{class_name}.{key} is required")
        generated(self, **kwargs)

    setattr(cls, "__init__", __init__)  # noqa: B010 (mypy rejects assigning to a method)
    return cls


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _check_fields(instance: object) -> None:
    """Type-check and normalise every field of a spec dataclass in place."""
    cls = type(instance)
    hints = _hints(cls)
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        value = _conform(getattr(instance, f.name), hints[f.name], f"{cls.__name__}.{f.name}")
        object.__setattr__(instance, f.name, value)


def _single_line(value: str, where: str) -> None:
    if "\n" in value or "\r" in value:
        raise SpecError(f"{where}: must be a single line, got {value!r}")


def _non_empty(value: str, where: str) -> None:
    if not value.strip():
        raise SpecError(f"{where}: must not be empty")


def _absolute_path(path: str, where: str) -> None:
    if not path.startswith("/"):
        raise SpecError(f"{where}: path {path!r} must be absolute")
    if "\0" in path:
        raise SpecError(f"{where}: path {path!r} contains a NUL byte")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = normal[1:]  # POSIX keeps a leading '//', the guest does not care
    if normal == "/" or normal != path:
        raise SpecError(f"{where}: path {path!r} must name a file, written plainly (like {normal!r})")


def _unit_name(name: str, where: str) -> None:
    if not _UNIT_NAME.fullmatch(name):
        raise SpecError(f"{where}: invalid unit name {name!r} (allowed: letters, digits and ':_.@-')")


def _account_name(name: str, where: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(name) or len(name) > 32:
        raise SpecError(
            f"{where}: invalid name {name!r}: use lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_'"
        )


def _in_range(value: int, low: int, high: int | None, where: str) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SpecError(f"{where}: must be {bound}, got {value}")


def _choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


# ---------------------------------------------------------------------------
# The vocabulary


@_spec_class
class Service:
    """A systemd service, rendered to a unit file by `unit_text()`.

    `exec_start`, `exec_start_pre`, `exec_stop` and `extra` values are written
    as they are, so systemd's own syntax (specifiers such as `%i`, `$VAR`) works
    in them; `description` and `environment` are plain text and get escaped.
    """

    exec_start: str
    description: str = ""
    type: str = "simple"
    exec_start_pre: list[str] = field(default_factory=list)
    exec_stop: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    group: str | None = None
    working_directory: str | None = None
    restart: str = "no"
    after: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    wants: list[str] = field(default_factory=list)
    wanted_by: list[str] = field(default_factory=lambda: ["multi-user.target"])
    remain_after_exit: bool = False
    extra: dict[str, dict[str, str]] = field(default_factory=dict)
    enable: bool = True

    def __post_init__(self) -> None:
        _check_fields(self)
        _non_empty(self.exec_start, "Service.exec_start")
        _choice(self.type, SERVICE_TYPES, "Service.type")
        _choice(self.restart, RESTART_VALUES, "Service.restart")
        single_line = {
            "exec_start": self.exec_start,
            "description": self.description,
            "exec_stop": self.exec_stop,
            "user": self.user,
            "group": self.group,
            "working_directory": self.working_directory,
        }
        for name, value in single_line.items():
            if value is not None:
                _single_line(value, f"Service.{name}")
        for index, command in enumerate(self.exec_start_pre):
            _single_line(command, f"Service.exec_start_pre[{index}]")
        for name in ("user", "group", "working_directory", "exec_stop"):
            value = getattr(self, name)
            if value is not None:
                _non_empty(value, f"Service.{name}")
        for key in self.environment:
            if not _ENV_NAME.fullmatch(key):
                raise SpecError(f"Service.environment: invalid variable name {key!r}")
        for name in ("after", "requires", "wants", "wanted_by"):
            for unit in getattr(self, name):
                _unit_name(unit, f"Service.{name}")
        for section, entries in self.extra.items():
            if not _SECTION_NAME.fullmatch(section):
                raise SpecError(f"Service.extra: invalid section name {section!r}")
            for key, value in entries.items():
                if not _UNIT_KEY.fullmatch(key):
                    raise SpecError(f"Service.extra[{section!r}]: invalid key {key!r}")
                _single_line(value, f"Service.extra[{section!r}][{key!r}]")

    def unit_text(self) -> str:
        """The complete unit file."""
        sections: dict[str, list[tuple[str, str]]] = {"Unit": [], "Service": [], "Install": []}
        unit = sections["Unit"]
        if self.description:
            unit.append(("Description", _escape_specifiers(self.description)))
        for key, units in (("After", self.after), ("Requires", self.requires), ("Wants", self.wants)):
            if units:
                unit.append((key, " ".join(units)))

        service = sections["Service"]
        service.append(("Type", self.type))
        service.extend(("ExecStartPre", command) for command in self.exec_start_pre)
        service.append(("ExecStart", self.exec_start))
        if self.exec_stop is not None:
            service.append(("ExecStop", self.exec_stop))
        for key, value in self.environment.items():
            service.append(("Environment", _quote_environment(key, value)))
        if self.user is not None:
            service.append(("User", self.user))
        if self.group is not None:
            service.append(("Group", self.group))
        if self.working_directory is not None:
            service.append(("WorkingDirectory", self.working_directory))
        if self.restart != "no":
            service.append(("Restart", self.restart))
        if self.remain_after_exit:
            service.append(("RemainAfterExit", "yes"))

        if self.wanted_by:
            sections["Install"].append(("WantedBy", " ".join(self.wanted_by)))

        for section, entries in self.extra.items():
            lines = sections.setdefault(section, [])
            for key, value in entries.items():
                _set_unit_key(lines, key, value)

        blocks = []
        for section, lines in sections.items():
            if lines:
                body = "".join(f"{key}={value}\n" for key, value in lines)
                blocks.append(f"[{section}]\n{body}")
        return "\n".join(blocks)


def _set_unit_key(lines: list[tuple[str, str]], key: str, value: str) -> None:
    """Replace every `key=` line by one `key=value` at the first one's place, or append it."""
    positions = [i for i, (existing, _) in enumerate(lines) if existing == key]
    if not positions:
        lines.append((key, value))
        return
    lines[positions[0]] = (key, value)
    for i in reversed(positions[1:]):
        del lines[i]


def _escape_specifiers(text: str) -> str:
    return text.replace("%", "%%")


def _quote_environment(key: str, value: str) -> str:
    """`"KEY=value"` as systemd reads it: C escapes are decoded and `%` starts a specifier."""
    text = f"{key}={value}"
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"' + _escape_specifiers(text) + '"'


@_spec_class
class File:
    """A file placed into the guest."""

    content: str | bytes
    mode: int = 0o644
    # None: root, or for a file under a user's home that user (and their group); see Node.file_owner.
    owner: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        if not 0 <= self.mode <= 0o7777:
            raise SpecError(f"File.mode: must be between 0o0 and 0o7777, got {oct(self.mode)}")
        for name in ("owner", "group"):
            value: str | None = getattr(self, name)
            if value is not None and not value.isdigit():
                _account_name(value, f"File.{name}")


@_spec_class
class User:
    """A user account; the name is its key in `Node.users`."""

    uid: int | None = None
    groups: list[str] = field(default_factory=list)
    home: str | None = None
    shell: str = "/bin/bash"
    system: bool = False
    password: str | None = None  # None: no password; "": an empty password that logs in

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.uid is not None:
            _in_range(self.uid, 1, 65533, "User.uid")  # 0 is root, 65534 nobody
        for group in self.groups:
            _account_name(group, "User.groups")
        if self.home is not None:
            _absolute_path(self.home, "User.home")
        if not self.shell.startswith("/"):
            raise SpecError(f"User.shell: {self.shell!r} must be an absolute path")
        if self.password is not None:
            _single_line(self.password, "User.password")

    def home_directory(self, name: str) -> str:
        """`home`, or `/home/<name>` when unset."""
        return self.home if self.home is not None else f"/home/{name}"


@_spec_class
class SharedDirectory:
    """A host directory shared into a node (a value of `Node.shared_directories`).

    `source` is the host directory (relative paths are relative to the test
    file's directory); with `read_only`, the guest cannot change it, not even
    as root.
    """

    source: str
    read_only: bool = False

    def __post_init__(self) -> None:
        _check_fields(self)
        _non_empty(self.source, "SharedDirectory.source")
        _single_line(self.source, "SharedDirectory.source")
        if "\0" in self.source:
            raise SpecError(f"SharedDirectory.source: path {self.source!r} contains a NUL byte")


@_spec_class
class EmptyDisk:
    """An empty disk of a node (an entry of `Node.empty_disks`, where a plain int is its size).

    NixOS's `virtualisation.emptyDiskImages`: `size` in MiB; the disks are
    virtio disks after the root disk (/dev/vda), so /dev/vdb, /dev/vdc, ...
    in the order given. `serial` (at most 20 letters, digits and '._-', as
    NixOS's `driveConfig.deviceExtraOpts.serial`) also names the disk
    /dev/disk/by-id/virtio-<serial>. A disk is made empty when a run starts
    and keeps what the guest writes across reboots of that run (and across
    runs with --keep-vm-state).
    """

    size: int
    serial: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        _in_range(self.size, 1, MAX_EMPTY_DISK_MIB, "EmptyDisk.size (MiB)")
        if self.serial is not None and not _DISK_SERIAL.fullmatch(self.serial):
            raise SpecError(
                f"EmptyDisk.serial: invalid serial {self.serial!r} "
                "(1 to 20 letters, digits and '._-'; virtio disks keep 20 bytes of it)"
            )
        if self.serial == ROOT_DISK_SERIAL:
            raise SpecError(f"EmptyDisk.serial: {ROOT_DISK_SERIAL!r} is the root disk's serial, as on NixOS")


# What the X11 preset installs: Debian's generic kernel (the cloud kernel has no DRM
# driver for QEMU's VGA), Xorg, IceWM (the window manager of NixOS's X11 tests),
# xterm and the X utilities that scripts and wait_for_x/get_window_names call.
X11_PACKAGES = (
    "linux-image-amd64",
    "xserver-xorg-core",
    "xserver-xorg-input-libinput",
    "xinit",
    "xauth",
    "x11-xserver-utils",
    "x11-utils",
    "xdotool",
    "icewm",
    "xterm",
    "xfonts-base",
    "fonts-dejavu-core",
)
X11_UNIT = "display-manager"
# Started with it, done once the IceWM session is up (guest/x11-ready): the session's
# IceWM startup file (guest/x11-icewm-startup) makes this file.
X11_READY_UNIT = "vmrig-x11-ready"
X11_READY_FLAG = "/run/vmrig-x11/ready"
# Node.firewall's backends, NixOS's two; each is also the Debian package that loads its rules.
FIREWALL_BACKENDS = ("iptables", "nftables")
# The unit each backend's rules are loaded by, as on NixOS.
FIREWALL_UNITS = {"iptables": "firewall.service", "nftables": "nftables.service"}


@_spec_class
class X11:
    """A graphical machine in one line, like NixOS tests' `common/x11.nix`: `Node(x11=X11())`.

    The node gets a display, Debian's generic kernel, Xorg on `:0` (vt7,
    `display-manager.service`, started by graphical.target, the default
    target of such a node), IceWM, xterm, xdotool and x11-utils, and `user`
    (made when `Node.users` lacks it) logged in to an IceWM session.
    `~user/.Xauthority` holds the display's cookie (NixOS scripts run
    `xauth merge` with it); root's commands may use `:0` without it, as the
    backdoor's do on NixOS (`DISPLAY=:0.0`).
    """

    user: str = "alice"

    def __post_init__(self) -> None:
        _check_fields(self)
        _account_name(self.user, "X11.user")
        if self.user == "root":
            raise SpecError("X11.user: the session runs as an ordinary user, not root")

    def service(self) -> Service:
        return Service(
            description=f"X on :0 with {self.user}'s session (vmrig's X11 preset)",
            exec_start=f"/usr/lib/vmrig/x11-start {self.user}",
            after=["systemd-user-sessions.service", "systemd-logind.service"],
            restart="always",
            wanted_by=["graphical.target"],
            extra={"Unit": {"Conflicts": "getty@tty7.service"}, "Service": {"RestartSec": "1"}},
        )

    def ready_service(self) -> Service:
        """Done once the IceWM session is up: graphical.target, and wait_for_x, come after it."""
        return Service(
            description="The X11 preset's IceWM session is up",
            type="oneshot",
            exec_start="/usr/lib/vmrig/x11-ready",
            after=[f"{X11_UNIT}.service"],
            remain_after_exit=True,
            wanted_by=["graphical.target"],
            extra={"Unit": {"Before": "graphical.target", "PartOf": f"{X11_UNIT}.service"}},
        )


@_spec_class
class FirewallPorts:
    """Ports a firewall lets in, NixOS's `networking.firewall.interfaces.<name>`.

    Ranges are `(from, to)` pairs, both ends included.
    """

    allowed_tcp_ports: list[int] = field(default_factory=list)
    allowed_udp_ports: list[int] = field(default_factory=list)
    allowed_tcp_port_ranges: list[tuple[int, int]] = field(default_factory=list)
    allowed_udp_port_ranges: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_fields(self)
        name = type(self).__name__
        for protocol in ("tcp", "udp"):
            ports, ranges = self.ports(protocol)
            for port in ports:
                _in_range(port, 1, 65535, f"{name}.allowed_{protocol}_ports")
            for low, high in ranges:
                where = f"{name}.allowed_{protocol}_port_ranges"
                _in_range(low, 1, 65535, where)
                _in_range(high, low, 65535, f"{where} (the end of {low}-{high})")

    def ports(self, protocol: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The allowed ports and port ranges of `protocol` ("tcp" or "udp")."""
        if protocol == "tcp":
            return self.allowed_tcp_ports, self.allowed_tcp_port_ranges
        return self.allowed_udp_ports, self.allowed_udp_port_ranges


@_spec_class
class Firewall(FirewallPorts):
    """NixOS's default firewall (`networking.firewall`), for `Node(firewall=Firewall(...))`.

    New connections from outside are dropped unless their port is allowed
    (`allowed_tcp_ports`, ... as in FirewallPorts, for every interface; per
    interface in `interfaces`); replies, loopback and `trusted_interfaces`
    always pass, and so do pings (`allow_ping`, limited by `ping_limit` in the
    backend's words: iptables' `--limit 1/minute --limit-burst 5`, nftables'
    `1/minute burst 5 packets`) and the ICMPv6 that IPv6 needs. A refused TCP
    connection is logged to the console as `refused connection: ...`
    (`log_refused_connections`; `log_refused_packets` logs every refused
    packet, broadcasts and multicasts too unless `log_refused_unicasts_only`);
    `reject_packets` answers with a reset (or ICMP port unreachable) instead
    of silence. `check_reverse_path` drops packets whose source would not be
    routed back out of the card they came in on (True or "strict"; "loose":
    out of any card; False: no check). Forwarded packets are not filtered.
    Interface names may end in `*` or `+` (any suffix).

    `backend` is NixOS's choice between its two implementations:
    - "iptables" (NixOS's default): Debian's iptables and `firewall.service`
      (started early in the boot, before network-pre.target), with the chains
      `nixos-fw`, `nixos-fw-accept`, `nixos-fw-log-refuse`, `nixos-fw-refuse`
      (and `nixos-fw-rpfilter` in the mangle table); `extra_commands` and
      `extra_stop_commands` are shell commands run after the rules are loaded
      (before the final refusal) and after they are removed;
    - "nftables" (NixOS's `networking.nftables.enable = true`): Debian's
      nftables and its `nftables.service`, loading `/etc/nftables.conf` with
      the table `inet nixos-fw` (chains `rpfilter`, `input`, `input-allow`);
      `extra_input_rules` are nft rules added to `input-allow`.
    The ports forwarded from the host (`Node.forward_ports`) come in on eth0
    and are filtered too, as on NixOS.
    """

    backend: str = "iptables"
    allow_ping: bool = True
    ping_limit: str | None = None
    reject_packets: bool = False
    log_refused_connections: bool = True
    log_refused_packets: bool = False
    log_refused_unicasts_only: bool = True
    trusted_interfaces: list[str] = field(default_factory=list)
    check_reverse_path: bool | str = True
    interfaces: dict[str, FirewallPorts] = field(default_factory=dict)
    extra_commands: str = ""
    extra_stop_commands: str = ""
    extra_input_rules: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.backend, FIREWALL_BACKENDS, "Firewall.backend")
        if isinstance(self.check_reverse_path, str):
            _choice(self.check_reverse_path, ("strict", "loose"), "Firewall.check_reverse_path")
        if self.ping_limit is not None:
            _non_empty(self.ping_limit, "Firewall.ping_limit")
            _single_line(self.ping_limit, "Firewall.ping_limit")
            # Words of the other backend would keep the rules from loading: no firewall at all.
            if self.ping_limit.lstrip().startswith("--") != (self.backend == "iptables"):
                example = (
                    "--limit 1/minute --limit-burst 5" if self.backend == "iptables" else "1/minute burst 5 packets"
                )
                raise SpecError(
                    f"Firewall.ping_limit: {self.ping_limit!r} is not in the {self.backend} backend's words, "
                    f"e.g. {example!r}"
                )
        for name, backend in (
            ("extra_commands", "iptables"),
            ("extra_stop_commands", "iptables"),
            ("extra_input_rules", "nftables"),
        ):
            if getattr(self, name) and self.backend != backend:
                raise SpecError(f"Firewall.{name}: only for backend={backend!r} (this firewall's is {self.backend!r})")
        for where, names in (
            ("Firewall.trusted_interfaces", self.trusted_interfaces),
            ("Firewall.interfaces", list(self.interfaces)),
        ):
            for name in names:
                if not _INTERFACE.fullmatch(name):
                    raise SpecError(
                        f"{where}: invalid interface name {name!r} "
                        "(up to 15 letters, digits or '_.:-', optionally ending in '*' or '+')"
                    )

    @property
    def package(self) -> str:
        """The Debian package the backend's rules are loaded with (named as the backend)."""
        return self.backend


def _interface_address(text: str, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """`text` as an address with its prefix length (`10.0.0.5/24`, `fd00::5/64`), or SpecError."""
    address, slash, _ = text.partition("/")
    if not slash:
        example = "fd00::5/64" if ":" in text else "10.0.0.5/24"
        raise SpecError(f"{where}: {text!r} needs a prefix length, e.g. {example!r}")
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise SpecError(
            f"{where}: {text!r} is not an IPv4 or IPv6 address with a prefix length (like '10.0.0.5/24')"
        ) from None
    ip = interface.ip
    if ip.is_multicast or ip.is_loopback or ip.is_unspecified or ip.is_link_local:
        raise SpecError(f"{where}: {address} cannot be an interface's address (multicast, loopback or link-local)")
    network = interface.network
    if ip.version == 4 and network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
        raise SpecError(f"{where}: {address} is the network or broadcast address of {network}")
    return interface


def default_cores(node_count: int, host_cpus: int) -> int:
    """The vCPUs of a node that does not set `cores`: 2 when `host_cpus` has two for each node, else 1.

    `host_cpus`: the CPUs the run may use (Assembler.host_cpus). Under KVM
    and under TCG alike: QEMU 7.2's TCG let one vCPU run kernel code that
    another was patching (an `int3` Oops in about one boot in a hundred);
    on QEMU 10, 245 boots of a 2-vCPU node in one run (and 70 in an
    earlier one) had no fault, and reached the first command in 5.8 s
    against 7.2 s with 1 vCPU (benchmarks/mttcg.py).
    """
    return 2 if host_cpus >= 2 * max(1, node_count) else 1


@_spec_class
class Node:
    """One machine of a test: what its image contains and how QEMU runs it."""

    packages: list[str] = field(default_factory=list)
    files: dict[str, str | bytes | File] = field(default_factory=dict)
    services: dict[str, Service | str] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    memory_size: int = 1024
    # None: the host's CPUs shared among the nodes, 1 or 2 each (default_cores).
    cores: int | None = None
    disk_size: int = DEFAULT_DISK_MIB
    kernel_params: list[str] = field(default_factory=list)
    qemu_options: list[str] = field(default_factory=list)
    build_commands: list[str] = field(default_factory=list)
    # One card per entry, eth1, eth2, ... in this order; a vlan listed twice gets two cards.
    vlans: list[int] = field(default_factory=lambda: [1])
    # vlan (its first card) or interface name ("eth2") -> addresses with prefix
    # length, instead of the automatic 192.168.<vlan>.<n>/24 and
    # 2001:db8:<vlan>::<n>/64 of a vlan's first card (a second card on the same
    # vlan has none unless given here); [] leaves a card without any.
    addresses: dict[int | str, list[str]] = field(default_factory=dict)
    forward_ports: list[tuple[int, int]] = field(default_factory=list)
    # NixOS's virtualisation.graphics: a display (VGA) for screenshot() and OCR.
    # None: only when the test script uses a screen method; False: never.
    graphics: bool | None = None
    # guest path -> host directory (read-write), or SharedDirectory(source=..., read_only=True)
    shared_directories: dict[str, str | SharedDirectory] = field(default_factory=dict)
    # A graphical machine: X, a window manager and a user logged in (see X11).
    x11: X11 | None = None
    # NixOS's default firewall (networking.firewall); None: no firewall, every port open.
    firewall: Firewall | None = None
    # NixOS's virtualisation.emptyDiskImages: sizes in MiB, or EmptyDisk(size=..., serial=...).
    empty_disks: list[int | EmptyDisk] = field(default_factory=list)
    # NixOS's virtualisation.tpm.enable: a TPM 2.0 (tpm-tis, /dev/tpm0), emulated by swtpm on the host.
    tpm: bool = False
    # NixOS's networking.defaultGateway and defaultGateway6: the default routes, through
    # an address on one of the node's vlans (NixOS's network-setup.service sets them).
    default_gateway: str | None = None
    default_gateway6: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        for name, version in (("default_gateway", 4), ("default_gateway6", 6)):
            _gateway(getattr(self, name), version, f"Node.{name}")
        if self.x11 is not None:
            self._apply_x11(self.x11)
        if self.tpm and TPM_PACKAGE not in self.packages:
            self.packages = [*self.packages, TPM_PACKAGE]
        if self.firewall is not None:
            if self.firewall.package not in self.packages:
                self.packages = [*self.packages, self.firewall.package]
            unit = FIREWALL_UNITS[self.firewall.backend]
            for name in self.services:
                if _unit_file_name(name) == unit:
                    raise SpecError(
                        f"Node.services[{name!r}]: Node.firewall makes {unit} (its {self.firewall.backend} backend); "
                        "put the rules in Firewall(...) or drop Node.firewall"
                    )
        for package in self.packages:
            if not _PACKAGE.fullmatch(package):
                raise SpecError(
                    f"Node.packages: invalid Debian package name {package!r} "
                    "(lower-case letters, digits and '+-.', optionally '=version' or '/suite')"
                )
        for path in self.files:
            _absolute_path(path, "Node.files")
        self._check_services()
        for name in self.users:
            _account_name(name, "Node.users")
            if name == "root":
                raise SpecError("Node.users: 'root' exists in every image already (with an empty password)")
        _in_range(self.memory_size, 256, None, "Node.memory_size")
        if self.cores is not None:
            _in_range(self.cores, 1, 64, "Node.cores")
        _in_range(self.disk_size, 1024, None, "Node.disk_size")
        for name in ("kernel_params", "qemu_options", "build_commands"):
            for index, item in enumerate(getattr(self, name)):
                _non_empty(item, f"Node.{name}[{index}]")
        for index, item in enumerate(self.kernel_params):
            _single_line(item, f"Node.kernel_params[{index}]")
        for vlan in self.vlans:
            _in_range(vlan, 1, 254, "Node.vlans")
        host_ports = set()
        for host_port, guest_port in self.forward_ports:
            _in_range(host_port, 1, 65535, "Node.forward_ports host port")
            _in_range(guest_port, 1, 65535, "Node.forward_ports guest port")
            if host_port in host_ports:
                raise SpecError(f"Node.forward_ports: host port {host_port} is forwarded twice")
            host_ports.add(host_port)
        self._check_addresses()
        self._check_shared_directories()
        self._check_empty_disks()
        devices = len(self.vlans) + len(self.empty_disks) + len(self.shared_directories)
        if devices > NODE_PCI_SLOTS:
            raise SpecError(
                f"Node: {len(self.vlans)} vlan cards, {len(self.empty_disks)} empty disks and "
                f"{len(self.shared_directories)} shared directories are {devices} PCI devices; "
                f"QEMU's machine has room for {NODE_PCI_SLOTS}"
            )

    def _apply_x11(self, x11: X11) -> None:
        """Adds what X11 stands for to the node's own fields (again after dataclasses.replace: idempotent)."""
        if self.graphics is False:
            raise SpecError("Node.x11 needs a display: drop graphics=False")
        self.graphics = True
        self.packages = [*self.packages, *(p for p in X11_PACKAGES if p not in self.packages)]
        if x11.user not in self.users:
            self.users = {**self.users, x11.user: User()}
        if X11_UNIT not in self.services and f"{X11_UNIT}.service" not in self.services:
            self.services = {**self.services, X11_UNIT: x11.service(), X11_READY_UNIT: x11.ready_service()}
        self.files = {
            **{
                f"/usr/lib/vmrig/{name}": File(content=(GUEST_DIR / name).read_text(), mode=0o755)
                for name in ("x11-start", "x11-session", "x11-ready")
            },
            "/etc/X11/icewm/startup": File(content=(GUEST_DIR / "x11-icewm-startup").read_text(), mode=0o755),
            "/etc/X11/xorg.conf.d/10-vmrig.conf": (GUEST_DIR / "x11-xorg.conf").read_text(),
            "/etc/X11/icewm/preferences": (GUEST_DIR / "x11-icewm-preferences").read_text(),
            **self.files,
        }
        if not any(param.startswith("systemd.unit=") for param in self.kernel_params):
            self.kernel_params = [*self.kernel_params, "systemd.unit=graphical.target"]

    def interface_names(self) -> list[str]:
        """eth1, eth2, ...: the node's vlan cards, one per entry of `vlans`."""
        return [interface_name(index) for index in range(1, len(self.vlans) + 1)]

    def _check_addresses(self) -> None:
        for vlan, addresses in self.addresses.items():
            where = f"Node.addresses[{vlan!r}]"
            if isinstance(vlan, str) and vlan not in self.interface_names():
                raise SpecError(
                    f"Node.addresses: the node has no interface {vlan!r}; its vlan cards: "
                    f"{', '.join(self.interface_names()) or 'none'} (one per entry of Node.vlans)"
                )
            if isinstance(vlan, int) and vlan not in self.vlans:
                raise SpecError(
                    f"Node.addresses: vlan {vlan} is not one of the node's vlans {self.vlans}; add it to Node.vlans"
                )
            seen: set[str] = set()
            for text in addresses:
                ip = str(_interface_address(text, where).ip)
                if ip in seen:
                    raise SpecError(f"{where}: {ip} is listed twice")
                seen.add(ip)

    def _check_empty_disks(self) -> None:
        if len(self.empty_disks) > MAX_EMPTY_DISKS:
            raise SpecError(f"Node.empty_disks: at most {MAX_EMPTY_DISKS} disks, got {len(self.empty_disks)}")
        serials: set[str] = set()
        for index, disk in enumerate(self.empty_disks):
            if isinstance(disk, int):
                _in_range(disk, 1, MAX_EMPTY_DISK_MIB, f"Node.empty_disks[{index}] (MiB)")
            elif disk.serial is not None:
                if disk.serial in serials:
                    raise SpecError(f"Node.empty_disks[{index}]: serial {disk.serial!r} is used twice")
                serials.add(disk.serial)

    def disks(self) -> list[EmptyDisk]:
        """`empty_disks` with plain sizes wrapped in EmptyDisk: /dev/vdb first."""
        return [disk if isinstance(disk, EmptyDisk) else EmptyDisk(size=disk) for disk in self.empty_disks]

    def _check_shared_directories(self) -> None:
        for guest_path, share in self.shared_directories.items():
            _absolute_path(guest_path, "Node.shared_directories")
            where = f"Node.shared_directories[{guest_path!r}]"
            if guest_path in _UNSHAREABLE:
                raise SpecError(f"{where}: sharing a directory over {guest_path} would hide the guest's own files")
            if guest_path == EXCHANGE_GUEST_PATH:
                raise SpecError(f"{where}: {EXCHANGE_GUEST_PATH} is the run's exchange directory on every machine")
            source = share.source if isinstance(share, SharedDirectory) else share
            _non_empty(source, where)
            _single_line(source, where)
            if "\0" in source:
                raise SpecError(f"{where}: path {source!r} contains a NUL byte")

    def shares(self) -> dict[str, SharedDirectory]:
        """`shared_directories` with plain host paths wrapped in SharedDirectory (read-write)."""
        return {
            guest_path: share if isinstance(share, SharedDirectory) else SharedDirectory(source=share)
            for guest_path, share in self.shared_directories.items()
        }

    def _check_services(self) -> None:
        seen: dict[str, str] = {}
        for name, service in self.services.items():
            _unit_name(name, "Node.services")
            unit = _unit_file_name(name)
            if unit in seen:
                raise SpecError(f"Node.services: {seen[unit]!r} and {name!r} are the same unit {unit!r}")
            seen[unit] = name
            if isinstance(service, Service):
                if not unit.endswith(".service"):
                    raise SpecError(
                        f"Node.services[{name!r}]: Service() makes .service units; give raw unit text for {unit!r}"
                    )
            elif not _SECTION_HEADER.search(service):
                raise SpecError(
                    f"Node.services[{name!r}]: raw unit text has no [Section] header; "
                    "to run a command, use Service(exec_start=...)"
                )

    def file_entries(self) -> dict[str, File]:
        """`files` with plain contents wrapped in File (mode 0644, owned by root)."""
        return {
            path: content if isinstance(content, File) else File(content=content)
            for path, content in self.files.items()
        }

    def home_owner(self, path: str) -> str | None:
        """The user of `users` whose home directory holds `path`, if any."""
        for name, user in sorted(self.users.items()):
            home = user.home_directory(name).rstrip("/")
            if path.startswith(home + "/"):
                return name
        return None

    def file_owner(self, path: str) -> tuple[str, str]:
        """(owner, group) of file `path`: the File's own, else the home's user, else root.

        A group of "" means the owner's login group (`chown alice:`).
        """
        entry = self.file_entries()[path]
        user = self.home_owner(path)
        owner = entry.owner or user or "root"
        if entry.group is not None:
            return owner, entry.group
        return owner, "" if entry.owner is None and user is not None else "root"

    def unit_files(self) -> dict[str, str]:
        """Unit file name (`hello.service`) -> unit file text."""
        result = {}
        for name, service in self.services.items():
            text = service.unit_text() if isinstance(service, Service) else service
            result[_unit_file_name(name)] = text if text.endswith("\n") else text + "\n"
        return result

    def enabled_units(self) -> dict[str, list[str]]:
        """Unit file name -> targets whose `.wants/` directory should link it.

        Units that nothing wants (or with `enable=False`) are left out.
        """
        result = {}
        for name, service in self.services.items():
            if isinstance(service, Service):
                targets = list(service.wanted_by) if service.enable else []
            else:
                targets = _install_wanted_by(service)
            if targets:
                result[_unit_file_name(name)] = targets
        return result

    def install_links(self) -> dict[str, list[str]]:
        """Unit file name -> the links `systemctl enable` makes for it, relative to /etc/systemd/system.

        As NixOS's `wantedBy`, `requiredBy`, `upheldBy` and `aliases` do:
        `multi-user.target.wants/web.service` for WantedBy=,
        `.requires/` for RequiredBy=, `.upholds/` for UpheldBy=, and the
        alias's own name for Alias=. A Service's targets are its `wanted_by`
        (none with `enable=False`); the rest comes from the unit's [Install]
        section (a Service's `extra`, or the text of a unit given as text).
        """
        texts = self.unit_files()
        wanted = self.enabled_units()
        result = {}
        for name, service in self.services.items():
            file_name = _unit_file_name(name)
            if isinstance(service, Service) and not service.enable:
                continue
            entries = _install_entries(texts[file_name])
            links = [f"{target}.wants/{file_name}" for target in wanted.get(file_name, [])]
            for key, directory in INSTALL_DIRECTORIES.items():
                if key != "WantedBy":
                    links += [f"{target}.{directory}/{file_name}" for target in entries.get(key, [])]
            links += [alias for alias in entries.get("Alias", []) if alias != file_name]
            if links:
                result[file_name] = links
        return result

    def image_inputs(self) -> dict[str, Any]:
        """What goes into the package layer, JSON-able and in a stable order (for its cache key)."""
        return {
            "packages": sorted(set(self.packages)),
            "build_commands": list(self.build_commands),
        }


def _gateway(value: str | None, version: int, where: str) -> None:
    """Checks that `value` is None or an IPv`version` address (no prefix length)."""
    if value is None:
        return
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise SpecError(
            f"{where}: expected an IPv{version} address such as {_EXAMPLE_GATEWAY[version]!r}, got {value!r}"
        ) from None
    if address.version != version:
        raise SpecError(f"{where}: {value!r} is an IPv{address.version} address; IPv{version} goes here")


_EXAMPLE_GATEWAY = {4: "192.168.1.1", 6: "2001:db8:1::1"}


def _unit_file_name(name: str) -> str:
    """`hello` -> `hello.service`; names that already end in a unit type stay."""
    suffix = name.rpartition(".")[2] if "." in name else ""
    return name if suffix in UNIT_TYPES else f"{name}.service"


# `systemctl enable`'s links for an [Install] key: the directory suffix of each named unit.
INSTALL_DIRECTORIES = {"WantedBy": "wants", "RequiredBy": "requires", "UpheldBy": "upholds"}


def _install_entries(text: str) -> dict[str, list[str]]:
    """The [Install] section of a unit file as systemd reads it: key -> values (WantedBy, Alias, ...)."""
    logical_lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        logical_lines.append(pending + raw)
        pending = ""
    if pending:
        logical_lines.append(pending)

    section = None
    entries: dict[str, list[str]] = {}
    for raw in logical_lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, equals, value = line.partition("=")
        if section != "Install" or not equals:
            continue
        values = entries.setdefault(key.strip(), [])
        if not value.strip():
            values.clear()  # an empty assignment resets the list
        for item in value.split():
            if item not in values:
                values.append(item)
    return entries


def _install_wanted_by(text: str) -> list[str]:
    """The `WantedBy=` targets of a unit file's [Install] section, as systemd reads them."""
    return _install_entries(text).get("WantedBy", [])


@_spec_class
class Options:
    """Options of a whole test."""

    suite: str = "trixie"
    mirror: str | None = None
    global_timeout: float | None = 3600
    ssh_backdoor: bool = False
    vsock_offset: int = 2

    def __post_init__(self) -> None:
        _check_fields(self)
        _choice(self.suite, SUITES, "Options.suite")
        if self.mirror is not None:
            _non_empty(self.mirror, "Options.mirror")
            _single_line(self.mirror, "Options.mirror")
        if self.global_timeout is not None and not self.global_timeout > 0:
            raise SpecError(f"Options.global_timeout: must be positive or None, got {self.global_timeout}")
        # CIDs 0-2 belong to the hypervisor and the host; guests get offset + node number.
        _in_range(self.vsock_offset, 2, 2**31, "Options.vsock_offset")


@_spec_class
class Interactive:
    """Overrides applied only when a test runs interactively (like NixOS's `interactive`).

    `options` maps Options field names to new values; `nodes` maps node names
    to {field: value}, where lists are appended to, dicts merged and other
    values replaced.
    """

    options: dict[str, object] = field(default_factory=dict)
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self)
        option_names = [f.name for f in dataclasses.fields(Options)]
        for key in self.options:
            if key not in option_names:
                raise SpecError(f"Interactive.options: Options has no field {key!r}{did_you_mean(key, option_names)}")
        node_fields = [f.name for f in dataclasses.fields(Node)]
        for node_name, overrides in self.nodes.items():
            for key in overrides:
                if key not in node_fields:
                    raise SpecError(
                        f"Interactive.nodes[{node_name!r}]: Node has no field {key!r}{did_you_mean(key, node_fields)}"
                    )


def merge_interactive(
    options: Options, nodes: dict[str, Node], interactive: Interactive
) -> tuple[Options, dict[str, Node]]:
    """New Options and nodes with `interactive`'s overrides applied; the inputs are not changed."""
    try:
        overrides: dict[str, Any] = dict(interactive.options)
        merged_options = dataclasses.replace(options, **overrides)
    except SpecError as error:
        raise SpecError(f"interactive options: {error.message}") from None

    merged_nodes = dict(nodes)
    hints = _hints(Node)
    for node_name, overrides in interactive.nodes.items():
        if node_name not in nodes:
            known = ", ".join(sorted(nodes)) or "none"
            raise SpecError(
                f"Interactive.nodes: there is no node {node_name!r}{did_you_mean(node_name, nodes)} "
                f"(nodes are: {known})"
            )
        node = nodes[node_name]
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            current = getattr(node, key)
            origin = get_origin(hints[key])
            where = f"Interactive.nodes[{node_name!r}].{key}"
            if origin is list:
                if not isinstance(value, list | tuple):
                    raise SpecError(f"{where}: expected {_type_name(hints[key])} to append, got {_show(value)}")
                changes[key] = [*current, *value]
            elif origin is dict:
                if not isinstance(value, dict):
                    raise SpecError(f"{where}: expected {_type_name(hints[key])} to merge, got {_show(value)}")
                changes[key] = {**current, **value}
            else:
                changes[key] = value
        try:
            merged_nodes[node_name] = dataclasses.replace(node, **changes)
        except SpecError as error:
            raise SpecError(f"interactive overrides of node {node_name!r}: {error.message}") from None
    return merged_options, merged_nodes
