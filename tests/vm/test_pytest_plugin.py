"""The pytest plugin on real VMs: test files as items, machines() fixtures restored per test, failure
evidence, two xdist workers at once, --pdb at a running machine, kept machines, and no leaks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pexpect
import pytest

from tests.conftest import assert_none_left, processes_mentioning, short_tmp
from vmrig.runenv import cache_dir

pytestmark = pytest.mark.vm

# Read before pytester moves HOME, so that inner runs share the built images.
CACHE = cache_dir(os.environ)
PDB = r"\(Pdb\) "


@pytest.fixture
def inner(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Inner pytest runs: the shared image cache, and a TMPDIR of their own (to look for leftovers)."""
    tmpdir = short_tmp(tmp_path_factory, "inner")
    monkeypatch.setenv("VMRIG_CACHE_DIR", str(CACHE))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    return tmpdir


def write(pytester: pytest.Pytester, name: str, body: str) -> Path:
    path = pytester.path / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def assert_no_leftovers(tmpdir: Path) -> None:
    """No QEMU, vde_switch or virtiofsd still uses `tmpdir` (the inner pytest has it only in
    its environment, not on its command line)."""
    assert_none_left(str(tmpdir), seconds=15)


def spawn_pytest(pytester: pytest.Pytester, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=str(pytester.path),
        env=dict(os.environ),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(40, 200),
        timeout=600,
    )
    child.logfile_read = open(pytester.path / "pexpect.log", "w")  # noqa: SIM115 (closed with the test dir)
    return child


def test_test_files_run_as_items_with_their_subtests(pytester: pytest.Pytester, inner: Path) -> None:
    write(
        pytester,
        "greeting.py",
        '''
        from vmrig import Node
        nodes = {"machine": Node()}
        test_script = """
        with subtest("the shell answers"):
            machine.succeed("echo hello")
        """
        ''',
    )
    write(
        pytester,
        "broken.py",
        '''
        from vmrig import Node
        nodes = {"machine": Node()}
        test_script = """
        with subtest("fine"):
            machine.succeed("true")
        with subtest("breaks"):
            machine.succeed("echo about to fail; exit 3")
        """
        ''',
    )
    result = pytester.runpytest_subprocess("-v", "greeting.py", "broken.py", "--junitxml=report.xml")
    result.stdout.fnmatch_lines_random(
        [
            "greeting.py::greeting SUBPASSED*the shell answers*",
            "broken.py::broken SUBPASSED*fine*",
            "broken.py::broken SUBFAILED*breaks*",
            "*greeting.py::greeting PASSED*",
            "*broken.py::broken FAILED*",
        ]
    )
    # The failure reads as `vmrig run` prints it: the script's line, the error, the console.
    result.stdout.fnmatch_lines(
        [
            "*_ vmrig test broken _*",
            "Traceback (most recent call last):",
            '  File "*broken.py", line 7, in <module>',
            '    machine.succeed("echo about to fail; exit 3")',
            "RequestedAssertionFailed: command `echo about to fail; exit 3` failed (exit code 3)*",
        ]
    )
    assert "vmrig/machine/" not in result.stdout.str()  # no vmrig internals in the failure
    result.stdout.fnmatch_lines(
        ["*- vmrig machine: console (last 50 lines) -*", "*- vmrig machine: systemctl --failed -*"]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "report.xml").iter("testcase")}
    assert cases["greeting"].find("failure") is None
    failure = cases["broken"].find("failure")
    assert failure is not None and "exit code 3" in (failure.text or "")


MODULE = """
import json
import pytest
from pathlib import Path
from vmrig import Node
from vmrig.pytest import machines

vms = machines(machine=Node(), scope="module")
shared = machines(machine=Node(), restore=False)
SEEN = Path("seen.jsonl")

def record(vms, test):
    boot_id = vms.machine.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    marker = vms.machine.execute("test -e /root/marker")[0] == 0
    with SEEN.open("a") as seen:
        seen.write(json.dumps({"test": test, "boot_id": boot_id, "pid": vms.machine.pid, "marker": marker}) + "\\n")
    vms.machine.succeed("touch /root/marker")

def test_one(vms, shared):
    record(vms, "one")
    shared.machine.succeed("touch /root/kept")

@pytest.fixture(scope="module")
def site(shared):  # a module-scoped fixture may use a restore=False one of the same scope
    shared.machine.succeed("touch /root/site")
    return shared.machine.name

def test_two(vms, shared, site):
    record(vms, "two")
    shared.machine.succeed("test -e /root/kept")  # restore=False: one boot, its state shared
    assert site == "machine"

def test_three(vms):
    record(vms, "three")

def test_four_fails(vms):
    vms.machine.succeed("systemd-run --unit=broken-on-purpose false")
    vms.machine.wait_until_succeeds("systemctl is-failed broken-on-purpose.service")
    assert vms.machine.succeed("echo 41").strip() == "42"
"""


