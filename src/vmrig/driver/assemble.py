"""From a test's nodes to MachineConfigs: image, network plan, SSH backdoor, shared directories; state-dir locks."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import inspect
import os
import re
import shlex
from pathlib import Path
from typing import TextIO

from vmrig import hostnet, ssh
from vmrig.errors import TestFileError, UsageError
from vmrig.image import configlayer, guestbin
from vmrig.image.configlayer import NodeNetwork
from vmrig.image.store import ImageStore, NodeImage
from vmrig.log import Logger
from vmrig.machine import MachineConfig
from vmrig.machine.config import Viewer
from vmrig.machine.screen import SCREEN_METHODS
from vmrig.net.plan import NetworkPlan, network_cards
from vmrig.runenv import RunEnvironment
from vmrig.spec import EXCHANGE_GUEST_PATH, Node, SpecError, default_cores
from vmrig.testfile import TestSpec
from vmrig.timeouts import TimeoutScale
from vmrig.tpm import Swtpm
from vmrig.virtiofs import Virtiofs, plan_shares

# Where Debian's QEMU keeps its loadable modules (ui-gtk.so comes with qemu-system-gui).
QEMU_MODULE_DIRS = (Path("/usr/lib/x86_64-linux-gnu/qemu"), Path("/usr/lib/qemu"))


def with_ssh_backdoor(spec: TestSpec) -> tuple[ssh.Backdoor | None, TestSpec]:
    """The test's SSH backdoor (if it asks for one) and its nodes with sshd added to their image and config layer."""
    if not spec.options.ssh_backdoor:
        return None, spec
    vsock = ssh.vsock_usable()
    backdoor = ssh.Backdoor(vsock=vsock, vsock_offset=spec.options.vsock_offset)
    nodes = {name: ssh.backdoor_node(node, vsock=vsock) for name, node in spec.nodes.items()}
    return backdoor, dataclasses.replace(spec, nodes=nodes)


