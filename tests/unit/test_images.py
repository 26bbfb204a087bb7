"""Image-layer logic that needs no VM: cpio archives, the config layer, cache bookkeeping."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from tests.conftest import failing_tools

from vmrig.errors import ArgumentError, HostCommandFailed, ImageBuildError, UnknownPackageError
from vmrig.image import snapshot
from vmrig.image import store as store_module
from vmrig.image.build import BUILD_STEP_FAILED, STATIC_NODES_CONF, install_script, static_nodes_tmpfiles
from vmrig.image.configlayer import Interface, NodeNetwork, config_layer, hosts_file, machine_id, network_script
from vmrig.image.cpio import CpioWriter
from vmrig.image.firewall import guest_firewall, nft_table
from vmrig.image.store import BaseImage, ImageStore, NodeImage, install_in_chroot, key_of, make_disk
from vmrig.spec import DEFAULT_DISK_MIB, File, Firewall, FirewallPorts, Node, Service, User


def read_newc(data: bytes) -> dict[str, tuple[int, int, bytes]]:
    """name -> (mode, uid, data) for every entry of a newc archive."""
    entries = {}
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + i * 8 : offset + 14 + i * 8], 16) for i in range(13)]
        mode, uid, size, namesize = fields[1], fields[2], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[data_start : data_start + size]
        offset = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, uid, body)


def test_cpio_entries_round_trip() -> None:
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    archive.directory("etc", 0o700)
    archive.file("etc/a", b"abc", 0o640, uid=5)
    archive.symlink("etc/b", "a")
    archive.file("odd-name-length", b"x" * 5)
    archive.close()
    data = buffer.getvalue()
    assert len(data) % 512 == 0
    entries = read_newc(data)
    assert entries["etc"][0] == stat.S_IFDIR | 0o700
    assert entries["etc/a"] == (stat.S_IFREG | 0o640, 5, b"abc")
    assert entries["etc/b"] == (stat.S_IFLNK | 0o777, 0, b"a")
    assert entries["odd-name-length"][2] == b"xxxxx"


def network(outside: bool = False) -> NodeNetwork:
    return NodeNetwork(
        number=2,
        interfaces=(Interface(1, 1, "192.168.1.2/24", "2001:db8:1::2/64"),),
        hosts=(("client", "192.168.1.1", "2001:db8:1::1"), ("server", "192.168.1.2", "2001:db8:1::2")),
        outside_access=outside,
    )


def test_config_layer_contents() -> None:
    node = Node(
        files={"/etc/app.conf": File(content="x=1\n", mode=0o600, owner="alice"), "/srv/plain": "plain\n"},
        services={
            "web": Service(exec_start="/bin/true"),
            "raw.timer": "[Timer]\nOnBootSec=1\n[Install]\nWantedBy=timers.target\n",
        },
        users={"alice": User(uid=1500, groups=["adm"])},
    )
    entries = read_newc(config_layer("server", node, network(), fixup=b"the fix-up"))
    assert entries["config/etc/hostname"][2] == b"server\n"
    assert entries["config/etc/machine-id"][2] == f"{machine_id('server')}\n".encode()
    assert entries["config/etc/app.conf"][0] == stat.S_IFREG | 0o600
    assert entries["config/srv/plain"][2] == b"plain\n"
    assert b"ExecStart=/bin/true" in entries["config/etc/systemd/system/web.service"][2]
    assert entries["config/etc/systemd/system/multi-user.target.wants/web.service"][2] == (
        b"/etc/systemd/system/web.service"
    )
    assert "config/etc/systemd/system/timers.target.wants/raw.timer" in entries
    # the backdoor always comes with the config layer
    assert "config/usr/lib/vmrig/protocol.bash" in entries
    assert entries["config/usr/lib/vmrig/fixup"][0::2] == (stat.S_IFREG | 0o755, b"the fix-up")
    assert "config/etc/systemd/system/sysinit.target.wants/vmrig-backdoor.service" in entries
    # agetty is told its terminal's name, as NixOS's getty is
    assert b"--noclear %I " in entries["config/etc/systemd/system/getty@.service.d/50-vmrig.conf"][2]
    setup = entries["setup.sh"][2].decode()
    assert "useradd" in setup and "--uid 1500" in setup and "usermod --append --groups adm alice" in setup
    assert "chown alice:root /etc/app.conf" in setup
    assert b"ip addr add 192.168.1.2/24 dev eth1" in entries["network.sh"][2]
    # NixOS's unit for the card: one `ip -batch` that sets the addresses again; nodad only for IPv6
    unit = entries["config/etc/systemd/system/network-addresses-eth1.service"][2].decode()
    assert "StandardInputText=address replace 192.168.1.2/24 dev eth1\n" in unit
    assert "StandardInputText=address replace 2001:db8:1::2/64 dev eth1 nodad\n" in unit
    assert "ExecStart=ip -batch -\n" in unit and "Before=network.target" in unit
    assert "config/etc/systemd/system/network.target.wants/network-addresses-eth1.service" in entries
    # no outside access unless asked for
    assert "config/etc/resolv.conf" not in entries
    assert b"default via" not in entries["network.sh"][2]
    assert "config/etc/resolv.conf" in read_newc(config_layer("server", Node(), network(outside=True), fixup=b""))
    # md arrays and volume groups are assembled at boot only on an image with mdadm or LVM
    stacks = "config/etc/systemd/system/sysinit.target.wants/vmrig-block-stacks.service"
    assert stacks in entries
    assert stacks not in read_newc(config_layer("server", Node(), network(), fixup=b"", block_stacks=False))
    # an executable a node puts where programs live is in NixOS's system profile too
    programs = Node(files={"/usr/local/bin/tool": File(content="#!/bin/sh\n", mode=0o755), "/usr/bin/data": "x"})
    linked = read_newc(config_layer("server", programs, network(), fixup=b""))
    assert linked["config/usr/lib/vmrig/current-system/sw/bin/tool"][2] == b"/usr/local/bin/tool"
    assert "config/usr/lib/vmrig/current-system/sw/bin/data" not in linked


def test_firewall_in_the_config_layer_iptables_as_nixos_by_default() -> None:
    assert "config/etc/systemd/system/firewall.service" not in read_newc(
        config_layer("s", Node(), network(), fixup=b"")
    )
    node = Node(
        firewall=Firewall(
            allowed_tcp_ports=[80, 443],
            allowed_udp_port_ranges=[(60000, 61000)],
            trusted_interfaces=["eth2"],
            interfaces={"wg*": FirewallPorts(allowed_tcp_ports=[22])},
            allow_ping=False,
        )
    )
    assert node.packages == ["iptables"]
    entries = read_newc(config_layer("server", node, network(), fixup=b""))
    unit = entries["config/etc/systemd/system/firewall.service"][2].decode()
    assert "ExecStart=iptables-restore -w --noflush /etc/vmrig/firewall/rules4\n" in unit
    assert "ExecStart=ip6tables-restore -w --noflush /etc/vmrig/firewall/rules6\n" in unit
    assert "ExecStop=/bin/bash -e /etc/vmrig/firewall/stop" in unit and "Before=network-pre.target" in unit
    assert unit.index("ExecStart=/bin/bash /etc/vmrig/firewall/clean") < unit.index("ExecStart=iptables-restore")
    assert "ExecReload=/bin/bash /etc/vmrig/firewall/clean" in unit
    assert "config/etc/systemd/system/sysinit.target.wants/firewall.service" in entries
    rules4 = entries["config/etc/vmrig/firewall/rules4"][2].decode()
    rules6 = entries["config/etc/vmrig/firewall/rules6"][2].decode()
    for rules in (rules4, rules6):
        assert ":nixos-fw - [0:0]" in rules and "-A nixos-fw -i lo -j nixos-fw-accept" in rules
        assert "-A nixos-fw -i eth2 -j nixos-fw-accept" in rules
        assert "-A nixos-fw -p tcp --dport 443 -j nixos-fw-accept\n" in rules
        assert "-A nixos-fw -p udp --dport 60000:61000 -j nixos-fw-accept" in rules
        assert "-A nixos-fw -p tcp --dport 22 -j nixos-fw-accept -i wg+" in rules  # nft's * is iptables' +
        assert '--log-prefix "refused connection: "' in rules and "-A nixos-fw-refuse -j DROP" in rules
        assert rules.index("-A nixos-fw -j nixos-fw-log-refuse") < rules.index("-A INPUT -j nixos-fw")
        assert "-m rpfilter --validmark -j RETURN" in rules and "-A PREROUTING -j nixos-fw-rpfilter" in rules
    assert "echo-request" not in rules4 and "--icmpv6-type redirect -j DROP" in rules6
    # A stop unhooks the chains and keeps them, as NixOS's; the next start's clean-up deletes them first.
    stop = entries["config/etc/vmrig/firewall/stop"][2].decode()
    assert "while ip6tables -w -D INPUT -j nixos-fw 2>/dev/null; do :; done" in stop and "-X" not in stop
    clean = entries["config/etc/vmrig/firewall/clean"][2].decode()
    assert clean.startswith("if [ -e /run/vmrig-firewall.started ]; then\n")
    assert "ip6tables -w -t filter -X nixos-fw" in clean


def test_firewall_extra_commands_run_before_the_final_refusal() -> None:
    files = guest_firewall(
        Firewall(extra_commands="ip46tables -A nixos-fw -p tcp --dport 9 -j nixos-fw-accept", reject_packets=True)
    ).files
    assert "-j nixos-fw-log-refuse" not in files["/etc/vmrig/firewall/rules4"].decode()
    extra = files["/etc/vmrig/firewall/extra"].decode()
    assert extra.startswith("ip46tables() {") and extra.endswith("--dport 9 -j nixos-fw-accept\n")
    assert (
        files["/etc/vmrig/firewall/tail"]
        == b"*filter\n-A nixos-fw -j nixos-fw-log-refuse\n-A INPUT -j nixos-fw\nCOMMIT\n"
    )
    assert "REJECT --reject-with tcp-reset" in files["/etc/vmrig/firewall/rules4"].decode()
    unit = guest_firewall(Firewall(extra_commands="true")).units["firewall.service"].decode()
    assert unit.index("ExecStart=/bin/bash -e /etc/vmrig/firewall/extra") < unit.index(
        "ExecStart=iptables-restore -w --noflush /etc/vmrig/firewall/tail"
    )


def test_firewall_with_the_nftables_backend_is_debians_nftables_service() -> None:
    node = Node(firewall=Firewall(backend="nftables", allowed_tcp_ports=[80], ping_limit="1/minute burst 5 packets"))
    assert node.packages == ["nftables"]
    entries = read_newc(config_layer("server", node, network(), fixup=b""))
    assert "config/etc/systemd/system/firewall.service" not in entries
    assert entries["config/etc/systemd/system/sysinit.target.wants/nftables.service"][2] == (
        b"/usr/lib/systemd/system/nftables.service"
    )
    conf = entries["config/etc/nftables.conf"][2].decode()
    # Only its own table is replaced, and a stop deletes only it (Debian's unit flushes every table).
    assert conf.startswith("#!/usr/sbin/nft -f\ntable inet nixos-fw\ndelete table inet nixos-fw\n")
    assert "table inet nixos-fw {" in conf and "flush ruleset" not in conf
    drop_in = entries["config/etc/systemd/system/nftables.service.d/50-vmrig.conf"][2]
    assert drop_in == b"[Service]\nExecStop=\nExecStop=-nft delete table inet nixos-fw\n"
    assert "policy drop;" in conf and 'iifname { "lo" } accept' in conf and "tcp dport { 80 } accept" in conf
    assert "icmp type echo-request limit rate 1/minute burst 5 packets accept" in conf
    assert "fib saddr . mark . iif oif exists accept" in conf and 'log prefix "refused connection: "' in conf
    loose = nft_table(
        Firewall(
            backend="nftables",
            check_reverse_path="loose",
            reject_packets=True,
            log_refused_connections=False,
            extra_input_rules="tcp dport 9 accept",
            trusted_interfaces=["veth+"],
        )
    )
    assert "fib saddr . mark oif exists accept" in loose and "icmp type echo-request accept" in loose
    assert "reject with tcp reset" in loose and "refused connection" not in loose
    assert "        tcp dport 9 accept\n" in loose and '"veth*"' in loose
    assert "rpfilter" not in nft_table(Firewall(backend="nftables", check_reverse_path=False))


def test_default_gateways_are_set_in_the_initramfs_and_by_network_setup() -> None:
    # NixOS's networking.defaultGateway(6), set by its network-setup.service
    routed = dataclasses.replace(network(), gateways=("192.168.1.9", "2001:db8:1::9"))
    script = network_script(routed)
    assert "ip route add default via 192.168.1.9 2>/dev/null\n" in script
    assert "ip -6 route add default via 2001:db8:1::9 2>/dev/null\n" in script
    entries = read_newc(config_layer("client", Node(), routed, fixup=b""))
    unit = entries["config/etc/systemd/system/network-setup.service"][2].decode()
    assert "StandardInputText=route replace default via 192.168.1.9\n" in unit
    assert "StandardInputText=route replace default via 2001:db8:1::9\n" in unit
    assert "config/etc/systemd/system/network.target.wants/network-setup.service" in entries
    # the node's own IPv4 gateway wins over QEMU's user network in runs that reach outside
    outside = dataclasses.replace(routed, outside_access=True)
    assert "via 10.0.2.2" not in network_script(outside)
    # no gateway, no unit
    assert "config/etc/systemd/system/network-setup.service" not in read_newc(
        config_layer("client", Node(), network(), fixup=b"")
    )
    # and QEMU's user network is no IPv6 router in runs that do not reach outside
    assert "echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra" in network_script(network())
    assert "accept_ra" not in network_script(network(outside=True))


def test_hosts_and_network_script() -> None:
    hosts = hosts_file("server", network())
    assert "192.168.1.1 client\n" in hosts
    assert "2001:db8:1::2 server\n" in hosts
    script = network_script(network())
    assert "ip -6 addr add 2001:db8:1::2/64 dev eth1" in script
    assert "ip addr add 10.0.2.15/24 dev eth0" in script


def test_machine_ids_are_stable_and_distinct() -> None:
    assert machine_id("a") == machine_id("a")
    assert machine_id("a") != machine_id("b")
    assert len(machine_id("a")) == 32


def test_keys_depend_on_every_input() -> None:
    base = {"layer": "packages", "base": "k", "packages": ["curl"], "build_commands": []}
    assert key_of(base) == key_of(dict(reversed(list(base.items()))))
    assert key_of(base) != key_of({**base, "packages": ["curl", "jq"]})
    assert key_of(base) != key_of({**base, "build_commands": ["true"]})


def test_image_inputs_ignore_per_run_config() -> None:
    plain = Node(packages=["curl"])
    configured = Node(
        packages=["curl"],
        files={"/etc/x": "y"},
        services={"s": Service(exec_start="/bin/true")},
        users={"bob": User()},
        memory_size=2048,
    )
    assert plain.image_inputs() == configured.image_inputs()
    assert Node(packages=["jq", "curl"]).image_inputs() == Node(packages=["curl", "jq"]).image_inputs()


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, progress=lambda _m: None)
    final = tmp_path / "image-abc"
    with pytest.raises(RuntimeError), store._building(final) as scratch:
        (scratch / "root.qcow2").write_text("half")
        raise RuntimeError("killed")
    assert not final.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    with store._building(final) as scratch:
        (scratch / "root.qcow2").write_text("whole")
    assert store._complete(final)
    assert (final / "root.qcow2").read_text() == "whole"


def test_stale_scratch_of_a_killed_build_is_removed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, progress=lambda _m: None)
    stale = tmp_path / "tmp" / "image-abc.x1y2"
    stale.mkdir(parents=True)
    with store._building(tmp_path / "image-abc"):
        assert not stale.exists()


def test_lock_makes_a_second_builder_wait(tmp_path: Path) -> None:
    messages: list[str] = []
    store = ImageStore(tmp_path, progress=messages.append)
    order: list[str] = []
    with store._locked("k1"):

        def second() -> None:
            with store._locked("k1"):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
    assert any("waiting for another vmrig" in m for m in messages)


def test_gc_removes_unused_entries_only(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, progress=lambda _m: None)
    old = tmp_path / "image-old"
    new = tmp_path / "image-new"
    for path, last_used in ((old, time.time() - 30 * 86400), (new, time.time())):
        path.mkdir()
        (path / "complete").write_text("")
        (path / "last-used").write_text(f"{last_used - 1:.0f}\n")
    removed = store.gc(older_than_days=14)
    assert removed == [old]
    assert not old.exists() and new.exists()
    assert store.gc(older_than_days=0, dry_run=True) == [new]
    assert new.exists()
    assert os.path.isdir(tmp_path / "locks")


def test_an_entry_removed_while_the_cache_is_listed_is_left_out(tmp_path: Path) -> None:
    # Another run removed it between the listing and the look at it (seen with parallel workers).
    store = ImageStore(tmp_path, progress=lambda _m: None)
    (tmp_path / "snapshot-gone").symlink_to(tmp_path / "removed")
    kept = tmp_path / "image-kept"
    kept.mkdir()
    assert [path for path, _used, _size in store.entries()] == [kept]


def test_a_failing_mkfs_says_which_command_failed_and_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failing_tools(monkeypatch, tmp_path, "mkfs.ext4", "qemu-img", message="mkfs.ext4: No space left on device")
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("node\n")
    disk = tmp_path / "image" / "root.qcow2"
    disk.parent.mkdir()
    with pytest.raises(HostCommandFailed) as caught:
        make_disk(tree, disk)
    error = caught.value
    assert error.argv[0] == str(tmp_path / "failing-bin" / "mkfs.ext4")
    assert str(tree) in error.argv and error.status == 1
    assert error.stderr_tail == "mkfs.ext4: No space left on device"
    assert "command failed (exit status 1): " in str(error) and "No space left on device" in str(error)
    assert list(disk.parent.iterdir()) == []  # neither the raw file nor a disk is left


def test_apt_failing_in_the_chroot_is_an_image_build_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failing_tools(monkeypatch, tmp_path, "unshare", message="E: Unable to locate package no-such-thing")
    with pytest.raises(UnknownPackageError, match=r"^apt could not find package\(s\): no-such-thing\n") as caught:
        install_in_chroot(tmp_path / "root", ["no-such-thing"], [])
    assert caught.value.packages == ["no-such-thing"] and isinstance(caught.value, ImageBuildError)
    cause = caught.value.__cause__
    assert isinstance(cause, HostCommandFailed) and cause.status == 1
    assert cause.argv[0] == str(tmp_path / "failing-bin" / "unshare")


def test_a_failing_build_command_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The script as the chroot runs it, with a stand-in apt-get: the second command fails,
    # the first one's `cd` held for it, and nothing after it ran.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "apt-get").chmod(0o755)
    # The first command's last line ends in a backslash; the second fails amid a line of its output.
    commands = [f"cd {tmp_path} \\", "echo ran > here; printf unended >&2; exit 3", "echo never > later"]
    result = subprocess.run(
        ["sh", "-c", install_script(["hello"], commands)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode == 3
    assert result.stderr == f"unended\n{BUILD_STEP_FAILED} 1 3\n"
    assert (tmp_path / "here").read_text() == "ran\n" and not (tmp_path / "later").exists()
    # What the driver makes of it.
    failing_tools(monkeypatch, tmp_path, "unshare", message=f"{BUILD_STEP_FAILED} 1 2")
    message = r"^Node.build_commands\[1\] failed \(exit status 2\) in the image's chroot, run by /bin/sh: 'false'\n"
    with pytest.raises(ImageBuildError, match=message) as caught:
        install_in_chroot(tmp_path / "root", [], ["true", "false"])
    # a command that looked for a node's file is told why it was not there
    assert str(caught.value).endswith(
        "the node's files, users and units are not there yet; they are laid over the image at every boot)"
    )


def test_a_kernel_the_packages_install_is_the_one_the_node_boots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = ImageStore(tmp_path / "cache", progress=lambda _m: None)
    base = BaseImage("b1", tmp_path / "cache" / "base-b1")
    (base.root / "boot").mkdir(parents=True)
    (base.root / "bin").mkdir()
    (base.root / "bin" / "busybox").write_bytes(b"busybox")
    (base.root / "boot" / "vmlinuz-6.12-cloud-amd64").write_bytes(b"cloud kernel")
    (base.path / "vmlinuz").write_bytes(b"cloud kernel")
    (base.path / "initrd.img").write_bytes(b"cloud initrd")

    def install(tree: Path, packages: list[str], _commands: list[str]) -> None:
        if "mdadm" in packages:
            (tree / "usr" / "sbin").mkdir(parents=True)
            (tree / "usr" / "sbin" / "mdadm").write_bytes(b"mdadm")
        if "linux-image-amd64" not in packages:
            return
        (tree / "boot" / "vmlinuz-6.12-amd64").write_bytes(b"generic kernel")
        modules = tree / "lib" / "modules" / "6.12-amd64"
        (modules / "kernel").mkdir(parents=True)
        (modules / "kernel" / "ext4.ko").write_bytes(b"ext4 module")
        (modules / "kernel" / "jbd2.ko").write_bytes(b"jbd2 module")
        (modules / "modules.dep").write_text("kernel/ext4.ko: kernel/jbd2.ko\nkernel/jbd2.ko:\n")
        (modules / "modules.devname").write_text("snd_timer snd/timer c116:33\n")

    static_nodes: list[str] = []

    def disk(tree: Path, path: Path) -> tuple[int, int]:
        if (tree / STATIC_NODES_CONF).exists():
            static_nodes.append((tree / STATIC_NODES_CONF).read_text())
        path.write_bytes(b"disk")
        return 4096, 1024

    monkeypatch.setattr(store_module, "install_in_chroot", install)
    monkeypatch.setattr(store_module, "make_disk", disk)
    monkeypatch.setattr(store, "base", lambda _suite, _mirror=None: base)

    generic = store.node_image(Node(packages=["linux-image-amd64"]), "trixie")
    assert generic.kernel.parent == generic.disk.parent  # the image's own, not the base's
    assert generic.kernel.read_bytes() == b"generic kernel" and generic.bzimage == generic.kernel
    entries = read_newc(generic.initrd.read_bytes())
    assert entries["modules/ext4.ko"][2] == b"ext4 module"
    assert entries["modules.order"][2] == b"jbd2.ko\next4.ko\n"  # dependencies first
    # The image's static device nodes are its own kernel's.
    assert static_nodes == ["d /dev/snd 0755 - - -\nc! /dev/snd/timer 0600 - - - 116:33\n"]

    cloud = store.node_image(Node(packages=["curl"]), "trixie")
    assert (cloud.kernel, cloud.initrd) == (base.path / "vmlinuz", base.initrd)
    # Whether md arrays and volume groups are assembled at boot (the config layer's unit).
    assert not cloud.block_stack_tools and not generic.block_stack_tools
    assert store.node_image(Node(packages=["mdadm"]), "trixie").block_stack_tools


def test_static_device_nodes_as_kmod_lists_them() -> None:
    devname = (
        "# Device nodes to trigger on-demand module loading.\n"
        "tun net/tun c10:200\n"
        "loop loop-control c10:237\n"
        "snd_seq snd/seq c116:1\n"
        "snd_timer snd/timer c116:33\n"
        "\n"
    )
    assert static_nodes_tmpfiles(devname) == (
        "d /dev/net 0755 - - -\n"
        "c! /dev/net/tun 0600 - - - 10:200\n"
        "c! /dev/loop-control 0600 - - - 10:237\n"
        "d /dev/snd 0755 - - -\n"  # each directory once
        "c! /dev/snd/seq 0600 - - - 116:1\n"
        "c! /dev/snd/timer 0600 - - - 116:33\n"
    )
    with pytest.raises(ImageBuildError, match="modules.devname line 2"):
        static_nodes_tmpfiles("tun net/tun c10:200\ntun net/tun 10:200\n")


def _fs_facts(disk: Path, tmp_path: Path) -> tuple[int, str, str]:
    """(size in MiB, its /etc/hostname, the block groups' flags) of the ext4 in the qcow2 image `disk`."""
    raw = tmp_path / "facts.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", disk, raw], check=True)
    try:
        header = subprocess.run(["dumpe2fs", raw], capture_output=True, text=True, check=True).stdout
        blocks = int(re.search(r"^Block count:\s+(\d+)", header, re.MULTILINE).group(1))  # type: ignore[union-attr]
        size = int(re.search(r"^Block size:\s+(\d+)", header, re.MULTILINE).group(1))  # type: ignore[union-attr]
        hostname = subprocess.run(
            ["debugfs", "-R", "cat /etc/hostname", raw], capture_output=True, text=True, check=True
        ).stdout
        return blocks * size >> 20, hostname, header
    finally:
        raw.unlink()


