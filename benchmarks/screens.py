"""Terminals, screens and OCR, side by side in one run (medians).

    .venv/bin/python benchmarks/screens.py [--runs N] [--skip-boots]

Prints: a cold boot to the first command with and without a display (VGA,
SeaBIOS and the compressed kernel against qboot and the unpacked one);
`wait_until_tty_matches` on text already on the terminal; one OCR pass of
the whole screen (`get_screen_text`) and its three variants; and
`wait_for_text` from the moment the text is written to the match.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import image_store, make_driver, median_of, timed  # noqa: E402

from vmrig.image.store import ImageStore  # noqa: E402
from vmrig.spec import Node  # noqa: E402


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

            appear = []
            # Plain words (OCR reads them back exactly; digits among capitals it may not), each
            # on a cleared screen: on a full one, tesseract may read two columns of words.
            for marker in ("alpha", "bravo", "charlie", "delta", "echo"):
                machine.succeed("printf '\\033[2J\\033[H' > /dev/tty1")
                machine.succeed(f"sleep 1; echo written {marker} > /dev/tty1")
                written = time.monotonic()
                machine.wait_for_text(f"written {marker}", timeout=120)
                appear.append(time.monotonic() - written)
            median_of("wait_for_text, from the text written to the match", appear)
        finally:
            driver.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
