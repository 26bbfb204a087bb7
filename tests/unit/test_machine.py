"""Machine logic that needs no VM."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from tests.conftest import failing_tools

from vmrig.errors import ArgumentError, HostCommandFailed, MachineError
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig, qemu
from vmrig.machine.console import SerialConsole, search_console
from vmrig.machine.screen import screenshot_path
from vmrig.machine.systemd import wait_unit_for
from vmrig.net.plan import NetworkPlan, network_cards
from vmrig.scriptnames import public_attributes
from vmrig.spec import EmptyDisk, Node
from vmrig.timeouts import TimeoutScale
from vmrig.tpm import Swtpm


def test_wait_unit_instance_names() -> None:
    assert wait_unit_for("multi-user.target") == "vmrig-wait@multi-user.target.target"
    assert wait_unit_for("nginx") == "vmrig-wait@nginx.service.target"
    assert wait_unit_for("user@1000.service") == "vmrig-wait@user@1000.service.target"


def test_a_failing_qemu_img_says_which_command_failed_and_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failing_tools(monkeypatch, tmp_path, "qemu-img", message="qemu-img: Could not open backing file")
    missing = tmp_path / "no-such-image.qcow2"
    config = MachineConfig(name="node1", disk=missing, kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img")
    machine = Machine(config, state_dir=tmp_path / "state", out_dir=tmp_path, logger=Logger(io.StringIO(), color=False))
    with pytest.raises(HostCommandFailed) as caught:
        machine._prepare_state()
    error = caught.value
    assert error.argv[:2] == [str(tmp_path / "failing-bin" / "qemu-img"), "create"]
    assert str(missing) in error.argv and error.status == 1
    assert str(error).endswith("\nqemu-img: Could not open backing file")


def test_newest_nixos_names_for_the_ssh_backdoor_and_the_initrd(tmp_path: Path) -> None:
    def machine(ssh_command: list[str]) -> Machine:
        config = MachineConfig(name="node1", disk=tmp_path, kernel=tmp_path, initrd=tmp_path, ssh_command=ssh_command)
        return Machine(config, state_dir=tmp_path, out_dir=tmp_path, logger=Logger(io.StringIO(), color=False))

    command = ["ssh", "-o", "User=root", "-o", "ProxyCommand=socat - VSOCK-CONNECT:3:22", "vsock/3"]
    assert (
        machine(command).ssh_backdoor_command(1)
        == "ssh -o User=root -o 'ProxyCommand=socat - VSOCK-CONNECT:3:22' vsock/3"
    )
    with pytest.raises(MachineError, match=r"node1 has no SSH backdoor: .*vmrig run -I.*ssh_backdoor=True"):
        machine([]).ssh_backdoor_command()
    with pytest.raises(MachineError, match=r"no backdoor in the initrd"):
        machine([]).switch_root()


def test_typing_waits_after_each_key_as_long_as_a_scaled_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = MachineConfig(
        name="node1", disk=tmp_path, kernel=tmp_path, initrd=tmp_path, timeout_scale=TimeoutScale(5, "TCG")
    )
    machine = Machine(config, state_dir=tmp_path, out_dir=tmp_path, logger=Logger(io.StringIO(), color=False))
    sent: list[str] = []
    slept: list[float] = []
    monkeypatch.setattr(machine, "send_monitor_command", sent.append)
    monkeypatch.setattr(time, "sleep", slept.append)
    machine.send_chars("Hi\n")
    machine.send_key("ctrl-c", delay=None)
    assert sent == ["sendkey shift-h", "sendkey i", "sendkey ret", "sendkey ctrl-c"]
    assert slept == pytest.approx([0.05, 0.05, 0.05])  # NixOS's 10 ms, x5 under TCG


# What a script may use on a machine: the NixOS names plus vmrig's own. Splitting
# Machine into parts must not add or lose one.
PUBLIC_NAMES = frozenset(
    {
        "block",
        "boot_count",
        "channel_free_within",
        # the screen (machine/screen.py)
        "get_screen_text",
        "get_screen_text_variants",
        "get_window_names",
        "screenshot",
        "wait_for_text",
        "wait_for_window",
        "wait_for_x",
        # virtual terminals (machine/terminal.py)
        "dump_tty_contents",
        "get_tty_text",
        "tty_screen",
        "wait_until_tty_matches",
        "boot_hooks",
        "booted",
        "callbacks",
        "config",
        "connect",
        "connected",
        "console_interact",
        "console_tail",
        "copy_from_host",
        "copy_from_host_via_shell",
        "copy_from_machine",
        "copy_from_vm",
        "crash",
        "execute",
        "execute_bytes",
        "fail",
        "forward_port",
        "get_console_log",
        "full_console_log",
        "last_lines",
        "get_unit_info",
        "get_unit_property",
        "interact_lock",
        "is_up",
        "keep_vm_state",
        "log",
        "logger",
        "name",
        "nested",
        "out_dir",
        "pid",
        "process",
        "qemu_command",
        "qmp",
        "qmp_client",
        "reboot",
        "release",
        "require_unit_state",
        "restore",
        "run_callbacks",
        "send_chars",
        "send_console",
        "send_key",
        "send_monitor_command",
        "shared_dir",
        "shell_interact",
        "shell_port",
        "shutdown",
        "sleep",
        "snapshot",
        "ssh_backdoor_command",
        "stalled",
        "start",
        "start_job",
        "state_dir",
        "stop_job",
        "succeed",
        "switch_root",
        "systemctl",
        "unblock",
        "wait_for_closed_port",
        "wait_for_console_text",
        "wait_for_file",
        "wait_for_job",
        "wait_for_open_port",
        "wait_for_open_unix_socket",
        "wait_for_qmp_event",
        "wait_for_shutdown",
        "wait_for_unit",
        "wait_until_fails",
        "wait_until_succeeds",
    }
)


def test_the_public_surface_of_machine_is_pinned() -> None:
    assert public_attributes(Machine) == PUBLIC_NAMES


def test_the_user_network_forwards_ports_then_takes_the_extra_options(tmp_path: Path) -> None:
    config = MachineConfig(
        name="node1",
        disk=tmp_path / "disk",
        kernel=tmp_path / "kernel",
        initrd=tmp_path / "initrd",
        forwards=[(8080, 80), (40123, 22)],
        user_net_options="hostfwd=udp::5353-:53",
    )
    assert qemu.user_netdev(config) == (
        "user,id=user.0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:40123-:22,hostfwd=udp::5353-:53"
    )
    assert qemu.hostfwd_add(8080, 80) == "hostfwd_add user.0 tcp:127.0.0.1:8080-:80"


def test_a_shown_screen_is_vnc_on_loopback_or_a_window_and_headless_otherwise(tmp_path: Path) -> None:
    from vmrig.machine import qemu
    from vmrig.machine.config import Viewer

    def argv(**fields: object) -> list[str]:
        config = MachineConfig(
            name="n",
            disk=tmp_path / "d",
            kernel=tmp_path / "k",
            initrd=tmp_path / "i",
            **fields,  # type: ignore[arg-type]
        )
        return qemu.command(
            config, initrd=tmp_path / "i", overlay=tmp_path / "o", shell_fd=3, qmp_fd=4, data_fd=5, allow_reboot=False
        )

    def display_args(command: list[str]) -> list[str]:
        return [
            part
            for i, part in enumerate(command)
            if part in ("-display", "-vnc") or command[i - 1] in ("-display", "-vnc")
        ]

    assert display_args(argv()) == ["-display", "none"]
    assert display_args(argv(display=True)) == ["-display", "none"]
    assert display_args(argv(display=True, viewer=Viewer(vnc_display=3))) == ["-display", "none", "-vnc", "127.0.0.1:3"]
    assert display_args(argv(display=True, viewer=Viewer(window="gtk"))) == ["-display", "gtk"]
    # A viewer without a display device shows nothing.
    assert display_args(argv(viewer=Viewer(vnc_display=3))) == ["-display", "none"]
    assert "127.0.0.1:5903" in Viewer(vnc_display=3).describe()


def machine_of_run(tmp_path: Path, run: str, vlans: list[int]) -> Machine:
    """Machine `n` on `vlans` as run `run` would make it: its switches and state in that run's directories."""
    run_dir = tmp_path / run
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"initrd")
    config = MachineConfig(
        name="n",
        disk=tmp_path / "disk.qcow2",
        kernel=tmp_path / "vmlinux",
        initrd=initrd,
        vlan_cards=network_cards(NetworkPlan({"n": Node(vlans=vlans)}).interfaces["n"], run_dir),
        forwards=[(40000 + len(run), 22)],
    )
    return Machine(
        config, state_dir=run_dir / "vm-state-n", out_dir=tmp_path, logger=Logger(io.StringIO(), color=False)
    )


