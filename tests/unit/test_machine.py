"""Machine logic that needs no VM."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.conftest import failing_tools

from vmrig.errors import HostCommandFailed
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig, qemu
from vmrig.machine.systemd import wait_unit_for
from vmrig.scriptnames import public_attributes


def test_wait_unit_instance_names() -> None:
    assert wait_unit_for("multi-user.target") == "vmrig-wait@multi-user.target.service"
    assert wait_unit_for("nginx") == "vmrig-wait@nginx.service.service"
    assert wait_unit_for("user@1000.service") == "vmrig-wait@user@1000.service.service"


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


# What a script may use on a machine: the NixOS names plus vmrig's own. Splitting
# Machine into parts must not add or lose one.
PUBLIC_NAMES = frozenset(
    {
        "block",
        "boot_count",
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
        "fail",
        "forward_port",
        "get_console_log",
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
        "reboot",
        "release",
        "require_unit_state",
        "restore",
        "run_callbacks",
        "send_chars",
        "send_console",
        "send_key",
        "send_monitor_command",
        "shell_interact",
        "shell_port",
        "shutdown",
        "sleep",
        "snapshot",
        "start",
        "start_job",
        "state_dir",
        "stop_job",
        "succeed",
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
        "user,id=user0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:40123-:22,hostfwd=udp::5353-:53"
    )
    assert qemu.hostfwd_add(8080, 80) == "hostfwd_add user0 tcp:127.0.0.1:8080-:80"


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
