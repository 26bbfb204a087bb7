"""NixOS's firewall, both backends: an allowed port, a refused one, ping, and a firewall that rejects.

NixOS behaviours exercised: `networking.firewall` as every NixOS machine has
it (here `Node(firewall=Firewall(...))`), with its default iptables backend
on the server (`wait_for_unit("firewall.service")`, `iptables -L nixos-fw`)
and the nftables one on the client (`networking.nftables.enable`:
`wait_for_unit("nftables")`, `nft list table inet nixos-fw`):
a port in `allowedTCPPorts` reachable from another node while another
listening port is not (dropped: the client's connect times out), the
"refused connection: " line on the console, loopback always allowed, ping
and IPv6 ping allowed, `rejectPackets` answering at once with "refused",
replies to a firewalled node's own connections let back in, `systemctl stop
firewall` opening every port and a start closing them again, `extraCommands`
(with NixOS's `ip46tables` helper) and `systemctl reload firewall`. Also NixOS's
`network-addresses-eth1.service`, which scripts wait for before using a
card.

Debian packages standing in: none beyond the base image (busybox's httpd
serves the page, netcat listens on the port the firewall closes); vmrig adds
iptables or nftables to a node with a firewall.
"""

from vmrig import Firewall, Node, Service

nodes = {
    "server": Node(
        files={"/srv/www/index.html": "behind the firewall\n"},
        services={
            "web": Service(exec_start="/bin/busybox httpd -f -p 80 -h /srv/www"),
            "hidden": Service(exec_start="/bin/nc -lk 8080"),
            "extra": Service(exec_start="/bin/nc -lk 9000"),
        },
        firewall=Firewall(
            allowed_tcp_ports=[80],
            extra_commands="ip46tables -A nixos-fw -p tcp --dport 9000 -j nixos-fw-accept",
        ),
    ),
    "client": Node(
        services={"closed": Service(exec_start="/bin/nc -lk 1234")},
        firewall=Firewall(backend="nftables", reject_packets=True),
    ),
}

test_script = """
start_all()
server.wait_for_unit("firewall.service")
client.wait_for_unit("nftables")
server.succeed("iptables -L nixos-fw -n | grep -q 'tcp dpt:80'")
server.succeed("ip6tables -L nixos-fw -n | grep -q 'tcp dpt:80'")
client.succeed("nft list table inet nixos-fw | grep -q 'reject with tcp reset'")
server.wait_for_unit("network-addresses-eth1.service")
server.wait_for_unit("web")
server.wait_for_open_port(80)
server.wait_for_open_port(8080)
client.wait_for_unit("network-online.target")

with subtest("an allowed port is reachable from another node"):
    out = client.wait_until_succeeds("curl --fail --connect-timeout 2 http://server/", timeout=30)
    assert out == "behind the firewall\\n", out

with subtest("a listening port that is not allowed is dropped, and the refusal logged"):
    client.fail("nc -z -w 3 server 8080")
    server.wait_for_console_text("refused connection: .*DPT=8080", timeout=30)

with subtest("the machine reaches its own ports over loopback"):
    server.succeed("nc -z -w 2 localhost 8080")

with subtest("ping passes, over IPv4 and IPv6"):
    client.succeed("ping -c 1 -W 5 server")
    client.succeed("ping -6 -c 1 -W 5 server")

with subtest("rejectPackets refuses at once instead of dropping"):
    client.wait_for_unit("closed")
    client.wait_for_open_port(1234)
    out = server.fail("nc -z -v -w 10 client 1234 2>&1")
    assert "refused" in out, out

with subtest("extraCommands open a port, and a reload keeps the rules"):
    client.succeed("nc -z -w 3 server 9000")
    server.systemctl("reload firewall")
    client.succeed("nc -z -w 3 server 9000")
    client.succeed("curl --fail --connect-timeout 2 http://server/")
    client.fail("nc -4 -z -w 3 server 8080")

with subtest("stopping the firewall opens the port, starting it closes it"):
    server.systemctl("stop firewall")
    client.succeed("nc -z -w 3 server 8080")
    server.succeed("iptables -L nixos-fw -n >/dev/null")  # unhooked, still there, as on NixOS
    client.systemctl("stop nftables")
    server.succeed("nc -z -w 3 client 1234")
    client.systemctl("start nftables")
    server.fail("nc -z -w 3 client 1234")
    server.systemctl("start firewall")
    server.wait_for_unit("firewall.service")
    client.fail("nc -z -w 3 server 8080")
"""
