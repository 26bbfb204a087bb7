"""Machines for plain pytest tests: a declared topology, and each test's machines started from its booted snapshot.

A topology is the `nodes` of a test file declared next to pytest tests
(vmrig.pytest.machines). Its first boot is saved as a booted snapshot (see
vmrig.image.snapshot), and every test gets machines started from that
snapshot: the booted state, clean, in about a second and a half here, where
QEMU's loadvm of the same state in the running machine took about five
(benchmarks/pytest_plugin.py). Where a topology cannot be saved (snapshots
turned off, or a virtiofs shared directory, which QEMU cannot migrate), each
test boots it from scratch instead, and a warning says so. With
restore=False, one boot is shared by the tests of the fixture's scope.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from vmrig.driver import Driver
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.pytest.workers import WorkerSpace
from vmrig.runenv import RunEnvironment
from vmrig.spec import Node, Options, python_name
from vmrig.testfile import TestSpec

Scope = Literal["function", "class", "module", "package", "session"]
SCOPES: tuple[Scope, ...] = ("function", "class", "module", "package", "session")


class FallbackWarning(UserWarning):
    """A topology could not be saved, so each of its tests boots it from scratch."""


@dataclass(frozen=True)
class Settings:
    """The plugin's options, as the pool needs them."""

    environment: RunEnvironment  # the environment's settings, read once by pytest_configure
    snapshots: bool = True
    ssh_backdoor: bool = False
    serial: bool = False
    keep_failed: bool = False
    output: Path = Path("vmrig-output")

    def driver(self, spec: TestSpec, *, out_dir: Path, tmp_dir: Path) -> Driver:
        """A driver for `spec` as the plugin runs one: serial lines shown as asked, snapshots, the environment."""
        logger = Logger()
        logger.print_serial_logs(self.serial)
        return Driver(
            spec,
            logger=logger,
            out_dir=out_dir,
            tmp_dir=tmp_dir,
            snapshots=self.snapshots,
            environment=self.environment,
        )


@dataclass(frozen=True, eq=False)
class Declaration:
    """What a machines() fixture declares: nodes (by name), options, scope, and where it was written."""

    nodes: dict[str, Node]
    options: Options
    scope: str
    restore: bool
    origin: Path
    line: int


class Machines:
    """A topology's running machines: `vms.server` (NixOS's Python names) or `vms["server"]`.

    With one node it is also `vms.machine`, as in a NixOS test script.
    `start_all()`, `driver` and `network` are the driver's own; `for name in vms`,
    `len(vms)` and `"server" in vms` work on node names.
    """

    # Attributes of its own, which no node may be named after.
    OWN_NAMES = ("driver", "network", "start_all", "topology")

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    @property
    def driver(self) -> Driver:
        driver = self.topology.driver
        assert driver is not None, "the topology is not running"
        return driver

    def _by_name(self) -> dict[str, Machine]:
        return {machine.name: machine for machine in self.driver.all_machines()}

    def __getitem__(self, name: str) -> Machine:
        return self._by_name()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name())

    def __len__(self) -> int:
        return len(self._by_name())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name()

    def __getattr__(self, name: str) -> Machine:
        if name.startswith("_"):
            raise AttributeError(name)
        machines = self.driver.all_machines()
        for machine in machines:
            if python_name(machine.name) == name:
                return machine
        if name == "machine" and len(machines) == 1:
            return machines[0]
        known = ", ".join(python_name(machine.name) for machine in machines)
        raise AttributeError(f"no machine {name!r} in this topology (it has: {known})")

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *(python_name(name) for name in self)]

    def start_all(self) -> None:
        self.driver.start_all()

    @property
    def network(self) -> Any:
        return self.driver.network

    def __repr__(self) -> str:
        return f"<vmrig machines {', '.join(self)}>"


