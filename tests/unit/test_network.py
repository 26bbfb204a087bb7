"""The network plan, the guest's network and mount scripts, and the Node fields behind them."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import REPO

from vmrig.driver import Driver
from vmrig.errors import TestFileError
from vmrig.image.configlayer import Mount, config_layer, hosts_file, mount_script, network_script
from vmrig.log import Logger
from vmrig.net.plan import NetworkPlan, mac_address
from vmrig.spec import Node, SharedDirectory, SpecError, check_node_name
from vmrig.testfile import load_test_file


def test_numbers_macs_and_automatic_addresses() -> None:
    plan = NetworkPlan({"web": Node(vlans=[1, 2]), "db": Node(vlans=[2]), "app": Node()})
    assert plan.numbers == {"app": 1, "db": 2, "web": 3}  # sorted names
    web = plan.interfaces["web"]
    assert [(card.name, card.vlan, card.mac) for card in web] == [
        ("eth1", 1, "52:54:00:12:01:03"),
        ("eth2", 2, "52:54:00:12:02:03"),
    ]
    assert web[1].addresses == ("192.168.2.3/24", "2001:db8:2::3/64")
    assert mac_address(200, 17) == "52:54:00:12:c8:11"
    assert plan.vlan_numbers() == [1, 2]
    # each node is named by its first addresses, whatever vlan they are on
    assert plan.hosts == (
        ("app", "192.168.1.1", "2001:db8:1::1"),
        ("db", "192.168.2.2", "2001:db8:2::2"),
        ("web", "192.168.1.3", "2001:db8:1::3"),
    )


def test_two_cards_on_one_vlan_get_their_own_macs_and_addresses() -> None:
    """As NixOS's virtualisation.interfaces allows, but without its shared MAC."""
    node = Node(vlans=[1, 2, 1], addresses={"eth3": ["192.168.1.100/24"]})
    cards = NetworkPlan({"router": node}).interfaces["router"]
    assert [(card.name, card.vlan, card.mac, card.addresses) for card in cards] == [
        ("eth1", 1, "52:54:00:12:01:01", ("192.168.1.1/24", "2001:db8:1::1/64")),
        ("eth2", 2, "52:54:00:12:02:01", ("192.168.2.1/24", "2001:db8:2::1/64")),
        ("eth3", 1, "52:54:00:13:01:01", ("192.168.1.100/24",)),
    ]
    plain = NetworkPlan({"router": Node(vlans=[1, 1])}).interfaces["router"]
    assert plain[1].mac == "52:54:00:13:01:01" and plain[1].addresses == ()
    assert mac_address(1, 1) == "52:54:00:12:01:01"


def test_one_address_on_two_cards_of_a_node_is_refused() -> None:
    with pytest.raises(SpecError, match="node 'router' has the address 192.168.1.1 on vlan 1 twice"):
        NetworkPlan({"router": Node(vlans=[1, 1], addresses={"eth2": ["192.168.1.1/24"]})})


def test_fixed_and_missing_addresses() -> None:
    plan = NetworkPlan(
        {
            "a": Node(vlans=[1, 5], addresses={5: ["10.5.0.1/16", "fd00:5::1/64", "10.5.0.2/16"]}),
            "b": Node(vlans=[5], addresses={5: []}),
            "c": Node(vlans=[], addresses={}),
        }
    )
    first, second = plan.interfaces["a"]
    assert first.addresses == ("192.168.1.1/24", "2001:db8:1::1/64")
    assert (second.ipv4, second.ipv6, second.more) == ("10.5.0.1/16", "fd00:5::1/64", ("10.5.0.2/16",))
    assert plan.interfaces["b"][0].addresses == ()
    assert plan.interfaces["c"] == ()
    assert [host for host, _, _ in plan.hosts] == ["a"]  # b and c have no address to be named by
    script = network_script(plan.node_network("a", 1, Node()))
    assert "ip addr add 10.5.0.2/16 dev eth2" in script
    assert "echo 0 >/proc/sys/net/ipv6/conf/eth2/accept_dad" in script  # busybox ip has no `nodad`
    assert "ip -6 addr add fd00:5::1/64 dev eth2 2>/dev/null" in script
    hosts = hosts_file("b", plan.node_network("b", 2, Node()))
    assert "192.168.1.1 a\n" in hosts and "127.0.1.1 b\n" in hosts


