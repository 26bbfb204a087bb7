"""Node.firewall in the guest: NixOS's firewall, with either of its two backends.

- iptables (NixOS's default, firewall-iptables.nix): `firewall.service` loads
  the chains `nixos-fw`, `nixos-fw-accept`, `nixos-fw-log-refuse` and
  `nixos-fw-refuse` (and `nixos-fw-rpfilter` in the mangle table) with one
  `iptables-restore` per address family, not NixOS's one `iptables` exec per
  rule: an exec costs tens of milliseconds under TCG, early in the boot.
- nftables (firewall-nftables.nix): Debian's `nftables.service` loads
  `/etc/nftables.conf`, which replaces only the table `inet nixos-fw` (other
  tables, iptables-nft's among them, stay), and a stop deletes only that
  table, as NixOS's nftables.service does.

Either unit has NixOS's name, so scripts that `wait_for_unit("firewall")` or
`wait_for_unit("nftables")` run unchanged, and starts before network-pre.target
(both are wanted by sysinit.target here; NixOS's nftables.service is wanted by
multi-user.target, later).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmrig.spec import FIREWALL_UNITS, Firewall, FirewallPorts

NFT_TABLE = "inet nixos-fw"
NFTABLES_CONF = "/etc/nftables.conf"
NFTABLES_UNIT = FIREWALL_UNITS["nftables"]  # Debian's
# Debian's stop flushes every table; NixOS's deletes only its own.
NFTABLES_DROP_IN = f"[Service]\nExecStop=\nExecStop=-nft delete table {NFT_TABLE}\n"
IPTABLES_UNIT = FIREWALL_UNITS["iptables"]
RULES_DIR = "/etc/vmrig/firewall"
CHAINS = ("nixos-fw-accept", "nixos-fw-refuse", "nixos-fw-log-refuse", "nixos-fw")
RPFILTER_CHAIN = "nixos-fw-rpfilter"
# Made by the first start of a boot (in /run, so a reboot forgets it).
STARTED_MARKER = "/run/vmrig-firewall.started"
FAMILIES = {4: "iptables", 6: "ip6tables"}
# NixOS's helper, which extraCommands and extraStopCommands often call.
IP46TABLES = 'ip46tables() {\n    iptables -w "$@"\n    ip6tables -w "$@"\n}\n'


@dataclass
class GuestFirewall:
    """What a firewall puts in the config layer: files (path -> content) and units to enable."""

    files: dict[str, bytes] = field(default_factory=dict)
    units: dict[str, bytes] = field(default_factory=dict)  # our own unit files, enabled for sysinit.target
    enable: list[str] = field(default_factory=list)  # the image's units to enable for sysinit.target


def guest_firewall(firewall: Firewall) -> GuestFirewall:
    """The guest's side of `firewall`, for its backend."""
    if firewall.backend == "nftables":
        files = {
            NFTABLES_CONF: nftables_conf(firewall).encode(),
            f"/etc/systemd/system/{NFTABLES_UNIT}.d/50-vmrig.conf": NFTABLES_DROP_IN.encode(),
        }
        return GuestFirewall(files=files, enable=[NFTABLES_UNIT])
    files = {f"{RULES_DIR}/rules{family}": iptables_rules(firewall, family).encode() for family in FAMILIES}
    files[f"{RULES_DIR}/clean"] = _iptables_clean().encode()
    files[f"{RULES_DIR}/stop"] = _iptables_stop(firewall).encode()
    if firewall.extra_commands:
        files[f"{RULES_DIR}/extra"] = (IP46TABLES + firewall.extra_commands.rstrip("\n") + "\n").encode()
        files[f"{RULES_DIR}/tail"] = "".join(f"{line}\n" for line in ["*filter", *TAIL_RULES, "COMMIT"]).encode()
    return GuestFirewall(files=files, units={IPTABLES_UNIT: _iptables_unit(firewall).encode()})


# -- iptables ----------------------------------------------------------------


def _iptables_name(interface: str) -> str:
    return interface[:-1] + "+" if interface.endswith("*") else interface


# The last rules, loaded after extra_commands as NixOS runs them: the final refusal, then INPUT's jump.
TAIL_RULES = ("-A nixos-fw -j nixos-fw-log-refuse", "-A INPUT -j nixos-fw")


def _iptables_ports(ports: FirewallPorts, interface: str | None) -> list[str]:
    match = f" -i {_iptables_name(interface)}" if interface else ""
    rules = []
    for protocol in ("tcp", "udp"):
        single, ranges = ports.ports(protocol)
        wanted = [str(port) for port in single] + [f"{low}:{high}" for low, high in ranges]
        rules += [f"-A nixos-fw -p {protocol} --dport {port} -j nixos-fw-accept{match}" for port in wanted]
    return rules


