"""Reading text off a screenshot: tesseract on the image and on variants of it.

Screenshots come from QMP as PPM (a 15-byte header, then RGB bytes), which
this module crops, scales and inverts in plain Python, so OCR needs nothing
but Debian's tesseract-ocr. tesseract runs with OMP_THREAD_LIMIT=1: with
OpenMP's threads, several OCR processes on a small host take many times as
long (tesseract #3109: 10 images, 9 s single-threaded against 459 s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vmrig import proc

Region = tuple[int, int, int, int]  # x, y, width, height in pixels
# Screens at least this wide are graphical modes; VGA text mode is 720 (or 640) wide.
GRAPHICAL_WIDTH = 800


@dataclass(frozen=True)
class Image:
    """An RGB image: `width` x `height` pixels, 3 bytes each, rows top to bottom."""

    width: int
    height: int
    pixels: bytes

    @classmethod
    def from_ppm(cls, data: bytes) -> Image:
        """Parses a binary PPM (P6, maxval 255), as QEMU's screendump writes it. ValueError otherwise."""
        fields: list[bytes] = []
        position = 0
        while len(fields) < 4:
            while position < len(data) and data[position : position + 1].isspace():
                position += 1
            if data[position : position + 1] == b"#":
                position = data.index(b"\n", position) + 1
                continue
            end = position
            while end < len(data) and not data[end : end + 1].isspace():
                end += 1
            fields.append(data[position:end])
            position = end
        magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
        if magic != b"P6" or maxval != 255:
            raise ValueError(f"not an 8-bit binary PPM (magic {magic!r}, maxval {maxval})")
        pixels = data[position + 1 : position + 1 + width * height * 3]
        if len(pixels) != width * height * 3:
            raise ValueError(f"a {width}x{height} PPM needs {width * height * 3} bytes of pixels, got {len(pixels)}")
        return cls(width, height, pixels)

    def to_ppm(self) -> bytes:
        return b"P6\n%d %d\n255\n" % (self.width, self.height) + self.pixels

    def crop(self, region: Region) -> Image:
        """The part of the image in `region`, clipped to the image."""
        x, y, width, height = region
        x, y = max(0, x), max(0, y)
        width, height = max(0, min(width, self.width - x)), max(0, min(height, self.height - y))
        row = self.width * 3
        rows = [self.pixels[(y + i) * row + x * 3 : (y + i) * row + (x + width) * 3] for i in range(height)]
        return Image(width, height, b"".join(rows))

    def scaled2(self) -> Image:
        """Twice as wide and high, each pixel repeated: VGA text mode's 9x16 glyphs read better so."""
        row = self.width * 3
        out = []
        for i in range(self.height):
            line = self.pixels[i * row : (i + 1) * row]
            doubled = b"".join(line[j : j + 3] * 2 for j in range(0, row, 3))
            out += [doubled, doubled]
        return Image(self.width * 2, self.height * 2, b"".join(out))

    def inverted(self) -> Image:
        """Light text on dark (a console) as dark on light, which tesseract reads best."""
        return Image(self.width, self.height, self.pixels.translate(bytes(range(255, -1, -1))))


def changed_band(before: Image, after: Image, margin: int = 24) -> Region | None:
    """The full-width band of `after` whose rows differ from `before`, `margin` rows
    wider on each side (a line of text that changed in part is read whole).

    None when nothing changed; the whole image when the sizes differ.
    """
    if (before.width, before.height) != (after.width, after.height):
        return (0, 0, after.width, after.height)
    row = after.width * 3
    old, new = before.pixels, after.pixels
    changed = [i for i in range(after.height) if old[i * row : (i + 1) * row] != new[i * row : (i + 1) * row]]
    if not changed:
        return None
    top = max(0, changed[0] - margin)
    bottom = min(after.height, changed[-1] + 1 + margin)
    return (0, top, after.width, bottom - top)


def reading_variant(image: Image) -> Image:
    """The variant get_screen_text reads: VGA text mode (720x400, light 9x16 glyphs on
    black) inverted and doubled; a graphical screen as it is (its fonts are large enough,
    and a doubled 1024x768 screen took 0.63 s a pass against the 0.5 s wanted)."""
    return image if image.width >= GRAPHICAL_WIDTH else variants(image)[1]


def matches(pattern: re.Pattern[str], text: str) -> bool:
    """Whether `pattern` finds a match in OCR's `text`, or in it with each run of
    whitespace made one space (OCR breaks lines and doubles spaces where the screen has one)."""
    return pattern.search(text) is not None or pattern.search(" ".join(text.split())) is not None


def variants(image: Image) -> list[Image]:
    """The images OCR tries, cheapest first: as it is, inverted and doubled, doubled."""
    doubled = image.scaled2()
    return [image, doubled.inverted(), doubled]


def read_text(image: Image, scratch: Path) -> str:
    """tesseract's text for `image` (written to `scratch` as PPM). HostToolMissing without tesseract."""
    tesseract = proc.require_tool("tesseract")
    scratch.write_bytes(image.to_ppm())
    result = proc.run(
        # Page segmentation 6 (one block of text) keeps a line's words on their line; with 11
        # (sparse text), lines of an xterm came back a word per line ("written\n\ndelta").
        [tesseract, scratch, "-", "--psm", "6", "-c", "debug_file=/dev/null"],
        env={"OMP_THREAD_LIMIT": "1"},
        timeout=120,
    )
    return result.stdout.decode(errors="replace")
