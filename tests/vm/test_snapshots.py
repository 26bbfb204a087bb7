"""Booted snapshots on real VMs: restored instead of booted, each restore a guest of its own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, BootedDriver, run_vmrig, short_tmp
from vmrig.errors import MachineError
from vmrig.spec import EmptyDisk, File, Node, Service, SharedDirectory

pytestmark = pytest.mark.vm

RESTORED = "restored a booted snapshot"
SAVED = "saved a booted snapshot"


def unique_node(**fields: object) -> Node:
    """A node whose configuration no earlier run has booted (a file nobody else has)."""
    files = {"/etc/vmrig-snapshot-test": f"{uuid.uuid4()}\n", **fields.pop("files", {})}  # type: ignore[dict-item]
    return Node(files=files, **fields)  # type: ignore[arg-type]


def randomness(machine) -> list[str]:  # noqa: ANN001 (Machine)
    uuids = machine.succeed("cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/uuid").split()
    return [*uuids, machine.succeed("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")]


def assert_clock_right(machine) -> None:  # noqa: ANN001 (Machine)
    """The guest's wall clock is the host's, to within a quarter second beyond the round trip that reads it."""
    before = time.time()
    guest = float(machine.succeed('echo "${EPOCHREALTIME/[!0-9]/.}"'))
    after = time.time()
    assert before - 0.25 < guest < after + 0.25, (before, guest, after)


@pytest.fixture
def drivers() -> Iterator[list[BootedDriver]]:
    """The runs a test makes; afterwards they are stopped and the snapshots they saved removed."""
    made: list[BootedDriver] = []
    yield made
    for booted in made:
        booted.close()
        root = booted.driver.images.root
        for name in re.findall(r"saved a booted snapshot \([^;]*; (snapshot-\w+)\)", booted.log()):
            shutil.rmtree(root / name, ignore_errors=True)


def boot(drivers: list[BootedDriver], tmp: Path, nodes: dict[str, Node]) -> BootedDriver:
    """A fresh run (its own state directories) of `nodes`, started and connected."""
    run_dir = tmp / f"run{len(drivers)}"
    run_dir.mkdir()
    booted = BootedDriver(nodes, run_dir, snapshots=True)
    drivers.append(booted)
    booted.driver.start_all()
    for machine in booted.driver.machines:
        machine.connect()
    return booted


def restored_from(booted: BootedDriver) -> Path:
    """The snapshot a run's (only) machine was restored from."""
    (name,) = set(re.findall(r"restored a booted snapshot \([^;]*; (snapshot-\w+)\)", booted.log()))
    return booted.driver.images.root / name


def test_restores_are_guests_of_their_own(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = short_tmp(tmp_path_factory, "snap")
    nodes = {"snap": unique_node()}
    first = boot(drivers, tmp, nodes)
    assert SAVED in first.log() and RESTORED in first.log(), first.log()[-3000:]
    m1 = first.machine("snap")
    m1.succeed("echo first > /root/marker")
    saved_dir = restored_from(first)
    template = (saved_dir / "overlay.qcow2").read_bytes()
    random1 = randomness(m1)
    first.close()

    restores = []
    for _ in range(2):
        booted = boot(drivers, tmp, nodes)
        assert RESTORED in booted.log() and SAVED not in booted.log()
        machine = booted.machine("snap")
        # Its own overlay (a copy of the empty one saved with the snapshot, on the
        # snapshot's disk): nothing the first run wrote is there.
        machine.fail("test -e /root/marker")
        overlay = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", machine.state_dir / "snap.qcow2"],
                check=True,
                capture_output=True,
            ).stdout
        )
        assert restored_from(booted) == saved_dir
        assert overlay["backing-filename"] == str(saved_dir / "disk.qcow2"), overlay
        assert (saved_dir / "overlay.qcow2").read_bytes() == template
        machine.succeed("echo mine > /root/marker")
        # The host's wall clock, not the save's (nor the save's plus the fix-up's run time).
        assert_clock_right(machine)
        # Randomness reseeded: no two restores give the same UUIDs or bytes.
        restores.append(randomness(machine))
        assert machine.boot_count == 1
        # The fix-up ran in the process started before the save, not as a new program.
        assert re.fullmatch(r"[0-9a-f]{16} ok\n", machine.succeed("cat /run/vmrig/fixup.log"))
        booted.close()
    assert len({tuple(random1), *map(tuple, restores)}) == 3, (random1, restores)
    assert all(set(a).isdisjoint(b) for a in (random1, *restores) for b in restores if a is not b)

    # A snapshot saved long ago (its recorded clock an hour earlier): the clock moves on
    # by the hour too, though bash times `read -t` by the wall clock.
    clock = saved_dir / "clock"
    clock.write_text(f"{float(clock.read_text()) - 3600!r}\n")
    booted = boot(drivers, tmp, nodes)
    machine = booted.machine("snap")
    ahead = float(machine.succeed('echo "${EPOCHREALTIME/[!0-9]/.}"')) - time.time()
    assert 3599 < ahead < 3601, ahead


