"""Node images: cached, content-addressed Debian root disks, their kernel and initramfs.

Two cached layers, each stored under a hash of everything that went into it:

- the *base* layer: an mmdebstrap'ed Debian tree (minbase, systemd, a kernel,
  the guest contract) plus the kernel and a small initramfs of our own;
- the *package* layer: the base tree plus a node's packages and build
  commands, as a read-only qcow2 disk that machines boot from through a
  copy-on-write overlay. When those packages install a kernel of their own
  (`linux-image-amd64`, the generic kernel that X needs for its DRM
  drivers), the layer keeps that kernel and an initramfs for it, and the
  node boots it instead of the base's cloud kernel.

A build writes into a temporary directory and renames it into place; a lock
file per key makes concurrent runs build each key once. What changes from run
to run (hostname, files, services, users, addresses) is not in any layer: it
is a small cpio archive appended to the initramfs (made by vmrig.image.configlayer,
not here), laid over the root disk at every boot, so it never forces a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vmrig import proc
from vmrig.contract import GUEST_DIR
from vmrig.errors import ArgumentError, HostCommandFailed, ImageBuildError, UsageError
from vmrig.image import bootkernel, snapshot
from vmrig.image.build import (
    FILE_SYSTEM,
    INITRAMFS_MODULES,
    NODE_KERNEL_MODULES,
    apt_tail,
    build_initramfs,
    disk_usage,
    install_in_chroot,
    make_disk,
    resize_disk,
    write_static_nodes,
)
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
    # What every NixOS machine has without asking, so that scripts calling
    # curl, ping, getfacl, sudo or fgconsole run unchanged: NixOS's core and
    # default packages (environment.corePackages, defaultPackages) where
    # minbase lacks them, its network tools, the ssh client, sudo (enabled
    # by default) and kbd (the console's tools).
    "acl",
    "attr",
    "bzip2",
    "cpio",
    "curl",
    "gawk",
    "patch",
    "xz-utils",
    "less",
    "libcap2-bin",
    "whois",
    "time",
    "zstd",
    "perl",
    "rsync",
    "strace",
    "iputils-ping",
    "net-tools",
    "bind9-host",
    "openssh-client",
    "sudo",
    "kbd",
)
# Documentation and translations: never needed by a test, slow to unpack.
DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
# Debian's own initramfs is not used: ours is 2 MB and needs no udev.
DPKG_EXCLUDES_KERNEL = ("/etc/kernel/postinst.d/initramfs-tools",)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_DISK = "root.qcow2"
LAST_USED = "last-used"
ProgressFn = Callable[[str], None]


# Free space a build or a snapshot save makes sure of first, by removing the
# least recently used cache entries: a package image's raw file system takes up
# to 4 GiB before it is converted, and a snapshot's RAM file up to the node's
# memory. A full disk made QEMU die of SIGBUS on its RAM file mid-boot.
ROOM_BYTES = 8 * 1024**3
# Entries used this recently are left alone by that cleanup: a run (or a parallel one) may be using them.
IN_USE_SECONDS = 30 * 60


def make_room(root: Path, progress: ProgressFn, needed: int = ROOM_BYTES) -> list[Path]:
    """Removes the least recently used layers and snapshots under `root` until its file system has
    `needed` bytes free (or nothing old enough is left); returns what it removed."""
    removed: list[Path] = []
    if not root.exists() or shutil.disk_usage(root).free >= needed:
        return removed
    store = ImageStore(root, progress)
    recent = time.time() - IN_USE_SECONDS
    for path, last_used, _size in sorted(store.entries(), key=lambda entry: entry[1]):
        if shutil.disk_usage(root).free >= needed or last_used > recent:
            break
        if store.remove(path):
            removed.append(path)
    # Snapshots of a removed image: a rebuilt image at the same path would not be the disk they saved.
    removed += [orphan for orphan in list(snapshot.stale(root)) if store.remove(orphan)]
    if removed:
        progress(f"the disk was nearly full: removed the {len(removed)} least recently used cache entries")
    return removed


# The base layer's files; bumped when what a base layer holds changes (2: vmlinux,
# 3: the static device nodes' tmpfiles.d list).
BASE_LAYOUT = 3
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


def _kernel_versions(root: Path) -> set[str]:
    """The versions of the kernels in `root`'s /boot (`vmlinuz-<version>`)."""
    return {path.name.removeprefix("vmlinuz-") for path in (root / "boot").glob("vmlinuz-*")}


def _write_boot_files(root: Path, version: str, into: Path, modules: tuple[str, ...]) -> None:
    """`root`'s kernel `version` into `into`: vmlinuz, the unpacked PVH vmlinux where it has
    that entry, and vmrig's initramfs with `modules` (and their dependencies); and into
    `root` the tmpfiles.d list of that kernel's static device nodes."""
    write_static_nodes(root, version)
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    shutil.copyfile(vmlinuz, into / "vmlinuz")
    unpacked = bootkernel.pvh_kernel(vmlinuz.read_bytes())
    if unpacked is not None:
        (into / "vmlinux").write_bytes(unpacked)
    (into / "initrd.img").write_bytes(build_initramfs(root, version, modules))


