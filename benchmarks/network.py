"""Multi-machine figures: a 3-node topology's boot against one node's, and host memory per idle VM.

    .venv/bin/python benchmarks/network.py [--runs N] [--idle SECONDS]

Prints medians of N runs (one node and three nodes alternate, so that a busy
host weighs on both alike): the time from start_all() to every backdoor shell
answering, the ratio of the two (the goal: at most 1.5), and the resident
memory of each idle QEMU process (VmRSS from /proc/<pid>/status, with the
part that is guest RAM in shared memory, RssShmem). It also prints the CPU
time each QEMU took to boot: under emulation a boot is CPU-bound, so on a host
with C cores n nodes cannot be ready sooner than n x (CPU per boot) / C.
`network_figures()` is what a larger benchmark script can call.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import image_store, make_driver  # benchmarks/bench.py: run these scripts from their directory or by path

from vmrig.driver import Driver
from vmrig.spec import Node

ONE = {"node1": Node()}
THREE = {"node1": Node(vlans=[1, 2]), "node2": Node(), "node3": Node(vlans=[2])}


@dataclass
class Figures:
    one_boot: list[float] = field(default_factory=list)
    three_boot: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    shmem_mib: list[float] = field(default_factory=list)
    one_cpu: list[float] = field(default_factory=list)  # CPU seconds of QEMU per boot
    three_cpu: list[float] = field(default_factory=list)


def _driver(nodes: dict[str, Node], tmp: Path) -> Driver:
    # Builds what is missing, outside the timed part.
    return make_driver(nodes, tmp, image_store())


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(f"{key} is not in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _boot(nodes: dict[str, Node], figures: Figures, idle: float, cpu: list[float]) -> float:
    """Seconds from start_all() to every backdoor answering; records CPU time and idle memory of each QEMU."""
    tmp = Path(tempfile.mkdtemp(prefix="vmrig-bench-"))
    driver = _driver(nodes, tmp)
    try:
        started = time.monotonic()
        driver.start_all()
        for machine in driver.machines:
            machine.connect()
        elapsed = time.monotonic() - started
        cpu += [_cpu_seconds(machine.pid) for machine in driver.machines if machine.pid is not None]
        time.sleep(idle)
        for machine in driver.machines:
            assert machine.pid is not None
            figures.rss_mib.append(_status_kib(machine.pid, "VmRSS") / 1024)
            figures.shmem_mib.append(_status_kib(machine.pid, "RssShmem") / 1024)
        return elapsed
    finally:
        driver.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _median_line(label: str, samples: list[float], unit: str) -> str:
    values = ", ".join(f"{sample:.1f}" for sample in samples)
    return f"{label:<44} median {statistics.median(samples):8.1f} {unit}   (runs: {values})"


def network_figures(runs: int = 5, idle: float = 5.0) -> Figures:
    """Boots one node and three nodes `runs` times each, alternately, and prints the medians."""
    figures = Figures()
    _boot(ONE, Figures(), 0, [])  # warm-up: image cache, accelerator probe, page cache
    for _ in range(runs):
        figures.one_boot.append(_boot(ONE, figures, idle, figures.one_cpu))
        figures.three_boot.append(_boot(THREE, figures, idle, figures.three_cpu))
    one = statistics.median(figures.one_boot)
    three = statistics.median(figures.three_boot)
    print(_median_line("boot, 1 node (all backdoors ready)", figures.one_boot, "s"), flush=True)
    print(_median_line("boot, 3 nodes on 2 vlans (all backdoors ready)", figures.three_boot, "s"), flush=True)
    print(f"{'3 nodes / 1 node':<44} {three / one:.2f}x (goal: at most 1.5x)", flush=True)
    cores = os.cpu_count() or 1
    print(_median_line("QEMU CPU time per boot, 1 node", figures.one_cpu, "s"), flush=True)
    print(_median_line("QEMU CPU time per boot, each of 3 nodes", figures.three_cpu, "s"), flush=True)
    floor = len(THREE) * statistics.median(figures.three_cpu) / cores
    print(f"{f'CPU-bound floor for 3 nodes on {cores} cores':<44} {floor:8.1f} s = {floor / one:.2f}x", flush=True)
    print(_median_line("host memory per idle VM (QEMU VmRSS)", figures.rss_mib, "MiB"), flush=True)
    print(_median_line("  of which guest RAM in shared memory", figures.shmem_mib, "MiB"), flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="boots of each topology (default: 5)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds a booted VM idles before its memory is read")
    args = parser.parse_args(argv)
    network_figures(args.runs, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
