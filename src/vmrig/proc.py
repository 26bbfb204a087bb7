"""The one funnel every host subprocess goes through.

`run` waits for a command, `spawn` starts a long-lived one. Both log the
command line (logger "vmrig.proc", debug level), give the child a predictable
environment, and kill the child if anything goes wrong on our side, so no
helper survives an exception. Long-lived children are also started with a
parent-death signal: they die with the driver even when it is SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from vmrig.errors import HostToolMissing

LOG = logging.getLogger("vmrig.proc")

# Host programs vmrig calls, and the Debian package that provides each.
TOOL_PACKAGES: dict[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "vde_switch": "vde2",
    "socat": "socat",
    "ssh": "openssh-client",
    "tesseract": "tesseract-ocr",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "zstd": "zstd",
    "lz4": "lz4",
}


def require_tool(name: str) -> str:
    """The path of host program `name`, or HostToolMissing naming its package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise HostToolMissing(name, TOOL_PACKAGES.get(name, name))
    return path


def tail(output: bytes | str, lines: int) -> list[str]:
    """The last `lines` lines of a program's output, decoded, trailing blank space dropped."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return text.rstrip().splitlines()[-lines:]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    env.pop("LANGUAGE", None)
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Runs `cmd` to completion; raises CalledProcessError when `check` and it fails."""
    argv = [str(part) for part in cmd]
    LOG.debug("+ %s", shlex.join(argv))
    out = subprocess.PIPE if capture else None
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        env=child_env(env),
        cwd=cwd,
    ) as child:
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except BaseException:
            child.kill()
            child.wait()
            raise
    result = subprocess.CompletedProcess(argv, child.returncode, stdout or b"", stderr or b"")
    if check and child.returncode != 0:
        LOG.debug("%s returned exit code %d", argv[0], child.returncode)
        raise subprocess.CalledProcessError(child.returncode, argv, result.stdout, result.stderr)
    return result


def spawn(
    cmd: Sequence[str | Path],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Starts a long-lived child that the kernel kills when this process dies.

    The parent-death signal fires when the *thread* that started the child
    ends, so call this from a thread that lives as long as the child should.
    """
    argv = [str(part) for part in cmd]
    LOG.debug("+ %s", shlex.join(argv))
    setpriv = require_tool("setpriv")
    return subprocess.Popen(
        [setpriv, "--pdeathsig", "KILL", "--", *argv],
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=pass_fds,
        env=child_env(env),
        cwd=cwd,
    )


def stop(child: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Terminates a spawned child, then kills it if it lingers."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
