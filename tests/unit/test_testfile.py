"""Loading test files: what they declare, and where their mistakes are."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from vmrig.errors import TestFileError
from vmrig.spec import Node, Options, SpecError
from vmrig.testfile import TestSpec, load_test_file, string_line

HELLO = '''\
from vmrig import Node, Service

nodes = {
    "node1": Node(
        packages=["python3", "curl"],
        files={"/srv/www/index.html": "Hello world\\n"},
        services={"hello-world-server": Service(
            exec_start="/usr/bin/python3 -m http.server 8000 --directory /srv/www")},
    ),
}

test_script = """
start_all()
node1.wait_for_unit("hello-world-server")
"""
'''


def write(tmp_path: Path, text: str, name: str = "case.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path, **kwargs: bool) -> TestFileError:
    with pytest.raises(TestFileError) as caught:
        load_test_file(path, **kwargs)
    assert caught.value.path == str(path)
    return caught.value


# -- valid files -------------------------------------------------------------------


def test_hello_world(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO, "hello-world-server.py")
    spec = load_test_file(path)
    assert isinstance(spec, TestSpec)
    assert spec.name == "hello-world-server"
    assert spec.path == path
    assert list(spec.nodes) == ["node1"]
    assert spec.nodes["node1"].packages == ["python3", "curl"]
    assert spec.options == Options()
    assert spec.script_path == str(path)
    assert isinstance(spec.script, str)
    lines = path.read_text().splitlines()
    script_lines = spec.script.splitlines()
    # Line 2 of the script is `start_all()`, which must map to that line of the file.
    assert script_lines[1] == "start_all()"
    assert lines[spec.script_first_line + 1 - 1] == "start_all()"
    assert spec.script_first_line == 12


def test_string_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    assert load_test_file(str(path)).path == path


def test_nodes_are_sorted_and_name_and_options_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node, Options
        name = "my test"
        options = Options(suite="bookworm", global_timeout=60)
        nodes = {"server": Node(), "client": Node(), "beta-box": Node()}
        test_script = "start_all()"
        """,
    )
    spec = load_test_file(path)
    assert spec.name == "my test"
    assert list(spec.nodes) == ["beta-box", "client", "server"]
    assert spec.options.suite == "bookworm" and spec.options.global_timeout == 60.0
    assert spec.script == "start_all()"
    assert spec.script_first_line == 5


def test_script_on_the_opening_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''\
        from vmrig import Node
        nodes = {"a": Node()}

        test_script = """start_all()
        a.succeed("true")
        """
        ''',
    )
    spec = load_test_file(path)
    assert spec.script_first_line == 4


def test_indented_script_is_dedented(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''\
        from vmrig import Node
        nodes = {"a": Node()}

        if True:
            test_script = """
            start_all()
            a.succeed("true")
            """
        ''',
    )
    spec = load_test_file(path)
    assert isinstance(spec.script, str)
    assert spec.script_first_line == 5
    assert spec.script.splitlines()[1:] == ["start_all()", 'a.succeed("true")']
    compile(spec.script, "script", "exec")


def test_script_built_with_dedent_and_continuation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''\
        import textwrap
        from vmrig import Node
        nodes = {"a": Node()}
        test_script = textwrap.dedent(
            """\\
            start_all()
            a.succeed("true")
            """
        )
        ''',
    )
    spec = load_test_file(path)
    assert isinstance(spec.script, str)
    assert spec.script.splitlines()[0] == "start_all()"
    assert spec.script_first_line == 6


def test_script_from_concatenation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''\
        from vmrig import Node
        nodes = {"a": Node()}
        prelude = "start_all()\\n"
        test_script = prelude + """
        a.succeed("true")
        """
        ''',
    )
    spec = load_test_file(path)
    # The first script line was not written in the file as such; the first line that
    # was (`a.succeed`, script line 2) lands on its own line.
    assert spec.script_first_line + 1 == 5


def test_function_script(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node

        nodes = {"a": Node()}


        def test_script():
            start_all()  # noqa: F821
        """,
    )
    spec = load_test_file(path)
    assert callable(spec.script)
    assert spec.script.__name__ == "test_script"
    assert spec.script_first_line == 6
    assert spec.script_path == str(path)


def test_function_script_with_defaults_is_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {"a": Node()}
        def test_script(retries=3, *args, **kwargs):
            pass
        """,
    )
    assert callable(load_test_file(path).script)


def test_interactive_overrides_only_when_interactive(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        from vmrig.spec import Interactive
        nodes = {"a": Node(packages=["curl"])}
        interactive = Interactive(options={"ssh_backdoor": True}, nodes={"a": {"packages": ["gdb"]}})
        test_script = ""
        """,
    )
    plain = load_test_file(path)
    assert plain.nodes["a"].packages == ["curl"]
    assert plain.options.ssh_backdoor is False
    live = load_test_file(path, interactive=True)
    assert live.nodes["a"].packages == ["curl", "gdb"]
    assert live.options.ssh_backdoor is True


def test_module_is_not_left_behind_and_main_block_does_not_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {"a": Node()}
        test_script = ""
        if __name__ == "__main__":
            raise SystemExit("ran as main")
        """,
    )
    modules_before = set(sys.modules)
    path_before = list(sys.path)
    load_test_file(path)
    assert {name for name in set(sys.modules) - modules_before if "testfile" in name} == set()
    assert sys.path == path_before


