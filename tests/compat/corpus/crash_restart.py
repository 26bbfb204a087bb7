"""A machine crashes and boots again; a network cable is pulled and plugged back.

NixOS behaviours exercised: `machine.crash()` then `machine.start()` and
`wait_for_unit` of the same service again, `is_up()`, state on disk that
survives the crash (the VM's disk is kept within a run), `shutdown()`
followed by `start()`, `block()`/`unblock()` between two nodes with
`fail("ping -c1 -W1 other")` and `wait_until_succeeds("ping ...")`,
`wait_for_console_text` for boot messages, `get_console_log`.

Debian packages standing in: `python3` (http.server as the service),
`curl` and `iputils-ping` (NixOS has ping in the system path; Debian's
minimal image does not).

Debian differences: none expected. Console texts are matched loosely
("Reached target .*Multi-User System" matches both systemd's old wording and
trixie's "Reached target multi-user.target - Multi-User System").
"""

from vmrig import Node, Service

nodes = {
    "server": Node(
        packages=["python3", "iputils-ping"],
        files={"/srv/www/index.html": "up\n"},
        services={
            "web": Service(
                exec_start="/usr/bin/python3 -m http.server 80 --bind :: --directory /srv/www",
                after=["network.target"],
            ),
        },
    ),
    "peer": Node(packages=["curl", "iputils-ping"]),
}

test_script = """
start_all()
server.wait_for_unit("network.target")
server.wait_for_unit("web")
server.wait_for_open_port(80)
peer.wait_for_unit("network.target")

with subtest("the boot went by on the console"):
    server.wait_for_console_text("Linux version", timeout=30)
    server.wait_for_console_text("Reached target .*Multi-User System", timeout=60)
    assert "Linux version" in server.get_console_log()

with subtest("the peer reaches the server"):
    peer.succeed("ping -c1 -W2 server")
    t.assertEqual(peer.succeed("curl --fail --silent http://server/").strip(), "up")

with subtest("a pulled cable cuts the server off"):
    server.block()
    peer.fail("ping -c1 -W1 server")
    server.fail("ping -c1 -W1 peer")
    server.unblock()
    peer.wait_until_succeeds("ping -c1 -W1 server", timeout=30)
    server.wait_until_succeeds("ping -c1 -W1 peer", timeout=30)

with subtest("the server crashes and comes back"):
    server.succeed("echo 'written before the crash' > /var/tmp/marker && sync")
    server.crash()
    assert not server.is_up()
    peer.fail("ping -c1 -W1 server")
    server.start()
    server.wait_for_console_text("Linux version", timeout=60)
    server.wait_for_unit("web")
    server.wait_for_open_port(80)
    t.assertEqual(server.succeed("cat /var/tmp/marker").strip(), "written before the crash")
    peer.wait_until_succeeds("curl --fail --silent http://server/ | grep -q up", timeout=60)

with subtest("a clean shutdown and another boot"):
    server.shutdown()
    assert not server.is_up()
    server.start()
    server.wait_for_unit("web")
    peer.wait_until_succeeds("curl --fail --silent http://server/", timeout=60)
"""
