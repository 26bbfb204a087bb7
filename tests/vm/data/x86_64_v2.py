"""Runs popcnt, crc32 (SSE4.2) and lock cmpxchg16b: what x86-64-v2 software such as haproxy uses.

Prints "8 True 1 True" when each instruction ran and gave the right result;
a CPU model without them kills the process with SIGILL.
"""

import ctypes
import mmap


def function(code: bytes):
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return page, ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)(address)


def crc32c(value: int) -> int:
    crc = 0
    for byte in value.to_bytes(8, "little"):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


keep = []
page, popcnt = function(bytes.fromhex("f3480fb8c7c3"))  # popcnt rax, rdi
keep.append(page)
page, crc = function(bytes.fromhex("31c0f2480f38f1c7c3"))  # xor eax,eax; crc32 rax, rdi (SSE4.2)
keep.append(page)
page, cas = function(bytes.fromhex("53488b07488b57084889f34889f1f0480fc70f0f94c00fb6c05bc3"))  # lock cmpxchg16b [rdi]
keep.append(page)
cell = mmap.mmap(-1, 4096)
cell_address = ctypes.addressof(ctypes.c_char.from_buffer(cell))
value = 0x1122334455667788
swapped = cas(cell_address, value)
print(popcnt(0xF0F0, 0), crc(value, 0) == crc32c(value), swapped, cell[:16] == value.to_bytes(8, "little") * 2)