def test_two_loads_are_independent(tmp_path: Path) -> None:
    path = write(tmp_path, HELLO)
    first = load_test_file(path)
    second = load_test_file(path)
    assert first.nodes["node1"] is not second.nodes["node1"]


def test_helper_module_next_to_the_test_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        "from vmrig import Node\ndef web():\n    return Node(packages=['nginx'])\n",
        "vmrig_helper_x.py",
    )
    path = write(
        tmp_path,
        """\
        from vmrig_helper_x import web
        nodes = {"web": web()}
        test_script = ""
        """,
    )
    try:
        assert load_test_file(path).nodes["web"].packages == ["nginx"]
    finally:
        sys.modules.pop("vmrig_helper_x", None)


def test_dataclass_defined_in_the_test_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from __future__ import annotations
        import dataclasses
        from vmrig import Node

        @dataclasses.dataclass
        class Site:
            name: str
            port: int = 80

        nodes = {"a": Node()}
        test_script = ""
        """,
    )
    load_test_file(path)


# -- errors and their lines ------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.py"
    error = load_error(path)
    assert error.message.startswith("cannot read test file: ")
    assert error.line is None


def test_syntax_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {
            "a": Node(packages=["curl"]
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message.startswith("syntax error: ")
    assert error.line in (3, 4)  # CPython points at the unclosed '(' or the '}'


def test_syntax_error_line_is_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\ny = 2\nz = = 3\n")
    error = load_error(path)
    assert error.message == "syntax error: invalid syntax"
    assert error.line == 3
    assert str(error) == f"{path}:3: syntax error: invalid syntax"


def test_unknown_node_field_reported_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node, Service

        nodes = {
            "node1": Node(
                packages=["python3"],
            ),
            "node2": Node(
                pakages=["curl"],
            ),
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert isinstance(error, SpecError)
    assert error.message == "Node has no field 'pakages'; did you mean 'packages'?"
    assert error.line == 8  # the field's line, not the line where Node( starts
    assert str(error) == f"{path}:8: Node has no field 'pakages'; did you mean 'packages'?"


def test_nested_spec_error_reported_at_the_inner_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node, Service
        nodes = {
            "node1": Node(
                services={
                    "web": Service(
                        exec_start="/bin/web",
                        type="simpel",
                    ),
                },
            ),
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message.startswith("Service.type: 'simpel' is not one of")
    assert error.line == 7  # type="simpel", inside the inner Service(...) call


def test_spec_error_in_a_helper_function(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node

        def server(size):
            return Node(memory_size=size)

        nodes = {"a": server(1024), "b": server(100)}
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "Node.memory_size: must be at least 256, got 100"
    assert error.line == 4


def test_exception_while_running_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node

        def helper():
            return {}["missing"]

        ports = helper()
        nodes = {"a": Node()}
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "KeyError: 'missing'"
    assert error.line == 4
    assert isinstance(error.__cause__, KeyError)


def test_import_error_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "import os\nfrom vmrig import Nod\n")
    error = load_error(path)
    assert error.message.startswith("ImportError: cannot import name 'Nod' from 'vmrig'")
    assert error.line == 2


def test_system_exit_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "import sys\n\nsys.exit(3)\n")
    error = load_error(path)
    assert error.message == "SystemExit: 3"
    assert error.line == 3


def test_missing_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, 'test_script = ""\n')
    error = load_error(path)
    assert error.message == (
        "the test file defines no 'nodes' (a dict of node name to Node(...), e.g. nodes = {'node1': Node()})"
    )
    assert error.line is None


def test_missing_nodes_with_near_miss(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\n\nnode = {"a": Node()}\ntest_script = ""\n')
    error = load_error(path)
    assert error.message.endswith("; did you mean 'node'?")
    assert error.message.startswith("the test file defines no 'nodes'")
    assert error.line == 3


def test_missing_test_script(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\nnodes = {"a": Node()}\n')
    error = load_error(path)
    assert error.message == (
        "the test file defines no 'test_script' (a str of Python code, or a function without arguments)"
    )
    assert error.line is None


def test_missing_test_script_with_near_miss(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\nnodes = {"a": Node()}\ntestscript = "start_all()"\n')
    error = load_error(path)
    assert error.message.endswith("; did you mean 'testscript'?")
    assert error.line == 3


def test_nodes_not_a_dict(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\n\nnodes = [Node()]\ntest_script = ""\n')
    error = load_error(path)
    assert error.message == "'nodes' must be a dict of node name to Node(...), got list"
    assert error.line == 3


def test_zero_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, 'x = 1\nnodes = {}\ntest_script = ""\n')
    error = load_error(path)
    assert error.message == "'nodes' is empty; a test needs at least one node"
    assert error.line == 2


def test_node_value_of_wrong_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {
            "a": Node(),
            "b": {"packages": ["curl"]},
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "nodes['b'] must be a Node(...), got dict"
    assert error.line == 4


def test_invalid_node_name_reported_at_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {
            "ok": Node(),
            "bad.name": Node(),
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert isinstance(error, SpecError)
    assert error.message == (
        "invalid node name 'bad.name': use letters, digits, '-' and '_', starting and ending with a letter or digit"
    )
    assert error.line == 4


def test_two_node_names_with_one_script_variable_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {
            "web-1": Node(),
            "web_1": Node(),
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert str(error).endswith("nodes 'web-1' and 'web_1' would both be the script variable 'web_1'")
    assert error.line == 4


def test_invalid_node_name_in_a_built_dict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        names = ["a", "driver"]

        nodes = {name: Node() for name in names}
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "invalid node name 'driver': 'driver' is already a test-script global"
    assert error.line == 4


def test_node_changed_after_construction_is_checked_again(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        base = Node()
        base.packages = "curl"
        nodes = {
            "a": base,
        }
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "Node.packages: expected a list of str, got str 'curl'"
    assert error.line == 5


def test_test_script_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\nnodes = {"a": Node()}\n\ntest_script = ["start_all()"]\n')
    error = load_error(path)
    assert error.message == "'test_script' must be a str or a function without arguments, got list"
    assert error.line == 4


def test_test_script_function_with_arguments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        nodes = {"a": Node()}

        def test_script(machine, driver):
            pass
        """,
    )
    error = load_error(path)
    assert error.message == "test_script() must take no arguments, but it requires: machine, driver"
    assert error.line == 4