def test_an_image_disk_has_the_default_size_and_resizes_on_the_host(tmp_path: Path) -> None:
    # Real mkfs.ext4, resize2fs and qemu-img on a tiny tree: no guest grows its disk at boot.
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("node\n")
    disk = tmp_path / "root.qcow2"
    assert make_disk(tree, disk) == (DEFAULT_DISK_MIB, 1024)
    size, hostname, groups = _fs_facts(disk, tmp_path)
    assert (size, hostname) == (DEFAULT_DISK_MIB, "node\n")
    # Every block group's inode table is written: no ext4lazyinit in the guest.
    assert groups.count("ITABLE_ZEROED") == len(re.findall(r"^Group \d+:", groups, re.MULTILINE)) > 0
    assert disk.stat().st_size < 64 << 20  # the zeros are left out of the qcow2 file

    store = ImageStore(tmp_path / "cache", progress=lambda _m: None)
    image = NodeImage("k", disk, tmp_path / "vmlinux", tmp_path / "initrd", DEFAULT_DISK_MIB, 1024)
    assert store.disk_of(image, DEFAULT_DISK_MIB) == disk
    for wanted in (1024, 6144):
        sized = store.disk_of(image, wanted)
        assert sized == tmp_path / f"root-{wanted}M.qcow2" and store.disk_of(image, wanted) == sized
        size, hostname, groups = _fs_facts(sized, tmp_path)
        assert (size, hostname) == (wanted, "node\n")
        assert groups.count("ITABLE_ZEROED") == len(re.findall(r"^Group \d+:", groups, re.MULTILINE))
    assert sorted(p.name for p in tmp_path.glob("*.qcow2")) == ["root-1024M.qcow2", "root-6144M.qcow2", "root.qcow2"]
    with pytest.raises(ArgumentError, match="smaller than its image needs"):
        store.disk_of(dataclasses.replace(image, min_disk_mib=2048), 1536)


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_make_room_removes_the_least_recently_used_entries_and_their_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gib = 1024**3
    now = time.time()
    for name, used in (("base-a", 100.0), ("image-b", 200.0), ("image-d", now)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "last-used").write_text(f"{used:.0f}\n")
    (tmp_path / "image-b" / "root.qcow2").write_text("disk")
    snap = tmp_path / f"{snapshot.PREFIX}c"
    snap.mkdir()
    (snap / "last-used").write_text(f"{now:.0f}\n")  # in use lately, but of an image about to go
    (snap / "backing").write_text(f"{tmp_path / 'image-b' / 'root.qcow2'}\n")

    def disk_usage(_path: object) -> Usage:
        # each entry left takes 4 GiB of a 20 GiB disk
        left = sum(1 for entry in tmp_path.iterdir() if entry.name != "locks")
        return Usage(20 * gib, 4 * gib * left, 20 * gib - 4 * gib * left)

    monkeypatch.setattr(store_module.shutil, "disk_usage", disk_usage)
    messages: list[str] = []
    removed = store_module.make_room(tmp_path, messages.append, needed=12 * gib)
    assert [path.name for path in removed] == ["base-a", "image-b", f"{snapshot.PREFIX}c"]
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["image-d", "locks"]
    assert messages == ["the disk was nearly full: removed the 3 least recently used cache entries"]
    # entries used within the last half hour stay, even when that is not enough
    assert store_module.make_room(tmp_path, messages.append, needed=19 * gib) == []
    assert (tmp_path / "image-d").is_dir()
