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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vmrig.driver import Driver
from vmrig.log import Logger
from vmrig.machine import Machine
from vmrig.pytest.workers import WorkerSpace
from vmrig.spec import Node, Options, python_name
from vmrig.testfile import TestSpec

SCOPES = ("function", "class", "module", "package", "session")


class FallbackWarning(UserWarning):
    """A topology could not be saved, so each of its tests boots it from scratch."""


@dataclass(frozen=True)
class Settings:
    """The plugin's options, as the pool needs them."""

    snapshots: bool = True
    ssh_backdoor: bool = False
    serial: bool = False
    keep_failed: bool = False
    output: Path = Path("vmrig-output")


@dataclass(frozen=True, eq=False)
class Declaration:
    """What a machines() fixture declares: nodes (by name), options, scope, and where it was written."""

    nodes: dict[str, Node]
    options: Options
    scope: str
    restore: bool
    origin: Path
    line: int


class Machines(Mapping[str, Machine]):
    """A topology's running machines: `vms.server` (NixOS's Python names) or `vms["server"]`.

    With one node it is also `vms.machine`, as in a NixOS test script.
    `start_all()`, `driver` and `network` are the driver's own.
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    @property
    def driver(self) -> Driver:
        driver = self._topology.driver
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
    a Driver, its temporary directory, a label for messages, and how a test's code reaches
    a machine at a debugger prompt ("vms." for a fixture named vms, "" in a test file's script)."""

    def __init__(self, driver: Driver | None, tmp_dir: Path | None, label: str, prefix: str = "") -> None:
        self.driver = driver
        self.tmp_dir = tmp_dir
        self.label = label
        self.prefix = prefix

    def running(self) -> list[Machine]:
        return self.driver.all_machines() if self.driver is not None else []

    def ssh_hint(self) -> str | None:
        """The shell command that logs into machine NODE from another terminal, or None."""
        if self.driver is None or self.driver.ssh is None or self.tmp_dir is None:
            return None
        return f"TMPDIR={self.tmp_dir} vmrig ssh NODE"

    def stop(self) -> None:
        """Stops every machine and switch; idempotent."""
        if self.driver is not None:
            driver, self.driver = self.driver, None
            driver.cleanup()


class Topology(Running):
    """One booted instance of a Declaration: a Driver with its machines up."""

    def __init__(self, declaration: Declaration, settings: Settings, space: WorkerSpace, label: str) -> None:
        super().__init__(None, None, label)
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
        logger = Logger()
        logger.print_serial_logs(self.settings.serial)
        output = self.settings.output / "machines" / self.tmp_dir.parent.name / self.tmp_dir.name
        output.mkdir(parents=True, exist_ok=True)
        self.driver = Driver(
            spec,
            logger=logger,
            out_dir=output,
            global_timeout=None,
            tmp_dir=self.tmp_dir,
            snapshots=self.settings.snapshots,
        )
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
        shared = [machine.name for machine in self.driver.machines if machine.config.sidecars]
        if shared:
            return f"{', '.join(shared)}: shared directories (virtiofs) cannot be saved in a snapshot"
        return None


@dataclass
class Lease:
    """The machines a test is using, for its failure evidence and its debugger hints."""

    topologies: list[Running] = field(default_factory=list)
    failed: bool = False


class Pool:
    """The shared topologies of one pytest process, by declaration and scope node."""

    def __init__(self, settings: Settings, space: WorkerSpace) -> None:
        self.settings = settings
        self.space = space
        self.shared: dict[tuple[int, str], Topology] = {}
        self.kept: list[Running] = []
        self._live: list[Topology] = []

    def lease(
        self,
        declaration: Declaration,
        nodeid: str,
        scope_node: tuple[str, Callable[[Callable[[], object]], None]] | None,
        lease: Lease,
        variable: str,
    ) -> Iterator[Machines]:
        """Gives a test its machines: started for it from the booted snapshot, or (restore=False)
        the ones its scope shares.

        `scope_node` is the node id of the module, class, package or session
        the topology lives for, with that node's addfinalizer.
        """
        shared_key: tuple[int, str] | None = None
        if scope_node is None or declaration.restore:
            topology = self._boot(declaration, nodeid)
            if topology.fallback is not None and declaration.scope != "function":
                warnings.warn(
                    FallbackWarning(f"{topology.label}: the machines boot from scratch: {topology.fallback}"),
                    stacklevel=1,
                )
        else:
            scope_id, add_finalizer = scope_node
            shared_key = (id(declaration), scope_id)
            existing = self.shared.get(shared_key)
            if existing is None:
                topology = self._boot(declaration, scope_id or "session")
                self.shared[shared_key] = topology
                key = shared_key
                add_finalizer(lambda: self._end_shared(key))
            else:
                topology = existing
        topology.prefix = f"{variable}."
        lease.topologies.append(topology)
        try:
            yield topology.machines
        finally:
            if lease.failed and self.settings.keep_failed:
                # Kept for the end of the session; the scope's next test gets a new topology.
                if shared_key is not None:
                    self.shared.pop(shared_key, None)
                if topology not in self.kept:
                    self.kept.append(topology)
            elif shared_key is None:
                self._stop(topology)

    def _boot(self, declaration: Declaration, label: str) -> Topology:
        topology = Topology(declaration, self.settings, self.space, label)
        self._live.append(topology)
        topology.boot()
        return topology

    def _stop(self, topology: Topology) -> None:
        with contextlib.suppress(ValueError):
            self._live.remove(topology)
        topology.stop()

    def _end_shared(self, key: tuple[int, str]) -> None:
        topology = self.shared.pop(key, None)
        if topology is not None and topology not in self.kept:
            self._stop(topology)

    def stop_all(self) -> None:
        """Stops every topology, kept ones included (the end of the session, or Ctrl-C)."""
        running: list[Running] = [*self._live, *self.kept]
        for topology in running:
            with contextlib.suppress(Exception):
                topology.stop()
        self._live.clear()
        self.kept.clear()
        self.shared.clear()


def machines(
    *,
    scope: str = "module",
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
    for name, node in nodes.items():
        check_node_name(name)
        if not isinstance(node, Node):
            raise ArgumentError(f"machines({name}=...): expected a Node(...), got {type(node).__name__}")
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

    def vmrig_machines(vmrig_pool: Pool, request: pytest.FixtureRequest) -> Iterator[Machines]:
        yield from lease_for(vmrig_pool, declaration, request)

    vmrig_machines._vmrig_declaration = declaration  # type: ignore[attr-defined]
    return pytest.fixture(vmrig_machines)


LEASE = pytest.StashKey[Lease]()


def lease_of(item: pytest.Item) -> Lease:
    """The test's Lease, made on first use."""
    if LEASE not in item.stash:
        item.stash[LEASE] = Lease()
    return item.stash[LEASE]


def lease_for(pool: Pool, declaration: Declaration, request: pytest.FixtureRequest) -> Iterator[Machines]:
    """The body of every machines() fixture: the topology for this test, from the pool."""
    item = request.node
    scope_node: pytest.Collector | None = None
    if declaration.scope == "class":
        scope_node = item.getparent(pytest.Class) or item.getparent(pytest.Module)
    elif declaration.scope == "module":
        scope_node = item.getparent(pytest.Module)
    elif declaration.scope == "package":
        scope_node = item.getparent(pytest.Package) or item.session
    elif declaration.scope == "session":
        scope_node = item.session
    scope = (scope_node.nodeid, scope_node.addfinalizer) if scope_node is not None else None
    yield from pool.lease(declaration, item.nodeid, scope, lease_of(item), request.fixturename or "machines")
