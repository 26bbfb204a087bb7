"""A router between two vlans: a client on one reaches a web server on the other.

NixOS behaviours exercised: `networking.defaultGateway` and
`networking.defaultGateway6` (vmrig's `default_gateway` and
`default_gateway6`), set by NixOS's `network-setup.service`, which scripts
wait for and restart; IPv4 and IPv6 forwarding from `boot.kernel.sysctl`;
a node name that resolves to an address on another vlan, reached through the
router (IPv6 first, as `ping server` and `curl http://server/` pick it);
`block()`/`unblock()` of the router cutting the path and healing it, with
`wait_until_succeeds(..., timeout=...)` written for KVM.

Debian packages standing in: `python3` (the web server, as a `Service`);
curl and ping are in every node.

Debian differences: none expected.
"""

from vmrig import Node, Service

nodes = {
    # Numbered in name order: client 1, router 2, server 3.
    "client": Node(
        vlans=[1],
        default_gateway="192.168.1.2",
        default_gateway6="2001:db8:1::2",
    ),
    "router": Node(
        vlans=[1, 2],
        files={"/etc/sysctl.d/90-forwarding.conf": "net.ipv4.ip_forward = 1\nnet.ipv6.conf.all.forwarding = 1\n"},
    ),
    "server": Node(
        vlans=[2],
        default_gateway="192.168.2.2",
        default_gateway6="2001:db8:2::2",
        packages=["python3"],
        files={"/srv/www/index.html": "hello through the router\n"},
        services={
            "web": Service(
                exec_start="/usr/bin/python3 -m http.server 80 --bind :: --directory /srv/www",
                after=["network.target"],
            )
        },
    ),
}

test_script = """
start_all()
router.wait_for_unit("network.target")
server.wait_for_unit("network-setup.service")
server.wait_for_unit("web.service")
server.wait_for_open_port(80)
client.wait_for_unit("network-online.target")

with subtest("the client reaches the server through the router"):
    client.succeed("ping -c 1 -W 5 server", timeout=30)
    client.succeed("ping -4 -c 1 -W 5 server", timeout=30)
    assert client.succeed("curl -6 --fail -sS http://server/") == "hello through the router\\n"
    assert client.succeed("curl -4 --fail -sS http://server/") == "hello through the router\\n"
    assert "via 192.168.1.2 dev eth1" in client.succeed("ip route get 192.168.2.3")
    assert "via 2001:db8:1::2 dev eth1" in client.succeed("ip -6 route get 2001:db8:2::3")

with subtest("network-setup sets the default routes again"):
    client.succeed("ip route del default; ip -6 route del default")
    client.fail("curl -4 --max-time 3 -sS http://server/")
    client.systemctl("restart network-setup.service")
    client.succeed("curl -4 --fail -sS --max-time 10 http://server/")
    client.succeed("curl -6 --fail -sS --max-time 10 http://server/")

with subtest("the path goes through the router"):
    router.block()
    client.fail("curl -4 --max-time 3 -sS http://server/")
    router.unblock()
    client.wait_until_succeeds("curl -4 --fail -sS --max-time 3 http://server/", timeout=30)
"""
