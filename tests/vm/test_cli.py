"""`vmrig run` as a user runs it: exit codes, what a failure shows, bad input, cleanup."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import REPO, VMRIG, run_vmrig, write_test_file
from vmrig.image.store import BaseImage, ImageStore, host_mirror, key_of
from vmrig.runenv import cache_dir
from vmrig.spec import Node

pytestmark = pytest.mark.vm

# One small node that every test here can share the image of.
PLAIN_NODE = "Node()"


def qemu_pids_for(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_example_passes(vm_tmp: Path) -> None:
    result = run_vmrig("run", REPO / "examples" / "hello-world-server.py", "--junit-xml", "junit.xml", tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test passed" in result.stderr
    # booted (and saved), or restored from the snapshot an earlier run saved
    came_up = ("node1: connected to guest root shell", "node1: restored a booted snapshot")
    assert any(line in result.stderr for line in came_up)
    # serial console lines are logged with the node's name, booted or restored: here the
    # stderr of wait_for_open_port's nc, which goes to the console. (The server's journal
    # line of the request may come too late: the run can end before journald forwards it.)
    assert re.search(r"node1 # Connection to localhost .*8000 port .*succeeded", result.stderr)
    suite = ET.parse(vm_tmp / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert [case.get("name") for case in suite.iter("testcase")] == ["main"]
    assert suite.find("testcase/failure") is None


def test_multi_step_example_passes(vm_tmp: Path) -> None:
    example = REPO / "examples" / "subtests-and-failing-unit.py"
    result = run_vmrig("run", "--no-serial", example, "--junit-xml", "junit.xml", tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    cases = [c.get("name") for c in ET.parse(vm_tmp / "junit.xml").getroot().iter("testcase")]
    assert cases == [
        "main",
        "users and files are in place",
        "the service runs as its user",
        "the check unit fails, and says why",
        "the timer is scheduled",
    ]
    assert " # " not in result.stderr  # --no-serial


def test_nixos_well_known_paths(vm_tmp: Path) -> None:
    # A node of the base image alone: its programs under NixOS's system profile
    # (sysctl from /usr/sbin too), and its setuid programs under NixOS's wrappers.
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node

        nodes = {{"machine": {PLAIN_NODE}}}

        test_script = '''
        machine.succeed("/run/current-system/sw/bin/bash -c true")
        t.assertEqual(machine.succeed("/run/current-system/sw/bin/sysctl -n kernel.ostype"), "Linux\\\\n")
        machine.succeed("/run/current-system/sw/sbin/sysctl -n kernel.ostype")
        machine.succeed("/run/booted-system/sw/bin/true")
        machine.succeed("test -x /run/current-system/sw/lib/systemd/systemd")
        machine.succeed("test ! -e /run/current-system/sw/bin/policy-rc.d")
        t.assertEqual(machine.succeed("stat -L -c %a /run/wrappers/bin/sudo"), "4755\\\\n")
        t.assertIn("nobody", machine.succeed("/run/wrappers/bin/su -s /bin/sh -c id nobody"))
        machine.succeed("/run/wrappers/bin/ping -c 1 -W 5 127.0.0.1")
        machine.succeed("test -x /run/wrappers/bin/sudoedit -a -x /run/wrappers/bin/unix_chkpwd")
        # no name servers, as in NixOS test VMs (mmdebstrap copied the host's into the base image)
        machine.fail("grep nameserver /etc/resolv.conf")
        '''
        """,
    )
    result = run_vmrig("run", "--no-serial", path, tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_terminated_driver_says_so(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node

        nodes = {{"idle": {PLAIN_NODE}}}

        test_script = '''
        import signal
        os.kill(os.getpid(), signal.SIGTERM)
        '''
        """,
    )
    result = run_vmrig("run", path, tmpdir=vm_tmp)
    assert result.returncode == 128 + signal.SIGTERM
    assert "!!! the driver was stopped by SIGTERM while the test script ran" in result.stderr
    assert "sys.exit()" not in result.stderr


def test_a_shell_that_stopped_answering_is_not_asked_for_evidence(vm_tmp: Path) -> None:
    # The backdoor's output copier stopped: the command is never answered. The failure report
    # then asks that guest nothing more, where each question would wait as long again.
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node

        nodes = {{"machine": {PLAIN_NODE}}}

        test_script = '''
        machine.succeed("pkill -STOP -x vmrig-copy-out", timeout=2)
        '''
        """,
    )
    result = run_vmrig("run", path, tmpdir=vm_tmp, env={"VMRIG_TIMEOUT_FACTOR": "1"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert "no answer from the backdoor shell to `pkill -STOP -x vmrig-copy-out` within 62 s" in result.stderr
    assert "machine's backdoor shell stopped answering: its failed units and terminal are not saved" in result.stderr
    assert not (vm_tmp / "out" / "machine-tty.txt").exists()


def test_failing_script_shows_script_line_and_console(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node

        nodes = {{"server": {PLAIN_NODE}}}

        test_script = '''
        server.succeed("echo before-failure > /dev/ttyS0")
        server.execute("systemd-run --unit=doomed --wait false")
        with subtest("a subtest that fails"):
            server.succeed("echo this fails; exit 7")
        '''
        """,
    )
    result = run_vmrig("run", path, "--junit-xml", "junit.xml", tmpdir=vm_tmp)
    assert result.returncode == 1
    err = result.stderr
    assert f'!!!   File "{path}", line 9, in <module>' in err
    assert '!!!     server.succeed("echo this fails; exit 7")' in err
    assert "RequestedAssertionFailed: command `echo this fails; exit 7` failed (exit code 7)" in err
    assert "last console lines of server:" in err
    assert "server # before-failure" in err
    assert 'Test "a subtest that fails" failed with error' in err
    assert "!!! failed units on server: doomed.service" in err
    # the driver's own frames are not shown
    assert "vmrig/machine/" not in err and "vmrig/driver/" not in err
    assert "test FAILED" in err
    cases = {c.get("name"): c for c in ET.parse(vm_tmp / "junit.xml").getroot().iter("testcase")}
    failure = cases["a subtest that fails"].find("failure")
    assert failure is not None and failure.text is not None
    # the JUnit case shows the script's line and the console, not the driver's frames
    assert '    server.succeed("echo this fails; exit 7")' in failure.text
    assert "last console lines of server:" in failure.text and "vmrig/machine/" not in failure.text


def test_function_script_and_plain_assert(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node

        nodes = {{"node1": {PLAIN_NODE}}}


        def test_script():
            start_all()
            out = machine.succeed("echo 1")
            assert out == "2\\n", f"got {{out!r}}"
        """,
    )
    result = run_vmrig("run", path, tmpdir=vm_tmp)
    assert result.returncode == 1
    assert f'File "{path}", line 9, in test_script' in result.stderr, result.stderr[-4000:]
    assert "AssertionError: got '1\\n'" in result.stderr


@pytest.mark.parametrize(
    ("body", "expected", "line"),
    [
        ('nodes = {"a": Node(pakages=["curl"])}\ntest_script = "pass"\n', "did you mean 'packages'", 3),
        ('nodes = {"a": Node(packages="curl")}\ntest_script = "pass"\n', "expected a list of str", 3),
        (
            'nodes = {"a": Node()}\ntest_script = """\nstart_all()\nb.succeed("true")\n"""\n',
            "name 'b' is not defined",
            6,
        ),
        ('nodes = {"a": Node()}\ntest_script = """\nstart_all(\n"""\n', "", 5),
        ('nodes = {"a": Node()}\ntest_script = "a.wait_for_unti(\'x\')"\n', "did you mean 'wait_for_unit'", 4),
        (
            'nodes = {"a": Node(services={"x": Service(exec_strat="/bin/true")})}\ntest_script = "pass"\n',
            "did you mean 'exec_start'",
            3,
        ),
    ],
)
def test_bad_test_files_fail_before_booting(vm_tmp: Path, body: str, expected: str, line: int) -> None:
    path = write_test_file(vm_tmp, "from vmrig import Node, Service\n\n" + body)
    started = time.monotonic()
    result = run_vmrig("run", path, tmpdir=vm_tmp, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{path}:{line}:" in result.stderr
    assert expected in result.stderr
    assert "starting vm" not in result.stderr
    assert time.monotonic() - started < 30


def test_unknown_package_names_it(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"a": Node(packages=["curl", "vmrig-no-such-package"])}
        test_script = "start_all()"
        """,
    )
    result = run_vmrig("build", path, tmpdir=vm_tmp)
    # A mistake in the test file: its line, and the usage exit status.
    assert result.returncode == 2, result.stderr
    assert f"{path}:2: nodes['a']: Debian " in result.stderr
    assert "has no package 'vmrig-no-such-package'" in result.stderr
    # Nothing of this image was left in the cache, finished or not (other
    # tests' builds may have scratch directories there at the same time).
    cache = cache_dir(os.environ)
    store = ImageStore(cache)
    base = BaseImage(key_of(store.base_inputs("trixie", host_mirror())), cache / "unused")
    image = f"image-{key_of(store.image_inputs(base, Node(packages=['curl', 'vmrig-no-such-package'])))}"
    assert (cache / "tmp").is_dir()  # where the build's scratch directory was
    assert not (cache / image).exists()
    assert not list((cache / "tmp").glob(f"{image}.*"))


def test_cache_hit_runs_no_mmdebstrap(vm_tmp: Path) -> None:
    path = write_test_file(vm_tmp, f"from vmrig import Node\nnodes = {{'a': {PLAIN_NODE}}}\ntest_script = 'pass'\n")
    first = run_vmrig("build", path, tmpdir=vm_tmp)
    assert first.returncode == 0, first.stderr
    started = time.monotonic()
    second = run_vmrig("-v", "build", path, tmpdir=vm_tmp)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "mmdebstrap" not in second.stderr
    assert "building" not in second.stderr.replace("building node images", "")
    assert elapsed < 10


def test_build_interactive_builds_what_run_interactive_boots(vm_tmp: Path) -> None:
    # A build command unique to this run: the interactive image cannot be in the cache yet.
    token = uuid.uuid4().hex
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Interactive, Node
        nodes = {{"a": {PLAIN_NODE}}}
        interactive = Interactive(nodes={{"a": {{"build_commands": ["echo {token} > /etc/vmrig-token"]}}}})
        test_script = "pass"
        """,
    )
    plain = run_vmrig("build", path, tmpdir=vm_tmp)
    assert plain.returncode == 0, plain.stderr
    first = run_vmrig("build", "--interactive", path, tmpdir=vm_tmp)
    assert first.returncode == 0, first.stderr
    assert "building image" in first.stderr
    second = run_vmrig("build", "-I", path, tmpdir=vm_tmp)
    assert second.returncode == 0, second.stderr
    assert "building image" not in second.stderr


def slow_node_test(vm_tmp: Path, first: str, second: str) -> Path:
    """A test file whose one node, `slow`, runs the script lines `first` (file line 4) and `second` (line 5)."""
    return write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node
        nodes = {{"slow": {PLAIN_NODE}}}
        test_script = '''
        {first}
        {second}
        '''
        """,
    )


def test_global_timeout_stops_vms_and_keeps_logs(vm_tmp: Path) -> None:
    path = slow_node_test(
        vm_tmp,
        'slow.succeed("echo reached-the-guest > /dev/ttyS0")',
        'with subtest("sleeping"): slow.succeed("sleep 600")',
    )
    started = time.monotonic()
    result = run_vmrig("run", path, "--global-timeout", "60", "--junit-xml", "j.xml", tmpdir=vm_tmp)
    assert result.returncode == 1
    assert time.monotonic() - started < 200
    assert "global timeout of 60 seconds reached" in result.stderr
    assert "slow # reached-the-guest" in result.stderr
    # where the script was, and the machine's last console lines, in the failure report
    assert re.search(r'!!! the script was at:\n!!!   File ".*case.py", line 5, in <module>', result.stderr)
    assert '!!!     with subtest("sleeping"): slow.succeed("sleep 600")' in result.stderr
    assert "!!! last console lines of slow:" in result.stderr
    # the subtest the timeout ended says so (not just that QEMU died)
    sleeping = next(c for c in ET.parse(vm_tmp / "j.xml").getroot().iter("testcase") if c.get("name") == "sleeping")
    failure = sleeping.find("failure")
    assert failure is not None
    assert "QEMU was stopped because the global timeout of 60 seconds was reached" in failure.get("message", "")
    assert qemu_pids_for(str(vm_tmp)) == []


def test_global_timeout_covers_the_final_sync(vm_tmp: Path) -> None:
    # The script ends with its machine paused: the sync after it (as in NixOS's run_tests) must not hang the run.
    path = slow_node_test(vm_tmp, 'slow.succeed("true")', 'slow.send_monitor_command("stop")')
    started = time.monotonic()
    result = run_vmrig("run", "--no-serial", path, "--global-timeout", "30", tmpdir=vm_tmp)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "global timeout of 30 seconds reached" in result.stderr
    assert "slow is paused (QEMU's `stop`): its terminal is not saved" in result.stderr
    assert time.monotonic() - started < 150
    assert qemu_pids_for(str(vm_tmp)) == []


def test_global_timeout_saves_the_terminal_of_a_machine_between_commands(vm_tmp: Path) -> None:
    path = slow_node_test(vm_tmp, 'slow.succeed("echo on-the-terminal > /dev/tty1")', '__import__("time").sleep(600)')
    result = run_vmrig("run", "--no-serial", path, "--global-timeout", "40", "-o", "out", tmpdir=vm_tmp)
    assert result.returncode == 1
    assert "global timeout of 40 seconds reached" in result.stderr, result.stderr[-2000:]
    assert "saved for the failure: " in result.stderr, result.stderr[-2000:]
    assert "on-the-terminal" in (vm_tmp / "out" / "slow-tty.txt").read_text()
    assert qemu_pids_for(str(vm_tmp)) == []


def test_a_wait_ends_before_the_global_timeout_with_its_own_message(vm_tmp: Path) -> None:
    # NixOS's default 900 s, x5 under TCG, would outlast the run: the wait is cut to end first.
    path = slow_node_test(vm_tmp, 'slow.succeed("true")', 'slow.wait_until_succeeds("test -e /never")')
    started = time.monotonic()
    result = run_vmrig("run", "--no-serial", path, "--global-timeout", "60", tmpdir=vm_tmp)
    assert result.returncode == 1
    assert time.monotonic() - started < 150
    assert re.search(r"waiting for `test -e /never` to succeed", result.stderr), result.stderr[-2000:]
    assert "cut to" in result.stderr and "by the run's global timeout" in result.stderr
    assert "global timeout of 60 seconds reached" not in result.stderr
    assert qemu_pids_for(str(vm_tmp)) == []


def test_backdoor_that_never_comes_up(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"mute": Node(kernel_params=["systemd.mask=vmrig-backdoor.service"])}
        test_script = 'mute.succeed("true")'
        """,
    )
    result = run_vmrig("run", path, tmpdir=vm_tmp, env={"VMRIG_CONNECT_TIMEOUT": "40"})
    assert result.returncode == 1
    assert "mute: the backdoor shell did not come up within 40 s" in result.stderr
    assert "mute # " in result.stderr  # the console tail
    assert qemu_pids_for(str(vm_tmp)) == []


def test_shell_interact_runs_what_stdin_pipes_in(vm_tmp: Path) -> None:
    """Piped in, the shell runs every line (the last one without a newline too), then ends with stdin."""
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node
        nodes = {{"machine": {PLAIN_NODE}}}
        test_script = '''
        machine.shell_interact()
        machine.succeed("test -f /tmp/from-the-shell")
        '''
        """,
    )
    result = run_vmrig("run", path, tmpdir=vm_tmp, stdin="touch /tmp/from-the-shell\necho SHELL-$((6 * 7))")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHELL-42" in result.stdout, result.stdout[-3000:]
    assert "root shell ended (exit status 0)" in result.stderr


def test_qemu_dying_mid_command_is_reported_quickly(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        f"""
        import os, signal, threading
        from vmrig import Node
        nodes = {{"victim": {PLAIN_NODE}}}
        test_script = '''
        victim.succeed("true")
        threading.Timer(3, lambda: os.kill(victim.pid, signal.SIGKILL)).start()
        victim.succeed("sleep 300")
        '''
        """,
    )
    started = time.monotonic()
    result = run_vmrig("run", path, tmpdir=vm_tmp)
    assert result.returncode == 1
    assert "victim: QEMU exited" in result.stderr
    assert "sleep 300" in result.stderr
    assert time.monotonic() - started < 150


def test_no_qemu_survives_sigkill_of_the_driver(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node
        nodes = {{"left": {PLAIN_NODE}, "right": {PLAIN_NODE}}}
        test_script = '''
        start_all()
        left.succeed("touch /tmp/booted")
        # A start command whose wrapper runs QEMU as its own child, not exec'd.
        extra = create_machine("sh -c 'qemu-system-x86_64 \\\\"$@\\\\"; sleep 600' run-extra-vm")
        extra.succeed("true")
        left.succeed("sleep 600")
        '''
        """,
    )
    env = dict(os.environ, TMPDIR=str(vm_tmp), NO_COLOR="1")
    driver = subprocess.Popen([*VMRIG, "run", str(path)], stderr=subprocess.PIPE, text=True, env=env, cwd=vm_tmp)
    assert driver.stderr is not None
    deadline = time.monotonic() + 300
    for line in driver.stderr:
        if "must succeed: sleep 600" in line or time.monotonic() > deadline:
            break
    assert len(qemu_pids_for(str(vm_tmp))) >= 2  # both VMs and the vlan switch are up
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    while qemu_pids_for(str(vm_tmp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids_for(str(vm_tmp)) == []


def test_usage_errors_exit_2(vm_tmp: Path) -> None:
    result = subprocess.run([*VMRIG, "run"], capture_output=True, text=True)
    assert result.returncode == 2
    result = run_vmrig("run", vm_tmp / "missing.py", tmpdir=vm_tmp)
    assert result.returncode == 2
    assert "missing.py" in result.stderr
    help_text = subprocess.run([*VMRIG, "run", "--help"], capture_output=True, text=True).stdout
    for flag in ("--global-timeout", "--output-directory", "--junit-xml", "--keep-vm-state"):
        assert flag in help_text
    assert sys.executable


def test_bookworm_suite_with_build_commands_memory_and_cores(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        """
        from vmrig import Node, Options

        options = Options(suite="bookworm")
        nodes = {
            "old": Node(
                packages=["jq"],
                build_commands=["echo built-at-image-time > /etc/vmrig-built"],
                memory_size=768,
                cores=2,
                disk_size=3072,
            )
        }
        test_script = '''
        old.wait_for_unit("multi-user.target")
        assert old.succeed("cut -d. -f1 /etc/debian_version").strip() == "12"
        assert old.succeed("cat /etc/vmrig-built") == "built-at-image-time\\\\n"
        assert old.succeed("nproc").strip() == "2"
        mem_kib = int(old.succeed("awk '/MemTotal/ {print $2}' /proc/meminfo"))
        assert 600_000 < mem_kib < 786_432, mem_kib
        disk_kib = int(old.succeed("df --output=size -k / | tail -1"))
        assert 2_800_000 < disk_kib < 3_200_000, disk_kib
        assert old.succeed("echo '{\\\\"a\\\\": 1}' | jq .a").strip() == "1"
        '''
        """,
    )
    result = run_vmrig("run", "--no-serial", path, tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]


def test_x11_example_booted_without_a_snapshot(vm_tmp: Path) -> None:
    """wait_for_x returns once IceWM's session is up in a real boot too (a restore starts there)."""
    result = run_vmrig("run", "--no-snapshots", REPO / "examples" / "x11.py", tmpdir=vm_tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Finished vmrig-x11-ready.service" in result.stderr