class Running:
    """A running set of machines as the plugin sees it (evidence, debugger hints, keeping):
    a Driver, its temporary directory and a label for messages. `variable` is how a test's
    code reaches the machines at a debugger prompt: the fixture's name ("vms"), or None in a
    test file's item, where the failing frame has a dict `machines` by node name."""

    def __init__(self, driver: Driver | None, tmp_dir: Path | None, label: str, variable: str | None = None) -> None:
        self.driver = driver
        self.tmp_dir = tmp_dir
        self.label = label
        self.variable = variable
        # A test that used these machines failed (with --vmrig-keep-failed they are kept).
        self.failed = False

    def reach(self, name: str) -> str:
        """The expression that is machine `name` at a debugger prompt in the failing test."""
        if self.variable is None:
            return f"machines[{name!r}]"
        return f"{self.variable}.{python_name(name)}"

    def running(self) -> list[Machine]:
        return self.driver.all_machines() if self.driver is not None else []

    def ssh_command(self, name: str) -> str | None:
        """The shell command that logs into machine `name` from another terminal, or None
        without the SSH backdoor."""
        if self.driver is None or self.driver.ssh is None or self.tmp_dir is None:
            return None
        return f"TMPDIR={self.tmp_dir} vmrig ssh {name}"

    def stop(self) -> None:
        """Stops every machine and switch; idempotent."""
        if self.driver is not None:
            driver, self.driver = self.driver, None
            driver.cleanup()


class Topology(Running):
    """One booted instance of a Declaration: a Driver with its machines up."""

    def __init__(self, declaration: Declaration, settings: Settings, space: WorkerSpace, label: str) -> None:
        super().__init__(None, None, label, variable="machines")
        self.declaration = declaration
        self.settings = settings
        self.space = space
        self.machines = Machines(self)
        # Why each test boots this topology from scratch (None: from its booted snapshot).
        self.fallback: str | None = None

    def boot(self) -> None:
        """Builds what is missing, boots every machine and waits for their backdoors (basic.target)."""
        declaration = self.declaration
        self.tmp_dir, offset = self.space.topology()
        options = dataclasses.replace(
            declaration.options,
            vsock_offset=offset,
            ssh_backdoor=declaration.options.ssh_backdoor or self.settings.ssh_backdoor,
        )
        spec = TestSpec(
            name=self.label,
            path=declaration.origin,
            nodes=dict(sorted(declaration.nodes.items())),
            options=options,
            script="",  # no script: no /tmp/shared and no display unless a node asks (Node.graphics)
            script_path=str(declaration.origin),
            script_first_line=declaration.line,
        )
        # Made by whatever writes there first (a screenshot, copy_from_vm), not for every test.
        output = self.settings.output / "machines" / self.tmp_dir.parent.name / self.tmp_dir.name
        self.driver = self.settings.driver(spec, out_dir=output, tmp_dir=self.tmp_dir)
        try:
            self.driver.setup()
            self.driver.start_all()
            for machine in self.driver.machines:
                machine.connect()
        except BaseException:
            self.stop()
            raise
        self.fallback = self._why_no_snapshot()

    def _why_no_snapshot(self) -> str | None:
        """Why this topology's boot is not saved as a booted snapshot, or None when it is."""
        if not self.settings.snapshots:
            return "snapshots are turned off (--vmrig-no-snapshots)"
        assert self.driver is not None
        blocked = [
            f"{machine.name}: {blocker}"
            for machine in self.driver.machines
            if (blocker := machine._snapshot_blocker()) is not None
        ]
        return "; ".join(blocked) or None


@dataclass
class Lease:
    """The machines started for one test (function-scoped fixtures, test files), for its
    failure evidence and its debugger hints."""

    topologies: list[Running] = field(default_factory=list)


