"""The compatibility corpus: NixOS-style test files for Debian services, collected by vmrig's pytest plugin.

Every file in corpus/ is a vmrig test file (`vmrig_files` in pyproject.toml),
run as one pytest item the way `vmrig run` runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
# Image builds (one per package set) plus up to three emulated boots.
RUN_TIMEOUT = 2400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == CORPUS_DIR:
            item.add_marker(pytest.mark.vm)
            item.add_marker(pytest.mark.timeout(RUN_TIMEOUT + 120))
