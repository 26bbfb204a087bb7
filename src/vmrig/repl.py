"""The interactive prompt of `vmrig run --interactive`.

ptpython on IPython, as the NixOS driver uses, when both are installed (the
`repl` extra); the standard library's `code.interact` otherwise. Either way
the prompt's namespace is the script's globals, and its input history is kept
in `.vmrig-history` in the working directory.
"""

from __future__ import annotations

import code
import contextlib
from pathlib import Path
from typing import Any

HISTORY_FILE = ".vmrig-history"
BANNER = (
    "vmrig interactive prompt: the machines are variables; start_all() boots them, "
    "test_script() runs the script, node.shell_interact() opens a shell. Ctrl-D leaves and stops the machines."
)


def interact(namespace: dict[str, Any], history: Path) -> None:
    """Runs a Python prompt on `namespace` until the user leaves it."""
    try:
        from ptpython.ipython import embed
    except ImportError:
        plain_interact(namespace, history)
        return
    print(BANNER)
    # One namespace dict for globals and locals, or comprehensions cannot see the machines.
    embed(user_ns=namespace, history_filename=str(history))  # type: ignore[no-untyped-call]


def plain_interact(namespace: dict[str, Any], history: Path) -> None:
    """`code.interact` with readline's history in `history` when readline is there."""
    try:
        import readline
    except ImportError:
        readline = None  # type: ignore[assignment]
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
    try:
        code.interact(
            banner=BANNER + "\n(ptpython and IPython are not installed: this is Python's plain prompt)",
            local=namespace,
            exitmsg="",
        )
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)
