"""Reading a virtual terminal's screen from /dev/vcsaN bytes."""

from __future__ import annotations

import pytest

from vmrig.errors import ArgumentError
from vmrig.machine.terminal import _shown, decode_vcsa, tty_number


def vcsa(lines: list[str], columns: int, cursor: tuple[int, int] = (0, 0)) -> bytes:
    cells = bytearray()
    for line in lines:
        for char in line.ljust(columns).encode("cp437"):
            cells += bytes([char, 0x07])
    return bytes([len(lines), columns, *cursor]) + bytes(cells)


def test_decode_gives_full_width_rows_and_the_cursor() -> None:
    screen = decode_vcsa(vcsa(["Debian GNU/Linux", "node1 login: "], 20, cursor=(13, 1)))
    assert (screen.rows, screen.columns, screen.cursor) == (2, 20, (13, 1))
    assert screen.text == "Debian GNU/Linux    \nnode1 login:        "  # as NixOS's fold -w <columns>


def test_characters_above_ascii_are_code_page_437() -> None:
    screen = decode_vcsa(bytes([1, 3, 0, 0, 0xC4, 7, 0xB3, 7, ord("x"), 7]))
    assert screen.text == "─│x"


@pytest.mark.parametrize("data", [b"", b"\x02\x02\x00\x00abc"])
def test_short_buffers_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="vcsa"):
        decode_vcsa(data)


def test_tty_numbers() -> None:
    assert tty_number(1) == tty_number("1") == tty_number("tty1") == 1
    for bad in (0, "tty", "ttyS0", 64):
        with pytest.raises(ArgumentError, match="a virtual terminal is a number from 1 to 63"):
            tty_number(bad)


def test_shown_leaves_out_trailing_blanks() -> None:
    assert _shown("login:   \n    \n") == "    | login:"
    assert _shown("  \n") == "    (the terminal is empty)"