class Assembler:
    """Makes each machine's MachineConfig, and holds the locks on their state directories.

    `run_dir`, `accel` and `timeout_scale` are the driver's setup() choices,
    set before the first config is made; `environment` gives the QEMU options,
    the connect timeout, the host's TERM and whether a window can be shown.
    """

    def __init__(
        self,
        spec: TestSpec,
        *,
        logger: Logger,
        images: ImageStore,
        environment: RunEnvironment,
        backdoor: ssh.Backdoor | None,
        tmp_dir: Path,
        snapshots: bool,
        interactive: bool,
        show_screens: bool = False,
    ) -> None:
        self.spec = spec
        self.logger = logger
        self.images = images
        self.environment = environment
        self.ssh = backdoor
        self.tmp_dir = tmp_dir
        self.snapshots = snapshots
        self.interactive = interactive
        # Interactive and debugging runs show the screens of machines with a display.
        self.show_screens = show_screens
        self._vnc_displays: set[int] = set()
        # Every machine mounts it at /tmp/shared, as in NixOS tests.
        self.shared_dir = tmp_dir / "shared-xchg"
        try:
            self.network_plan = NetworkPlan(spec.nodes)
        except SpecError as error:
            raise TestFileError(error.message, spec.path) from None
        self.run_dir: Path | None = None
        self.accel: str | None = None
        self.timeout_scale = TimeoutScale()
        self._state_locks: list[TextIO] = []

    def viewer(self) -> Viewer:
        """A QEMU window when the user has a graphical session and QEMU has a window module
        (Debian's qemu-system-gui), otherwise a VNC display of its own on the loopback address."""
        if self.environment.graphical_session:
            for window in ("gtk", "sdl"):
                if any((directory / f"ui-{window}.so").exists() for directory in QEMU_MODULE_DIRS):
                    return Viewer(window=window)
        try:
            number = hostnet.free_vnc_display(self._vnc_displays)
        except OSError as error:
            raise UsageError(str(error)) from None
        self._vnc_displays.add(number)
        return Viewer(vnc_display=number)

    def machine_names(self) -> list[str]:
        return sorted(self.spec.nodes)

    def uses_exchange_dir(self) -> bool:
        """Whether machines mount the run's exchange directory at /tmp/shared.

        virtiofs cannot be saved in a snapshot, so with snapshots on, only a
        script that names /tmp/shared or a machine's `shared_dir` (its host
        side) gets it (as every NixOS test machine has).
        """
        if not self.snapshots:
            return True
        text = self._script_text()
        return EXCHANGE_GUEST_PATH in text or "shared_dir" in text

    def wants_display(self, node: Node) -> bool:
        """Whether `node`'s machine gets a display: Node.graphics, or else whether the script
        uses a screen method (a display costs a SeaBIOS boot of the compressed kernel)."""
        if node.graphics is not None:
            return node.graphics
        return any(name in self._script_text() for name in SCREEN_METHODS)

    def _script_text(self) -> str:
        """The script's source; for a function whose source is lost, every name (so: all features)."""
        script = self.spec.script
        if callable(script):
            try:
                return inspect.getsource(script)
            except (OSError, TypeError):
                return " ".join((EXCHANGE_GUEST_PATH, *SCREEN_METHODS))
        return script

    def network_of(self, name: str, number: int, node: Node) -> NodeNetwork:
        return self.network_plan.node_network(name, number, node, outside_access=self.interactive)

    def neighbours_digest(self, name: str, node: Node) -> str:
        """What the nodes machine `name` (`node`) can reach on its vlans are made of, as a digest.

        See MachineConfig.neighbours.
        """
        parts = [f"{other}={self.spec.nodes[other]!r}" for other in self.network_plan.reachable(name, node)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def state_dir(self, name: str) -> Path:
        """Machine `name`'s state directory (its disk overlays, TPM, ...; kept with --keep-vm-state)."""
        return self.tmp_dir / f"vm-state-{name}"

    def lock_state_dir(self, name: str) -> None:
        lock_path = self.tmp_dir / f"vm-state-{name}.lock"
        lock = open(lock_path, "a+")  # noqa: SIM115 (held until the run ends)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise UsageError(
                f"{self.tmp_dir / f'vm-state-{name}'} is in use by another vmrig run ({holder}); "
                "set TMPDIR to another directory to run both at once"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        self._state_locks.append(lock)

    @functools.cached_property
    def fixup_program(self) -> bytes:
        """The guest's fix-up program, read (or built) once per run for every node's config layer."""
        return guestbin.fixup_program(self.images.root)

    def host_cpus(self) -> int:
        """The host's CPUs this run's nodes may use: all of them, shared with the other runs at once (xdist)."""
        return max(1, len(os.sched_getaffinity(0)) // self.environment.parallel_runs)

    def release_state_dirs(self) -> None:
        for lock in self._state_locks:
            lock.close()
        self._state_locks.clear()

    def machine_config(
        self, name: str, number: int, node: Node, image: NodeImage, *, with_ssh: bool = True
    ) -> MachineConfig:
        assert self.run_dir is not None and self.accel is not None
        if node.disk_size < image.min_disk_mib:
            raise TestFileError(
                f"node {name}: disk_size {node.disk_size} MiB is smaller than its image needs"
                f" ({image.min_disk_mib} MiB)",
                self.spec.script_path,
            )
        network = self.network_of(name, number, node)
        try:
            exchange = self.shared_dir if self.uses_exchange_dir() else None
            shares = plan_shares(node, base_dir=self.spec.path.parent, exchange_dir=exchange)
        except SpecError as error:
            raise TestFileError(f"node {name}: {error.message}", self.spec.path) from None
        virtiofs = Virtiofs(name, shares, self.run_dir, node.memory_size, self.logger)
        kernel_params = list(node.kernel_params)
        forwards = list(node.forward_ports)
        endpoint = self.ssh.endpoint(name, number) if self.ssh is not None and with_ssh else None
        if endpoint is not None:
            forwards += endpoint.forwards()
        display = self.wants_display(node) and image.bzimage is not None
        return MachineConfig(
            viewer=self.viewer() if display and self.show_screens else None,
            vsock_cid=endpoint.cid if endpoint is not None else None,
            ssh_command=endpoint.command() if endpoint is not None else [],
            name=name,
            disk=self.images.disk_of(image, node.disk_size),
            kernel=image.bzimage if display and image.bzimage is not None else image.kernel,
            display=display,
            initrd=image.initrd,
            config_layer=configlayer.config_layer(
                name,
                node,
                network,
                fixup=self.fixup_program,
                mounts=virtiofs.mounts(),
                block_stacks=image.block_stack_tools,
            ),
            memory_mib=node.memory_size,
            cores=node.cores or default_cores(len(self.spec.nodes), self.host_cpus()),
            disk_mib=node.disk_size,
            empty_disks=node.disks(),
            kernel_params=kernel_params,
            # The environment's QEMU options come last, after the node's.
            qemu_options=[*node.qemu_options, *shlex.split(self.environment.qemu_options)],
            accel=self.accel,
            vlan_cards=network_cards(network.interfaces, self.run_dir),
            sidecars=[*([virtiofs] if shares else []), *([Swtpm(name, self.state_dir(name))] if node.tpm else [])],
            exchange_dir=exchange,
            forwards=forwards,
            user_net_options=self.environment.qemu_net_options,
            connect_timeout=float(self.environment.connect_timeout),
            host_term=self.environment.term,
            outside_access=self.interactive,
            timeout_scale=self.timeout_scale,
            snapshot_root=self.images.root if self.snapshots else None,
            neighbours=self.neighbours_digest(name, node),
        )

    def extra_machine_config(
        self,
        start_command: str | Node,
        name: str | None,
        number: int,
        node_images: dict[str, NodeImage],
        taken: set[str],
    ) -> tuple[str, MachineConfig]:
        """create_machine()'s machine: from a Node (built like any other) or a QEMU start command.

        `number` is its node number (addresses, MACs); a Node's default name is
        the first `machineN` from there that is not in `taken`.
        """
        if isinstance(start_command, Node):
            node = start_command
            index = number
            while name is None and f"machine{index}" in taken:
                index += 1
            name = name or f"machine{index}"
            if self.ssh is not None:
                node = ssh.backdoor_node(node, vsock=self.ssh.vsock)
            image = self.images.node_image(node, self.spec.options.suite, self.spec.options.mirror)
            config = self.machine_config(name, number, node, image)
        else:
            named = re.search(r"run-(.+)-vm$", start_command.strip())  # NixOS's run-<name>-vm scripts
            name = name or (named.group(1) if named else "machine")
            some_image = next(iter(node_images.values()))
            node = Node()
            # A QEMU command of the user's: no backdoor sshd is known to be in its image.
            config = self.machine_config(name, number, node, some_image, with_ssh=False)
            config.start_command = start_command
        return name, config
