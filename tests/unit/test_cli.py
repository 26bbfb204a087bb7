"""The CLI's answer to errors, without VMs: one message and an exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import failing_tools, run_vmrig, write_test_file

import vmrig
from vmrig import cli
from vmrig.errors import HostCommandFailed, ImageBuildError, MachineError, UsageError
from vmrig.image.store import ImageStore, host_mirror, key_of
from vmrig.spec import Options


def test_errors_map_to_one_message_and_an_exit_status() -> None:
    failed = HostCommandFailed(["mkfs.ext4", "-d", "/a b"], 1, stderr=b"No space left on device\n")
    assert cli.failure(failed) == (
        "error: command failed (exit status 1): mkfs.ext4 -d '/a b'\nNo space left on device",
        cli.EXIT_USAGE,
    )
    assert cli.failure(UsageError("no")) == ("error: no", cli.EXIT_USAGE)
    assert cli.failure(ImageBuildError("apt")) == ("image build failed: apt", cli.EXIT_FAILED)
    assert cli.failure(MachineError("node1: gone")) == ("machine error: node1: gone", cli.EXIT_FAILED)


def test_build_with_a_failing_host_command_prints_one_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A finished base layer in the cache: the build goes straight to the node's disk, and mkfs.ext4 fails.
    cache = tmp_path / "cache"
    store = ImageStore(cache)
    base = cache / f"base-{key_of(store.base_inputs(Options().suite, host_mirror()))}"
    (base / "root" / "etc").mkdir(parents=True)
    (base / "complete").write_text("")
    failing_tools(monkeypatch, tmp_path, "mkfs.ext4", "qemu-img", message="mkfs.ext4: No space left on device")
    test_file = write_test_file(tmp_path, 'from vmrig import Node\nnodes = {"node1": Node()}\ntest_script = ""\n')
    source = str(Path(vmrig.__file__).parent.parent)
    result = run_vmrig(
        "build", test_file, tmpdir=tmp_path, env={"VMRIG_CACHE_DIR": str(cache), "PYTHONPATH": source}, timeout=60
    )
    assert result.returncode == cli.EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: command failed (exit status 1): " in result.stderr
    assert "mkfs.ext4: No space left on device" in result.stderr
    assert not list(cache.glob("image-*"))


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "run", "t.py"], True),
        (["run", "-v", "t.py"], True),
        (["run", "t.py", "--verbose"], True),
        (["check", "-v", "t.py"], True),
        (["gc", "-v"], True),
        (["run", "t.py"], False),
        (["build", "t.py"], False),
    ],
)
def test_verbose_is_taken_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    assert cli.build_parser().parse_args(argv).verbose is verbose
