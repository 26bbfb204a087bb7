"""DNS: bind9 serves a small zone; a client asks it with dig.

NixOS behaviours exercised: an authoritative zone given as a file
(`services.bind.zones`), `wait_for_unit` of the name server,
`wait_for_open_port(53)`, `dig @server` for A, AAAA, MX and reverse-less
NXDOMAIN answers from another node, a zone reload after the zone file changes.

Debian packages standing in for `services.bind`: `bind9` on the server,
`bind9-dnsutils` (dig) on the client; the zone is declared in
/etc/bind/named.conf.local, which Debian's named.conf includes.

Debian differences: NixOS's unit is `bind.service`; Debian's is
`named.service` (with the alias `bind9.service`), so the script waits for
`named`. Debian's named.conf.options already listens on every address and
answers queries from anyone for authoritative zones.
"""

from vmrig import Node

ZONE = """\
$TTL 300
@       IN SOA  ns1.example.test. hostmaster.example.test. (
                2024010101 3600 600 86400 300 )
        IN NS   ns1.example.test.
        IN MX   10 mail.example.test.
ns1     IN A    192.168.1.2
www     IN A    192.0.2.10
www     IN AAAA 2001:db8::10
mail    IN A    192.0.2.25
alias   IN CNAME www.example.test.
"""

NAMED_CONF_LOCAL = """\
zone "example.test" {
    type master;
    file "/etc/bind/db.example.test";
};
"""

nodes = {
    "server": Node(
        packages=["bind9", "bind9-dnsutils"],
        files={
            "/etc/bind/named.conf.local": NAMED_CONF_LOCAL,
            "/etc/bind/db.example.test": ZONE,
        },
    ),
    "client": Node(packages=["bind9-dnsutils"]),
}

test_script = """
start_all()
server.wait_for_unit("network-online.target")
server.wait_for_unit("named")
server.wait_for_open_port(53)

with subtest("the zone is valid and loaded"):
    server.succeed("named-checkzone example.test /etc/bind/db.example.test")
    server.wait_until_succeeds("dig @127.0.0.1 +short www.example.test | grep -q 192.0.2.10", timeout=30)

with subtest("the client resolves through the server"):
    t.assertEqual(client.succeed("dig @server +short www.example.test A").strip(), "192.0.2.10")
    t.assertEqual(client.succeed("dig @server +short www.example.test AAAA").strip(), "2001:db8::10")
    t.assertIn("mail.example.test.", client.succeed("dig @server +short example.test MX"))
    t.assertIn("www.example.test.", client.succeed("dig @server +short alias.example.test"))

with subtest("over IPv6 and TCP too"):
    client.succeed("dig -6 @server +short www.example.test | grep -q 192.0.2.10")
    client.succeed("dig +tcp @server +short www.example.test | grep -q 192.0.2.10")

with subtest("unknown names are NXDOMAIN, and the answer is authoritative"):
    out = client.succeed("dig @server nothing-here.example.test")
    assert "status: NXDOMAIN" in out, out
    assert " aa" in client.succeed("dig @server www.example.test | grep flags:")

with subtest("a changed zone is served after a reload"):
    server.succeed(
        "sed -i -e 's/2024010101/2024010102/' -e 's/192.0.2.10/192.0.2.11/' /etc/bind/db.example.test",
        "rndc reload example.test",
    )
    client.wait_until_succeeds("dig @server +short www.example.test | grep -q 192.0.2.11", timeout=30)
"""