def iptables_rules(firewall: Firewall, family: int) -> str:
    """An `iptables-restore --noflush` file for address `family` (4 or 6): NixOS's chains and rules."""
    refuse = (
        ["-A nixos-fw-refuse -p tcp ! --syn -j REJECT --reject-with tcp-reset", "-A nixos-fw-refuse -j REJECT"]
        if firewall.reject_packets
        else ["-A nixos-fw-refuse -j DROP"]
    )
    log_refuse = []
    if firewall.log_refused_connections:
        log_refuse.append(
            '-A nixos-fw-log-refuse -p tcp --syn -j LOG --log-level info --log-prefix "refused connection: "'
        )
    if firewall.log_refused_packets and not firewall.log_refused_unicasts_only:
        log_refuse += [
            f"-A nixos-fw-log-refuse -m pkttype --pkt-type {kind} -j LOG --log-level info "
            f'--log-prefix "refused {kind}: "'
            for kind in ("broadcast", "multicast")
        ]
    log_refuse.append("-A nixos-fw-log-refuse -m pkttype ! --pkt-type unicast -j nixos-fw-refuse")
    if firewall.log_refused_packets:
        log_refuse.append('-A nixos-fw-log-refuse -j LOG --log-level info --log-prefix "refused packet: "')
    log_refuse.append("-A nixos-fw-log-refuse -j nixos-fw-refuse")
    main = [
        f"-A nixos-fw -i {_iptables_name(name)} -j nixos-fw-accept" for name in ["lo", *firewall.trusted_interfaces]
    ]
    main.append("-A nixos-fw -m conntrack --ctstate ESTABLISHED,RELATED -j nixos-fw-accept")
    main += _iptables_ports(firewall, None)
    for name, ports in sorted(firewall.interfaces.items()):
        main += _iptables_ports(ports, name)
    if family == 4 and firewall.allow_ping:
        limit = f"-m limit {firewall.ping_limit} " if firewall.ping_limit else ""
        main.append(f"-A nixos-fw -p icmp --icmp-type echo-request {limit}-j nixos-fw-accept")
    if family == 6:
        # IPv6 needs ICMPv6 (neighbour discovery, path MTU): all of it but redirects and node information queries.
        main += [
            "-A nixos-fw -p ipv6-icmp --icmpv6-type redirect -j DROP",
            "-A nixos-fw -p ipv6-icmp --icmpv6-type 139 -j DROP",
            "-A nixos-fw -p ipv6-icmp -j nixos-fw-accept",
            "-A nixos-fw -d fe80::/64 -p udp --dport 546 -j nixos-fw-accept",  # a DHCPv6 client's answers
        ]
    lines = ["*filter", *(f":{chain} - [0:0]" for chain in CHAINS), "-A nixos-fw-accept -j ACCEPT"]
    lines += refuse + log_refuse + main
    if not firewall.extra_commands:
        lines += TAIL_RULES
    lines.append("COMMIT")
    if firewall.check_reverse_path:
        loose = " --loose" if firewall.check_reverse_path == "loose" else ""
        lines += [
            "*mangle",
            f":{RPFILTER_CHAIN} - [0:0]",
            f"-A {RPFILTER_CHAIN} -m rpfilter --validmark{loose} -j RETURN",
        ]
        if family == 4:
            lines += [
                f"-A {RPFILTER_CHAIN} -p udp --sport 67 --dport 68 -j RETURN",  # a DHCPv4 client's first answer
                f"-A {RPFILTER_CHAIN} -s 0.0.0.0 -d 255.255.255.255 -p udp --sport 68 --dport 67 -j RETURN",
            ]
        lines += [f"-A {RPFILTER_CHAIN} -j DROP", f"-A PREROUTING -j {RPFILTER_CHAIN}", "COMMIT"]
    return "\n".join(lines) + "\n"


def _unhook() -> list[str]:
    """The commands that take the chains out of the packets' path (each jump as often as a failed start added it)."""
    return [
        f"while {command} -w {jump} 2>/dev/null; do :; done"
        for command in FAMILIES.values()
        for jump in ("-D INPUT -j nixos-fw", f"-t mangle -D PREROUTING -j {RPFILTER_CHAIN}")
    ]


