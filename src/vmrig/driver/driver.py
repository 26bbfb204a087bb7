"""The Driver: a test run's setup, its script, the global timeout, and a cleanup that leaves nothing behind.

It gives the script the NixOS test driver's globals (vmrig.driver.namespace),
enforces the global timeout, reports a failure as the script's own traceback
plus the failing node's console (vmrig.driver.report), and leaves no QEMU or
vde_switch behind. The machines' configurations come from
vmrig.driver.assemble.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from vmrig import accel, proc, scriptcheck, ssh
from vmrig.debug import Debugger
from vmrig.driver import namespace, polling, report
from vmrig.driver.assemble import Assembler, with_ssh_backdoor
from vmrig.driver.polling import PollingCondition
from vmrig.errors import ArgumentError, Terminated, TestFileError, UnknownPackageError, UsageError
from vmrig.image.configlayer import NodeNetwork
from vmrig.image.store import ImageStore, NodeImage, make_room
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.net.faults import Network
from vmrig.net.vlan import VLan
from vmrig.runenv import RunEnvironment
from vmrig.scriptnames import DRIVER_SYMBOLS, method_keywords, public_attributes
from vmrig.spec import Node, SpecError, check_node_name, python_name
from vmrig.testfile import TestSpec, string_line
from vmrig.timeouts import Duration, TimeoutScale
from vmrig.timer import PausableTimer


def _calls_breakpoint(spec: TestSpec) -> bool:
    """Whether the script may stop at a breakpoint() prompt (then its screens are shown)."""
    script = spec.script
    if callable(script):
        return "breakpoint" in script.__code__.co_names
    return "breakpoint(" in script


SubtestListener = Callable[[str, float, float, BaseException | None], None]


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
        environment: RunEnvironment | None = None,
        debug_on_failure: bool = False,
        snapshots: bool = True,
    ) -> None:
        # The SSH backdoor adds sshd to every node's image and config layer.
        self.ssh: ssh.Backdoor | None
        self.ssh, spec = with_ssh_backdoor(spec)
        self.spec = spec
        self.logger = logger
        self.out_dir = out_dir.absolute()  # QEMU (screendump) resolves paths from its own directory
        self.keep_vm_state = keep_vm_state
        # Booted snapshots (vmrig.image.snapshot): never with kept state, whose disks outlive a run.
        self.snapshots = snapshots and not keep_vm_state
        self.global_timeout = global_timeout if global_timeout is not None else spec.options.global_timeout
        self.interactive = interactive
        # The environment's settings, read here unless the caller (cli, pytest plugin) read them.
        self.environment = environment or RunEnvironment.from_environ(os.environ)
        self.images = images or ImageStore(self.environment.cache_dir, progress=logger.info)
        self.tmp_dir = tmp_dir or self.environment.tmp_dir
        self.assembler = Assembler(
            spec,
            logger=logger,
            images=self.images,
            environment=self.environment,
            backdoor=self.ssh,
            tmp_dir=self.tmp_dir,
            snapshots=self.snapshots,
            interactive=interactive,
            # A prompt may come: the screens of machines with a display are shown then.
            show_screens=interactive or debug_on_failure or _calls_breakpoint(spec),
        )
        # Every machine mounts it at /tmp/shared, as in NixOS tests.
        self.shared_dir = self.assembler.shared_dir
        self.network_plan = self.assembler.network_plan
        self.machines: list[Machine] = []
        self.vlans: list[VLan] = []
        # Fault injection: the script's `network`.
        self.network = Network(self.all_machines, logger)
        self.polling_conditions: list[PollingCondition] = []
        self.node_images: dict[str, NodeImage] = {}
        self.timed_out = False
        self._extra_machines: list[Machine] = []
        self._timer: PausableTimer | None = None
        self._timed_out_at: BaseException | None = None  # what ended the script when the timeout hit
        self._timeout_interrupt_sent = threading.Event()
        self.debug = Debugger(logger, on_failure=debug_on_failure, timer=lambda: self._timer, focus=spec.script_path)
        self._namespace: dict[str, Any] | None = None
        # The script's error when test_script() returned False (None after a global timeout).
        self.failure: BaseException | None = None
        # Told of each subtest as it ends: (name, start as time.time(), seconds, its error or None).
        self.subtest_listeners: list[SubtestListener] = []

    @property
    def timeout_scale(self) -> TimeoutScale:
        """How the script's timeouts are scaled: chosen in setup(), once the accelerator is known."""
        return self.assembler.timeout_scale

    # -- preparation -----------------------------------------------------------

    def machine_names(self) -> list[str]:
        return self.assembler.machine_names()

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
            method_keywords=method_keywords(Machine),
        )

    def uses_exchange_dir(self) -> bool:
        """Whether machines mount the run's exchange directory at /tmp/shared (see Assembler.uses_exchange_dir)."""
        return self.assembler.uses_exchange_dir()

    def vlan_numbers(self) -> list[int]:
        return self.network_plan.vlan_numbers()

    def build_images(self) -> dict[str, NodeImage]:
        options = self.spec.options
        with self.logger.nested("building node images"):
            for name in self.machine_names():
                node = self.spec.nodes[name]
                with self.logger.nested(f"image for {name}"):
                    try:
                        self.node_images[name] = self.images.node_image(node, options.suite, options.mirror)
                    except UnknownPackageError as error:
                        package = error.packages[0]
                        raise TestFileError(
                            f"nodes[{name!r}]: Debian {options.suite} has no package {package!r}"
                            f" (apt could not find {', '.join(error.packages)})",
                            self.spec.path,
                            string_line(self.spec.path, package),
                        ) from error
        return self.node_images

    def network_of(self, name: str, number: int, node: Node) -> NodeNetwork:
        return self.assembler.network_of(name, number, node)

    def setup(self) -> None:
        """Builds what is missing, starts the vlans and creates (not boots) the machines."""
        if not self.node_images:
            self.build_images()
        if self.assembler.snapshots:  # a machine may save a snapshot: a full disk kills QEMU (SIGBUS) on its RAM file
            make_room(self.images.root, self.logger.log)
        first_image = self.node_images[self.machine_names()[0]]
        accel.check_qemu_version(proc.require_tool("qemu-system-x86_64"))
        self.assembler.accel = accel.choose(self.images.root, first_image.kernel, self.environment.accel)
        self.logger.log(f"accelerator: {self.assembler.accel}")
        try:
            self.assembler.timeout_scale = TimeoutScale.choose(self.assembler.accel, self.environment.timeout_factor)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if self.timeout_scale.factor != 1:
            self.logger.log(
                f"the script's timeouts are multiplied by {self.timeout_scale.factor:g} "
                f"({self.timeout_scale.reason}; VMRIG_TIMEOUT_FACTOR sets the factor)"
            )
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.assembler.run_dir = Path(tempfile.mkdtemp(prefix="vmrig-", dir=self.tmp_dir))
        if not self.keep_vm_state:
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        self.shared_dir.mkdir(mode=0o700, exist_ok=True)
        with self.logger.nested("start all VLans"):
            for nr in self.vlan_numbers():
                vlan = VLan(nr, run_dir, self.logger)
                self.vlans.append(vlan)
                vlan.start()
        for number, name in enumerate(self.machine_names(), start=1):
            self.assembler.lock_state_dir(name)
            node = self.spec.nodes[name]
            config = self.assembler.machine_config(name, number, node, self.node_images[name])
            self.machines.append(
                Machine(
                    config,
                    state_dir=self.assembler.state_dir(name),
                    out_dir=self.out_dir,
                    logger=self.logger,
                    keep_vm_state=self.keep_vm_state,
                    callbacks=[self.check_polling_conditions],
                )
            )
            self.machines[-1].boot_hooks.append(self.network.machine_booted)
            self._wire_neighbours(self.machines[-1])
        if self.ssh is not None:
            self._publish_ssh()
        self._announce_screens(self.machines)

    def _announce_screens(self, machines: list[Machine]) -> None:
        shown = [(machine.name, machine.config.viewer) for machine in machines if machine.config.viewer]
        if shown:
            width = max(len(name) for name, _viewer in shown) + 1
            lines = [f"    {name + ':':<{width}} {viewer.describe()}" for name, viewer in shown if viewer]
            self.logger.log("the machines' screens (once they are started):\n" + "\n".join(lines))

    # -- the script's world ----------------------------------------------------

    def test_symbols(self) -> dict[str, Any]:
        if self._namespace is None:
            self._namespace = namespace.script_globals(self)
        return self._namespace

    def start_all(self) -> None:
        """Starts every machine; they boot in parallel.

        The starts themselves run side by side too: each waits some tens of
        milliseconds for its QEMU's monitor and, restoring a booted snapshot,
        for the saved state to load. Raises the first machine's error (in
        the machines' order) once every start has ended.
        """
        with self.logger.nested("start all VMs"):
            waiting = [machine for machine in self.machines if not machine.booted]
            if len(waiting) <= 1:
                for machine in waiting:
                    machine.start()
                return
            for machine in waiting:  # saved and restored together (see Machine._await_company)
                machine._company = frozenset(other.name for other in self._neighbours(machine) if other in waiting)
            pool = ThreadPoolExecutor(max_workers=len(waiting), thread_name_prefix="vmrig-start")
            started: list[Future[None]] = []
            try:
                for machine in waiting:
                    started.append(pool.submit(machine.start))
                wait(started)
            except BaseException:
                # Ctrl-C or the global timeout: the starts under way end first, so that
                # the cleanup that follows finds every QEMU they started.
                while not all(future.done() for future in started):
                    with contextlib.suppress(KeyboardInterrupt):
                        wait(started)
                raise
            finally:
                pool.shutdown(wait=False)
            for future in started:
                future.result()

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

    @contextlib.contextmanager
    def subtest(self, name: str) -> Iterator[None]:
        """NixOS's subtest: a logged block (and JUnit case); its failure is logged and re-raised."""
        started, clock = time.time(), time.monotonic()
        try:
            # Its JUnit case shows the script's lines and the machine's console, as a failed run does.
            with self.logger.subtest(name, describe=lambda error: report.format_error(error, self.spec.script_path)):
                yield
        except BaseException as error:  # the global timeout's KeyboardInterrupt too
            self._subtest_ended(name, started, time.monotonic() - clock, error)
            raise
        self._subtest_ended(name, started, time.monotonic() - clock, None)

    def _subtest_ended(self, name: str, started: float, seconds: float, error: BaseException | None) -> None:
        for listener in self.subtest_listeners:
            listener(name, started, seconds, error)

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
        return polling.polling_condition(self, fun_, seconds_interval=seconds_interval, description=description)

    def dump_machine_ssh(self) -> None:
        """The newest NixOS driver's: logs how to log into each machine over the SSH backdoor."""
        if self.ssh is None:
            self.logger.log(
                "the SSH backdoor is off in this run (on in interactive runs, and with Options(ssh_backdoor=True))"
            )
            return
        self._publish_ssh()

    def _publish_ssh(self) -> None:
        assert self.ssh is not None and self.assembler.run_dir is not None
        state_dirs = {machine.name: machine.state_dir for machine in self.all_machines()}
        self.ssh.publish(self.assembler.run_dir, state_dirs, self.logger)

    def create_machine(
        self,
        start_command: str | Node | dict[str, Any],
        *,
        name: str | None = None,
        keep_vm_state: bool = False,
        keep_machine_state: bool = False,
    ) -> Machine:
        """A machine outside `nodes`: from a Node (built like any other) or a QEMU command.

        A start command is a shell command that starts QEMU with a vmrig-style
        guest; vmrig appends its own arguments, like the NixOS driver does.
        Its machine is named as in NixOS: `name`, else NAME from a command
        ending in `run-NAME-vm`, else "machine"; a Node's, else the first free
        `machineN`. `keep_machine_state` is newer NixOS's name for
        `keep_vm_state`; older NixOS scripts pass one dict (`startCommand`,
        `name`, `keepVmState`). Raises ArgumentError for another type, a name
        that cannot name a machine, and one that a machine has already.
        """
        if isinstance(start_command, dict):
            start_command, name, keep_vm_state = _create_machine_arguments(start_command, name, keep_vm_state)
        if not isinstance(start_command, str | Node):
            raise ArgumentError(
                f"create_machine(): pass a QEMU start command (str) or a Node, not {type(start_command).__name__}"
            )
        keep_vm_state = keep_vm_state or keep_machine_state
        assert self.assembler.run_dir is not None
        taken = {machine.name for machine in self.all_machines()}
        name, config = self.assembler.extra_machine_config(start_command, name, len(taken) + 1, self.node_images, taken)
        try:
            check_node_name(name)
        except SpecError as error:
            raise ArgumentError(f"create_machine(): {str(error).replace('node name', 'machine name')}") from None
        if name in taken:
            raise ArgumentError(
                f"create_machine(): a machine named {name!r} exists already; give this one another name (name=...)"
            )
        self.assembler.lock_state_dir(name)
        machine = Machine(
            config,
            state_dir=self.assembler.state_dir(name),
            out_dir=self.out_dir,
            logger=self.logger,
            keep_vm_state=keep_vm_state,
        )
        machine.boot_hooks.append(self.network.machine_booted)
        self._wire_neighbours(machine)
        self._extra_machines.append(machine)
        self._announce_screens([machine])
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
        return self._timed(self._run_script)

    def _timed(self, run: Callable[[], bool]) -> bool:
        """Runs `run` under the global timeout (if run_tests started it), then stops the timer."""
        try:
            passed = run()
            self._await_timeout_interrupt()
        except SystemExit:  # the script's sys.exit() or log.error(): the run ends here, and its clock
            if self._timer is not None:
                self._timer.cancel()
            raise
        except KeyboardInterrupt as interrupt:
            if not self.timed_out:
                raise
            self._timed_out_at = self._timed_out_at or interrupt
            passed = False
        if self.timed_out:
            self.report_failure(self._timed_out_at)
            return False
        return passed

    def _run_script(self) -> bool:
        run = self._compiled_script()
        try:
            with self.logger.nested("run the VM test script"), self.debug.hooked():
                run()
        except Exception as error:  # the script's own errors are test failures
            return self._failed(error, prompt=True)
        except SystemExit as stop:  # sys.exit(), or log.error() as in NixOS: the status is the run's
            if isinstance(stop, Terminated):
                reason = f"the driver was stopped by {stop.signal_name} while the test script ran"
                self.logger.log_test_error(reason)
                self.logger.mark_failed(reason)
            elif stop.code not in (None, 0):
                reason = f"the test script exited with status {stop.code} (sys.exit() or log.error())"
                self.logger.log_test_error(reason)
                self.logger.mark_failed(reason)
            raise
        return True

    def _failed(self, error: Exception, *, prompt: bool) -> bool:
        """Records and reports a failure of the run (False); `prompt`: --debug-on-failure's prompt at it."""
        if self.timed_out:
            self._timed_out_at = error  # the timeout stopped the VMs under the command
            return False
        self.failure = error
        self.report_failure(error)
        if prompt:
            self.debug.failure(error)  # --debug-on-failure: a prompt at the failing line
        return False

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
            # The script's scaled timeouts end before it (a default 900 s wait is 4500 s under TCG).
            scale = dataclasses.replace(self.timeout_scale, left=self._timer.seconds_left)
            self.assembler.timeout_scale = scale
            for machine in self.all_machines():
                machine.config.timeout_scale = scale
        started = time.monotonic()
        passed = self._timed(self._script_then_sync)  # stops the timer
        self.logger.log(f"test script finished in {time.monotonic() - started:.2f}s")
        return passed

    def _script_then_sync(self) -> bool:
        """The script, then `sync` on every machine that is up, as NixOS's run_tests does: both
        within the global timeout (a machine the script left paused or hung must not hang the run)."""
        if not self._run_script():
            return False
        try:
            for machine in self.machines:
                if machine.is_up():
                    machine.execute("sync")
        except Exception as error:
            return self._failed(error, prompt=False)
        return True

    def terminate_test(self) -> None:
        """Runs on the timer thread when the global timeout is reached."""
        self.timed_out = True
        self.logger.alert("timeout reached; test terminating...")
        # The script's command may still hold a machine's channel: its terminal is then left out.
        report.save_evidence(self.logger, self.all_machines(), self.out_dir, wait=2.0)
        reason = f"the global timeout of {self.global_timeout:g} seconds was reached"
        # The SIGINT below may end the script's command before the released machine's error does.
        self.logger.interrupting(f"QEMU was stopped because {reason}")
        for machine in self.all_machines():
            machine.release(reason=reason)
        # A real SIGINT, unlike _thread.interrupt_main(), also ends a sleep or a
        # blocking read in the script.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        self._timeout_interrupt_sent.set()

    def all_machines(self) -> list[Machine]:
        return self.machines + self._extra_machines

    def _wire_neighbours(self, machine: Machine) -> None:
        machine._neighbours_up = functools.partial(self._neighbours_up, machine)
        machine._company_machines = functools.partial(self._company_of, machine)

    def _neighbours(self, machine: Machine) -> list[Machine]:
        """The other machines that share a vlan with `machine`."""
        vlans = {card.vlan for card in machine.config.vlan_cards}
        return [
            other
            for other in self.all_machines()
            if other is not machine and vlans & {card.vlan for card in other.config.vlan_cards}
        ]

    def _neighbours_up(self, machine: Machine) -> list[str]:
        """The machines running beside `machine`, not started with it (see Machine._neighbour_blocker).

        One whose boot is still to be saved is saved first: `machine`'s boot
        must not reach into it.
        """
        running = [other for other in self._neighbours(machine) if other.booted and other.name not in machine._company]
        for other in running:
            if not other.connected and other._save_to is not None:
                other.connect()
        return [other.name for other in running]

    def _company_of(self, machine: Machine) -> list[Machine]:
        return [other for other in self._neighbours(machine) if other.name in machine._company]

    def report_failure(self, error: BaseException | None) -> None:
        """Logs a failure the way a script author wants to see it."""
        if self.timed_out:
            report.report_timeout(self.logger, self.global_timeout, error, self.spec.script_path, self.all_machines())
            return
        assert error is not None
        report.report_error(self.logger, error, self.spec.script_path)
        report.save_evidence(self.logger, self.all_machines(), self.out_dir)

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
        if self.assembler.run_dir is not None:
            shutil.rmtree(self.assembler.run_dir, ignore_errors=True)
            self.assembler.run_dir = None
        self.assembler.release_state_dirs()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _create_machine_arguments(
    arguments: dict[str, Any], name: str | None, keep_vm_state: bool
) -> tuple[Any, str | None, bool]:
    """Older NixOS's create_machine({"startCommand": ..., "name": ..., "keepVmState": ...}), as three values."""
    unknown = sorted(set(arguments) - {"startCommand", "name", "keepVmState"})
    if unknown or "startCommand" not in arguments:
        raise ArgumentError(
            "create_machine(dict): NixOS's older form takes 'startCommand' and optionally 'name' and"
            f" 'keepVmState'{'; unknown: ' + ', '.join(map(repr, unknown)) if unknown else ''}"
        )
    return arguments["startCommand"], name or arguments.get("name"), keep_vm_state or bool(arguments.get("keepVmState"))
