"""Fault injection on the test network: partitions, and delay, jitter, loss or a rate limit on links.

A test script reaches it as `network` (and `driver.network`):

    network.partition([node1], [node2, node3])   # node1 and the others no longer hear each other
    network.heal()                               # every partition undone

    network.link(node1).set(delay="100ms", jitter="10ms", loss=0.05, rate="1mbit")  # node1's cable
    network.link(node1, node2).set(delay="50ms")  # only what goes between node1 and node2
    network.link(node1).clear()                   # that link as it was
    network.clear()                               # every fault undone

    with network.partition(node1, [node2, node3]):  # healed when the block ends
        ...
    with network.link(node1, node2).set(loss=0.2):  # cleared when the block ends
        ...

What the settings mean:

- Every setting applies to each direction on its own: with
  `link(a, b).set(delay="50ms")` a packet from a to b arrives 50 ms later, and
  so does one from b to a, so a ping between them takes 100 ms longer; with
  `loss=0.1` every packet of either direction is lost with probability 0.1.
- `link(a)` is a's cable: every packet a sends or receives on its vlan cards.
  `link(a, b)` is only what goes between a and b. `one_way=True` keeps only
  the packets a sends (`link(a, one_way=True)`: all of them; `link(a, b,
  one_way=True)`: those to b). `vlan=N` limits a link to one vlan; a setting
  for one vlan beats one for all vlans, and where other links overlap, the
  one set last wins.
- Where `link(a)` and `link(a, b)` both apply, they add up: delays and
  jitters add, losses compound, the lower rate wins.
- `set()` replaces what the link had; `clear()` removes it.
- A partition drops every frame between machines of different groups, on
  every vlan (IP, ARP, broadcasts alike); machines in no group keep hearing
  everyone. Partitions add up until they are healed.

Faults are real: they are tc rules in the guests' kernels, on the vlan cards
(netem for delay, jitter, loss and rate; flower filters on the peers' MAC
addresses to pick packets; an ifb device for what a card receives). So they
show in what the guests measure, and every change rewrites the rules of the
machines it concerns from scratch: heal() and clear() leave the cards as they
were at boot. A machine that reboots comes back without rules; the next change
of the network puts them back. `block()`/`unblock()` (a machine's cable pulled
out) are separate and work on their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from vmrig.errors import ArgumentError, MachineError
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.machine.base import MachineBase
from vmrig.netcard import NetworkCard

__all__ = [
    "CardFaults",
    "Impairment",
    "Link",
    "Network",
    "Partition",
    "impairment",
    "machine_script",
    "plan",
]

MachineRef = Machine | str
Group = Machine | str | Iterable[Machine | str]
# (machine, peer or None for every peer, vlan or None for every vlan)
EgressKey = tuple[str, str | None, int | None]
IngressKey = tuple[str, int | None]
# (machine, peer, vlan, one_way): what a Link is
LinkKey = tuple[str, str | None, int | None, bool]

# A prio qdisc has at most 16 bands; band 1 is for everything else.
MAX_PEERS_PER_CARD = 15
MAX_DELAY_US = 3600 * 1_000_000

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s)\s*", re.IGNORECASE)
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(bit|kbit|mbit|gbit)\s*", re.IGNORECASE)
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
_DURATION_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000}
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


# ---------------------------------------------------------------------------
# Settings


def parse_duration(value: object, what: str) -> int:
    """'100ms', '1.5s', '250us' -> microseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f" (did you mean '{value}ms'?)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
        raise TypeError(f"{what} needs a unit, as a string like '100ms', '1s' or '500us', got {value!r}{hint}")
    match = _DURATION.fullmatch(value)
    if not match:
        raise ArgumentError(f"{what}: {value!r} is not a duration like '100ms', '1s' or '500us'")
    micros = round(float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()])
    if micros > MAX_DELAY_US:
        raise ArgumentError(f"{what}: {value!r} is more than an hour")
    return micros


