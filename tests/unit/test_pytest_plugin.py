"""The pytest plugin without booting anything: collection, markers, options, names that keep workers apart."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vmrig.pytest import evidence, workers
from vmrig.testfile import declares_test

TEST_FILE = """
from vmrig import Node
nodes = {"machine": Node()}
test_script = '''
machine.succeed("true")
'''
"""

FIXTURE_MODULE = """
import pytest
from vmrig import Node
from vmrig.pytest import machines

vms = machines(machine=Node(), scope="module")

def test_uses_machines(vms):
    pass

def test_plain():
    pass

@pytest.mark.vmrig_requires("kvm")
def test_marked():
    pass
"""


def write(pytester: pytest.Pytester, name: str, body: str) -> None:
    path = pytester.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())


def test_test_files_are_collected_by_option_ini_or_name(pytester: pytest.Pytester) -> None:
    write(pytester, "scripts/web.py", TEST_FILE.replace("nodes =", "name = 'web'\nnodes ="))
    write(pytester, "scripts/other.py", TEST_FILE)
    write(pytester, "test_ordinary.py", "def test_nothing():\n    pass\n")

    by_option = pytester.runpytest("--collect-only", "-q", "--vmrig-files=scripts/*.py")
    by_option.stdout.fnmatch_lines(["scripts/other.py::other", "scripts/web.py::web", "test_ordinary.py::test_nothing"])

    pytester.makeini("[pytest]\nvmrig_files = scripts/web.py\n")
    by_ini = pytester.runpytest("--collect-only", "-q")
    by_ini.stdout.fnmatch_lines(["scripts/web.py::web", "test_ordinary.py::test_nothing"])
    assert "other" not in by_ini.stdout.str()

    by_name = pytester.runpytest("--collect-only", "-q", "scripts/other.py")
    by_name.stdout.fnmatch_lines(["scripts/other.py::other"])
    assert by_name.ret == 0


def test_a_file_without_nodes_matched_by_the_glob_is_a_collection_error(pytester: pytest.Pytester) -> None:
    write(pytester, "scripts/broken.py", "x = 1\ntest_script = 'machine.succeed(\"true\")'\n")
    result = pytester.runpytest("--collect-only", "--vmrig-files=scripts/*.py")
    result.stdout.fnmatch_lines(["*scripts/broken.py*nodes*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_a_script_mistake_is_reported_with_its_file_and_line_at_collection(pytester: pytest.Pytester) -> None:
    write(
        pytester,
        "typo.py",
        TEST_FILE.replace('machine.succeed("true")', 'machine.succeed("true")\nmachin.succeed("x")'),
    )
    result = pytester.runpytest("typo.py")
    result.stdout.fnmatch_lines(["*typo.py:5: name 'machin' is not defined; did you mean 'machine'?*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_markers_are_registered_and_set(pytester: pytest.Pytester) -> None:
    write(pytester, "test_fixture.py", FIXTURE_MODULE)
    write(pytester, "case.py", TEST_FILE)
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.vmrig:*", "@pytest.mark.vmrig_requires(*features):*"])
    # --strict-markers passes, and -m selects the tests that boot machines (test files included).
    selected = pytester.runpytest(
        "--strict-markers", "--collect-only", "-q", "-m", "vmrig", "test_fixture.py", "case.py"
    )
    selected.stdout.fnmatch_lines(["test_fixture.py::test_uses_machines", "case.py::case", "*2/4 tests collected*"])
    assert selected.ret == 0


def test_a_missing_feature_skips_the_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMRIG_ACCEL", "tcg")  # kvm counts as missing then
    write(pytester, "test_fixture.py", FIXTURE_MODULE)
    result = pytester.runpytest("-rs", "test_fixture.py::test_marked")
    result.stdout.fnmatch_lines(["*SKIPPED*vmrig: this host lacks kvm*"])
    write(pytester, "test_unknown.py", "import pytest\n@pytest.mark.vmrig_requires('gpu')\ndef test_x():\n    pass\n")
    unknown = pytester.runpytest("test_unknown.py")
    unknown.stderr.fnmatch_lines(["*test_unknown.py::test_x: vmrig_requires('gpu'): name one or more of kvm*"])
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_machines_declarations_fail_the_module_import(pytester: pytest.Pytester) -> None:
    header = "from vmrig import Node\nfrom vmrig.pytest import machines\n"
    write(pytester, "test_scope.py", header + "vms = machines(a=Node(), scope='forever')\n")
    write(pytester, "test_node.py", header + "vms = machines(a='debian')\n")
    write(pytester, "test_name.py", header + "vms = machines(**{'no space': Node()})\n")
    write(pytester, "test_restore.py", header + "vms = machines(a=Node(), restore='no')\n")
    write(pytester, "test_clash.py", header + "vms = machines(**{'web-1': Node(), 'web_1': Node()})\n")
    write(pytester, "test_own.py", header + "vms = machines(topology=Node())\n")
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines_random(
        [
            "*machines(scope='forever'): use one of function, class, module, package, session*",
            "*machines(a=...): expected a Node(...), got str*",
            "*no space*",
            "*machines(restore=...): expected True or False, got 'no'*",
            "*machines(): nodes 'web-1' and 'web_1' are both `web_1`*",
            "*machines(): node 'topology' would be `vms.topology`, which is not a machine*",
        ]
    )


def test_the_report_header_says_how_machines_are_reset(pytester: pytest.Pytester) -> None:
    write(pytester, "test_nothing.py", "def test_x():\n    pass\n")
    on = pytester.runpytest()
    on.stdout.fnmatch_lines(["vmrig: booted snapshots on: each test's machines start from their booted snapshot*"])
    off = pytester.runpytest("--vmrig-no-snapshots", "--vmrig-output=evidence")
    off.stdout.fnmatch_lines(
        ["vmrig: snapshots off*every test boots*", f"vmrig: failure evidence in {pytester.path}/evidence"]
    )


def test_test_files_split_into_stable_groups_with_pytest_split(pytester: pytest.Pytester) -> None:
    for index in range(4):
        write(pytester, f"scripts/case{index}.py", TEST_FILE)
    groups = []
    for group in ("1", "2"):
        result = pytester.runpytest(
            "--collect-only", "-q", "--vmrig-files=scripts/*.py", "--splits=2", f"--group={group}"
        )
        groups.append(sorted(line for line in result.stdout.lines if "::" in line))
    assert len(groups[0]) == len(groups[1]) == 2
    assert set(groups[0]).isdisjoint(groups[1])
    assert sorted(groups[0] + groups[1]) == [f"scripts/case{index}.py::case{index}" for index in range(4)]


def test_declares_test_reads_without_running(tmp_path: Path) -> None:
    path = tmp_path / "t.py"
    path.write_text("raise SystemExit('never run')\nnodes = {}\ndef test_script():\n    pass\n")
    assert declares_test(path)
    path.write_text("nodes = {}\n")
    assert not declares_test(path)
    path.write_text("def (:\n")
    assert not declares_test(path)


def test_vsock_ranges_of_processes_and_topologies_do_not_overlap() -> None:
    ranges = set()
    for pid in (1, 2, 4242, 2**21 - 1, 4_000_000):  # distinct modulo 2**21
        for number in range(workers.TOPOLOGIES_PER_PROCESS):
            start = workers.vsock_offset(pid, number)
            assert start >= 3 and start + workers.CIDS_PER_TOPOLOGY < 2**31
            ranges.add(start // workers.CIDS_PER_TOPOLOGY)
    assert len(ranges) == 5 * workers.TOPOLOGIES_PER_PROCESS


def test_worker_directories_are_private_and_distinct(tmp_path: Path) -> None:
    spaces = []
    for worker in ("gw0", "gw1"):
        space = workers.WorkerSpace(worker, tmp_path)
        directory, _offset = space.topology()
        assert space.root.name.startswith(f"vmrig-{worker}-")
        assert (space.root.stat().st_mode & 0o777) == 0o700 and (directory.stat().st_mode & 0o777) == 0o700
        spaces.append(space)
    assert spaces[0].root != spaces[1].root
    for space in spaces:
        root = space.root
        space.remove()
        assert not root.exists()


def test_evidence_directories_are_named_after_the_test() -> None:
    path = evidence.output_dir(Path("/out"), "tests/test_web.py::test_page[a b]")
    assert path.parent == Path("/out") and path.name.startswith("tests-test_web.py-test_page-a-b-")
    # Ids that differ only in punctuation get directories of their own; long ids are cut.
    assert path != evidence.output_dir(Path("/out"), "tests/test_web.py::test_page[a-b]")
    assert len(evidence.output_dir(Path("/out"), "t.py::test[" + "x" * 300 + "]").name) <= 120


def test_what_is_and_is_not_a_test_file(pytester: pytest.Pytester) -> None:
    # An ordinary module that happens to bind `nodes` (not a dict) and a test_script function.
    write(pytester, "test_graph.py", "nodes = ['a', 'b']\ndef test_script():\n    assert nodes\n")
    # A vmrig test file with a test module's name: the same item however pytest is called.
    write(pytester, "test_web.py", TEST_FILE.replace("nodes =", "name = 'web'\nnodes ="))
    by_dir = pytester.runpytest("--collect-only", "-q")
    by_dir.stdout.fnmatch_lines(["test_graph.py::test_script", "test_web.py::web"])
    by_name = pytester.runpytest("--collect-only", "-q", "test_web.py", "test_graph.py")
    by_name.stdout.fnmatch_lines(["test_web.py::web", "test_graph.py::test_script"])


def test_globs_skip_helpers_and_go_by_segments(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    write(pytester, "vm/case.py", TEST_FILE)
    write(pytester, "vm/conftest.py", "")
    write(pytester, "vm/__init__.py", "")
    write(pytester, "vm/helper.py", "def shared():\n    return 1\n")
    write(pytester, "vm/deeper/other.py", TEST_FILE)
    result = pytester.runpytest("--collect-only", "-q", "--vmrig-files=vm/*.py")
    result.stdout.fnmatch_lines(["vm/case.py::case", "*1 test collected*"])  # `*` stays within vm/
    deep = pytester.runpytest("--collect-only", "-q", "--vmrig-files=vm/**/*.py")
    deep.stdout.fnmatch_lines(["vm/case.py::case", "vm/deeper/other.py::other", "*2 tests collected*"])
    # The option's globs are relative to the directory pytest is started in.
    monkeypatch.chdir(pytester.path / "vm")
    inside = pytester.runpytest("--collect-only", "-q", f"--rootdir={pytester.path}", "--vmrig-files=case.py", ".")
    inside.stdout.fnmatch_lines(["*case.py::case*"])


def test_a_name_with_the_id_separator_can_be_selected(pytester: pytest.Pytester) -> None:
    write(pytester, "odd.py", TEST_FILE.replace("nodes =", "name = 'a::b'\nnodes ="))
    result = pytester.runpytest("--collect-only", "-q", "odd.py::a:b")
    result.stdout.fnmatch_lines(["odd.py::a:b"])
    assert result.ret == 0


def test_options_that_cannot_work_are_refused(pytester: pytest.Pytester) -> None:
    (pytester.path / "a-file").write_text("")
    write(pytester, "test_nothing.py", "def test_x():\n    pass\n")
    output = pytester.runpytest("--vmrig-output=a-file")
    output.stderr.fnmatch_lines(["*--vmrig-output a-file: not a directory*"])
    kept = pytester.runpytest("--vmrig-keep-failed", "-n", "1")
    kept.stderr.fnmatch_lines(["*--vmrig-keep-failed*run without xdist workers (-n 0)*"])
    assert output.ret == kept.ret == pytest.ExitCode.USAGE_ERROR


def test_a_syntax_error_in_a_named_test_file_has_its_line(pytester: pytest.Pytester) -> None:
    write(pytester, "broken.py", "from vmrig import Node\nnodes = {'machine': Node()\ntest_script = ''\n")
    result = pytester.runpytest("broken.py")
    result.stdout.fnmatch_lines(["*broken.py:2: syntax error*"])