def test_duplicate_addresses_on_a_vlan_are_refused() -> None:
    with pytest.raises(SpecError, match="nodes 'a' and 'b' both have the address 192.168.1.1 on vlan 1"):
        NetworkPlan({"a": Node(), "b": Node(addresses={1: ["192.168.1.1/24"]})})
    # the same address on two separate vlans is allowed
    NetworkPlan({"a": Node(vlans=[1]), "b": Node(vlans=[2], addresses={2: ["192.168.1.1/24"]})})


def test_reachable_nodes_share_a_vlan_directly_or_through_others() -> None:
    plan = NetworkPlan(
        {
            "client": Node(vlans=[1]),
            "router": Node(vlans=[1, 2]),
            "server": Node(vlans=[2]),
            "alone": Node(vlans=[3]),
            "offline": Node(vlans=[]),
        }
    )
    assert plan.reachable("client") == ["router", "server"]
    assert plan.reachable("server") == ["client", "router"]
    assert plan.reachable("alone") == []
    assert plan.reachable("offline") == []
    assert plan.reachable("extra", Node(vlans=[2])) == ["client", "router", "server"]  # create_machine's


def test_too_many_nodes() -> None:
    with pytest.raises(SpecError, match="at most 254 nodes"):
        NetworkPlan({f"n{i}": Node(vlans=[]) for i in range(255)})


def test_cards_are_named_by_their_mac_before_they_come_up(tmp_path: Path) -> None:
    plan = NetworkPlan({"a": Node(vlans=[1, 2])})
    script = network_script(plan.node_network("a", 1, Node()))
    naming, _, rest = script.partition("umount /sys\n")
    assert "52:54:00:12:01:01) want=eth1 ;;" in naming and "52:54:00:12:02:01) want=eth2 ;;" in naming
    assert "ip link set eth1 up" in rest  # names first, links up after
    # the script is valid for a POSIX shell (busybox ash runs it in the initramfs)
    (tmp_path / "network.sh").write_text(script)
    subprocess.run(["sh", "-n", str(tmp_path / "network.sh")], check=True)


def test_mount_script_mounts_parents_first_and_read_only() -> None:
    script = mount_script([Mount("share0", "/srv/a/b"), Mount("share1", "/srv", read_only=True)])
    lines = script.splitlines()
    assert lines[0] == "mkdir -p /newroot/srv"
    assert lines[1].startswith("mount -t virtiofs -o ro share1 /newroot/srv || echo")
    assert lines[3].startswith("mount -t virtiofs -o rw share0 /newroot/srv/a/b")
    assert "'/newroot/with space'" in mount_script([Mount("share2", "/with space")])