def parse_loss(value: object) -> float:
    """0.05 or '5%' -> 0.05."""
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value)
        if not match:
            raise ArgumentError(f"loss: {value!r} is not a fraction (0.05) or a percentage ('5%')")
        fraction = float(match.group(1)) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        raise TypeError(f"loss is a fraction between 0 and 1 (0.05) or a percentage ('5%'), got {value!r}")
    if fraction < 0:
        raise ArgumentError(f"loss cannot be negative, got {value!r}")
    if fraction > 1:
        if isinstance(value, str):
            raise ArgumentError(f"loss: {value!r} is more than 100%")
        raise ArgumentError(f"loss is a fraction between 0 and 1: for {value} % write {value / 100:g} or '{value}%'")
    return fraction


def parse_rate(value: object) -> int:
    """'1mbit', '512kbit' -> bits per second."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise TypeError(f"rate needs a unit, as a string like '1mbit' or '512kbit', got {value!r}")
    match = _RATE.fullmatch(value)
    if not match:
        hint = " (tc's 'bps' means bytes per second; write bits, e.g. '8mbit')" if "bps" in value.lower() else ""
        raise ArgumentError(f"rate: {value!r} is not a rate like '1mbit', '512kbit' or '1gbit'{hint}")
    bits = round(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if bits < 1:
        raise ArgumentError(f"rate: {value!r} is zero; to cut a link off, use network.partition()")
    return bits


def _show_duration(micros: int) -> str:
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    if micros % 1_000 == 0:
        return f"{micros // 1_000}ms"
    return f"{micros}us"


def _show_rate(bits: int) -> str:
    for unit in ("gbit", "mbit", "kbit"):
        if bits % _RATE_UNITS[unit] == 0:
            return f"{bits // _RATE_UNITS[unit]}{unit}"
    return f"{bits}bit"


@dataclass(frozen=True)
class Impairment:
    """What netem does to the packets of one direction of a link."""

    delay_us: int = 0
    jitter_us: int = 0
    loss: float = 0.0
    rate_bit: int | None = None

    def then(self, other: Impairment) -> Impairment:
        """Both in a row: delays and jitters add, losses compound, the lower rate wins."""
        rates = [rate for rate in (self.rate_bit, other.rate_bit) if rate is not None]
        return Impairment(
            delay_us=self.delay_us + other.delay_us,
            jitter_us=self.jitter_us + other.jitter_us,
            loss=1 - (1 - self.loss) * (1 - other.loss),
            rate_bit=min(rates) if rates else None,
        )

    def netem(self) -> str:
        """The arguments of `tc qdisc ... netem`."""
        parts = [f"delay {self.delay_us}us" + (f" {self.jitter_us}us" if self.jitter_us else "")]
        if self.loss:
            parts.append(f"loss {self.loss * 100:.6g}%")
        if self.rate_bit is not None:
            parts.append(f"rate {self.rate_bit}bit")
        return " ".join(parts)

    def __str__(self) -> str:
        parts = []
        if self.delay_us or self.jitter_us:
            parts.append(f"delay {_show_duration(self.delay_us)}")
        if self.jitter_us:
            parts.append(f"jitter {_show_duration(self.jitter_us)}")
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.rate_bit is not None:
            parts.append(f"rate {_show_rate(self.rate_bit)}")
        return ", ".join(parts) or "no change"


def impairment(
    delay: str | None = None, jitter: str | None = None, loss: float | str | None = None, rate: str | None = None
) -> Impairment:
    """An Impairment from a script's arguments, or TypeError/ValueError saying what is wrong."""
    if delay is None and jitter is None and loss is None and rate is None:
        raise ArgumentError("set() needs at least one of delay, jitter, loss or rate; to remove them, call clear()")
    delay_us = parse_duration(delay, "delay") if delay is not None else 0
    jitter_us = parse_duration(jitter, "jitter") if jitter is not None else 0
    if jitter_us and not delay_us:
        raise ArgumentError("jitter varies a delay: give a delay too, e.g. set(delay='100ms', jitter='10ms')")
    if jitter_us > delay_us:
        raise ArgumentError(f"jitter ({jitter}) is larger than the delay ({delay}): packets cannot arrive early")
    return Impairment(
        delay_us=delay_us,
        jitter_us=jitter_us,
        loss=parse_loss(loss) if loss is not None else 0.0,
        rate_bit=parse_rate(rate) if rate is not None else None,
    )


