"""The compatibility corpus, half 1: NixOS-style test files for Debian services, each run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat._run import RUN_TIMEOUT, check_passes, half

pytestmark = pytest.mark.vm


@pytest.mark.timeout(RUN_TIMEOUT + 120)
@pytest.mark.parametrize("test_file", half(1), ids=[path.stem for path in half(1)])
def test_corpus_file_passes(test_file: Path, vm_tmp: Path) -> None:
    check_passes(test_file, vm_tmp)
