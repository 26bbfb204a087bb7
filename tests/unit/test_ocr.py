"""The OCR helpers that need no tesseract: PPM parsing, cropping, variants, and the band that changed."""

from __future__ import annotations

import re

from vmrig.machine.ocr import Image, changed_band, matches, reading_variant, variants

WHITE, BLACK = b"\xff\xff\xff", b"\x00\x00\x00"


def blank(width: int = 8, height: int = 100) -> Image:
    return Image(width, height, WHITE * width * height)


def with_pixel(image: Image, x: int, y: int) -> Image:
    at = (y * image.width + x) * 3
    return Image(image.width, image.height, image.pixels[:at] + BLACK + image.pixels[at + 3 :])


def test_ppm_round_trip_and_crop() -> None:
    image = with_pixel(blank(4, 3), 2, 1)
    assert Image.from_ppm(image.to_ppm()) == image
    assert Image.from_ppm(b"P6\n# a comment\n4 3\n255\n" + image.pixels) == image
    assert image.crop((2, 1, 1, 1)).pixels == BLACK
    assert image.crop((3, 2, 10, 10)) == Image(1, 1, WHITE)  # clipped to the image


def test_variants_cheapest_first() -> None:
    image = with_pixel(blank(2, 2), 0, 0)
    plain, inverted_doubled, doubled = variants(image)
    assert plain == image
    assert (doubled.width, doubled.height) == (4, 4) and doubled.pixels[:6] == BLACK * 2
    assert inverted_doubled.pixels[:6] == WHITE * 2 and inverted_doubled.pixels[6:12] == BLACK * 2


def test_nothing_changed_means_no_band() -> None:
    assert changed_band(blank(), blank()) is None


def test_the_band_is_full_width_with_a_margin_and_clipped() -> None:
    before = blank()
    assert changed_band(before, with_pixel(before, 3, 50), margin=10) == (0, 40, 8, 21)
    both = with_pixel(with_pixel(before, 0, 30), 7, 60)
    assert changed_band(before, both, margin=0) == (0, 30, 8, 31)
    assert changed_band(before, with_pixel(before, 0, 2), margin=10) == (0, 0, 8, 13)
    assert changed_band(before, with_pixel(before, 0, 98), margin=10) == (0, 88, 8, 12)


def test_a_new_resolution_is_read_whole() -> None:
    assert changed_band(blank(8, 100), blank(16, 50)) == (0, 0, 16, 50)


def test_a_space_in_the_regex_matches_a_line_break_ocr_made() -> None:
    pattern = re.compile("written delta")
    assert matches(pattern, "ready\nwritten delta\n")
    assert matches(pattern, "ready\n\nwritten\n\ndelta\n")  # sparse segmentation: a word per line
    assert matches(pattern, "written   delta")
    assert not matches(pattern, "written echo")


def test_text_mode_is_read_doubled_and_inverted_a_graphical_screen_as_it_is() -> None:
    text_mode, desktop = blank(720, 4), blank(1024, 4)
    assert reading_variant(text_mode) == variants(text_mode)[1]
    assert reading_variant(desktop) is desktop
