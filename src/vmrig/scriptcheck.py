"""Checking a test script before any VM boots.

Finds what would otherwise fail minutes into a run: syntax errors, names that
are defined nowhere (`nod1`), and machine methods that do not exist
(`node1.wait_for_unti`). Errors carry the test file's line numbers.

The check errs on the side of silence: a name bound anywhere in the script
(in any scope) counts as defined, so scoping subtleties never cause a false
alarm; only names bound nowhere at all are reported.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from vmrig.errors import TestFileError, did_you_mean

__all__ = ["check_script"]

# Names every module (or class body, or method) has without binding them.
_IMPLICIT_NAMES = frozenset(
    {
        "__name__",
        "__file__",
        "__doc__",
        "__builtins__",
        "__spec__",
        "__loader__",
        "__package__",
        "__cached__",
        "__path__",
        "__annotations__",
        "__module__",
        "__qualname__",
        "__class__",
    }
)


def check_script(
    script: str | Callable[..., object],
    *,
    filename: str,
    first_line: int,
    known_names: Iterable[str],
    machine_names: Iterable[str],
    machine_methods: Iterable[str],
    method_keywords: Mapping[str, frozenset[str] | None] | None = None,
) -> None:
    """Raise TestFileError for the problems found in `script`: the first one's line is the
    error's, and each other one follows on a line of its own ("file:line: message").

    `first_line` is the test-file line of a string script's line 1; a
    function's own line numbers are used instead. `known_names` are the
    globals the driver provides, `machine_names` the machine variables and
    `machine_methods` every attribute a machine has; `method_keywords` the
    keyword arguments each machine method accepts (None: any), for a
    misspelt `timout=` found before the boot rather than after it.
    """
    extra_known: set[str] = set()
    if isinstance(script, str):
        source = textwrap.dedent(script)
        offset = first_line - 1
        try:
            tree = ast.parse(source, filename)
        except SyntaxError as error:
            raise TestFileError(
                f"syntax error in test script: {error.msg}", filename, (error.lineno or 1) + offset
            ) from None
        except ValueError as error:  # NUL bytes
            raise TestFileError(f"test script cannot be compiled: {error}", filename, first_line) from None
    else:
        try:
            lines, start = inspect.getsourcelines(script)
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError, ValueError):
            return  # no source to check (or a lambda cut out of a larger expression)
        offset = start - 1
        extra_known.update(getattr(script, "__globals__", {}))
        code = getattr(script, "__code__", None)
        if code is not None:
            extra_known.update(code.co_freevars)

    machines = set(machine_names)
    scan = _Scan()
    scan.visit(tree)

    problems: list[_Problem] = []
    if not scan.star_import:
        defined = set(dir(builtins)) | _IMPLICIT_NAMES | set(known_names) | machines | extra_known | scan.bound
        for read in scan.reads:
            if read.name not in defined:
                problems.append(_Problem(read.line, read.column, _undefined_message(read.name, defined, machines)))
    methods = set(machine_methods)
    for use in scan.attributes:
        if use.owner in machines and use.owner not in scan.bound and use.attribute not in methods:
            kind = "method" if use.called else "attribute"
            message = f"{use.owner} has no {kind} {use.attribute!r}{did_you_mean(use.attribute, methods)}"
            problems.append(_Problem(use.line, use.column, message))
    for call in scan.keyword_calls:
        accepted = (method_keywords or {}).get(call.attribute)
        if call.owner not in machines or call.owner in scan.bound or accepted is None:
            continue
        for keyword in call.keywords:
            if keyword not in accepted:
                message = (
                    f"{call.owner}.{call.attribute}() has no argument {keyword!r}{did_you_mean(keyword, set(accepted))}"
                )
                problems.append(_Problem(call.line, call.column, message))

    if problems:
        # All of them at once, the first as the error's own line: one run of `vmrig check` finds every slip.
        first, *others = sorted(problems, key=lambda problem: (problem.line, problem.column))
        more = "".join(f"\n{filename}:{problem.line + offset}: {problem.message}" for problem in others)
        raise TestFileError(first.message + more, filename, first.line + offset)


@dataclass(frozen=True)
class _Problem:
    line: int
    column: int
    message: str


@dataclass(frozen=True)
class _Read:
    name: str
    line: int
    column: int


@dataclass(frozen=True)
class _KeywordCall:
    owner: str
    attribute: str
    keywords: tuple[str, ...]
    line: int
    column: int


@dataclass(frozen=True)
class _AttributeUse:
    owner: str
    attribute: str
    called: bool
    line: int
    column: int


def _undefined_message(name: str, defined: set[str], machines: set[str]) -> str:
    candidates = {candidate for candidate in defined if not candidate.startswith("_")}
    message = f"name {name!r} is not defined{did_you_mean(name, candidates)}"
    if machines:
        message += f"{' ' if '?' in message else '; '}machines are: {', '.join(sorted(machines))}"
    return message


class _Scan(ast.NodeVisitor):
    """Collects every name the script binds, every name it reads and every `name.attribute`."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.reads: list[_Read] = []
        self.attributes: list[_AttributeUse] = []
        self.keyword_calls: list[_KeywordCall] = []  # `name.method(kw=...)`
        self.star_import = False
        self._called: set[int] = set()  # ids of Attribute nodes that are called
        self._guarded = 0  # depth of `try:` bodies that catch NameError

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        if isinstance(node.ctx, ast.Store):
            self.bound.add(node.id)
        elif isinstance(node.ctx, ast.Load) and not self._guarded:
            self.reads.append(_Read(node.id, node.lineno, node.col_offset))
        # `del x` reads nothing new: x was bound before, or the script fails anyway.

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        self.bound.add(node.name)
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:  # noqa: N802
        self.bound.add(node.name)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        self.bound.add(node.name)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self.bound.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        for alias in node.names:
            if alias.name == "*":
                self.star_import = True
            else:
                self.bound.add(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:  # noqa: N802
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:  # noqa: N802
        self.bound.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:  # noqa: N802
        self.bound.update(node.names)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:  # noqa: N802
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:  # noqa: N802
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:  # noqa: N802
        if node.rest:
            self.bound.add(node.rest)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:  # noqa: N802
        self._visit_try(node)

    def visit_TryStar(self, node: ast.TryStar) -> None:  # noqa: N802
        self._visit_try(node)

    def _visit_try(self, node: ast.Try | ast.TryStar) -> None:
        # `try: x except NameError:` is how a script asks whether x exists.
        guarded = any(_catches_name_error(handler.type) for handler in node.handlers)
        self._guarded += guarded
        for statement in node.body:
            self.visit(statement)
        self._guarded -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if isinstance(node.func, ast.Attribute):
            self._called.add(id(node.func))
            names = tuple(keyword.arg for keyword in node.keywords if keyword.arg is not None)
            if names and isinstance(node.func.value, ast.Name):
                self.keyword_calls.append(
                    _KeywordCall(node.func.value.id, node.func.attr, names, node.lineno, node.col_offset)
                )
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        if isinstance(node.value, ast.Name) and isinstance(node.ctx, ast.Load):
            self.attributes.append(
                _AttributeUse(
                    owner=node.value.id,
                    attribute=node.attr,
                    called=id(node) in self._called,
                    line=node.lineno,
                    column=node.col_offset,
                )
            )
        self.generic_visit(node)


def _catches_name_error(handler_type: ast.expr | None) -> bool:
    if isinstance(handler_type, ast.Name):
        return handler_type.id == "NameError"
    if isinstance(handler_type, ast.Tuple):
        return any(_catches_name_error(element) for element in handler_type.elts)
    return False
