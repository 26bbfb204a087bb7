"""Shared directories (virtiofs), the run's exchange directory, and copying trees both ways.

Two machines are booted once for the module; both share the same read-write
host directory, `one` also a read-only one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BootedDriver, short_tmp
from vmrig.machine import Machine
from vmrig.spec import Node, SharedDirectory

pytestmark = pytest.mark.vm


class Shared:
    def __init__(self, booted: BootedDriver, host: Path) -> None:
        self.booted = booted
        self.one: Machine = booted.machine("one")
        self.two: Machine = booted.machine("two")
        self.rw = host / "rw"
        self.ro = host / "ro"
        self.exchange: Path = booted.driver.shared_dir
        self.out_dir = booted.driver.out_dir


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    tmp = short_tmp(tmp_path_factory, "shared")
    host = tmp / "host"
    (host / "rw").mkdir(parents=True)
    (host / "ro").mkdir()
    (host / "ro" / "motd").write_text("read me\n")
    nodes = {
        # relative host paths are relative to the test file's directory (here: tmp)
        "one": Node(
            shared_directories={
                "/srv/rw": "host/rw",
                "/srv/ro": SharedDirectory(source="host/ro", read_only=True),
            }
        ),
        "two": Node(shared_directories={"/mnt/data": str(host / "rw")}),
    }
    booted = BootedDriver(nodes, tmp)
    try:
        booted.driver.start_all()
        result = Shared(booted, host)
        result.one.connect()
        result.two.connect()
        yield result
    finally:
        booted.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def virtiofs_mounts(machine: Machine) -> dict[str, str]:
    """Mount point -> `rw` or `ro`, for every virtiofs mount."""
    lines = machine.succeed("findmnt -rn -t virtiofs -o TARGET,OPTIONS").splitlines()
    return {target: options.split(",")[0] for target, options in (line.split() for line in lines)}


def test_shares_are_mounted_before_the_shell_answers(shared: Shared) -> None:
    assert virtiofs_mounts(shared.one) == {"/srv/rw": "rw", "/srv/ro": "ro", "/tmp/shared": "rw"}
    assert virtiofs_mounts(shared.two) == {"/mnt/data": "rw", "/tmp/shared": "rw"}


def test_read_write_share_both_ways_and_between_machines(shared: Shared) -> None:
    shared.one.succeed("mkdir -p /srv/rw/sub && echo from-one > /srv/rw/sub/note && chmod 0640 /srv/rw/sub/note")
    note = shared.rw / "sub" / "note"
    assert note.read_text() == "from-one\n"
    assert stat.S_IMODE(note.stat().st_mode) == 0o640
    assert shared.two.succeed("cat /mnt/data/sub/note") == "from-one\n"  # the other machine sees it at once
    (shared.rw / "from-host").write_text("host was here\n")
    assert shared.one.succeed("cat /srv/rw/from-host") == "host was here\n"
    shared.two.succeed("rm /mnt/data/from-host")
    assert not (shared.rw / "from-host").exists()
    # a multi-megabyte file crosses intact
    big = shared.rw / "big.bin"
    big.write_bytes(os.urandom(12 << 20))
    assert shared.one.succeed("sha256sum /srv/rw/big.bin").split()[0] == sha256(big)


def test_read_only_share_cannot_be_written_even_by_root(shared: Shared) -> None:
    assert shared.one.succeed("cat /srv/ro/motd") == "read me\n"
    assert "Read-only file system" in shared.one.fail("touch /srv/ro/new 2>&1")
    # remounting it read-write in the guest does not help: the host side is read-only
    shared.one.execute("mount -o remount,rw /srv/ro")
    status, output = shared.one.execute("echo x > /srv/ro/motd 2>&1; rm -f /srv/ro/motd 2>&1")
    assert status != 0, output
    assert sorted(os.listdir(shared.ro)) == ["motd"]
    assert (shared.ro / "motd").read_text() == "read me\n"


def test_exchange_directory_is_the_same_on_every_machine(shared: Shared) -> None:
    shared.one.succeed("echo one > /tmp/shared/from-one")
    assert (shared.exchange / "from-one").read_text() == "one\n"
    assert shared.two.succeed("cat /tmp/shared/from-one") == "one\n"
    (shared.exchange / "from-host").write_text("host\n")
    assert shared.two.succeed("cat /tmp/shared/from-host") == "host\n"
    assert stat.S_IMODE(shared.exchange.stat().st_mode) == 0o700
    assert shared.one.shared_dir == shared.two.shared_dir == shared.exchange  # NixOS's machine.shared_dir


def make_tree(root: Path) -> dict[str, tuple[str, int]]:
    """A tree of several megabytes with varied modes; relative path -> (sha256, mode)."""
    files = {
        "a.txt": (b"alpha\n", 0o644),
        "run.sh": (b"#!/bin/sh\necho run\n", 0o755),
        "secret": (b"s3cret\n", 0o600),
        "sub/big.bin": (os.urandom(5 << 20), 0o640),
        "sub/deeper/more.bin": (os.urandom(3 << 20), 0o444),
        "sub/deeper/empty": (b"", 0o662),  # group and other may write: kept too
    }
    for relative, (data, mode) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    (root / "sub" / "deeper").chmod(0o750)
    return {relative: (hashlib.sha256(data).hexdigest(), mode) for relative, (data, mode) in files.items()}


def guest_tree(machine: Machine, root: str) -> dict[str, tuple[str, int]]:
    listing = machine.succeed(
        f"cd {root} && find . -type f -printf '%P %m\\n' | sort; find . -type f -print0 | xargs -0 sha256sum"
    )
    modes: dict[str, int] = {}
    sums: dict[str, str] = {}
    for line in listing.splitlines():
        first, second = line.split(maxsplit=1)
        if len(first) == 64 and second.startswith("./"):
            sums[second[2:]] = first
        else:
            modes[first] = int(second, 8)
    return {path: (sums[path], modes[path]) for path in modes}


def test_copy_trees_round_trip_with_checksums_and_modes(shared: Shared, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    expected = make_tree(source)
    shared.two.copy_from_host(str(source), "/root/tree")
    assert guest_tree(shared.two, "/root/tree") == expected
    assert shared.two.succeed("stat -c %a /root/tree/sub/deeper") == "750\n"
    assert shared.two.succeed("stat -c %U /root/tree/run.sh") == "root\n"

    shared.two.succeed("echo changed-in-guest > /root/tree/a.txt; chmod 0604 /root/tree/a.txt")
    expected["a.txt"] = (hashlib.sha256(b"changed-in-guest\n").hexdigest(), 0o604)
    shared.two.copy_from_vm("/root/tree", "back")
    back = shared.out_dir / "back" / "tree"
    found = {
        str(path.relative_to(back)): (sha256(path), stat.S_IMODE(path.stat().st_mode))
        for path in back.rglob("*")
        if path.is_file()
    }
    assert found == expected
    assert stat.S_IMODE((back / "sub" / "deeper").stat().st_mode) == 0o750
