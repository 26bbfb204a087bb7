"""The SSH backdoor: sshd in every guest, reachable from the host without any guest network setup.

Enabled per test (`Options(ssh_backdoor=True)`, usually in the `interactive`
overrides). Each node gets openssh-server in its package layer and, in its
config layer, an sshd that lets root in with its empty password. The host
reaches it over vsock where /dev/vhost-vsock is usable (guest CID = node
number + `Options.vsock_offset`, so the first node is vsock/3 by default),
else over a loopback TCP port that QEMU's user network forwards to the
guest's port 22. The driver prints an ssh command for every machine, writes
an ssh_config into the run directory, and leaves a small state file in each
`vm-state-<node>` so that `vmrig ssh NODE` finds the running session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from vmrig import proc
from vmrig.errors import UsageError
from vmrig.hostnet import LOOPBACK, free_port
from vmrig.log import Logger
from vmrig.netcard import interface_name
from vmrig.spec import File, FirewallPorts, Node, Service

VHOST_VSOCK = Path("/dev/vhost-vsock")
SSH_PACKAGE = "openssh-server"
SSH_CONFIG = "ssh_config"
STATE_FILE = "ssh.json"
# Host keys differ per image and ports per run: remembering them only breeds warnings.
CLIENT_OPTIONS = (
    ("User", "root"),
    ("StrictHostKeyChecking", "no"),
    ("UserKnownHostsFile", "/dev/null"),
    ("LogLevel", "ERROR"),
)

# Read first (sshd keeps the first value of a keyword), so these win over Debian's sshd_config.
SSHD_CONFIG = """\
# vmrig SSH backdoor: root logs in with its empty password.
PermitRootLogin yes
PermitEmptyPasswords yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
"""
VSOCK_SOCKET_UNIT = """\
[Unit]
Description=vmrig SSH backdoor on vsock port 22

[Socket]
ListenStream=vsock::22
Accept=yes

[Install]
WantedBy=sockets.target
"""
VSOCK_SERVICE_UNIT = """\
[Unit]
Description=vmrig SSH backdoor connection over vsock

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes
"""
# systemd >= 256 generates sshd sockets of its own (vsock port 22 among them);
# this one is ours, and without vsock the generator only fails noisily.
NO_SSH_GENERATOR = "systemd.ssh_auto=no"


def vsock_usable() -> bool:
    """Whether this host can give guests a vhost-vsock device."""
    try:
        fd = os.open(VHOST_VSOCK, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def vsock_cid_hint(console: str, cid: int | None) -> str:
    """An explanation for QEMU's "guest cid ... in use" failure, or ""."""
    if cid is None or "unable to set guest cid" not in console:
        return ""
    return (
        f"\nthe vsock CID {cid} is already used by another virtual machine on this host; "
        "pick another offset for this test, e.g. Options(ssh_backdoor=True, vsock_offset=1000) "
        "(in the test file's options or its interactive options)"
    )


@dataclass(frozen=True)
class Endpoint:
    """How the host reaches one machine's sshd: a loopback port or a vsock CID."""

    name: str
    port: int | None = None
    cid: int | None = None

    @property
    def alias(self) -> str:
        """The host name the ssh_config knows the machine by (vsock/N, as in NixOS, or its name)."""
        return f"vsock/{self.cid}" if self.cid is not None else self.name

    def proxy_command(self) -> str | None:
        return f"socat - VSOCK-CONNECT:{self.cid}:22" if self.cid is not None else None

    def forwards(self) -> list[tuple[int, int]]:
        """The (host port, guest port) forward of QEMU's user network to sshd (none for vsock)."""
        return [(self.port, 22)] if self.port is not None else []

    def command(self) -> list[str]:
        """A complete ssh command line that needs no ssh_config."""
        options = [part for key, value in CLIENT_OPTIONS for part in ("-o", f"{key}={value}")]
        proxy = self.proxy_command()
        if proxy is not None:
            return ["ssh", *options, "-o", f"ProxyCommand={proxy}", self.alias]
        return ["ssh", *options, "-p", str(self.port), LOOPBACK]

    def config_entry(self) -> str:
        names = self.name if self.alias == self.name else f"{self.name} {self.alias}"
        lines = [f"Host {names}"]
        proxy = self.proxy_command()
        if proxy is not None:
            lines.append(f"    ProxyCommand {proxy}")
        else:
            lines += [f"    HostName {LOOPBACK}", f"    Port {self.port}"]
        lines += [f"    {key} {value}" for key, value in CLIENT_OPTIONS]
        return "\n".join(lines) + "\n"


