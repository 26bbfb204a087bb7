"""`vmrig run --interactive` on a pseudo-terminal, as a user types it.

One session (two machines, booted once) for the whole module: the prompt,
test_script() failing then passing, guest shells on the terminal and over
TCP, the serial console, the SSH backdoor, the interactive-only network and
configuration, and leaving the prompt.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.conftest import VMRIG, short_tmp, write_test_file

pytestmark = pytest.mark.vm

# Terminal control sequences (prompt_toolkit draws its prompt with many).
ESC = r"(?:\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r)*"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")
GUEST_PROMPT = r"root@node1:~# "

TEST_FILE = """
from vmrig import Interactive, Node

nodes = {"node1": Node(), "node2": Node()}

# Only when run interactively: the SSH backdoor, and a pager on node1.
interactive = Interactive(
    options={"ssh_backdoor": True},
    nodes={"node1": {"packages": ["less"]}},
)

test_script = '''
node1.succeed("test -e /tmp/ready")
'''
"""


def plain(text: str) -> str:
    return ANSI.sub("", text)


def session_env(tmpdir: Path) -> dict[str, str]:
    # No cursor position requests from prompt_toolkit: nobody answers them here.
    return dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")


def spawn_vmrig(tmpdir: Path, *args: str) -> pexpect.spawn:
    """vmrig on a 40x120 pseudo-terminal, in `tmpdir`."""
    return pexpect.spawn(
        VMRIG[0],
        [*VMRIG[1:], *args],
        env=session_env(tmpdir),
        cwd=str(tmpdir),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(40, 120),
        timeout=600,
    )


class Session:
    """The `vmrig run --interactive` process on a pseudo-terminal."""

    def __init__(self, child: pexpect.spawn, tmpdir: Path, log_path: Path) -> None:
        self.child = child
        self.tmpdir = tmpdir
        self.log_path = log_path
        self.count = 1
        self.startup = ""

    def wait_prompt(self, timeout: float = 600) -> str:
        """Waits for the next `In [N]:` prompt; returns what came before it, without escapes."""
        self.child.expect(rf"In \[{ESC}{self.count}{ESC}\]: ", timeout=timeout)
        return plain(self.child.before)

    def run(self, line: str, timeout: float = 600) -> str:
        """Types a line at the prompt and returns its output."""
        self.child.send(line + "\r")
        self.count += 1
        return self.wait_prompt(timeout)

    def leave(self) -> None:
        """Ctrl-D at the prompt, confirmed; waits for vmrig to exit."""
        self.child.send("\x04")
        self.child.expect("exit")  # ptpython asks "Do you really want to exit? ([y]/n)"
        self.child.send("y")
        self.child.expect(pexpect.EOF, timeout=120)

    def log_tail(self) -> str:
        return plain(self.log_path.read_text(errors="replace"))[-3000:]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    tmpdir = short_tmp(tmp_path_factory, "interactive")
    path = write_test_file(tmpdir, TEST_FILE)
    log_path = tmpdir / "session.log"
    child = spawn_vmrig(tmpdir, "run", "--interactive", "--no-serial", str(path))
    child.logfile_read = open(log_path, "w")  # noqa: SIM115 (closed below)
    session = Session(child, tmpdir, log_path)
    try:
        session.startup = session.wait_prompt(timeout=900)
        yield session
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.logfile_read.close()


def test_prompt_namespace_is_the_script_globals(session: Session) -> None:
    assert "SSH backdoor enabled" in session.startup  # the interactive options apply
    assert "IPython" in session.startup  # ptpython on IPython
    out = session.run("sorted(m.name for m in machines), callable(test_script), callable(subtest), node2")
    assert "(['node1', 'node2'], True, True, <Machine 'node2'>)" in out


def test_start_all_and_commands(session: Session) -> None:
    out = session.run('start_all(); node1.succeed("echo $((6 * 7))")')
    assert "'42\\n'" in out
    assert "'node2\\n'" in session.run('node2.succeed("hostname")')


def test_ctrl_c_stops_the_guest_command_and_keeps_every_machine(session: Session) -> None:
    before = re.findall(r"\[(\d+), (\d+)\]", session.run("[m.pid for m in machines]"))[-1]
    child = session.child
    child.send('node1.succeed("sleep 40; echo late")\r')
    session.count += 1
    child.expect("must succeed: sleep 40")
    time.sleep(2)  # the command is running in the guest
    started = time.monotonic()
    child.sendintr()
    out = session.wait_prompt(timeout=60)
    assert "KeyboardInterrupt" in out
    assert time.monotonic() - started < 20, "the interrupt waited for the command"
    assert "stopped (exit code 130)" in out
    # The channel is in step: the next command answers with its own output, not the late one.
    assert "'mine\\n'" in session.run('node1.succeed("echo mine")')
    assert "[True, True]" in session.run("[m.process.poll() is None and m.is_up() for m in machines]")
    assert re.findall(r"\[(\d+), (\d+)\]", session.run("[m.pid for m in machines]"))[-1] == before


def test_console_lines_come_above_the_line_being_typed(session: Session) -> None:
    session.run("serial_stdout_on()")
    session.run('node1.succeed("(sleep 4; echo late-console-line >/dev/ttyS0) >/dev/null 2>&1 &")')
    child = session.child
    child.send("node1.na")  # typed, not entered, when the console line comes
    child.expect("late-console-line", timeout=120)
    # The prompt is drawn again below the console line, with what was typed so far
    # (a line written into the prompt's would leave it broken until the next key).
    child.expect(rf"In \[{ESC}{session.count}{ESC}\]: ", timeout=30)
    child.expect(rf"node1{ESC}\.{ESC}na", timeout=30)  # highlighted token by token
    child.send("me\r")
    session.count += 1
    assert "'node1'" in session.wait_prompt(timeout=60)
    session.run("serial_stdout_off()")


def test_test_script_returns_to_the_prompt_when_it_fails_and_passes(session: Session) -> None:
    out = session.run("test_script()")
    assert "!!! RequestedAssertionFailed: command `test -e /tmp/ready` failed (exit code 1)" in out
    assert "False" in out.rsplit("Out[", 1)[-1]
    # the prompt and the machines are still there
    session.run('node1.succeed("touch /tmp/ready")')
    out = session.run("test_script()")
    assert "!!!" not in out
    assert "True" in out.rsplit("Out[", 1)[-1]


def test_interactive_config_and_outside_network(session: Session) -> None:
    assert "/usr/bin/less" in session.run('node1.succeed("command -v less")')
    assert "deb.debian.org" in session.run('node1.succeed("getent hosts deb.debian.org")')
    # printf repeats its format for each line of the request; the backslashes survive two parsers.
    request = (
        "exec 3<>/dev/tcp/deb.debian.org/80; "
        "printf '%s\\\\r\\\\n' 'HEAD /debian/ HTTP/1.1' 'Host: deb.debian.org' 'Connection: close' '' >&3; "
        "head -1 <&3"
    )
    out = session.run(f'node1.succeed("{request}", timeout=60)')
    assert re.search(r"'HTTP/1\.[01] \d\d\d ", out), out  # an answer from the mirror


def test_shell_interact_on_the_terminal(session: Session) -> None:
    child = session.child
    child.send("node1.shell_interact()\r")
    session.count += 1
    child.expect(GUEST_PROMPT, timeout=120)
    child.send("tty; echo TERM=$TERM; stty size\r")
    child.expect(r"/dev/pts/\d+")
    child.expect("TERM=xterm")
    child.expect("40 120")
    child.expect(GUEST_PROMPT)
    # Ctrl-C reaches the guest program, not the driver
    child.send("sleep 300\r")
    time.sleep(1)
    child.send("\x03")
    child.expect(GUEST_PROMPT, timeout=30)
    child.send("echo status=$?\r")
    child.expect("status=130")
    child.expect(GUEST_PROMPT)
    # job control
    child.send("sleep 301 &\r")
    child.expect(r"\[1\] \d+")
    child.expect(GUEST_PROMPT)
    child.send("jobs\r")
    child.expect(r"\[1\]\+ +Running +sleep 301")
    child.expect(GUEST_PROMPT)
    child.send("kill %1; wait\r")
    child.expect(GUEST_PROMPT)
    # a full-screen program on the pseudo-terminal
    child.send("less /etc/os-release\r")
    child.expect("PRETTY_NAME", timeout=30)
    child.send("q")
    child.expect(GUEST_PROMPT, timeout=30)
    # the guest follows the window size
    child.setwinsize(30, 100)
    time.sleep(2)
    child.send("stty size\r")
    child.expect("30 100", timeout=30)
    child.expect(GUEST_PROMPT)
    child.send("\x04")  # Ctrl-D ends the guest shell
    out = session.wait_prompt(timeout=60)
    assert "root shell ended" in out
    child.setwinsize(40, 120)
    assert "'still-up\\n'" in session.run('node1.succeed("echo still-up")')


def test_an_abandoned_guest_shell_does_not_block_the_next(session: Session) -> None:
    # A guest shell nobody reads (as after an interrupted host side) holds the port...
    session.run(
        'node1.succeed("setsid -f /usr/lib/vmrig/shell abandoned 24 80 dumb line </dev/null >/dev/null 2>&1; '
        'sleep 1; test -s /run/vmrig/shell.pid")'
    )
    # ...and its output waits in the host's socket: the next session skips both.
    child = session.child
    child.send("node1.shell_interact()\r")
    session.count += 1
    child.expect(GUEST_PROMPT, timeout=120)
    child.send("pgrep -c -f '^/bin/bash /usr/lib/vmrig/shell' ; echo done-counting\r")
    child.expect(r"(\d+)\s+done-counting")
    assert child.match.group(1) == "1"  # only this session's wrapper is left
    child.expect(GUEST_PROMPT)
    child.send("exit\r")
    out = session.wait_prompt(timeout=60)
    assert "abandoned" not in out
    assert "root shell ended" in out


def _listening(port: int) -> bool:
    hex_port = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in lines:
                fields = line.split()
                if hex_port in f"{fields[1]} " and fields[3] == "0A":
                    return True
    return False


def test_shell_interact_over_tcp_to_a_socat_listener(session: Session) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Debian's socat has no READLINE; `socat -` on a terminal is the line-based equivalent.
    listener = pexpect.spawn(
        "socat", ["-", f"tcp-listen:{port},reuseaddr,bind=127.0.0.1"], encoding="utf-8", timeout=120
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert time.monotonic() < deadline, "socat did not start listening"
            time.sleep(0.1)
        session.child.send(f'node1.shell_interact("tcp:127.0.0.1:{port}")\r')
        session.count += 1
        listener.expect(GUEST_PROMPT)
        listener.sendline("hostname; tty")
        listener.expect(r"/dev/pts/\d+")
        # the guest does not echo a line the listener's terminal already showed
        assert plain(listener.before).count("hostname; tty") == 1
        assert "node1" in plain(listener.before)
        listener.expect(GUEST_PROMPT)
        listener.sendeof()  # Ctrl-D on the listener's side ends the session
        listener.expect(pexpect.EOF)
    finally:
        listener.close(force=True)
    out = session.wait_prompt(timeout=60)
    assert f"root shell on tcp:127.0.0.1:{port}" in out
    assert "root shell ended" in out


def test_console_interact(session: Session) -> None:
    session.run(
        'node1.succeed("stty -F /dev/ttyS0 raw -echo; '
        '(head -c 6 /dev/ttyS0 > /tmp/typed; echo console-got-it > /dev/ttyS0) >/dev/null 2>&1 &")'
    )
    child = session.child
    child.send("node1.console_interact()\r")
    session.count += 1
    child.expect("typing on the serial console")
    time.sleep(1)
    child.sendline("typed")
    # console lines are shown although this session runs with --no-serial
    child.expect("node1 # console-got-it", timeout=60)
    child.sendeof()
    out = session.wait_prompt(timeout=60)
    assert "console session ended" in out
    assert "'typed\\n'" in session.run('node1.succeed("cat /tmp/typed")')


def test_ssh_backdoor(session: Session) -> None:
    session.run("node1.wait_for_open_port(22); node2.wait_for_open_port(22)")
    commands = dict(re.findall(r"^ +(node\d): (ssh .*)$", session.startup, re.MULTILINE))
    assert set(commands) == {"node1", "node2"}
    for name, command in commands.items():
        assert " -p " in command and command.endswith(" 127.0.0.1")  # no /dev/vhost-vsock here: loopback TCP
        result = subprocess.run(
            [*command.split(), "hostname; id -un"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{name}\nroot\n"
        # the newest NixOS driver's name for the same command (its index argument is not needed)
        assert command in session.run(f"print({name}.ssh_backdoor_command(1))").splitlines()

    config = Path(re.findall(r"ssh -F (\S+) node1", session.startup)[0])
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    result = subprocess.run(
        ["ssh", "-F", str(config), "node2", "cat /etc/hostname"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "node2\n"), result.stderr

    state_dir = session.tmpdir / "vm-state-node1"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert (state_dir / "ssh.json").exists()
    result = subprocess.run(
        [*VMRIG, "ssh", "node1", "--", "echo", "via vmrig ssh on $(hostname)"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=session_env(session.tmpdir),
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "via vmrig ssh on node1\n"), result.stderr


def test_ssh_into_a_created_machine(session: Session) -> None:
    output = session.run('extra = create_machine(Node(), name="extra"); extra.wait_for_open_port(22)')
    commands = dict(re.findall(r"^ +(extra|node1): (ssh .*)$", output, re.MULTILINE))
    assert set(commands) == {"extra", "node1"}, output  # the list is printed again, with the new machine
    result = subprocess.run(
        [*commands["extra"].split(), "hostname"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "extra\n"), result.stderr
    assert (session.tmpdir / "vm-state-extra" / "ssh.json").exists()


def test_leaving_the_prompt_stops_the_machines(session: Session) -> None:
    log = plain(session.log_path.read_text(errors="replace"))
    pids = [int(pid) for pid in re.findall(r"QEMU running \(pid (\d+)\)", log)]
    # node1, node2 and the created machine; a first boot that saved a snapshot restarted from it
    assert len(pids) >= 3
    child = session.child
    session.leave()
    child.close()
    assert child.exitstatus == 0, session.log_tail()
    for pid in pids:
        assert not _running(pid), f"QEMU {pid} outlived the session"
    assert not (session.tmpdir / "vm-state-node1" / "ssh.json").exists()
    result = subprocess.run(
        [*VMRIG, "ssh", "node1"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=session_env(session.tmpdir),
        timeout=60,
    )
    assert result.returncode == 2
    assert "no running vmrig session" in result.stderr
    assert (session.tmpdir / ".vmrig-history").exists()  # the prompt's history, in the working directory


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_no_interactive_config_runs_the_plain_configuration(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmpdir = short_tmp(tmp_path_factory, "plainconf")
    path = write_test_file(tmpdir, TEST_FILE)
    child = spawn_vmrig(tmpdir, "run", "-I", "--no-interactive-config", str(path))
    try:
        session = Session(child, tmpdir, tmpdir / "unused")
        startup = session.wait_prompt(timeout=900)
        assert "SSH backdoor" not in startup
        out = session.run('driver.spec.options.ssh_backdoor, driver.spec.nodes["node1"].packages, driver.interactive')
        assert "(False, [], True)" in out
        session.leave()
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
