"""Terminals, screens and OCR, side by side in one run (medians).

    .venv/bin/python benchmarks/screens.py [--runs N] [--skip-boots] [--skip-x11]

Prints: a cold boot to the first command with and without a display (VGA,
SeaBIOS and the compressed kernel against qboot and the unpacked one);
`wait_until_tty_matches` on text already on the terminal; one OCR pass of
the whole screen (`get_screen_text`) and its three variants; and
`wait_for_text` from the moment the text is written to the match. Then the
same for the X11 preset: a cold boot to `wait_for_x`, one OCR pass of its
1024x768 screen, and `wait_for_text` from a line written in an xterm to the
match.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import image_store, make_driver, median_of, timed  # noqa: E402

from vmrig.image.store import ImageStore  # noqa: E402
from vmrig.machine import Machine  # noqa: E402
from vmrig.spec import X11, Node  # noqa: E402


def cold_boot(store: ImageStore, tmp: Path, graphics: bool) -> float:
    driver = make_driver({"screen": Node(graphics=graphics)}, Path(tempfile.mkdtemp(dir=tmp)), store)
    try:
        return timed(lambda: driver.machines[0].succeed("true"))
    finally:
        driver.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-boots", action="store_true", help="leave out the cold boots with and without a display")
    parser.add_argument("--skip-x11", action="store_true", help="leave out the X11 preset")
    args = parser.parse_args()
    store = image_store()
    with tempfile.TemporaryDirectory(prefix="vmrig-bench-screens-") as name:
        tmp = Path(name)
        if not args.skip_boots:
            headless, shown = [], []
            for _ in range(args.runs):
                headless.append(cold_boot(store, tmp, graphics=False))
                shown.append(cold_boot(store, tmp, graphics=True))
            median_of("cold boot to first command, no display", headless)
            median_of("cold boot to first command, VGA display", shown)
            print(f"display against none: {statistics.median(shown) / statistics.median(headless):.2f}x", flush=True)

        driver = make_driver({"screen": Node(graphics=True)}, Path(tempfile.mkdtemp(dir=tmp)), store, snapshots=True)
        try:
            machine = driver.machines[0]
            machine.wait_until_tty_matches(1, "login: ")
            tty_waits = [timed(lambda: machine.wait_until_tty_matches(1, "login: ")) for _ in range(20)]
            median_of("wait_until_tty_matches, text already there", tty_waits, "ms")

            passes = [timed(machine.get_screen_text) for _ in range(5)]
            median_of("one OCR pass of the whole screen (720x400)", passes)
            variants = [timed(machine.get_screen_text_variants) for _ in range(3)]
            median_of("get_screen_text_variants (three passes)", variants)

            # Each marker on a cleared screen: on a full one, tesseract may read two columns of words.
            appear = text_appearing(
                machine, lambda line: f"printf '\\033[2J\\033[H' > /dev/tty1; sleep 1; echo {line} > /dev/tty1"
            )
            median_of("wait_for_text, from the text written to the match", appear)
        finally:
            driver.cleanup()
        if not args.skip_x11:
            x11(store, tmp, args.runs)
    return 0


def text_appearing(machine: Machine, command: Callable[[str], str]) -> list[float]:
    """Seconds from `command(line)` (which writes `line` on the screen) returning to wait_for_text's match."""
    samples = []
    # Plain words: OCR reads them back exactly (digits among capitals it may not).
    for marker in ("alpha", "bravo", "charlie", "delta", "echo"):
        machine.succeed(command(f"written {marker}"))
        written = time.monotonic()
        machine.wait_for_text(f"written {marker}", timeout=120)
        samples.append(time.monotonic() - written)
    return samples


def x11(store: ImageStore, tmp: Path, runs: int) -> None:
    boots = []
    for _ in range(runs):
        driver = make_driver({"desktop": Node(x11=X11())}, Path(tempfile.mkdtemp(dir=tmp)), store)
        try:
            machine = driver.machines[0]
            boots.append(timed(machine.wait_for_x))
        finally:
            driver.cleanup()
    median_of("X11 preset: cold boot to wait_for_x", boots)

    driver = make_driver({"desktop": Node(x11=X11())}, Path(tempfile.mkdtemp(dir=tmp)), store, snapshots=True)
    try:
        machine = driver.machines[0]
        machine.wait_for_x()
        machine.succeed("touch /tmp/feed && chmod 666 /tmp/feed")
        machine.execute(
            "su - alice -c 'DISPLAY=:0 xterm -title feed -geometry 70x20+30+30 -fn 10x20 -e tail -f /tmp/feed' "
            ">/dev/null 2>&1 &"
        )
        machine.wait_for_window("feed")
        machine.succeed("echo ready > /tmp/feed")
        machine.wait_for_text("ready", timeout=600)  # IceWM and the xterm have drawn
        size = machine.succeed("DISPLAY=:0 xdpyinfo | awk '/dimensions:/ {print $2}'").strip()
        passes = [timed(machine.get_screen_text) for _ in range(5)]
        median_of(f"X11: one OCR pass of the whole screen ({size})", passes)
        appear = text_appearing(machine, lambda line: f"sleep 1; echo {line} >> /tmp/feed")
        median_of("X11: wait_for_text, from a line written in an xterm to the match", appear)
    finally:
        driver.cleanup()


if __name__ == "__main__":
    sys.exit(main())