def test_each_test_starts_from_the_saved_boot_clean(pytester: pytest.Pytester, inner: Path) -> None:
    write(pytester, "test_shared.py", MODULE)
    result = pytester.runpytest_subprocess("-v", "--junitxml=report.xml", "--strict-markers")
    result.assert_outcomes(passed=3, failed=1)
    seen = [json.loads(line) for line in (pytester.path / "seen.jsonl").read_text().splitlines()]
    assert [entry["test"] for entry in seen] == ["one", "two", "three"]
    # Every test's machine is the same saved boot (one boot id), started anew: no test
    # sees what the one before it wrote.
    assert len({entry["boot_id"] for entry in seen}) == 1
    assert len({entry["pid"] for entry in seen}) == 3
    assert [entry["marker"] for entry in seen] == [False, False, False]

    # The failing test's report: pytest's assertion rewriting, then each section of evidence.
    result.stdout.fnmatch_lines(["*assert '41' == '42'*"])
    result.stdout.fnmatch_lines(
        [
            "*- vmrig machine: console (last 50 lines) -*",
            "*- vmrig machine: systemctl --failed -*",
            "*broken-on-purpose.service*failed*",
            "*- vmrig machine: journalctl -b (last 80 lines) -*",
        ]
    )
    (evidence,) = (pytester.path / "vmrig-output").glob("test_shared.py-test_four_fails-*")
    assert "broken-on-purpose.service" in (evidence / "machine-failed-units.txt").read_text()
    assert (evidence / "machine-console.txt").read_text().strip()
    assert "broken-on-purpose" in (evidence / "machine-journal.txt").read_text()
    assert (evidence / "machine-tty.txt").exists()
    # JUnit XML carries the sections as properties of the failed case.
    case = next(
        c for c in ET.parse(pytester.path / "report.xml").iter("testcase") if c.get("name") == "test_four_fails"
    )
    properties = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
    assert "broken-on-purpose.service" in properties["vmrig machine: systemctl --failed"]
    assert properties["vmrig evidence"] == str(evidence)


def test_two_xdist_workers_boot_same_named_machines_at_once(pytester: pytest.Pytester, inner: Path) -> None:
    body = """
    import json, time
    from pathlib import Path
    from vmrig import Node
    from vmrig.pytest import machines

    vms = machines(machine=Node(), scope="function")

    def test_boot(vms, worker_id):
        started = time.time()
        vms.machine.succeed("sleep 4")
        Path(f"{worker_id}.json").write_text(json.dumps({
            "dir": str(vms.driver.tmp_dir), "pid": vms.machine.pid,
            "started": started, "ended": time.time(),
        }))
    """
    write(pytester, "test_a.py", body)
    write(pytester, "test_b.py", body)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=2)
    runs = [json.loads((pytester.path / f"gw{index}.json").read_text()) for index in (0, 1)]
    assert runs[0]["dir"] != runs[1]["dir"] and runs[0]["pid"] != runs[1]["pid"]
    assert Path(runs[0]["dir"]).parent != Path(runs[1]["dir"]).parent  # a directory per worker
    # Both machines ran their command at the same time.
    assert runs[0]["started"] < runs[1]["ended"] and runs[1]["started"] < runs[0]["ended"]
    assert_no_leftovers(inner)


FAILING = """
from vmrig import Node
from vmrig.pytest import machines

vms = machines(machine=Node(){extra})

def test_breaks(vms):
    vms.machine.succeed("echo ready > /root/state")
    {body}
"""


def test_pdb_stops_with_the_machine_running(pytester: pytest.Pytester, inner: Path) -> None:
    write(pytester, "test_pdb.py", FAILING.format(extra="", body='vms.machine.succeed("false")'))
    child = spawn_pytest(pytester, "--pdb", "test_pdb.py")
    child.expect(PDB, timeout=600)
    before = child.before
    assert "vmrig: " in before and "running machine" in before
    assert "vms.machine.shell_interact()" in before and "--vmrig-ssh" in before
    child.sendline('vms.machine.succeed("cat /root/state; echo $((6 * 7))")')
    child.expect(r"ready\\n42", timeout=120)
    child.expect(PDB)
    child.sendline("c")
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus == 1
    assert_no_leftovers(inner)


def test_keep_failed_keeps_the_machines_until_enter(pytester: pytest.Pytester, inner: Path) -> None:
    write(pytester, "test_keep.py", FAILING.format(extra="", body='vms.machine.succeed("false")'))
    child = spawn_pytest(pytester, "--vmrig-keep-failed", "test_keep.py")
    child.expect("press Enter", timeout=900)
    output = child.before
    assert "1 failed" in output  # the session's summary comes first
    command = re.search(r"from another terminal: (TMPDIR=\S+) vmrig ssh machine", output)
    assert command is not None, output
    tmp_dir = command.group(1).removeprefix("TMPDIR=")
    login = subprocess.run(
        [sys.executable, "-m", "vmrig.cli", "ssh", "machine", "--", "cat /root/state"],
        env={**os.environ, "TMPDIR": tmp_dir},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert login.stdout.strip() == "ready", login.stderr
    child.sendline("")
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert_no_leftovers(inner)


def test_pytest_timeout_thread_method_leaves_nothing(pytester: pytest.Pytester, inner: Path) -> None:
    # The thread method ends pytest with os._exit: no teardown runs, the parent-death signal does the work.
    write(pytester, "test_hang.py", FAILING.format(extra="", body='vms.machine.succeed("sleep 600")'))
    write(pytester, "pytest.ini", "[pytest]\ntimeout_func_only = true\n")
    result = pytester.runpytest_subprocess("--timeout=10", "--timeout-method=thread", "test_hang.py")
    result.stdout.fnmatch_lines(["*+ Timeout +*"])
    assert result.ret != 0
    assert_no_leftovers(inner)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_an_interrupted_or_killed_run_leaves_nothing(pytester: pytest.Pytester, inner: Path, how: int) -> None:
    write(
        pytester,
        "test_wait.py",
        FAILING.format(extra="", body='print("sleeping now", flush=True)\n    vms.machine.succeed("sleep 600")'),
    )
    child = spawn_pytest(pytester, "-s", "test_wait.py")
    child.expect("sleeping now", timeout=900)
    assert processes_mentioning(str(inner))  # the machine and its switch are up
    os.kill(child.pid, how)
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert_no_leftovers(inner)