# ---------------------------------------------------------------------------
# From faults to tc rules (pure)


@dataclass(frozen=True)
class CardFaults:
    """The faults of one vlan card of one machine."""

    name: str  # eth1, eth2, ...
    drop_from: tuple[str, ...] = ()  # MACs whose frames are dropped on arrival
    egress: Impairment | None = None  # every packet sent (but to the peers below)
    egress_to: tuple[tuple[str, Impairment], ...] = ()  # (peer MAC, impairment) of packets sent to a peer
    ingress: Impairment | None = None  # every packet received

    @property
    def active(self) -> bool:
        return bool(self.drop_from or self.egress or self.egress_to or self.ingress)

    @property
    def ifb(self) -> str:
        """The device that stands for what the card receives."""
        return f"ifb-{self.name}"


def directions(
    links: Mapping[LinkKey, Impairment],
) -> tuple[dict[EgressKey, Impairment], dict[IngressKey, Impairment]]:
    """Links (in the order they were set) as per-direction rules: what machines send and receive."""
    egress: dict[EgressKey, Impairment] = {}
    ingress: dict[IngressKey, Impairment] = {}
    for (machine, peer, vlan, one_way), setting in links.items():
        egress[(machine, peer, vlan)] = setting
        if one_way:
            continue
        if peer is None:
            ingress[(machine, vlan)] = setting
        else:
            egress[(peer, machine, vlan)] = setting
    return egress, ingress


def plan(
    cards: Mapping[str, Sequence[NetworkCard]],
    cuts: Iterable[frozenset[str]],
    egress: Mapping[EgressKey, Impairment],
    ingress: Mapping[IngressKey, Impairment],
) -> dict[str, tuple[CardFaults, ...]]:
    """The faults of every card of every machine.

    `cards`: machine -> its vlan cards, eth1 first; `cuts`: pairs of
    machines that must not hear each other.
    """
    cut = set(cuts)
    result: dict[str, tuple[CardFaults, ...]] = {}
    for machine in sorted(cards):
        faults = []
        for card in cards[machine]:
            vlan = card.vlan
            peers = [
                (peer, peer_card.mac)
                for peer in sorted(cards)
                if peer != machine
                for peer_card in cards[peer]
                if peer_card.vlan == vlan
            ]
            drop = tuple(peer_mac for peer, peer_mac in peers if frozenset((machine, peer)) in cut)
            default = _lookup(egress, (machine, None, vlan), (machine, None, None))
            to = []
            for peer, peer_mac in peers:
                pair = _lookup(egress, (machine, peer, vlan), (machine, peer, None))
                if pair is not None:
                    to.append((peer_mac, pair if default is None else default.then(pair)))
            if len(to) > MAX_PEERS_PER_CARD:
                raise ArgumentError(
                    f"{machine} {card.name}: at most {MAX_PEERS_PER_CARD} peers can have links of their own "
                    "on one vlan; use network.link(machine) for all of them"
                )
            inbound = _lookup(ingress, (machine, vlan), (machine, None))
            faults.append(CardFaults(card.name, drop, default, tuple(to), inbound))
        result[machine] = tuple(faults)
    return result


_K = TypeVar("_K")
_V = TypeVar("_V")


def _lookup(table: Mapping[_K, _V], *keys: _K) -> _V | None:
    for key in keys:
        if key in table:
            return table[key]
    return None


