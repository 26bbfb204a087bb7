"""The Machine API on one real VM (booted once for the whole module)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import BootedDriver, short_tmp
from vmrig.errors import MachineError, RequestedAssertionFailed
from vmrig.machine import Machine
from vmrig.spec import File, Node, Service, User
from vmrig.timeouts import TimeoutScale

pytestmark = pytest.mark.vm
DATA = Path(__file__).parent / "data"

NODE = Node(
    packages=["python3"],
    files={
        "/etc/vmrig-test/greeting": "hello from the config layer\n",
        "/usr/local/bin/secret": File(content="#!/bin/sh\necho secret\n", mode=0o750),
        # Under /run, a tmpfs from the boot on: laid there all the same.
        "/run/vmrig-test/token": File(content="token\n", mode=0o600, owner="wheeler"),
        # Added to the generated hosts file, as NixOS's networking.extraHosts.
        "/etc/hosts": "192.0.2.7 extra-host\n",
        # As NixOS's security.sudo.wheelNeedsPassword = false: sorted before any file of vmrig's.
        "/etc/sudoers.d/10-wheel": File(content="%wheel ALL=(ALL:ALL) NOPASSWD: ALL\n", mode=0o440),
    },
    users={"wheeler": User(groups=["wheel"])},
    services={
        "sleeper": Service(exec_start="/bin/sleep infinity"),
        # NixOS's aliases and requiredBy, as systemctl enable makes them
        "aliased": Service(exec_start="/bin/sleep infinity", extra={"Install": {"Alias": "other-name.service"}}),
        "required": "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nRequiredBy=multi-user.target\n",
        "broken": Service(exec_start="/bin/sh -c 'echo about to fail; exit 3'"),
        "oneshot-later": Service(exec_start="/bin/true", type="oneshot", wanted_by=[]),
        "listener": Service(exec_start="/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1"),
        "unix-listener": Service(
            exec_start="/usr/bin/python3 -c 'import socket,os; s=socket.socket(socket.AF_UNIX); "
            's.bind("/run/test.sock"); s.listen(); import time; time.sleep(10**6)\''
        ),
    },
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    booted = BootedDriver({"node1": NODE}, short_tmp(tmp_path_factory, "api"))
    machine = booted.machine("node1")
    machine.start()
    try:
        yield machine
    finally:
        booted.close()


def test_first_command_sees_basic_target_and_its_wait_is_not_charged_the_boot(node: Machine) -> None:
    """The module's machine is still booting here: this is its first command."""
    node.config.timeout_scale = TimeoutScale()  # the timeout as written, not scaled
    started = time.monotonic()
    # The boot alone takes longer than 1 s. The command notes when it ran (seconds since the kernel started).
    node.wait_until_succeeds('read -r up _ </proc/uptime && echo "$up" >/run/first-command', timeout=1)
    assert time.monotonic() - started > 1
    # As NixOS's backdoor unit: sockets (D-Bus's), local file systems, /tmp, all there
    # before the first command ran (PID 1 opens the FIFO the driver's wait opens).
    assert node.succeed("systemctl is-active basic.target sockets.target dbus.socket") == "active\n" * 3
    ran = float(node.succeed("cat /run/first-command"))
    for unit in ("basic.target", "vmrig-basic.socket"):
        reached = int(node.succeed(f"systemctl show -P ActiveEnterTimestampMonotonic {unit}")) / 1e6
        assert 0 < reached < ran, (unit, reached, ran)
    node.config.timeout_scale = TimeoutScale.choose("tcg", None)


def test_network_targets_are_reached(node: Machine) -> None:
    node.wait_for_unit("network.target")
    node.wait_for_unit("network-online.target", timeout=timedelta(seconds=60))


def test_succeed_returns_stdout_and_fail_raises(node: Machine) -> None:
    assert node.succeed("echo hello") == "hello\n"
    assert node.succeed("echo a", "echo b") == "a\nb\n"
    with pytest.raises(RequestedAssertionFailed, match=r"command `false` failed \(exit code 1\)"):
        node.succeed("false")
    assert node.fail("false") == ""
    with pytest.raises(RequestedAssertionFailed, match="unexpectedly succeeded"):
        node.fail("true")


