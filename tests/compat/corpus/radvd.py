"""IPv6 router advertisements: radvd announces a prefix, a client configures an address by SLAAC.

NixOS behaviours exercised: `router.wait_for_unit("radvd")`, a client that
accepts router advertisements on eth1 (sysctl set from a file, as
`boot.kernel.sysctl` does), `wait_until_succeeds` on the autoconfigured
address and on the default route learnt from the router, pinging the new
address from the router.

Debian package standing in for `services.radvd`: `radvd` on the router
(its configuration in /etc/radvd.conf, as `services.radvd.config` writes it),
`iputils-ping` on the router for the final check.

Debian differences:
- radvd refuses to run unless IPv6 forwarding is on; the router enables it
  in /etc/sysctl.d, which systemd-sysctl.service applies early in the boot
  (NixOS: `boot.kernel.sysctl."net.ipv6.conf.all.forwarding" = true`).
- vmrig gives every card static addresses in the initramfs (192.168.1.<n>,
  2001:db8:1::<n>), not through networkd or dhcpcd as NixOS would; the
  kernel itself must accept the advertisements: accept_ra=2 and autoconf=1 on
  the client's eth1, from /etc/sysctl.d as well.
"""

from vmrig import Node

RADVD_CONF = """\
interface eth1 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 10;
    prefix 2001:db8:99::/64 {
        AdvOnLink on;
        AdvAutonomous on;
    };
};
"""

ACCEPT_RA = """\
net.ipv6.conf.eth1.forwarding = 0
net.ipv6.conf.eth1.accept_ra = 2
net.ipv6.conf.eth1.autoconf = 1
"""

nodes = {
    "router": Node(
        packages=["radvd", "iputils-ping"],
        files={
            "/etc/radvd.conf": RADVD_CONF,
            "/etc/sysctl.d/90-forwarding.conf": "net.ipv6.conf.all.forwarding = 1\n",
        },
    ),
    "client": Node(
        files={
            "/etc/sysctl.d/90-accept-ra.conf": ACCEPT_RA,
        },
    ),
}

test_script = """
start_all()
router.wait_for_unit("network.target")
router.wait_for_unit("radvd")
client.wait_for_unit("network.target")

with subtest("the sysctls are in place"):
    t.assertEqual(router.succeed("sysctl -n net.ipv6.conf.all.forwarding").strip(), "1")
    t.assertEqual(client.succeed("sysctl -n net.ipv6.conf.eth1.accept_ra").strip(), "2")

with subtest("the client autoconfigures an address in the advertised prefix"):
    client.wait_until_succeeds("ip -6 addr show dev eth1 | grep -q 'inet6 2001:db8:99:'", timeout=60)
    # the static address is still there
    client.succeed("ip -6 addr show dev eth1 | grep -q 'inet6 2001:db8:1::'")

with subtest("the client learns a default route via the router"):
    client.wait_until_succeeds("ip -6 route show default | grep -q 'via fe80::.* dev eth1'", timeout=60)
    router_ll = router.succeed(
        "ip -6 addr show dev eth1 scope link | sed -n 's/.*inet6 \\\\(fe80::[^/]*\\\\).*/\\\\1/p'"
    ).strip()
    client.succeed(f"ip -6 route show default | grep -q 'via {router_ll} '")

with subtest("the router reaches the client's new address"):
    slaac = client.succeed(
        "ip -6 addr show dev eth1 | sed -n 's/.*inet6 \\\\(2001:db8:99:[^/]*\\\\).*/\\\\1/p'"
    ).split()[0]
    router.succeed("ip -6 addr add 2001:db8:99::1/64 dev eth1")
    router.wait_until_succeeds(f"ping -6 -c1 -W1 {slaac}", timeout=30)
"""
