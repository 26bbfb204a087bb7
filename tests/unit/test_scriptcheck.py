"""Checking test scripts before anything boots: syntax, undefined names, machine methods."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from vmrig.errors import TestFileError
from vmrig.machine import Machine
from vmrig.scriptcheck import check_script
from vmrig.scriptnames import DRIVER_SYMBOLS, method_keywords
from vmrig.testfile import load_test_file

DRIVER_NAMES = [*DRIVER_SYMBOLS, "vlan1"]
MACHINE_METHODS = [
    "name",
    "start",
    "shutdown",
    "crash",
    "succeed",
    "fail",
    "execute",
    "wait_for_unit",
    "wait_until_succeeds",
    "wait_until_fails",
    "wait_for_open_port",
    "wait_for_closed_port",
    "wait_for_file",
    "wait_for_console_text",
    "get_unit_info",
    "systemctl",
    "send_chars",
    "send_key",
    "screenshot",
    "copy_from_host",
    "copy_from_vm",
    "shell_interact",
    "sleep",
    "block",
    "unblock",
    "require_unit_state",
    "nested",
    "log",
]
MACHINES = ["node1", "node2"]
KEYWORDS = method_keywords(Machine)

FILE = "/tests/example.py"


def check(script: str | Callable[..., object], *, first_line: int = 1, machines: list[str] = MACHINES) -> None:
    check_script(
        script,
        filename=FILE,
        first_line=first_line,
        known_names=[*DRIVER_NAMES, *machines],
        machine_names=machines,
        machine_methods=MACHINE_METHODS,
        method_keywords=KEYWORDS,
    )


def check_error(script: str, *, first_line: int = 1) -> TestFileError:
    with pytest.raises(TestFileError) as caught:
        check(textwrap.dedent(script), first_line=first_line)
    assert caught.value.path == FILE
    return caught.value


NIXOS_STYLE = """
import json
import re as regex
from shlex import quote
from typing import Any

start_all()

with subtest("services come up"):
    for machine_ in [node1, node2]:
        machine_.wait_for_unit("multi-user.target")
    node1.wait_for_open_port(8000)

with subtest("content is served"):
    output = node2.succeed("curl -sf http://node1:8000/")
    assert "Hello" in output, f"'{output}' does not contain 'Hello' ({len(output)} bytes)"
    t.assertIn("Hello", output)

ports = [port for port in range(8000, 8003)]
by_name = {m.name: m for m in machines}
pairs = {(a, b) for a in ports for b in ports if a < b}
total = sum(x * 2 for x in ports)
check = lambda text, needle="x": needle in text
sorted(machines, key=lambda m: m.name)

def wait_all(*targets, timeout=10, **kwargs):
    def inner(unit):
        nonlocal timeout
        for target in targets:
            target.wait_for_unit(unit, timeout=timeout)
    return inner

class Helper:
    greeting = "hi"
    doubled = [c * 2 for c in greeting]

    def __init__(self, value: Any) -> None:
        self.value = value
        super().__init__()

    def describe(self):
        return f"{self.value!r:>10} {__class__.__name__}"

counter = 0
def bump():
    global counter
    counter += 1

if (status := node1.execute("true")[0]) == 0:
    log.info(f"status {status}")

try:
    node1.succeed("false")
except Exception as error:
    print(type(error).__name__, error)
finally:
    pass

try:
    optional_thing
except NameError:
    optional_thing = None

data = json.loads(node1.succeed("echo '{}'"))
match data:
    case {"a": [first, *rest], **others}:
        print(first, rest, others)
    case str() as text:
        print(text)
    case _:
        pass

