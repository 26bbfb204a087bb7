"""A web server on one node and curl on another: they find each other by name on vlan 1.

Every node is on vlan 1 unless it says otherwise (`Node(vlans=[...])`), with
the addresses 192.168.1.<n> and 2001:db8:1::<n> (n: the node's place among the
sorted node names), and every node's name is in every /etc/hosts.
"""

from vmrig import Node, Service

nodes = {
    "server": Node(
        packages=["python3"],
        files={"/srv/www/index.html": "Hello from the server\n"},
        services={
            # `--bind ::` listens on IPv6 and IPv4 alike
            "web": Service(exec_start="/usr/bin/python3 -m http.server 80 --bind :: --directory /srv/www"),
        },
    ),
    "client": Node(packages=["curl"]),
}

test_script = """
start_all()
server.wait_for_unit("web")
server.wait_for_open_port(80)

with subtest("the client reaches the server by name"):
    output = client.succeed("curl --fail --silent http://server/index.html")
    assert output == "Hello from the server\\n", f"unexpected answer: {output!r}"

with subtest("by name over IPv4 and over IPv6"):
    client.succeed("curl --fail --silent -4 http://server/index.html")
    client.succeed("curl --fail --silent -6 http://server/index.html")

with subtest("the server saw the client's vlan addresses"):
    server.wait_until_succeeds("journalctl -u web | grep -q ':192.168.1.1 '", timeout=30)
    server.wait_until_succeeds("journalctl -u web | grep -q ' 2001:db8:1::1 '", timeout=30)
"""
