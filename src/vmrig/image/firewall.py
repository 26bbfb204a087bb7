"""Node.firewall in the guest: NixOS's default firewall as an nftables ruleset and `firewall.service`.

The rules follow NixOS's nftables firewall (`nixos-fw`): a reverse-path check
in prerouting; in input, loopback and trusted interfaces pass, replies pass,
new connections go through the allowed ports, ping and ICMPv6, and what is
left is logged ("refused connection: ") and dropped or rejected. The unit has
NixOS's name, so scripts that `wait_for_unit("firewall.service")` run
unchanged, and NixOS's place in the boot: wanted by sysinit.target, before
network-pre.target.
"""

from __future__ import annotations

from vmrig.spec import Firewall, FirewallPorts

RULESET_PATH = "/etc/vmrig/firewall.nft"
UNIT = "firewall.service"
TABLE = "inet nixos-fw"

UNIT_TEXT = f"""[Unit]
Description=Firewall
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
# Debian's nftables.service loads /etc/nftables.conf, which flushes every rule.
After=systemd-modules-load.service nftables.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=nft -f {RULESET_PATH}
ExecReload=nft -f {RULESET_PATH}
ExecStop=nft delete table {TABLE}

[Install]
WantedBy=sysinit.target
"""


def _port_rules(ports: FirewallPorts, interface: str | None) -> list[str]:
    match = f'iifname "{interface}" ' if interface else ""
    rules = []
    for protocol in ("tcp", "udp"):
        single = [str(port) for port in getattr(ports, f"allowed_{protocol}_ports")]
        ranges = [f"{low}-{high}" for low, high in getattr(ports, f"allowed_{protocol}_port_ranges")]
        if single or ranges:
            rules.append(f"{match}{protocol} dport {{ {', '.join(single + ranges)} }} accept")
    return rules


def ruleset(firewall: Firewall) -> str:
    """The nft script that (re)loads the `nixos-fw` table: `nft -f` applies it atomically."""
    trusted = ", ".join(f'"{name}"' for name in ["lo", *firewall.trusted_interfaces])
    allow = _port_rules(firewall, None)
    for name, ports in sorted(firewall.interfaces.items()):
        allow += _port_rules(ports, name)
    if firewall.allow_ping:
        allow.append("icmp type echo-request accept")
    allow += [
        # IPv6 needs ICMPv6 (neighbour discovery, path MTU); NixOS lets it all in but redirects and node information.
        "icmpv6 type != { nd-redirect, 139 } accept",
        "ip6 daddr fe80::/64 udp dport 546 accept",  # a DHCPv6 client's answers
    ]
    refuse = []
    if firewall.log_refused_connections:
        refuse.append('tcp flags & (fin | syn | rst | ack) == syn log prefix "refused connection: " level info')
    if firewall.reject_packets:
        refuse += ["meta l4proto tcp reject with tcp reset", "reject"]
    rpfilter = []
    if firewall.check_reverse_path:
        interface = "" if firewall.check_reverse_path == "loose" else " . iif"
        rpfilter = [
            "chain rpfilter {",
            "    type filter hook prerouting priority mangle + 10; policy drop;",
            "    meta nfproto ipv4 udp sport . udp dport { 68 . 67, 67 . 68 } accept",
            f"    fib saddr . mark{interface} oif exists accept",
            "}",
        ]
    lines = [
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        *(f"    {line}" for line in rpfilter),
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        f"        iifname {{ {trusted} }} accept",
        "        ct state vmap { invalid : drop, established : accept, related : accept, "
        "new : jump input-allow, untracked : jump input-allow }",
        *(f"        {rule}" for rule in refuse),
        "    }",
        "    chain input-allow {",
        *(f"        {rule}" for rule in allow),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
