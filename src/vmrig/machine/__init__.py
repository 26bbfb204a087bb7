"""One virtual machine: a QEMU process, its backdoor shell, console and QMP.

The API follows the NixOS test driver's Machine (same names, parameters and
errors), so NixOS test scripts run unchanged. Commands travel over a root
shell on the virtio console /dev/hvc0 (see guest/protocol.bash): a command
line goes in, the command's stdout comes back between two markers that carry
a random nonce, then its exit status. The serial console (ttyS0: kernel and
journal) is QEMU's stdout, read line by line into the log.

The package, bottom to top: config (MachineConfig), console (the serial
console), qemu (the QEMU command line), base (state and abstract
operations), the script API over it (commands, systemd, waits, files,
monitor, snapshots), the QEMU machine (lifecycle, backdoor), and machine,
which composes them into Machine.
"""

from vmrig.machine.config import MachineConfig
from vmrig.machine.machine import Machine

__all__ = ["Machine", "MachineConfig"]
