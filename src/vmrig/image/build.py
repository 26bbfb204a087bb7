"""Building image content on the host: packages in a chroot, the ext4 root disk, the initramfs."""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import re
import shlex
from pathlib import Path

from vmrig import proc
from vmrig.contract import GUEST_DIR
from vmrig.errors import HostCommandFailed, ImageBuildError, UnknownPackageError
from vmrig.image.cpio import CpioWriter
from vmrig.spec import DEFAULT_DISK_MIB

# Modules the initramfs loads: the root disk and the network cards (their
# addresses are set before systemd starts), and the ACPI power button's driver
# with the input event devices logind watches: udev's coldplug skips ACPI
# objects (customize.sh), which left QEMU's system_powerdown without a driver
# to hear it, and its deprioritised module loads brought evdev seconds after
# multi-user.target under TCG.
# (Built-in drivers have no module file and are skipped: virtio_pci and
# virtio_console are built into trixie's cloud kernel, modules in bookworm's.)
INITRAMFS_MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "virtio_net", "evdev", "button")
# A kernel from the node's packages (the generic one) may have as modules what the
# cloud kernel builds in: the root file system and its checksums too. And the DRM
# driver of QEMU's VGA (bochs): loaded by udev, it came 9 s after basic.target
# under TCG, and X waited for it.
NODE_KERNEL_MODULES = (*INITRAMFS_MODULES, "crc32c_generic", "crc32c_intel", "ext4", "bochs")
BUSYBOX_APPLETS = (
    "sh",
    "mount",
    "umount",
    "insmod",
    "cat",
    "mkdir",
    "cp",
    "chroot",
    "switch_root",
    "usleep",
    "echo",
    "ip",
    "ln",
    "chown",
    "chmod",
)


def apt_tail(data: bytes, lines: int = 25) -> str:
    """apt's error and warning lines in a failed build's output, else its last lines."""
    errors = [line for line in data.decode(errors="replace").splitlines() if line.startswith(("E:", "W:", "Error"))]
    return "\n".join(errors or proc.tail(data, lines))


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


CHROOT_SCRIPT = r"""
set -eu
root=$1
shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
# apt needs the host's name servers; the image keeps its own resolv.conf (the base's
# without name servers), unless its packages made another (systemd-resolved's link).
mv "$root/etc/resolv.conf" "$root/etc/resolv.conf.vmrig" 2>/dev/null || :
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
export DEBIAN_FRONTEND=noninteractive
# The host's temporary directory (vmrig runs often set TMPDIR) does not exist in the chroot.
export TMPDIR=/tmp
unset TMP TEMP
status=0
"$@" || status=$?
rm -f "$root/usr/sbin/policy-rc.d"
if [ ! -L "$root/etc/resolv.conf" ] && cmp -s /etc/resolv.conf "$root/etc/resolv.conf"; then
    rm -f "$root/etc/resolv.conf"
    mv "$root/etc/resolv.conf.vmrig" "$root/etc/resolv.conf" 2>/dev/null || :
else
    rm -f "$root/etc/resolv.conf.vmrig"
fi
exit $status
"""


# The base image masks units a test rarely wants (guest/customize.sh), some of
# packages it does not have, such as systemd-timesyncd; a package the node names
# and installs gets those units back, enabled as Debian's presets enable them
# (its postinst left them disabled, masked as they were). Naming a package the
# base image has (systemd, util-linux) changes nothing.
INSTALLED_BEFORE = "vmrig_had=\" $(dpkg-query -W -f '${Package} ' 2>/dev/null || :)\""
UNMASK_NAMED = (
    "for p in {names}; do"
    ' case "$vmrig_had" in *" $p "*) continue;; esac;'
    ' for u in $(dpkg-query -L "$p" 2>/dev/null | grep -E "^(/usr)?/lib/systemd/system/[^/]+$" || :); do'
    " m=/etc/systemd/system/${{u##*/}};"
    ' if [ "$(readlink "$m")" = /dev/null ]; then rm -f "$m"; systemctl preset -q "${{u##*/}}" || :; fi;'
    " done; done"
)


def package_name(package: str) -> str:
    """The package's name in an apt-get install argument (`name`, `name=version`, `name/suite`, `name:arch`)."""
    return re.split(r"[=/:]", package, maxsplit=1)[0]


# NixOS's well-known paths (/run/current-system/sw/bin...), made again for the layer's packages and build commands.
NIXOS_PATHS = "sh -s <<'VMRIG_NIXOS_PATHS'\n{script}\nVMRIG_NIXOS_PATHS"


# What the chroot script prints when one of Node.build_commands fails: "<this> INDEX STATUS".
BUILD_STEP_FAILED = "vmrig: build command failed:"


