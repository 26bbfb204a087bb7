"""The kernel file QEMU boots: the uncompressed ELF inside Debian's bzImage.

A bzImage decompresses itself in the guest, which under TCG costs more than
a second of every boot. Debian's kernels are built with a PVH entry point (a
Xen ELF note), so QEMU can load the uncompressed ELF directly; it is
extracted once, when the base layer is built. A kernel without that note, or
compressed in a way this module does not read, boots as the bzImage.
"""

from __future__ import annotations

import gzip
import lzma
import struct

from vmrig import proc
from vmrig.errors import HostCommandFailed

# Fields of the x86 boot protocol's setup header (Documentation/arch/x86/boot.rst).
SETUP_SECTS_OFFSET = 0x1F1
HEADER_MAGIC_OFFSET = 0x202
PAYLOAD_OFFSET_OFFSET = 0x248
ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
# XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit entry point QEMU's PVH loader looks for.
XEN_ELFNOTE_PHYS32_ENTRY = 18


def _payload(bzimage: bytes) -> bytes | None:
    """The compressed kernel inside a bzImage, or None if this is not one."""
    if len(bzimage) < 0x250 or bzimage[HEADER_MAGIC_OFFSET : HEADER_MAGIC_OFFSET + 4] != b"HdrS":
        return None
    setup_sects = bzimage[SETUP_SECTS_OFFSET] or 4
    offset, length = struct.unpack_from("<II", bzimage, PAYLOAD_OFFSET_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(bzimage):
        return None
    return bzimage[start : start + length]


def _decompress(payload: bytes) -> bytes | None:
    if payload.startswith(b"\x1f\x8b"):
        return gzip.decompress(payload)
    if payload.startswith(b"\xfd7zXZ\x00"):
        # The kernel's build appends the uncompressed size after the stream.
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    # zstd (trixie) and lz4 (bookworm) through their tools, without the 4-byte
    # size the kernel's build appends, which they would take for a damaged frame.
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        return proc.run([proc.require_tool("zstd"), "-d", "-c", "-q"], input=payload[:-4]).stdout
    if payload.startswith(b"\x02\x21\x4c\x18"):
        return proc.run([proc.require_tool("lz4"), "-d", "-c", "-q"], input=payload[:-4]).stdout
    return None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF carries the PVH entry note."""
    if not elf.startswith(ELF_MAGIC) or len(elf) < 64 or elf[4] != 2 or elf[5] != 1:
        return False
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", elf, 0x20)[0],
        *struct.unpack_from("<HH", elf, 0x36),
    )
    for index in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + index * phentsize
        )
        if p_type != PT_NOTE:
            continue
        position, end = p_offset, p_offset + p_filesz
        while position + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, position)
            name = elf[position + 12 : position + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The uncompressed kernel ELF if QEMU can boot it directly, else None."""
    payload = _payload(bzimage)
    if payload is None:
        return None
    try:
        elf = _decompress(payload)
    except (OSError, EOFError, lzma.LZMAError, HostCommandFailed):
        return None
    if elf is None or not has_pvh_entry(elf):
        return None
    return elf
