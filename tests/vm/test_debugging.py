"""Debugging a non-interactive run: breakpoint() with and without a terminal, stopping at a
failure, the global timeout paused at a prompt, port forwarding, QEMU_OPTS, kept VM state."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pexpect
import pytest

from tests.conftest import VMRIG, run_vmrig, write_test_file

pytestmark = pytest.mark.vm

PDB = r"\(Pdb\) "
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\r")


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        sockets.append(probe)
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        body: bytes = response.read()
        return body.decode()


def test_breakpoint_on_a_terminal_then_stop_at_the_failure(vm_tmp: Path) -> None:
    """pdb on the terminal: the script's locals, commands on the VM, forwarded ports, a
    paused global timeout; then --debug-on-failure stops at the failing line, where a
    guest shell opens."""
    env_port, node_port, runtime_port = free_ports(3)
    timeout = 25  # shorter than the time this test sits at the prompts
    path = write_test_file(
        vm_tmp,
        f"""
        from vmrig import Node, Service

        nodes = {{
            "node1": Node(
                packages=["python3"],
                forward_ports=[({node_port}, 8000)],
                services={{"web": Service(exec_start="/usr/bin/python3 -m http.server 8000 --directory /etc")}},
            ),
        }}

        test_script = '''
        output = "the script's own value"
        breakpoint()
        node1.fail("getent hosts deb.debian.org")  # no outside network in a normal run
        result = node1.succeed("echo from-the-guest")
        node1.succeed("echo about to fail; exit 3")
        node1.succeed("echo never reached")
        '''
        """,
    )
    env = dict(
        os.environ,
        TMPDIR=str(vm_tmp),
        NO_COLOR="1",
        TERM="xterm",
        QEMU_NET_OPTS=f"hostfwd=tcp:127.0.0.1:{env_port}-:8000",
        QEMU_OPTS="-smbios type=1,serial=vmrig-qemu-opts",
    )
    child = pexpect.spawn(
        VMRIG[0],
        [*VMRIG[1:], "run", "--no-serial", "--debug-on-failure", "--global-timeout", str(timeout), str(path)],
        env=env,
        cwd=str(vm_tmp),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(40, 120),
        timeout=600,
    )
    child.logfile_read = open(vm_tmp / "run.log", "w")  # noqa: SIM115 (closed below)
    try:
        child.expect(PDB, timeout=900)
        assert "breakpoint() reached at" in child.before
        assert "-> node1.fail(" in child.before  # stopped in the script, at the next line
        child.sendline("p output")
        child.expect("the script's own value")
        child.expect(PDB)
        # Commands on the machine from the prompt (this boots it; prompt time does not count).
        child.sendline('node1.execute("systemctl is-system-running --wait")')
        child.expect(PDB, timeout=600)
        assert re.search(r"\(\d, '(running|degraded)\\n'\)", child.before), child.before
        child.sendline("node1.wait_for_open_port(8000)")
        child.expect(PDB, timeout=300)
        child.sendline('node1.succeed("cat /sys/class/dmi/id/product_serial")')  # QEMU_OPTS reached QEMU
        child.expect("vmrig-qemu-opts")
        child.expect(PDB)
        # Host ports forwarded three ways: QEMU_NET_OPTS, Node.forward_ports, forward_port().
        assert http_get(env_port, "/hostname") == "node1\n"
        assert http_get(node_port, "/hostname") == "node1\n"
        child.sendline(f"node1.forward_port({runtime_port}, 8000)")
        child.expect(PDB)
        assert http_get(runtime_port, "/hostname") == "node1\n"
        # Sit at the prompt longer than the whole global timeout: it is paused here.
        time.sleep(timeout + 10)
        child.sendline("c")

        child.expect(PDB, timeout=300)
        text = ANSI.sub("", child.before)
        assert "timeout reached" not in text
        assert "!!! RequestedAssertionFailed: command `echo about to fail; exit 3` failed (exit code 3)" in text
        assert "stopped there with every machine still running" in text
        assert '-> node1.succeed("echo about to fail; exit 3")' in text  # the failing script line
        child.sendline("p result")
        child.expect("from-the-guest")
        child.expect(PDB)
        child.sendline("node1.shell_interact()")
        child.expect("root@node1:~# ", timeout=120)
        child.send("cat /etc/hostname\r")
        child.expect("node1")
        child.expect("root@node1:~# ")
        child.send("\x04")
        child.expect("root shell ended")
        child.expect(PDB)
        child.sendline("c")
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    assert child.exitstatus == 1
    text = ANSI.sub("", (vm_tmp / "run.log").read_text(errors="replace"))
    assert "never reached" not in text.split("stopped there")[-1]
    assert "test FAILED" in text


def test_breakpoint_without_a_terminal_listens_on_loopback(vm_tmp: Path) -> None:
    path = write_test_file(
        vm_tmp,
        """
        from vmrig import Node

        nodes = {"node1": Node()}

        test_script = '''
        start_all()
        output = node1.succeed("echo from-the-guest")
        breakpoint()
        node1.succeed("echo after-the-breakpoint")
        '''
        """,
    )
    env = dict(os.environ, TMPDIR=str(vm_tmp), NO_COLOR="1")
    child = subprocess.Popen(
        [*VMRIG, "run", "--no-serial", str(path)],
        env=env,
        cwd=vm_tmp,
        stdin=subprocess.DEVNULL,  # CI: no terminal
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + 900
        for line in child.stdout:
            lines.append(line)
            match = re.search(r"attach with: socat READLINE tcp:127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
            assert time.monotonic() < deadline
        assert port is not None, "".join(lines)
        assert any("listens on 127.0.0.1:" in line for line in lines)
        with socket.create_connection(("127.0.0.1", port), timeout=120) as client:
            assert '-> node1.succeed("echo after-the-breakpoint")' in _read_until(client, "(Pdb) ")
            client.sendall(b"p output\n")
            assert "'from-the-guest\\n'" in _read_until(client, "(Pdb) ")
            client.sendall(b'node1.execute("hostname")\n')
            assert "(0, 'node1\\n')" in _read_until(client, "(Pdb) ")
            client.sendall(b"c\n")
            assert _read_until(client, "never") == ""  # the debugger hangs up and the run goes on
        rest, _ = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, "".join(lines) + rest
    assert "after-the-breakpoint" in rest
    assert "test passed" in rest


def _read_until(client: socket.socket, marker: str) -> str:
    data = b""
    while not data.endswith(marker.encode()):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").replace("\r", "")


def test_kept_state_holds_what_the_guest_wrote_without_a_flush(vm_tmp: Path) -> None:
    # O_DIRECT writes to an empty disk reach QEMU but no flush follows (no file system,
    # so the run's final `sync` sends none): QEMU's exit at the end of the run writes them out.
    test = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"keeper": Node(empty_disks=[16])}
        test_script = '''
        if keeper.succeed("head -c 4 /dev/vdb") != "KEPT":
            keeper.succeed("printf KEPT | dd of=/dev/vdb oflag=direct conv=sync status=none")
            print("written")
        else:
            print("found")
        '''
        """,
    )
    first = run_vmrig("run", "-K", "--no-serial", test, tmpdir=vm_tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "written" in first.stdout
    second = run_vmrig("run", "-K", "--no-serial", test, tmpdir=vm_tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "found" in second.stdout, second.stdout


def test_keep_vm_state_between_runs(vm_tmp: Path) -> None:
    write = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"keeper": Node()}
        test_script = 'keeper.succeed("echo written-in-run-1 > /root/kept")'
        """,
        name="write.py",
    )
    read = write_test_file(
        vm_tmp,
        """
        from vmrig import Node
        nodes = {"keeper": Node()}
        test_script = '''
        assert keeper.succeed("cat /root/kept") == "written-in-run-1\\\\n"
        '''
        """,
        name="read.py",
    )
    first = run_vmrig("run", "-K", write, tmpdir=vm_tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    state = vm_tmp / "vm-state-keeper"
    assert (state / "keeper.qcow2").exists()

    second = run_vmrig("run", "--keep-vm-state", read, tmpdir=vm_tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "deleting VM state directory" not in second.stderr

    # Without the flag the state is reset, and the log says how to keep it.
    untouched = write_test_file(
        vm_tmp, 'from vmrig import Node\nnodes = {"keeper": Node()}\ntest_script = "pass"\n', name="reset.py"
    )
    third = run_vmrig("run", untouched, tmpdir=vm_tmp)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Machine state will be reset. To keep it, pass --keep-vm-state" in third.stderr
    assert f"deleting VM state directory {state}" in third.stderr
    assert not (state / "keeper.qcow2").exists()
