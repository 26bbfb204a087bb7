"""Guest programs built on the host: the restored guest's fix-up (guest/fixup.c).

The fix-up is C without a C library, for x86-64 Linux: the host's gcc builds
it, with no headers and no libraries, once per source (the binary is kept in
the image cache as `fixup-<digest>`), and every run's config layer carries
it (vmrig.image.configlayer).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vmrig import proc
from vmrig.contract import GUEST_DIR

FIXUP_SOURCE = GUEST_DIR / "fixup.c"
# Static, no C library and no stack protector (it would need one), no
# position independence (nothing would relocate it), no loops turned into
# calls of memcpy or memmove (there are none), nothing but the code.
CFLAGS = [
    "-Os",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-tree-loop-distribute-patterns",
    "-fno-pie",
    "-no-pie",
    "-fno-asynchronous-unwind-tables",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",
    "-s",
]


def fixup_program(cache: Path) -> bytes:
    """The fix-up's binary (some kilobytes), built with the host's gcc into `cache` unless there.

    Raises HostToolMissing without gcc, HostCommandFailed when it fails.
    """
    source = FIXUP_SOURCE.read_bytes()
    digest = hashlib.sha256(source + "\0".join(CFLAGS).encode()).hexdigest()[:24]
    built = cache / f"fixup-{digest}"
    if not built.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = built.with_name(f".{built.name}.{os.getpid()}")
        try:
            proc.run([proc.require_tool("gcc"), *CFLAGS, "-o", partial, FIXUP_SOURCE])
            os.replace(partial, built)  # whole or not at all, also when two runs build it at once
        finally:
            partial.unlink(missing_ok=True)
    return built.read_bytes()
