"""Booted snapshots against cold boots, side by side in one run (medians).

    .venv/bin/python benchmarks/snapshots.py [--runs N]

Prints, for one node: cold boot to the first command answered, restore to
the first command answered, and their ratio; the same restore for three
nodes and its ratio to one node's; the second run of
examples/hello-world-server.py as a whole `vmrig run` process against a run
without snapshots; what a snapshot costs on disk and what a restored QEMU
holds in memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import REPO, image_store, make_driver, median_of, timed  # noqa: E402

from vmrig.driver import Driver  # noqa: E402
from vmrig.image.store import ImageStore  # noqa: E402
from vmrig.spec import Node  # noqa: E402

NODE = Node(packages=["python3", "curl"], files={"/etc/vmrig-bench": "snapshots\n"})


def first_command(driver: Driver) -> None:
    driver.start_all()
    for machine in driver.machines:
        machine.succeed("true")


def run_of(nodes: dict[str, Node], tmp: Path, store: ImageStore, *, snapshots: bool, label: str) -> float:
    run_dir = Path(tempfile.mkdtemp(prefix=label, dir=tmp))
    driver = make_driver(nodes, run_dir, store, snapshots=snapshots)
    try:
        return timed(lambda: first_command(driver))
    finally:
        driver.cleanup()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def snapshot_costs(store: ImageStore, tmp: Path) -> None:
    driver = make_driver({"node1": NODE}, Path(tempfile.mkdtemp(prefix="cost", dir=tmp)), store, snapshots=True)
    try:
        first_command(driver)
        machine = driver.machines[0]
        rss = rss_mib(machine.pid or 0)
    finally:
        driver.cleanup()
    # The one this run just restored (a restore records its use).
    newest = max(store.root.glob("snapshot-*"), key=lambda p: (p / "last-used").stat().st_mtime)
    used = int(subprocess.run(["du", "-sk", newest], capture_output=True, text=True).stdout.split()[0]) / 1024
    ram = (newest / "ram").stat()
    written = ram.st_blocks * 512 / 2**20
    print(f"{'snapshot on disk':<42} {used:8.0f} MiB used   (RAM file: {written:.0f} of {ram.st_size / 2**20:.0f} MiB)")
    print(f"{'host memory of a restored QEMU (RSS)':<42} {rss:8.0f} MiB")


def cli_runs(runs: int, tmp: Path) -> None:
    example = REPO / "examples" / "hello-world-server.py"
    env = dict(os.environ, TMPDIR=str(tmp))
    command = [sys.executable, "-m", "vmrig.cli", "run", "--no-serial", str(example)]
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=tmp)  # saves, if no run did before
    restored = [
        timed(lambda: subprocess.run(command, check=True, capture_output=True, env=env, cwd=tmp)) for _ in range(runs)
    ]
    cold = [
        timed(
            lambda: subprocess.run(
                [*command[:5], "--no-snapshots", *command[5:]], check=True, capture_output=True, env=env, cwd=tmp
            )
        )
        for _ in range(runs)
    ]
    median_of("hello-world example, rerun (vmrig run)", restored)
    median_of("hello-world example, --no-snapshots", cold)
    print(f"{'  ratio':<42} {statistics.median(cold) / statistics.median(restored):8.1f}x faster")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    args = parser.parse_args()
    print(f"vmrig snapshot benchmarks: {os.cpu_count()} CPUs, accelerator {os.environ.get('VMRIG_ACCEL', 'auto')}")
    store = image_store()
    with tempfile.TemporaryDirectory(prefix="vs-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        one = {"node1": NODE}
        three = {name: NODE for name in ("a", "b", "c")}
        run_of(one, tmp, store, snapshots=True, label="s")  # the snapshot exists from here on
        run_of(three, tmp, store, snapshots=True, label="s")
        cold, restore, restore3 = [], [], []
        for _ in range(args.runs):  # alternating, so that the host's load hits both alike
            cold.append(run_of(one, tmp, store, snapshots=False, label="c"))
            restore.append(run_of(one, tmp, store, snapshots=True, label="r"))
            restore3.append(run_of(three, tmp, store, snapshots=True, label="t"))
        median_of("cold boot to first command, 1 node", cold)
        median_of("restore to first command, 1 node", restore, "ms")
        print(f"{'  ratio':<42} {statistics.median(cold) / statistics.median(restore):8.1f}x faster")
        median_of("restore to first commands, 3 nodes", restore3, "ms")
        print(f"{'  3 nodes / 1 node':<42} {statistics.median(restore3) / statistics.median(restore):8.2f}x")
        cli_runs(max(3, args.runs // 2), tmp)
        snapshot_costs(store, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
