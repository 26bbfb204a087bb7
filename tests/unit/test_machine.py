"""Machine logic that needs no VM."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.conftest import failing_tools

from vmrig.errors import HostCommandFailed
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig, wait_unit_for


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
