"""Fault injection without VMs: settings, the per-card plan, the tc script, and API misuse."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig
from vmrig.net.faults import (
    CardFaults,
    Impairment,
    Network,
    directions,
    impairment,
    machine_script,
    parse_duration,
    parse_loss,
    parse_rate,
    plan,
)
from vmrig.netcard import NetworkCard, switch_socket

A1, A2, B1, C2 = "52:54:00:12:01:01", "52:54:00:12:02:01", "52:54:00:12:01:02", "52:54:00:12:02:03"
SWITCHES = Path("/nonexistent")


def vlan_cards(*vlans_and_macs: tuple[int, str]) -> list[NetworkCard]:
    return [
        NetworkCard(index, vlan, mac, switch_socket(SWITCHES, vlan))
        for index, (vlan, mac) in enumerate(vlans_and_macs, start=1)
    ]


CARDS = {"a": vlan_cards((1, A1), (2, A2)), "b": vlan_cards((1, B1)), "c": vlan_cards((2, C2))}


def test_settings_parse_with_units_only() -> None:
    assert parse_duration("100ms", "delay") == 100_000
    assert parse_duration("1.5s", "delay") == 1_500_000
    assert parse_duration(" 250us ", "delay") == 250
    assert parse_loss(0.05) == 0.05
    assert parse_loss("5%") == pytest.approx(0.05)
    assert parse_loss(1) == 1.0
    assert parse_rate("1mbit") == 1_000_000
    assert parse_rate("512Kbit") == 512_000
    with pytest.raises(TypeError, match=r"delay needs a unit.*did you mean '100ms'"):
        parse_duration(100, "delay")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("100 minutes", "delay")
    with pytest.raises(ValueError, match="more than an hour"):
        parse_duration("4000s", "delay")
    with pytest.raises(ValueError, match="for 5 % write 0.05 or '5%'"):
        parse_loss(5)
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_loss(-0.1)
    with pytest.raises(TypeError, match="fraction"):
        parse_loss(True)
    with pytest.raises(ValueError, match="bytes per second"):
        parse_rate("1mbps")
    with pytest.raises(TypeError, match="rate needs a unit"):
        parse_rate(1000)
    with pytest.raises(ValueError, match="network.partition"):
        parse_rate("0kbit")


def test_impairments_combine_and_render() -> None:
    setting = impairment(delay="100ms", jitter="10ms", loss="5%", rate="1mbit")
    assert setting.netem() == "delay 100000us 10000us loss 5% rate 1000000bit"
    assert str(setting) == "delay 100ms, jitter 10ms, loss 5%, rate 1mbit"
    both = setting.then(impairment(delay="50ms", loss=0.1, rate="512kbit"))
    assert (both.delay_us, both.jitter_us, both.rate_bit) == (150_000, 10_000, 512_000)
    assert both.loss == pytest.approx(1 - 0.95 * 0.9)
    assert impairment(rate="2mbit").netem() == "delay 0us rate 2000000bit"
    with pytest.raises(ValueError, match="at least one of"):
        impairment()
    with pytest.raises(ValueError, match="give a delay too"):
        impairment(jitter="5ms")
    with pytest.raises(ValueError, match="larger than the delay"):
        impairment(delay="5ms", jitter="10ms")


def test_links_become_directions() -> None:
    slow, lossy = Impairment(delay_us=1000), Impairment(loss=0.5)
    egress, ingress = directions(
        {("a", None, None, False): slow, ("a", "b", 1, False): lossy, ("c", "a", None, True): slow}
    )
    assert egress == {("a", None, None): slow, ("a", "b", 1): lossy, ("b", "a", 1): lossy, ("c", "a", None): slow}
    assert ingress == {("a", None): slow}  # one_way links never touch what a machine receives


def test_plan_per_card() -> None:
    slow, lossy = Impairment(delay_us=1000), Impairment(loss=0.5)
    cards = plan(
        CARDS,
        cuts=[frozenset(("a", "c"))],
        egress={("a", None, None): slow, ("a", "b", None): lossy},
        ingress={("a", 2): lossy},
    )
    a1, a2 = cards["a"]
    assert a1 == CardFaults("eth1", egress=slow, egress_to=((B1, slow.then(lossy)),))
    assert a2 == CardFaults("eth2", drop_from=(C2,), egress=slow, ingress=lossy)
    assert cards["b"] == (CardFaults("eth1"),)
    assert not cards["b"][0].active
    assert cards["c"] == (CardFaults("eth1", drop_from=(A2,)),)
    # a setting for one vlan beats one for every vlan
    only_vlan_2 = plan(CARDS, [], {("a", None, None): slow, ("a", None, 2): lossy}, {})
    assert [card.egress for card in only_vlan_2["a"]] == [slow, lossy]


def test_machine_script_uses_one_tc_batch() -> None:
    slow, lossy = Impairment(delay_us=1000), Impairment(loss=0.5)
    cards = [
        CardFaults("eth1", drop_from=(B1,), egress=slow, egress_to=((B1, lossy),), ingress=slow),
        CardFaults("eth2", egress=lossy),
    ]
    script = machine_script(cards)
    assert script.count("tc ") == 2  # one batch removes, one adds
    assert "qdisc del dev eth1 root\nqdisc del dev eth1 clsact\nqdisc del dev eth2 root" in script
    assert "modprobe ifb numifbs=0\nip link add ifb-eth1 type ifb && ip link set ifb-eth1 up" in script
    for rule in (
        "qdisc add dev eth1 root handle 1: prio bands 2 priomap" + " 0" * 16,
        "qdisc add dev eth1 parent 1:1 handle 10: netem delay 1000us",
        "qdisc add dev eth1 parent 1:2 handle 12: netem delay 0us loss 50%",
        f"filter add dev eth1 parent 1: protocol all prio 1 flower dst_mac {B1} classid 1:2",
        "qdisc add dev eth1 clsact",
        f"filter add dev eth1 ingress protocol all prio 1 flower src_mac {B1} action drop",
        "filter add dev eth1 ingress protocol all prio 2 matchall action mirred egress redirect dev ifb-eth1",
        "qdisc add dev ifb-eth1 root handle 1: netem delay 1000us",
        "qdisc add dev eth2 root handle 1: netem delay 0us loss 50%",
    ):
        assert f"\n{rule}\n" in script, rule
    # nothing to remove on a fresh kernel, nothing to add when healing
    assert " del " not in machine_script(cards, reset=False)
    assert "add" not in machine_script([CardFaults("eth1")])


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[list[Machine]]:
    logger = Logger(io.StringIO(), color=False)

    def machine(name: str, vlans: list[int]) -> Machine:
        config = MachineConfig(
            name=name,
            disk=tmp_path / "disk",
            kernel=tmp_path / "kernel",
            initrd=tmp_path / "initrd",
            vlan_cards=vlan_cards(*[(vlan, f"52:54:00:12:{vlan:02x}:{len(name):02x}") for vlan in vlans]),
        )
        return Machine(config, state_dir=tmp_path / f"vm-state-{name}", out_dir=tmp_path, logger=logger)

    yield [machine("a", [1, 2]), machine("bb", [1]), machine("ccc", [3]), machine("none", [])]


def test_misuse_is_refused_before_any_guest_is_touched(machines: list[Machine]) -> None:
    a, b, c, none = machines
    network = Network(lambda: machines, Logger(io.StringIO(), color=False))
    with pytest.raises(ValueError, match=r"a \(vlans \[1, 2\]\) and ccc \(vlans \[3\]\) share no vlan"):
        network.link(a, c)
    with pytest.raises(ValueError, match="a is not on vlan 3"):
        network.link(a, vlan=3)
    with pytest.raises(ValueError, match="a and bb are not both on vlan 2"):
        network.link(a, "bb", vlan=2)
    with pytest.raises(ValueError, match="two different machines"):
        network.link(a, a)
    with pytest.raises(ValueError, match="none is on no vlan"):
        network.link(none)
    with pytest.raises(ValueError, match=r"no machine 'd' \(machines: a, bb, ccc, none\)"):
        network.link("d")
    with pytest.raises(TypeError, match="expected a machine"):
        network.link(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="vlan is a vlan number"):
        network.link(a, vlan="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two groups"):
        network.partition([a, b])
    with pytest.raises(ValueError, match="group 2 is empty"):
        network.partition([a], [])
    with pytest.raises(ValueError, match="a is twice in one group"):
        network.partition([a, a], [b])
    with pytest.raises(ValueError, match="bb is in two groups"):
        network.partition([a, b], [b])
    link = network.link(a, b, one_way=True)
    assert str(link) == "a -> bb"
    assert str(network.link(a, vlan=2)) == "a on vlan 2"
    with pytest.raises(TypeError, match="delay needs a unit"):
        link.set(delay=0.1)  # type: ignore[arg-type]
    # nothing was applied, so no machine was started
    assert network.faults() == [] and not any(m.booted for m in machines)
    link.clear()  # clearing what was never set does nothing
    network.heal()
    network.clear()
    assert not any(m.booted for m in machines)
