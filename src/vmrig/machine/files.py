"""Copying files between the host and a guest (tar through the backdoor's data port)."""

from __future__ import annotations

import base64
import io
import os
import shlex
import tarfile
from pathlib import Path

from vmrig.errors import MachineError
from vmrig.machine.commands import Commands


class Files(Commands):
    """copy_from_host, copy_from_vm and their NixOS variants."""

    def copy_from_host(self, source: str, target: str) -> None:
        """Copies a host file or directory to `target` in the guest (modes kept, owned by root).

        As NixOS's `cp -r SOURCE TARGET`: into an existing directory `target`
        the copy goes as `target/<source's name>`; otherwise it becomes
        `target` (its parent made first). MachineError with cp's words on failure.
        """
        source_path = Path(source)
        if not source_path.exists():
            raise MachineError(f"{self.name}: copy_from_host: {source} does not exist on the host")
        name = Path(os.path.abspath(source)).name or "root"
        buffer = io.BytesIO()
        # dereference: a symlink (also one inside a directory) is copied as what it points to, as NixOS does
        with tarfile.open(fileobj=buffer, mode="w", dereference=True) as archive:
            archive.add(source_path, arcname=name, filter=_root_owned)
        # The name as bash's $'\xNN' escapes: any bytes a host file name holds, in an ASCII command line.
        quoted_name = "$'" + "".join(f"\\x{byte:02x}" for byte in os.fsencode(name)) + "'"
        # A trailing slash is dropped, as NixOS's Path(target) does.
        script = (
            f"t={shlex.quote(target.rstrip('/') or '/')}; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
            'tar -x -f - -C "$d" --no-same-owner; mkdir -p "$(dirname "$t")"; '
            f'cp -a "$d"/{quoted_name} "$t" 2>&1'
        )
        with self.nested(f"copying {source} from the host to {target}"):
            status, output = self._run(script, stdin=buffer.getvalue())
        if status != 0:
            reason = output.decode(errors="replace").strip() or f"exit code {status}"
            raise MachineError(f"{self.name}: copying {source} to {target} failed: {reason}")

    def copy_from_host_via_shell(self, source: str, target: str) -> None:
        """Copies one host file through the shell channel, like the NixOS driver."""
        data = Path(source).read_bytes()
        encoded = base64.b64encode(data).decode()
        self.succeed(f"mkdir -p $(dirname {target})")
        self.succeed(f"echo -n {encoded} | base64 -d > {target}")

    def copy_from_vm(self, source: str, target_dir: str = "") -> None:
        """Copies a guest file or directory into the output directory (under `target_dir`)."""
        src = source.rstrip("/") or "/"
        parent, name = os.path.split(src)
        status, data = self._run(f"tar -c -f - -C {shlex.quote(parent or '/')} {shlex.quote(name)}")
        if status != 0:
            raise MachineError(f"{self.name}: copy_from_vm: cannot read {source} (exit code {status})")
        destination = self.out_dir / target_dir
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(destination, filter=_keep_permissions)

    copy_from_machine = copy_from_vm


def _keep_permissions(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter (no absolute paths, nothing outside the target), but all of the
    guest's permission bits: that filter would drop group and other write permission."""
    safe = tarfile.tar_filter(member, dest_path)
    return safe.replace(mode=member.mode & 0o777, deep=False) if safe.mode is not None else safe


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
