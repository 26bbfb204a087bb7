"""Two vCPUs on parallel TCG threads: does the guest kernel survive, and what do they do to boot times?

    .venv/bin/python benchmarks/mttcg.py [--boots N] [--minutes M]

QEMU 7.2 killed about one boot in a hundred of a 2-vCPU guest on parallel
TCG threads with an `int3` Oops; QEMU 10 runs them, and vmrig gives a node
2 vCPUs where the host has the CPUs (see spec.default_cores). This boots one
node with 2 vCPUs again and again up to multi-user.target, and scans each
boot's console for kernel faults; every fifth boot it also boots the same
node with 1 vCPU, for boot times side by side. Prints the boots, the faults
(with the console lines around them), and medians.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import image_store, make_driver, median_of  # noqa: E402

from vmrig.errors import VmrigError  # noqa: E402
from vmrig.image.store import ImageStore  # noqa: E402
from vmrig.spec import Node  # noqa: E402

FAULT = re.compile(r"Oops|BUG:|int3|general protection|Kernel panic|invalid opcode|RIP: 0010")


def boot(store: ImageStore, tmp: Path, cores: int) -> tuple[float, float, str | None]:
    """(seconds to the first command, to multi-user.target, the console around a fault or None)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"c{cores}-", dir=tmp))
    driver = make_driver({"node1": Node(packages=["python3", "curl"], cores=cores)}, run_dir, store)
    machine = driver.machines[0]
    started = time.monotonic()
    first = ready = float("nan")
    failure: str | None = None
    try:
        machine.start()
        machine.connect()
        first = time.monotonic() - started
        machine.wait_for_unit("multi-user.target", timeout=600)
        ready = time.monotonic() - started
        machine.succeed("nproc | grep -qx " + str(cores))
    except VmrigError as error:
        failure = f"{error}"
    finally:
        console = machine._console.text()
        driver.cleanup()
    lines = console.splitlines()
    for index, line in enumerate(lines):
        if FAULT.search(line):
            failure = "\n".join(lines[max(0, index - 3) : index + 12])
            break
    return first, ready, failure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boots", type=int, default=300, help="2-vCPU boots at most (default 300)")
    parser.add_argument("--minutes", type=float, default=60, help="stop starting boots after this long (default 60)")
    args = parser.parse_args()
    store = image_store()
    deadline = time.monotonic() + args.minutes * 60
    two: list[tuple[float, float]] = []
    one: list[tuple[float, float]] = []
    faults = 0
    with tempfile.TemporaryDirectory(prefix="mttcg-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        count = 0
        while count < args.boots and time.monotonic() < deadline:
            count += 1
            first, ready, failure = boot(store, tmp, 2)
            if failure is not None:
                faults += 1
                print(f"boot {count} (2 vCPUs): FAULT\n{failure}\n", flush=True)
            else:
                two.append((first, ready))
            print(f"boot {count} (2 vCPUs): first command {first:.1f} s, multi-user {ready:.1f} s", flush=True)
            if count % 5 == 1:
                first, ready, failure = boot(store, tmp, 1)
                if failure is None:
                    one.append((first, ready))
                outcome = failure or "ok"
                print(f"  (1 vCPU: first command {first:.1f} s, multi-user {ready:.1f} s, {outcome})", flush=True)
    print(f"\n2-vCPU boots on parallel TCG threads: {count}, kernel faults or failed boots: {faults}")
    if two and one:
        median_of("first command, 2 vCPUs", [f for f, _ in two])
        median_of("first command, 1 vCPU", [f for f, _ in one])
        median_of("multi-user.target, 2 vCPUs", [r for _, r in two])
        median_of("multi-user.target, 1 vCPU", [r for _, r in one])
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