def test_options_of_wrong_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'from vmrig import Node\nnodes = {"a": Node()}\noptions = {"suite": "sid"}\ntest_script = ""\n',
    )
    error = load_error(path)
    assert error.message == "'options' must be an Options(...), got dict"
    assert error.line == 3


def test_name_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\nname = 5\nnodes = {"a": Node()}\ntest_script = ""\n')
    error = load_error(path)
    assert error.message == "'name' must be a non-empty str, got int"
    assert error.line == 2


def test_interactive_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'from vmrig import Node\nnodes = {"a": Node()}\ninteractive = {}\ntest_script = ""\n')
    error = load_error(path)
    assert error.message == "'interactive' must be an Interactive(...), got dict"
    assert error.line == 3


def test_interactive_for_an_unknown_node(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        from vmrig.spec import Interactive
        nodes = {"node1": Node()}

        interactive = Interactive(nodes={"node2": {"packages": ["gdb"]}})
        test_script = ""
        """,
    )
    load_test_file(path)  # not merged, so not checked against the nodes
    error = load_error(path, interactive=True)
    assert isinstance(error, SpecError)
    assert error.message == "Interactive.nodes: there is no node 'node2'; did you mean 'node1'? (nodes are: node1)"
    assert error.line == 5


def test_interactive_with_a_bad_field_fails_early(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        from vmrig import Node
        from vmrig.spec import Interactive
        nodes = {"node1": Node()}
        interactive = Interactive(
            nodes={"node1": {"memory": 4096}},
        )
        test_script = ""
        """,
    )
    error = load_error(path)
    assert error.message == "Interactive.nodes['node1']: Node has no field 'memory'; did you mean 'memory_size'?"
    assert error.line == 5  # nodes=, the field the mistake is in


def test_a_node_instance_is_accepted_from_anywhere(tmp_path: Path) -> None:
    # Nodes are plain values: the loader does not care how they were made.
    path = write(tmp_path, 'import vmrig\nnodes = {"a": vmrig.Node(cores=2)}\ntest_script = ""\n')
    assert load_test_file(path).nodes["a"] == Node(cores=2)


def test_a_field_mistake_in_a_call_over_several_lines_points_at_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from vmrig import X11, Node
        nodes = {
            "machine": Node(
                memory_size=1024,
                x11=X11(
                    usr="bob",
                ),
                packages=["curl",
                          "Bad Name"],
            ),
        }
        test_script = "machine.succeed('true')"
        """,
    )
    error = load_error(path)
    assert "X11 has no field 'usr'" in str(error) and error.line == 7
    path.write_text(path.read_text().replace("usr=", "user="))
    error = load_error(path)
    assert "Node.packages: invalid Debian package name 'Bad Name'" in str(error) and error.line == 9


def test_string_line_finds_a_literal_where_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "case.py"
    path.write_text('nodes = {\n    "a": Node(packages=["curl",\n                        "nginx-ful"]),\n}\n')
    assert string_line(path, "nginx-ful") == 3
    assert string_line(path, "curl") == 2
    assert string_line(path, "absent") is None
    assert string_line(tmp_path / "missing.py", "curl") is None