def install_script(packages: list[str], commands: list[str]) -> str:
    """The /bin/sh script that installs `packages` and runs `commands` in an image's chroot.

    One script, so that a command's `cd` or variable holds for the next; when
    one of `commands` fails, its EXIT trap prints BUILD_STEP_FAILED, the
    command's index and its exit status on stderr.
    """
    steps = ["apt-get -q update"]
    if packages:
        steps.append(INSTALLED_BEFORE)
        steps.append("apt-get -q -y --no-install-recommends -o Dpkg::Use-Pty=0 install " + " ".join(packages))
        steps.append(UNMASK_NAMED.format(names=" ".join(shlex.quote(package_name(p)) for p in packages)))
    for index, command in enumerate(commands):
        # The empty line ends a command whose last line ends in a backslash.
        steps += [f"vmrig_step={index}", command, ""]
    steps += ["vmrig_step=", NIXOS_PATHS.format(script=(GUEST_DIR / "nixos-paths").read_text().rstrip("\n"))]
    steps += ["apt-get clean", "rm -rf /var/lib/apt/lists/*"]
    # On a line of its own, also after output that did not end its line.
    report = f'[ $s -eq 0 ] || [ -z "$vmrig_step" ] || printf "\\n{BUILD_STEP_FAILED} %s %s\\n" "$vmrig_step" $s >&2'
    trap = f"trap 's=$?; {report}' EXIT"
    return "set -e\nvmrig_step=\n" + trap + "\n" + "\n".join(steps) + "\n"


def install_in_chroot(tree: Path, packages: list[str], commands: list[str]) -> None:
    """apt-get install and build commands inside `tree`, in a private mount namespace.

    Raises UnknownPackageError for a package apt does not know, ImageBuildError
    naming the failed build command (Node.build_commands[i]) or else apt's output.
    """
    unshare = proc.require_tool("unshare")
    script = install_script(packages, commands)
    try:
        proc.run(
            [
                unshare,
                "--mount",
                "--propagation",
                "private",
                "--fork",
                "--",
                "sh",
                "-c",
                CHROOT_SCRIPT,
                "vmrig-chroot",
                str(tree),
                "chroot",
                str(tree),
                "/bin/sh",
                "-c",
                script,
            ],
        )
    except HostCommandFailed as error:
        output = error.stdout + error.stderr
        missing = re.findall(r"E: Unable to locate package (\S+)", output.decode(errors="replace"))
        if missing:
            found = ", ".join(missing)
            raise UnknownPackageError(f"apt could not find package(s): {found}\n{apt_tail(output)}", missing) from error
        failed = re.findall(rf"^{BUILD_STEP_FAILED} (\d+) (\d+)$", output.decode(errors="replace"), re.MULTILINE)
        if failed:
            index, status = int(failed[-1][0]), failed[-1][1]
            raise ImageBuildError(
                f"Node.build_commands[{index}] failed (exit status {status}) in the image's chroot, run by /bin/sh:"
                f" {commands[index]!r}\n{apt_tail(output, 40)}\n"
                "(build commands run when the image is built: the node's files, users and units are not"
                " there yet; they are laid over the image at every boot)"
            ) from error
        raise ImageBuildError(
            f"building the package layer failed (exit status {error.status}):\n{apt_tail(output, 40)}"
        ) from error


# The least size of an image's file system is Node.disk_size's default, so that
# a default node's disk needs no growing at boot: systemd-growfs-root put 0.35 s
# (4 boots each) on the way to the first command. Other sizes are made on the
# host (resize_disk), once per image and size.
FILE_SYSTEM = f"ext4, at least {DEFAULT_DISK_MIB} MiB, inode tables zeroed"


