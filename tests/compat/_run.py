"""Running the compatibility corpus: every `*.py` here not starting with `test_` or `_` is a vmrig test file.

The corpus is split over two pytest modules (test_corpus_1.py, test_corpus_2.py) so
that pytest-xdist's --dist loadfile runs the halves on two workers at once.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_vmrig

CORPUS_DIR = Path(__file__).resolve().parent
CORPUS = sorted(path for path in CORPUS_DIR.glob("*.py") if not path.name.startswith(("test_", "_")))
# Image builds (one per package set) plus up to three emulated boots.
RUN_TIMEOUT = 2400


def half(number: int) -> list[Path]:
    """The corpus files of half `number` (1 or 2)."""
    return CORPUS[number - 1 :: 2]


def check_passes(test_file: Path, tmpdir: Path) -> None:
    """Runs `test_file` with `vmrig run` as a user would; it must pass."""
    result = run_vmrig("run", "--no-serial", test_file, tmpdir=tmpdir, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"{test_file.name}: exit code {result.returncode}\n{result.stderr[-5000:]}"
    assert "test passed" in result.stderr, result.stderr[-3000:]
