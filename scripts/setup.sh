#!/bin/sh
# Installs what vmrig needs on a Debian 12 or 13 machine: the host programs
# (apt, QEMU 10 or newer), a virtualenv in .venv with vmrig and its test tools.
set -eu
cd "$(dirname "$0")/.."
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
APT_PACKAGES="mmdebstrap e2fsprogs vde2 socat openssh-client util-linux iproute2 zstd lz4
  gcc python3-venv tesseract-ocr swtpm"
QEMU_PACKAGES="qemu-system-x86 qemu-utils"
. /etc/os-release
missing=
for package in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
qemu_major=$(dpkg-query -W -f='${Status} ${Version}\n' qemu-system-x86 qemu-utils 2>/dev/null \
    | grep "install ok installed" | sed -E 's/.* ([0-9]+:)?([0-9]+).*/\2/' | sort -n | head -n 1)
[ "$(dpkg-query -W -f='${Status}\n' $QEMU_PACKAGES 2>/dev/null | grep -c "install ok installed")" -eq 2 ] || qemu_major=0
qemu_release=
if [ "${qemu_major:-0}" -lt 10 ]; then
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        # Debian 12 ships QEMU 7.2; vmrig needs 10 (booted snapshots, a guest
        # CPU with cmpxchg16b), which bookworm-backports has. Only the QEMU
        # packages and what they need come from there (-t for this one install;
        # backports are never preferred otherwise).
        echo "setup: Debian 12: enabling bookworm-backports for QEMU 10 (only the QEMU packages are taken from it)"
        if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                | $SUDO tee /etc/apt/sources.list.d/vmrig-bookworm-backports.sources >/dev/null
        fi
        qemu_release=bookworm-backports
    fi
    qemu_install=yes
fi
if [ -n "$missing" ] || [ -n "${qemu_install:-}" ]; then
    echo "setup: installing$missing${qemu_install:+ $QEMU_PACKAGES (QEMU >= 10)}"
    $SUDO apt-get update -q
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
    fi
    if [ -n "${qemu_install:-}" ]; then
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            ${qemu_release:+-t "$qemu_release"} $QEMU_PACKAGES
    fi
fi
# virtiofsd (shared directories): Debian 13 packages the Rust one; Debian 12's
# is QEMU 7.2's own, inside qemu-system-common, which QEMU 10 from backports
# replaces without it. That binary speaks the same vhost-user protocol to QEMU
# 10, so it is taken from Debian 12's package into /usr/local/libexec.
if [ "${VERSION_CODENAME:-}" != bookworm ]; then
    dpkg-query -W -f='${Status}' virtiofsd 2>/dev/null | grep -q "install ok installed" \
        || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends virtiofsd
elif [ ! -x /usr/local/libexec/virtiofsd ] && [ ! -x /usr/lib/qemu/virtiofsd ]; then
    echo "setup: Debian 12: installing virtiofsd from Debian 12's qemu-system-common into /usr/local/libexec"
    scratch=$(mktemp -d)
    (cd "$scratch" && apt-get download -q qemu-system-common/bookworm 2>/dev/null && dpkg-deb -x ./*.deb root)
    $SUDO install -D -m 0755 "$scratch/root/usr/lib/qemu/virtiofsd" /usr/local/libexec/virtiofsd
    rm -rf "$scratch"
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,repl,debug]'
echo "setup: done; vmrig is .venv/bin/vmrig ($(qemu-system-x86_64 --version | head -n 1))"
