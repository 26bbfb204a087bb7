"""Starting, rebooting, shutting down and crashing one real VM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BootedDriver
from vmrig.errors import ArgumentError, MachineError
from vmrig.spec import Node

pytestmark = pytest.mark.vm


def test_reboot_shutdown_crash(booted: type[BootedDriver], vm_tmp: Path) -> None:
    run = booted({"node1": Node()})
    node = run.machine("node1")
    assert not node.is_up()
    node.start(allow_reboot=True)
    first_boot = node.succeed("cat /proc/sys/kernel/random/boot_id")
    assert node.is_up()
    node.succeed("echo persisted > /root/marker; sync")
    node.succeed("logger vmrig-before-the-reboot")

    node.reboot()
    assert not node.is_up()
    second_boot = node.succeed("cat /proc/sys/kernel/random/boot_id")
    assert second_boot != first_boot
    assert node.succeed("cat /root/marker") == "persisted\n"  # same disk across a reboot
    # The config layer replaces its links from the first boot without a word.
    assert "can't create" not in node.get_console_log()
    # The journal is on disk, as NixOS keeps it: the boot before is there.
    node.succeed("journalctl -b -1 --no-pager | grep -q vmrig-before-the-reboot")
    boots = node.succeed("journalctl --list-boots --no-pager").splitlines()
    assert len(boots) == 3 and boots[0].split()[:2] == ["IDX", "BOOT"], boots  # a header and two boots

    node.shutdown()
    assert not node.is_up()
    assert node.process is not None and node.process.returncode == 0

    # a command on a machine that is down starts it and waits for its shell
    assert node.succeed("cat /root/marker") == "persisted\n"
    node.crash()
    assert not node.is_up()
    assert "simulating a crash" in run.log()

    # without allow_reboot, a reboot ends QEMU, and the next command says so
    node.start()
    node.succeed("true")
    node.reboot()
    node.wait_for_shutdown()
    assert not node.is_up()

    # the ACPI power button (QEMU's system_powerdown) powers the guest off, as on Debian
    node.start()
    node.wait_until_succeeds("journalctl -b -u systemd-logind | grep -q 'Watching system buttons.*(Power Button)'")
    node.send_monitor_command("system_powerdown")
    assert node.process is not None
    node.process.wait(120)  # raises if the guest did not power off
    node.wait_for_shutdown()
    assert not node.is_up()

    # NixOS's check_return=False, "for commands that shut down the VM": the command's
    # end is QEMU's, and execute returns -1 with what it printed; the console's last
    # line is there for a wait that starts after QEMU has gone.
    node.start()
    assert node.execute("echo going; sync; poweroff -f", check_return=False) == (-1, "going\n")
    node.wait_for_console_text("reboot: Power down", timeout=60)
    node.wait_for_shutdown()
    assert not node.is_up()


def test_command_on_dead_machine_names_the_node(booted: type[BootedDriver]) -> None:
    run = booted({"node1": Node()})
    node = run.machine("node1")
    node.start()
    node.succeed("true")
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGKILL)  # QEMU dies on its own, as far as vmrig knows
    with pytest.raises(MachineError, match=r"node1: .*QEMU exited with status -9"):
        node.succeed("true")


def test_a_start_command_that_wraps_qemu_leaves_nothing_behind(booted: type[BootedDriver]) -> None:
    """create_machine(start_command): NixOS's naming, and a wrapper's QEMU stopped with the machine."""
    run = booted({"machine": Node(), "machine4": Node()})
    with pytest.raises(ArgumentError, match="a machine named 'machine' exists already"):
        run.driver.create_machine("qemu-system-x86_64")
    with pytest.raises(ArgumentError, match="invalid machine name 'a/b'"):
        run.driver.create_machine("/tmp/run-a/b-vm")
    with pytest.raises(ArgumentError, match="pass a QEMU start command"):
        run.driver.create_machine(None)  # type: ignore[arg-type]
    # A wrapper that keeps running beside QEMU and after it (no exec), in NixOS's older
    # dict form, named like NixOS's run-<name>-vm script.
    wrapper = "sh -c 'qemu-system-x86_64 \"$@\"; sleep 600' /tmp/run-wrapped-vm"
    extra = run.driver.create_machine({"startCommand": wrapper})
    assert extra.name == "wrapped"
    extra.succeed("true")
    started = time.monotonic()
    extra.crash()  # QEMU quits; the wrapper's sleep is not waited for
    assert time.monotonic() - started < 30
    extra.succeed("true")
    assert extra.process is not None
    group = extra.process.pid
    members = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
    assert len(members) == 3, members  # vmrig's shell, the wrapper and its QEMU
    extra.release()
    left = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True)
    assert left.returncode == 1, f"still running in the machine's process group: {left.stdout}"
    # A Node's default name, machine<number of machines + 1>, skips the names taken (a node's here).
    first, second = run.driver.create_machine(Node()), run.driver.create_machine(Node())
    assert (first.name, second.name) == ("machine5", "machine6")
    assert first.config.vlan_cards[0].mac != second.config.vlan_cards[0].mac  # node numbers of their own
