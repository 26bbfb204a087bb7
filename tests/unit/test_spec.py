"""The test-file vocabulary: validation messages, unit rendering, merging."""

# These tests pass wrong types on purpose.
# mypy: disable-error-code="arg-type, call-arg, dict-item, list-item, misc"

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from vmrig.errors import TestFileError
from vmrig.spec import (
    X11,
    EmptyDisk,
    File,
    Firewall,
    FirewallPorts,
    Interactive,
    Node,
    Options,
    Service,
    SpecError,
    User,
    check_node_name,
    default_cores,
    merge_interactive,
    python_name,
)


def spec_error(message: str) -> Any:
    """pytest.raises for a SpecError whose whole message is `message`."""
    return pytest.raises(SpecError, match="^" + re.escape(message) + "$")


# -- construction --------------------------------------------------------------


def test_spec_error_is_a_test_file_error_without_location() -> None:
    with pytest.raises(TestFileError) as caught:
        Node(packages="curl")
    assert isinstance(caught.value, SpecError)
    assert caught.value.path is None
    assert caught.value.line is None


def test_string_instead_of_list() -> None:
    with spec_error("Node.packages: expected a list of str, got str 'curl'"):
        Node(packages="curl")


def test_unknown_field_suggests_the_close_one() -> None:
    with spec_error("Node has no field 'pakages'; did you mean 'packages'?"):
        Node(pakages=["curl"])


def test_unknown_field_without_close_match() -> None:
    with spec_error("Service has no field 'zzz'"):
        Service(exec_start="/bin/true", zzz=1)


def test_positional_arguments_are_refused() -> None:
    with spec_error("File takes keyword arguments only, e.g. File(content=...)"):
        File("hello")


def test_required_field() -> None:
    with spec_error("Service.exec_start is required"):
        Service()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Node(packages=["curl", 3]), "Node.packages[1]: expected str, got int 3"),
        (lambda: Node(cores="2"), "Node.cores: expected int or None, got str '2'"),
        (lambda: Node(cores=True), "Node.cores: expected int or None, got bool True"),
        (lambda: Node(files={"/x": 3}), "Node.files['/x']: expected str, bytes or File, got int 3"),
        (lambda: Node(files={3: "x"}), "Node.files key 3: expected str, got int 3"),
        (
            lambda: Node(files=["/x"]),
            "Node.files: expected a dict of str to str, bytes or File, got list ['/x']",
        ),
        (lambda: Node(services={"a": 1}), "Node.services['a']: expected Service or str, got int 1"),
        (lambda: Node(users={"bob": {}}), "Node.users['bob']: expected User, got dict {}"),
        (
            lambda: Node(forward_ports=[(1, 2, 3)]),
            "Node.forward_ports[0]: expected a (int, int) pair, got tuple (1, 2, 3)",
        ),
        (lambda: Node(forward_ports=[("80", 80)]), "Node.forward_ports[0][0]: expected int, got str '80'"),
        (
            lambda: Service(exec_start=["/bin/true"]),
            "Service.exec_start: expected str, got list ['/bin/true']",
        ),
        (
            lambda: Service(exec_start="x", environment={"A": 1}),
            "Service.environment['A']: expected str, got int 1",
        ),
        (
            lambda: Service(exec_start="x", extra={"Service": "Nice=5"}),
            "Service.extra['Service']: expected a dict of str to str, got str 'Nice=5'",
        ),
        (lambda: Service(exec_start="x", enable=1), "Service.enable: expected bool, got int 1"),
        (lambda: File(content=None), "File.content: expected str or bytes, got NoneType None"),
        (lambda: File(content="x", mode="644"), "File.mode: expected int, got str '644'"),
        (lambda: User(uid="1000"), "User.uid: expected int or None, got str '1000'"),
        (lambda: User(groups="wheel"), "User.groups: expected a list of str, got str 'wheel'"),
        (
            lambda: Options(global_timeout="10"),
            "Options.global_timeout: expected float or None, got str '10'",
        ),
        (lambda: Options(ssh_backdoor="yes"), "Options.ssh_backdoor: expected bool, got str 'yes'"),
        (
            lambda: Node(default_gateway="192.168.1.1/24"),
            "Node.default_gateway: expected an IPv4 address such as '192.168.1.1', got '192.168.1.1/24'",
        ),
        (
            lambda: Node(default_gateway="2001:db8:1::1"),
            "Node.default_gateway: '2001:db8:1::1' is an IPv6 address; IPv4 goes here",
        ),
        (
            lambda: Node(default_gateway6="192.168.1.1"),
            "Node.default_gateway6: '192.168.1.1' is an IPv4 address; IPv6 goes here",
        ),
        (
            lambda: Interactive(options=[]),
            "Interactive.options: expected a dict of str to any value, got list []",
        ),
    ],
)
def test_wrong_types(build: Any, message: str) -> None:
    with spec_error(message):
        build()


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(SpecError) as caught:
        Node(packages="x" * 200)
    assert caught.value.message.endswith("...'") or caught.value.message.endswith("...")
    assert len(caught.value.message) < 120