def test_config_layer_carries_the_mounts() -> None:
    plan = NetworkPlan({"a": Node()})
    layer = config_layer(
        "a", Node(), plan.node_network("a", 1, Node()), fixup=b"fixup", mounts=[Mount("xchg", "/tmp/shared")]
    )
    assert b"mount -t virtiofs -o rw xchg /newroot/tmp/shared" in layer


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Node(addresses={2: []}), r"Node.addresses: vlan 2 is not one of the node's vlans \[1\]"),
        (lambda: Node(addresses={1: ["10.0.0.5"]}), r"'10.0.0.5' needs a prefix length, e.g. '10.0.0.5/24'"),
        (lambda: Node(addresses={1: ["fd00::5"]}), r"needs a prefix length, e.g. 'fd00::5/64'"),
        (lambda: Node(addresses={1: ["10.0.0.300/24"]}), "is not an IPv4 or IPv6 address with a prefix length"),
        (lambda: Node(addresses={1: ["10.0.0.255/24"]}), "network or broadcast address of 10.0.0.0/24"),
        (lambda: Node(addresses={1: ["127.0.0.2/8"]}), "multicast, loopback or link-local"),
        (lambda: Node(addresses={1: ["10.0.0.5/24", "10.0.0.5/16"]}), "10.0.0.5 is listed twice"),
        (lambda: Node(addresses={1: "10.0.0.5/24"}), r"Node.addresses\[1\]: expected a list of str"),
        (lambda: Node(shared_directories={"/etc": "/srv"}), "would hide the guest's own files"),
        (lambda: Node(shared_directories={"/tmp/shared": "/srv"}), "the run's exchange directory"),
        (lambda: Node(shared_directories={"/data": ""}), "must not be empty"),
        (lambda: Node(shared_directories={"/data": 1}), "expected str or SharedDirectory"),
        (lambda: SharedDirectory(source="/srv", read_only="yes"), "SharedDirectory.read_only: expected bool"),
        (lambda: SharedDirectory(), "SharedDirectory.source is required"),
    ],
)
def test_bad_network_and_share_fields(make: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make()  # type: ignore[operator]


def test_shares_normalise_to_shared_directory() -> None:
    node = Node(shared_directories={"/a": "/srv/a", "/b": SharedDirectory(source="b", read_only=True)})
    assert node.shares() == {
        "/a": SharedDirectory(source="/srv/a"),
        "/b": SharedDirectory(source="b", read_only=True),
    }


def test_network_is_a_script_global() -> None:
    with pytest.raises(SpecError, match="'network' is already a test-script global"):
        check_node_name("network")


@pytest.mark.parametrize("example", ["client-server.py", "partition.py"])
def test_network_examples_pass_the_pre_boot_check(example: str, tmp_path: Path) -> None:
    spec = load_test_file(REPO / "examples" / example)
    driver = Driver(spec, logger=Logger(io.StringIO(), color=False), out_dir=tmp_path, tmp_dir=tmp_path)
    driver.check_script()  # `network` and every machine name are known globals
    assert "network" in driver.script_names()


def test_a_clash_of_addresses_is_a_test_file_error_before_anything_is_built(tmp_path: Path) -> None:
    test_file = tmp_path / "clash.py"
    test_file.write_text(
        "from vmrig import Node\n"
        'nodes = {"a": Node(), "b": Node(addresses={1: ["192.168.1.1/24"]})}\n'
        'test_script = "start_all()"\n'
    )
    spec = load_test_file(test_file)
    with pytest.raises(TestFileError, match=r"clash.py: nodes 'a' and 'b' both have the address 192.168.1.1"):
        Driver(spec, logger=Logger(io.StringIO(), color=False), out_dir=tmp_path, tmp_dir=tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private network namespace")
def test_cards_in_the_wrong_order_get_the_names_of_their_macs() -> None:
    plan = NetworkPlan({"a": Node(vlans=[1, 2])})
    naming = network_script(plan.node_network("a", 1, Node())).partition("umount /sys\n")[0] + "umount /sys\n"
    # In a namespace of its own, the vlan 2 card comes first, as eth1.
    setup = (
        "ip link add eth1 address 52:54:00:12:02:01 type veth peer name p1 && "
        "ip link add eth2 address 52:54:00:12:01:01 type veth peer name p2"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--", "sh", "-c", f"{setup} && {{\n{naming}}} && ip -o link"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {
        line.split(": ")[1].split("@")[0]: line.split("link/ether ")[1].split()[0]
        for line in result.stdout.splitlines()
        if "link/ether" in line
    }
    assert names["eth1"] == "52:54:00:12:01:01" and names["eth2"] == "52:54:00:12:02:01", result.stdout
