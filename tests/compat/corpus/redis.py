"""Redis: a server and a client on another node.

NixOS behaviours exercised: machines started by their first command in
threads of the script's own (each thread waits for its machine's
multi-user.target), `wait_for_unit("redis-server")` (NixOS's unit for
the default instance is `redis.service`; Debian's is `redis-server.service`),
`wait_for_open_port(6379)`, `redis-cli set/get` locally and from another node,
`wait_until_succeeds` on a key that expires, a Unix socket checked with
`wait_for_open_unix_socket`.

Debian packages standing in for `services.redis.servers.""`: `redis-server`
on the server, `redis-tools` (redis-cli) on the client.

Debian differences: Debian's /etc/redis/redis.conf binds to 127.0.0.1 and ::1
with protected mode on; the image's build commands change `bind` and
`protected-mode` with sed (what `services.redis.servers."".bind` does on
NixOS) and turn on the Unix socket (`unixsocket`, as NixOS enables by
default). Debian's unit has `ProtectSystem=strict` and may only write under
/var/lib/redis, /var/log/redis and /run/redis, where the socket goes.
Trixie's redis-server may be Redis 8; the commands used are in every version.
"""

from vmrig import Node

nodes = {
    "server": Node(
        packages=["redis-server"],
        build_commands=[
            "sed -i -e 's/^bind .*/bind 0.0.0.0 ::/' -e 's/^protected-mode yes/protected-mode no/' "
            "/etc/redis/redis.conf",
            "sed -i -e '/^# *unixsocket /d' -e '/^# *unixsocketperm /d' /etc/redis/redis.conf",
            "printf 'unixsocket /run/redis/redis-server.sock\\nunixsocketperm 770\\n' >>/etc/redis/redis.conf",
        ],
    ),
    "client": Node(packages=["redis-tools"]),
}

test_script = """
import threading

booting = [threading.Thread(target=m.wait_for_unit, args=("multi-user.target",)) for m in (server, client)]
for thread in booting:
    thread.start()
for thread in booting:
    thread.join()
server.wait_for_unit("network.target")
server.wait_for_unit("redis-server")
server.wait_for_open_port(6379)

with subtest("local set and get"):
    server.succeed("redis-cli set greeting hello")
    t.assertEqual(server.succeed("redis-cli get greeting").strip(), "hello")

with subtest("the Unix socket answers"):
    server.wait_for_open_unix_socket("/run/redis/redis-server.sock")
    t.assertEqual(server.succeed("redis-cli -s /run/redis/redis-server.sock ping").strip(), "PONG")

with subtest("the client reads and writes over the network"):
    client.wait_until_succeeds("redis-cli -h server ping | grep -q PONG", timeout=30)
    t.assertEqual(client.succeed("redis-cli -h server get greeting").strip(), "hello")
    client.succeed("redis-cli -h server set from-client 42")
    t.assertEqual(server.succeed("redis-cli get from-client").strip(), "42")
    client.succeed("redis-cli -h server incr from-client")
    t.assertEqual(server.succeed("redis-cli get from-client").strip(), "43")

with subtest("keys expire"):
    client.succeed("redis-cli -h server set short-lived x EX 2")
    client.wait_until_succeeds("test \\"$(redis-cli -h server exists short-lived)\\" = 0", timeout=30)
"""
