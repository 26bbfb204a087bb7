"""LVM, md RAID and ext4 on empty disks, kept across a reboot.

NixOS behaviours exercised: `virtualisation.emptyDiskImages` (here
`Node(empty_disks=...)`): blank virtio disks after the root disk, /dev/vdb
and /dev/vdc, one named by its serial as /dev/disk/by-id/virtio-<serial>
(`driveConfig.deviceExtraOpts.serial`); a script that partitions nothing and
builds on whole disks (`pvcreate`, `vgcreate`, `lvcreate`, `mkfs.ext4`),
`/dev/disk/by-label` links made by udev, and, after `shutdown()` and
`start()`, LVM's activation (NixOS enables `services.lvm` by default) and the
mirror's assembly (`boot.swraid`) done in the initrd: both are there when
multi-user.target is reached, and what was written is still on the disks.

Debian packages standing in: `lvm2` (NixOS's default system has LVM) and
`mdadm`; mkfs.ext4 is in the base image, as on every NixOS system with an
ext4 root.
"""

from vmrig import EmptyDisk, Node

nodes = {
    "machine": Node(
        packages=["lvm2", "mdadm"],
        empty_disks=[512, EmptyDisk(size=256, serial="scratch"), 64, 64],
    ),
}

test_script = """
machine.wait_for_unit("multi-user.target")

with subtest("the empty disks follow the root disk"):
    machine.succeed("test -b /dev/vdb && test -b /dev/vdc")
    t.assertEqual(machine.succeed("lsblk -bdno SIZE /dev/vdb /dev/vdc").split(), [str(512 << 20), str(256 << 20)])
    t.assertEqual(machine.succeed("readlink -f /dev/disk/by-id/virtio-scratch").strip(), "/dev/vdc")
    machine.fail("blkid /dev/vdb")

with subtest("a logical volume larger than either disk"):
    machine.succeed(
        "pvcreate /dev/vdb /dev/disk/by-id/virtio-scratch",
        "vgcreate pool /dev/vdb /dev/vdc",
        "lvcreate --yes -L 600M -n data pool",
        # lvcreate returns when udev's rules for the volume have run (RUN+= of
        # dmsetup udevcomplete), before the worker watches the device for writes: a
        # mkfs in between gets no change event and no by-label link (seen once, in
        # CI with two workers busy). The same holds for NixOS's lvm2 and udev.
        "udevadm settle",
        "mkfs.ext4 -q -L data /dev/pool/data",
    )
    machine.wait_until_succeeds("test -e /dev/disk/by-label/data", timeout=30)
    machine.succeed("mkdir -p /data", "mount /dev/disk/by-label/data /data")
    machine.succeed("echo 'kept across a reboot' > /data/note", "sync")
    t.assertEqual(machine.succeed("findmnt -no SOURCE /data").strip(), "/dev/mapper/pool-data")

with subtest("a mirror on the other two disks"):
    machine.succeed(
        "mdadm --create /dev/md0 --run --level=1 --raid-devices=2 /dev/vdd /dev/vde",
        "mdadm --detail --scan >> /etc/mdadm/mdadm.conf",
        "mkfs.ext4 -q /dev/md0",
        "mkdir -p /mirror",
        "mount /dev/md0 /mirror",
        "echo 'on both disks' > /mirror/note",
        "umount /mirror",
        "mdadm --wait /dev/md0 || true",  # the first resync; exit 1: none was running
    )

with subtest("the volume group and the mirror are up again at boot"):
    machine.succeed("umount /data")
    machine.shutdown()
    machine.start()
    machine.wait_for_unit("multi-user.target")
    machine.succeed("mount /dev/pool/data /data")
    t.assertEqual(machine.succeed("cat /data/note"), "kept across a reboot\\n")
    # Assembled, both halves in: read-only until its first write, as any array mdadm assembles.
    mdstat = machine.succeed("cat /proc/mdstat")
    t.assertRegex(mdstat, r"md0 : active (\\(auto-read-only\\) )?raid1 vd[de]\\[\\d\\] vd[de]\\[\\d\\]")
    t.assertIn("[UU]", mdstat)
    machine.succeed("mount /dev/md0 /mirror")
    t.assertEqual(machine.succeed("cat /mirror/note"), "on both disks\\n")
"""
