"""Unpacking the PVH kernel from a bzImage, on synthetic images."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Callable

import pytest

from vmrig.image.bootkernel import has_pvh_entry, pvh_kernel


def _elf(note_name: bytes, note_type: int) -> bytes:
    """A 64-bit ELF header, one PT_NOTE program header and one note."""
    name = note_name + b"\0"
    note = struct.pack("<III", len(name), 4, note_type) + name.ljust((len(name) + 3) // 4 * 4, b"\0") + b"\0" * 4
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note


def _bzimage(payload: bytes) -> bytes:
    setup_sects = 1
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 16, len(payload))  # payload_offset, payload_length
    return bytes(setup) + b"\0" * 16 + payload + b"trailing"


PVH_ELF = _elf(b"Xen", 18)


def test_the_pvh_note_is_found() -> None:
    assert has_pvh_entry(PVH_ELF)
    assert not has_pvh_entry(_elf(b"Xen", 17))
    assert not has_pvh_entry(_elf(b"GNU", 18))
    assert not has_pvh_entry(b"not an elf")


@pytest.mark.parametrize(
    "compress",
    [gzip.compress, lambda data: lzma.compress(data, format=lzma.FORMAT_XZ) + struct.pack("<I", len(data))],
)
def test_a_compressed_pvh_kernel_is_unpacked(compress: Callable[[bytes], bytes]) -> None:
    assert pvh_kernel(_bzimage(compress(PVH_ELF))) == PVH_ELF


def test_kernels_qemu_cannot_load_directly_stay_packed() -> None:
    assert pvh_kernel(_bzimage(gzip.compress(_elf(b"GNU", 3)))) is None
    assert pvh_kernel(_bzimage(b"BZh91AY&SY unknown compression")) is None
    assert pvh_kernel(b"MZ not a bzImage at all" * 40) is None