def test_tuples_are_accepted_for_lists_and_lists_are_copied() -> None:
    shared = ["curl"]
    node = Node(packages=("curl", "jq"), forward_ports=[[8080, 80]])
    assert node.packages == ["curl", "jq"]
    assert node.forward_ports == [(8080, 80)]
    other = Node(packages=shared)
    shared.append("vim")
    assert other.packages == ["curl"]


def test_int_timeout_becomes_float() -> None:
    assert Options(global_timeout=10).global_timeout == 10.0
    assert Options(global_timeout=None).global_timeout is None


def test_defaults() -> None:
    node = Node()
    assert node.vlans == [1]
    assert node.memory_size == 1024 and node.cores is None and node.disk_size == 4096
    assert Node().vlans is not node.vlans
    assert Options().suite == "trixie"
    assert Options().global_timeout == 3600
    assert Service(exec_start="/bin/true").wanted_by == ["multi-user.target"]


# -- value rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Service(exec_start="x", type="simpel"),
            "Service.type: 'simpel' is not one of simple, exec, forking, oneshot, notify, dbus, idle; "
            "did you mean 'simple'?",
        ),
        (
            lambda: Service(exec_start="x", restart="sometimes"),
            "Service.restart: 'sometimes' is not one of no, on-success, on-failure, on-abnormal, "
            "on-watchdog, on-abort, always",
        ),
        (lambda: Service(exec_start=" "), "Service.exec_start: must not be empty"),
        (lambda: Service(exec_start="a\nb"), "Service.exec_start: must be a single line, got 'a\\nb'"),
        (
            lambda: Service(exec_start="x", after=["network target"]),
            "Service.after: invalid unit name 'network target' (allowed: letters, digits and ':_.@-')",
        ),
        (
            lambda: Service(exec_start="x", environment={"A-B": "1"}),
            "Service.environment: invalid variable name 'A-B'",
        ),
        (
            lambda: Service(exec_start="x", extra={"Service": {"Nice=": "5"}}),
            "Service.extra['Service']: invalid key 'Nice='",
        ),
        (lambda: File(content="", mode=0o10000), "File.mode: must be between 0o0 and 0o7777, got 0o10000"),
        (lambda: File(content="", mode=-1), "File.mode: must be between 0o0 and 0o7777, got -0o1"),
        (
            lambda: File(content="", owner="Bob"),
            "File.owner: invalid name 'Bob': use lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_'",
        ),
        (lambda: User(uid=0), "User.uid: must be between 1 and 65533, got 0"),
        (lambda: User(home="home/bob"), "User.home: path 'home/bob' must be absolute"),
        (lambda: User(shell="bash"), "User.shell: 'bash' must be an absolute path"),
        (
            lambda: Node(packages=["Curl"]),
            "Node.packages: invalid Debian package name 'Curl' "
            "(lower-case letters, digits and '+-.', optionally '=version' or '/suite')",
        ),
        (
            lambda: Node(packages=["curl vim"]),
            "Node.packages: invalid Debian package name 'curl vim' "
            "(lower-case letters, digits and '+-.', optionally '=version' or '/suite')",
        ),
        (lambda: Node(files={"etc/motd": "hi"}), "Node.files: path 'etc/motd' must be absolute"),
        (
            lambda: Node(files={"/etc/../motd": "hi"}),
            "Node.files: path '/etc/../motd' must name a file, written plainly (like '/motd')",
        ),
        (
            lambda: Node(files={"/": "hi"}),
            "Node.files: path '/' must name a file, written plainly (like '/')",
        ),
        (
            lambda: Node(services={"my service": "[Service]\n"}),
            "Node.services: invalid unit name 'my service' (allowed: letters, digits and ':_.@-')",
        ),
        (
            lambda: Node(services={"a": "/usr/bin/a --serve"}),
            "Node.services['a']: raw unit text has no [Section] header; to run a command, use Service(exec_start=...)",
        ),
        (
            lambda: Node(services={"a": "[Service]\n", "a.service": "[Service]\n"}),
            "Node.services: 'a' and 'a.service' are the same unit 'a.service'",
        ),
        (
            lambda: Node(services={"a.timer": Service(exec_start="x")}),
            "Node.services['a.timer']: Service() makes .service units; give raw unit text for 'a.timer'",
        ),
        (
            lambda: Node(users={"root": User()}),
            "Node.users: 'root' exists in every image already (with an empty password)",
        ),
        (lambda: Node(memory_size=255), "Node.memory_size: must be at least 256, got 255"),
        (lambda: Node(cores=0), "Node.cores: must be between 1 and 64, got 0"),
        (lambda: Node(cores=65), "Node.cores: must be between 1 and 64, got 65"),
        (lambda: Node(disk_size=1000), "Node.disk_size: must be at least 1024, got 1000"),
        (lambda: Node(vlans=[0]), "Node.vlans: must be between 1 and 254, got 0"),
        (lambda: Node(vlans=[255]), "Node.vlans: must be between 1 and 254, got 255"),
        (
            lambda: Node(vlans=[1, 1], addresses={"eth3": []}),
            "Node.addresses: the node has no interface 'eth3'; "
            "its vlan cards: eth1, eth2 (one per entry of Node.vlans)",
        ),
        (
            lambda: Node(forward_ports=[(0, 80)]),
            "Node.forward_ports host port: must be between 1 and 65535, got 0",
        ),
        (
            lambda: Node(forward_ports=[(8080, 80), (8080, 81)]),
            "Node.forward_ports: host port 8080 is forwarded twice",
        ),
        (lambda: Node(build_commands=[""]), "Node.build_commands[0]: must not be empty"),
        (
            lambda: Node(shared_directories={"data": "/tmp"}),
            "Node.shared_directories: path 'data' must be absolute",
        ),
        (
            lambda: Options(suite="trixi"),
            "Options.suite: 'trixi' is not one of bookworm, trixie, forky, sid, testing, stable, "
            "oldstable, unstable; did you mean 'trixie'?",
        ),
        (lambda: Options(global_timeout=0), "Options.global_timeout: must be positive or None, got 0.0"),
        (lambda: Options(mirror=""), "Options.mirror: must not be empty"),
        (lambda: Options(vsock_offset=1), "Options.vsock_offset: must be between 2 and 2147483648, got 1"),
        (
            lambda: Interactive(options={"ssh_backdor": True}),
            "Interactive.options: Options has no field 'ssh_backdor'; did you mean 'ssh_backdoor'?",
        ),
        (
            lambda: Interactive(nodes={"node1": {"pakages": ["gdb"]}}),
            "Interactive.nodes['node1']: Node has no field 'pakages'; did you mean 'packages'?",
        ),
        (lambda: Firewall(allowed_tcp_ports=[0]), "Firewall.allowed_tcp_ports: must be between 1 and 65535, got 0"),
        (
            lambda: FirewallPorts(allowed_udp_port_ranges=[(9000, 8000)]),
            "FirewallPorts.allowed_udp_port_ranges (the end of 9000-8000): must be between 9000 and 65535, got 8000",
        ),
        (
            lambda: Firewall(check_reverse_path="lax"),
            "Firewall.check_reverse_path: 'lax' is not one of strict, loose",
        ),
        (
            lambda: Firewall(trusted_interfaces=["eth 1"]),
            "Firewall.trusted_interfaces: invalid interface name 'eth 1' "
            "(up to 15 letters, digits or '_.:-', optionally ending in '*' or '+')",
        ),
        (
            lambda: Firewall(ping_limit="1/minute burst 5 packets"),
            "Firewall.ping_limit: '1/minute burst 5 packets' is not in the iptables backend's words, "
            "e.g. '--limit 1/minute --limit-burst 5'",
        ),
        (
            lambda: Firewall(backend="nftables", ping_limit="--limit 1/minute"),
            "Firewall.ping_limit: '--limit 1/minute' is not in the nftables backend's words, "
            "e.g. '1/minute burst 5 packets'",
        ),
        (
            lambda: Node(firewall=Firewall(), services={"firewall": Service(exec_start="/bin/true")}),
            "Node.services['firewall']: Node.firewall makes firewall.service (its iptables backend); "
            "put the rules in Firewall(...) or drop Node.firewall",
        ),
        (
            lambda: Firewall(backend="ipchains"),
            "Firewall.backend: 'ipchains' is not one of iptables, nftables",
        ),
        (
            lambda: Firewall(extra_input_rules="tcp dport 9 accept"),
            "Firewall.extra_input_rules: only for backend='nftables' (this firewall's is 'iptables')",
        ),
        (
            lambda: Firewall(allowed_tcp_port=[80]),
            "Firewall has no field 'allowed_tcp_port'; did you mean 'allowed_tcp_ports'?",
        ),
    ],
)
def test_invalid_values(build: Any, message: str) -> None:
    with spec_error(message):
        build()