def _iptables_clean() -> str:
    """bash run before every start, as NixOS's firewall-start begins: no jump or chain of an earlier start is left.

    The first start of a boot finds the marker file missing and runs no
    iptables at all: some 24 execs, each tens of milliseconds under TCG, early
    in the boot.
    """
    lines = _unhook()
    for command in FAMILIES.values():
        for table, chains in (("filter", CHAINS), ("mangle", (RPFILTER_CHAIN,))):
            lines += [f"{command} -w -t {table} -F {chain} 2>/dev/null" for chain in chains]
            lines += [f"{command} -w -t {table} -X {chain} 2>/dev/null" for chain in chains]
    body = "".join(f"    {line}\n" for line in lines)
    return f"if [ -e {STARTED_MARKER} ]; then\n{body}fi\n: >{STARTED_MARKER}\n"


def _iptables_stop(firewall: Firewall) -> str:
    """bash for a stop, as NixOS's firewall-stop: the chains are unhooked (they stay), then extra_stop_commands."""
    script = "".join(f"{line}\n" for line in _unhook())
    if firewall.extra_stop_commands:
        script += IP46TABLES + firewall.extra_stop_commands.rstrip("\n") + "\n"
    return script


def _iptables_unit(firewall: Firewall) -> str:
    # bash, as NixOS runs these scripts (extra_commands may use bash's syntax); -e: a failing command fails the unit.
    start = [f"/bin/bash {RULES_DIR}/clean"]
    start += [f"{command}-restore -w --noflush {RULES_DIR}/rules{family}" for family, command in FAMILIES.items()]
    if firewall.extra_commands:
        start.append(f"/bin/bash -e {RULES_DIR}/extra")
        start += [f"{command}-restore -w --noflush {RULES_DIR}/tail" for command in FAMILIES.values()]
    stop = f"/bin/bash -e {RULES_DIR}/stop"
    return (
        "[Unit]\n"
        "Description=Firewall\n"
        "DefaultDependencies=no\n"
        "Wants=network-pre.target\n"
        "Before=network-pre.target shutdown.target\n"
        "Conflicts=shutdown.target\n"
        "After=systemd-modules-load.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        + "".join(f"ExecStart={command}\n" for command in start)
        + "".join(f"ExecReload={command}\n" for command in start)
        + f"ExecStop={stop}\n"
    )


# -- nftables ----------------------------------------------------------------


def _nft_name(interface: str) -> str:
    return interface[:-1] + "*" if interface.endswith("+") else interface


def _nft_ports(ports: FirewallPorts, interface: str | None) -> list[str]:
    match = f'iifname "{_nft_name(interface)}" ' if interface else ""
    rules = []
    for protocol in ("tcp", "udp"):
        single, ranges = ports.ports(protocol)
        wanted = [str(port) for port in single] + [f"{low}-{high}" for low, high in ranges]
        if wanted:
            rules.append(f"{match}{protocol} dport {{ {', '.join(wanted)} }} accept")
    return rules


def nft_table(firewall: Firewall) -> str:
    """The `inet nixos-fw` table, as NixOS's nftables firewall writes it."""
    trusted = ", ".join(f'"{_nft_name(name)}"' for name in ["lo", *firewall.trusted_interfaces])
    allow = _nft_ports(firewall, None)
    for name, ports in sorted(firewall.interfaces.items()):
        allow += _nft_ports(ports, name)
    if firewall.allow_ping:
        limit = f"limit rate {firewall.ping_limit} " if firewall.ping_limit else ""
        allow.append(f"icmp type echo-request {limit}accept")
    allow += [
        # IPv6 needs ICMPv6 (neighbour discovery, path MTU): all of it but redirects and node information queries.
        "icmpv6 type != { nd-redirect, 139 } accept",
        "ip6 daddr fe80::/64 udp dport 546 accept",  # a DHCPv6 client's answers
        *(line.strip() for line in firewall.extra_input_rules.splitlines() if line.strip()),
    ]
    refuse = []
    if firewall.log_refused_connections:
        refuse.append('tcp flags & (fin | syn | rst | ack) == syn log prefix "refused connection: " level info')
    if firewall.log_refused_packets and not firewall.log_refused_unicasts_only:
        refuse += [
            f'meta pkttype {kind} log prefix "refused {kind}: " level info' for kind in ("broadcast", "multicast")
        ]
    if firewall.log_refused_packets:
        refuse.append('meta pkttype host log prefix "refused packet: " level info')
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
        f"table {NFT_TABLE} {{",
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


def nftables_conf(firewall: Firewall) -> str:
    """/etc/nftables.conf: the firewall's table replaced as a whole (`nft -f` is atomic), other tables kept."""
    return f"#!/usr/sbin/nft -f\ntable {NFT_TABLE}\ndelete table {NFT_TABLE}\n\n" + nft_table(firewall)
