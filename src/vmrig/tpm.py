"""A TPM 2.0 in a machine: NixOS's `virtualisation.tpm.enable`, emulated by swtpm on the host.

QEMU's `tpm-tis` device reaches a `swtpm socket` process through its control
socket. The TPM's state (keys, NV indices, the dictionary-attack lockout)
lives in the machine's state directory: it outlives the machine's reboots in a
run and, with --keep-vm-state, the run, as NixOS keeps its swtpm directory.
swtpm starts through `proc.spawn` right before QEMU (it dies with the driver)
and stops after QEMU; a machine that starts again gets a fresh process on the
same state. Under direct kernel boot (qboot) no firmware sends TPM2_Startup:
the guest's kernel does, as it finds the TPM uninitialised (SeaBIOS, which
boots nodes with a display, sends it itself).

A booted snapshot holds the TPM too: QEMU's migration stream carries the
emulator's state blobs, which a restore hands to a fresh swtpm.
"""

from __future__ import annotations

import functools
from pathlib import Path

from vmrig import proc
from vmrig.errors import MachineError

SOCKET_WAIT = 10.0


@functools.cache
def swtpm_version() -> str:
    """What `swtpm --version` prints, asked once per process."""
    return proc.run([proc.require_tool("swtpm"), "--version"], timeout=30).stdout.decode(errors="replace").strip()


class Swtpm:
    """One machine's TPM: its swtpm process and the QEMU arguments for it.

    A `machine.Sidecar`: the machine starts it before QEMU and stops it after.
    `state_dir` is the machine's state directory.
    """

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.tpm_dir = state_dir / "swtpm"
        self.socket = state_dir / "swtpm.sock"
        self.log_path = state_dir / "swtpm.log"
        self.process: proc.Child | None = None

    def qemu_args(self) -> list[str]:
        return [
            "-chardev",
            f"socket,id=vmrig-tpm,path={self.socket}",
            "-tpmdev",
            "emulator,id=vmrig-tpm0,chardev=vmrig-tpm",
            "-device",
            "tpm-tis,tpmdev=vmrig-tpm0",
        ]

    def command(self) -> list[str]:
        return [
            proc.require_tool("swtpm"),
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={self.tpm_dir},mode=0600",
            "--ctrl",
            f"type=unixio,path={self.socket}",
            "--log",
            f"file={self.log_path},level=1",
        ]

    def snapshot_blocker(self) -> str | None:
        return None

    def snapshot_key_parts(self) -> list[str]:
        # The TPM's state travels in libtpms's own format: a snapshot is swtpm's version's.
        return [swtpm_version()]

    def start(self) -> None:
        self.stop()
        self.tpm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:  # swtpm's own messages (--log) go there too
            self.process = proc.spawn(self.command(), stdout=log, stderr=proc.STDOUT)
        if not proc.wait_for_socket(self.socket, self.process, SOCKET_WAIT):
            self.stop()
            raise MachineError(f"{self.name}: swtpm (the machine's TPM) did not start: {proc.file_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=2.0)
            self.process = None
        self.socket.unlink(missing_ok=True)
