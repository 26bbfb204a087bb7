"""Loading a test file: a Python module that defines `nodes` and `test_script`.

Every problem is reported as a TestFileError carrying the test file's path and
the line to look at, before any image is built.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.machinery
import importlib.util
import inspect
import itertools
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmrig import scripttrace
from vmrig.errors import TestFileError
from vmrig.spec import Interactive, Node, Options, SpecError, check_node_name, merge_interactive, python_name

__all__ = ["TestSpec", "declaration_kind", "declares_test", "load_test_file"]

_module_numbers = itertools.count(1)


@dataclass(frozen=True)
class TestSpec:
    """A loaded test: its nodes (sorted by name), options and script."""

    __test__ = False  # not a pytest test class

    name: str
    path: Path
    nodes: dict[str, Node]
    options: Options
    # A string script is dedented, so that it may be indented inside the test file.
    script: str | Callable[[], object]
    script_path: str
    script_first_line: int  # the test-file line of the script's line 1
    # What the test file itself defines (imports, helpers): a string script sees these too.
    module_globals: dict[str, Any] = field(default_factory=dict)


def load_test_file(path: str | Path, *, interactive: bool = False) -> TestSpec:
    """Run the test file at `path` and return what it declares.

    With `interactive`, the file's optional `interactive` overrides are merged in.
    """
    path = Path(path)
    try:
        source = path.read_bytes()
    except OSError as error:
        raise TestFileError(f"cannot read test file: {error.strerror or error}", path) from None

    filename = str(path)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
        tree = ast.parse(source, filename)
    except SyntaxError as error:
        raise TestFileError(f"syntax error: {error.msg}", path, error.lineno) from None
    except ValueError as error:  # e.g. NUL bytes in the source
        raise TestFileError(f"cannot compile test file: {error}", path) from None

    module = _execute(code, path)
    namespace = vars(module)
    assignments = _Assignments(tree)

    nodes = _get_nodes(namespace, path, assignments)
    script, script_path, first_line = _get_script(namespace, path, assignments, source)

    name = namespace.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise TestFileError(
            f"'name' must be a non-empty str, got {type(name).__name__}", path, assignments.line("name")
        )

    options = namespace.get("options", Options())
    if not isinstance(options, Options):
        raise TestFileError(
            f"'options' must be an Options(...), got {type(options).__name__}",
            path,
            assignments.line("options"),
        )

    overrides = namespace.get("interactive")
    if overrides is not None and not isinstance(overrides, Interactive):
        raise TestFileError(
            f"'interactive' must be an Interactive(...), got {type(overrides).__name__}",
            path,
            assignments.line("interactive"),
        )
    if interactive and overrides is not None:
        try:
            options, nodes = merge_interactive(options, nodes, overrides)
        except SpecError as error:
            raise _located(error, path, assignments.line("interactive")) from None

    return TestSpec(
        name=name,
        path=path,
        nodes=dict(sorted(nodes.items())),
        options=options,
        script=script,
        script_path=script_path,
        script_first_line=first_line,
        module_globals={key: value for key, value in namespace.items() if not key.startswith("__")},
    )


def declaration_kind(path: str | Path) -> str:
    """What the Python file at `path` binds at top level, read and not run:

    "test"        `nodes` as a dict (a literal, dict(...) or a comprehension) and `test_script`
    "partial"     only one of the two, or `nodes` as something else: a test file with a mistake
    "none"        neither (a helper module, a conftest)
    "unparsable"  the file cannot be read or parsed
    """
    try:
        tree = ast.parse(Path(path).read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return "unparsable"
    assignments = _Assignments(tree)
    has_nodes, has_script = "nodes" in assignments.nodes, "test_script" in assignments.nodes
    if not has_nodes and not has_script:
        return "none"
    value = assignments.value("nodes")
    is_dict = isinstance(value, ast.Dict | ast.DictComp) or (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict"
    )
    return "test" if has_nodes and has_script and is_dict else "partial"


def declares_test(path: str | Path) -> bool:
    """Whether the file at `path` reads as a vmrig test file (see declaration_kind)."""
    return declaration_kind(path) == "test"


def _execute(code: types.CodeType, path: Path) -> types.ModuleType:
    """Run the compiled test file as a fresh module that is not left in sys.modules."""
    module_name = f"_vmrig_testfile_{next(_module_numbers)}"
    loader = importlib.machinery.SourceFileLoader(module_name, str(path))
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # In sys.modules while it runs, for dataclasses and pickling defined in it;
    # its directory on sys.path, so that it can import helper modules next to it.
    directory = str(path.resolve().parent)
    sys.modules[module_name] = module
    sys.path.insert(0, directory)
    try:
        exec(code, vars(module))
    except (Exception, SystemExit) as error:
        line = scripttrace.deepest_script_line(error.__traceback__, str(path))
        if isinstance(error, SpecError) and line is not None:
            line = _field_line(path, line, str(error))
        if isinstance(error, TestFileError) and error.path is None:
            raise _located(error, path, line) from None
        if isinstance(error, TestFileError):
            raise
        raise TestFileError(f"{type(error).__name__}: {error}", path, line) from error
    finally:
        sys.modules.pop(module_name, None)
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    return module


# The field a SpecError is about: "X11 has no field 'usr'", "Node.packages: ...", "Node.x11 needs ...".
_ERROR_FIELD = re.compile(r"has no field '(\w+)'|^\w+\.(\w+)\b")


def _field_line(path: Path, line: int, message: str) -> int:
    """The line of the keyword argument a SpecError is about, in the call on `line` that
    raised it (a call written over several lines reports its first line); else `line`."""
    match = _ERROR_FIELD.search(message)
    if match is None:
        return line
    field_name = match.group(1) or match.group(2)
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return line
    candidates = [
        (call.end_lineno - call.lineno, keyword.lineno)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and call.end_lineno is not None and call.lineno <= line <= call.end_lineno
        for keyword in call.keywords
        if keyword.arg == field_name
    ]
    return min(candidates)[1] if candidates else line


def _located(error: TestFileError, path: Path, line: int | None) -> TestFileError:
    """`error` with its path and line filled in."""
    error.path = str(path)
    error.line = line
    error.args = (str(error),)
    return error


class _Assignments:
    """Where the test file binds its top-level names (the last binding wins, as at run time)."""

    def __init__(self, tree: ast.Module) -> None:
        self.nodes: dict[str, ast.stmt] = {}
        self.values: dict[str, ast.expr] = {}
        for statement in _top_level(tree.body):
            for name, value in _bindings(statement):
                self.nodes[name] = statement
                if value is not None:
                    self.values[name] = value
                else:
                    self.values.pop(name, None)

    def line(self, name: str) -> int | None:
        statement = self.nodes.get(name)
        return statement.lineno if statement is not None else None

    def value(self, name: str) -> ast.expr | None:
        return self.values.get(name)


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run at module level, including inside if/try/with/for blocks."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.For | ast.While | ast.With):
            yield from _top_level(statement.body)
            yield from _top_level(getattr(statement, "orelse", []))
        elif isinstance(statement, ast.Try | ast.TryStar):
            yield from _top_level(statement.body)
            for handler in statement.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(statement.orelse)
            yield from _top_level(statement.finalbody)


def _bindings(statement: ast.stmt) -> Iterator[tuple[str, ast.expr | None]]:
    """(name, assigned expression or None) for each name a statement binds."""
    if isinstance(statement, ast.Assign):
        for target in statement.targets:
            if isinstance(target, ast.Name):
                yield target.id, statement.value
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
        if isinstance(statement.target, ast.Name):
            yield statement.target.id, statement.value
    elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield statement.name, None
    elif isinstance(statement, ast.Import | ast.ImportFrom):
        for alias in statement.names:
            yield (alias.asname or alias.name.split(".")[0]), None


def _get_nodes(namespace: dict[str, object], path: Path, assignments: _Assignments) -> dict[str, Node]:
    if "nodes" not in namespace:
        raise _missing(
            namespace,
            "nodes",
            "a dict of node name to Node(...), e.g. nodes = {'node1': Node()}",
            path,
            assignments,
        )
    nodes = namespace["nodes"]
    line = assignments.line("nodes")
    if not isinstance(nodes, dict):
        raise TestFileError(f"'nodes' must be a dict of node name to Node(...), got {type(nodes).__name__}", path, line)
    if not nodes:
        raise TestFileError("'nodes' is empty; a test needs at least one node", path, line)
    variables: dict[str, str] = {}
    for name, node in nodes.items():
        key_line = _dict_key_line(assignments.value("nodes"), name) or line
        try:
            check_node_name(name)
        except SpecError as error:
            raise _located(error, path, key_line) from None
        variable = python_name(name)
        if variable in variables:
            raise TestFileError(
                f"nodes {variables[variable]!r} and {name!r} would both be the script variable {variable!r}",
                path,
                key_line,
            )
        variables[variable] = name
        if not isinstance(node, Node):
            raise TestFileError(f"nodes[{name!r}] must be a Node(...), got {type(node).__name__}", path, key_line)
        try:
            node.__post_init__()  # again: the file may have changed the node after building it
        except SpecError as error:
            raise _located(error, path, key_line) from None
    return dict(nodes)


def string_line(path: str | Path, text: str) -> int | None:
    """The line of the first string literal `text` in the test file at `path` (None if it has none)."""
    try:
        tree = ast.parse(Path(path).read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == text]
    return min(lines, default=None)


def _dict_key_line(value: ast.expr | None, key: object) -> int | None:
    """The line of `key` in a dict literal, if the expression is one and has it."""
    if not isinstance(value, ast.Dict):
        return None
    for key_node in value.keys:
        if isinstance(key_node, ast.Constant) and key_node.value == key:
            return key_node.lineno
    return None


def _missing(
    namespace: dict[str, object], name: str, what: str, path: Path, assignments: _Assignments
) -> TestFileError:
    """A missing required name; points at a near miss (`node = ...`) when there is one."""
    candidates = [key for key in namespace if not key.startswith("__")]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    if close:
        return TestFileError(
            f"the test file defines no {name!r} ({what}); did you mean {close[0]!r}?",
            path,
            assignments.line(close[0]),
        )
    return TestFileError(f"the test file defines no {name!r} ({what})", path)


def _get_script(
    namespace: dict[str, object], path: Path, assignments: _Assignments, source: bytes
) -> tuple[str | Callable[[], object], str, int]:
    """The script, the file it is written in, and the line of its first line there."""
    if "test_script" not in namespace:
        raise _missing(
            namespace,
            "test_script",
            "a str of Python code, or a function without arguments",
            path,
            assignments,
        )
    script = namespace["test_script"]
    line = assignments.line("test_script")
    if isinstance(script, str):
        text = textwrap.dedent(script)
        lines = source.decode("utf-8", errors="replace").splitlines()
        return text, str(path), _string_first_line(text, assignments.value("test_script"), lines, line or 1)
    if isinstance(script, types.FunctionType):
        required = [
            parameter.name
            for parameter in inspect.signature(script).parameters.values()
            if parameter.default is parameter.empty
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        if required:
            raise TestFileError(
                f"test_script() must take no arguments, but it requires: {', '.join(required)}",
                path,
                script.__code__.co_firstlineno if script.__code__.co_filename == str(path) else line,
            )
        return script, script.__code__.co_filename, script.__code__.co_firstlineno
    raise TestFileError(
        f"'test_script' must be a str or a function without arguments, got {type(script).__name__}",
        path,
        line,
    )


def _string_first_line(script: str, value: ast.expr | None, source_lines: list[str], fallback: int) -> int:
    """The test-file line holding line 1 of a string script.

    Usually the line where the string literal starts; checked against the text
    because the script may have been built (dedent(), concatenation, a
    `\\`-continued opening line), in which case the text is looked up.
    """
    script_lines = script.splitlines()
    probe = next(((i, text.strip()) for i, text in enumerate(script_lines) if text.strip()), None)
    if probe is None:
        return fallback
    index, text = probe

    def fits(first_line: int) -> bool:
        at = first_line + index
        return 1 <= at <= len(source_lines) and source_lines[at - 1].strip() == text

    literal = _first_string_literal(value)
    if literal is not None and fits(literal.lineno):
        return literal.lineno
    start = value.lineno if value is not None else fallback
    for number in range(start, len(source_lines) + 1):
        if source_lines[number - 1].strip() == text and number - index >= 1:
            return number - index
    return literal.lineno if literal is not None else fallback


def _first_string_literal(value: ast.expr | None) -> ast.Constant | None:
    if value is None:
        return None
    literals = [node for node in ast.walk(value) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return min(literals, key=lambda node: (node.lineno, node.col_offset), default=None)
