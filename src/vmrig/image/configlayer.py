"""The per-run config layer: what makes a booted image into one particular node.

Hostname, /etc/hosts, files, systemd units, users and network addresses change
from run to run; none of them goes into a cached image. They travel as a small
cpio archive appended to the image's initramfs: the kernel unpacks it next to
vmrig's init, which copies `config/` over the root disk, sources `network.sh`
(busybox `ip`, and `mount` for shared directories) and runs `setup.sh` in the
root (for users and owners) before systemd starts.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from dataclasses import dataclass, field

from vmrig.contract import GUEST_DIR
from vmrig.image.cpio import CpioWriter
from vmrig.image.firewall import guest_firewall
from vmrig.netcard import interface_name
from vmrig.spec import Node

BACKDOOR_UNIT = "vmrig-backdoor.service"
WAIT_UNIT = "vmrig-wait@.target"
# The journal on disk, as on NixOS (guest/journald-nixos.conf): unit -> the target that wants it.
JOURNAL_UNITS = {
    "vmrig-journal-flush.service": "multi-user.target",
    "vmrig-journal-on-shutdown.service": "sysinit.target",
}
BASIC_UNITS = ("vmrig-basic.socket", "vmrig-basic.service")
# md arrays and volume groups up before the local file systems, as NixOS's initrd has them.
BLOCK_STACKS_UNIT = "vmrig-block-stacks.service"
NETWORK_TARGETS = ("network.target", "network-online.target")
# NixOS's /run/current-system/sw/bin (guest/nixos-paths links it here): a program a
# node's files put in one of PROGRAM_DIRS is there too, as environment.systemPackages are.
SYSTEM_PROFILE_BIN = "/usr/lib/vmrig/current-system/sw/bin"
PROGRAM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

USER_NET_ADDRESS = "10.0.2.15/24"
USER_NET_GATEWAY = "10.0.2.2"
USER_NET_DNS = "10.0.2.3"


@dataclass(frozen=True)
class Interface:
    """A vlan interface of a node: `eth<index>` on vlan `vlan`."""

    index: int
    vlan: int
    ipv4: str | None  # the first IPv4 address, with prefix length, e.g. 192.168.1.2/24
    ipv6: str | None  # the first IPv6 address
    mac: str | None = None  # the card's MAC: the initramfs names the card by it
    more: tuple[str, ...] = ()  # further addresses

    @property
    def name(self) -> str:
        return interface_name(self.index)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(address for address in (self.ipv4, self.ipv6) if address) + self.more


@dataclass(frozen=True)
class Mount:
    """A virtiofs share the initramfs mounts: `tag` at `path` in the guest."""

    tag: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class NodeNetwork:
    number: int
    interfaces: tuple[Interface, ...]
    # Every node's name and primary addresses, for /etc/hosts.
    hosts: tuple[tuple[str, str | None, str | None], ...]
    outside_access: bool = False
    extra_hosts: dict[str, str] = field(default_factory=dict)
    # Node.default_gateway and default_gateway6
    gateways: tuple[str, ...] = ()


def machine_id(name: str) -> str:
    """A stable machine-id per node name, so a boot is never a 'first boot'."""
    return hashlib.sha256(f"vmrig-machine-id:{name}".encode()).hexdigest()[:32]


def hosts_file(name: str, network: NodeNetwork) -> str:
    lines = [
        "127.0.0.1 localhost",
        f"127.0.1.1 {name}" if not any(host == name and v4 for host, v4, _ in network.hosts) else "",
        "::1 localhost ip6-localhost ip6-loopback",
        "ff02::1 ip6-allnodes",
        "ff02::2 ip6-allrouters",
    ]
    for host, ipv4, ipv6 in network.hosts:
        if ipv4:
            lines.append(f"{ipv4} {host}")
        if ipv6:
            lines.append(f"{ipv6} {host}")
    for host, address in network.extra_hosts.items():
        lines.append(f"{address} {host}")
    return "\n".join(line for line in lines if line) + "\n"


def _naming_script(interfaces: tuple[Interface, ...]) -> str:
    """busybox sh that gives each vlan card the name `eth<index>` its MAC stands for.

    The kernel names cards in PCI order, which is the driver's order unless a
    test adds cards of its own; this makes the names certain. It runs only
    shell builtins unless a card needs a new name.
    """
    cases = "".join(f"        {i.mac}) want={i.name} ;;\n" for i in interfaces if i.mac)
    if not cases:
        return ""
    return (
        "mount -t sysfs sysfs /sys\n"
        "renamed=\n"
        "for dev in /sys/class/net/eth*; do\n"
        '    read -r mac <"$dev/address" || continue\n'
        "    case $mac in\n"
        f"{cases}"
        "        *) continue ;;\n"
        "    esac\n"
        "    case ${dev##*/} in\n"
        '        "$want") ;;\n'
        '        *) ip link set "${dev##*/}" name "vmrig-$want" && renamed=1 ;;\n'
        "    esac\n"
        "done\n"
        "case $renamed in 1)\n"
        "    for dev in /sys/class/net/vmrig-*; do\n"
        '        ip link set "${dev##*/}" name "${dev##*/vmrig-}"\n'
        "    done ;;\n"
        "esac\n"
        "umount /sys\n"
    )


def network_script(network: NodeNetwork) -> str:
    """busybox sh that brings up eth0 (QEMU's user network) and the vlan interfaces."""
    lines = ["ip link set lo up"]
    if not network.outside_access:
        # QEMU's user network advertises itself as an IPv6 router: its default route
        # took IPv6 traffic for the other vlans' addresses out through eth0.
        lines += [f"echo 0 >/proc/sys/net/ipv6/conf/eth0/{key}" for key in ("accept_ra", "autoconf")]
    lines += ["ip link set eth0 up", f"ip addr add {USER_NET_ADDRESS} dev eth0"]
    if network.outside_access and not any(":" not in gateway for gateway in network.gateways):
        lines.append(f"ip route add default via {USER_NET_GATEWAY} dev eth0")  # unless the node has its own
    for interface in network.interfaces:
        dev = interface.name
        if interface.ipv6:
            # busybox ip knows no `nodad`: without this, the address stays tentative for a second or two
            lines.append(f"echo 0 >/proc/sys/net/ipv6/conf/{dev}/accept_dad")
        lines.append(f"ip link set {dev} up")
        for address in interface.addresses:
            lines.append(f"ip {'-6 ' if ':' in address else ''}addr add {address} dev {dev}")
    lines += [f"ip {'-6 ' if ':' in gateway else ''}route add default via {gateway}" for gateway in network.gateways]
    naming = _naming_script(network.interfaces)
    return naming + "".join(f"{line} 2>/dev/null\n" for line in lines)


def _ip_batch_unit(description: str, commands: list[str], stops: list[str] | None = None) -> str:
    """A oneshot unit of NixOS's scripted networking, before network.target: one `ip -batch` of `commands`.

    One exec, not one per command: an exec costs tens of milliseconds under
    TCG while the first command runs. `stops`: ExecStop= command lines.
    """
    return (
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-pre.target\n"
        "Before=network.target network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        + "".join(f"StandardInputText={command}\n" for command in commands)
        + "ExecStart=ip -batch -\n"
        + "".join(f"ExecStop={stop}\n" for stop in stops or [])
    )


def network_setup_unit(gateways: tuple[str, ...]) -> str:
    """NixOS's `network-setup.service`, which sets the default routes (networking.defaultGateway).

    The initramfs has set them before systemd starts; a restart sets them again.
    """
    # ip takes a route's family from its gateway (a batch has no -6).
    return _ip_batch_unit("Networking Setup", [f"route replace default via {gateway}" for gateway in gateways])


def address_unit(interface: Interface) -> str:
    """NixOS's `network-addresses-<card>.service` for a vlan card: scripts wait for it.

    NixOS's scripted networking sets a card's addresses in this unit. Here the
    initramfs has set them before systemd starts, so at boot the unit finds
    them in place; as on NixOS, a stop removes them and a start or restart
    sets them again.
    """
    dev = interface.name
    commands = [f"link set {dev} up"]
    # nodad: the initramfs sets IPv6 addresses without duplicate address detection too (accept_dad=0)
    commands += [
        f"address replace {address} dev {dev}{' nodad' if ':' in address else ''}" for address in interface.addresses
    ]
    # As NixOS's preStop: a stop takes the card's addresses away (the link stays up).
    stops = [f"-ip address del {address} dev {dev}" for address in interface.addresses]
    return _ip_batch_unit(f"Address configuration of {dev}", commands, stops)


# The kernel's file systems under /sys that NixOS machines have mounted (systemd's
# sys-kernel-debug.mount and sys-kernel-tracing.mount): debugfs and tracefs, for
# bpftrace, perf and tracing tests. The base image masks those units, each an exec of
# mount; busybox mounts them here before systemd starts, which finds /sys mounted.
# (configfs is a module of the cloud kernel, which the initramfs cannot load.)
KERNEL_FS_SCRIPT = """\
mount -t sysfs sysfs /newroot/sys 2>/dev/null && for fs in debugfs:debug tracefs:tracing; do
    mount -t "${fs%%:*}" "${fs%%:*}" "/newroot/sys/kernel/${fs#*:}" 2>/dev/null
done
"""


def mount_script(mounts: list[Mount]) -> str:
    """busybox sh that mounts the node's virtiofs shares into the new root, parents first."""
    lines = []
    for mount in sorted(mounts, key=lambda m: m.path.count("/")):
        target = shlex.quote(f"/newroot{mount.path}")
        options = "ro" if mount.read_only else "rw"
        lines.append(f"mkdir -p {target}")
        lines.append(
            f"mount -t virtiofs -o {options} {shlex.quote(mount.tag)} {target} || "
            f"echo {shlex.quote(f'vmrig-init: cannot mount the shared directory {mount.path}')} >/dev/console"
        )
    return "".join(f"{line}\n" for line in lines)


# Directories the guest empties or mounts a tmpfs on at boot (/run; /tmp on Debian 13, and
# tmpfiles' "D /tmp" on 12): a node's file there is laid under RUNTIME_STAGE instead and
# copied into place by systemd-tmpfiles (owner and mode kept), early in the boot.
RUNTIME_DIRS = ("/run", "/tmp")
RUNTIME_STAGE = "/usr/lib/vmrig/runtime-files"
RUNTIME_RULES = "/etc/tmpfiles.d/vmrig-runtime-files.conf"


def laid_path(path: str) -> str:
    """Where the config layer lays a node's file `path` (see RUNTIME_DIRS)."""
    if any(path.startswith(directory + "/") for directory in RUNTIME_DIRS):
        return RUNTIME_STAGE + path
    return path


def runtime_rules(paths: list[str]) -> str:
    """systemd-tmpfiles lines that copy the staged files `paths` into place, their directories first."""
    lines: list[str] = []
    made: set[str] = set()
    for path in sorted(paths):
        parts = path.split("/")
        for depth in range(3, len(parts)):  # below /run or /tmp, which exist
            directory = "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                lines.append(f"d {directory} 0755 root root -")
        lines.append(f"C {path} - - - - {RUNTIME_STAGE}{path}")
    return "".join(f"{line}\n" for line in lines)


def setup_script(node: Node) -> str:
    """sh run in the node's root before systemd: users and file owners."""
    lines: list[str] = []
    # Every user first, then the groups they join: a user may join another
    # user's own group (alice in group bob), which must not exist before bob.
    for user_name, user in sorted(node.users.items()):
        args = ["useradd", "--shell", user.shell]
        args += ["--home-dir", user.home_directory(user_name), "--create-home"]
        if user.uid is not None:
            args += ["--uid", str(user.uid)]
        if user.system:
            args.append("--system")
        name = shlex.quote(user_name)
        # A group of the user's name that the image already has becomes its primary group.
        useradd = shlex.join(args)
        lines.append(
            f"id -u {name} >/dev/null 2>&1 || if getent group {name} >/dev/null;"
            f" then {useradd} --gid {name} {name}; else {useradd} {name}; fi"
        )
        if user.password == "":
            lines.append(f"passwd -d {name} >/dev/null")
        elif user.password is not None:
            lines.append(f"echo {shlex.quote(f'{user_name}:{user.password}')} | chpasswd")
    for group in sorted({group for user in node.users.values() for group in user.groups}):
        lines.append(f"getent group {shlex.quote(group)} >/dev/null || groupadd {shlex.quote(group)}")
    for user_name, user in sorted(node.users.items()):
        if user.groups:
            lines.append(f"usermod --append --groups {shlex.quote(','.join(user.groups))} {shlex.quote(user_name)}")
    # Files under a user's home were copied in before the user existed, so
    # useradd found the home there, left it to root and copied no skeleton:
    # the home (what is in it too) goes to its user, then files that name an
    # owner of their own get it.
    files = node.file_entries()
    for user_name, user in sorted(node.users.items()):
        if any(node.home_owner(path) == user_name for path in files):
            home = shlex.quote(user.home_directory(user_name))
            lines.append(f"cp -a -n /etc/skel/. {home}/ 2>/dev/null; chown -R {shlex.quote(user_name)}: {home}")
    for path, entry in sorted(files.items()):
        owner, group = node.file_owner(path)
        if (entry.owner, entry.group) != (None, None) or (owner, group) != ("root", "root"):
            lines.append(f"chown {shlex.quote(f'{owner}:{group}')} {shlex.quote(laid_path(path))}")
    if not lines:
        return ""
    # Run by the initramfs' busybox, whose PATH knows nothing of /usr/sbin.
    lines.insert(0, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return "".join(f"{line}\n" for line in lines)


def _add_parents(archive: CpioWriter, path: str, seen: set[str]) -> None:
    parts = path.strip("/").split("/")[:-1]
    current = "config"
    for part in parts:
        current = f"{current}/{part}"
        if current not in seen:
            seen.add(current)
            archive.directory(current)


def config_layer(
    name: str,
    node: Node,
    network: NodeNetwork,
    *,
    fixup: bytes,
    mounts: list[Mount] | None = None,
    block_stacks: bool = True,
) -> bytes:
    """The cpio archive that turns an image into node `name` for this run.

    `fixup`: the fix-up program (guestbin.fixup_program). `mounts`: virtiofs
    shares, mounted before systemd starts (the init sources network.sh, which
    carries them). `block_stacks`: whether the image has mdadm or LVM, whose
    arrays and volume groups BLOCK_STACKS_UNIT brings up at boot. The root
    file system has the node's disk size already (ImageStore.disk_of).
    """
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    seen: set[str] = {"config"}
    archive.directory("config")

    def put(path: str, data: bytes, mode: int = 0o644) -> None:
        _add_parents(archive, path, seen)
        archive.file("config" + path, data, mode)

    def link(path: str, target: str) -> None:
        _add_parents(archive, path, seen)
        archive.symlink("config" + path, target)

    def unit(unit_name: str, text: bytes, *wanted_by: str) -> None:
        """A unit file in /etc/systemd/system, enabled for each of `wanted_by` as `systemctl enable` does."""
        put(f"/etc/systemd/system/{unit_name}", text)
        for target in wanted_by:
            link(f"/etc/systemd/system/{target}.wants/{unit_name}", f"/etc/systemd/system/{unit_name}")

    # The driver's end of the guest contract, always the version this driver speaks.
    put("/usr/lib/vmrig/backdoor", (GUEST_DIR / "backdoor").read_bytes(), 0o755)
    put("/usr/lib/vmrig/protocol.bash", (GUEST_DIR / "protocol.bash").read_bytes())
    put("/usr/lib/vmrig/bash", (GUEST_DIR / "bash").read_bytes())
    link("/usr/lib/vmrig/vmrig-copy-out", "/usr/bin/cat")  # the backdoor's output copier
    # machine.shell_interact()'s guest side; started only when asked for.
    put("/usr/lib/vmrig/shell", (GUEST_DIR / "shell").read_bytes(), 0o755)
    # A restored guest's clock and RNG fix-up (vmrig.image.snapshot, guest/fixup.c).
    put("/usr/lib/vmrig/fixup", fixup, 0o755)
    # get_window_names()'s guest side.
    put("/usr/lib/vmrig/window-names", (GUEST_DIR / "window-names").read_bytes(), 0o755)
    unit(BACKDOOR_UNIT, (GUEST_DIR / BACKDOOR_UNIT).read_bytes(), "sysinit.target")
    unit(WAIT_UNIT, (GUEST_DIR / WAIT_UNIT).read_bytes())
    for basic in BASIC_UNITS:
        unit(basic, (GUEST_DIR / basic).read_bytes())
    if block_stacks:
        # Only then: its ordering (after udevd is up, before the coldplug and the local
        # file systems) held basic.target back by 0.5 s, even with its conditions false.
        unit(BLOCK_STACKS_UNIT, (GUEST_DIR / BLOCK_STACKS_UNIT).read_bytes(), "sysinit.target")
    put("/etc/systemd/journald.conf.d/60-vmrig-nixos.conf", (GUEST_DIR / "journald-nixos.conf").read_bytes())
    for journal, target in JOURNAL_UNITS.items():
        unit(journal, (GUEST_DIR / journal).read_bytes(), target)
    # The initramfs has set every address (without duplicate address detection)
    # before systemd starts; the cards' network-addresses units (NixOS's) only
    # find them there. Nothing else pulls these targets in here; NixOS test VMs
    # reach both.
    for target in NETWORK_TARGETS:
        link(f"/etc/systemd/system/multi-user.target.wants/{target}", f"/usr/lib/systemd/system/{target}")
    for interface in network.interfaces:
        unit(f"network-addresses-{interface.name}.service", address_unit(interface).encode(), "network.target")
    if network.gateways:
        unit("network-setup.service", network_setup_unit(network.gateways).encode(), "network.target")
    put("/etc/systemd/system/getty@.service.d/50-vmrig.conf", (GUEST_DIR / "getty.conf").read_bytes())
    put("/etc/hostname", f"{name}\n".encode())
    put("/etc/machine-id", f"{machine_id(name)}\n".encode(), 0o444)
    # A node's own /etc/hosts adds to the generated one, as NixOS's networking.extraHosts
    # does: the other nodes' names and localhost keep resolving.
    entries = node.file_entries()
    own_hosts = entries.get("/etc/hosts")
    hosts = hosts_file(name, network).encode()
    if own_hosts is not None:
        own = own_hosts.content.encode() if isinstance(own_hosts.content, str) else own_hosts.content
        hosts += own if own.endswith(b"\n") or not own else own + b"\n"
    put("/etc/hosts", hosts, own_hosts.mode if own_hosts is not None else 0o644)
    put("/etc/fstab", b"")
    # useradd's default shell, bash as on NixOS (users.defaultUserShell); Debian's is
    # /bin/sh, where a script's `useradd -m alice` then waits for alice's bash in vain.
    put("/etc/default/useradd", b"SHELL=/bin/bash\n")
    # NixOS's locale for PAM sessions too (su -, ssh, tty logins), which read this file on
    # Debian; systemd and the backdoor have it from the base image's /etc/locale.conf.
    put("/etc/default/locale", b"LANG=en_US.UTF-8\n")
    # And login shells whose PAM stack reads neither (runuser -l), as NixOS's /etc/profile sets it.
    put("/etc/profile.d/vmrig-locale.sh", b': "${LANG:=en_US.UTF-8}"\nexport LANG\n')
    if network.outside_access:
        put("/etc/resolv.conf", f"nameserver {USER_NET_DNS}\n".encode())
    staged: list[str] = []
    for path, entry in sorted(entries.items()):
        if path == "/etc/hosts":
            continue  # above
        data = entry.content.encode() if isinstance(entry.content, str) else entry.content
        laid = laid_path(path)
        put(laid, data, entry.mode)
        if laid != path:
            staged.append(path)
        directory, _, program = path.rpartition("/")
        if directory in PROGRAM_DIRS and entry.mode & 0o111:
            link(f"{SYSTEM_PROFILE_BIN}/{program}", path)
    if staged:
        put(RUNTIME_RULES, runtime_rules(staged).encode())
    if node.firewall is not None:
        guest = guest_firewall(node.firewall)
        for path, content in guest.files.items():
            put(path, content)
        for fw_unit, fw_text in guest.units.items():
            unit(fw_unit, fw_text, "sysinit.target")
        for debian_unit in guest.enable:
            link(f"/etc/systemd/system/sysinit.target.wants/{debian_unit}", f"/usr/lib/systemd/system/{debian_unit}")
    links = node.install_links()
    for file_name, text in sorted(node.unit_files().items()):
        put(f"/etc/systemd/system/{file_name}", text.encode())
        for relative in links.get(file_name, []):
            link(f"/etc/systemd/system/{relative}", f"/etc/systemd/system/{file_name}")
    early = network_script(network) + KERNEL_FS_SCRIPT + mount_script(mounts or [])
    archive.file("network.sh", early.encode(), 0o644)
    setup = setup_script(node)
    if setup:
        archive.file("setup.sh", setup.encode(), 0o644)
    archive.close()
    return buffer.getvalue()
