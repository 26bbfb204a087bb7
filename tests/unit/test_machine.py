"""Machine logic that needs no VM."""

from __future__ import annotations

from vmrig.machine import wait_unit_for


def test_wait_unit_instance_names() -> None:
    assert wait_unit_for("multi-user.target") == "vmrig-wait@multi-user.target.service"
    assert wait_unit_for("nginx") == "vmrig-wait@nginx.service.service"
    assert wait_unit_for("user@1000.service") == "vmrig-wait@user@1000.service.service"