def test_a_changed_node_boots_and_saves_anew(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = short_tmp(tmp_path_factory, "snapchg")
    node = unique_node()
    boot(drivers, tmp, {"chg": node}).close()
    changed = Node(files={**node.files, "/etc/extra": "x\n"})
    again = boot(drivers, tmp, {"chg": changed})
    assert SAVED in again.log() and again.machine("chg").succeed("cat /etc/extra") == "x\n"


def test_script_snapshot_and_restore(drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = short_tmp(tmp_path_factory, "snapnamed")
    booted = boot(drivers, tmp, {"named": unique_node()})
    assert RESTORED in booted.log()
    machine = booted.machine("named")
    machine.succeed("echo kept > /root/before")
    booted.driver.snapshot("clean")
    assert_clock_right(machine)  # the clock stood still while QEMU saved
    # The script's QMP events are its own: the restore's MIGRATION events were switched off.
    events = [event["event"] for event in machine.qmp_client.events(timeout=0)]
    assert "MIGRATION" not in events and "MIGRATION_PASS" not in events, events
    machine.succeed("rm /etc/passwd; rm /root/before")
    machine.fail("grep -q ^root: /etc/passwd")  # (getent still finds root: nss-systemd, as on NixOS)
    time.sleep(2)
    booted.driver.restore("clean")
    assert machine.succeed("grep ^root: /etc/passwd").startswith("root:")
    assert machine.succeed("cat /root/before") == "kept\n"
    assert_clock_right(machine)
    with pytest.raises(MachineError, match="nonexistent"):
        machine.restore("nonexistent")


def test_empty_disks_are_empty_in_every_run_and_roll_back_with_the_machine(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = short_tmp(tmp_path_factory, "snapdisks")
    node = unique_node(empty_disks=[64, EmptyDisk(size=32, serial="data")])
    booted = boot(drivers, tmp, {"disks": node})
    machine = booted.machine("disks")
    # As on NixOS: the root disk is /dev/vda (serial "root"), the empty disks follow it.
    assert machine.succeed("findmnt -no SOURCE /") == "/dev/vda\n"
    assert machine.succeed("blockdev --getsize64 /dev/vdb /dev/vdc").split() == [str(64 << 20), str(32 << 20)]
    assert machine.succeed("readlink -f /dev/disk/by-id/virtio-data /dev/disk/by-id/virtio-root").split() == [
        "/dev/vdc",
        "/dev/vda",
    ]
    is_blank = "cmp -n 1048576 /dev/vdb /dev/zero"
    machine.succeed(is_blank)
    machine.snapshot("blank")
    machine.succeed("echo written-in-the-first-run | dd of=/dev/vdb oflag=direct conv=sync,fsync status=none")
    machine.fail(is_blank)
    machine.restore("blank")
    machine.succeed(is_blank)
    # What the guest writes stays on the disk across its reboots in a run.
    machine.succeed("echo written-in-the-first-run | dd of=/dev/vdb oflag=direct conv=sync,fsync status=none")
    machine.shutdown()
    machine.start()
    assert machine.succeed("head -c 25 /dev/vdb") == "written-in-the-first-run\n"
    # Another run of the same node is restored from the same booted snapshot, with disks of its own.
    again = boot(drivers, tmp, {"disks": node})
    assert restored_from(again) == restored_from(booted)
    again.machine("disks").succeed(is_blank)
    assert again.machine("disks").succeed("blockdev --getsize64 /dev/vdc") == f"{32 << 20}\n"


def test_a_tpm_is_saved_and_restored_with_the_machine(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = short_tmp(tmp_path_factory, "snaptpm")
    node = unique_node(packages=["tpm2-tools"], tpm=True)
    booted = boot(drivers, tmp, {"tpm": node})
    assert RESTORED in booted.log()
    machine = booted.machine("tpm")
    # The restored guest's TPM is started: the emulator's state came with the snapshot.
    assert len(machine.succeed("tpm2_getrandom --hex 16").strip()) == 32
    nv_indices = "tpm2_getcap handles-nv-index"
    assert machine.succeed(nv_indices).strip() == ""
    machine.snapshot("no-index")
    machine.succeed("tpm2_nvdefine -C o -s 4 -a 'ownerread|ownerwrite' 0x1500017")
    assert "0x1500017" in machine.succeed(nv_indices)
    machine.restore("no-index")
    assert machine.succeed(nv_indices).strip() == ""
    assert len(machine.succeed("tpm2_getrandom --hex 8").strip()) == 16
    # Later runs restore the snapshot into a fresh swtpm: the TPM comes from the saved stream
    # alone, and each restore's TPM gives random numbers of its own (the fix-up stirs them).
    randoms = []
    for _ in range(2):
        again = boot(drivers, tmp, {"tpm": node})
        assert restored_from(again) == restored_from(booted)
        other = again.machine("tpm")
        randoms.append(other.succeed("tpm2_getrandom --hex 16").strip())
        assert other.succeed(nv_indices).strip() == ""
    assert randoms[0] != randoms[1], randoms


def test_a_node_with_a_shared_directory_boots_and_says_why(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = short_tmp(tmp_path_factory, "snapshare")
    (tmp / "share").mkdir()
    (tmp / "share" / "hello").write_text("hi\n")
    nodes = {"sharer": unique_node(shared_directories={"/mnt/share": SharedDirectory(source=str(tmp / "share"))})}
    for _ in range(2):
        booted = boot(drivers, tmp, nodes)
        assert "booting without a snapshot: shared directories (virtiofs) cannot be saved" in booted.log()
        assert RESTORED not in booted.log()
        assert booted.machine("sharer").succeed("cat /mnt/share/hello") == "hi\n"
        booted.close()


def test_rerun_of_a_three_node_example_is_restored(vm_tmp: Path) -> None:
    example = REPO / "examples" / "partition.py"
    run_vmrig("run", "--no-serial", example, tmpdir=vm_tmp)  # saves, if no run did before
    result = run_vmrig("run", "--no-serial", example, tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    # Every node restored (how long that takes is benchmarks/snapshots.py's to say).
    assert len(re.findall(RESTORED, result.stderr)) == 3, result.stderr[-3000:]  # node1, node2, node3
    plain = run_vmrig("run", "--no-serial", "--no-snapshots", example, tmpdir=vm_tmp)
    assert plain.returncode == 0 and RESTORED not in plain.stderr and SAVED not in plain.stderr


def announcing(announce: str) -> dict[str, Node]:
    """A server that keeps what it is sent, and a client whose boot runs `announce` (a oneshot, after the network)."""
    return {
        "server": unique_node(
            services={"sink": Service(exec_start="/bin/sh -c 'exec nc -lk 9000 >> /var/log/received'")}
        ),
        "client": unique_node(
            services={
                "announce": Service(
                    type="oneshot",
                    exec_start=f"/bin/sh -c '{announce}'",
                    after=["network-online.target"],
                    wants=["network-online.target"],
                    extra={"Service": {"RemainAfterExit": "yes"}},
                )
            }
        ),
    }


def saved_then_restored_together(
    drivers: list[BootedDriver], tmp: Path, nodes: dict[str, Node]
) -> Iterator[BootedDriver]:
    """Two runs of `nodes`, each started by start_all(): the first saves them, the second restores them."""
    for _ in range(2):
        run_dir = tmp / f"run{len(drivers)}"
        run_dir.mkdir()
        booted = BootedDriver(nodes, run_dir, snapshots=True)
        drivers.append(booted)
        booted.driver.start_all()
        yield booted
        booted.close()


def test_a_machine_started_beside_one_that_is_up_boots_for_real(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A client's boot that announces itself to a running server happens in every run."""
    tmp = short_tmp(tmp_path_factory, "beside")
    nodes = announcing("echo booted | nc -N server 9000")
    for _ in range(2):  # the first run saves the server's snapshot, the second restores it
        run_dir = tmp / f"run{len(drivers)}"
        run_dir.mkdir()
        booted = BootedDriver(nodes, run_dir, snapshots=True)
        drivers.append(booted)
        server, client = booted.machine("server"), booted.machine("client")
        server.start()
        server.wait_for_open_port(9000)
        client.start()
        client.wait_for_unit("multi-user.target")
        server.wait_until_succeeds("grep -q booted /var/log/received", timeout=30)
        assert "client: booting without a snapshot: server is up on its vlans" in booted.log()
        booted.close()
    assert RESTORED in drivers[-1].log()  # the server's boot, which talked to nobody


def test_machines_started_together_are_saved_together(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What one boot told another is in both snapshots, whichever boot settled first."""
    tmp = short_tmp(tmp_path_factory, "together")
    # Late in its boot: after the server's boot has settled (without the wait for the
    # client, the server's snapshot missed it).
    nodes = announcing("sleep 8; until echo booted | nc -N server 9000; do sleep 1; done")
    for booted in saved_then_restored_together(drivers, tmp, nodes):
        server = booted.machine("server")
        # The server's first command: its boot saved only once the client's has settled too.
        server.wait_until_succeeds("grep -q booted /var/log/received", timeout=30)
        booted.machine("client").succeed("systemctl is-active announce")
    assert SAVED in drivers[0].log() and len(re.findall(RESTORED, drivers[1].log())) == 2, drivers[1].log()[-3000:]


# A client that keeps one TCP session with the server's echo service, in lock step: a
# line out, the same line back. Saved at different instants, the two guests' halves of
# the session disagree after a restore: the server has already answered what the
# client sends again, and the session stalls.
PINGER = """#!/bin/bash
exec 3<>/dev/tcp/server/9001 || exit 1
i=0
while :; do
    i=$((i + 1))
    echo "$i" >&3
    read -r -t 10 reply <&3 || exit 1
    [ "$reply" = "$i" ] || exit 2
    echo "$i" 1<>/run/last-echo  # in place: a reader never finds it empty (the numbers only grow)
    sleep 0.5
done
"""


def keeping_a_session() -> dict[str, Node]:
    """A server with a socket-activated echo service (one instance per connection) and a pinging client."""
    return {
        "server": unique_node(
            services={
                "echo.socket": "[Socket]\nListenStream=9001\nAccept=yes\n\n[Install]\nWantedBy=sockets.target\n",
                "echo@.service": "[Service]\nStandardInput=socket\nStandardOutput=socket\n"
                "ExecStart=/bin/sh -c 'while read -r line; do echo \"$$line\"; done'\n",
            }
        ),
        "client": unique_node(
            files={"/usr/local/bin/pinger": File(content=PINGER, mode=0o755)},
            services={
                "pinger": Service(
                    exec_start="/usr/local/bin/pinger",
                    after=["network-online.target"],
                    wants=["network-online.target"],
                    restart="on-failure",
                )
            },
        ),
    }


def sessions(server, client) -> tuple[int, ...]:  # noqa: ANN001 (Machine)
    """(the client's last answered line, its restarts, the connections the server accepted)."""
    return (
        int(client.succeed("cat /run/last-echo")),
        int(client.succeed("systemctl show -P NRestarts pinger")),
        int(server.succeed("systemctl show -P NAccepted echo.socket")),
    )


def test_a_session_between_machines_started_together_survives_their_restore(
    drivers: list[BootedDriver], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Machines started together are stopped together for their save: a TCP session between them goes on."""
    tmp = short_tmp(tmp_path_factory, "session")
    for booted in saved_then_restored_together(drivers, tmp, keeping_a_session()):
        server, client = booted.machine("server"), booted.machine("client")
        client.wait_until_succeeds("test -s /run/last-echo", timeout=60)
        before = sessions(server, client)
        # Ten more answers on the same session: no restart of the client, no new connection.
        client.wait_until_succeeds(f"test $(cat /run/last-echo) -ge {before[0] + 10}", timeout=30)
        after = sessions(server, client)
        assert after[1:] == before[1:], (before, after)
    assert "saving the booted snapshots of" in drivers[0].log(), drivers[0].log()[-3000:]
    assert len(re.findall(RESTORED, drivers[1].log())) == 2, drivers[1].log()[-3000:]