def argv_of(machine: Machine, tmp_path: Path) -> list[str]:
    """The machine's QEMU command line, with made-up descriptors and files in `tmp_path`."""
    return qemu.command(
        machine.config,
        initrd=tmp_path / "i",
        overlay=tmp_path / "o",
        shell_fd=3,
        qmp_fd=4,
        data_fd=5,
        allow_reboot=False,
        empty_disks=machine._empty_disk_files(),
    )


def test_the_vlan_cards_plug_into_the_runs_switches(tmp_path: Path) -> None:
    argv = argv_of(machine_of_run(tmp_path, "run", [1, 2, 2]), tmp_path)
    assert [argv[i + 1] for i, part in enumerate(argv) if part == "-netdev"][1:] == [
        f"vde,id=vlan1,sock={tmp_path}/run/vde1.ctl",
        f"vde,id=vlan2,sock={tmp_path}/run/vde2.ctl",
        f"vde,id=vlan3,sock={tmp_path}/run/vde2.ctl",
    ]
    assert [argv[i + 1] for i, part in enumerate(argv) if part == "-device" and "netdev=vlan" in argv[i + 1]] == [
        "virtio-net-pci,netdev=vlan1,mac=52:54:00:12:01:01,id=virtio-net-pci.1,romfile=,guest_announce=off",
        "virtio-net-pci,netdev=vlan2,mac=52:54:00:12:02:01,id=virtio-net-pci.2,romfile=,guest_announce=off",
        "virtio-net-pci,netdev=vlan3,mac=52:54:00:13:02:01,id=virtio-net-pci.3,romfile=,guest_announce=off",
    ]
    # No card loads a network boot ROM (vmrig boots the kernel directly), and QEMU,
    # not the guest, announces a restored card.
    assert all(arg.endswith(",romfile=,guest_announce=off") for arg in argv if arg.startswith("virtio-net-pci,"))


