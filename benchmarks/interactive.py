"""How fast the debugging paths are, as medians of several runs on this machine.

    .venv/bin/python benchmarks/interactive.py [--runs N]

Each run drives the real CLI on a pseudo-terminal, with the example test's
node (images already cached; one VM boot per run):

- `vmrig run --interactive`: from starting the command to its prompt, and to
  the prompt again after `start_all()` with every machine's shell answering;
- `vmrig run --debug-on-failure` of a test that fails: from the failure being
  reported to the debugger prompt at the failing line, and to a root shell
  prompt in the VM after typing `node1.shell_interact()` there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pexpect

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello-world-server.py"
ESC = r"(?:\x1b\[[0-9;?]*[ -/]*[@-~]|\r)*"
GUEST_PROMPT = "root@node1:~# "

FAILING = textwrap.dedent(
    """
    from vmrig import Node, Service

    nodes = {
        "node1": Node(
            packages=["python3", "curl"],
            files={"/srv/www/index.html": "Hello world\\n"},
            services={"hello-world-server": Service(
                exec_start="/usr/bin/python3 -m http.server 8000 --directory /srv/www")},
        ),
    }

    test_script = '''
    start_all()
    node1.wait_for_unit("hello-world-server")
    node1.wait_for_open_port(8000)
    node1.succeed("curl --fail --silent localhost:8000/missing.html")
    '''
    """
)


def spawn(args: list[str], tmp: Path) -> pexpect.spawn:
    env = dict(os.environ, TMPDIR=str(tmp), NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    return pexpect.spawn(
        sys.executable,
        ["-m", "vmrig.cli", *args],
        env=env,
        cwd=str(tmp),
        encoding="utf-8",
        codec_errors="replace",
        dimensions=(40, 120),
        timeout=600,
    )


def prompt(number: int) -> str:
    return rf"In \[{ESC}{number}{ESC}\]: "


def interactive_run(tmp: Path) -> tuple[float, float]:
    """Seconds to the prompt, and to the prompt with the machines up."""
    started = time.monotonic()
    child = spawn(["run", "--interactive", "--no-serial", str(EXAMPLE)], tmp)
    try:
        child.expect(prompt(1))
        at_prompt = time.monotonic() - started
        child.send("start_all(); [m.connect() for m in machines]\r")
        child.expect(prompt(2))
        machines_up = time.monotonic() - started
        child.send("\x04")
        child.expect("exit")
        child.send("y")
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    return at_prompt, machines_up


def failure_to_shell(tmp: Path) -> tuple[float, float, float]:
    """Seconds from the failure to the debugger prompt and to a guest shell; and from the start."""
    test_file = tmp / "failing.py"
    test_file.write_text(FAILING)
    started = time.monotonic()
    child = spawn(["run", "--no-serial", "--debug-on-failure", str(test_file)], tmp)
    try:
        child.expect("!!! Traceback")
        failed = time.monotonic()
        child.expect(r"\(Pdb\) ")
        at_debugger = time.monotonic()
        child.sendline("node1.shell_interact()")
        child.expect(GUEST_PROMPT)
        in_shell = time.monotonic()
        child.send("exit\r")
        child.expect(r"\(Pdb\) ")
        child.sendline("c")
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    return at_debugger - failed, in_shell - failed, in_shell - started


def median_of(label: str, samples: list[float]) -> None:
    values = ", ".join(f"{s:.2f}" for s in samples)
    print(f"{label:<58} median {statistics.median(samples):7.2f} s   (runs: {values})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement (default: 5)")
    args = parser.parse_args()

    prompts: list[float] = []
    ups: list[float] = []
    to_debugger: list[float] = []
    to_shell: list[float] = []
    totals: list[float] = []
    # Short: AF_UNIX socket paths must stay under 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="vmrig-bi-"))
    try:
        # A first run that builds (or touches) the images and is not counted.
        interactive_run(tmp)
        for _ in range(args.runs):
            at_prompt, machines_up = interactive_run(tmp)
            prompts.append(at_prompt)
            ups.append(machines_up)
        for _ in range(args.runs):
            debugger, shell, total = failure_to_shell(tmp)
            to_debugger.append(debugger)
            to_shell.append(shell)
            totals.append(total)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    median_of("vmrig run --interactive: to the prompt", prompts)
    median_of("vmrig run --interactive: to the prompt, VMs up", ups)
    median_of("--debug-on-failure: failure to debugger prompt", to_debugger)
    median_of("--debug-on-failure: failure to a shell in the VM", to_shell)
    median_of("--debug-on-failure: start of the run to a shell in the VM", totals)


if __name__ == "__main__":
    main()
