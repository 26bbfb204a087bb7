"""The guest contract's constants, shared by host and guest: where the guest files are, and what they print.

The files in GUEST_DIR run inside every guest (see guest/backdoor,
guest/protocol.bash and guest/shell); the host reads what they print. Each
fact both sides rely on is written here once on the host side, next to a
pointer to the guest line that prints it. Nothing here does I/O: the frame
decoder that reads these markers is `vmrig.channel`.

A frame is one command's (or one interactive session's) output, as the guest
writes it:

    NONCE B\\n  OUTPUT  \\nNONCE E STATUS\\n

The nonce is a fresh random hex string per command, so output that merely
looks like a marker cannot end the frame. The newline in front of the end
marker is the guest's (`printf '\\n%s E %d\\n'`), not the output's: output
"a\\n" travels as "a\\n\\nNONCE E 0\\n", output "a" as "a\\nNONCE E 0\\n".
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BASIC_FIFO", "GUEST_DIR", "READY_LINE", "begin_marker", "end_marker", "end_marker_head"]

# The guest files, as shipped in the package: the base layer and every config layer copy them.
GUEST_DIR = Path(__file__).parent / "guest"

# The backdoor prints this on its console when its shell reads commands (guest/backdoor).
READY_LINE = b"Spawning backdoor root shell..."

# A FIFO that guest/backdoor makes and vmrig-basic.socket opens once basic.target
# is reached: opening it for writing waits for basic.target, with builtins only.
BASIC_FIFO = "/run/vmrig/basic.fifo"


def begin_marker(nonce: str) -> bytes:
    """What precedes a frame's output (`printf '%s B\\n'` in guest/protocol.bash and guest/shell)."""
    return f"{nonce} B\n".encode()


def end_marker_head(nonce: str) -> bytes:
    """The end marker up to its status: the guest's newline, the nonce and "E "."""
    return f"\n{nonce} E ".encode()


def end_marker(nonce: str, status: int) -> bytes:
    """What follows a frame's output (`printf '\\n%s E %d\\n'` in guest/protocol.bash and guest/shell)."""
    return end_marker_head(nonce) + f"{status}\n".encode()
