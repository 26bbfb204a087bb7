"""The guest's frames decoded from byte streams, however the reads cut them."""

from __future__ import annotations

import pytest

from vmrig.channel import FrameDecoder
from vmrig.contract import begin_marker, end_marker

NONCE = "0123456789abcdef"
OTHER = "fedcba9876543210"


def frame(output: bytes, status: int = 0, nonce: str = NONCE) -> bytes:
    """The bytes the guest writes for one command (guest/protocol.bash)."""
    return begin_marker(nonce) + output + end_marker(nonce, status)


def decode(chunks: list[bytes], nonce: str = NONCE) -> tuple[bytes, FrameDecoder]:
    decoder = FrameDecoder(nonce)
    output = b"".join(piece for chunk in chunks for piece in decoder.feed(chunk))
    return output, decoder


def cuts(stream: bytes) -> list[list[bytes]]:
    """The stream in two reads cut at every position, and one byte per read."""
    ways = [[stream[:at], stream[at:]] for at in range(len(stream) + 1)]
    ways.append([stream[at : at + 1] for at in range(len(stream))])
    return ways


def test_the_frame_is_the_command_output_and_status() -> None:
    output, decoder = decode([frame(b"hello\n", 3)])
    assert output == b"hello\n"
    assert decoder.finished
    assert decoder.status == 3
    assert decoder.remainder == b""
    assert decoder.discarded == 0


def test_markers_split_at_every_byte_position() -> None:
    stream = b"stray\n" + frame(b"line one\nline two\n", 42) + b"next"
    for chunks in cuts(stream):
        output, decoder = decode(chunks)
        assert output == b"line one\nline two\n", chunks
        assert decoder.status == 42, chunks
        assert decoder.discarded == len(b"stray\n"), chunks
        assert decoder.remainder == b"next", chunks


def test_negative_status() -> None:
    _, decoder = decode([frame(b"", -1)])
    assert decoder.status == -1


def test_output_without_a_final_newline() -> None:
    # The newline in front of the end marker is the guest's, not the output's.
    stream = frame(b"no newline")
    assert stream.endswith(b"no newline\n" + NONCE.encode() + b" E 0\n")
    for chunks in cuts(stream):
        output, decoder = decode(chunks)
        assert output == b"no newline", chunks
        assert decoder.status == 0


def test_output_ending_in_blank_lines_keeps_them() -> None:
    for chunks in cuts(frame(b"a\n\n\n")):
        output, _ = decode(chunks)
        assert output == b"a\n\n\n", chunks


def test_empty_output() -> None:
    for chunks in cuts(frame(b"", 1)):
        output, decoder = decode(chunks)
        assert output == b"", chunks
        assert decoder.status == 1


def test_binary_output_with_every_byte_value() -> None:
    data = bytes(range(256)) * 2 + b"\0\0\n\0"
    stream = frame(data)
    output, decoder = decode([stream])
    assert output == data
    assert decoder.status == 0
    for size in (1, 7, 64, 255):
        output, decoder = decode([stream[at : at + size] for at in range(0, len(stream), size)])
        assert output == data, size
        assert decoder.status == 0, size


def test_marker_like_lines_inside_the_output_are_output() -> None:
    inside = (
        end_marker(OTHER, 0)  # another command's marker
        + b"x"
        + end_marker(NONCE, 0)[1:]  # this nonce, but not at a line start
        + begin_marker(NONCE)  # a second begin marker
        + f"\n{NONCE} E \n".encode()  # no status
        + f"\n{NONCE} E 1x\n".encode()  # not a number
        + f"\n{NONCE} B 0\n".encode()
    )
    stream = frame(inside, 7)
    for chunks in cuts(stream):
        output, decoder = decode(chunks)
        assert output == inside, chunks
        assert decoder.status == 7, chunks


def test_bytes_before_the_begin_marker_are_dropped_and_counted() -> None:
    old = frame(b"earlier output\n", 0, nonce=OTHER) + b"background noise"
    for chunks in cuts(old + frame(b"mine")):
        output, decoder = decode(chunks)
        assert output == b"mine", chunks
        assert decoder.discarded == len(old), chunks


def test_nothing_comes_out_before_the_begin_marker() -> None:
    decoder = FrameDecoder(NONCE)
    assert decoder.feed(b"noise\n" + NONCE.encode()) == []
    assert decoder.flush() == []
    assert not decoder.started
    assert decoder.feed(b" B\nout") == [b"out"]
    assert decoder.started


def test_only_a_possible_partial_end_marker_is_held_back() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.feed(begin_marker(NONCE))
    assert decoder.feed(b"line\n") == [b"line"]
    assert decoder.feed(f"{NONCE[:4]}".encode()) == []
    assert decoder.feed(b"X") == [b"\n" + NONCE[:4].encode() + b"X"]
    assert decoder.feed(f"\n{NONCE} E 12".encode()) == []
    assert decoder.feed(b"3\n") == []
    assert decoder.status == 123


def test_flushed_bytes_still_end_the_frame() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.feed(begin_marker(NONCE) + b"out\n")
    # A streaming reader shows what was held back after a pause ...
    assert decoder.flush() == [b"\n"]
    assert decoder.flush() == []
    # ... and an end marker that completes afterwards still ends the frame.
    assert decoder.feed(f"{NONCE} E 0\n".encode()) == []
    assert decoder.status == 0


def test_flushed_bytes_followed_by_more_output() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.feed(begin_marker(NONCE))
    assert decoder.feed(b"a\n") == [b"a"]
    assert decoder.flush() == [b"\n"]
    assert decoder.feed(b"\nb\n") == [b"\nb"]
    assert decoder.feed(end_marker(NONCE, 0)) == [b"\n"]
    assert decoder.finished


def test_an_interrupted_command_has_no_status() -> None:
    decoder = FrameDecoder(NONCE)
    assert decoder.feed(begin_marker(NONCE) + b"partial\n" + f"\n{NONCE} E".encode()) == [b"partial\n"]
    # The data ends (QEMU died, the host gave up): what was held back was output after all.
    assert decoder.close() == [f"\n{NONCE} E".encode()]
    assert decoder.interrupted
    assert not decoder.finished
    assert decoder.status is None


def test_an_interrupted_frame_before_its_begin_marker() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.feed(NONCE.encode())
    assert decoder.close() == []
    assert decoder.interrupted
    assert not decoder.started


def test_the_next_command_discards_the_rest_of_an_interrupted_one() -> None:
    interrupted = FrameDecoder(OTHER)
    first = frame(b"long output that the host gave up on\n", 124, nonce=OTHER)
    interrupted.feed(first[:20])
    interrupted.close()
    output, decoder = decode([first[20:] + frame(b"next\n")])
    assert output == b"next\n"
    assert decoder.status == 0
    assert decoder.discarded == len(first) - 20


def test_bytes_after_the_end_marker_are_the_remainder() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.feed(frame(b"x") + b"after")
    assert decoder.feed(b" more") == []
    assert decoder.remainder == b"after more"
    assert decoder.flush() == []


def test_a_closed_decoder_takes_no_more_bytes() -> None:
    decoder = FrameDecoder(NONCE)
    decoder.close()
    with pytest.raises(ValueError):
        decoder.feed(b"x")
