"""The guest shell's byte stream: begin and end markers are removed, everything else passes."""

from __future__ import annotations

from vmrig.channel import FrameDecoder

NONCE = "0123456789abcdef"


def shown(chunks: list[bytes]) -> bytes:
    return b"".join(chunks)


def feed_all(markers: FrameDecoder, chunks: list[bytes]) -> bytes:
    return b"".join(shown(markers.feed(chunk)) for chunk in chunks)


def test_stale_bytes_before_the_begin_marker_are_dropped() -> None:
    markers = FrameDecoder(NONCE)
    assert shown(markers.feed(b"leftover of an earlier session\n")) == b""
    assert not markers.started
    assert shown(markers.feed(f"{NONCE} B\nroot@node1:~# ".encode())) == b"root@node1:~# "
    assert markers.started


def test_begin_marker_split_across_reads() -> None:
    markers = FrameDecoder(NONCE)
    output = feed_all(markers, [b"junk" + NONCE[:5].encode(), NONCE[5:].encode() + b" B", b"\nprompt$ "])
    assert output == b"prompt$ "


def test_end_marker_ends_the_session_with_its_status() -> None:
    markers = FrameDecoder(NONCE)
    markers.feed(f"{NONCE} B\n".encode())
    output = shown(markers.feed(f"logout\r\n\n{NONCE} E 130\n".encode()))
    assert output == b"logout\r\n"
    assert markers.status == 130


def test_end_marker_split_anywhere() -> None:
    stream = f"{NONCE} B\nsome output\r\nmore\n{NONCE} E 0\n".encode()
    for cut in range(1, len(stream)):
        markers = FrameDecoder(NONCE)
        output = feed_all(markers, [stream[:cut], stream[cut:]])
        assert output + shown(markers.flush()) == b"some output\r\nmore", cut
        assert markers.status == 0, cut


def test_a_trailing_newline_is_held_only_until_the_pause() -> None:
    markers = FrameDecoder(NONCE)
    markers.feed(f"{NONCE} B\n".encode())
    # A newline may start the end marker: held back, shown by flush() when nothing follows.
    assert shown(markers.feed(b"line\n")) == b"line"
    assert shown(markers.flush()) == b"\n"
    assert shown(markers.feed(b"\nnot the marker\n")) == b"\nnot the marker"
    assert shown(markers.feed(b"x")) == b"\nx"
    assert markers.status is None


def test_text_that_resembles_the_marker_passes() -> None:
    markers = FrameDecoder(NONCE)
    markers.feed(f"{NONCE} B\n".encode())
    other = "fedcba9876543210"
    output = shown(markers.feed(f"\n{other} E 0\n{NONCE} B\nok".encode()))
    assert output == f"\n{other} E 0\n{NONCE} B\nok".encode()
    assert markers.status is None


def test_nothing_is_shown_before_the_session_starts() -> None:
    markers = FrameDecoder(NONCE)
    markers.feed(b"noise")
    assert shown(markers.flush()) == b""