def test_guest_cpu_runs_x86_64_v2_instructions(node: Machine) -> None:
    flags = node.succeed("grep -m1 '^flags' /proc/cpuinfo").split()
    assert {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"} <= set(flags), flags
    # glibc's own verdict: it loads its x86-64-v2 libraries on this CPU.
    hwcaps = node.succeed("/lib64/ld-linux-x86-64.so.2 --help")
    assert re.search(r"^\s+x86-64-v2 \(supported, searched\)$", hwcaps, re.MULTILINE), hwcaps
    node.copy_from_host(str(DATA / "x86_64_v2.py"), "/tmp/x86_64_v2.py")
    assert node.succeed("python3 /tmp/x86_64_v2.py") == "8 True 1 True\n"
    if node.config.accel == "tcg":
        # No SVM flag under emulation, so udev has no reason to load kvm_amd (qemu.TCG_CPU).
        assert "svm" not in flags, flags
        assert node.execute("grep -q '^kvm_amd ' /proc/modules")[0] == 1


def test_execute_status_and_fresh_shell_each_time(node: Machine) -> None:
    assert node.execute("exit 42") == (42, "")
    node.succeed("cd /etc; export FOO=bar")
    assert node.succeed("pwd; echo ${FOO:-unset}") == "/tmp\nunset\n"
    # set -euo pipefail applies, as in the NixOS driver
    assert node.execute("false | true")[0] == 1
    assert node.execute("echo $UNDEFINED_VARIABLE")[0] != 0
    assert node.execute("x", check_return=False)[0] == -1
    assert node.execute("true", check_output=False) == (-2, "")
    assert node.succeed("echo after an unread command") == "after an unread command\n"
    # bash's own words for a missing command, as under NixOS's `bash -c` (no vmrig file in them)
    as_nixos = node.execute("bash -c vmrig-no-such-command 2>&1")
    assert as_nixos[1].startswith("bash: line 1: vmrig-no-such-command")
    assert node.execute("vmrig-no-such-command 2>&1") == as_nixos
    # As under `bash -c`: no arguments, and none of the backdoor's variables (set -u fails on them).
    assert node.succeed('echo "$#"') == "0\n"
    for name in ("1", "cmd", "status", "pid", "timeout", "__vmrig_cmd"):
        assert node.execute(f'echo "${name}"')[0] == 1, name


def test_background_jobs_end_the_output_as_under_nixos(node: Machine) -> None:
    # As under `bash -c CMD | base64`, the output ends when nothing holds it: the job's line is
    # this command's, and none of it reaches the next command.
    assert node.succeed("(sleep 1; echo late) &") == "late\n"
    assert node.succeed("sleep 2; echo mine") == "mine\n"
    # Jobs that do not hold stdout are not waited for (the timeout, 20 s here, would end a wait for them).
    assert node.succeed("sleep 600 >/dev/null 2>&1 & sleep 601 >&2 & echo started", timeout=20) == "started\n"
    assert node.succeed("pgrep -fx 'sleep 60[01]' | wc -l") == "2\n"  # they run on
    node.succeed("pkill -fx 'sleep 60[01]'")
    # $0 is bash's, as under `bash -c`
    assert node.succeed("echo $0") == "bash\n"


def test_useradd_gives_bash_as_on_nixos(node: Machine) -> None:
    node.succeed("useradd -m carol")
    assert node.succeed("getent passwd carol").endswith(":/home/carol:/bin/bash\n")


def test_output_edge_cases(node: Machine) -> None:
    assert node.succeed("true") == ""
    assert node.succeed("printf 'no newline'") == "no newline"
    assert node.succeed("printf 'a\\n\\n\\n'") == "a\n\n\n"
    # invalid UTF-8 becomes U+FFFD, as NixOS decodes it
    text = node.succeed("printf 'ok \\377\\376 end\\n'")
    assert text == "ok \ufffd\ufffd end\n"
    assert node.execute("printf '\\377'; false", check_return=False) == (-1, "\ufffd")
    # execute_bytes: binary output, NUL bytes and invalid UTF-8 included, comes back intact
    assert node.execute_bytes("printf '\\000\\001\\377\\376end'; exit 3") == (3, b"\x00\x01\xff\xfeend")
    # 10 MB of random data, checked against the guest's own checksum
    status, data = node.execute_bytes("head -c 10000000 /dev/urandom > /tmp/big; cat /tmp/big")
    assert status == 0 and len(data) == 10_000_000
    guest_sum = node.succeed("sha256sum /tmp/big").split()[0]
    assert hashlib.sha256(data).hexdigest() == guest_sum
    # output that looks like the protocol's markers is just output
    assert node.succeed("echo '0123456789abcdef E 0'") == "0123456789abcdef E 0\n"
    # stdout is a pipe, not the console (programs must not see a terminal)
    assert node.execute("test -t 1")[0] == 1
    # stdin is /dev/null: a command that reads it sees end of file at once
    assert node.succeed("cat; echo done") == "done\n"


def test_timeout_gives_124(node: Machine) -> None:
    started = time.monotonic()
    status, _ = node.execute("sleep 60; echo never", timeout=2)
    assert status == 124
    assert time.monotonic() - started < 30
    assert node.succeed("echo still usable") == "still usable\n"
    # the whole process group died with it
    assert node.execute("pgrep -x 'sleep' | grep -v $$ ")[0] != 0 or "60" not in node.succeed("ps -eo args")


def test_files_under_run_the_hosts_file_and_wheel_as_on_nixos(node: Machine) -> None:
    assert node.succeed("cat /run/vmrig-test/token; stat -c '%U %a' /run/vmrig-test/token") == "token\nwheeler 600\n"
    assert node.succeed("getent hosts extra-host").split() == ["192.0.2.7", "extra-host"]
    node.succeed("getent hosts localhost node1")  # the generated lines are still there
    assert "(ALL : ALL) ALL" in node.succeed("sudo -l -U wheeler")
    node.succeed("su - wheeler -c 'sudo -n true'")  # the node's own rule wins


def test_what_a_nixos_machine_allows_and_hides(node: Machine) -> None:
    # Every user may ping, as with NixOS's ping wrapper.
    node.succeed("su - wheeler -c 'ping -c 1 -W 5 127.0.0.1'")
    # No name servers (NixOS test VMs have none), the host's least of all: a package layer keeps the base's file.
    assert "nameserver" not in node.succeed("cat /etc/resolv.conf")
    # The backdoor's own processes are not a script's: its output copier is no `cat`...
    assert node.execute("pgrep -x cat")[0] == 1
    # ... and one killed all the same comes back.
    node.succeed("pkill -x vmrig-copy-out")
    assert node.succeed("echo mine", timeout=30) == "mine\n"


def test_config_layer_files_and_hostname(node: Machine) -> None:
    assert node.succeed("hostname") == "node1\n"
    assert node.succeed("cat /etc/vmrig-test/greeting") == "hello from the config layer\n"
    assert node.succeed("stat -c %a /usr/local/bin/secret") == "750\n"
    assert node.succeed("/usr/local/bin/secret") == "secret\n"
    # NixOS's system profile: the package layer's programs, and a node's own.
    assert node.succeed("/run/current-system/sw/bin/secret") == "secret\n"
    node.succeed("/run/current-system/sw/bin/python3 -c pass")
    # Dated 1 s after the epoch, as NixOS's store files: NSD, for one, takes a zone file dated 0 for none.
    files = "/etc/vmrig-test/greeting /usr/local/bin/secret /run/vmrig-test/token"
    assert node.succeed(f"stat -c %Y {files}").split() == ["1", "1", "1"]
    assert node.succeed("passwd -S root").split()[1] == "NP"  # empty root password


def test_the_root_file_system_has_the_disk_size_from_the_start(node: Machine) -> None:
    # Made at that size on the host: nothing grows it during the boot.
    disk_kib = int(node.succeed("df --output=size -k / | tail -1"))
    assert 3_900_000 < disk_kib < 4_200_000, disk_kib
    assert node.succeed("systemctl show -P InactiveExitTimestampMonotonic systemd-growfs-root.service") == "0\n"
    assert node.succeed("pgrep -c ext4lazyinit || true") == "0\n"


def test_the_kernel_file_systems_of_a_nixos_machine_are_mounted(node: Machine) -> None:
    mounted = node.succeed(
        "for p in /sys/kernel/debug /sys/kernel/tracing; do findmnt -rno TARGET,FSTYPE --mountpoint $p; done"
    )
    assert mounted.splitlines() == ["/sys/kernel/debug debugfs", "/sys/kernel/tracing tracefs"]
    node.succeed("test -d /sys/kernel/tracing/events/syscalls")


def test_locale_ext4_tools_and_dynamic_users_as_on_nixos(node: Machine) -> None:
    assert node.succeed("echo $LANG") == "en_US.UTF-8\n"
    assert node.succeed("printf 'b\\nA\\na\\nB\\n' | sort | tr '\\n' ' '") == "a A b B "
    assert node.succeed("su - root -c 'echo $LANG'") == "en_US.UTF-8\n"  # PAM sessions too
    assert node.succeed("runuser -l root -c 'echo $LANG'") == "en_US.UTF-8\n"  # and other login shells
    node.succeed("command -v mkfs.ext4 e2fsck resize2fs sfdisk fdisk")
    node.succeed("systemd-run --unit=dyn-name -p DynamicUser=yes sleep 300")
    assert node.wait_until_succeeds("ps -o user= -C sleep | grep -x dyn-name", timeout=30) == "dyn-name\n"
    node.succeed("systemctl stop dyn-name")


def test_wait_for_unit_and_unit_info(node: Machine) -> None:
    node.wait_for_unit("sleeper")
    node.wait_for_unit("multi-user.target")
    info = node.get_unit_info("sleeper")
    assert info["ActiveState"] == "active"
    assert node.get_unit_property("sleeper", "SubState") == "running"
    node.require_unit_state("sleeper", "active")
    with pytest.raises(RequestedAssertionFailed, match="to be in state 'inactive'"):
        node.require_unit_state("sleeper", "inactive")
    status, output = node.systemctl("is-active sleeper")
    assert (status, output) == (0, "active\n")


def test_units_are_enabled_with_their_aliases_and_required_by(node: Machine) -> None:
    node.wait_for_unit("required.service")
    node.wait_for_unit("other-name")
    assert node.get_unit_property("other-name", "Id") == "aliased.service"
    assert "required.service" in node.get_unit_property("multi-user.target", "Requires").split()


def test_wait_for_unit_fails_fast_on_failed_unit(node: Machine) -> None:
    started = time.monotonic()
    with pytest.raises(RequestedAssertionFailed) as error:
        node.wait_for_unit("broken", timeout=300)
    assert time.monotonic() - started < 60
    message = str(error.value)
    assert (
        'unit "broken.service" reached state "failed"' in message or 'unit "broken" reached state "failed"' in message
    )
    assert "about to fail" in message  # the unit's journal lines
    assert "status=3" in message  # systemctl status


def test_wait_for_unit_no_such_unit_or_a_masked_one_says_so(node: Machine) -> None:
    with pytest.raises(RequestedAssertionFailed, match=r"inactive and there are no pending jobs \(no such unit\)$"):
        node.wait_for_unit("does-not-exist", timeout=60)
    with pytest.raises(RequestedAssertionFailed, match=r"no pending jobs \(the unit is masked: `systemctl unmask` it"):
        node.wait_for_unit("systemd-networkd", timeout=60)  # masked by the base image


def test_commands_run_at_niceness_0_as_on_nixos(node: Machine) -> None:
    """NixOS's backdoor unit sets no Nice=: a command and what it starts run at 0."""
    assert node.succeed("nice") == "0\n"
    assert node.succeed("nice -n 10 sh -c 'ps -o ni= -p $$'").strip() == "10"


def test_debug_messages_reach_the_console_as_on_nixos(node: Machine) -> None:
    """NixOS's test VMs forward the journal to the console down to debug level (MaxLevelConsole=debug)."""
    node.succeed("logger -p daemon.debug vmrig-debug-level-marker")
    node.wait_for_console_text("vmrig-debug-level-marker", timeout=30)


def test_start_and_stop_job(node: Machine) -> None:
    assert node.start_job("oneshot-later")[0] == 0
    assert node.get_unit_property("oneshot-later", "Result") == "success"
    node.stop_job("sleeper")
    assert node.get_unit_property("sleeper", "ActiveState") == "inactive"
    node.start_job("sleeper")
    node.wait_for_unit("sleeper")


def test_wait_primitives(node: Machine) -> None:
    node.wait_for_open_port(8080, timeout=120)
    node.wait_for_open_unix_socket("/run/test.sock", timeout=120)
    node.succeed("(sleep 2; touch /tmp/appears) >/dev/null 2>&1 &")
    node.wait_for_file("/tmp/appears", timeout=60)
    node.succeed("(sleep 2; systemctl stop listener) >/dev/null 2>&1 &")
    node.wait_for_closed_port(8080, timeout=60)
    output = node.wait_until_succeeds("test -e /tmp/appears && echo yes", timeout=30)
    assert output == "yes\n"
    node.succeed("touch /tmp/goes-away; (sleep 2; rm /tmp/goes-away) >/dev/null 2>&1 &")
    node.wait_until_fails("test -e /tmp/goes-away", timeout=30)


def test_wait_timeouts_fail_with_nixos_text(node: Machine) -> None:
    node.config.timeout_scale = TimeoutScale()
    try:
        started = time.monotonic()
        with pytest.raises(RequestedAssertionFailed, match=r"action timed out after 3\.\d\d seconds \(timeout=3\)"):
            node.wait_until_succeeds("false", timeout=3)
        with pytest.raises(RequestedAssertionFailed, match="port 9 on localhost"):
            node.wait_for_open_port(9, timeout=timedelta(seconds=2))
        with pytest.raises(RequestedAssertionFailed, match="/nonexistent"):
            node.wait_for_file("/nonexistent", timeout=2)
        assert time.monotonic() - started < 60
    finally:
        node.config.timeout_scale = TimeoutScale.choose("tcg", None)


def test_port_waits_end_on_time_when_nothing_answers(node: Machine) -> None:
    """A host that drops the SYNs (a neighbour entry nobody has) does not hold a probe for its SYN retries."""
    node.succeed("ip neigh replace 192.168.1.250 lladdr 52:54:00:12:99:99 dev eth1 nud permanent")
    node.config.timeout_scale = TimeoutScale()
    try:
        started = time.monotonic()
        with pytest.raises(RequestedAssertionFailed, match="port 1234 on 192.168.1.250 to open"):
            node.wait_for_open_port(1234, addr="192.168.1.250", timeout=3)
        # Without a bound each probe took the kernel's SYN retries: about 130 s.
        assert time.monotonic() - started < 15
        node.wait_for_closed_port(1234, addr="192.168.1.250", timeout=3)
        assert time.monotonic() - started < 30
    finally:
        node.config.timeout_scale = TimeoutScale.choose("tcg", None)
        node.succeed("ip neigh del 192.168.1.250 dev eth1")


def test_timeouts_are_scaled_under_tcg(node: Machine) -> None:
    node.config.timeout_scale = TimeoutScale(3.0, "TCG")
    started = time.monotonic()
    scaled = r"timed out after 3\.\d\d seconds \(timeout=0:00:01, scaled x3 under TCG to 3 s\)"
    with pytest.raises(RequestedAssertionFailed, match=scaled):
        node.wait_until_fails("true", timeout=timedelta(seconds=1))
    assert time.monotonic() - started >= 3
    assert node.execute("sleep 2; echo done", timeout=1) == (0, "done\n")  # 1 s scaled to 3 s
    # A unit that stays activating: the wait for it is scaled once, not once more for its job.
    node.succeed("systemd-run --unit=slow-oneshot --service-type=oneshot --no-block sleep 600")
    started = time.monotonic()
    with pytest.raises(RequestedAssertionFailed, match=r"\(timeout=2, scaled x3 under TCG to 6 s\)"):
        node.wait_for_unit("slow-oneshot", timeout=2)
    assert time.monotonic() - started < 9
    node.succeed("systemctl stop slow-oneshot")
    node.config.timeout_scale = TimeoutScale.choose("tcg", None)


def test_console(node: Machine) -> None:
    node.succeed("echo vmrig-console-marker-1 > /dev/ttyS0")
    node.wait_for_console_text("vmrig-console-marker-1", timeout=30)
    assert "vmrig-console-marker-1" in node.get_console_log()
    node.succeed("(sleep 1; echo vmrig-console-marker-2 > /dev/ttyS0) >/dev/null 2>&1 &")
    node.wait_for_console_text(r"marker-\d{1}$", timeout=30)
    with pytest.raises(RequestedAssertionFailed, match="timed out"):
        node.wait_for_console_text("never-printed", timeout=2)
    # The console as one text: a multi-line regex matches lines that arrive during the wait...
    node.succeed("(sleep 2; printf 'alpha\\nbeta\\n' > /dev/ttyS0) >/dev/null 2>&1 &")
    node.wait_for_console_text(r"alpha\nbeta", timeout=60)
    # ... and what a wait consumed is not matched again, as in NixOS.
    with pytest.raises(RequestedAssertionFailed, match="timed out"):
        node.wait_for_console_text("^alpha$", timeout=1)
    # stderr of commands goes to the console, as in the NixOS driver, and so does /dev/console
    node.succeed("echo vmrig-stderr-line >&2")
    node.wait_for_console_text("vmrig-stderr-line", timeout=30)
    node.succeed("echo vmrig-dev-console-line > /dev/console")
    node.wait_for_console_text("vmrig-dev-console-line", timeout=30)
    # A prompt matches before its newline, and a kernel message that lands inside
    # its line (timestamp and all) does not hide it.
    node.succeed(
        "(printf 'Enter pass' > /dev/ttyS0; sleep 1; echo '<4>vmrig: interrupting' > /dev/kmsg; sleep 1;"
        " printf 'phrase for vault: ' > /dev/ttyS0) >/dev/null 2>&1 &"
    )
    node.wait_for_console_text("Enter passphrase for vault: ", timeout=60)  # no newline yet
    assert re.search(r"Enter pass\[ *\d+\.\d+\] vmrig: interrupting", node.get_console_log())
    # NixOS's attributes: the lines since the start, and a queue of them to take off.
    assert any("Linux version" in line for line in node.full_console_log)
    assert node.last_lines.get(timeout=1)  # the first line since the start
    node.succeed("printf '\\nvmrig-queued-line\\n' > /dev/ttyS0")  # ends the prompt's line first
    node.wait_for_console_text("vmrig-queued-line", timeout=30)
    assert "vmrig-queued-line" in list(node.last_lines.queue)
    # NixOS's driver joins the lines with nothing between them: `.*` spans two lines.
    node.succeed("printf 'first-half\nsecond-half\n' > /dev/ttyS0")
    node.wait_for_console_text("first-half.*second-half", timeout=30)


def test_send_console_reaches_the_serial_port(node: Machine) -> None:
    node.succeed("stty -F /dev/ttyS0 raw -echo; (head -c 6 /dev/ttyS0 > /tmp/typed) >/dev/null 2>&1 &")
    time.sleep(1)
    node.send_console("typed\n")
    node.wait_until_succeeds("test -s /tmp/typed", timeout=30)
    assert node.succeed("cat /tmp/typed") == "typed\n"


def test_copy_from_host_and_back(node: Machine, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "sub" / "big.bin").write_bytes(os.urandom(3_000_000))
    node.copy_from_host(str(tree), "/root/copied")
    assert node.succeed("cat /root/copied/a.txt") == "alpha\n"
    assert node.succeed("/root/copied/run.sh") == "ran\n"
    assert node.succeed("stat -c %U /root/copied/a.txt") == "root\n"
    guest_sum = node.succeed("sha256sum /root/copied/sub/big.bin").split()[0]
    assert guest_sum == hashlib.sha256((tree / "sub" / "big.bin").read_bytes()).hexdigest()

    single = tmp_path / "single.txt"
    single.write_text("one file\n")
    # as NixOS's `cp -r`: into an existing directory under the source's name, nested for a directory
    node.copy_from_host(str(single), "/usr/local/bin/")
    node.copy_from_host(str(tree), "/root/copied")
    assert node.succeed("cat /usr/local/bin/single.txt /root/copied/tree/a.txt") == "one file\nalpha\n"
    # as Path(target): no trailing slash; a symlink is copied as what it points to; any bytes in a name
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    odd.symlink_to(single)
    node.copy_from_host(str(odd), "/root/new-file/")
    assert node.succeed("test ! -L /root/new-file && cat /root/new-file") == "one file\n"
    node.copy_from_host(str(odd), "/root")
    assert node.succeed("cat /root/caf$'\\xe9'") == "one file\n"
    with pytest.raises(MachineError, match=r"cannot overwrite non-directory '/root/via-host-file' with directory"):
        node.copy_from_host(str(single), "/root/via-host-file")
        node.copy_from_host(str(tree), "/root/via-host-file")
    node.copy_from_host_via_shell(str(single), "/root/via-shell/single.txt")
    assert node.succeed("cat /root/via-shell/single.txt") == "one file\n"

    node.copy_from_vm("/root/copied", "back")
    back = node.out_dir / "back" / "copied"
    assert (back / "a.txt").read_text() == "alpha\n"
    assert os.stat(back / "run.sh").st_mode & 0o777 == 0o755
    assert (back / "sub" / "big.bin").read_bytes() == (tree / "sub" / "big.bin").read_bytes()


def test_monitor_and_qmp(node: Machine) -> None:
    assert "running" in node.send_monitor_command("info status")
    node.send_monitor_command("stop")
    event = node.wait_for_qmp_event(lambda e: e["event"] == "STOP", timeout=30)
    assert event["event"] == "STOP"
    node.send_monitor_command("cont")
    assert node.succeed("echo resumed") == "resumed\n"
    # As in NixOS, a wait consumes the events it passes over: the STOP before this RESUME is gone.
    node.wait_for_qmp_event(lambda e: e["event"] == "RESUME", timeout=30)  # the "cont" above
    node.send_monitor_command("stop")
    node.send_monitor_command("cont")
    assert node.wait_for_qmp_event(lambda e: e["event"] == "RESUME", timeout=30)["event"] == "RESUME"
    with pytest.raises(TimeoutError):
        node.wait_for_qmp_event(lambda e: e["event"] == "STOP", timeout=timedelta(seconds=1))


def test_user_systemctl(node: Machine) -> None:
    node.wait_for_unit("multi-user.target")  # D-Bus and logind start on demand, after sockets.target
    node.succeed("useradd -m alice")
    node.succeed("loginctl enable-linger alice")
    node.wait_until_succeeds("systemctl is-active user@$(id -u alice).service", timeout=120)
    status, output = node.systemctl("is-system-running --wait || true", user="alice")
    assert status == 0
    assert re.search(r"running|degraded|starting", output)
