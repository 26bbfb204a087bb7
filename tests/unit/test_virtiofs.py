"""Shared directories without VMs: the plan, QEMU's arguments, virtiofsd's command and its life."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from vmrig.log import Logger
from vmrig.spec import Node, SharedDirectory, SpecError
from vmrig.virtiofs import Share, Virtiofs, find_virtiofsd, plan_shares


def test_plan_resolves_relative_sources_and_adds_the_exchange_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "abs").mkdir()
    node = Node(
        shared_directories={
            "/srv/data": "data",
            "/mnt/abs": SharedDirectory(source=str(tmp_path / "abs"), read_only=True),
        }
    )
    shares = plan_shares(node, base_dir=tmp_path, exchange_dir=tmp_path / "xchg")
    assert shares == [
        Share("xchg", tmp_path / "xchg", "/tmp/shared"),
        Share("share0", tmp_path / "abs", "/mnt/abs", read_only=True),
        Share("share1", tmp_path / "data", "/srv/data"),
    ]
    assert [mount.read_only for mount in Virtiofs("n", shares, tmp_path, 512, Logger(io.StringIO())).mounts()] == [
        False,
        True,
        False,
    ]


def test_missing_host_directories_are_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match=r"Node.shared_directories\['/srv'\]: .*/nothing does not exist on the host"):
        plan_shares(Node(shared_directories={"/srv": "nothing"}), base_dir=tmp_path, exchange_dir=None)
    with pytest.raises(SpecError, match="is not a directory on the host"):
        plan_shares(Node(shared_directories={"/srv": "file"}), base_dir=tmp_path, exchange_dir=None)


def test_qemu_arguments_share_the_guest_memory(tmp_path: Path) -> None:
    shares = [Share("xchg", tmp_path, "/tmp/shared"), Share("share0", tmp_path, "/srv", read_only=True)]
    sockets = tmp_path / "run,dir"
    args = Virtiofs("web", shares, sockets, 768, Logger(io.StringIO())).qemu_args()
    assert args[:4] == [
        "-object",
        "memory-backend-memfd,id=vmrig-mem,size=768M,share=on",
        "-numa",
        "node,memdev=vmrig-mem",
    ]
    assert f"socket,id=vmrig-fs1,path={tmp_path}/run,,dir/fs-web-share0.sock" in args  # commas doubled
    assert "vhost-user-fs-pci,chardev=vmrig-fs1,tag=share0" in args
    assert Virtiofs("web", [], sockets, 768, Logger(io.StringIO())).qemu_args() == []


def test_read_only_shares_run_in_a_read_only_view(tmp_path: Path) -> None:
    virtiofs = Virtiofs("web", [], tmp_path, 512, Logger(io.StringIO()))
    program, _rust = find_virtiofsd()
    writable = virtiofs.command(Share("share0", tmp_path, "/srv"))
    assert writable[0] == program and f"--socket-path={tmp_path}/fs-web-share0.sock" in writable
    read_only = virtiofs.command(Share("share1", tmp_path, "/srv", read_only=True))
    assert read_only[:3] == [read_only[0], "--mount", "--"] and read_only[0].endswith("unshare")
    assert "mount -o remount,bind,ro" in read_only[5]
    assert read_only[7:] == [str(tmp_path), *virtiofs.command(Share("share1", tmp_path, "/srv"))]


@pytest.mark.skipif(os.geteuid() != 0, reason="virtiofsd and the read-only view need root")
def test_virtiofsd_starts_and_stops(tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    shares = [Share("share0", tmp_path / "rw", "/a"), Share("share1", tmp_path / "ro", "/b", read_only=True)]
    virtiofs = Virtiofs("web", shares, tmp_path, 512, Logger(io.StringIO()))
    virtiofs.start()
    try:
        assert all(virtiofs.socket_path(share).exists() for share in shares)
        assert all(process.poll() is None for process in virtiofs.processes)
    finally:
        virtiofs.stop()
    assert virtiofs.processes == []
    assert not any(virtiofs.socket_path(share).exists() for share in shares)
