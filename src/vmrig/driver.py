"""The driver: builds a test's machines and networks, and runs its script.

It gives the script the NixOS test driver's globals (start_all, subtest,
retry, one variable per machine, ...), enforces the global timeout, reports a
failure as the script's own traceback plus the failing node's console, and
leaves no QEMU or vde_switch behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import inspect
import os
import shutil
import signal
import tempfile
import textwrap
import threading
import time
import types
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from vmrig import accel, proc, scriptcheck, scripttrace, ssh
from vmrig.debug import Debugger
from vmrig.errors import (
    MachineError,
    PollingConditionError,
    RequestedAssertionFailed,
    TestFileError,
    UsageError,
    VmrigError,
)
from vmrig.hostnet import LOOPBACK
from vmrig.image import configlayer
from vmrig.image.configlayer import NodeNetwork
from vmrig.image.store import ImageStore, NodeImage
from vmrig.log import Logger
from vmrig.machine import Machine, MachineConfig
from vmrig.net.faults import Network
from vmrig.net.plan import NetworkPlan
from vmrig.net.vlan import VLan
from vmrig.scriptnames import DRIVER_SYMBOLS, public_attributes
from vmrig.spec import EXCHANGE_GUEST_PATH, Node, SpecError, default_cores, python_name
from vmrig.testfile import TestSpec
from vmrig.timeouts import Duration, TimeoutScale, seconds
from vmrig.timer import PausableTimer
from vmrig.virtiofs import Virtiofs, plan_shares


class AssertionTester(unittest.TestCase):
    """`t` in scripts: unittest's assert methods, failing like succeed() does."""

    failureException = RequestedAssertionFailed

    def runTest(self) -> None:  # noqa: N802 (unittest's name)
        pass


class PollingCondition:
    """A check that must keep holding while active (`with cond:`)."""

    def __init__(
        self,
        condition: Callable[[], Any],
        logger: Logger,
        seconds_interval: Duration = 2.0,
        description: str | None = None,
    ) -> None:
        self.condition = condition
        self.logger = logger
        self.seconds_interval = seconds(seconds_interval)
        self.description = description or condition.__doc__ or condition.__name__
        self.last_called = float("-inf")
        self.entered = False
        self.active: list[PollingCondition] | None = None

    def check(self, force: bool = False) -> bool:
        if (self.entered or not self.overdue) and not force:
            return True
        with self, self.logger.nested(self.nested_message):
            self.last_called = time.monotonic()
            try:
                result = self.condition()
            except Exception as error:
                self.logger.log(f"polling condition raised: {error}")
                result = False
            passed = result is None or bool(result)
            self.logger.log("Polling condition " + ("passed" if passed else "failed"))
            return passed

    def maybe_raise(self) -> None:
        if not self.check():
            raise PollingConditionError(f"Polling condition failed: {self.description}")

    def wait(self, timeout: Duration = 900, scale: TimeoutScale | None = None) -> None:
        scale = scale or TimeoutScale()
        started = time.monotonic()
        deadline = started + scale(timeout)
        with self.logger.nested(f"waiting for {self.description}"):
            while not self.check(force=True):
                if time.monotonic() > deadline:
                    raise RequestedAssertionFailed(
                        f"action timed out after {time.monotonic() - started:.2f} seconds "
                        f"(timeout={scale.note(timeout)}) waiting for {self.description}"
                    )
                time.sleep(self.seconds_interval)

    @property
    def nested_message(self) -> str:
        return f"checking polling condition {self.description!r}"

    @property
    def overdue(self) -> bool:
        return self.last_called + self.seconds_interval < time.monotonic()

    def __enter__(self) -> PollingCondition:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered = False


