"""The machine's screen from a script: screenshots, OCR, and X11 windows.

A machine has a display when its node asks for one (Node.graphics) or its
script uses one of SCREEN_METHODS. NixOS names and results: `screenshot`
(PNG in the output directory), `get_screen_text`,
`get_screen_text_variants`, `wait_for_text`, `wait_for_x`,
`get_window_names`, `wait_for_window`. Unlike NixOS's, `wait_for_text`
takes a screenshot only to see whether the screen changed, runs OCR only
when it did and then only on the rows that changed, stops at the first
variant that matches, and on a timeout says what the last OCR read and
where the last screenshot is.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from vmrig.errors import MachineError, RequestedAssertionFailed
from vmrig.machine.base import DEFAULT_TIMEOUT
from vmrig.machine.commands import Commands
from vmrig.machine.ocr import Image, Region, changed_band, matches, read_text, reading_variant, variants
from vmrig.spec import X11_READY_FLAG, X11_READY_UNIT
from vmrig.timeouts import Duration

# The methods that need a display; the driver gives one to the machines of a script that names any.
SCREEN_METHODS = ("screenshot", "get_screen_text", "get_screen_text_variants", "wait_for_text")
# How often wait_for_text looks at the screen (a screendump costs a few milliseconds).
POLL_SECONDS = 0.5


def screenshot_path(out_dir: Path, name: str) -> Path:
    """NixOS's naming: ".png" added to a name without a dot; a name without "/" goes into `out_dir`,
    one with "/" is from the driver's working directory (made absolute: QEMU runs elsewhere)."""
    if "." not in name:
        name += ".png"
    return Path(name).absolute() if "/" in name else out_dir / name


class Screen(Commands):
    """screenshot, OCR and X11 windows (see the module docstring)."""

    def screenshot(self, name: str) -> Path:
        """Saves the screen as a PNG (NixOS's naming rules) and returns its path.

        Raises MachineError when the machine has no display (Node.graphics=False).
        """
        path = screenshot_path(self.out_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.nested(f"making screenshot {path}"):
            self._screendump(path, "png")
        return path

    def _screendump(self, path: Path, fmt: str) -> None:
        if not self.config.display:
            raise MachineError(
                f"{self.name}: this machine has no display; give its node graphics=True "
                "(a script that uses a screen method gets one by itself)"
            )
        self.connect()
        if self.qmp is None:
            raise MachineError(f"{self.name}: QMP is not connected")
        self.qmp.execute("screendump", {"filename": str(path), "format": fmt})

    def _screen_image(self, region: Region | None = None) -> Image:
        with tempfile.TemporaryDirectory(prefix="vmrig-screen-") as scratch:
            dump = Path(scratch) / "screen.ppm"
            self._screendump(dump, "ppm")
            image = Image.from_ppm(dump.read_bytes())
        return image.crop(region) if region is not None else image

    def _ocr(self, image: Image) -> str:
        with tempfile.TemporaryDirectory(prefix="vmrig-ocr-") as scratch:
            return read_text(image, Path(scratch) / "screen.ppm")

    def get_screen_text_variants(self, region: Region | None = None) -> list[str]:
        """OCR of the screen and of processed variants of it (inverted, scaled), as NixOS returns."""
        image = self._screen_image(region)
        with self.nested("performing optical character recognition"):
            return [self._ocr(variant) for variant in variants(image)]

    def get_screen_text(self, region: Region | None = None) -> str:
        """OCR of the screen (or of `region`: x, y, width, height in pixels)."""
        image = self._screen_image(region)
        with self.nested("performing optical character recognition"):
            return self._ocr(reading_variant(image))

    def wait_for_text(self, regex: str, timeout: Duration = DEFAULT_TIMEOUT, region: Region | None = None) -> None:
        """Waits until OCR of the screen (or of `region`) matches `regex` (re.search).

        The screen is looked at every half second. The first look reads all of
        it; later looks read only the rows that changed since the one before
        (a clock in a panel costs a strip, not the screen), and nothing when
        nothing changed. OCR stops at the first variant that matches; a space
        in `regex` also matches a line break OCR put between two words. On
        timeout the error gives what OCR read of the whole screen last and
        the screenshot's path. Raises RequestedAssertionFailed on timeout,
        like NixOS.
        """
        __tracebackhide__ = True
        pattern = re.compile(regex)
        limit = self.config.timeout_scale(timeout)
        last_image: Image | None = None
        last_text = ""
        with self.nested(f"waiting for {regex} to appear on screen"):
            self.connect()
            started = time.monotonic()
            while True:
                image = self._screen_image(region)
                band = (0, 0, image.width, image.height) if last_image is None else changed_band(last_image, image)
                last_image = image
                if band is not None:
                    for variant in variants(image.crop(band)):
                        last_text = self._ocr(variant)
                        if matches(pattern, last_text):
                            return
                if time.monotonic() - started > limit:
                    break
                time.sleep(POLL_SECONDS)
            shot = self.out_dir / f"{self.name}-wait_for_text.png"
            if last_image is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                # QEMU's PNG of the screen now: the one OCR read last, or a look newer.
                self._screendump(shot, "png")
                last_text = self._ocr(reading_variant(last_image))  # as get_screen_text reads
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - started:.2f} seconds "
            f"(timeout={self.config.timeout_scale.note(timeout, limit)}) waiting for {regex!r} on the screen of "
            f"{self.name}; the last OCR read:\n{last_text.strip() or '(nothing)'}\nthe last screenshot: {shot}"
        )

    # -- X11 (a guest that runs an X server on :0) ---------------------------------

    def wait_for_x(self, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until the X server on :0 answers and, on an X11 preset node, its IceWM session is up.

        NixOS waits for the graphical user session's target in the journal,
        which a plain Debian X session may never reach; this asks the display
        itself (its socket, then `xdpyinfo`, from x11-utils) and, where the
        preset's vmrig-x11-ready.service exists, waits for it to be done
        (failed too: a node's own IceWM startup file). Raises
        RequestedAssertionFailed after `timeout` (scaled under emulation).
        """
        __tracebackhide__ = True
        check = (
            "test -S /tmp/.X11-unix/X0 && DISPLAY=:0 xdpyinfo >/dev/null 2>&1"
            f" && {{ [ ! -e /etc/systemd/system/{X11_READY_UNIT}.service ] || [ -e {X11_READY_FLAG} ]"
            f" || systemctl -q is-failed {X11_READY_UNIT}; }}"
        )

        def answers(_last_try: bool) -> bool:
            status, _ = self.execute(check)
            return status == 0

        with self.nested("waiting for the X11 server"):
            self._poll("the X server on :0", answers, timeout)

    def get_window_names(self) -> list[str]:
        """The names of the X windows on :0 (xwininfo, from x11-utils), as NixOS lists them.

        Raises RequestedAssertionFailed when the display does not answer.
        """
        return self.succeed("/usr/lib/vmrig/window-names").splitlines()

    def wait_for_window(self, regexp: str, timeout: Duration = DEFAULT_TIMEOUT) -> None:
        """Waits until an X window's name matches `regexp`."""
        __tracebackhide__ = True
        pattern = re.compile(regexp)
        names: list[str] = []

        def present(last_try: bool) -> bool:
            nonlocal names
            names = self.get_window_names()
            if last_try:
                self.log(f"last chance to match {regexp} on the window list, which currently contains: {names}")
            return any(pattern.search(name) for name in names)

        with self.nested(f"waiting for a window to appear: {regexp}"):
            self._poll(f"a window matching {regexp!r}", present, timeout)


__all__ = ["SCREEN_METHODS", "Screen", "screenshot_path"]
