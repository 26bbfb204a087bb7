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
# What a vmrig guest does not run, compared with a stock Debian boot (the
# README's "How a vmrig guest differs from Debian" lists the same):
# - no getty on the serial console or on hvc0: a login prompt would mix into
#   the driver's channel and the console log (tty1 keeps its getty, as on Debian);
# - nothing periodic that could wake up during a test (apt, dpkg, e2scrub,
#   fstrim timers, timesyncd: the host sets the clock);
# - nothing the emulated boot does not need: addresses are set in the
#   initramfs (networkd), /tmp lives on the root disk (tmp.mount), Debian's
#   journal flush before basic.target (the config layer's own unit moves the
#   journal to disk after it), first-boot, TPM setup, pstore, binfmt, hwdb,
#   catalog, utmp and random-seed services, and some kernel file systems.
# - work done once when the image is built instead of at every boot: the
#   static device nodes (/dev/net/tun, /dev/loop-control...: the image keeps
#   their list in /usr/lib/tmpfiles.d/static-nodes.conf), /dev's second
#   tmpfiles pass where systemd has an early one (they differ only for users
#   that sysusers would make, and the image has them all), the root file
#   system's remount (the initramfs mounts it rw already), and loading the
#   modules of Debian's empty /etc/modules (modules-load.d's own files still
#   load). All four ran before sysinit.target on the guest's one CPU:
#   systemd-analyze blame gave them 1.4, 0.75, 1.7 and 1.5 s under emulation.
# - two mounts of little use to a test, each a mount program started before
#   basic.target: /dev/mqueue (mq_open needs no mount) and /run/lock's own
#   tmpfs (it stays a directory of /run; bookworm's PID 1 mounts it itself).
for unit in serial-getty@hvc0.service serial-getty@ttyS0.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer systemd-timesyncd.service \
        systemd-networkd.service systemd-networkd-wait-online.service \
        systemd-pcrphase.service systemd-hwdb-update.service ldconfig.service \
        systemd-journal-catalog-update.service systemd-update-done.service \
        systemd-journal-flush.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
        systemd-machine-id-commit.service systemd-firstboot.service systemd-pstore.service \
        systemd-random-seed.service systemd-update-utmp.service systemd-update-utmp-runlevel.service \
        systemd-tpm2-setup-early.service systemd-tpm2-setup.service tmp.mount \
        systemd-udev-load-credentials.service \
        modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount \
        modprobe@configfs.service sys-kernel-config.mount systemd-sysusers.service \
        kmod-static-nodes.service systemd-remount-fs.service dev-mqueue.mount run-lock.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
if [ -e "$root/usr/lib/systemd/system/systemd-tmpfiles-setup-dev-early.service" ]; then
    ln -sf /dev/null "$root/etc/systemd/system/systemd-tmpfiles-setup-dev.service"
fi
rm -f "$root/etc/modules-load.d/modules.conf"
# The getty generator is masked below (it would start serial gettys), so
# tty1's getty is wanted explicitly, as Debian's own preset does.
mkdir -p "$root/etc/systemd/system/getty.target.wants" "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/getty@.service "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
ln -sf /usr/lib/systemd/system/getty.target "$root/etc/systemd/system/multi-user.target.wants/getty.target"
# Generators run before any unit, each an exec of a large binary (about 0.1 s
# under emulation). Kept: fstab (a node's own /etc/fstab), sysv (packages
# that still ship only init scripts) and debug (systemd.mask=, systemd.wants=
# and systemd.debug_shell on the kernel command line).
mkdir -p "$root/etc/systemd/system-generators"
for generator in "$root"/usr/lib/systemd/system-generators/*; do
    case ${generator##*/} in
        systemd-fstab-generator | systemd-sysv-generator | systemd-debug-generator) ;;
        *) ln -sf /dev/null "$root/etc/systemd/system-generators/${generator##*/}" ;;
    esac
done
# udev's coldplug skips device classes that no rule or test needs (ACPI
# objects, wake-up sources, memory blocks, clocks, ...): about 130 of 260
# events, a second of the emulated boot. Buses, disks, network, tty, input
# and misc devices are still announced, so drivers load and .device units work.
mkdir -p "$root/etc/systemd/system/systemd-udev-trigger.service.d"
skip=
for subsystem in acpi wakeup workqueue memory memory_tiering node event_source clockevents \
        clocksource machinecheck container thermal bdi dma_heap leds serial-base vc vtconsole; do
    skip="$skip --subsystem-nomatch=$subsystem"
done
cat >"$root/etc/systemd/system/systemd-udev-trigger.service.d/50-vmrig.conf" <<EOF
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=all --action=add --prioritized-subsystem=module,block,tpmrm,net,tty,input$skip
EOF
# While the system starts, udev's coldplug (module loads, rules: 0.85 s of CPU
# by multi-user.target) gives way to the units a script's first command waits
# for; after the boot its weight is the default again. Measured with the two
# mounts above, 4 boots each: the first command 0.4 s sooner, multi-user.target
# 0.7 s sooner.
mkdir -p "$root/etc/systemd/system/systemd-udevd.service.d"
printf '[Service]\nStartupCPUWeight=10\n' >"$root/etc/systemd/system/systemd-udevd.service.d/50-vmrig.conf"
rm -f "$root/lib/systemd/system/multi-user.target.wants/systemd-ask-password-wall.path"
# NixOS's locale (i18n.defaultLocale), which its test scripts' commands run in:
# en_US.UTF-8 sorts `a A b B`, where minbase's C.UTF-8 sorts `A B a b`.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$root/etc/locale.gen"
chroot "$root" locale-gen >/dev/null
printf 'LANG=en_US.UTF-8\n' >"$root/etc/locale.conf"
chroot "$root" passwd -d root >/dev/null
# NixOS's wheel group may use sudo (security.sudo.wheelNeedsPassword: with the user's
# password), and Debian's sudo group still does. In /etc/sudoers, before its
# @includedir, so that a rule a node puts in /etc/sudoers.d (NOPASSWD) wins.
sed -i 's|^@includedir /etc/sudoers.d|%wheel\tALL=(ALL:ALL) ALL\n&|' "$root/etc/sudoers"
grep -q '^%wheel' "$root/etc/sudoers"
# No name servers, as in NixOS's test VMs (networking.nameservers = []): the nodes'
# names are in /etc/hosts, and mmdebstrap left the host's file here. The config
# layer adds QEMU's when a run reaches outside.
printf '# vmrig: no name servers (the nodes are in /etc/hosts)\n' >"$root/etc/resolv.conf"
chmod 0644 "$root/etc/resolv.conf"
rm -f "$root/etc/hostname"
: >"$root/etc/machine-id"
# NixOS's /run/current-system/sw/bin, /run/wrappers/bin, ... (the package layer makes them again).
chroot "$root" sh -s <"$guest/nixos-paths"
