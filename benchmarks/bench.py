"""vmrig's performance figures, as medians of several runs on this machine.

    .venv/bin/python benchmarks/bench.py [--runs N] [--skip-cold]

Prints: cold image build (empty cache), cache-hit build (in-process and
through the CLI), cold boot (no snapshot) for one node to the backdoor shell's
first answer, to the first command a script can send (the backdoor, once
basic.target is reached), what that wait for basic.target cost in the same
boots, and to multi-user.target; the round trip of `succeed("true")`; and
the boot figures for three nodes. benchmarks/snapshots.py has the restore
figures.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vmrig.driver import Driver
from vmrig.image.store import ImageStore
from vmrig.log import Logger
from vmrig.runenv import cache_dir
from vmrig.spec import Node, Options
from vmrig.testfile import TestSpec

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["python3", "curl"]


def median_of(label: str, samples: list[float], unit: str = "s") -> None:
    scale = 1000.0 if unit == "ms" else 1.0
    values = ", ".join(f"{s * scale:.1f}" for s in samples)
    print(f"{label:<42} median {statistics.median(samples) * scale:8.2f} {unit}   (runs: {values})", flush=True)


def image_store() -> ImageStore:
    """The image cache the environment names (VMRIG_CACHE_DIR, ...), building quietly."""
    return ImageStore(cache_dir(os.environ), progress=lambda _message: None)


def make_driver(
    nodes: dict[str, Node], tmp: Path, store: ImageStore, *, snapshots: bool = False, log: io.StringIO | None = None
) -> Driver:
    """A driver with its machines created, not started; cold boots unless `snapshots`; its log goes to `log`."""
    spec = TestSpec(
        name="bench",
        path=tmp / "bench.py",
        nodes=nodes,
        options=Options(),
        script="",
        script_path=str(tmp / "bench.py"),
        script_first_line=1,
    )
    logger = Logger(log if log is not None else io.StringIO(), color=False)
    driver = Driver(spec, logger=logger, out_dir=tmp, tmp_dir=tmp, images=store, snapshots=snapshots)
    driver.setup()
    return driver


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def cold_builds(runs: int) -> None:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="vmrig-bench-cache-") as cache:
            store = ImageStore(Path(cache), progress=lambda _message: None)
            samples.append(timed(lambda store=store: store.node_image(Node(packages=PACKAGES), "trixie")))
    median_of(f"cold image build ({', '.join(PACKAGES)})", samples)


def cache_hits(runs: int, store: ImageStore, tmp: Path) -> None:
    node = Node(packages=PACKAGES)
    store.node_image(node, "trixie")
    median_of("cache-hit build (in-process)", [timed(lambda: store.node_image(node, "trixie")) for _ in range(runs)])
    test_file = tmp / "cache_hit.py"
    test_file.write_text(f"from vmrig import Node\nnodes = {{'a': Node(packages={PACKAGES!r})}}\ntest_script = ''\n")
    cli = [sys.executable, "-m", "vmrig.cli", "build", str(test_file)]
    samples = [timed(lambda: subprocess.run(cli, check=True, capture_output=True)) for _ in range(runs)]
    median_of("cache-hit build (vmrig build, whole CLI)", samples)


# Machine.connect's log line: how long connecting took, and when the shell first answered.
CONNECTED = re.compile(r"connecting took ([0-9.]+) seconds; the shell answered after ([0-9.]+) s")


def basic_target_wait(log: str) -> float:
    """From a machine's log: the seconds between its shell's first answer and basic.target."""
    found = CONNECTED.search(log)
    if found is None:
        raise RuntimeError("the log has no connect line")
    return float(found.group(1)) - float(found.group(2))


def boots(runs: int, store: ImageStore, tmp: Path) -> None:
    shell_samples: list[float] = []
    wait_samples: list[float] = []
    boot_samples: list[float] = []
    ready_samples: list[float] = []
    command_samples: list[float] = []
    for run in range(runs):
        run_dir = tmp / f"one{run}"
        run_dir.mkdir()
        log = io.StringIO()
        driver = make_driver({"node1": Node(packages=PACKAGES)}, run_dir, store, log=log)
        try:
            machine = driver.machines[0]
            started = time.monotonic()
            machine.start()
            machine.connect()
            boot_samples.append(time.monotonic() - started)
            wait_samples.append(basic_target_wait(log.getvalue()))
            shell_samples.append(boot_samples[-1] - wait_samples[-1])
            machine.wait_for_unit("multi-user.target")
            ready_samples.append(time.monotonic() - started)
            round_trips = [timed(lambda machine=machine: machine.succeed("true")) for _ in range(50)]
            command_samples.append(statistics.median(round_trips))
        finally:
            driver.cleanup()
    median_of("boot to backdoor shell answered, 1 node", shell_samples)
    median_of("boot to first command (basic.target), 1 node", boot_samples)
    median_of("  of which the wait for basic.target", wait_samples)
    median_of("boot to multi-user.target, 1 node", ready_samples)
    median_of('succeed("true") round trip (median of 50)', command_samples, "ms")


def three_node_boots(runs: int, store: ImageStore, tmp: Path) -> None:
    samples: list[float] = []
    ready_samples: list[float] = []
    for run in range(runs):
        run_dir = tmp / f"three{run}"
        run_dir.mkdir()
        nodes = {name: Node(packages=PACKAGES) for name in ("a", "b", "c")}
        driver = make_driver(nodes, run_dir, store)
        try:

            def boot_all(driver: Driver = driver) -> None:
                driver.start_all()
                for machine in driver.machines:
                    machine.connect()

            samples.append(timed(boot_all))
            ready_samples.append(samples[-1] + timed(lambda driver=driver: _all_reached_multi_user(driver)))
        finally:
            driver.cleanup()
    median_of("boot to first commands (basic.target), 3 nodes", samples)
    median_of("boot to multi-user.target, 3 nodes", ready_samples)


def _all_reached_multi_user(driver: Driver) -> None:
    waits = [threading.Thread(target=machine.wait_for_unit, args=("multi-user.target",)) for machine in driver.machines]
    for wait in waits:
        wait.start()
    for wait in waits:
        wait.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5; cold builds: 3)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold builds (about 40 s each)")
    args = parser.parse_args()
    print(f"vmrig benchmarks: {os.cpu_count()} CPUs, accelerator {os.environ.get('VMRIG_ACCEL', 'auto')}")
    store = image_store()
    with tempfile.TemporaryDirectory(prefix="vb-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_cold:
            cold_builds(min(args.runs, 3))
        cache_hits(args.runs, store, tmp)
        boots(args.runs, store, tmp)
        three_node_boots(min(args.runs, 3), store, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