temp = 1
del temp
del never_defined_but_deleted
print(__name__, __file__, __doc__, regex.escape("."), quote("a b"))
node1.shutdown()
retry(lambda last_try: True)
node1.name
vlan1
"""


def test_nixos_style_script_passes() -> None:
    check(NIXOS_STYLE)


def test_single_machine_alias_and_indented_script() -> None:
    script = """
        machine.wait_for_unit("default.target")
        machine.succeed("true")
    """
    check(script, machines=["machine", "server"])


def test_empty_script_passes() -> None:
    check("")
    check("\n\n")


# -- syntax errors ----------------------------------------------------------------------


def test_syntax_error_line_is_the_test_file_line() -> None:
    error = check_error(
        """
        start_all()
        node1.succeed("true"
        node2.succeed("true")
        """,
        first_line=20,
    )
    assert error.message.startswith("syntax error in test script: ")
    # Line 3 of the script holds the unclosed '('; CPython may blame line 3 or 4.
    assert error.line in (22, 23)


def test_syntax_error_exact_line() -> None:
    error = check_error("start_all()\nx = = 1\n", first_line=12)
    assert error.message == "syntax error in test script: invalid syntax"
    assert error.line == 13
    assert str(error) == f"{FILE}:13: syntax error in test script: invalid syntax"


def test_indentation_error() -> None:
    error = check_error("start_all()\nif True:\nnode1.succeed('x')\n", first_line=5)
    assert error.message.startswith("syntax error in test script: expected an indented block")
    assert error.line == 7


# -- undefined names ------------------------------------------------------------------------


def test_undefined_name_with_suggestion() -> None:
    error = check_error(
        """\
        start_all()
        nod1.succeed("true")
        """,
        first_line=10,
    )
    assert error.message == "name 'nod1' is not defined; did you mean 'node1'? machines are: node1, node2"
    assert error.line == 11
    assert str(error) == f"{FILE}:11: {error.message}"


def test_undefined_name_without_suggestion() -> None:
    error = check_error("start_all()\n\nzzzz.succeed('x')\n", first_line=3)
    assert error.message == "name 'zzzz' is not defined; machines are: node1, node2"
    assert error.line == 5


def test_misspelt_driver_global() -> None:
    error = check_error("start_al()\n")
    assert error.message == "name 'start_al' is not defined; did you mean 'start_all'? machines are: node1, node2"
    assert error.line == 1


def test_undefined_name_inside_function_and_fstring() -> None:
    error = check_error(
        """\
        def helper():
            return 1

        def later():
            log.info(f"value {helper()} {missing_value}")
        """,
        first_line=100,
    )
    assert error.message.startswith("name 'missing_value' is not defined")
    assert error.line == 104


def test_name_used_before_its_definition_is_not_reported() -> None:
    # Defined somewhere in the script: too subtle to judge statically, so left alone.
    check("print(later)\nlater = 1\n")


def test_star_import_turns_off_the_name_check() -> None:
    check("from os.path import *\nprint(join('a', 'b'), whatever)\n")


def test_every_error_in_source_order_the_first_as_the_errors_line() -> None:
    error = check_error(
        """\
        start_all()
        undefined_thing()
        node1.wait_for_unti("x")
        """
    )
    assert error.line == 2
    assert error.message.splitlines() == [
        "name 'undefined_thing' is not defined; machines are: node1, node2",
        f"{FILE}:3: node1 has no method 'wait_for_unti'; did you mean 'wait_for_unit'?",
    ]


def test_first_error_on_one_line_is_the_leftmost() -> None:
    error = check_error("first_missing(node1.no_such_method())\n")
    assert error.message.startswith("name 'first_missing' is not defined")


# -- machine methods ---------------------------------------------------------------------------


def test_misspelt_machine_method() -> None:
    error = check_error(
        """\
        start_all()
        for unit in ["a", "b"]:
            node2.wait_for_unti(unit)
        """,
        first_line=30,
    )
    assert error.message == "node2 has no method 'wait_for_unti'; did you mean 'wait_for_unit'?"
    assert error.line == 32


def test_unknown_machine_attribute_without_suggestion() -> None:
    error = check_error("x = node1.qqqqq\n", first_line=7)
    assert error.message == "node1 has no attribute 'qqqqq'"
    assert error.line == 7


def test_reassigned_machine_variable_is_not_checked() -> None:
    check("node1 = {'a': 1}\nnode1.items()\n")
    check("for node1 in machines:\n    node1.anything()\n")


def test_attribute_assignment_on_a_machine_is_allowed() -> None:
    check("node1.custom_flag = True\n")


def test_machine_names_count_as_known_even_if_not_in_known_names() -> None:
    check_script(
        "node1.succeed('x')\n",
        filename=FILE,
        first_line=1,
        known_names=[],
        machine_names=["node1"],
        machine_methods=["succeed"],
    )


# -- function scripts ------------------------------------------------------------------------------


def load_function(tmp_path: Path, body: str) -> tuple[Callable[..., object], str, int]:
    path = tmp_path / "case.py"
    path.write_text(textwrap.dedent(body))
    spec = load_test_file(path)
    assert callable(spec.script)
    return spec.script, spec.script_path, spec.script_first_line


def test_function_script_passes(tmp_path: Path) -> None:
    script, path, first_line = load_function(
        tmp_path,
        """\
        import json
        from vmrig import Node

        nodes = {"node1": Node(), "node2": Node()}
        EXPECTED = "hello"

        def helper(machine):
            return machine.succeed("echo hello")

        def test_script():
            start_all()
            assert helper(node1).strip() == EXPECTED
            json.dumps([m.name for m in machines])
        """,
    )
    check_script(
        script,
        filename=path,
        first_line=first_line,
        known_names=[*DRIVER_NAMES, *MACHINES],
        machine_names=MACHINES,
        machine_methods=MACHINE_METHODS,
    )


def test_function_script_undefined_name_has_the_file_line(tmp_path: Path) -> None:
    script, path, first_line = load_function(
        tmp_path,
        """\
        from vmrig import Node

        nodes = {"node1": Node(), "node2": Node()}


        def test_script():
            start_all()
            nod2.succeed("true")
        """,
    )
    with pytest.raises(TestFileError) as caught:
        check_script(
            script,
            filename=path,
            first_line=first_line,
            known_names=[*DRIVER_NAMES, *MACHINES],
            machine_names=MACHINES,
            machine_methods=MACHINE_METHODS,
        )
    assert caught.value.message == "name 'nod2' is not defined; did you mean 'node2'? machines are: node1, node2"
    assert caught.value.path == path
    assert caught.value.line == 8


def test_decorated_function_script_method_typo(tmp_path: Path) -> None:
    script, path, first_line = load_function(
        tmp_path,
        """\
        from vmrig import Node

        node1 = Node()
        nodes = {"node1": node1}
        mark = lambda function: function

        @mark
        def test_script():
            node1.wait_until_succeds("true")
        """,
    )
    with pytest.raises(TestFileError) as caught:
        check_script(
            script,
            filename=path,
            first_line=first_line,
            known_names=[*DRIVER_NAMES, "node1"],
            machine_names=["node1"],
            machine_methods=MACHINE_METHODS,
        )
    # The module's own `node1` (a Node) is replaced by the machine at run time.
    assert caught.value.message == "node1 has no method 'wait_until_succeds'; did you mean 'wait_until_succeeds'?"
    assert caught.value.line == 9


def test_function_without_source_is_skipped() -> None:
    namespace: dict[str, object] = {}
    exec("def test_script():\n    nod1.succeed('x')\n", namespace)
    check(namespace["test_script"])  # type: ignore[arg-type]


def test_closure_variables_are_known() -> None:
    def make() -> Callable[[], None]:
        captured = 5

        def test_script() -> None:
            print(captured)

        return test_script

    check(make())


def test_a_misspelt_keyword_of_a_machine_method_is_found_before_the_boot() -> None:
    error = check_error(
        """
        node1.wait_for_unit("sshd", timeout=30)
        node1.wait_for_open_port(22,
                                 timout=30)
        """
    )
    assert error.line == 3
    assert "node1.wait_for_open_port() has no argument 'timout'; did you mean 'timeout'?" in str(error)


def test_nixos_keywords_of_machine_methods_pass() -> None:
    check(
        """
        node1.execute("true", check_return=False, check_output=False, timeout=None)
        node1.wait_for_unit(unit="default.target", user="alice", timeout=60)
        node1.copy_from_vm(source="/etc/hostname", target_dir="out")
        node1.send_key("ctrl-alt-delete", delay=0.1, log=False)
        node1.start(allow_reboot=True)
        with node1.nested("a block", attrs={"k": "v"}):
            node1.log(msg="inside")
        opts = {"timeout": 5}
        node1.wait_for_file("/tmp/x", **opts)
        """
    )


def test_keywords_are_not_checked_on_a_rebound_name_or_an_unknown_method() -> None:
    check(
        """
        node2 = object()
        node2.wait_for_unit("x", timout=1)
        """
    )
