"""A failed test's evidence from each machine: console tail, `journalctl -b` tail, `systemctl --failed`,
the terminal's text and a screenshot, as report sections and as files."""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from vmrig.driver import report
from vmrig.errors import MachineError, TestScriptError
from vmrig.log import Logger
from vmrig.machine import Machine

CONSOLE_LINES = 50
JOURNAL_LINES = 80
# A guest command here must not hold up the report of a guest that hangs.
COMMAND_TIMEOUT = 20


@dataclass(frozen=True)
class Section:
    """One report section: its title, its text, and the file it was saved to."""

    title: str
    text: str
    path: Path


def output_dir(root: Path, nodeid: str) -> Path:
    """The test's own directory under `root`: its node id made a file name (at most 100
    characters), and a hash of the node id, so that ids differing in punctuation do not meet."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")[:100]
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:8]
    return root / f"{readable}-{digest}"


def collect(machines: list[Machine], directory: Path, logger: Logger) -> list[Section]:
    """Gathers each machine's evidence into `directory` (created) and returns the sections.

    A machine that is down still gives its console; the guest commands are
    only tried on a machine that is up, each limited to 20 s.
    """
    directory.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []

    def add(machine: Machine, what: str, file: str, text: str) -> None:
        path = directory / f"{machine.name}-{file}"
        path.write_text(text.rstrip("\n") + "\n")
        sections.append(Section(f"vmrig {machine.name}: {what}", text.rstrip("\n"), path))

    for machine in machines:
        add(machine, f"console (last {CONSOLE_LINES} lines)", "console.txt", machine.console_tail(CONSOLE_LINES))
        if not machine.is_up() or machine.stalled:  # a stalled shell would keep each command waiting
            continue
        journal = f"journalctl -b (last {JOURNAL_LINES} lines)"
        for what, file, command in (
            ("systemctl --failed", "failed-units.txt", "systemctl --failed --no-pager --no-legend --plain"),
            (journal, "journal.txt", f"journalctl -b -n {JOURNAL_LINES} --no-pager"),
        ):
            with contextlib.suppress(MachineError, TestScriptError, OSError):
                status, text = machine.execute(command, timeout=COMMAND_TIMEOUT)
                if status != 0:
                    text += f"\n({command} exited with status {status})"
                if not text.strip():
                    text = "(none)"
                add(machine, what, file, text)
    saved = report.save_evidence(logger, machines, directory, failed_units=False)  # a section above has them
    if saved:
        files = "\n".join(str(path) for path in saved)
        sections.append(Section("vmrig: terminals and screens saved", files, directory))
    return sections