def backdoor_node(node: Node, *, vsock: bool) -> Node:
    """`node` with sshd in its package layer and the backdoor's configuration in its config layer."""
    packages = node.packages if SSH_PACKAGE in node.packages else [*node.packages, SSH_PACKAGE]
    files: dict[str, str | bytes | File] = {"/etc/ssh/sshd_config.d/00-vmrig-backdoor.conf": SSHD_CONFIG}
    services: dict[str, Service | str] = {}
    kernel_params = [*node.kernel_params, NO_SSH_GENERATOR]
    if vsock:
        services = {
            "vmrig-sshd-vsock.socket": VSOCK_SOCKET_UNIT,
            "vmrig-sshd-vsock@.service": VSOCK_SERVICE_UNIT,
        }
    firewall = node.firewall
    if firewall is not None and not vsock:
        # The host reaches sshd through QEMU's user network (eth0): let that in, and only that.
        user_net = interface_name(0)
        ports = firewall.interfaces.get(user_net, FirewallPorts())
        ports = dataclasses.replace(ports, allowed_tcp_ports=[*ports.allowed_tcp_ports, 22])
        firewall = dataclasses.replace(firewall, interfaces={**firewall.interfaces, user_net: ports})
    return dataclasses.replace(
        node,
        packages=packages,
        files={**files, **node.files},
        services={**services, **node.services},
        kernel_params=kernel_params,
        firewall=firewall,
    )


class Backdoor:
    """The SSH backdoor of one run: an endpoint per machine, an ssh_config, state files."""

    def __init__(self, *, vsock: bool, vsock_offset: int) -> None:
        self.vsock = vsock
        self.vsock_offset = vsock_offset
        self.endpoints: dict[str, Endpoint] = {}
        self.config_path: Path | None = None
        self._state_files: list[Path] = []

    def endpoint(self, name: str, number: int) -> Endpoint:
        """The machine's endpoint, chosen on first use (the CID is node number + offset)."""
        if name not in self.endpoints:
            if self.vsock:
                self.endpoints[name] = Endpoint(name, cid=number + self.vsock_offset)
            else:
                self.endpoints[name] = Endpoint(name, port=free_port())
        return self.endpoints[name]

    def publish(self, run_dir: Path, state_dirs: dict[str, Path], logger: Logger) -> None:
        """Writes the ssh_config and the state files, and prints how to log in."""
        self.config_path = run_dir / SSH_CONFIG
        header = f"# SSH backdoor of the vmrig run with pid {os.getpid()}: ssh -F {self.config_path} NODE\n"
        self.config_path.write_text(header + "".join(e.config_entry() for e in self.endpoints.values()))
        for name, endpoint in self.endpoints.items():
            state_dir = state_dirs[name]
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(state_dir, 0o700)
            state_file = state_dir / STATE_FILE
            state = {
                "pid": os.getpid(),
                "node": name,
                "host": endpoint.alias,
                "ssh_config": str(self.config_path),
                "command": endpoint.command(),
            }
            state_file.write_text(json.dumps(state, indent=2) + "\n")
            if state_file not in self._state_files:  # published again for a created machine
                self._state_files.append(state_file)
        lines = ["SSH backdoor enabled, the machines can be accessed like this:"]
        width = max(len(name) for name in self.endpoints) + 1
        for name, endpoint in self.endpoints.items():
            lines.append(f"    {name + ':':<{width}} {shlex.join(endpoint.command())}")
        first = next(iter(self.endpoints.values()))
        lines.append(f"or with the run's ssh_config: ssh -F {self.config_path} {first.alias}")
        lines.append(f"or, from another terminal: vmrig ssh {first.name}")
        if self.vsock:
            lines.append("(vsock connections go through socat's VSOCK-CONNECT)")
        logger.log("\n".join(lines))

    def withdraw(self) -> None:
        """Removes the state files: the session is over."""
        for state_file in self._state_files:
            with contextlib.suppress(OSError):
                state_file.unlink()
        self._state_files.clear()


# -- `vmrig ssh NODE` -----------------------------------------------------------


def session_state(node: str, tmp_dir: Path) -> dict[str, object]:
    """The state file of a running session's node; UsageError if there is none."""
    state_file = tmp_dir / f"vm-state-{node}" / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"no running vmrig session with an SSH backdoor has a node {node!r} "
            f"(no {state_file}); start one with Options(ssh_backdoor=True), and use the same TMPDIR"
        ) from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {state_file}: {error}") from None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise UsageError(f"the vmrig session that wrote {state_file} (pid {pid}) is no longer running")
    return dict(state)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ssh_command(node: str, tmp_dir: Path, arguments: list[str]) -> list[str]:
    """The ssh command line that logs into `node` of the running session."""
    state = session_state(node, tmp_dir)
    config = state.get("ssh_config")
    host = state.get("host")
    if not isinstance(config, str) or not isinstance(host, str) or not Path(config).exists():
        raise UsageError(f"the session of node {node!r} has no ssh_config any more")
    return [proc.require_tool("ssh"), "-F", config, host, *arguments]


def run_ssh(node: str, tmp_dir: Path, arguments: list[str]) -> int:
    """Logs into `node` on this terminal (or runs `arguments` there); returns ssh's exit status."""
    child = proc.spawn(ssh_command(node, tmp_dir, arguments), stdin=None)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue  # Ctrl-C is ssh's business (it got the signal too)