@pytest.mark.parametrize(
    "package",
    [
        "curl",
        "g++",
        "libc6-dev",
        "python3.11",
        "curl=7.88.1-10+deb12u5",
        "nginx=1:1.2~rc1",
        "vim/bookworm-backports",
    ],
)
def test_valid_package_names(package: str) -> None:
    assert Node(packages=[package]).packages == [package]


def test_valid_node() -> None:
    node = Node(
        packages=["nginx"],
        files={"/etc/motd": "hi\n", "/bin/tool": File(content=b"\x7fELF", mode=0o755), "/srv/x": b"raw"},
        services={
            "web": Service(exec_start="/usr/sbin/nginx"),
            "backup.timer": "[Timer]\nOnCalendar=daily\n",
        },
        users={"alice": User(uid=1001, groups=["sudo"], password="")},
        memory_size=2048,
        cores=2,
        disk_size=8192,
        kernel_params=["quiet"],
        qemu_options=["-device", "virtio-rng-pci"],
        build_commands=["systemctl disable nginx"],
        vlans=[1, 2],
        forward_ports=[(8080, 80)],
        shared_directories={"/mnt/shared": "/tmp/shared"},
    )
    assert node.users["alice"].home_directory("alice") == "/home/alice"
    assert User(home="/srv/bob").home_directory("bob") == "/srv/bob"
    assert File(content="", owner="1000", group="1000").owner == "1000"


