"""The environment read once at the edges: RunEnvironment, and the driver handing its values down."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

from vmrig.driver import Driver
from vmrig.image.store import NodeImage
from vmrig.log import Logger
from vmrig.runenv import RunEnvironment, cache_dir
from vmrig.spec import Node, Options
from vmrig.testfile import TestSpec


def test_the_environment_is_read_into_one_value() -> None:
    environment = RunEnvironment.from_environ(
        {
            "VMRIG_CACHE_DIR": "/cache",
            "TMPDIR": "/scratch",
            "VMRIG_ACCEL": "tcg",
            "VMRIG_TIMEOUT_FACTOR": "3",
            "VMRIG_CONNECT_TIMEOUT": "60",
            "QEMU_OPTS": "-smbios 'type=1,serial=x'",
            "QEMU_NET_OPTS": "hostfwd=udp::5353-:53",
            "WAYLAND_DISPLAY": "wayland-0",
            "TERM": "screen-256color",
            "PYTEST_XDIST_WORKER_COUNT": "2",
        }
    )
    assert environment == RunEnvironment(
        cache_dir=Path("/cache"),
        tmp_dir=Path("/scratch"),
        accel="tcg",
        timeout_factor="3",
        connect_timeout="60",
        qemu_options="-smbios 'type=1,serial=x'",
        qemu_net_options="hostfwd=udp::5353-:53",
        graphical_session=True,
        term="screen-256color",
        parallel_runs=2,
    )
    empty = RunEnvironment.from_environ({"HOME": "/home/u", "TMPDIR": "", "DISPLAY": ""})
    assert (empty.tmp_dir, empty.accel, empty.timeout_factor, empty.connect_timeout) == (Path("/tmp"), "", None, "300")
    assert not empty.graphical_session and empty.parallel_runs == 1
    for odd in ("", "0", "-3", "two"):
        assert RunEnvironment.from_environ({"PYTEST_XDIST_WORKER_COUNT": odd}).parallel_runs == 1


def test_the_cache_is_vmrig_cache_dir_else_under_xdg_cache_home_else_home() -> None:
    assert cache_dir({"VMRIG_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert cache_dir({"VMRIG_CACHE_DIR": "", "XDG_CACHE_HOME": "/x"}) == Path("/x/vmrig")
    assert cache_dir({}) == Path.home() / ".cache" / "vmrig"


def test_the_driver_hands_the_environment_to_the_image_store_and_the_machines(tmp_path: Path) -> None:
    spec = TestSpec(
        name="env",
        path=tmp_path / "env.py",
        nodes={"a": Node(vlans=[1])},
        options=Options(),
        script="",
        script_path=str(tmp_path / "env.py"),
        script_first_line=1,
    )
    environment = RunEnvironment(
        cache_dir=tmp_path / "cache",
        tmp_dir=tmp_path / "tmp",
        connect_timeout="42",
        qemu_options="-smbios 'type=1,serial=run 42'",
        qemu_net_options="hostfwd=udp::5353-:53",
        term="screen",
    )
    driver = Driver(spec, logger=Logger(io.StringIO(), color=False), out_dir=tmp_path, environment=environment)
    assert driver.images.root == tmp_path / "cache" and driver.tmp_dir == tmp_path / "tmp"
    assembler = driver.assembler
    assembler.run_dir, assembler.accel = tmp_path / "run", "tcg"
    image = NodeImage(
        "key", tmp_path / "disk", tmp_path / "vmlinux", tmp_path / "initrd", fs_size_mib=4096, min_disk_mib=1024
    )
    config = assembler.machine_config("a", 1, spec.nodes["a"], image)
    assert config.qemu_options[-2:] == ["-smbios", "type=1,serial=run 42"]
    assert config.user_net_options == "hostfwd=udp::5353-:53"
    assert config.connect_timeout == 42.0
    assert config.host_term == "screen"
    assert [card.switch for card in config.vlan_cards] == [tmp_path / "run" / "vde1.ctl"]
    # The host's CPUs are shared with the runs beside this one (pytest-xdist's workers).
    crowded = dataclasses.replace(environment, parallel_runs=os.cpu_count() or 1)
    assert Driver(spec, logger=Logger(io.StringIO()), out_dir=tmp_path, environment=crowded).assembler.host_cpus() == 1