def test_the_booted_snapshot_key_leaves_out_where_the_run_is(tmp_path: Path) -> None:
    """Two runs of one machine share its booted snapshot, whatever their directories and host ports."""
    first = machine_of_run(tmp_path, "vmrig-first", [1, 2])
    second = machine_of_run(tmp_path, "vmrig-2nd", [1, 2])
    assert first.config.vlan_cards[0].switch != second.config.vlan_cards[0].switch
    assert first._snapshot_key(allow_reboot=False) == second._snapshot_key(allow_reboot=False)
    # What the guest sees does count: other vlans are another machine.
    assert first._snapshot_key(allow_reboot=False) != machine_of_run(tmp_path, "run", [1, 3])._snapshot_key(False)
    # So do its neighbours: a snapshot saved after the boot may hold what they told it.
    first.config.neighbours = "another router"
    assert first._snapshot_key(allow_reboot=False) != second._snapshot_key(allow_reboot=False)


def test_block_pulls_the_cable_of_the_card_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = machine_of_run(tmp_path, "run", [1, 2, 2])
    sent: list[str] = []

    def monitor(command: str) -> str:
        sent.append(command)
        return ""

    monkeypatch.setattr(machine, "send_monitor_command", monitor)
    machine.block()
    machine.block(vlan=2)
    machine.unblock(interface="eth3")
    assert sent == ["set_link virtio-net-pci.1 off", "set_link virtio-net-pci.2 off", "set_link virtio-net-pci.3 on"]
    with pytest.raises(ArgumentError, match=r"no vlan interface 'eth4'; it has eth1, eth2, eth3"):
        machine.block(interface="eth4")
    with pytest.raises(ArgumentError, match=r"not on vlan 3; its vlans: \[1, 2, 2\]"):
        machine.block(vlan=3)


def _console_fed_by(write_end: int) -> SerialConsole:
    console = SerialConsole()
    read_end = os.fdopen(write_end, "rb", buffering=0)
    console.start(read_end, Logger(io.StringIO(), color=False), "node")
    return console