def make_disk(tree: Path, disk: Path) -> tuple[int, int]:
    """An ext4 file system of `tree`, as a qcow2 image.

    Returns (the file system's size, the least size `tree` fits in with
    room to write), both in MiB.
    """
    mkfs = proc.require_tool("mkfs.ext4")
    used_mib = disk_usage(tree) // (1 << 20)
    least_mib = max(1024, (used_mib * 3 // 2 + 512 + 255) // 256 * 256)
    fs_size_mib = max(least_mib, DEFAULT_DISK_MIB)
    raw = disk.with_suffix(".raw")
    try:
        # Inode tables written (as zeros, which qemu-img leaves out) now, not by the
        # guest kernel's ext4lazyinit thread in the background of every boot.
        options = "root_owner=0:0,lazy_itable_init=0"
        proc.run([mkfs, "-q", "-F", "-L", "root", "-E", options, "-d", tree, raw, f"{fs_size_mib}M"])
        _publish_raw(raw, disk)
    finally:
        raw.unlink(missing_ok=True)
    return fs_size_mib, least_mib


def resize_disk(source: Path, target: Path, size_mib: int) -> None:
    """The file system of the qcow2 image `source`, grown or shrunk to `size_mib` MiB, as the qcow2 image `target`.

    resize2fs on the host does in a second what the guest would do at every
    boot. Raises HostCommandFailed (resize2fs's stderr) when the files do not
    fit in `size_mib`.
    """
    qemu_img = proc.require_tool("qemu-img")
    resize2fs = proc.require_tool("resize2fs")
    raw = target.with_suffix(".raw")
    size = size_mib << 20
    try:
        proc.run([qemu_img, "convert", "-q", "-f", "qcow2", "-O", "raw", source, raw])
        if raw.stat().st_size < size:
            os.truncate(raw, size)
        # Without it, resize2fs leaves the new groups' inode tables to ext4lazyinit
        # when the host's kernel has lazy init, and the guest would write them.
        proc.run([resize2fs, raw, f"{size_mib}M"], env={"RESIZE2FS_FORCE_ITABLE_INIT": "1"})
        os.truncate(raw, size)
        _publish_raw(raw, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        raw.unlink(missing_ok=True)


def _publish_raw(raw: Path, disk: Path) -> None:
    """The raw file system `raw` as the read-only qcow2 image `disk` (zero blocks left out)."""
    proc.run([proc.require_tool("qemu-img"), "convert", "-q", "-f", "raw", "-O", "qcow2", raw, disk])
    disk.chmod(0o444)


def _module_paths(root: Path, kernel_version: str, names: tuple[str, ...]) -> list[Path]:
    """The module files for `names` and their dependencies, dependencies first."""
    moddir = root / "lib" / "modules" / kernel_version
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    ordered: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in deps.get(path, []):
            visit(dep)
        ordered.append(path)

    for name in names:
        if name in by_name:  # a built-in driver has no module file
            visit(by_name[name])
    return [moddir / p for p in ordered]


def build_initramfs(root: Path, kernel_version: str, modules: tuple[str, ...] = INITRAMFS_MODULES) -> bytes:
    """vmrig's initramfs: static busybox, `modules` (those built in are skipped), and guest/init."""
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    for directory in ("bin", "dev", "proc", "sys", "modules", "newroot"):
        archive.directory(directory)
    archive.file("init", (GUEST_DIR / "init").read_bytes(), 0o755)
    archive.file("bin/busybox", (root / "bin" / "busybox").read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    order = []
    for path in _module_paths(root, kernel_version, modules):
        data = path.read_bytes()
        if path.suffix == ".xz":
            data = lzma.decompress(data)
        name = path.name.split(".ko")[0] + ".ko"
        archive.file(f"modules/{name}", data)
        order.append(name)
    archive.file("modules.order", "".join(f"{name}\n" for name in order).encode())
    archive.close()
    return buffer.getvalue()


# Where the static device nodes' tmpfiles entries go. kmod-static-nodes.service
# writes the same list to /run/tmpfiles.d/static-nodes.conf at every boot, an
# exec of kmod (it links libcrypto) that took 1.4 s of the emulated boot's
# path to basic.target; the list only changes with the kernel, so it is written
# once per image and that unit is masked. (/run's file, should the unit be
# unmasked, overrides this one: same name.)
STATIC_NODES_CONF = Path("usr/lib/tmpfiles.d/static-nodes.conf")


def static_nodes_tmpfiles(modules_devname: str) -> str:
    """The tmpfiles.d lines that `kmod static-nodes --format=tmpfiles` gives for `modules_devname`.

    `modules_devname` is a kernel's `modules.devname` ("module devname
    c|b major:minor" per line). Each node becomes `c! /dev/<name> 0600 - - -
    major:minor` (udev's `static_node=` rules set their real modes), and
    each directory above one a `d /dev/<dir> 0755 - - -` line first.
    Raises ImageBuildError on a line of another shape.
    """
    lines: list[str] = []
    directories: set[str] = set()
    for number, line in enumerate(modules_devname.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2][:1] not in ("c", "b") or not re.fullmatch(r"\d+:\d+", fields[2][1:]):
            raise ImageBuildError(f"modules.devname line {number} is not `module name c|bMAJOR:MINOR`: {line!r}")
        _module, name, device = fields
        parent = os.path.dirname(name)
        if parent and parent not in directories:
            directories.add(parent)
            lines.append(f"d /dev/{parent} 0755 - - -")
        lines.append(f"{device[0]}! /dev/{name} 0600 - - - {device[1:]}")
    return "".join(f"{line}\n" for line in lines)


def write_static_nodes(root: Path, kernel_version: str) -> None:
    """Writes the static device nodes of `root`'s kernel `kernel_version` as a tmpfiles.d file in `root`."""
    devname = root / "lib" / "modules" / kernel_version / "modules.devname"
    text = static_nodes_tmpfiles(devname.read_text()) if devname.is_file() else ""
    target = root / STATIC_NODES_CONF
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