def retry(
    fn: Callable[[bool], bool],
    timeout: Duration | None = None,
    *,
    timeout_seconds: Duration | None = None,
    scale: TimeoutScale | None = None,
) -> None:
    """Calls fn(False) once a second until it returns True, then fn(True) once.

    The final call lets `fn` log why it still fails before the error is raised.
    `timeout` (NixOS 25.x) or `timeout_seconds` (newer NixOS): seconds or a
    timedelta, 900 by default, scaled under emulation. The clock starts after
    the first call, which may wait for a machine to boot: NixOS 25.x counts
    tries, so a boot inside the first one costs none of them.
    Raises RequestedAssertionFailed("action timed out after ...").
    """
    __tracebackhide__ = True
    if timeout is not None and timeout_seconds is not None:
        raise UsageError("retry(): give timeout= or timeout_seconds=, not both")
    given: Duration = timeout if timeout is not None else timeout_seconds if timeout_seconds is not None else 900
    scale = scale or TimeoutScale()
    if fn(False):
        return
    started = time.monotonic()
    deadline = started + scale(given)
    while time.monotonic() < deadline:
        time.sleep(1)
        if fn(False):
            return
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - started:.2f} seconds (timeout={scale.note(given)})"
        )


class Driver:
    """Owns a test run: images, vlans, machines, the script's namespace."""

    def __init__(
        self,
        spec: TestSpec,
        *,
        logger: Logger,
        out_dir: Path,
        keep_vm_state: bool = False,
        global_timeout: float | None = None,
        interactive: bool = False,
        images: ImageStore | None = None,
        tmp_dir: Path | None = None,
        debug_on_failure: bool = False,
        snapshots: bool = True,
    ) -> None:
        # The SSH backdoor adds sshd to every node's image and config layer.
        self.ssh: ssh.Backdoor | None = None
        if spec.options.ssh_backdoor:
            vsock = ssh.vsock_usable()
            self.ssh = ssh.Backdoor(vsock=vsock, vsock_offset=spec.options.vsock_offset)
            nodes = {name: ssh.backdoor_node(node, vsock=vsock) for name, node in spec.nodes.items()}
            spec = dataclasses.replace(spec, nodes=nodes)
        self.spec = spec
        self.logger = logger
        self.out_dir = out_dir
        self.keep_vm_state = keep_vm_state
        # Booted snapshots (vmrig.image.snapshot): never with kept state, whose disks outlive a run.
        self.snapshots = snapshots and not keep_vm_state
        self.global_timeout = global_timeout if global_timeout is not None else spec.options.global_timeout
        self.interactive = interactive
        self.images = images or ImageStore(progress=logger.info)
        self.tmp_dir = tmp_dir or Path(os.environ.get("TMPDIR") or "/tmp")
        # Every machine mounts it at /tmp/shared, as in NixOS tests.
        self.shared_dir = self.tmp_dir / "shared-xchg"
        try:
            self.network_plan = NetworkPlan(spec.nodes)
        except SpecError as error:
            raise TestFileError(error.message, spec.path) from None
        self.machines: list[Machine] = []
        self.vlans: list[VLan] = []
        # Fault injection: the script's `network`.
        self.network = Network(self.all_machines, logger)
        self.polling_conditions: list[PollingCondition] = []
        self.node_images: dict[str, NodeImage] = {}
        self.timed_out = False
        self._extra_machines: list[Machine] = []
        self._timer: PausableTimer | None = None
        self._timeout_interrupt_sent = threading.Event()
        self.debug = Debugger(logger, on_failure=debug_on_failure, timer=lambda: self._timer, focus=spec.script_path)
        self._run_dir: Path | None = None
        self._state_locks: list[TextIO] = []
        self._namespace: dict[str, Any] | None = None
        self._accel: str | None = None
        self.timeout_scale = TimeoutScale()  # chosen in setup(), once the accelerator is known

    # -- preparation -----------------------------------------------------------

    def machine_names(self) -> list[str]:
        return sorted(self.spec.nodes)

    def script_names(self) -> list[str]:
        """Every global a script of this test can use."""
        names = list(DRIVER_SYMBOLS)
        names += [python_name(name) for name in self.machine_names()]
        if len(self.spec.nodes) == 1:
            names.append("machine")
        names += [f"vlan{nr}" for nr in self.vlan_numbers()]
        return names

    def check_script(self) -> None:
        """Reports script mistakes (syntax, unknown names) before anything boots."""
        machine_vars = [python_name(name) for name in self.machine_names()]
        if len(self.spec.nodes) == 1:
            machine_vars.append("machine")
        scriptcheck.check_script(
            self.spec.script,
            filename=self.spec.script_path,
            first_line=self.spec.script_first_line,
            known_names=[*self.script_names(), *self.spec.module_globals],
            machine_names=machine_vars,
            machine_methods=public_attributes(Machine),
        )

    def uses_exchange_dir(self) -> bool:
        """Whether machines mount the run's exchange directory at /tmp/shared.

        virtiofs cannot be saved in a snapshot, so with snapshots on, only a
        script that names /tmp/shared gets it (as every NixOS test machine has).
        """
        if not self.snapshots:
            return True
        script = self.spec.script
        if callable(script):
            try:
                script = inspect.getsource(script)
            except (OSError, TypeError):
                return True
        return EXCHANGE_GUEST_PATH in script

    def vlan_numbers(self) -> list[int]:
        return self.network_plan.vlan_numbers()

    def build_images(self) -> dict[str, NodeImage]:
        options = self.spec.options
        with self.logger.nested("building node images"):
            for name in self.machine_names():
                node = self.spec.nodes[name]
                with self.logger.nested(f"image for {name}"):
                    self.node_images[name] = self.images.node_image(node, options.suite, options.mirror)
        return self.node_images

    def network_of(self, name: str, number: int, node: Node) -> NodeNetwork:
        return self.network_plan.node_network(name, number, node, outside_access=self.interactive)

    def _lock_state_dir(self, name: str) -> None:
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

    def _machine_config(
        self, name: str, number: int, node: Node, image: NodeImage, *, with_ssh: bool = True
    ) -> MachineConfig:
        assert self._run_dir is not None and self._accel is not None
        if node.disk_size < image.fs_size_mib:
            raise TestFileError(
                f"node {name}: disk_size {node.disk_size} MiB is smaller than its image ({image.fs_size_mib} MiB)",
                self.spec.script_path,
            )
        network = self.network_of(name, number, node)
        try:
            exchange = self.shared_dir if self.uses_exchange_dir() else None
            shares = plan_shares(node, base_dir=self.spec.path.parent, exchange_dir=exchange)
        except SpecError as error:
            raise TestFileError(f"node {name}: {error.message}", self.spec.path) from None
        virtiofs = Virtiofs(name, shares, self._run_dir, node.memory_size, self.logger)
        kernel_params = list(node.kernel_params)
        forwards = ",".join(f"hostfwd=tcp:{LOOPBACK}:{host}-:{guest}" for host, guest in node.forward_ports)
        endpoint = self.ssh.endpoint(name, number) if self.ssh is not None and with_ssh else None
        if endpoint is not None and endpoint.port is not None:
            forwards = ",".join(part for part in (forwards, endpoint.user_net_option()) if part)
        return MachineConfig(
            vsock_cid=endpoint.cid if endpoint is not None else None,
            name=name,
            disk=image.disk,
            kernel=image.kernel,
            initrd=image.initrd,
            config_layer=configlayer.config_layer(
                name, node, network, grow_root=node.disk_size > image.fs_size_mib, mounts=virtiofs.mounts()
            ),
            memory_mib=node.memory_size,
            cores=node.cores or default_cores(len(self.spec.nodes), os.cpu_count() or 1, self._accel),
            disk_mib=node.disk_size,
            kernel_params=kernel_params,
            qemu_options=list(node.qemu_options),
            accel=self._accel,
            vlan_nics=[
                (card.vlan, card.mac or "", str(self._run_dir / f"vde{card.vlan}.ctl")) for card in network.interfaces
            ],
            sidecars=[virtiofs] if shares else [],
            user_net_options=forwards,
            outside_access=self.interactive,
            timeout_scale=self.timeout_scale,
            snapshot_root=self.images.root if self.snapshots else None,
        )

    def setup(self) -> None:
        """Builds what is missing, starts the vlans and creates (not boots) the machines."""
        if not self.node_images:
            self.build_images()
        first_image = self.node_images[self.machine_names()[0]]
        accel.check_qemu_version(proc.require_tool("qemu-system-x86_64"))
        self._accel = accel.choose(self.images.root, first_image.kernel)
        self.logger.log(f"accelerator: {self._accel}")
        try:
            self.timeout_scale = TimeoutScale.choose(self._accel, os.environ.get("VMRIG_TIMEOUT_FACTOR"))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if self.timeout_scale.factor != 1:
            self.logger.log(
                f"the script's timeouts are multiplied by {self.timeout_scale.factor:g} "
                f"({self.timeout_scale.reason}; VMRIG_TIMEOUT_FACTOR sets the factor)"
            )
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="vmrig-", dir=self.tmp_dir))
        if not self.keep_vm_state:
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        self.shared_dir.mkdir(mode=0o700, exist_ok=True)
        with self.logger.nested("start all VLans"):
            for nr in self.vlan_numbers():
                vlan = VLan(nr, self._run_dir, self.logger)
                self.vlans.append(vlan)
                vlan.start()
        for number, name in enumerate(self.machine_names(), start=1):
            self._lock_state_dir(name)
            node = self.spec.nodes[name]
            config = self._machine_config(name, number, node, self.node_images[name])
            self.machines.append(
                Machine(
                    config,
                    state_dir=self.tmp_dir / f"vm-state-{name}",
                    out_dir=self.out_dir,
                    logger=self.logger,
                    keep_vm_state=self.keep_vm_state,
                    callbacks=[self.check_polling_conditions],
                )
            )
            self.machines[-1].boot_hooks.append(self.network.machine_booted)
        if self.ssh is not None:
            self._publish_ssh()

    # -- the script's world ----------------------------------------------------

    def test_symbols(self) -> dict[str, Any]:
        if self._namespace is not None:
            return self._namespace
        namespace: dict[str, Any] = {
            "start_all": self.start_all,
            "join_all": self.join_all,
            "test_script": self.test_script,
            "run_tests": self.run_tests,
            "machines": self.machines,
            "vlans": self.vlans,
            "driver": self,
            "network": self.network,
            "log": self.logger,
            "os": os,
            "create_machine": self.create_machine,
            "subtest": self.subtest,
            "retry": functools.partial(retry, scale=self.timeout_scale),
            "serial_stdout_on": self.serial_stdout_on,
            "serial_stdout_off": self.serial_stdout_off,
            "polling_condition": self.polling_condition,
            "Machine": Machine,
            "t": AssertionTester(),
            "debug": self.debug,
            "machines_qemu": self.machines,
            "machines_nspawn": [],
            "BaseMachine": Machine,
            "QemuMachine": Machine,
        }
        assert namespace.keys() == set(DRIVER_SYMBOLS), "the namespace differs from scriptnames.DRIVER_SYMBOLS"
        # NixOS scripts look for their output files under $out (the output directory).
        os.environ["out"] = str(self.out_dir.resolve())  # noqa: SIM112 (NixOS's lower-case name)
        for machine in self.machines:
            namespace[python_name(machine.name)] = machine
        if len(self.machines) == 1:
            namespace["machine"] = self.machines[0]
        for vlan in self.vlans:
            namespace[f"vlan{vlan.nr}"] = vlan
        self.logger.log(
            "additionally exposed symbols:\n    "
            + ", ".join(m.name for m in self.machines)
            + (",\n    " + ", ".join(f"vlan{v.nr}" for v in self.vlans) if self.vlans else "")
            + ",\n    "
            + ", ".join(DRIVER_SYMBOLS)
        )
        self._namespace = namespace
        return namespace

    def start_all(self) -> None:
        """Starts every machine; they boot in parallel."""
        with self.logger.nested("start all VMs"):
            for machine in self.machines:
                machine.start()

    def join_all(self) -> None:
        with self.logger.nested("wait for all VMs to finish"):
            for machine in self.machines:
                machine.wait_for_shutdown()
            if self._timer is not None:
                self._timer.cancel()

    def snapshot(self, name: str) -> None:
        """Saves every running machine's state under `name` (Machine.snapshot, for all of them)."""
        for machine in self.all_machines():
            if machine.booted:
                machine.snapshot(name)

    def restore(self, name: str) -> None:
        """Brings every running machine back to its state saved under `name` (Machine.restore)."""
        for machine in self.all_machines():
            if machine.booted:
                machine.restore(name)

    def subtest(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.logger.subtest(name)

    def serial_stdout_on(self) -> None:
        self.logger.print_serial_logs(True)

    def serial_stdout_off(self) -> None:
        self.logger.print_serial_logs(False)

    def check_polling_conditions(self) -> None:
        for condition in self.polling_conditions:
            condition.maybe_raise()

    def polling_condition(
        self,
        fun_: Callable[[], Any] | None = None,
        *,
        seconds_interval: Duration = 2.0,
        description: str | None = None,
    ) -> Any:
        driver = self

        class Poll:
            def __init__(self, fun: Callable[[], Any]) -> None:
                self.condition = PollingCondition(fun, driver.logger, seconds_interval, description)

            def __enter__(self) -> None:
                driver.polling_conditions.append(self.condition)

            def __exit__(self, *exc: object) -> None:
                driver.polling_conditions.remove(self.condition)

            def __call__(self) -> Any:
                return self.condition.condition()

            def wait(self, timeout: Duration = 900) -> None:
                self.condition.wait(timeout, driver.timeout_scale)

        if fun_ is None:
            return Poll
        return Poll(fun_)

    def _publish_ssh(self) -> None:
        assert self.ssh is not None and self._run_dir is not None
        state_dirs = {machine.name: machine.state_dir for machine in self.all_machines()}
        self.ssh.publish(self._run_dir, state_dirs, self.logger)

    def create_machine(
        self,
        start_command: str | Node,
        *,
        name: str | None = None,
        keep_vm_state: bool = False,
        keep_machine_state: bool = False,
    ) -> Machine:
        """A machine outside `nodes`: from a Node (built like any other) or a QEMU command.

        A start command is a shell command that starts QEMU with a vmrig-style
        guest; vmrig appends its own arguments, like the NixOS driver does.
        `keep_machine_state` is newer NixOS's name for `keep_vm_state`.
        """
        keep_vm_state = keep_vm_state or keep_machine_state
        assert self._run_dir is not None
        number = len(self.machines) + len(self._extra_machines) + 1
        if isinstance(start_command, Node):
            node = start_command
            name = name or f"machine{number}"
            if self.ssh is not None:
                node = ssh.backdoor_node(node, vsock=self.ssh.vsock)
            image = self.images.node_image(node, self.spec.options.suite, self.spec.options.mirror)
            config = self._machine_config(name, number, node, image)
        else:
            name = name or "machine"
            some_image = next(iter(self.node_images.values()))
            node = Node()
            # A QEMU command of the user's: no backdoor sshd is known to be in its image.
            config = self._machine_config(name, number, node, some_image, with_ssh=False)
            config.start_command = start_command
        self._lock_state_dir(name)
        machine = Machine(
            config,
            state_dir=self.tmp_dir / f"vm-state-{name}",
            out_dir=self.out_dir,
            logger=self.logger,
            keep_vm_state=keep_vm_state,
        )
        machine.boot_hooks.append(self.network.machine_booted)
        self._extra_machines.append(machine)
        if self.ssh is not None and name in self.ssh.endpoints:
            self._publish_ssh()
        return machine

    # -- running ---------------------------------------------------------------

    def _compiled_script(self) -> Callable[[], None]:
        namespace = self.test_symbols()
        script = self.spec.script
        if callable(script):
            function = script
            merged = dict(function.__globals__)
            merged.update(namespace)
            bound = types.FunctionType(
                function.__code__, merged, function.__name__, function.__defaults__, function.__closure__
            )
            return lambda: bound()
        source = textwrap.dedent(script)
        code = compile("\n" * (self.spec.script_first_line - 1) + source, self.spec.script_path, "exec")
        # The test file's own imports and helpers too, under the driver's globals;
        # the script runs in the prompt's namespace, so its variables stay visible there.
        for key, value in self.spec.module_globals.items():
            namespace.setdefault(key, value)
        return lambda: exec(code, namespace, None)

    def test_script(self) -> bool:
        """Runs the test script; logs its failure and returns False if it fails."""
        try:
            passed = self._run_script()
            self._await_timeout_interrupt()
        except KeyboardInterrupt:
            if not self.timed_out:
                raise
            passed = False
        if self.timed_out:
            self.report_failure(None)
            return False
        return passed

    def _run_script(self) -> bool:
        run = self._compiled_script()
        try:
            with self.logger.nested("run the VM test script"), self.debug.hooked():
                run()
        except Exception as error:  # the script's own errors are test failures
            if self.timed_out:
                return False  # the timeout stopped the VMs under the script's command
            self.report_failure(error)
            self.debug.failure(error)  # --debug-on-failure: a prompt at the failing line
            return False
        return True

    def _await_timeout_interrupt(self) -> None:
        """If the global timeout fired, lets its KeyboardInterrupt land here.

        The timer stops the VMs and then interrupts the main thread; a command
        broken by the stopped VM can end the script before the interrupt
        arrives, and it must not arrive later, in the cleanup.
        """
        if self._timer is None or self._timer.cancel():
            return
        self._timeout_interrupt_sent.wait(60)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)

    def run_tests(self) -> bool:
        """The whole non-interactive test: timer, script, final sync."""
        if self.global_timeout:
            self.logger.log(f"Test will time out and terminate in {self.global_timeout:g} seconds")
            # Pausable: a debugger prompt stops the clock (see vmrig.debug).
            self._timer = PausableTimer(self.global_timeout, self.terminate_test)
            self._timer.start()
        started = time.monotonic()
        passed = self.test_script()  # stops the timer
        if passed:
            for machine in self.machines:
                if machine.is_up():
                    machine.execute("sync")
        self.logger.log(f"test script finished in {time.monotonic() - started:.2f}s")
        return passed

    def terminate_test(self) -> None:
        """Runs on the timer thread when the global timeout is reached."""
        self.timed_out = True
        self.logger.error("timeout reached; test terminating...")
        for machine in self.all_machines():
            machine.release()
        # A real SIGINT, unlike _thread.interrupt_main(), also ends a sleep or a
        # blocking read in the script.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        self._timeout_interrupt_sent.set()

    def all_machines(self) -> list[Machine]:
        return self.machines + self._extra_machines

    def report_failure(self, error: BaseException | None) -> None:
        """Logs a failure the way a script author wants to see it."""
        if self.timed_out:
            message = f"global timeout of {self.global_timeout:g} seconds reached"
            self.logger.log_test_error(message)
            self.logger.mark_failed(message)
            return
        assert error is not None
        lines = ["Traceback (most recent call last):"]
        for frame in scripttrace.script_frames(error.__traceback__, self.spec.script_path):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
        lines.append(f"{type(error).__name__}: {error}")
        machine = scripttrace.failing_instance(error.__traceback__, Machine)
        if machine is not None and not isinstance(error, MachineError):
            lines.append(f"last console lines of {machine.name}:")
            lines.append(machine.console_tail())
        text = "\n".join(lines)
        self.logger.log_test_error(text)
        self.logger.mark_failed(f"{type(error).__name__}: {error}")

    # -- teardown --------------------------------------------------------------

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.ssh is not None:
            self.ssh.withdraw()
        for machine in self.all_machines():
            with contextlib.suppress(Exception):
                machine.release()
        for vlan in self.vlans:
            with contextlib.suppress(Exception):
                vlan.stop()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        for lock in self._state_locks:
            lock.close()
        self._state_locks.clear()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


__all__ = [
    "AssertionTester",
    "Driver",
    "PollingCondition",
    "VmrigError",
    "retry",
]