def _take_within(console: SerialConsole, regex: str, seconds: float = 5.0) -> bool:
    pattern = re.compile(regex, re.MULTILINE)
    deadline = time.monotonic() + seconds
    with console.cond:
        while not console.take(pattern):
            if time.monotonic() >= deadline:
                return False
            console.cond.wait(0.05)
    return True


def test_console_waits_see_a_prompt_before_its_newline() -> None:
    read_fd, write_fd = os.pipe()
    console = _console_fed_by(read_fd)
    os.write(write_fd, b"boot done\r\nmachine login: ")
    assert _take_within(console, r"login: ")
    assert console.text() == "boot done\nmachine login: "
    assert "machine login: " in console.tail("node")
    # `$` waits for the end of the line: "vmrig-1" is not yet "vmrig-1$" while "vmrig-12" may follow.
    os.write(write_fd, b"root\r\nvmrig-1")
    assert not _take_within(console, r"vmrig-\d$", seconds=0.3)
    os.write(write_fd, b"2\r\n")
    assert not _take_within(console, r"vmrig-\d$", seconds=0.3)
    assert _take_within(console, r"vmrig-\d\d$")
    # A finished prompt keeps its trailing blank for the waits (NixOS's stripped lines match too).
    os.write(write_fd, b"Enter code: \r\nOther code: \r\nplain  \r\n")
    assert _take_within(console, r"Enter code: $")
    assert _take_within(console, r"Other code: ")
    assert _take_within(console, r"^plain$")
    # A half-written multi-byte character waits for its other half.
    os.write(write_fd, b"caf" + "é".encode()[:1])
    os.write(write_fd, "é".encode()[1:] + b"\n")
    assert _take_within(console, "café")
    os.close(write_fd)
    console.join()
    assert console.lines == [
        "boot done",
        "machine login: root",
        "vmrig-12",
        "Enter code:",
        "Other code:",
        "plain",
        "café",
    ]


def test_console_waits_see_through_a_message_that_interrupted_a_line() -> None:
    read_fd, write_fd = os.pipe()
    console = _console_fed_by(read_fd)
    os.write(write_fd, b"Please enter pas")
    os.write(write_fd, b"[    2.948528] scsi 1:0:0:0: CD-ROM            QEMU     QEMU DVD-ROM     2.5+\r\n")
    os.write(write_fd, b"sphrase for disk root (cryptroot):\r\n")
    os.write(write_fd, b"[    3.025994] cdrom: Uniform CD-ROM driver Revision: 3.20\r\nlater line\r\n")
    assert _take_within(console, r"[Pp]assphrase for disk root")
    # The match consumed up to the end of its line, as it came: the line after it is next.
    assert _take_within(console, r"^\[ *\d+\.\d+\] cdrom: ", seconds=1)
    assert not _take_within(console, "passphrase", seconds=0.2)
    os.close(write_fd)
    console.join()


def test_console_waits_see_lines_joined_as_nixos_joins_them() -> None:
    read_fd, write_fd = os.pipe()
    console = _console_fed_by(read_fd)
    os.write(write_fd, b"Starting server\r\nlistening on port 80\r\nready\r\nnext\r\n")
    # NixOS's driver concatenates the stripped lines: `.*` spans lines there.
    assert _take_within(console, r"server.*port 80")
    # The match ended in the second line: the wait consumed up to its end, not beyond.
    assert _take_within(console, r"^ready$", seconds=1)
    assert not _take_within(console, r"port 80", seconds=0.2)
    os.close(write_fd)
    console.join()


def test_search_console_maps_a_match_back_to_the_text_as_it_came() -> None:
    text = "a pas[    1.000000] kernel says\nsword prompt\nnext"
    end = search_console(re.compile("password prompt"), text)
    assert end is not None and text[:end].endswith("sword prompt")
    assert search_console(re.compile("kernel says"), text) == text.index("\nsword")
    assert search_console(re.compile("absent"), text) is None
    # A message at the start of a line interrupts nothing: it stays.
    assert search_console(re.compile("ab"), "a\n[    1.000000] x\nb") is None