def machine_script(cards: Sequence[CardFaults], *, reset: bool = True) -> str:
    """A bash script that gives a machine's cards `cards`' faults (with `reset`: none but those).

    tc runs once or twice whatever the number of rules (`tc -batch`): under
    emulation every program started in the guest costs tens of milliseconds.
    """
    lines: list[str] = []
    if reset:
        removals = "".join(f"qdisc del dev {card.name} root\nqdisc del dev {card.name} clsact\n" for card in cards)
        lines.append(f"tc -force -batch - >/dev/null 2>&1 <<'VMRIG' || true\n{removals}VMRIG")
        for card in cards:
            lines.append(f"if [[ -e /sys/class/net/{card.ifb} ]]; then ip link del {card.ifb}; fi")
    batch: list[str] = []
    receiving = [card for card in cards if card.ingress is not None]
    if receiving:
        lines.append("modprobe ifb numifbs=0")
    for card in receiving:
        lines.append(f"ip link add {card.ifb} type ifb && ip link set {card.ifb} up")
    for card in cards:
        batch += _card_rules(card)
    if batch:
        lines.append("tc -batch - 2>&1 <<'VMRIG'\n" + "".join(f"{rule}\n" for rule in batch) + "VMRIG")
    return "\n".join(lines) + "\n"


def _card_rules(card: CardFaults) -> list[str]:
    dev = card.name
    rules = []
    if card.egress_to:
        bands = max(2, 1 + len(card.egress_to))
        rules.append(f"qdisc add dev {dev} root handle 1: prio bands {bands} priomap" + " 0" * 16)
        if card.egress is not None:
            rules.append(f"qdisc add dev {dev} parent 1:1 handle 10: netem {card.egress.netem()}")
        for band, (mac, setting) in enumerate(card.egress_to, start=2):
            rules.append(f"qdisc add dev {dev} parent 1:{band:x} handle {0x10 + band:x}: netem {setting.netem()}")
            rules.append(f"filter add dev {dev} parent 1: protocol all prio 1 flower dst_mac {mac} classid 1:{band:x}")
    elif card.egress is not None:
        rules.append(f"qdisc add dev {dev} root handle 1: netem {card.egress.netem()}")
    if card.drop_from or card.ingress is not None:
        rules.append(f"qdisc add dev {dev} clsact")
        for mac in card.drop_from:
            rules.append(f"filter add dev {dev} ingress protocol all prio 1 flower src_mac {mac} action drop")
        if card.ingress is not None:
            redirect = f"action mirred egress redirect dev {card.ifb}"
            rules.append(f"filter add dev {dev} ingress protocol all prio 2 matchall {redirect}")
            rules.append(f"qdisc add dev {card.ifb} root handle 1: netem {card.ingress.netem()}")
    return rules


# ---------------------------------------------------------------------------
# The script's `network`


class Partition:
    """Machines cut off from each other by `network.partition()`; `heal()` undoes it."""

    def __init__(self, network: Network, groups: tuple[tuple[str, ...], ...]) -> None:
        self.network = network
        self.groups = groups

    @property
    def pairs(self) -> frozenset[frozenset[str]]:
        """Every pair of machines from different groups."""
        return frozenset(
            frozenset((a, b))
            for i, group in enumerate(self.groups)
            for other in self.groups[i + 1 :]
            for a in group
            for b in other
        )

    def heal(self) -> None:
        """Undoes this partition (others stay)."""
        self.network._remove_partition(self)

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    def __str__(self) -> str:
        return " | ".join(", ".join(group) for group in self.groups)

    def __repr__(self) -> str:
        return f"<Partition {self}>"


class Link:
    """A machine's cable, or what goes between two machines: `network.link(a)`, `network.link(a, b)`."""

    def __init__(self, network: Network, key: LinkKey) -> None:
        self.network = network
        self.key = key

    def set(
        self,
        *,
        delay: str | None = None,
        jitter: str | None = None,
        loss: float | str | None = None,
        rate: str | None = None,
    ) -> Link:
        """Replaces the link's faults: `delay`/`jitter` ('100ms', '1s', '500us'), `loss` (0.05 or '5%'),
        `rate` ('1mbit', '512kbit'). Each applies to every direction the link covers.

        Returns the link, so that `with network.link(a, b).set(...):` clears it at the end of the block.
        """
        setting = impairment(delay=delay, jitter=jitter, loss=loss, rate=rate)
        self.network._set_link(self, setting)
        return self

    def clear(self) -> None:
        """Removes the link's faults."""
        self.network._set_link(self, None)

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def __str__(self) -> str:
        machine, peer, vlan, one_way = self.key
        text = machine if peer is None else f"{machine} {'->' if one_way else '<->'} {peer}"
        if peer is None and one_way:
            text += " (sending only)"
        return text + (f" on vlan {vlan}" if vlan is not None else "")

    def __repr__(self) -> str:
        return f"<Link {self}>"