def test_files_under_a_home_belong_to_its_user_unless_they_say_otherwise() -> None:
    node = Node(
        users={"alice": User(), "bob": User(home="/srv/bob")},
        files={
            "/home/alice/.config/app.conf": "x",
            "/home/alice/root-owned": File(content="", owner="root"),
            "/home/alice/shared": File(content="", group="adm"),
            "/srv/bob/notes": "n",
            "/home/alicex/other": "o",
            "/etc/app.conf": File(content="", owner="alice"),
        },
    )
    assert node.file_owner("/home/alice/.config/app.conf") == ("alice", "")
    assert node.file_owner("/home/alice/root-owned") == ("root", "root")
    assert node.file_owner("/home/alice/shared") == ("alice", "adm")
    assert node.file_owner("/srv/bob/notes") == ("bob", "")
    assert node.file_owner("/home/alicex/other") == ("root", "root")
    assert node.file_owner("/etc/app.conf") == ("alice", "root")


def test_file_entries_wraps_plain_contents() -> None:
    custom = File(content="#!/bin/sh\n", mode=0o755, owner="alice")
    node = Node(files={"/etc/motd": "hi", "/srv/blob": b"\0", "/usr/local/bin/x": custom})
    entries = node.file_entries()
    assert entries["/etc/motd"] == File(content="hi")
    assert entries["/etc/motd"].mode == 0o644 and node.file_owner("/etc/motd") == ("root", "root")
    assert entries["/srv/blob"].content == b"\0"
    assert entries["/usr/local/bin/x"] is custom


