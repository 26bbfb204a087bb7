"""Node images: cached, content-addressed Debian root disks, their kernel and initramfs.

Two cached layers, each stored under a hash of everything that went into it:

- the *base* layer: an mmdebstrap'ed Debian tree (minbase, systemd, a kernel,
  the guest contract) plus the kernel and a small initramfs of our own;
- the *package* layer: the base tree plus a node's packages and build
  commands, as a read-only qcow2 disk that machines boot from through a
  copy-on-write overlay.

A build writes into a temporary directory and renames it into place; a lock
file per key makes concurrent runs build each key once. What changes from run
to run (hostname, files, services, users, addresses) is not in any layer: it
is a small cpio archive appended to the initramfs (made by vmrig.guestconfig,
not here), laid over the root disk at every boot, so it never forces a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vmrig import bootkernel, proc, snapshot
from vmrig.contract import GUEST_DIR
from vmrig.cpio import CpioWriter
from vmrig.errors import HostCommandFailed, ImageBuildError, UsageError
from vmrig.spec import Node

LOG = logging.getLogger("vmrig.images")

BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "busybox-static",
    "iproute2",
    "netcat-openbsd",
    "dbus",
    "libpam-systemd",
    "procps",
    "kmod",
)
# Modules the initramfs loads: the root disk and the network cards (their
# addresses are set before systemd starts).
# (Built-in drivers have no module file and are skipped: virtio_pci and
# virtio_console are built into trixie's cloud kernel, modules in bookworm's.)
INITRAMFS_MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "virtio_net")
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
# Documentation and translations: never needed by a test, slow to unpack.
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
# Debian's own initramfs is not used: ours is 2 MB and needs no udev.
DPKG_EXCLUDES_KERNEL = ("/etc/kernel/postinst.d/initramfs-tools",)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_DISK = "root.qcow2"
LAST_USED = "last-used"
ProgressFn = Callable[[str], None]


def cache_root() -> Path:
    base = os.environ.get("VMRIG_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vmrig"


# The base layer's files; bumped when what a base layer holds changes (2: vmlinux).
BASE_LAYOUT = 2
# Guest files that go into the base image; the others travel in the config layer.
BASE_GUEST_FILES = ("customize.sh", "init", "journald.conf", "system.conf")


def guest_contract_digest() -> str:
    """A hash of the base image's guest files: changing one changes every base key."""
    digest = hashlib.sha256()
    for path in (GUEST_DIR / name for name in BASE_GUEST_FILES):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key_of(inputs: dict[str, object]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def host_mirror() -> str:
    """The Debian mirror the host's apt uses, so images come from the same place."""
    candidates: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        candidates += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class BaseImage:
    key: str
    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def kernel(self) -> Path:
        """The unpacked PVH kernel where there is one (it boots faster), else the bzImage."""
        unpacked = self.path / "vmlinux"
        return unpacked if unpacked.exists() else self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"


@dataclass(frozen=True)
class NodeImage:
    """What a machine needs from the image layer: paths, nothing else."""

    key: str
    disk: Path
    kernel: Path
    initrd: Path
    fs_size_mib: int


class ImageStore:
    def __init__(self, root: Path | None = None, progress: ProgressFn | None = None) -> None:
        self.root = root or cache_root()
        self._progress = progress or (lambda message: LOG.info("%s", message))

    # -- locking and atomic publication --------------------------------------

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._progress(f"waiting for another vmrig to finish building {key}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _building(self, final: Path) -> Iterator[Path]:
        """A scratch directory that becomes `final` only if the block succeeds."""
        scratch_parent = self.root / "tmp"
        scratch_parent.mkdir(parents=True, exist_ok=True)
        # We hold the key's lock: scratch dirs of this key are leftovers of killed builds.
        for stale in scratch_parent.glob(f"{final.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=scratch_parent))
        try:
            yield scratch
            (scratch / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            os.rename(scratch, final)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _complete(path: Path) -> bool:
        return (path / "complete").is_file()

    @staticmethod
    def _touch(path: Path) -> None:
        with contextlib.suppress(OSError):
            (path / LAST_USED).write_text(f"{time.time():.0f}\n")

    # -- the base layer ------------------------------------------------------

    def base_inputs(self, suite: str, mirror: str) -> dict[str, object]:
        return {
            "layer": "base",
            "suite": suite,
            "mirror": mirror,
            "packages": sorted(BASE_PACKAGES),
            "initramfs_modules": list(INITRAMFS_MODULES),
            "guest": guest_contract_digest(),
            "layout": BASE_LAYOUT,
        }

    def base(self, suite: str, mirror: str | None = None) -> BaseImage:
        mirror = mirror or host_mirror()
        inputs = self.base_inputs(suite, mirror)
        key = key_of(inputs)
        final = self.root / f"base-{key}"
        if not self._complete(final):
            with self._locked(key):
                if not self._complete(final):
                    self._build_base(final, suite, mirror, inputs)
        self._touch(final)
        return BaseImage(key, final)

    def _build_base(self, final: Path, suite: str, mirror: str, inputs: dict[str, object]) -> None:
        if os.geteuid() != 0:
            raise UsageError("building images needs root (mmdebstrap and chroot); run vmrig as root")
        mmdebstrap = proc.require_tool("mmdebstrap")
        self._progress(f"building base image ({suite}) with mmdebstrap")
        started = time.monotonic()
        with self._building(final) as scratch:
            root = scratch / "root"
            cmd: list[str] = [
                mmdebstrap,
                "--mode=root",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES + DPKG_EXCLUDES_KERNEL),
                f'--customize-hook=sh {GUEST_DIR / "customize.sh"} "$1" {GUEST_DIR}',
                suite,
                str(root),
                mirror,
            ]
            try:
                proc.run(cmd)
            except HostCommandFailed as error:
                raise ImageBuildError(
                    f"mmdebstrap failed (exit status {error.status}) for suite {suite!r} from {mirror}:\n"
                    + _apt_tail(error.stderr)
                ) from error
            kernels = sorted((root / "boot").glob("vmlinuz-*"))
            if not kernels:
                raise ImageBuildError("the base image has no kernel in /boot")
            kernel_version = kernels[-1].name.removeprefix("vmlinuz-")
            shutil.copyfile(kernels[-1], scratch / "vmlinuz")
            unpacked = bootkernel.pvh_kernel(kernels[-1].read_bytes())
            if unpacked is not None:
                (scratch / "vmlinux").write_bytes(unpacked)
            (scratch / "initrd.img").write_bytes(build_initramfs(root, kernel_version))
            (scratch / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        self._progress(f"base image built in {time.monotonic() - started:.1f} s")

    # -- the package layer ---------------------------------------------------

    def image_inputs(self, base: BaseImage, node: Node) -> dict[str, object]:
        return {"layer": "packages", "base": base.key, **node.image_inputs()}

    def node_image(self, node: Node, suite: str, mirror: str | None = None) -> NodeImage:
        base = self.base(suite, mirror)
        inputs = self.image_inputs(base, node)
        key = key_of(inputs)
        final = self.root / f"image-{key}"
        if not self._complete(final):
            with self._locked(key):
                if not self._complete(final):
                    self._build_image(final, base, node, inputs)
        self._touch(final)
        meta = json.loads((final / "image.json").read_text())
        return NodeImage(
            key=key,
            disk=final / IMAGE_DISK,
            kernel=base.kernel,
            initrd=base.initrd,
            fs_size_mib=int(meta["fs_size_mib"]),
        )

    def _build_image(self, final: Path, base: BaseImage, node: Node, inputs: dict[str, object]) -> None:
        packages = sorted(node.packages)
        what = ", ".join(packages) if packages else "no extra packages"
        self._progress(f"building image ({what})")
        started = time.monotonic()
        with self._building(final) as scratch:
            tree = base.root
            if packages or node.build_commands:
                tree = scratch / "root"
                proc.run(["cp", "-a", "--reflink=auto", base.root, tree])
                _install_in_chroot(tree, packages, node.build_commands)
            fs_size_mib = _make_disk(tree, scratch / IMAGE_DISK)
            if tree != base.root:
                shutil.rmtree(tree)
            (scratch / "image.json").write_text(json.dumps({"fs_size_mib": fs_size_mib}) + "\n")
            (scratch / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        self._progress(f"image built in {time.monotonic() - started:.1f} s")

    # -- garbage collection --------------------------------------------------

    def entries(self) -> list[tuple[Path, float, int]]:
        """Cached layers and booted snapshots as (path, last use as a Unix time, size in bytes)."""
        found = []
        layers = sorted(self.root.glob("base-*")) + sorted(self.root.glob("image-*"))
        for path in layers + sorted(self.root.glob(f"{snapshot.PREFIX}*")):
            try:
                last_used = float((path / LAST_USED).read_text())
            except (OSError, ValueError):
                last_used = path.stat().st_mtime
            found.append((path, last_used, _du(path)))
        return found

    def gc(self, older_than_days: float, dry_run: bool = False) -> list[Path]:
        """Removes layers and snapshots unused for `older_than_days`, snapshots of removed
        images, and leftovers of killed builds."""
        removed: list[Path] = []
        limit = time.time() - older_than_days * 86400
        for path, last_used, _size in self.entries():
            if last_used <= limit:
                key = path.name.split("-", 1)[1]
                with self._locked(key):
                    if not dry_run:
                        shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        for orphan in [] if dry_run else list(snapshot.stale(self.root)):
            shutil.rmtree(orphan, ignore_errors=True)
            removed.append(orphan)
        scratch_parent = self.root / "tmp"
        for stale in sorted(scratch_parent.glob("*")) if scratch_parent.exists() else []:
            if snapshot.saving(stale):
                continue  # a running driver is saving a snapshot there
            key = stale.name.split(".", 1)[0].split("-", 1)[-1]
            lock_path = self.root / "locks" / f"{key}.lock"
            with open(lock_path, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a build is running right now
                if not dry_run:
                    shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
        return removed


def _apt_tail(data: bytes, lines: int = 25) -> str:
    """apt's error and warning lines in a failed build's output, else its last lines."""
    errors = [line for line in data.decode(errors="replace").splitlines() if line.startswith(("E:", "W:", "Error"))]
    return "\n".join(errors or proc.tail(data, lines))


def _du(path: Path) -> int:
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
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
export DEBIAN_FRONTEND=noninteractive
# The host's temporary directory (vmrig runs often set TMPDIR) does not exist in the chroot.
export TMPDIR=/tmp
unset TMP TEMP
status=0
"$@" || status=$?
rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
exit $status
"""


def _install_in_chroot(tree: Path, packages: list[str], commands: list[str]) -> None:
    """apt-get install and build commands inside `tree`, in a private mount namespace."""
    unshare = proc.require_tool("unshare")
    steps = ["apt-get -q update"]
    if packages:
        steps.append("apt-get -q -y --no-install-recommends -o Dpkg::Use-Pty=0 install " + " ".join(packages))
    steps += commands
    steps += ["apt-get clean", "rm -rf /var/lib/apt/lists/*"]
    script = "set -e\n" + "\n".join(steps) + "\n"
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
            raise ImageBuildError(f"apt could not find package(s): {found}\n{_apt_tail(output)}") from error
        raise ImageBuildError(
            f"building the package layer failed (exit status {error.status}):\n{_apt_tail(output, 40)}"
        ) from error


def _make_disk(tree: Path, disk: Path) -> int:
    """An ext4 file system of `tree`, as a qcow2 image; returns the fs size in MiB."""
    mkfs = proc.require_tool("mkfs.ext4")
    qemu_img = proc.require_tool("qemu-img")
    used_mib = _du(tree) // (1 << 20)
    # Room for what the guest writes; a larger disk grows the fs at boot.
    fs_size_mib = max(1024, (used_mib * 3 // 2 + 512 + 255) // 256 * 256)
    raw = disk.with_suffix(".raw")
    try:
        proc.run([mkfs, "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", tree, raw, f"{fs_size_mib}M"])
        proc.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, disk])
    finally:
        raw.unlink(missing_ok=True)
    disk.chmod(0o444)
    return fs_size_mib


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


def build_initramfs(root: Path, kernel_version: str) -> bytes:
    """vmrig's initramfs: static busybox, a few modules, and guest/init."""
    buffer = io.BytesIO()
    archive = CpioWriter(buffer)
    for directory in ("bin", "dev", "proc", "sys", "modules", "newroot"):
        archive.directory(directory)
    archive.file("init", (GUEST_DIR / "init").read_bytes(), 0o755)
    archive.file("bin/busybox", (root / "bin" / "busybox").read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    order = []
    for path in _module_paths(root, kernel_version, INITRAMFS_MODULES):
        data = path.read_bytes()
        if path.suffix == ".xz":
            data = lzma.decompress(data)
        name = path.name.split(".ko")[0] + ".ko"
        archive.file(f"modules/{name}", data)
        order.append(name)
    archive.file("modules.order", "".join(f"{name}\n" for name in order).encode())
    archive.close()
    return buffer.getvalue()
