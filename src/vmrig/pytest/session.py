"""The plugin's state in one pytest process (an xdist worker has its own): settings, worker space, pool."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

import pytest

from vmrig.pytest import evidence
from vmrig.pytest.topology import LEASE, Pool, Settings
from vmrig.pytest.workers import WorkerSpace


@dataclass
class State:
    """What the plugin keeps for one pytest process."""

    settings: Settings
    space: WorkerSpace
    pool: Pool
    globs: list[PurePath]  # the test-file globs, absolute (plugin._globs)
    interrupted: bool = False


STATE = pytest.StashKey[State]()


def worker_id(config: pytest.Config) -> str:
    """pytest-xdist's name for this worker ("gw0", ...), or "main" outside xdist."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if isinstance(workerinput, dict) else "main"


def state(config: pytest.Config) -> State:
    return config.stash[STATE]


def output_of(config: pytest.Config, nodeid: str) -> Path:
    """The directory of one test's evidence and screenshots."""
    return evidence.output_dir(state(config).settings.output, nodeid)


def keeps(item: pytest.Item) -> bool:
    """Whether a test file's machines stay up after its test (it failed, with --vmrig-keep-failed);
    if so, they are handed to the pool's kept list, for the end of the session."""
    settings = state(item.config).settings
    leased = item.stash.get(LEASE, None)
    if not (settings.keep_failed and leased is not None and any(t.failed for t in leased.topologies)):
        return False
    state(item.config).pool.kept.extend(leased.topologies)
    return True