def test_image_inputs_are_sorted_json() -> None:
    node = Node(packages=["vim", "curl", "vim"], build_commands=["b", "a"], files={"/x": "does not count"})
    inputs = node.image_inputs()
    assert inputs == {"packages": ["curl", "vim"], "build_commands": ["b", "a"]}
    assert json.dumps(inputs, sort_keys=True) == json.dumps(
        Node(packages=["curl", "vim"], build_commands=["b", "a"]).image_inputs(), sort_keys=True
    )


# -- node names --------------------------------------------------------------------


def test_python_name() -> None:
    assert python_name("machine-a") == "machine_a"
    assert python_name("node1") == "node1"
    assert python_name("1node") == "_node"


NAME_RULE = "use letters, digits, '-' and '_', starting and ending with a letter or digit"


@pytest.mark.parametrize("name", ["node1", "a", "web-server", "x" * 30, "client_defaults", "Node1", "1node", "web-1"])
def test_valid_node_names(name: str) -> None:
    """NixOS's host names: letters, digits, '-' and '_'."""
    check_node_name(name)


@pytest.mark.parametrize(
    ("name", "variable"), [("client_defaults", "client_defaults"), ("web-1", "web_1"), ("1node", "_node")]
)
def test_script_variable_of_a_node_as_in_nixos(name: str, variable: str) -> None:
    assert python_name(name) == variable


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", f"invalid node name '': {NAME_RULE}"),
        ("-web", f"invalid node name '-web': {NAME_RULE}"),
        ("web-", f"invalid node name 'web-': {NAME_RULE}"),
        ("a.b", f"invalid node name 'a.b': {NAME_RULE}"),
        ("a b", f"invalid node name 'a b': {NAME_RULE}"),
        ("x" * 31, f"invalid node name '{'x' * 31}': longer than 30 characters"),
        ("start-all", "invalid node name 'start-all': 'start_all' is already a test-script global"),
        ("vlan1", "invalid node name 'vlan1': 'vlan1' is already a test-script global"),
        ("t", "invalid node name 't': 't' is already a test-script global"),
        ("class", "invalid node name 'class': 'class' is a Python keyword"),
        (3, "node names must be str, got int 3"),
    ],
)
def test_invalid_node_names(name: object, message: str) -> None:
    with spec_error(message):
        check_node_name(name)


# -- units ---------------------------------------------------------------------------


