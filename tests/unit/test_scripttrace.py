"""Finding the script's lines in real tracebacks of code compiled under a test file's name."""

from __future__ import annotations

import linecache
import os
import types
from collections.abc import Iterator

import pytest

from vmrig.scripttrace import (
    deepest_script_entry,
    deepest_script_line,
    failing_instance,
    is_hidden,
    script_entries,
    script_frames,
)

SCRIPT_PATH = "/nonexistent/vmrig-tests/example_test.py"

# Line numbers matter: the tests below name them.
SCRIPT = """\
def helper(node):
    __tracebackhide__ = True
    node.succeed("false")

def shown_helper(node):
    node.succeed("false")

def run():
    helper(node1)

def run_shown():
    shown_helper(node1)

def run_plain():
    raise KeyError("plain")
"""


HIDING_FUNCTION = """\
import sys
def f(v):
    if v is not None:
        __tracebackhide__ = v
    return sys._getframe()
"""


class FakeMachine:
    """Stands in for vmrig's Machine: its methods hide themselves, as the real ones do."""

    def succeed(self, command: str) -> None:
        __tracebackhide__ = True
        self._run(command)

    def _run(self, command: str) -> None:
        raise AssertionError(f"command `{command}` failed")


class Other:
    def call(self, machine: FakeMachine) -> None:
        machine.succeed("inner")


@pytest.fixture
def script() -> Iterator[dict[str, object]]:
    """The script's namespace; its source is in linecache, as a test file's would be on disk."""
    linecache.cache[SCRIPT_PATH] = (len(SCRIPT), None, SCRIPT.splitlines(keepends=True), SCRIPT_PATH)
    namespace: dict[str, object] = {"node1": FakeMachine()}
    exec(compile(SCRIPT, SCRIPT_PATH, "exec"), namespace)
    yield namespace
    linecache.cache.pop(SCRIPT_PATH, None)


def traceback_of(function: object) -> types.TracebackType:
    assert callable(function)
    try:
        function()
    except Exception as error:  # noqa: BLE001 (any error the script raises)
        assert error.__traceback__ is not None
        return error.__traceback__
    raise AssertionError("no exception")


def test_only_the_script_frames_count(script: dict[str, object]) -> None:
    tb = traceback_of(script["run_shown"])
    frames = script_frames(tb, SCRIPT_PATH)
    assert [(frame.name, frame.lineno) for frame in frames] == [("run_shown", 12), ("shown_helper", 6)]
    assert [frame.line for frame in frames] == ["shown_helper(node1)", 'node.succeed("false")']
    assert all(frame.filename == SCRIPT_PATH for frame in frames)
    assert deepest_script_line(tb, SCRIPT_PATH) == 6


def test_a_hidden_helper_is_left_out(script: dict[str, object]) -> None:
    tb = traceback_of(script["run"])
    assert [frame.name for frame in script_frames(tb, SCRIPT_PATH)] == ["run"]
    assert deepest_script_line(tb, SCRIPT_PATH) == 9
    entry = deepest_script_entry(tb, SCRIPT_PATH)
    assert entry is not None and entry.tb_frame.f_code.co_name == "run"


def test_the_raising_line_itself(script: dict[str, object]) -> None:
    tb = traceback_of(script["run_plain"])
    assert deepest_script_line(tb, SCRIPT_PATH) == 15


def test_a_relative_name_matches_its_absolute_path() -> None:
    relative = "relative_test.py"
    code = compile("raise ValueError('x')\n", relative, "exec")
    tb = traceback_of(lambda: exec(code, {}))
    assert deepest_script_line(tb, os.path.abspath(relative)) == 1
    assert deepest_script_line(tb, relative) == 1


def test_no_script_frame() -> None:
    tb = traceback_of(lambda: Other().call(FakeMachine()))
    assert script_frames(tb, SCRIPT_PATH) == []
    assert deepest_script_entry(tb, SCRIPT_PATH) is None
    assert deepest_script_line(tb, SCRIPT_PATH) is None
    assert deepest_script_line(None, SCRIPT_PATH) is None


def test_no_path_means_every_file_but_hidden_frames(script: dict[str, object]) -> None:
    tb = traceback_of(script["run"])
    names = [entry.tb_frame.f_code.co_name for entry in script_entries(tb, None)]
    # succeed() and the script's helper hide themselves; _run does not.
    assert names == ["traceback_of", "run", "_run"]


def test_hiding_follows_pytest_locals_first_then_globals() -> None:
    def frame_with(local_value: object, global_value: object) -> types.FrameType:
        namespace: dict[str, object] = {}
        if global_value is not None:
            namespace["__tracebackhide__"] = global_value
        source = HIDING_FUNCTION
        exec(compile(source, SCRIPT_PATH, "exec"), namespace)
        frame = namespace["f"](local_value)  # type: ignore[operator]
        assert isinstance(frame, types.FrameType)
        return frame

    assert not is_hidden(frame_with(None, None))
    assert is_hidden(frame_with(True, None))
    assert is_hidden(frame_with(None, True))
    assert not is_hidden(frame_with(False, True))  # the frame's own value wins
    assert is_hidden(frame_with(1, False))


def test_failing_instance_is_the_innermost_self_of_the_type(script: dict[str, object]) -> None:
    tb = traceback_of(script["run"])
    assert failing_instance(tb, FakeMachine) is script["node1"]
    other = Other()
    inner = FakeMachine()
    tb = traceback_of(lambda: other.call(inner))
    assert failing_instance(tb, FakeMachine) is inner
    assert failing_instance(tb, Other) is other
    assert failing_instance(tb, int) is None
    assert failing_instance(None, FakeMachine) is None