class Pool:
    """The running topologies of one pytest process, and those kept after a failure."""

    def __init__(self, settings: Settings, space: WorkerSpace) -> None:
        self.settings = settings
        self.space = space
        self.kept: list[Running] = []
        self._live: list[Topology] = []

    def provide(self, declaration: Declaration, label: str, variable: str, lease: Lease | None) -> Iterator[Machines]:
        """Boots a topology for a fixture's scope (one test, or a module... with restore=False),
        yields its machines and stops them at the fixture's teardown, unless a test that used
        them failed and --vmrig-keep-failed keeps them for the end of the session."""
        topology = Topology(declaration, self.settings, self.space, label)
        topology.variable = variable
        self._live.append(topology)
        topology.boot()
        if topology.fallback is not None and declaration.scope != "function" and self.settings.snapshots:
            warnings.warn(
                FallbackWarning(f"{topology.label}: the machines boot from scratch: {topology.fallback}"),
                stacklevel=1,
            )
        if lease is not None:
            lease.topologies.append(topology)
        try:
            yield topology.machines
        finally:
            if topology.failed and self.settings.keep_failed:
                self.kept.append(topology)
            else:
                with contextlib.suppress(ValueError):
                    self._live.remove(topology)
                topology.stop()

    def stop_all(self) -> None:
        """Stops every topology, kept ones included (the end of the session, or Ctrl-C)."""
        running: list[Running] = [*self._live, *self.kept]
        for topology in running:
            with contextlib.suppress(Exception):
                topology.stop()
        self._live.clear()
        self.kept.clear()


def machines(
    *,
    scope: Scope = "module",
    restore: bool = True,
    options: Options | None = None,
    **nodes: Node,
) -> Any:
    """A pytest fixture of running machines, one per keyword: `vms = machines(server=Node(...))`.

    The fixture is named after the variable it is assigned to, and gives a
    Machines (`vms.server.succeed(...)`, NixOS's method set). By default
    (`restore`) each test gets the machines in their booted state, started
    from the topology's booted snapshot, so no test sees what another left;
    where that snapshot cannot exist, each test boots them from scratch.
    With `restore=False`, one boot is shared by the tests of `scope`
    ("class", "module", "package" or "session"; "function" always boots for
    the test). Raises SpecError for a bad node or option and ArgumentError
    for an unknown scope, when the test module is imported.
    """
    from vmrig.errors import ArgumentError
    from vmrig.spec import check_node_name

    if scope not in SCOPES:
        raise ArgumentError(f"machines(scope={scope!r}): use one of {', '.join(SCOPES)}")
    if not nodes:
        raise ArgumentError("machines(): give at least one node, e.g. machines(machine=Node())")
    if not isinstance(restore, bool):
        raise ArgumentError(f"machines(restore=...): expected True or False, got {restore!r}")
    variables: dict[str, str] = {}
    for name, node in nodes.items():
        check_node_name(name)
        if not isinstance(node, Node):
            raise ArgumentError(f"machines({name}=...): expected a Node(...), got {type(node).__name__}")
        variable = python_name(name)
        if variable in variables:
            raise ArgumentError(f"machines(): nodes {variables[variable]!r} and {name!r} are both `{variable}`")
        if variable.startswith("_") or variable in Machines.OWN_NAMES:
            raise ArgumentError(
                f"machines(): node {name!r} would be `vms.{variable}`, which is not a machine; "
                f"name it otherwise (not {', '.join(Machines.OWN_NAMES)}, nor starting with a digit or '_')"
            )
        variables[variable] = name
    if options is not None and not isinstance(options, Options):
        raise ArgumentError(f"machines(options=...): expected an Options(...), got {type(options).__name__}")
    caller = sys._getframe(1)
    declaration = Declaration(
        nodes=dict(nodes),
        options=options or Options(),
        scope=scope,
        restore=restore,
        origin=Path(caller.f_code.co_filename),
        line=caller.f_lineno,
    )

    shared = not restore and scope != "function"

    def vmrig_machines(vmrig_pool: Pool, request: pytest.FixtureRequest) -> Iterator[Machines]:
        variable = request.fixturename or "machines"
        if shared:  # one boot for the fixture's pytest scope
            yield from vmrig_pool.provide(declaration, request.node.nodeid or "session", variable, None)
        else:  # a start from the booted snapshot for each test
            yield from vmrig_pool.provide(declaration, request.node.nodeid, variable, lease_of(request.node))

    vmrig_machines._vmrig_declaration = declaration  # type: ignore[attr-defined]
    return pytest.fixture(vmrig_machines, scope=scope if shared else "function")


LEASE = pytest.StashKey[Lease]()


def lease_of(item: pytest.Item) -> Lease:
    """The test's Lease, made on first use."""
    if LEASE not in item.stash:
        item.stash[LEASE] = Lease()
    return item.stash[LEASE]