def test_minimal_unit_text() -> None:
    assert Service(exec_start="/usr/bin/true").unit_text() == (
        "[Service]\nType=simple\nExecStart=/usr/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def test_full_unit_text() -> None:
    service = Service(
        exec_start="/usr/bin/app --port %i",
        description="App at 100% speed",
        type="notify",
        exec_start_pre=["/bin/mkdir -p /run/app", "/bin/true"],
        exec_stop="/bin/kill $MAINPID",
        environment={"GREETING": 'say "hi"', "PATH_LIKE": "C:\\dir", "PCT": "50%", "NL": "a\nb"},
        user="app",
        group="app",
        working_directory="/srv/app",
        restart="on-failure",
        after=["network-online.target"],
        requires=["db.service"],
        wants=["network-online.target", "extra.service"],
        wanted_by=["multi-user.target", "graphical.target"],
        remain_after_exit=True,
    )
    assert service.unit_text() == (
        "[Unit]\n"
        "Description=App at 100%% speed\n"
        "After=network-online.target\n"
        "Requires=db.service\n"
        "Wants=network-online.target extra.service\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "ExecStartPre=/bin/mkdir -p /run/app\n"
        "ExecStartPre=/bin/true\n"
        "ExecStart=/usr/bin/app --port %i\n"
        "ExecStop=/bin/kill $MAINPID\n"
        'Environment="GREETING=say \\"hi\\""\n'
        'Environment="PATH_LIKE=C:\\\\dir"\n'
        'Environment="PCT=50%%"\n'
        'Environment="NL=a\\nb"\n'
        "User=app\n"
        "Group=app\n"
        "WorkingDirectory=/srv/app\n"
        "Restart=on-failure\n"
        "RemainAfterExit=yes\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target graphical.target\n"
    )


def test_extra_replaces_and_adds_keys_and_sections() -> None:
    service = Service(
        exec_start="/bin/app",
        exec_start_pre=["/bin/a", "/bin/b"],
        extra={
            "Service": {"Type": "oneshot", "ExecStartPre": "/bin/c", "LimitNOFILE": "4096"},
            "Unit": {"StartLimitBurst": "3"},
            "X-Custom": {"Key": "value"},
        },
        wanted_by=[],
    )
    assert service.unit_text() == (
        "[Unit]\n"
        "StartLimitBurst=3\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStartPre=/bin/c\n"
        "ExecStart=/bin/app\n"
        "LimitNOFILE=4096\n"
        "\n"
        "[X-Custom]\n"
        "Key=value\n"
    )


def test_unit_files_and_enabled_units() -> None:
    raw_timer = (
        "[Unit]\nDescription=WantedBy=not-this.target\n\n"
        "[Timer]\nOnCalendar=daily\n\n"
        "[Install]\n"
        "# WantedBy=commented.target\n"
        "WantedBy = timers.target \\\n  other.target\n"
    )
    node = Node(
        services={
            "web": Service(exec_start="/bin/web"),
            "worker.service": Service(exec_start="/bin/worker", enable=False),
            "quiet": Service(exec_start="/bin/quiet", wanted_by=[]),
            "backup.timer": raw_timer,
            "raw": "[Service]\nExecStart=/bin/raw",
            "reset": "[Install]\nWantedBy=a.target\nWantedBy=\nWantedBy=b.target\n",
            "my.app": "[Service]\nExecStart=/bin/x\n",
        }
    )
    files = node.unit_files()
    assert sorted(files) == [
        "backup.timer",
        "my.app.service",
        "quiet.service",
        "raw.service",
        "reset.service",
        "web.service",
        "worker.service",
    ]
    assert files["raw.service"] == "[Service]\nExecStart=/bin/raw\n"
    assert files["web.service"] == Service(exec_start="/bin/web").unit_text()
    assert node.enabled_units() == {
        "web.service": ["multi-user.target"],
        "backup.timer": ["timers.target", "other.target"],
        "reset.service": ["b.target"],
    }


def test_install_links_are_the_ones_systemctl_enable_makes() -> None:
    # NixOS's requiredBy, upheldBy and aliases, from a Service's `extra` or a unit's own text.
    node = Node(
        services={
            "aliased": Service(exec_start="/bin/a", extra={"Install": {"Alias": "other-name.service"}}),
            "required": "[Service]\nExecStart=/bin/r\n[Install]\nRequiredBy=multi-user.target\n",
            "upheld": "[Service]\nExecStart=/bin/u\n[Install]\nUpheldBy=a.target\nAlias=\nAlias=u2.service\n",
            "off": Service(exec_start="/bin/o", enable=False, extra={"Install": {"Alias": "o2.service"}}),
        }
    )
    assert node.install_links() == {
        "aliased.service": ["multi-user.target.wants/aliased.service", "other-name.service"],
        "required.service": ["multi-user.target.requires/required.service"],
        "upheld.service": ["a.target.upholds/upheld.service", "u2.service"],
    }


# -- interactive overrides ------------------------------------------------------------


def test_merge_interactive_appends_merges_and_replaces() -> None:
    options = Options()
    nodes = {
        "node1": Node(packages=["curl"], files={"/a": "1"}, memory_size=512),
        "node2": Node(),
    }
    interactive = Interactive(
        options={"ssh_backdoor": True, "global_timeout": None},
        nodes={"node1": {"packages": ["gdb", "strace"], "files": {"/b": "2"}, "memory_size": 2048}},
    )
    new_options, new_nodes = merge_interactive(options, nodes, interactive)
    assert new_options.ssh_backdoor is True and new_options.global_timeout is None
    assert options.ssh_backdoor is False
    assert new_nodes["node1"].packages == ["curl", "gdb", "strace"]
    assert new_nodes["node1"].files == {"/a": "1", "/b": "2"}
    assert new_nodes["node1"].memory_size == 2048
    assert new_nodes["node2"] is nodes["node2"]
    assert nodes["node1"].packages == ["curl"] and nodes["node1"].memory_size == 512


def test_merge_interactive_unknown_node() -> None:
    interactive = Interactive(nodes={"nod1": {"cores": 2}})
    with spec_error("Interactive.nodes: there is no node 'nod1'; did you mean 'node1'? (nodes are: node1, node2)"):
        merge_interactive(Options(), {"node1": Node(), "node2": Node()}, interactive)


def test_merge_interactive_bad_values() -> None:
    nodes = {"node1": Node()}
    with spec_error("Interactive.nodes['node1'].packages: expected a list of str to append, got str 'gdb'"):
        merge_interactive(Options(), nodes, Interactive(nodes={"node1": {"packages": "gdb"}}))
    with spec_error(
        "Interactive.nodes['node1'].files: expected a dict of str to str, bytes or File to merge, got list []"
    ):
        merge_interactive(Options(), nodes, Interactive(nodes={"node1": {"files": []}}))
    with spec_error("interactive overrides of node 'node1': Node.cores: must be between 1 and 64, got 100"):
        merge_interactive(Options(), nodes, Interactive(nodes={"node1": {"cores": 100}}))
    with spec_error("interactive options: Options.suite: expected str, got int 12"):
        merge_interactive(Options(), nodes, Interactive(options={"suite": 12}))


@pytest.mark.parametrize(
    ("nodes", "host_cpus", "cores"),
    [(1, 2, 2), (1, 1, 1), (2, 2, 1), (3, 2, 1), (3, 8, 2), (4, 8, 2), (5, 8, 1)],
)
def test_default_cores_share_the_host_cpus(nodes: int, host_cpus: int, cores: int) -> None:
    assert default_cores(nodes, host_cpus) == cores


def test_the_x11_preset_adds_a_display_packages_a_user_and_the_display_manager() -> None:
    node = Node(x11=X11(user="bob"), packages=["firefox-esr", "xterm"])
    assert node.graphics is True
    assert node.packages[:2] == ["firefox-esr", "xterm"] and node.packages.count("xterm") == 1
    assert {"linux-image-amd64", "xserver-xorg-core", "icewm", "x11-utils"} <= set(node.packages)
    assert list(node.users) == ["bob"]
    unit = node.unit_files()["display-manager.service"]
    assert "ExecStart=/usr/lib/vmrig/x11-start bob\n" in unit and "Conflicts=getty@tty7.service\n" in unit
    assert node.enabled_units()["display-manager.service"] == ["graphical.target"]
    assert node.kernel_params == ["systemd.unit=graphical.target"]
    assert node.file_entries()["/usr/lib/vmrig/x11-start"].mode == 0o755


def test_the_x11_preset_keeps_what_the_node_says_and_survives_replace() -> None:
    own = Service(exec_start="/usr/bin/true")
    node = Node(
        x11=X11(),
        users={"alice": User(password="secret")},
        services={"display-manager": own},
        kernel_params=["systemd.unit=multi-user.target"],
    )
    assert node.users["alice"].password == "secret"
    assert node.services["display-manager"] is own
    # Its own display manager runs no IceWM session of vmrig's to wait for (wait_for_x looks for this unit).
    assert "vmrig-x11-ready" not in node.services
    assert "vmrig-x11-ready" in Node(x11=X11()).services
    assert node.kernel_params == ["systemd.unit=multi-user.target"]
    again = dataclasses.replace(node, memory_size=2048)
    assert (again.packages, again.files, again.kernel_params) == (node.packages, node.files, node.kernel_params)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Node(x11=X11(), graphics=False), "Node.x11 needs a display"),
        (lambda: Node(x11=True), "Node.x11: expected X11 or None, got bool True"),
        (lambda: X11(user="root"), "X11.user: the session runs as an ordinary user"),
        (lambda: X11(user="Bob"), "X11.user: invalid name 'Bob'"),
    ],
)
def test_x11_mistakes(build: Any, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        build()


def test_empty_disks_are_sizes_or_empty_disks_with_serials() -> None:
    node = Node(empty_disks=[512, EmptyDisk(size=64, serial="usb-key.1")])
    assert node.disks() == [EmptyDisk(size=512), EmptyDisk(size=64, serial="usb-key.1")]
    with spec_error("Node.empty_disks[1] (MiB): must be between 1 and 16777216, got 0"):
        Node(empty_disks=[512, 0])
    with spec_error("EmptyDisk.size (MiB): must be between 1 and 16777216, got 1000000000000"):
        EmptyDisk(size=10**12)
    with spec_error(
        "Node: 10 vlan cards, 16 empty disks and 0 shared directories are 26 PCI devices; "
        "QEMU's machine has room for 24"
    ):
        Node(vlans=list(range(1, 11)), empty_disks=[1] * 16)
    with spec_error("Node.empty_disks[0]: expected int or EmptyDisk, got str '512M'"):
        Node(empty_disks=["512M"])
    with spec_error("Node.empty_disks[1]: serial 'data' is used twice"):
        Node(empty_disks=[EmptyDisk(size=1, serial="data"), EmptyDisk(size=2, serial="data")])
    with spec_error("EmptyDisk.serial: 'root' is the root disk's serial, as on NixOS"):
        EmptyDisk(size=1, serial="root")
    with spec_error(
        "EmptyDisk.serial: invalid serial 'a serial that is far too long' "
        "(1 to 20 letters, digits and '._-'; virtio disks keep 20 bytes of it)"
    ):
        EmptyDisk(size=1, serial="a serial that is far too long")
    with spec_error("Node.empty_disks: at most 16 disks, got 17"):
        Node(empty_disks=[1] * 17)


def test_a_node_with_a_tpm_gets_the_tss_libraries_through_tpm2_tools() -> None:
    assert Node(tpm=True).packages == ["tpm2-tools"]
    assert Node(packages=["tpm2-tools", "curl"], tpm=True).packages == ["tpm2-tools", "curl"]
    assert Node().packages == []