def test_empty_disks_follow_the_root_disk_with_their_serials(tmp_path: Path) -> None:
    machine = machine_of_run(tmp_path, "run", [1])
    machine.config.empty_disks = Node(empty_disks=[64, EmptyDisk(size=32, serial="data")]).disks()
    argv = argv_of(machine, tmp_path)
    disks = [argv[i + 1] for i, part in enumerate(argv) if part == "-device" and "virtio-blk" in argv[i + 1]]
    # The root disk is the first virtio disk (/dev/vda), with NixOS's serial; then vdb, vdc.
    assert disks == [
        "virtio-blk-pci,drive=root,serial=root",
        "virtio-blk-pci,drive=empty0",
        "virtio-blk-pci,drive=empty1,serial=data",
    ]
    drives = [argv[i + 1] for i, part in enumerate(argv) if part == "-drive"]
    assert drives[1:] == [
        f"file={tmp_path}/run/vm-state-n/n-empty0.qcow2,if=none,id=empty0,format=qcow2,werror=report",
        f"file={tmp_path}/run/vm-state-n/n-empty1.qcow2,if=none,id=empty1,format=qcow2,werror=report",
    ]


def test_empty_disks_are_part_of_the_booted_snapshot_key(tmp_path: Path) -> None:
    first = machine_of_run(tmp_path, "vmrig-first", [1])
    second = machine_of_run(tmp_path, "vmrig-2nd", [1])
    first.config.empty_disks = [EmptyDisk(size=64)]
    second.config.empty_disks = [EmptyDisk(size=64)]
    assert first._snapshot_key(allow_reboot=False) == second._snapshot_key(allow_reboot=False)
    second.config.empty_disks = [EmptyDisk(size=128)]
    assert first._snapshot_key(allow_reboot=False) != second._snapshot_key(allow_reboot=False)
    second.config.empty_disks = [EmptyDisk(size=64, serial="data")]
    assert first._snapshot_key(allow_reboot=False) != second._snapshot_key(allow_reboot=False)


def tpm_machine(tmp_path: Path, run: str) -> Machine:
    """machine_of_run's machine with a TPM."""
    machine = machine_of_run(tmp_path, run, [1])
    machine.config.sidecars = [Swtpm("n", machine.state_dir)]
    return machine


def test_qemu_gets_a_tpm_tis_on_swtpms_control_socket_in_the_state_directory(tmp_path: Path) -> None:
    machine = tpm_machine(tmp_path, "run")
    argv = argv_of(machine, tmp_path)
    assert argv[argv.index("-tpmdev") + 1] == "emulator,id=vmrig-tpm0,chardev=vmrig-tpm"
    assert "tpm-tis,tpmdev=vmrig-tpm0" in argv
    assert f"socket,id=vmrig-tpm,path={tmp_path}/run/vm-state-n/swtpm.sock" in argv
    swtpm = machine.config.sidecars[0]
    assert isinstance(swtpm, Swtpm)
    assert swtpm.command()[1:5] == ["socket", "--tpm2", "--tpmstate", f"dir={tmp_path}/run/vm-state-n/swtpm,mode=0600"]
    # A TPM's state travels in QEMU's migration stream: such a machine is saved like any other.
    assert machine._snapshot_blocker() is None


def test_the_booted_snapshot_key_of_a_tpm_machine_leaves_out_where_the_run_is(tmp_path: Path) -> None:
    first, second = tpm_machine(tmp_path, "vmrig-1"), tpm_machine(tmp_path, "vmrig-second")
    assert first._snapshot_key(allow_reboot=False) == second._snapshot_key(allow_reboot=False)
    second.config.sidecars = []
    assert first._snapshot_key(allow_reboot=False) != second._snapshot_key(allow_reboot=False)


def test_a_swtpm_that_does_not_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "swtpm"
    fake.write_text("#!/bin/sh\necho 'swtpm: no such option' >&2\nexit 1\n")
    fake.chmod(0o755)
    swtpm = Swtpm("n", tmp_path / "state")
    swtpm.command = lambda: [str(fake)]  # type: ignore[method-assign]
    with pytest.raises(MachineError, match=r"n: swtpm \(the machine's TPM\) did not start: swtpm: no such option"):
        swtpm.start()
    assert swtpm.process is None


def test_screenshot_names_follow_nixos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert screenshot_path(out, "login") == out / "login.png"
    assert screenshot_path(out, "login.jpg") == out / "login.jpg"
    # A name with "/" is the driver's, from its working directory (QEMU's is the state directory).
    assert screenshot_path(out, "shots/login") == tmp_path / "shots" / "login.png"
