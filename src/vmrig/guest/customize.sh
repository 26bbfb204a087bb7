#!/bin/sh
# mmdebstrap customize hook: installs the guest contract into the base image.
# $1: the root of the image being built; $2: this directory (vmrig's guest files).
set -eu
root=$1
guest=$2
# The backdoor itself (backdoor, protocol.bash, its unit) comes with every
# run's config layer, so it always matches the driver that talks to it.
install -D -m 0644 "$guest/journald.conf" "$root/etc/systemd/journald.conf.d/50-vmrig.conf"
install -D -m 0644 "$guest/system.conf" "$root/etc/systemd/system.conf.d/50-vmrig.conf"
: >"$root/etc/fstab"
# No login prompt may mix into the driver's channel or the console log,
# nothing periodic may wake up during a test, and nothing the emulated boot
# does not need may slow it: addresses are set in the initramfs, /tmp lives
# on the root disk, the journal in memory.
for unit in serial-getty@hvc0.service serial-getty@ttyS0.service getty@tty1.service \
        getty-static.service getty.target \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer systemd-timesyncd.service \
        systemd-networkd.service systemd-networkd-wait-online.service \
        systemd-pcrphase.service systemd-hwdb-update.service ldconfig.service \
        systemd-journal-catalog-update.service systemd-update-done.service \
        systemd-journal-flush.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
        systemd-machine-id-commit.service systemd-firstboot.service systemd-pstore.service \
        systemd-random-seed.service systemd-update-utmp.service systemd-update-utmp-runlevel.service \
        systemd-tpm2-setup-early.service systemd-tpm2-setup.service tmp.mount \
        kmod-static-nodes.service systemd-udev-load-credentials.service \
        modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# D-Bus and logind stay installed (user sessions need them) but start on demand.
rm -f "$root/lib/systemd/system/multi-user.target.wants/dbus.service" \
      "$root/lib/systemd/system/multi-user.target.wants/systemd-logind.service" \
      "$root/lib/systemd/system/multi-user.target.wants/getty.target" \
      "$root/lib/systemd/system/multi-user.target.wants/systemd-ask-password-wall.path"
chroot "$root" passwd -d root >/dev/null
rm -f "$root/etc/hostname"
: >"$root/etc/machine-id"