def _boot_kernel(directory: Path) -> Path:
    """The unpacked PVH kernel in `directory` where there is one (it boots faster), else the bzImage."""
    unpacked = directory / "vmlinux"
    return unpacked if unpacked.exists() else directory / "vmlinuz"


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
        return _boot_kernel(self.path)

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
    fs_size_mib: int  # of `disk`'s file system
    # The least disk the image's files fit in (ImageStore.disk_of makes no smaller one).
    min_disk_mib: int
    # The compressed kernel (vmlinuz): booted through SeaBIOS when the machine has a
    # display, since its PVH entry (`kernel`) gives the kernel no screen to draw on.
    bzimage: Path | None = None


class ImageStore:
    """The image cache in `root` (the run's RunEnvironment.cache_dir)."""

    def __init__(self, root: Path, progress: ProgressFn | None = None) -> None:
        self.root = root
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

    def remove(self, path: Path, key: str | None = None, *, dry_run: bool = False) -> bool:
        """Removes the cache entry (or build scratch) `path` unless another vmrig holds the lock of
        `key` (by default the entry's own), building it; with `dry_run` only says whether it would."""
        key = key or path.name.split("-", 1)[1]
        self.root.joinpath("locks").mkdir(parents=True, exist_ok=True)
        with open(self.root / "locks" / f"{key}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        return True

    @contextlib.contextmanager
    def _building(self, final: Path) -> Iterator[Path]:
        """A scratch directory that becomes `final` only if the block succeeds."""
        make_room(self.root, self._progress)
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
                    + apt_tail(error.stderr)
                ) from error
            versions = _kernel_versions(root)
            if not versions:
                raise ImageBuildError("the base image has no kernel in /boot")
            _write_boot_files(root, max(versions), scratch, INITRAMFS_MODULES)
            (scratch / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
        self._progress(f"base image built in {time.monotonic() - started:.1f} s")

    # -- the package layer ---------------------------------------------------

    def image_inputs(self, base: BaseImage, node: Node) -> dict[str, object]:
        inputs: dict[str, object] = {
            "layer": "packages",
            "base": base.key,
            "file_system": FILE_SYSTEM,
            **node.image_inputs(),
        }
        if any(package.startswith("linux-image-") for package in node.packages):
            inputs["kernel_modules"] = list(NODE_KERNEL_MODULES)  # the initramfs of the node's own kernel
        return inputs

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
        # A kernel the node's packages installed lives in the image; else the base's.
        boot = final if meta.get("kernel") else base.path
        return NodeImage(
            key=key,
            disk=final / IMAGE_DISK,
            kernel=_boot_kernel(boot),
            initrd=boot / "initrd.img",
            fs_size_mib=int(meta["fs_size_mib"]),
            min_disk_mib=int(meta.get("min_disk_mib", meta["fs_size_mib"])),
            bzimage=boot / "vmlinuz",
        )

    def disk_of(self, image: NodeImage, size_mib: int) -> Path:
        """`image`'s disk with a file system of `size_mib` MiB: its own, or a copy resized once on the host.

        The copy lives beside the image (`root-<size>M.qcow2`) and goes with
        it in `vmrig gc`. Raises ArgumentError when the image's files do not
        fit in `size_mib` (see NodeImage.min_disk_mib).
        """
        if size_mib == image.fs_size_mib:
            return image.disk
        if size_mib < image.min_disk_mib:
            raise ArgumentError(f"a disk of {size_mib} MiB is smaller than its image needs ({image.min_disk_mib} MiB)")
        sized = image.disk.with_name(f"root-{size_mib}M.qcow2")
        if not sized.exists():
            with self._locked(f"{image.key}-{size_mib}M"):
                if not sized.exists():
                    self._progress(f"resizing the image's file system to {size_mib} MiB")
                    for leftover in sized.parent.glob(f".{sized.name}.*"):  # of a killed resize
                        leftover.unlink(missing_ok=True)
                    partial = sized.with_name(f".{sized.name}.{os.getpid()}")
                    resize_disk(image.disk, partial, size_mib)
                    os.rename(partial, sized)
        return sized

    def _build_image(self, final: Path, base: BaseImage, node: Node, inputs: dict[str, object]) -> None:
        packages = sorted(node.packages)
        what = ", ".join(packages) if packages else "no extra packages"
        self._progress(f"building image ({what})")
        started = time.monotonic()
        with self._building(final) as scratch:
            tree = base.root
            meta: dict[str, object] = {}
            if packages or node.build_commands:
                tree = scratch / "root"
                proc.run(["cp", "-a", "--reflink=auto", base.root, tree])
                install_in_chroot(tree, packages, node.build_commands)
                own = _kernel_versions(tree) - _kernel_versions(base.root)
                if own:
                    version = max(own)
                    self._progress(f"the image boots its own kernel {version}")
                    _write_boot_files(tree, version, scratch, NODE_KERNEL_MODULES)
                    meta["kernel"] = version
            meta["fs_size_mib"], meta["min_disk_mib"] = make_disk(tree, scratch / IMAGE_DISK)
            if tree != base.root:
                shutil.rmtree(tree)
            (scratch / "image.json").write_text(json.dumps(meta) + "\n")
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
            found.append((path, last_used, disk_usage(path)))
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
            if self.remove(stale, key, dry_run=dry_run):  # else a build is running right now
                removed.append(stale)
        return removed
