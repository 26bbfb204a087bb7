"""The SSH backdoor's pieces that need no VM: endpoints, ssh_config, state files, QEMU arguments."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from vmrig import ssh
from vmrig.errors import UsageError
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig
from vmrig.spec import Firewall, FirewallPorts, Node


def test_tcp_endpoint_command_and_config() -> None:
    endpoint = ssh.Endpoint("node1", port=40123)
    assert endpoint.alias == "node1"
    assert endpoint.forwards() == [(40123, 22)]
    command = endpoint.command()
    assert command[0] == "ssh"
    assert command[-3:] == ["-p", "40123", "127.0.0.1"]
    assert "User=root" in command and "UserKnownHostsFile=/dev/null" in command
    entry = endpoint.config_entry()
    assert entry.startswith("Host node1\n")
    assert "    HostName 127.0.0.1\n" in entry and "    Port 40123\n" in entry
    assert "ProxyCommand" not in entry


def test_vsock_endpoint_command_and_config() -> None:
    endpoint = ssh.Endpoint("node1", cid=3)
    assert endpoint.alias == "vsock/3"
    assert endpoint.forwards() == []
    assert endpoint.command()[-3:] == ["-o", "ProxyCommand=socat - VSOCK-CONNECT:3:22", "vsock/3"]
    entry = endpoint.config_entry()
    assert entry.startswith("Host node1 vsock/3\n")
    assert "    ProxyCommand socat - VSOCK-CONNECT:3:22\n" in entry


def test_ssh_config_is_valid_for_the_openssh_client(tmp_path: Path) -> None:
    backdoor = ssh.Backdoor(vsock=False, vsock_offset=2)
    backdoor.endpoint("node1", 1)
    backdoor.endpoint("node2", 2)
    backdoor.publish(tmp_path, {"node1": tmp_path / "s1", "node2": tmp_path / "s2"}, Logger(io.StringIO()))
    assert backdoor.config_path is not None
    # `ssh -G` prints the configuration ssh would use, without connecting.
    result = subprocess.run(
        ["ssh", "-G", "-F", str(backdoor.config_path), "node2"], capture_output=True, text=True, check=True
    )
    settings = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert settings["hostname"] == "127.0.0.1"
    assert settings["port"] == str(backdoor.endpoints["node2"].port)
    assert settings["user"] == "root"
    assert settings["stricthostkeychecking"] == "false"


def test_cids_follow_node_numbers_and_offset() -> None:
    backdoor = ssh.Backdoor(vsock=True, vsock_offset=2)
    assert backdoor.endpoint("a", 1).cid == 3  # the first machine is vsock/3, as in NixOS
    assert backdoor.endpoint("b", 2).cid == 4
    assert backdoor.endpoint("a", 1).cid == 3  # chosen once
    assert ssh.Backdoor(vsock=True, vsock_offset=1000).endpoint("a", 1).cid == 1001


def test_tcp_ports_are_distinct_and_free() -> None:
    backdoor = ssh.Backdoor(vsock=False, vsock_offset=2)
    ports = {backdoor.endpoint(f"n{i}", i).port for i in range(1, 6)}
    assert len(ports) == 5
    assert all(port is not None and 1024 <= port <= 65535 for port in ports)


def test_publish_writes_state_files_in_private_dirs(tmp_path: Path) -> None:
    stream = io.StringIO()
    backdoor = ssh.Backdoor(vsock=False, vsock_offset=2)
    backdoor.endpoint("node1", 1)
    state_dir = tmp_path / "vm-state-node1"
    backdoor.publish(tmp_path, {"node1": state_dir}, Logger(stream, color=False))
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    state = json.loads((state_dir / ssh.STATE_FILE).read_text())
    assert state["pid"] == os.getpid()
    assert state["host"] == "node1"
    assert state["ssh_config"] == str(tmp_path / "ssh_config")
    log = stream.getvalue()
    assert "SSH backdoor enabled" in log
    assert "node1: ssh -o User=root" in log
    assert f"-p {backdoor.endpoints['node1'].port} 127.0.0.1" in log
    assert f"ssh -F {tmp_path / 'ssh_config'} node1" in log

    command = ssh.ssh_command("node1", tmp_path, ["hostname"])
    assert command[1:] == ["-F", str(tmp_path / "ssh_config"), "node1", "hostname"]

    backdoor.withdraw()
    assert not (state_dir / ssh.STATE_FILE).exists()
    with pytest.raises(UsageError, match="no running vmrig session"):
        ssh.session_state("node1", tmp_path)


def test_state_of_a_dead_session_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "vm-state-node1"
    state_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state_dir / ssh.STATE_FILE).write_text(json.dumps({"pid": dead.pid, "ssh_config": "x", "host": "node1"}))
    with pytest.raises(UsageError, match="no longer running"):
        ssh.session_state("node1", tmp_path)


def test_backdoor_node_adds_sshd_and_its_configuration() -> None:
    node = Node(packages=["curl"], files={"/etc/motd": "hi\n"}, kernel_params=["quiet"])
    changed = ssh.backdoor_node(node, vsock=False)
    assert changed.packages == ["curl", "openssh-server"]
    assert changed.image_inputs()["packages"] == ["curl", "openssh-server"]
    conf = changed.files["/etc/ssh/sshd_config.d/00-vmrig-backdoor.conf"]
    assert isinstance(conf, str)
    assert "PermitRootLogin yes" in conf and "PermitEmptyPasswords yes" in conf and "UsePAM no" in conf
    assert changed.files["/etc/motd"] == "hi\n"
    assert changed.kernel_params == ["quiet", "systemd.ssh_auto=no"]
    assert changed.services == {}
    assert node.packages == ["curl"]  # the original is unchanged

    over_vsock = ssh.backdoor_node(Node(packages=["openssh-server"]), vsock=True)
    assert over_vsock.packages == ["openssh-server"]
    units = over_vsock.unit_files()
    assert "ListenStream=vsock::22" in units["vmrig-sshd-vsock.socket"]
    assert "sshd -i" in units["vmrig-sshd-vsock@.service"]
    assert over_vsock.enabled_units() == {"vmrig-sshd-vsock.socket": ["sockets.target"]}


def test_backdoor_over_the_user_network_opens_only_sshd_in_a_firewall() -> None:
    node = Node(firewall=Firewall(allowed_tcp_ports=[80], interfaces={"eth0": FirewallPorts(allowed_tcp_ports=[8000])}))
    firewall = ssh.backdoor_node(node, vsock=False).firewall
    assert firewall is not None and firewall.allowed_tcp_ports == [80]
    assert firewall.interfaces["eth0"].allowed_tcp_ports == [8000, 22]
    over_vsock = ssh.backdoor_node(node, vsock=True).firewall  # netfilter does not see vsock
    assert over_vsock is not None and over_vsock.interfaces["eth0"].allowed_tcp_ports == [8000]
    assert ssh.backdoor_node(Node(), vsock=False).firewall is None


def test_vsock_cid_in_use_gets_a_hint() -> None:
    console = (
        "qemu-system-x86_64: -device vhost-vsock-pci,guest-cid=3: "
        "vhost-vsock: unable to set guest cid: Address already in use"
    )
    hint = ssh.vsock_cid_hint(console, 3)
    assert "CID 3 is already used" in hint
    assert "vsock_offset=" in hint
    assert ssh.vsock_cid_hint(console, None) == ""
    assert ssh.vsock_cid_hint("something else", 3) == ""


def test_vsock_usable_needs_the_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ssh, "VHOST_VSOCK", tmp_path / "missing")
    assert not ssh.vsock_usable()
    present = tmp_path / "present"
    present.write_text("")
    monkeypatch.setattr(ssh, "VHOST_VSOCK", present)
    assert ssh.vsock_usable()


def test_qemu_command_has_the_shell_port_and_vsock(tmp_path: Path) -> None:
    config = MachineConfig(
        name="node1",
        disk=tmp_path / "disk.qcow2",
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        vsock_cid=7,
    )
    machine = Machine(config, state_dir=tmp_path / "state", out_dir=tmp_path, logger=Logger(io.StringIO()))
    command = machine.qemu_command(tmp_path / "o.qcow2", 10, 11, 12, False, shell_port_fd=13)
    joined = " ".join(command)
    assert "-chardev socket,id=tty,fd=13 -device virtserialport,chardev=tty,name=vmrig.shell" in joined
    assert "-device vhost-vsock-pci,guest-cid=7" in joined
    without = Machine(
        MachineConfig(name="n", disk=config.disk, kernel=config.kernel, initrd=config.initrd),
        state_dir=tmp_path / "state2",
        out_dir=tmp_path,
        logger=Logger(io.StringIO()),
    ).qemu_command(tmp_path / "o.qcow2", 10, 11, 12, False)
    assert "vhost-vsock" not in " ".join(without)
