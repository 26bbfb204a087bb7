"""The interactive prompt's fallback when ptpython and IPython are missing."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from vmrig import repl


def test_plain_prompt_uses_the_namespace_and_keeps_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ptpython.ipython", None)  # not installed
    monkeypatch.setattr(sys, "stdin", io.StringIO("answer = machine_count * 21\nprint('answer', answer)\n"))
    namespace: dict[str, object] = {"machine_count": 2}
    history = tmp_path / repl.HISTORY_FILE
    repl.interact(namespace, history)
    assert namespace["answer"] == 42  # the prompt ran in the script's namespace
    captured = capsys.readouterr()
    assert "answer 42" in captured.out
    assert "Python's plain prompt" in captured.err
