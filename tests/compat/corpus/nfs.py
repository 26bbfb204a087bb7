"""NFS between three nodes: a server exports a directory, two clients mount it.

NixOS behaviours exercised: `server.wait_for_unit("nfs-server")`,
`wait_for_open_port(2049)`, `client.succeed("mount ...")` from the script,
one client writes and the other reads, a file written by the server is seen
by the clients, root squashing on a second export, unmount.

Debian packages standing in for `services.nfs.server` and the NFS client
support (`boot.supportedFilesystems = [ "nfs" ]`): `nfs-kernel-server`
(pulls in nfs-common and rpcbind) on the server, `nfs-common` (mount.nfs)
on the clients. The exports are /etc/exports, given as a file, as
`services.nfs.server.exports` writes it.

Debian differences:
- The unit is `nfs-server.service` on both (Debian also has the alias
  `nfs-kernel-server.service`).
- Debian's nfs-utils ship two systemd generators (nfs-server-generator,
  rpc-pipefs-generator) that add dependencies at boot; vmrig masks only the
  generators that exist in its base image, so these run.
- The kernel's NFSv4 grace period is 90 s by default, during which a client
  cannot open new files; /etc/nfs.conf.d/grace.conf shortens it (and the
  lease time) to 10 s, as NixOS tests set `services.nfs.settings.nfsd`.
  The nfsd and nfs modules come from linux-image-cloud-amd64 and are loaded
  on demand.
"""

from vmrig import Node

client = Node(packages=["nfs-common"])

nodes = {
    "server": Node(
        packages=["nfs-kernel-server"],
        files={
            "/etc/exports": (
                "/srv/share *(rw,sync,no_subtree_check,no_root_squash)\n"
                "/srv/squashed *(rw,sync,no_subtree_check,root_squash)\n"
            ),
            "/etc/nfs.conf.d/grace.conf": "[nfsd]\ngrace-time=10\nlease-time=10\n",
            "/srv/share/README": "exported by server\n",
            "/srv/squashed/README": "root is squashed here\n",
        },
    ),
    "client1": client,
    "client2": client,
}

test_script = """
start_all()
server.wait_for_unit("network-online.target")
server.wait_for_unit("nfs-server")
server.wait_for_open_port(2049)

with subtest("the server exports both directories"):
    exports = server.succeed("exportfs -v")
    t.assertIn("/srv/share", exports)
    t.assertIn("/srv/squashed", exports)

with subtest("both clients mount the share"):
    for c in [client1, client2]:
        c.wait_for_unit("network-online.target")
        c.succeed("mkdir -p /mnt/share")
        c.wait_until_succeeds("mount -t nfs server:/srv/share /mnt/share", timeout=60)
        c.succeed("findmnt -t nfs4 /mnt/share || findmnt -t nfs /mnt/share")
        t.assertEqual(c.succeed("cat /mnt/share/README").strip(), "exported by server")

with subtest("what one client writes, the other reads"):
    client1.succeed("echo 'written by client1' > /mnt/share/from-client1", timeout=120)
    client2.wait_until_succeeds("grep -q 'written by client1' /mnt/share/from-client1", timeout=60)
    server.succeed("grep -q 'written by client1' /srv/share/from-client1")

with subtest("what the server writes, the clients read"):
    server.succeed("echo 'written on the server' > /srv/share/from-server")
    for c in [client1, client2]:
        c.wait_until_succeeds("grep -q 'written on the server' /mnt/share/from-server", timeout=60)

with subtest("root is squashed on the second export"):
    client1.succeed("mkdir -p /mnt/squashed")
    client1.succeed("mount -t nfs server:/srv/squashed /mnt/squashed")
    client1.succeed("cat /mnt/squashed/README")
    client1.fail("touch /mnt/squashed/by-root")

with subtest("unmounting works"):
    for c in [client1, client2]:
        c.succeed("umount /mnt/share")
        c.fail("mountpoint -q /mnt/share")
"""
