"""The pytest plugin's figures, side by side in one run (medians).

    .venv/bin/python benchmarks/pytest_plugin.py [--runs N] [--cold-runs N]

1. Ten tests of one module against one machine, run by pytest in a
   subprocess: machines() as it is by default (each test's machine started
   from the booted snapshot), restore=False (one boot shared by the ten
   tests, the floor), and --vmrig-no-snapshots (a cold boot per test).
   Prints each mode's wall time and per-test setup, and the ten restores'
   total against one cold boot (the goal: less).
2. A suite of four independent one-node test modules under two
   pytest-xdist workers against one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE = 'Node(packages=["python3", "curl"], files={"/etc/vmrig-bench": "pytest\\n"})'

# Records each test's setup time (boot or restore) for the benchmark.
CONFTEST = """
import json, pathlib

def pytest_runtest_logreport(report):
    if report.when == "setup":
        with pathlib.Path("setups.jsonl").open("a") as out:
            out.write(json.dumps({"test": report.nodeid, "seconds": report.duration}) + "\\n")
"""

TEN_TESTS = """
from vmrig import Node
from vmrig.pytest import machines

vms = machines(machine={node}, restore={restore})

{tests}
"""

ONE_TEST = """
from vmrig import Node
from vmrig.pytest import machines

vms = machines(machine={node}, scope="function")

def test_work(vms):
    vms.machine.succeed("for i in $(seq 200); do echo $i > /tmp/n; done; cat /etc/vmrig-bench")
"""


def test_body(number: int, check: bool) -> str:
    clean = 'vms.machine.fail("test -e /root/left-behind")' if check else "pass"
    return textwrap.dedent(f"""
    def test_{number:02}(vms):
        {clean}
        vms.machine.succeed("touch /root/left-behind; systemctl is-system-running --wait || true")
    """)


def run_pytest(directory: Path, *args: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"pytest failed in {directory}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def setups(directory: Path) -> list[float]:
    lines = (directory / "setups.jsonl").read_text().splitlines()
    return [json.loads(line)["seconds"] for line in lines]


def ten_tests(tmp: Path, restore: bool, *extra: str) -> tuple[float, list[float]]:
    directory = Path(tempfile.mkdtemp(prefix=f"ten-{restore}-", dir=tmp))
    (directory / "conftest.py").write_text(CONFTEST)
    tests = "\n".join(test_body(number, check=restore) for number in range(1, 11))
    (directory / "test_ten.py").write_text(TEN_TESTS.format(node=NODE, restore=restore, tests=tests))
    wall = run_pytest(directory, *extra)
    return wall, setups(directory)


def four_modules(tmp: Path, workers: int) -> float:
    directory = Path(tempfile.mkdtemp(prefix=f"xdist-{workers}-", dir=tmp))
    for number in range(4):
        (directory / f"test_m{number}.py").write_text(ONE_TEST.format(node=NODE))
    return run_pytest(directory, "-n", str(workers), "--dist", "loadfile")


def line(label: str, samples: list[float], unit: str = "s") -> None:
    values = ", ".join(f"{sample:.2f}" for sample in samples)
    print(f"{label:<58} median {statistics.median(samples):8.2f} {unit}   (runs: {values})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1, help="runs of the cold-boot-per-test mode (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmrig-bench-pytest-") as name:
        tmp = Path(name)
        # Warm-up: builds the image and its booted snapshot, so that no mode pays for them.
        ten_tests(tmp, True)

        restore_wall, restore_each = [], []
        shared_wall, shared_first = [], []
        cold_wall, cold_each = [], []
        for _ in range(args.runs):
            wall, times = ten_tests(tmp, True)
            restore_wall.append(wall)
            restore_each.append(statistics.median(times))
            wall, times = ten_tests(tmp, False)
            shared_wall.append(wall)
            shared_first.append(times[0])
        for _ in range(args.cold_runs):
            wall, times = ten_tests(tmp, True, "--vmrig-no-snapshots")
            cold_wall.append(wall)
            cold_each.append(statistics.median(times))

        print("ten tests, one machine (pytest wall time, setup of each test):")
        line("default: each test's machine from the booted snapshot: wall", restore_wall)
        line("  setup of each test", restore_each)
        line("restore=False: one boot shared by the ten tests: wall", shared_wall)
        line("  setup of the first test", shared_first)
        line("--vmrig-no-snapshots: a cold boot per test: wall", cold_wall)
        line("  setup of each test", cold_each)
        ten_restores = 10 * statistics.median(restore_each)
        one_boot = statistics.median(cold_each)
        ratio = ten_restores / one_boot
        print(f"ten restores {ten_restores:.2f} s against one cold boot {one_boot:.2f} s: ratio {ratio:.2f}")
        restore_total, cold_total = statistics.median(restore_wall), statistics.median(cold_wall)
        print(
            f"wall, restore per test against cold boot per test: {restore_total:.1f} s vs {cold_total:.1f} s "
            f"({cold_total / restore_total:.1f}x)"
        )

        one_worker, two_workers = [], []
        for _ in range(args.runs):
            one_worker.append(four_modules(tmp, 1))
            two_workers.append(four_modules(tmp, 2))
        print("four independent one-node test modules (function scope):")
        line("one xdist worker: wall", one_worker)
        line("two xdist workers: wall", two_workers)
        speedup = statistics.median(one_worker) / statistics.median(two_workers)
        print(f"two workers against one: {speedup:.2f}x faster", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
