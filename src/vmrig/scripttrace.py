"""Finding the test script's lines in a traceback: the one place that walks a traceback's frames.

A failure is reported at the script line that called into vmrig, not inside
succeed(). The frames that count are those running code of the script file;
of those, a frame that sets `__tracebackhide__` to a true value (in its
locals, else its globals) is left out, as pytest's TracebackEntry.ishidden
does, so that a script's own helper can hide itself and the report points at
its caller. Nothing here imports the rest of vmrig.
"""

from __future__ import annotations

import os
import traceback
import types
from typing import TypeVar

__all__ = [
    "deepest_script_entry",
    "deepest_script_line",
    "failing_instance",
    "is_hidden",
    "script_entries",
    "script_frames",
]

T = TypeVar("T")


def is_hidden(frame: types.FrameType) -> bool:
    """The frame asks to be left out of reports (`__tracebackhide__ = True`)."""
    for namespace in (frame.f_locals, frame.f_globals):
        if "__tracebackhide__" in namespace:
            return bool(namespace["__tracebackhide__"])
    return False


def script_entries(tb: types.TracebackType | None, script_path: str | None) -> list[types.TracebackType]:
    """The traceback's entries (outermost first) that run the script and are not hidden.

    `script_path` None means every file.
    """
    wanted = os.path.abspath(script_path) if script_path is not None else None
    entries = []
    while tb is not None:
        frame = tb.tb_frame
        if (wanted is None or os.path.abspath(frame.f_code.co_filename) == wanted) and not is_hidden(frame):
            entries.append(tb)
        tb = tb.tb_next
    return entries


def script_frames(tb: types.TracebackType | None, script_path: str | None) -> list[traceback.FrameSummary]:
    """script_entries() as summaries with the source line, for a report."""
    entries = script_entries(tb, script_path)
    return list(traceback.StackSummary.extract((entry.tb_frame, entry.tb_lineno) for entry in entries))


def deepest_script_entry(tb: types.TracebackType | None, script_path: str | None) -> types.TracebackType | None:
    """The innermost entry of script_entries(), where the script failed."""
    entries = script_entries(tb, script_path)
    return entries[-1] if entries else None


def deepest_script_line(tb: types.TracebackType | None, script_path: str | None) -> int | None:
    """The line number of deepest_script_entry()."""
    entry = deepest_script_entry(tb, script_path)
    return entry.tb_lineno if entry is not None else None


def failing_instance(tb: types.TracebackType | None, kind: type[T]) -> T | None:
    """The `kind` object whose method raised: the innermost frame's `self` of that type.

    Hidden frames count here: the script API's methods hide themselves from
    reports, but they are where the object is found.
    """
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, kind):
            found = candidate
        tb = tb.tb_next
    return found