class Network:
    """Fault injection on the test network; a test script's `network` (see the module's docstring)."""

    def __init__(self, machines: Callable[[], list[Machine]], logger: Logger) -> None:
        self._machines = machines
        self.logger = logger
        self._partitions: list[Partition] = []
        self._links: dict[LinkKey, Impairment] = {}
        # machine -> (its boot count, the cards' faults in that boot's kernel)
        self._applied: dict[str, tuple[int, tuple[CardFaults, ...]]] = {}

    # -- partitions ------------------------------------------------------------

    def partition(self, *groups: Group) -> Partition:
        """Cuts the network between groups of machines, in both directions and on every vlan.

        `network.partition([node1], [node2, node3])`, or `network.partition(node1, [node2, node3])`.
        Machines within a group, and machines in no group, keep hearing each other. Returns the
        partition: `.heal()` undoes it, and so does the end of a `with` block.
        """
        if len(groups) < 2:
            raise ArgumentError("partition() needs at least two groups, e.g. partition([node1], [node2, node3])")
        resolved: list[tuple[str, ...]] = []
        seen: dict[str, int] = {}
        for number, group in enumerate(groups, start=1):
            members = [group] if isinstance(group, Machine | str) else list(group)
            if not members:
                raise ArgumentError(f"partition(): group {number} is empty")
            names = []
            for member in members:
                name = self._resolve(member, "partition()").name
                if name in seen:
                    where = "twice in one group" if seen[name] == number else "in two groups"
                    raise ArgumentError(f"partition(): {name} is {where}")
                seen[name] = number
                names.append(name)
            resolved.append(tuple(names))
        result = Partition(self, tuple(resolved))
        self._partitions.append(result)
        try:
            self._apply(f"partition {result}")
        except BaseException:
            self._partitions.remove(result)
            raise
        return result

    def heal(self) -> None:
        """Undoes every partition."""
        if self._partitions:
            self._partitions.clear()
            self._apply("heal every partition")

    def _remove_partition(self, partition: Partition) -> None:
        if partition in self._partitions:
            self._partitions.remove(partition)
            self._apply(f"heal partition {partition}")

    # -- links -----------------------------------------------------------------

    def link(
        self, machine: MachineRef, peer: MachineRef | None = None, *, vlan: int | None = None, one_way: bool = False
    ) -> Link:
        """`link(a)`: a's cable, all it sends and receives; `link(a, b)`: what goes between a and b.

        `vlan=N`: only on that vlan; `one_way=True`: only what `machine` sends.
        Nothing changes until the link's `set()`.
        """
        first = self._resolve(machine, "link()")
        second = self._resolve(peer, "link()") if peer is not None else None
        if isinstance(vlan, bool) or not (vlan is None or isinstance(vlan, int)):
            raise TypeError(f"link(): vlan is a vlan number, got {vlan!r}")
        if not isinstance(one_way, bool):
            raise TypeError(f"link(): one_way is True or False, got {one_way!r}")
        vlans = _vlans(first)
        if not vlans:
            raise ArgumentError(f"link(): {first.name} is on no vlan")
        if second is not None:
            if second is first:
                raise ArgumentError(f"link(): a link joins two different machines, got {first.name} twice")
            shared = [nr for nr in vlans if nr in _vlans(second)]
            if not shared:
                raise ArgumentError(
                    f"link(): {first.name} (vlans {vlans}) and {second.name} (vlans {_vlans(second)}) share no vlan"
                )
            vlans = shared
        if vlan is not None and vlan not in vlans:
            if second is None:
                raise ArgumentError(f"link(): {first.name} is not on vlan {vlan} (its vlans: {vlans})")
            raise ArgumentError(f"link(): {first.name} and {second.name} are not both on vlan {vlan} (shared: {vlans})")
        return Link(self, (first.name, second.name if second else None, vlan, one_way))

    def _set_link(self, link: Link, setting: Impairment | None) -> None:
        previous = self._links.pop(link.key, None)
        if setting is not None:
            self._links[link.key] = setting  # last set, last in order: it wins where links overlap
        elif previous is None:
            return
        try:
            self._apply(f"{link}: {setting}" if setting is not None else f"{link}: cleared")
        except BaseException:
            self._links.pop(link.key, None)
            if previous is not None:
                self._links[link.key] = previous
            raise

    # -- everything --------------------------------------------------------------

    def clear(self) -> None:
        """Undoes every partition and every link setting."""
        if self._partitions or self._links:
            self._partitions.clear()
            self._links.clear()
            self._apply("clear every fault")

    def faults(self) -> list[str]:
        """The faults in place, one line each."""
        lines = [f"partition {partition}" for partition in self._partitions]
        lines += [f"link {Link(self, key)}: {setting}" for key, setting in self._links.items()]
        return lines

    def __repr__(self) -> str:
        faults = self.faults()
        return "<Network: " + ("; ".join(faults) if faults else "no faults") + ">"

    # -- applying ------------------------------------------------------------------

    def _resolve(self, ref: object, what: str) -> Machine:
        machines = self._machines()
        if isinstance(ref, Machine):
            if ref not in machines:
                raise ArgumentError(f"{what}: {ref.name} is not a machine of this test")
            return ref
        if isinstance(ref, str):
            for machine in machines:
                if machine.name == ref:
                    return machine
            known = ", ".join(m.name for m in machines) or "none"
            raise ArgumentError(f"{what}: there is no machine {ref!r} (machines: {known})")
        raise TypeError(f"{what}: expected a machine (or its name), got {type(ref).__name__} {ref!r}")

    def machine_booted(self, machine: MachineBase) -> None:
        """A boot hook: puts back the faults a machine had before it rebooted."""
        boot, applied = self._applied.get(machine.name, (0, ()))
        if applied and boot != machine.boot_count:
            self._apply(f"restoring the faults of {machine.name} after its reboot")

    def _apply(self, what: str) -> None:
        machines = {machine.name: machine for machine in self._machines()}
        vlan_cards = {name: machine.config.vlan_cards for name, machine in machines.items()}
        cuts = set().union(*(partition.pairs for partition in self._partitions))
        egress, ingress = directions(self._links)
        wanted_cards = plan(vlan_cards, cuts, egress, ingress)
        changes: list[tuple[Machine, str, tuple[CardFaults, ...]]] = []
        for name, cards in wanted_cards.items():
            machine = machines[name]
            wanted = cards if any(card.active for card in cards) else ()
            boot, applied = self._applied.get(name, (0, ()))
            if not machine.booted or machine.boot_count != boot:
                applied = ()  # a kernel that booted since has no rules
            if wanted != applied:
                changes.append((machine, machine_script(cards, reset=bool(applied)), wanted))
        if not changes:
            return
        with self.logger.nested(f"network: {what}"):
            for machine, _script, _wanted in changes:
                machine.start()  # from this thread: QEMU's parent-death signal is tied to it
            # One guest at a time would add up their tc start-up times.
            with ThreadPoolExecutor(max_workers=len(changes)) as pool:
                results = list(pool.map(lambda change: change[0].execute(change[1]), changes))
            failed = []
            for (machine, _script, wanted), (status, output) in zip(changes, results, strict=True):
                if status == 0:
                    self._applied[machine.name] = (machine.boot_count, wanted)
                else:
                    self._applied.pop(machine.name, None)
                    failed.append(f"{machine.name} (exit code {status}): {output.strip()}")
            if failed:
                raise MachineError("changing the network's faults failed on " + "; ".join(failed))


def _vlans(machine: Machine) -> list[int]:
    return [card.vlan for card in machine.config.vlan_cards]
